"""The study folder (proda.ablation.study): a node's status through its life, the driver's verdicts, plan.json."""

import json

import pytest

from proda.ablation import study
from proda.ablation.grid import SMOKE_SPEC, expand
from proda.engine.folder import write_json


def test_a_nodes_status_goes_missing_running_failed_and_after_a_retry_done(tmp_path):
    d = study.node_dir(tmp_path, "a" * 16)
    assert d == tmp_path / "nodes" / ("a" * 16) and study.status(d) == "missing"
    d.mkdir(parents=True)
    assert study.status(d) == "running"  # running now, or interrupted: it resumes from its checkpoint
    try:
        {}["x"]
    except KeyError as e:
        rec = study.record_error(d, e)
    study.mark_failed(d, rec, "warmup")
    assert study.node_status(tmp_path, "a" * 16) == "failed"
    assert study.read_failed(d) == {"type": "KeyError", "error": "'x'", "traceback": "traceback.txt", "node": "warmup"}
    study.retry(d)
    assert study.status(d) == "running" and sorted(p.name for p in d.iterdir()) == []
    write_json(d / "done.json", {"miou": 1.0})
    study.mark_failed(d, study.SKIPPED, "warmup")
    assert study.status(d) == "done"  # done.json wins: a finished node never runs again


def test_an_unfinished_trial_is_failed_with_its_recorded_error_or_in_words(tmp_path):
    with_error, killed = tmp_path / "e", tmp_path / "k"
    try:
        raise RuntimeError("out of memory\nmore lines")
    except RuntimeError as e:
        study.record_error(with_error, e)
    study.mark_unfinished(with_error, "stage1")
    study.mark_unfinished(killed, "stage1")
    assert study.read_failed(with_error)["error"] == "out of memory"
    assert study.read_failed(killed) == {"error": study.UNFINISHED, "node": "stage1"}


def test_a_verdict_written_before_the_rename_reads_with_its_node_name(tmp_path):
    # older failed.json files named the node's chain position "phase"
    write_json(tmp_path / "failed.json", {"error": study.SKIPPED, "phase": "pseudo0"})
    assert study.read_failed(tmp_path) == {"error": study.SKIPPED, "node": "pseudo0"}
    assert study.status(tmp_path) == "failed"


def test_the_plan_and_the_running_marker_round_trip_through_the_folder(tmp_path):
    plan = expand(SMOKE_SPEC)
    study.write_plan(tmp_path, plan)
    assert study.load_plan(tmp_path).to_json() == plan.to_json() == (tmp_path / "plan.json").read_text()
    assert study.read_running(tmp_path) is None
    study.write_running(tmp_path, {"name": "study-x", "plan": "d", "study_dir": str(tmp_path)})
    assert json.loads((tmp_path / "tune" / "running.json").read_text())["name"] == "study-x"
    study.clear_running(tmp_path)
    assert study.read_running(tmp_path) is None


def test_a_folder_without_a_plan_is_not_a_study(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a study folder: it has no plan.json"):
        study.load_plan(tmp_path)


def test_done_json_has_one_reader_for_the_engine_and_the_tables(tmp_path):
    from proda.engine import folder
    from proda.engine.nodes import run_node

    d = tmp_path / "n"
    assert study.read_done is folder.read_done and folder.read_done(d) is None  # missing: None, not a raise
    d.mkdir()
    (d / "done.json").write_text("[1, 2]")  # only a hand edit makes this: done, but not a metrics object
    assert folder.is_done(d) and folder.read_done(d) is None
    with pytest.raises(RuntimeError, match=r"done\.json: not a JSON object"):
        run_node(None, None, d, {})
    write_json(d / "done.json", {"miou": 2.5})
    assert run_node(None, None, d, {}) == {"miou": 2.5}  # a finished node returns its metrics at once
