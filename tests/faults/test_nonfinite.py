"""A loss that becomes NaN/inf: the node stops at once, named (stage, step, loss term), is marked failed in the
tables with its error and traceback, is not retried (it would diverge again), and nothing downstream runs on
its output — while the other rows of the study finish, and the study exits 1. The divergence is a real one,
from legal but absurd values: SGD with lr 10 and weight decay 1 multiplies the weights by about -9 each step,
whatever the data."""

import json

import pandas as pd
import pytest

from proda.ablation import results as R

from .conftest import study_env, write_grid

pytestmark = [pytest.mark.ray]


def test_diverging_node_fails_alone_and_its_branch_is_skipped(tmp_path, synthetic_cache, drivers,
                                                             record_property):
    record_property("fault", "loss diverges to NaN/inf (warmup.lr=10, optim.weight_decay=1) in a Ray study")
    variants = {"ok": {"base": "source-only"},
                "diverges": {"base": "pd+sl", "warmup": "source", "optim.optimizer": "sgd",
                             "warmup.lr": 10.0, "optim.weight_decay": 1.0}}
    grid = write_grid(tmp_path / "nan.yaml", "nan", variants,
                      {"warmup.steps": 24, "stage1.steps": 4, "log_interval": 1, "checkpoint_interval": 5})
    storage = tmp_path / "studies"
    d = drivers(["--grid", str(grid), "--storage", str(storage)], study_env(synthetic_cache), tmp_path / "nan.log")
    rc = d.wait(timeout=300)
    out = d.text()
    assert rc == 1, out[-3000:]  # a study with a failed node says so
    study = storage / "nan"
    plan = json.loads((study / "plan.json").read_text())
    rows = {r["variant"]: r for r in plan["rows"]}
    bad_warmup, *downstream = rows["diverges"]["nodes"]

    # the diverging node: failed, named, stopped at once and not retried
    failed = json.loads((study / "nodes" / bad_warmup / "failed.json").read_text())
    assert failed["error"].startswith("stage 'warmup': loss term 'loss_src' became NaN/inf at or before step ")
    assert failed["type"] == "NonFiniteLoss" and failed["traceback"] == "traceback.txt"
    tb = study / "nodes" / bad_warmup / "traceback.txt"
    assert "NonFiniteLoss: stage 'warmup'" in tb.read_text()  # written by the trial process that caught it
    stop = int(failed["error"].rsplit(" ", 1)[1])
    assert stop < 24
    steps = [r["step"] for r in map(json.loads, (study / "nodes" / bad_warmup / "metrics.jsonl").read_text()
                                    .splitlines()) if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and max(steps) < stop  # one attempt, no step past the divergence
    assert not (study / "nodes" / bad_warmup / "model.pt").exists()

    # downstream: skipped, never ran (no artifact of any kind)
    for nid in downstream:
        files = sorted(p.name for p in (study / "nodes" / nid).iterdir())
        assert files == ["failed.json"], files
        assert json.loads((study / "nodes" / nid / "failed.json").read_text())["error"] == \
            "skipped: an upstream node failed"

    # the other row is unaffected; the tables say what failed and why
    assert (study / "nodes" / rows["ok"]["final"] / "done.json").is_file()
    assert "nodes: 1 done, 0 running, 3 failed, 0 missing (4 in all)" in out
    line = next(ln for ln in out.splitlines() if f"failed: {bad_warmup} " in ln)
    assert line.startswith(f"  failed: {bad_warmup} (warmup, seed 0): NonFiniteLoss: stage 'warmup': loss term "
                           f"'loss_src'") and line.endswith(f" (traceback: {tb})"), line
    assert "3 of 4 nodes failed" in out
    df = pd.read_parquet(study / "results.parquet")
    sc = R.scores(df).set_index("variant")
    assert sc.loc["diverges", "status"] == "failed" and pd.isna(sc.loc["diverges", "miou"])
    assert sc.loc["ok", "status"] == "done" and 0 <= sc.loc["ok", "miou"] <= 100
    assert set(df[df["node_id"].isin([bad_warmup, *downstream])]["status"]) == {"failed"}
    record_property("results_lost", 0 if sc.loc["ok", "status"] == "done" else 1)
