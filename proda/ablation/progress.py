"""The study's live view on the driver: what runs, what finished, and how long the rest takes.

The searcher (:mod:`proda.ablation.scheduler`) and a Tune callback (:class:`TuneFeed`) feed the view
(:class:`StudyProgress`) with node events: a trial started (its node, the rows it serves), a running node
reported (``step`` and ``images_per_s`` of its train reports, :func:`proda.engine.trainer.run_stage`), a node
ended (done: its mIoU from ``done.json``; failed: the first line of its error from ``failed.json``), a node
was skipped (an upstream node failed). Nodes finished before the run are *reused*.

On a terminal: one tqdm bar for the study (share of the estimated work; nodes done / total, ETA) and one line
per running node (name, id, seed, rows, step/steps, img/s); node events are printed above the bar. Elsewhere
(CI, ``ray job submit``, a log file): one line per node event and a progress line at most every 30 s. Every
event is also appended to ``STUDY/events.jsonl`` with the ETA the view showed then
(``benchmarks/eta_accuracy.py`` compares it with the true remaining time).

The ETA (:class:`proda.ablation.eta.Estimator`) learns from the nodes already finished, per node kind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from ray.tune import Callback

from proda.ablation import study
from proda.ablation.eta import Estimator
from proda.ablation.grid import Plan
from proda.method.pseudo import pseudo_text

PROGRESS_EVERY_S = 30.0  # off a terminal: at most one progress line per this many seconds
MAX_NODE_LINES = 16  # on a terminal: at most this many running-node lines under the bar


# ---------------------------------------------------------------------------------------------
# words


def clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def duration_text(seconds: float | None) -> str:
    """``42 s``, ``3.5 min``, ``1.2 h``; ``unknown`` for ``None``."""
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def rows_text(rows: list[str], width: int = 60) -> str:
    """The rows a node serves, cut to ``width``: ``pd+sl seed0, proda seed0`` / ``source-only seed0, … (8 rows)``."""
    text = ", ".join(rows)
    if len(text) <= width:
        return text
    tail = f", … ({len(rows)} rows)"
    return text[: max(0, width - len(tail))].rsplit(", ", 1)[0] + tail


def _result_text(rec: dict) -> str:
    if "miou" in rec:
        return f"mIoU {rec['miou']:.2f}"
    if "pseudo_label_accuracy" in rec:
        return pseudo_text(rec)
    return "done"


def _error_text(rec: dict) -> str:
    if "type" in rec:
        return f"{rec['type']}: {rec.get('error', '')}"
    return str(rec.get("error", "unknown error"))


# ---------------------------------------------------------------------------------------------
# the view


class StudyProgress:
    """The driver's view of one run of a study. ``started`` / ``reported`` / ``ended`` / ``skipped`` are the
    node events, ``tick`` the passing of time; ``tty`` picks the live bar or the event lines (``write``)."""

    def __init__(self, plan: Plan, study_dir: Path, todo: list[str], slots: int, *, tty: bool | None = None,
                 write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 every_s: float = PROGRESS_EVERY_S, events_file: bool = True):
        from proda.chain import stage_steps  # noqa: PLC0415
        from proda.config import Config  # noqa: PLC0415

        self.plan, self.study_dir, self.clock, self.every_s = plan, Path(study_dir), clock, every_s
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._write = write or (lambda s: print(s, flush=True))
        reused = {i for i in plan.nodes if i not in set(todo)}
        self.est = Estimator(plan, slots, done=reused)
        self.steps = {i: stage_steps(n.kind, Config.from_dict(n.config)) for i, n in plan.nodes.items()}
        self.rows: dict[str, str] = {}  # running node → the rows it serves, in words
        self.at: dict[str, tuple[int, float | None]] = {}  # running node → (step, images/s) of its last report
        self.failed = self.skipped_n = 0
        self.t0 = self.last_line = clock()  # last_line: when the last progress line was printed
        self.events = self.study_dir / "events.jsonl" if events_file else None
        self.bars = _Bars(min(slots, MAX_NODE_LINES), plan.spec.name) if self.tty else None
        self._record("begin", None, reused=len(reused))
        if reused:
            cost = sum(plan.nodes[i].est_cost for i in reused)
            self._line(f"reusing {len(reused)} finished node(s), {100 * cost / plan.cost:.0f}% of the estimated work")
        self._refresh(force=True)

    # -- the events
    def started(self, i: str, rows: list[str] | None = None) -> None:
        t = self.clock()
        self.est.start(i, t)
        self.rows[i] = rows_text(list(rows or ()))
        self.at[i] = (0, None)
        self._event("started", i, f"for {self.rows[i]}" if self.rows[i] else "")

    def reported(self, i: str, result: dict) -> None:
        if result.get("kind") != "train" or "step" not in result or i not in self.at:
            return
        step, img_s, steps = int(result["step"]), result.get("images_per_s"), self.steps.get(i)
        self.at[i] = (step, img_s)
        self.est.report(i, step / steps if steps else None, img_s)
        self.tick()

    def ended(self, i: str, status: str) -> None:
        """The searcher's verdict on a node whose trial ended: ``done`` or ``failed``."""
        t, node_dir = self.clock(), study.node_dir(self.study_dir, i)
        if status == "done":
            seconds = self.est.finish(i, t)
            took = f" in {duration_text(seconds)}" if seconds is not None else ""
            self._event("finished", i, f"{_result_text(study.read_done(node_dir) or {})}{took}", seconds=seconds)
        else:
            seconds = self.est.drop(i, t)
            self.failed += 1
            rec = study.read_failed(node_dir) or {}
            where = f" (traceback: {node_dir / rec['traceback']})" if rec.get("traceback") else ""
            self._event("FAILED", i, _error_text(rec) + where, seconds=seconds, error=_error_text(rec))

    def skipped(self, i: str) -> None:
        self.est.drop(i, self.clock())
        self.skipped_n += 1
        self._event("skipped", i, "an upstream node failed")

    def tick(self) -> None:
        """Time passes: redraw the bar, or print a progress line when ``every_s`` passed since the last one."""
        if self.tty:
            self._refresh()
        elif self.clock() - self.last_line >= self.every_s:
            self._line(self.progress_line())
            self.last_line = self.clock()

    def close(self) -> None:
        t = self.clock() - self.t0
        eta = self.est.remaining(self.clock())
        self._record("end", None)
        if self.bars is not None:
            self._refresh(force=True)
            self.bars.close()
        self._write(f"[{clock_text(t)}] study {self.plan.spec.name}: {self._counts()} after {duration_text(t)}"
                    + ("" if eta == 0 else f" (unfinished: {duration_text(eta)} of work left)"))

    # -- words
    def _counts(self) -> str:
        n = len(self.plan.nodes)
        words = [f"{len(self.est.done)}/{n} nodes done"]
        for k, word in ((len(self.rows), "running"), (self.failed, "failed"), (self.skipped_n, "skipped")):
            if k:
                words.append(f"{k} {word}")
        return ", ".join(words)

    def work_share(self) -> float:
        return sum(self.plan.nodes[i].est_cost for i in self.est.done) / max(self.plan.cost, 1e-9)

    def progress_line(self) -> str:
        eta = self.est.remaining(self.clock())
        return (f"[{clock_text(self.clock() - self.t0)}] progress: {self._counts()}; "
                f"{100 * self.work_share():.0f}% of the estimated work; ETA {duration_text(eta)}")

    def node_line(self, i: str) -> str:
        n, (step, img_s) = self.plan.nodes[i], self.at.get(i, (0, None))
        steps = self.steps.get(i)
        where = f"step {step}/{steps}" if steps else "labelling"
        speed = f"  {img_s:.1f} img/s" if img_s else ""
        return f"  {n.name:<9} {i[:8]} seed {n.seed}  {where}{speed}  {self.rows.get(i, '')}"

    def event_line(self, event: str, i: str, detail: str) -> str:
        """``[00:01:05] finished stage1 5a1a3978 seed 0: mIoU 13.19 in 42 s``; started: ``… seed 0 for <rows>``."""
        n = self.plan.nodes[i]
        sep = " " if event == "started" else ": "
        return f"[{clock_text(self.clock() - self.t0)}] {event} {n.name} {i[:8]} seed {n.seed}" + \
            (sep + detail if detail else "")

    # -- output
    def _event(self, event: str, i: str, detail: str, **extra) -> None:
        if event != "started":
            self.rows.pop(i, None)
            self.at.pop(i, None)
        self._record(event, i, **extra)
        self._line(self.event_line(event, i, detail))
        self._refresh(force=True)

    def _line(self, text: str) -> None:
        if self.bars is not None:
            self.bars.write(text)
        else:
            self._write(text)

    def _record(self, event: str, i: str | None, **extra) -> None:
        if self.events is None:
            return
        t = self.clock()
        rec = {"t": round(t - self.t0, 3), "time": time.time(), "event": event, "node": i,
               "name": self.plan.nodes[i].name if i else None, "kind": self.plan.nodes[i].kind if i else None,
               "nodes_done": len(self.est.done), "nodes": len(self.plan.nodes),
               "work_done": round(self.work_share(), 6), "eta_s": self.est.remaining(t), **extra}
        try:
            with open(self.events, "a") as f:
                f.write(json.dumps(rec) + "\n")
        except OSError:  # the view never stops the study
            self.events = None

    def _refresh(self, force: bool = False) -> None:
        if self.bars is None:
            return
        eta = self.est.remaining(self.clock())
        n = len(self.plan.nodes)
        self.bars.show(self.work_share(), f"{len(self.est.done)}/{n} nodes · "
                       f"{100 * self.work_share():.0f}% of the work · ETA {duration_text(eta)}",
                       [self.node_line(i) for i in self.rows], force)


