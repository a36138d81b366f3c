"""One real end-to-end study on a local Ray: `experiments/ablation.py --grid smoke`, then the same
command again (nothing re-runs, the tables come out again), then `experiments/results.py`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, env, timeout=900):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_study_end_to_end_then_resume_runs_nothing(tmp_path, synthetic_cache):
    env = {**os.environ, "PRODA_CACHE": synthetic_cache, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    storage = tmp_path / "studies"
    first = _run(["experiments/ablation.py", "--grid", "smoke", "--storage", str(storage)], env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "nodes: 20 done, 0 running, 0 failed, 0 missing" in out
    for variant in ("source-only", "warmup", "warmup+", "pd+sl", "proda"):
        assert f"| {variant}" in out
    study = storage / "smoke"
    df = pd.read_parquet(study / "results.parquet")
    assert set(df["variant"]) == {"source-only", "warmup", "warmup+", "pd+sl", "proda"} and set(df["seed"]) == {0, 1}
    final = df[df["is_final"] & df["iou"].notna()]
    assert len(final[["variant", "seed"]].drop_duplicates()) == 10
    assert ((final["iou"] >= 0) & (final["iou"] <= 100)).all()
    # the study is one ordinary Tune experiment that Ray's own tools open: a trial per node, named <node>_<id8>
    from ray.tune import ExperimentAnalysis

    (exp,) = [p for p in (study / "tune").iterdir() if p.name.startswith("study-")]
    assert not (study / "tune" / "running.json").exists()  # the experiment ended: nothing to restore
    analysis = ExperimentAnalysis(str(exp))
    assert len(analysis.trials) == 20
    names = sorted(str(t) for t in analysis.trials)
    assert sum(n.startswith("warmup_") for n in names) == 4  # 2 warm-up kinds × 2 seeds, merged across 5 variants
    assert sum(n.startswith("ssl_") for n in names) == 2  # one ssl node per seed
    assert {t.config["node_id"] for t in analysis.trials} == set(json.loads((study / "plan.json").read_text())["nodes"])
    # no barrier between chain positions: some node started before a node at an earlier position had finished
    order = json.loads((study / "plan.json").read_text())["positions"]
    spans = {t.config["node_id"]: (t.config["node"], t.run_metadata.start_time, t.last_result["timestamp"])
             for t in analysis.trials}
    assert any(order.index(pa) < order.index(pb) and sb < ea
               for pa, _, ea in spans.values() for pb, sb, _ in spans.values()), spans
    # resume: every node is finished, nothing runs, the tables are printed again
    mtimes = {p: p.stat().st_mtime for p in study.glob("nodes/*/done.json")}
    second = _run(["experiments/ablation.py", "--grid", "smoke", "--storage", str(storage)], env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to run" in second.stdout and "| proda" in second.stdout
    assert mtimes == {p: p.stat().st_mtime for p in study.glob("nodes/*/done.json")}
    table = _run(["experiments/results.py", str(study), "--format", "csv", "--no-write"], env)
    assert table.returncode == 0 and "variant" in table.stdout and "proda" in table.stdout
    plan = json.loads((study / "plan.json").read_text())
    assert len(plan["nodes"]) == 20


@pytest.mark.ray
@pytest.mark.slow
def test_a_node_runs_as_a_two_rank_ddp_worker_group(tmp_path, synthetic_cache):
    """`--workers-per-trial 2`: the node's trial launches a TorchTrainer worker group (Train V2) of two ranks
    whose reports reach Tune through TuneReportCallback; the node finishes and the table has its row."""
    import yaml
    from ray.tune import ExperimentAnalysis

    env = {**os.environ, "PRODA_CACHE": synthetic_cache, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
           "RAY_DEDUP_LOGS": "0"}
    grid = tmp_path / "ddp.yaml"
    grid.write_text(yaml.safe_dump({"name": "ddp", "preset": "smoke", "variants": ["source-only"], "seeds": [0],
                                    "overrides": {"data.synthetic_scale": 0.05, "data.batch_size": 4,
                                                  "eval.max_images": 8, "eval.batch_size": 8, "warmup.steps": 4}}))
    run = _run(["experiments/ablation.py", "--grid", str(grid), "--storage", str(tmp_path), "--workers-per-trial",
                "2"], env, timeout=600)
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "2 worker(s) each, as a DDP worker group" in out
    assert "world_size=2" in out + run.stderr  # Train set up a two-rank process group
    assert "nodes: 1 done, 0 running, 0 failed, 0 missing" in out and "| source-only" in out
    (exp,) = (tmp_path / "ddp" / "tune").glob("study-*")
    (trial,) = ExperimentAnalysis(str(exp)).trials
    assert trial.last_result.get("done") == 1 and 0 <= trial.last_result["miou"] <= 100


@pytest.mark.ray
@pytest.mark.slow
def test_the_default_output_is_one_line_per_node_event_without_tunes_boxes(tmp_path, synthetic_cache, ray_address):
    """Off a terminal (here: a pipe) a study prints one line per node event, not Tune's experiment box, trial
    tables and config/result boxes, nor each node's step lines or Ray Train's local-mode notice; ``--verbose``
    brings Tune's reporter and the step lines back."""
    import yaml

    grid = tmp_path / "quiet.yaml"
    grid.write_text(yaml.safe_dump({"name": "quiet", "preset": "smoke", "variants": ["source-only"], "seeds": [0],
                                    "overrides": {"data.synthetic_scale": 0.05, "data.batch_size": 4,
                                                  "eval.max_images": 8, "eval.batch_size": 8, "warmup.steps": 4,
                                                  "log_interval": 2}}))
    env = {**os.environ, "PRODA_CACHE": synthetic_cache, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    run = _run(["experiments/ablation.py", "--grid", str(grid), "--storage", str(tmp_path), "--address", ray_address],
               env, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    plan = json.loads((tmp_path / "quiet" / "plan.json").read_text())
    (warm,) = plan["nodes"]
    lines = out.splitlines()
    assert any(ln.endswith(f"] started warmup {warm[:8]} seed 0 for source-only seed0") for ln in lines), out
    assert any(f"] finished warmup {warm[:8]} seed 0: mIoU " in ln for ln in lines), out
    for noise in ("╭", "Trial status", "Configuration for experiment", "View detailed results",
                  "Running in local mode", "[warmup] step 2/4"):
        assert noise not in out, noise
    events = [json.loads(s)["event"] for s in (tmp_path / "quiet" / "events.jsonl").read_text().splitlines()]
    assert events == ["begin", "started", "finished", "end"]
    # --verbose brings them back: Tune's reporter and the node's own step lines (a fresh study folder: it reruns)
    loud = _run(["experiments/ablation.py", "--grid", str(grid), "--storage", str(tmp_path / "loud"), "--address",
                 ray_address, "--verbose"], env, timeout=600)
    out = loud.stdout + loud.stderr
    assert loud.returncode == 0, out[-3000:]
    assert "[warmup] step 2/4" in out, out[-3000:]
    assert any(s in out for s in ("Trial status", "== Status ==", "Current time")), out[-3000:]
