"""How well the Ray runner packs the smoke study onto a local Ray: makespan vs. the ideal schedule (RESULTS.md §4).

    python benchmarks/packing.py [--storage /tmp/proda-packing] [--cpus-per-worker 1]

The smoke study (`SMOKE_SPEC`) runs twice, each in a fresh process: plainly, node by node (as
`run_study_local`, with a Ray worker's threads), each node timed; and by `run_study` on a fresh local Ray,
a watcher stamping when each node's folder and its done.json appear. Two ideals, each from the node times
inside the Ray run (scheduling efficiency) and from the plain run (also the slowdown of nodes side by side):
by levels (issue 7's: Σ over chain positions of max(Σ node times ÷ slots, the longest node)), and by the DAG
(max(Σ all node times ÷ slots, the longest chain): a bound no schedule beats; the runner has no barrier between
levels, so it can beat the first). Efficiency = ideal ÷ Ray's makespan (`run_study` after ray.init).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NodeWatcher, emit, machine, parser, run_child, say, table  # noqa: E402


def child(mode: str, study: Path, cpus: float) -> dict:
    import torch

    from proda.ablation.grid import SMOKE_SPEC, expand

    plan = expand(SMOKE_SPEC)
    if mode == "plain":
        from proda.config import Config
        from proda.engine.nodes import run_node

        torch.set_num_threads(max(1, int(cpus)))
        times, t_all = {}, time.time()
        for name in plan.positions:
            for node in plan.nodes_at(name):
                t0 = time.time()
                run_node(node, Config.from_dict(node.config),
                         study / "nodes" / node.id, {r: study / "nodes" / up for r, up in node.inputs.items()},
                         metrics_log=study / "nodes" / node.id / "metrics.jsonl", log=lambda s: None)
                times[node.id] = time.time() - t0
        return {"node_s": times, "makespan_s": time.time() - t_all, "init_s": 0.0}
    import ray

    from proda.ablation.runner import check_fits, connect, run_study, scaling

    watcher = NodeWatcher(study / "nodes")
    watcher.start()
    t0 = time.time()
    connect(None)
    t1 = time.time()
    slots = check_fits(scaling(1, 0.0, cpus))
    run_study(plan, study, cpus_per_worker=cpus, log=lambda s: print(s, flush=True))
    t2 = time.time()
    time.sleep(0.2)
    watcher.stop = True
    ray.shutdown()
    node_s = {k: watcher.ended[k] - watcher.began[k] for k in watcher.ended}
    spans = {k: (watcher.began[k] - t1, watcher.ended[k] - t1) for k in watcher.ended}
    return {"node_s": node_s, "spans": spans, "makespan_s": t2 - t1, "init_s": t1 - t0, "slots": slots}


def lower_bound(plan, node_s: dict[str, float], slots: int) -> tuple[float, dict[str, float]]:
    per_level = {}
    for name in plan.positions:
        ts = [node_s[n.id] for n in plan.nodes_at(name)]
        per_level[name] = max(sum(ts) / slots, max(ts))
    return sum(per_level.values()), per_level


def dag_bound(plan, node_s: dict[str, float], slots: int) -> tuple[float, float, float]:
    from proda.ablation.scheduler import critical_path

    longest = max(critical_path(plan, node_s).values())
    spread = sum(node_s.values()) / slots
    return max(longest, spread), spread, longest


def run_plan(mode: str, study: Path, cpus: float) -> dict:
    shutil.rmtree(study, ignore_errors=True)
    return run_child(__file__, ["--child", mode, "--study", str(study), "--cpus-per-worker", str(cpus)], 3600)


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--storage", type=Path, default=Path("/tmp/proda-packing"))
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--child", choices=("plain", "ray"), help=argparse.SUPPRESS)
    ap.add_argument("--study", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        emit(child(args.child, args.study, args.cpus_per_worker))
        return 0

    from proda.ablation.grid import SMOKE_SPEC, expand

    say(machine())
    plan = expand(SMOKE_SPEC)
    say(plan.summary())
    say("\nrunning the smoke study plainly (node by node) ...")
    plain = run_plan("plain", args.storage / "plain", args.cpus_per_worker)
    say(f"  plain: {plain['makespan_s']:.1f} s for {len(plain['node_s'])} nodes")
    say("running the smoke study on a fresh local Ray ...")
    ray_run = run_plan("ray", args.storage / "ray", args.cpus_per_worker)
    slots = ray_run["slots"]
    say(f"  ray: ray.init {ray_run['init_s']:.1f} s, run_study {ray_run['makespan_s']:.1f} s, {slots} slots")
    missing = set(plan.nodes) - set(ray_run["node_s"])
    if missing:
        raise RuntimeError(f"nodes without a start/end stamp in the Ray run: {sorted(missing)}")

    ideal_ray, lv_ray = lower_bound(plan, ray_run["node_s"], slots)
    ideal_plain, lv_plain = lower_bound(plan, plain["node_s"], slots)
    mk = ray_run["makespan_s"]
    # where each level actually ran in the Ray study: first start to last end of its nodes
    rows = []
    for name in plan.positions:
        ids = [n.id for n in plan.nodes_at(name)]
        s = min(ray_run["spans"][i][0] for i in ids)
        e = max(ray_run["spans"][i][1] for i in ids)
        rows.append([name, len(ids), sum(plain["node_s"][i] for i in ids), sum(ray_run["node_s"][i] for i in ids),
                     lv_plain[name], lv_ray[name], s, e, e - s])
    say("\nper level, i.e. chain position (seconds): node times summed (plain / inside Ray), ideal level length"
        " (plain / Ray node times), and when the level's nodes ran in the Ray study (from run_study's start; levels"
        " may overlap)")
    say(table(["position", "nodes", "Σ plain", "Σ in Ray", "ideal plain", "ideal Ray", "first start", "last end",
               "span"], rows))
    dag_ray, spread, longest = dag_bound(plan, ray_run["node_s"], slots)
    dag_plain, _, _ = dag_bound(plan, plain["node_s"], slots)
    first = min(sp[0] for sp in ray_run["spans"].values())
    last = max(sp[1] for sp in ray_run["spans"].values())
    idle = slots * (last - first) - sum(ray_run["node_s"].values())
    say(f"\nRay makespan {mk:.1f} s (+ ray.init {ray_run['init_s']:.1f} s): first node started after {first:.1f} s, "
        f"last ended at {last:.1f} s; idle slot-seconds in between: {idle:.1f} (of {slots} × {last - first:.1f})")
    say(f"DAG bound from the node times inside Ray: Σ ÷ {slots} slots = {spread:.1f} s, longest chain = "
        f"{longest:.1f} s\nplain sequential run: {plain['makespan_s']:.1f} s")
    eff_ray, eff_plain = ideal_ray / mk, ideal_plain / mk
    say(table(["ideal", "from node times", "ideal s", "efficiency", "efficiency incl. ray.init"],
              [["by levels", "inside Ray", ideal_ray, eff_ray, ideal_ray / (mk + ray_run["init_s"])],
               ["by levels", "plain run", ideal_plain, eff_plain, ideal_plain / (mk + ray_run["init_s"])],
               ["by the DAG", "inside Ray", dag_ray, dag_ray / mk, dag_ray / (mk + ray_run["init_s"])],
               ["by the DAG", "plain run", dag_plain, dag_plain / mk, dag_plain / (mk + ray_run["init_s"])]]))
    emit({"packing_efficiency": round(eff_ray, 3), "packing_efficiency_vs_plain_nodes": round(eff_plain, 3),
          "packing_efficiency_dag_bound": round(dag_ray / mk, 3), "makespan_s": round(mk, 1),
          "ray_init_s": round(ray_run["init_s"], 1), "ideal_s": round(ideal_ray, 1),
          "ideal_plain_s": round(ideal_plain, 1), "dag_bound_s": round(dag_ray, 1),
          "first_node_start_s": round(first, 1), "plain_sequential_s": round(plain["makespan_s"], 1), "slots": slots})
    return 0


if __name__ == "__main__":
    sys.exit(main())