class _Bars:
    """tqdm on the terminal: the study's bar, then ``lines`` lines for running nodes; ``write`` prints above."""

    def __init__(self, lines: int, name: str):
        from tqdm import tqdm  # noqa: PLC0415

        self._tqdm, self._last, self.name = tqdm, 0.0, name
        try:  # a pseudo-terminal without a size (e.g. `script`) says 0 columns: tqdm would draw nothing
            width = {} if os.get_terminal_size(sys.stdout.fileno()).columns > 0 else {"ncols": 120}
        except (OSError, ValueError):
            width = {"ncols": 120}
        size = width or {"dynamic_ncols": True}
        self.main = tqdm(total=1000, desc=f"study {name}", bar_format="{desc} |{bar}|", file=sys.stdout,
                         position=0, leave=True, **size)
        self.lines = [tqdm(total=0, bar_format="{desc}", file=sys.stdout, position=k + 1, leave=False, **size)
                      for k in range(max(1, lines))]

    def write(self, text: str) -> None:
        self._tqdm.write(text, file=sys.stdout)

    def show(self, share: float, summary: str, node_lines: list[str], force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        self.main.n = round(1000 * share)
        self.main.set_description_str(f"study {self.name} · {summary}", refresh=False)
        more = len(node_lines) - len(self.lines)
        if more > 0:
            node_lines = node_lines[: len(self.lines) - 1] + [f"  … and {more + 1} more running"]
        for k, bar in enumerate(self.lines):
            bar.set_description_str(node_lines[k] if k < len(node_lines) else "", refresh=True)
        self.main.refresh()

    def close(self) -> None:
        for bar in self.lines:
            bar.close()
        self.main.close()


# ---------------------------------------------------------------------------------------------
# the hooks: the searcher and Tune feed the view that is shown (module-level: Tune pickles both)

_SHOWN: StudyProgress | None = None


@contextlib.contextmanager
def shown(view: StudyProgress):
    """While the study runs: node events go to ``view``; it is closed at the end."""
    global _SHOWN
    _SHOWN = view
    try:
        yield view
    finally:
        _SHOWN = None
        view.close()


def emit(event: str, *args) -> None:
    """``event`` (a :class:`StudyProgress` method) to the shown view, if any. A view that raises is dropped with
    one line: the view never stops the study."""
    global _SHOWN
    if _SHOWN is None:
        return
    try:
        getattr(_SHOWN, event)(*args)
    except Exception as e:  # noqa: BLE001
        print(f"progress view disabled: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        _SHOWN = None


class TuneFeed(Callback):
    """A Tune callback on the driver: trial starts and every report of a running node go to the view."""

    def on_trial_start(self, iteration, trials, trial, **info):
        emit("started", trial.config["node_id"], trial.config.get("rows"))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        emit("reported", trial.config["node_id"], result)

    def on_step_end(self, iteration, trials, **info):
        emit("tick")


def tune_output(verbose: bool):
    """While Tune runs on the driver: its reporter (the experiment's box, trial tables and boxes) only when
    ``verbose``. Tune's new output engine prints the experiment's box even at ``verbose=0``; its legacy engine
    prints nothing there. Errors are Tune's log records, shown either way."""
    from proda.ablation.tensorboard import environ

    return environ("RAY_AIR_NEW_OUTPUT", None if verbose else "0")


def quiet_trial_process() -> None:
    """In a trial process, unless ``--verbose``: no 'Running in local mode…' notice from Ray Train at every node
    (a warning or an error from Ray still shows)."""
    logging.getLogger("ray.train.v2.api.config").setLevel(logging.WARNING)
