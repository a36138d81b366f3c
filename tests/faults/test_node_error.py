"""A node that raises: the study says so. The exception's type and first line, and the path of the file holding
its full traceback, are in the failed node's line of the summary and of `results.py`; the study exits 1; its
branch is skipped while the other rows finish; the same command again runs the failed branch and nothing that
had finished. In this process (`run_study_local`, no Ray), with the error injected into the pseudo-label node —
the Ray trial path of the same record is covered by `test_nonfinite.py` and `test_scheduler.py`."""

import importlib.util
import json
from pathlib import Path

import pytest

from .conftest import ROOT, write_grid

ERROR = "index 19 is out of bounds for dimension 0 with size 19"


def script_main(name: str):
    """``main`` of ``experiments/<name>.py`` (a script, not a module of the package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_cli", ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture
def in_process(monkeypatch, synthetic_cache):
    """`experiments/ablation.py` runs its study in this process (`run_study_local`) instead of on Ray."""
    from proda.ablation import runner

    monkeypatch.setenv("PRODA_CACHE", synthetic_cache)
    monkeypatch.setattr(runner, "run_study",
                        lambda plan, study, log=print, **kw: runner.run_study_local(plan, study, log))


def test_a_node_that_raises_is_named_with_its_error_and_traceback_and_the_study_exits_1(
        tmp_path, in_process, monkeypatch, capsys, record_property):
    record_property("fault", "a node raises (IndexError in pseudo-label generation)")
    import proda.method.pseudo as pseudo

    def broken(*args, **kwargs):
        raise IndexError(f"{ERROR}\nsecond line of the message")

    generate = pseudo.generate
    monkeypatch.setattr(pseudo, "generate", broken)
    grid = write_grid(tmp_path / "boom.yaml", "boom", ["source-only", "st"], {"warmup.steps": 4, "stage1.steps": 4})
    args = ["--grid", str(grid), "--storage", str(tmp_path / "studies")]
    rc = script_main("ablation")(args)
    out, err = capsys.readouterr()
    study = tmp_path / "studies" / "boom"
    plan = json.loads((study / "plan.json").read_text())
    rows = {r["variant"]: r for r in plan["rows"]}
    warmup, pseudo0, stage1 = rows["st"]["nodes"]

    assert rc == 1, out + err
    assert "2 of 4 nodes failed" in err
    tb = study / "nodes" / pseudo0 / "traceback.txt"
    line = f"failed: {pseudo0} (pseudo0, seed 0): IndexError: {ERROR} (traceback: {tb})"
    assert line in out, out
    assert f"  failed: {stage1} (stage1, seed 0): skipped: an upstream node failed" in out.splitlines()
    text = tb.read_text()
    assert text.startswith("Traceback (most recent call last)") and "in broken" in text
    assert "second line of the message" in text
    assert (study / "nodes" / rows["source-only"]["final"] / "done.json").is_file()
    assert script_main("results")([str(study), "--no-write"]) == 0  # results.py, at any time after
    assert line in capsys.readouterr().out

    # the same command again: the failed branch runs (the error is gone), nothing finished runs again
    monkeypatch.setattr(pseudo, "generate", generate)
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in study.glob("nodes/*/done.json")}
    assert set(done_before) == {rows["source-only"]["final"], warmup}
    rc = script_main("ablation")(args)
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert {n: (study / "nodes" / n / "done.json").stat().st_mtime_ns for n in done_before} == done_before
    assert all((study / "nodes" / n / "done.json").is_file() for n in (pseudo0, stage1))
    assert "failed:" not in out and not tb.exists() and not (study / "nodes" / pseudo0 / "failed.json").exists()
    record_property("results_lost", 0)
