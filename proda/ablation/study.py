"""The study folder: its layout, each node's status, the driver's verdicts and ``plan.json``, in one place.

The runner, the searcher, the tables and the CLI all read and write a study folder through this module
(no Ray here); that a node is complete (``done.json``) is the engine's own rule, :mod:`proda.engine.folder`.

    STUDY/plan.json                the Plan (:meth:`Plan.to_json`), rewritten at every start
    STUDY/nodes/<id>/              one folder per node: done.json | failed.json (+ error.json, traceback*.txt)
    STUDY/tune/running.json        while a Tune experiment runs: its name, a digest of the plan's ids, the folder

A node's status: ``done`` (done.json), ``failed`` (failed.json: the driver's verdict), ``running`` (its folder
exists: running now, or interrupted — it resumes from its checkpoint), ``missing`` (no folder yet). Every JSON
file is written atomically, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from proda.ablation.grid import Plan
from proda.checkpoint import atomic_write
from proda.engine.folder import is_done, read_done, read_json, write_json  # noqa: F401 - read_done re-exported

PLAN = "plan.json"
FAILED = "failed.json"  # the driver's verdict: an error.json record or a reason in words, and the node's name
ERROR = "error.json"  # the exception that ended an attempt at a node, written by the process that caught it
RUNNING = "running.json"  # in STUDY/tune/
STATUSES = ("done", "running", "failed", "missing")
SKIPPED = "skipped: an upstream node failed"
UNFINISHED = "the node's trial ended without finishing (see its Tune log)"
NO_INPUT = "an input never became available"


# -- layout ----------------------------------------------------------------------------------------
def node_dir(study_dir: Path, node_id: str) -> Path:
    return Path(study_dir) / "nodes" / node_id


def tune_dir(study_dir: Path) -> Path:
    return Path(study_dir) / "tune"


# -- status ----------------------------------------------------------------------------------------
def status(folder: Path) -> str:
    """``done``, ``failed``, ``running`` or ``missing``: the status of the node whose folder is ``folder``."""
    if is_done(folder):
        return "done"
    if (folder / FAILED).is_file():
        return "failed"
    return "running" if folder.is_dir() else "missing"


def node_status(study_dir: Path, node_id: str) -> str:
    return status(node_dir(study_dir, node_id))


def read_failed(folder: Path) -> dict | None:
    rec = read_json(folder / FAILED)
    if rec is not None and "phase" in rec:  # backward compatibility: a verdict written before "node" was "phase"
        rec["node"] = rec.pop("phase")
    return rec


# -- markers: errors and the driver's verdicts ---------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def record_error(folder: Path, exc: BaseException) -> dict:
    """Write what went wrong in a node at once, from the process that caught ``exc``: its full
    traceback in ``traceback.txt`` (``traceback.rank<r>.txt`` for DDP rank r > 0), and
    ``{"type", "error" (the message's first line), "traceback" (that file's name)}`` in ``error.json`` —
    unless another rank wrote it first in this trial (the other ranks usually fail because of it; the
    file is cleared when a trial starts). Returns the record."""
    from proda import distributed as ddp  # noqa: PLC0415

    rank = ddp.rank()
    tb = "traceback.txt" if rank == 0 else f"traceback.rank{rank}.txt"
    rec = {"type": type(exc).__name__, "error": _first_line(exc), "traceback": tb}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        atomic_write(folder / tb, lambda f: f.write(text.encode()))
        if not (folder / ERROR).is_file():
            write_json(folder / ERROR, rec)
    except OSError:  # e.g. the disk is full: the exception itself still propagates (Tune's log has it)
        pass
    return rec


def has_error(folder: Path) -> bool:
    return (folder / ERROR).is_file()


def clear_error(folder: Path) -> None:
    """Before a new attempt at a node: the previous attempt's error is no longer its story."""
    (folder / ERROR).unlink(missing_ok=True)
    for p in folder.glob("traceback*.txt"):
        p.unlink(missing_ok=True)


def retry(folder: Path) -> None:
    """A node that failed before is tried again: its verdict and its last error go."""
    (folder / FAILED).unlink(missing_ok=True)
    clear_error(folder)


def mark_failed(folder: Path, error: str | dict, name: str) -> None:
    """``failed.json``: ``error`` is the reason in words (skipped, unfinished) or a :func:`record_error` record;
    ``node``: the node's name (its chain position)."""
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"error": error} if isinstance(error, str) else dict(error)
    write_json(folder / FAILED, {**rec, "node": name})


def mark_unfinished(folder: Path, name: str) -> None:
    """The driver's verdict on a node whose trial ended without ``done.json``: failed, with the exception
    its trial process recorded (``error.json``) when there is one, else :data:`UNFINISHED` (e.g. the
    process was killed)."""
    rec = read_json(folder / ERROR)
    mark_failed(folder, rec if rec is not None and "type" in rec else UNFINISHED, name)


# -- the plan and the running experiment ----------------------------------------------------------------
def write_plan(study_dir: Path, plan: Plan) -> None:
    atomic_write(Path(study_dir) / PLAN, lambda f: f.write(plan.to_json().encode()))


def load_plan(study_dir: str | Path) -> Plan:
    path = Path(study_dir) / PLAN
    if not path.is_file():
        raise FileNotFoundError(f"'{study_dir}' is not a study folder: it has no {PLAN}")
    return Plan.from_json(path.read_text())


def write_running(study_dir: Path, marker: dict[str, Any]) -> None:
    write_json(tune_dir(study_dir) / RUNNING, marker)


def read_running(study_dir: Path) -> dict | None:
    return read_json(tune_dir(study_dir) / RUNNING)


def clear_running(study_dir: Path) -> None:
    (tune_dir(study_dir) / RUNNING).unlink(missing_ok=True)
