"""The two commands refuse bad input with one `error:` line (a traceback only with --debug), start nothing,
and a study whose every node is finished prints its tables without running anything."""

import json
import time

import pytest

from proda.ablation.grid import AblationSpec, expand
from proda.ablation.runner import StudyError, connect

from .conftest import ablation_main, assert_refused, run_cli

GRID = "name: g\npreset: smoke\nvariants: [source-only, warmup]\nseeds: [0]\n" \
       "overrides: {data.synthetic_scale: 0.05, warmup.steps: 4}\n"


@pytest.fixture
def grid(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


# -- as a user runs them: subprocesses (the ones that fail before torch is imported are cheap) ----------
@pytest.mark.parametrize("args,needles", [
    (["--grid", "smok"], ["unknown built-in spec (did you mean 'smoke'?)"]),
    (["--seeds", "1,1"], ["seeds=[1, 1]: a seed is repeated"]),
    (["--workers-per-trial", "0"], ["--workers-per-trial 0: must be >= 1"]),
    (["--dataset", "synthia", "--grid", "smoke", "--data-root", "/nonexistent/data"],
     ["--data-root '/nonexistent/data' does not exist"]),
])
def test_ablation_command_refuses_in_one_line(tmp_path, args, needles):
    p = run_cli(["experiments/ablation.py", *args, "--storage", str(tmp_path / "s")])
    assert_refused(p.returncode, p.stderr, *needles)
    assert not (tmp_path / "s").exists()


def test_grid_names_a_built_in_study_or_a_file_and_preset_is_its_older_spelling(tmp_path, grid, capsys, monkeypatch):
    main = ablation_main()
    monkeypatch.chdir(tmp_path)  # a bare word is a built-in study unless a file of that name is here
    assert main(["--grid", "smoke", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("study 'smoke'")
    assert main(["--grid", str(grid), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("study 'g'")
    (tmp_path / "smoke").write_text(GRID)  # an existing file wins over the built-in name
    assert main(["--grid", "smoke", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("study 'g'")
    assert main(["--preset", "sensitivity", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("study 'sensitivity'")
    assert "note: --preset sensitivity is spelled --grid sensitivity now" in out.err
    assert main(["--grid", "nope.yaml", "--dry-run"]) == 2
    assert "error: --grid 'nope.yaml': no such file" in capsys.readouterr().err
    assert main(["--grid", "smoke", "--preset", "smoke", "--dry-run"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_typo_in_a_grid_file_is_named_and_debug_shows_the_traceback(tmp_path):
    grid = tmp_path / "typo.yaml"
    grid.write_text(GRID.replace("variants:", "variant:"))
    p = run_cli(["experiments/ablation.py", "--grid", str(grid), "--storage", str(tmp_path / "s")])
    assert_refused(p.returncode, p.stderr, "unknown key 'variant' (did you mean 'variants'?)")
    p = run_cli(["experiments/ablation.py", "--grid", str(grid), "--storage", str(tmp_path / "s"), "--debug"])
    assert p.returncode == 2 and "Traceback (most recent call last)" in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"error: {grid}: ablation spec: unknown key 'variant'")


def test_grid_file_that_is_not_yaml_is_named_with_its_line(tmp_path):
    grid = tmp_path / "broken.yaml"
    grid.write_text(GRID.replace("seeds: [0]", "seeds: [0"))  # line 4: the list is never closed
    p = run_cli(["experiments/ablation.py", "--grid", str(grid), "--storage", str(tmp_path / "s")])
    line = assert_refused(p.returncode, p.stderr, "not valid YAML", "while parsing a flow sequence started at line 4")
    assert line.startswith(f"error: {grid}:5: ") and p.returncode == 2, line
    assert not (tmp_path / "s").exists()


def test_empty_grid_file_is_refused_not_run_as_the_default_study(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing here yet\n")
    p = run_cli(["experiments/ablation.py", "--grid", str(tmp_path / "empty.yaml"), "--storage", str(tmp_path / "s")])
    assert_refused(p.returncode, p.stderr, "empty.yaml' is empty")
    assert not (tmp_path / "s").exists()


def test_cluster_address_that_does_not_answer_fails_fast_naming_it(tmp_path, grid):
    t0 = time.monotonic()
    p = run_cli(["experiments/ablation.py", "--grid", str(grid), "--storage", str(tmp_path / "s"),
                 "--address", "127.0.0.1:1"], timeout=60)
    took = time.monotonic() - t0
    assert_refused(p.returncode, p.stderr, "--address 127.0.0.1:1: no Ray cluster answers there")
    assert took < 30, f"took {took:.0f} s"
    assert not list((tmp_path / "s").glob("*/nodes"))


def test_address_that_swallows_packets_fails_within_the_timeout(monkeypatch):
    """A firewalled host answers nothing: the probe gives up after the timeout (here a fake clock)."""
    import socket

    seen = {}

    def blackhole(addr, timeout):
        seen.update(addr=addr, timeout=timeout)
        raise socket.timeout("timed out")

    monkeypatch.setattr(socket, "create_connection", blackhole)
    with pytest.raises(StudyError, match=r"--address 10\.1\.2\.3:6379: no Ray cluster answers there "
                                         r"\(no answer within 7 s"):
        connect("10.1.2.3:6379", timeout_s=7)
    assert seen == {"addr": ("10.1.2.3", 6379), "timeout": 7}


# -- in this process: the same main(), cheaper ------------------------------------------------------
@pytest.fixture
def fake_cluster(monkeypatch):
    """A 2-CPU, GPU-less 'cluster' without Ray: `connect` does nothing, the resource calls answer."""
    import ray

    from proda.ablation import runner

    monkeypatch.setattr(runner, "connect", lambda address: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])


@pytest.mark.parametrize("args,needles", [
    (["--workers-per-trial", "4"], ["--workers-per-trial 4 × (1 CPU) can never fit this cluster",
                                    "2 CPU in all, room for 2 such workers"]),
    (["--workers-per-trial", "2", "--cpus-per-worker", "1.5"], ["can never fit this cluster"]),
    (["--gpus-per-worker", "1"], ["1 GPU) can never fit this cluster", "0 GPU in all"]),
])
def test_trial_larger_than_the_cluster_is_refused_instead_of_waiting(tmp_path, grid, capsys, fake_cluster,
                                                                     args, needles):
    rc = ablation_main()(["--grid", str(grid), "--storage", str(tmp_path / "s"), *args])
    assert_refused(rc, capsys.readouterr().err, *needles)
    assert not (tmp_path / "s" / "g" / "nodes").exists() and not (tmp_path / "s" / "g" / "tune").exists()


@pytest.mark.parametrize("args,needles", [
    (["--set", "stage1.tau=0"], ["stage1.tau=0.0: must be in (0.0, 1000.0]"]),
    (["--set", "stage1.gama1=3"], ["unknown config field 'stage1.gama1' (did you mean 'stage1.gamma1'?)"]),
    (["--set", "stage1.gamma1"], ["--set 'stage1.gamma1': expected FIELD=VALUE"]),
    (["--set", "data.batch_size=four"], ["data.batch_size='four': expected an integer"]),
    (["--set", "stage1.gamma1=[5"], ["--set 'stage1.gamma1=[5': line 1: not valid YAML"]),
    (["--preset", "smok"], ["preset='smok': must be one of"]),
    (["--variant", "pd+sll"], ["variant='pd+sll': must be one of"]),
    (["--config", "/nonexistent/cfg.yaml"], ["config file '/nonexistent/cfg.yaml' does not exist"]),
])
def test_train_command_refuses_in_one_line(tmp_path, capsys, args, needles):
    from proda.train import main

    base = {"--variant": "st", "--out": str(tmp_path / "run")}
    for k, v in zip(args[::2], args[1::2]):
        if k in base:
            base[k] = v
    extra = [a for k, v in zip(args[::2], args[1::2]) if k not in base for a in (k, v)]
    rc = main([a for kv in base.items() for a in kv] + extra)
    assert_refused(rc, capsys.readouterr().err, *needles)
    assert not (tmp_path / "run").exists()


def test_train_config_file_that_is_not_yaml_is_named_with_its_line(tmp_path, capsys):
    from proda.train import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed: 0\nstage1:\n  gamma1: 5\n    gamma2: 0.1\n")  # line 4 indented under a scalar
    rc = main(["--variant", "st", "--config", str(cfg), "--out", str(tmp_path / "run")])
    line = assert_refused(rc, capsys.readouterr().err, "not valid YAML: mapping values are not allowed here")
    assert line.startswith(f"error: {cfg}:4: ") and rc == 2, line
    assert not (tmp_path / "run").exists()


def test_train_config_file_with_an_unknown_field_is_named(tmp_path, capsys):
    from proda.train import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("stage1:\n  gama1: 5\n")
    rc = main(["--variant", "st", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert_refused(rc, capsys.readouterr().err, f"error: {cfg}: unknown config field 'stage1.gama1'")


def test_train_command_refuses_an_out_folder_that_is_a_file(tmp_path, capsys, synthetic_cache):
    from proda.train import main

    (tmp_path / "afile").write_text("x")
    rc = main(["--variant", "source-only", "--preset", "smoke", "--out", str(tmp_path / "afile" / "run"),
               "--set", f"data.source_root={synthetic_cache}", "--set", f"data.target_root={synthetic_cache}"])
    assert_refused(rc, capsys.readouterr().err, "afile/run")


# -- a study whose every node is finished: tables, nothing run ------------------------------------
def _finished_study(storage, grid_path):
    """A hand-made study folder: plan.json and a done.json + evaluation record for every node."""
    plan = expand(AblationSpec.from_yaml(grid_path))
    study = storage / plan.spec.name
    study.mkdir(parents=True)
    (study / "plan.json").write_text(plan.to_json())
    for i, (nid, node) in enumerate(plan.nodes.items()):
        d = study / "nodes" / nid
        d.mkdir(parents=True)
        iou = {"road": 50.0 + i, "car": 10.0}
        rec = {"stage": node.name, "kind": "eval", "step": node.config[node.kind]["steps"], "miou": 30.0 + i,
               "iou": iou}
        (d / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
        (d / "done.json").write_text(json.dumps({"stage": node.name, "kind": node.kind, "miou": 30.0 + i,
                                                 "iou": iou}))
    return study


def test_finished_study_prints_its_tables_and_runs_nothing(tmp_path, grid, capsys):
    import ray

    study = _finished_study(tmp_path / "s", grid)
    mtimes = {p: p.stat().st_mtime_ns for p in (study / "nodes").rglob("*")}
    rc = ablation_main()(["--grid", str(grid), "--storage", str(tmp_path / "s")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "every node of this study is already finished: nothing to run" in out.out
    assert "nodes: 2 done, 0 running, 0 failed, 0 missing" in out.out
    assert "| source-only | 30.00 ± – (n=1)" in out.out and "| warmup      | 31.00 ± – (n=1)" in out.out
    assert not ray.is_initialized() and not (study / "tune").exists()
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing rewritten; the table is new
    assert (study / "results.parquet").is_file()
