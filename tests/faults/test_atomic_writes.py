"""A crash while a checkpoint, a node's done.json or the Parquet table is written leaves the previous complete
version readable, and no temporary file behind (a killed writer's is removed by the next write)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from proda import checkpoint as ckpt
from proda.ablation import results as R
from proda.engine.trainer import JsonlLog

from .conftest import ROOT, wait_for


class Crash(Exception):
    pass


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _half_then(exc):
    def write(f):
        f.write(b"\x00" * 300_000)  # half a file on disk, then the crash
        f.flush()
        raise exc
    return write


@pytest.mark.parametrize("exc", [Crash("disk went away"), KeyboardInterrupt(), OSError(28, "No space left on device")],
                         ids=["exception", "ctrl-c", "disk-full"])
def test_crash_inside_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, exc, record_property):
    record_property("fault", f"{type(exc).__name__} inside a checkpoint write")
    path = tmp_path / "checkpoint.pt"
    old = {"step": 10, "w": torch.arange(1000.0)}
    ckpt.save(path, old)
    with pytest.raises(type(exc)):
        ckpt.atomic_write(path, _half_then(exc))
    back = ckpt.load(path)
    lost = int(back["step"] != 10 or not torch.equal(back["w"], old["w"]))
    record_property("results_lost", lost)
    assert lost == 0 and _temps(tmp_path) == []


def test_crash_inside_done_json_write_leaves_the_node_unfinished_not_torn(tmp_path, record_property):
    from proda.engine import folder

    record_property("fault", "exception inside the done.json write")
    node = tmp_path / "node"
    node.mkdir()
    with pytest.raises(Crash):
        ckpt.atomic_write(node / "done.json", _half_then(Crash()))
    assert not folder.is_done(node) and _temps(node) == []  # not done: it runs again, from its checkpoint
    folder.write_json(node / "done.json", {"miou": 12.5})
    assert folder.read_done(node) == {"miou": 12.5}
    record_property("results_lost", 0)


def test_crash_inside_the_parquet_write_keeps_the_previous_table(tmp_path, monkeypatch, record_property):
    record_property("fault", "exception inside the results.parquet write")
    old = pd.DataFrame({"variant": ["proda"], "miou": [41.25]})
    path = R.write_parquet(tmp_path, old)

    def torn_to_parquet(self, f, **kw):
        f.write(b"PAR1" + b"\x00" * 5000)
        raise Crash("killed while writing the table")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", torn_to_parquet)
    with pytest.raises(Crash):
        R.write_parquet(tmp_path, pd.DataFrame({"variant": ["st"], "miou": [1.0]}))
    monkeypatch.undo()
    back = pd.read_parquet(path)
    lost = int(not back.equals(old))
    record_property("results_lost", lost)
    assert lost == 0 and _temps(tmp_path) == []


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from proda.checkpoint import atomic_write

    path, ready = Path(sys.argv[1]), Path(sys.argv[2])

    def write(f):
        f.write(b"\\x00" * 2_000_000)
        f.flush()
        ready.touch()
        time.sleep(60)  # killed here, mid-write

    atomic_write(path, write)
""")


def test_writer_killed_mid_write_keeps_the_old_checkpoint_and_its_temp_is_swept(tmp_path, record_property):
    record_property("fault", "SIGKILL of a process in the middle of a checkpoint write")
    path, ready = tmp_path / "checkpoint.pt", tmp_path / "ready"
    ckpt.save(path, {"step": 10, "w": torch.ones(3)})
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(ready)], cwd=ROOT)
    try:
        wait_for(ready.exists, 120, "the writer to be mid-write")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(_temps(tmp_path)) == 1  # the killed writer's half file: nothing could remove it then
    lost = int(ckpt.load(path)["step"] != 10)
    record_property("results_lost", lost)
    assert lost == 0
    ckpt.save(path, {"step": 20, "w": torch.ones(3)})  # the resumed run's next checkpoint
    assert ckpt.load(path)["step"] == 20 and _temps(tmp_path) == []


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    """Only temps of dead writers are swept: a concurrent writer of the same file keeps its own."""
    path = tmp_path / "results.parquet"
    mine = tmp_path / f".results.parquet.{ckpt._HOST}.1.abc.tmp"  # pid 1 is alive in any namespace
    other_host = tmp_path / ".results.parquet.another-host.999999.abc.tmp"
    mine.write_bytes(b"x")
    other_host.write_bytes(b"x")
    ckpt.atomic_write(path, lambda f: f.write(b"new"))
    assert mine.exists() and other_host.exists() and path.read_bytes() == b"new"


def test_a_log_line_torn_by_a_kill_does_not_swallow_the_next_record(tmp_path, record_property):
    record_property("fault", "kill in the middle of a metrics.jsonl line")
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"kind": "eval", "step": 10, "miou": 5.0}) + "\n" + '{"kind": "eval", "st')
    JsonlLog(log).write({"kind": "eval", "step": 20, "miou": 6.0})  # the resumed run appends
    steps = [r["step"] for r in R.read_jsonl(log)]
    record_property("results_lost", len({10, 20} - set(steps)))
    assert steps == [10, 20]
