"""Helpers of the fault suite: studies run as the user runs them (a driver subprocess in its own session),
processes found through /proc, and a reference run of the same node in this process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"RAY_AUTH_TOKEN": "sekrit-token-123", "AWS_SECRET_ACCESS_KEY": "aws-sekrit-9f8e7d",
           "WANDB_API_KEY": "wandb-sekrit-0c0ffee"}


def study_env(cache: str, **extra) -> dict:
    return {**os.environ, "PRODA_CACHE": cache, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
            "RAY_DEDUP_LOGS": "0", **extra}


def write_grid(path: Path, name: str, variants, overrides: dict, seeds=(0,)) -> Path:
    """A small grid on a slice of the embedded benchmark (`cache` holds its images)."""
    base = {"data.synthetic_scale": 0.05, "data.batch_size": 4, "eval.max_images": 8, "eval.batch_size": 8,
            "eval.interval": 1000}
    path.write_text(yaml.safe_dump({"name": name, "preset": "smoke", "variants": variants, "seeds": list(seeds),
                                    "overrides": {**base, **overrides}}, sort_keys=False))
    return path


class Driver:
    """`python SCRIPT ARGS` (default: `experiments/ablation.py`) in a new session; output to a log file."""

    def __init__(self, args: list[str], env: dict, log: Path, script: str = "experiments/ablation.py"):
        self.log = log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.flush()

    def text(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the driver alone: no handler, no cleanup of its own."""
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        """End what this driver started and left behind: the processes of its session, one by one."""
        if self.proc.poll() is None:
            self.kill()
        for _ in range(50):
            left = session_members(self.pid)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self._out.close()


# -- /proc -----------------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields after the command name: state ppid pgrp session ...


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a driver started with a new session: it and all it started)."""
    out = []
    for pid in _pids():
        st = _stat(pid)
        if st and int(st[3]) == sid and st[0] != "Z":
            out.append(pid)
    return out


def trial_processes(sid: int) -> list[int]:
    """Tune trial actors of the driver whose session is ``sid``: where a 1-worker CPU node runs (Train's
    local mode). Found by session, not by parent: a session survives reparenting."""
    return [p for p in session_members(sid) if cmdline(p).startswith(("ray::ImplicitFunc", "ray::_node_trial"))]


def wait_for(predicate, timeout: float, what: str, every: float = 0.05):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- reference runs ----------------------------------------------------------------------------------
class one_thread:
    """The Ray runner gives each 1-CPU node one torch thread; a reference run here does the same, so
    that results compare bit for bit."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def same_weights(a: Path, b: Path) -> list[str]:
    """Names of the tensors that differ between two model.pt files (empty: bit-identical)."""
    from proda import checkpoint as ckpt

    wa, wb = ckpt.load(a)["model"], ckpt.load(b)["model"]
    assert wa.keys() == wb.keys()
    return [k for k in wa if not torch.equal(wa[k], wb[k])]


@pytest.fixture
def drivers():
    """Drivers started by a test; each is closed (with what it left behind) when the test ends."""
    started: list[Driver] = []

    def start(args, env, log, script="experiments/ablation.py"):
        d = Driver(args, env, log, script)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


# -- one study that loses a worker, then its driver ----------------------------------------------------
@pytest.fixture(scope="session")
def interrupted_study(tmp_path_factory, synthetic_cache):
    """A Ray study (variants source-only and st: warm-ups → pseudo labels → stage 1), with secrets in its
    environment, interrupted twice as in real life — then the same command again:

    1. at stage 1's first checkpoint its worker process is SIGKILLed (Tune retries the trial, the node
       resumes from the checkpoint);
    2. at the resumed node's next checkpoint the driver is SIGKILLed (every Ray process it started dies
       with it);
    3. `experiments/ablation.py` with the same arguments runs to the end.

    One scenario for both kills keeps the fault suite within minutes on 2 cores (a Ray study costs ~30 s
    of start-up here); the tests that use it check each guarantee on its own."""
    from proda.ablation.grid import Plan
    from proda.checkpoint import load

    tmp = tmp_path_factory.mktemp("interrupted")
    grid = write_grid(tmp / "dk.yaml", "dk", ["source-only", "st"],
                      {"warmup.steps": 6, "stage1.steps": 40, "checkpoint_interval": 5, "log_interval": 5})
    # --verbose: the nodes' own step lines, which the worker-kill test reads to place the victim at its step
    args = ["--grid", str(grid), "--storage", str(tmp / "studies"), "--verbose"]
    env = study_env(synthetic_cache, **SECRETS)
    study = tmp / "studies" / "dk"
    first = Driver(args, env, tmp / "first.log")
    try:
        plan = Plan.from_json(wait_for(lambda: (study / "plan.json").is_file() and (study / "plan.json").read_text(),
                                       120, "plan.json"))
        stage1 = next(n.id for n in plan.nodes.values() if n.kind == "stage1")
        ck = study / "nodes" / stage1 / "checkpoint.pt"
        wait_for(ck.is_file, 300, "stage 1's first checkpoint")
        victim = wait_for(lambda: trial_processes(first.pid), 60, "stage 1's trial process")
        assert len(victim) == 1, victim  # the trial of the study's only stage-1 node
        os.kill(victim[0], signal.SIGKILL)
        killed_at = load(ck)["step"] if ck.is_file() else None
        wait_for(lambda: f"[{stage1[:8]}] [stage1] resumed from step" in first.text(), 120, "stage 1 to resume")
        resumed_ck = ck.stat().st_mtime_ns
        wait_for(lambda: ck.is_file() and ck.stat().st_mtime_ns != resumed_ck, 120, "a checkpoint after the resume")
        first.kill()
        wait_for(lambda: not trial_processes(first.pid), 60, "the killed driver's workers to end")
    finally:
        first.close()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in study.glob("nodes/*/done.json")}
    stage1_before = load(ck)["step"] if ck.is_file() else None
    second = Driver(args, env, tmp / "second.log")
    try:
        rc = second.wait(timeout=400)
    finally:
        second.close()
    # the undisturbed reference: stage 1 run in this process on copies of its inputs (they finished before
    # any kill, and their own reruns are covered by the engine tests' determinism)
    ref = tmp / "undisturbed"
    for nid in done_before:
        shutil.copytree(study / "nodes" / nid, ref / "nodes" / nid)
    with one_thread():
        from proda.ablation.runner import run_study_local

        run_study_local(plan, ref, log=lambda s: None)
    return {"tmp": tmp, "study": study, "plan": plan, "stage1": stage1, "victim": victim[0],
            "killed_at": killed_at, "stage1_before_rerun": stage1_before, "done_before": done_before, "rc": rc,
            "first": first.text(), "second": second.text(), "reference": ref}
