"""A whole machine of the cluster lost mid-study: its trials move to the other machine and the study finishes,
the interrupted node resumed from its checkpoint (on the shared study folder) to the undisturbed result.

The cluster is `ray.cluster_utils.Cluster` on this machine: a head without CPUs (as in cluster.yaml) and two
1-CPU worker nodes, each with its own raylet; `remove_node(..., allow_graceful=False)` kills one of them
(raylet and every worker on it) while it runs a node."""

import json
import re

import pytest

from proda.config import Config
from proda.engine.nodes import Node, run_node

from .conftest import one_thread, same_weights, study_env, write_grid

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = r'''
import sys, threading, time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from proda.ablation import results as R
from proda.ablation.grid import AblationSpec, expand
from proda.ablation.runner import run_study


def children():
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                raw = (p / "stat").read_text()
            except OSError:
                continue
            out.setdefault(int(raw[raw.rindex(")") + 2:].split()[1]), []).append(int(p.name))
    return out


def runs_a_trial(root):
    kids, todo = children(), [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            try:
                if Path(f"/proc/{c}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                    return True
            except OSError:
                pass
            todo.append(c)
    return False


grid, storage = Path(sys.argv[1]), Path(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address)
plan = expand(AblationSpec.from_yaml(grid))
study = storage / plan.spec.name


def lose_the_busy_machine():
    while not list(study.glob("nodes/*/checkpoint.pt")):
        time.sleep(0.05)
    for _ in range(200):
        for node in workers:
            if runs_a_trial(node.all_processes["raylet"][0].process.pid):
                cluster.remove_node(node, allow_graceful=False)
                print(f"REMOVED machine {node.unique_id} while it ran a node", flush=True)
                return
        time.sleep(0.05)


threading.Thread(target=lose_the_busy_machine, daemon=True).start()
run_study(plan, study, log=lambda s: print(s, flush=True))
print(R.status_line(R.collect(study)), flush=True)
# the GCS marks a killed raylet dead only after its health checks fail (~20 s with Ray's defaults): a study
# that finishes sooner would still count it alive
t0 = time.monotonic()
while sum(n["Alive"] for n in ray.nodes()) > 2 and time.monotonic() - t0 < 60:
    time.sleep(0.5)
print("ALIVE", sum(n["Alive"] for n in ray.nodes()), flush=True)
ray.shutdown()
cluster.shutdown()
'''


def test_losing_a_machine_moves_its_trial_to_the_other_and_the_study_finishes(tmp_path, synthetic_cache, drivers,
                                                                              record_property):
    record_property("fault", "a whole cluster node removed mid-study (ray.cluster_utils.Cluster)")
    grid = write_grid(tmp_path / "loss.yaml", "loss", ["source-only"],
                      {"warmup.steps": 60, "checkpoint_interval": 5, "log_interval": 5})
    (tmp_path / "cluster_study.py").write_text(SCRIPT)
    d = drivers([str(grid), str(tmp_path / "studies")],
                study_env(synthetic_cache), tmp_path / "loss.log", script=str(tmp_path / "cluster_study.py"))
    rc = d.wait(timeout=500)
    out = d.text()
    assert rc == 0, out[-4000:]
    assert "REMOVED machine" in out
    assert "nodes: 1 done, 0 running, 0 failed, 0 missing" in out and "ALIVE 2" in out  # head + survivor
    study = tmp_path / "studies" / "loss"
    node_dir = next(study.glob("nodes/*"))
    assert re.search(rf"\[{node_dir.name[:8]}\] \[warmup\] resumed from step \d+", out)

    plan = json.loads((study / "plan.json").read_text())
    cfg = Config.from_dict(plan["nodes"][node_dir.name]["config"])
    with one_thread():
        ref = run_node(Node("warmup", "warmup"), cfg, tmp_path / "ref", {}, log=lambda s: None)
    differ = same_weights(node_dir / "model.pt", tmp_path / "ref" / "model.pt")
    record_property("results_lost", int(bool(differ)))
    assert differ == [] and json.loads((node_dir / "done.json").read_text())["miou"] == ref["miou"]
