"""The driver (`experiments/ablation.py`) killed with SIGKILL mid-study, then the same command run again: no
finished node runs again, the interrupted study's Tune experiment is restored, the interrupted node resumes
from its checkpoint, and the tables equal those of an undisturbed study. The study ran with secrets in its
environment; none of them reaches its folder. (The ``interrupted_study`` fixture runs the scenario.)"""

import re

import pandas as pd
import pytest

from proda.ablation import results as R

from .conftest import SECRETS

pytestmark = [pytest.mark.ray]
DRIVER_KILL = "SIGKILL of the driver mid-study, then the same command again"


def test_rerun_after_a_killed_driver_runs_no_finished_node_again_and_completes(interrupted_study,
                                                                             record_property):
    k = interrupted_study
    record_property("fault", DRIVER_KILL)
    assert k["rc"] == 0, k["second"][-3000:]
    study, stage1, before = k["study"], k["stage1"], k["done_before"]
    assert stage1 not in before and len(before) == 3  # both warm-ups and the pseudo labels were finished
    after = {p.parent.name: p.stat().st_mtime_ns for p in study.glob("nodes/*/done.json")}
    rerun = [nid for nid in before if after.get(nid) != before[nid]]
    record_property("results_lost", len(rerun))
    assert rerun == [], f"finished nodes ran again: {rerun}"
    for nid in before:  # nothing of theirs was even started by the second command
        assert f"[{nid[:8]}]" not in k["second"]
    assert f"restoring the interrupted Tune experiment {study / 'tune'}/study-" in k["second"]
    resumed = re.findall(rf"\[{stage1[:8]}\] \[stage1\] resumed from step (\d+)", k["second"])
    assert resumed == [str(k["stage1_before_rerun"])]  # from the checkpoint the dead driver's worker left
    assert "nodes: 4 done, 0 running, 0 failed, 0 missing" in k["second"]


def test_tables_after_the_kill_equal_those_of_an_undisturbed_study(interrupted_study, record_property):
    k = interrupted_study
    record_property("fault", DRIVER_KILL)
    got = R.scores(pd.read_parquet(k["study"] / "results.parquet"))
    want = R.scores(R.collect(k["reference"]))
    assert list(got["variant"]) == list(want["variant"]) == ["source-only", "st"]
    record_property("results_lost", int(sum(a != b for a, b in zip(got["miou"], want["miou"]))))
    assert got["miou"].notna().all()
    assert list(got["miou"]) == list(want["miou"])  # deterministic on CPU: equal, not just close
    classes = R.class_columns(R.collect(k["reference"]))
    pd.testing.assert_frame_equal(got[classes], want[classes])


def test_no_secret_of_the_environment_reaches_the_study_folder(interrupted_study):
    study = interrupted_study["study"]
    files = [p for p in study.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.suffix == ".parquet" for p in files)
    for p in files:
        data = p.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name} found in {p}"
    df = pd.read_parquet(study / "results.parquet")
    cells = " ".join(map(str, df.astype(str).to_numpy().ravel())) + " ".join(df.columns)
    for name, value in SECRETS.items():
        assert value not in cells, f"{name} found in the Parquet table"
