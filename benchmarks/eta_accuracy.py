"""How good was the live view's ETA? The ETA it showed at each node event of a study's last run vs the
time that run really still took, from the study's event log (``STUDY/events.jsonl``,
:mod:`proda.ablation.progress`).

    python experiments/ablation.py --storage /tmp/s      # any study; then
    python benchmarks/eta_accuracy.py /tmp/s/default     # a markdown table; the last line is one JSON object

``--replay`` feeds the run's start / finish events to the current estimator (:class:`proda.ablation.eta.Estimator`,
the nodes' costs by the current :func:`proda.chain.est_cost`, on as many slots as the run had nodes running at
once) and shows its ETA beside the live one: an estimator change measured on a run already made (the replay has
no step reports, so a running node's step fraction is missing).

Rows: every node that finished (``--all``: every event). Error = (ETA − true remaining) / true remaining; the
summary's figure is its largest size from half-way through the run until 90 % of it (in the last tenth the
true remaining time is a few seconds of shutdown and its relative error means nothing; the table shows it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def last_run(path: Path) -> list[dict]:
    """The records of the last run in ``events.jsonl`` (from its last ``begin``); it must have ended."""
    recs = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    starts = [k for k, r in enumerate(recs) if r["event"] == "begin"]
    if not starts:
        raise SystemExit(f"{path}: no run in it (no 'begin' record)")
    run = recs[starts[-1]:]
    if run[-1]["event"] != "end":
        raise SystemExit(f"{path}: its last run has not ended (no 'end' record): no true remaining time yet")
    return run


def replayed(run: list[dict], study: Path) -> list[float | None]:
    """The ETA the current estimator gives after each record of ``run`` (None before it knows a rate)."""
    from proda.ablation.eta import Estimator
    from proda.ablation.study import load_plan
    from proda.chain import est_cost
    from proda.config import Config

    plan = load_plan(study)
    for n in plan.nodes.values():  # the costs as the current proda estimates them
        n.est_cost = est_cost(n.kind, Config.from_dict(n.config))
    running, slots = set(), 1
    for r in run:
        if r["event"] == "started":
            running.add(r["node"])
            slots = max(slots, len(running))
        elif r["event"] in ("finished", "failed", "skipped"):
            running.discard(r["node"])
    est = Estimator(plan, slots, done=set(plan.nodes) - {r["node"] for r in run if r["event"] == "started"})
    out = []
    for r in run:
        if r["event"] == "started":
            est.start(r["node"], r["t"])
        elif r["event"] == "finished":
            est.finish(r["node"], r["t"])
        elif r["event"] in ("failed", "skipped"):
            est.drop(r["node"], r["t"])
        out.append(est.remaining(r["t"]))
    return out


def _error(eta: float | None, true: float) -> float | None:
    return None if eta is None or true <= 0 else 100 * (eta - true) / true


def _summary(errors: list[float | None], times: list[float], end: float, key: str) -> dict:
    late = [abs(e) for e, t in zip(errors, times) if e is not None and end / 2 <= t <= 0.9 * end]
    return {f"max_abs_error_pct_half_to_90pct{key}": round(max(late), 1) if late else None,
            f"mean_abs_error_pct_half_to_90pct{key}": round(sum(late) / len(late), 1) if late else None}


def table(run: list[dict], every: bool = False, replay: list[float | None] | None = None) -> tuple[list[list], dict]:
    end = run[-1]["t"]
    rows, times, live, again = [], [], [], []
    for k, r in enumerate(run[1:-1], 1):
        if not every and r["event"] != "finished":
            continue
        true = end - r["t"]
        eta = r["eta_s"]
        err = _error(eta, true)
        name = r["name"] if "name" in r else r["phase"]  # backward compatibility: older event logs say "phase"
        row = [f"{r['t'] / 60:.1f}", f"{r['event']} {name}", f"{r['nodes_done']}/{r['nodes']}",
               f"{100 * r['work_done']:.0f}%", "unknown" if eta is None else f"{eta / 60:.1f}",
               f"{true / 60:.1f}", "–" if err is None else f"{err:+.0f}%"]
        times.append(r["t"])
        live.append(err)
        if replay is not None:
            e2 = _error(replay[k], true)
            again.append(e2)
            row += ["unknown" if replay[k] is None else f"{replay[k] / 60:.1f}", "–" if e2 is None else f"{e2:+.0f}%"]
        rows.append(row)
    summary = {"wall_s": round(end, 1), "events": len(rows), **_summary(live, times, end, "")}
    if replay is not None:
        summary.update(_summary(again, times, end, "_replayed"))
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="a study folder (holding events.jsonl)")
    ap.add_argument("--all", action="store_true", help="every event, not only the finished nodes")
    ap.add_argument("--replay", action="store_true", help="also the ETA of the current estimator, replayed")
    args = ap.parse_args(argv)
    path = args.study / "events.jsonl"
    if not path.is_file():
        print(f"error: {path}: no such file (run the study with this version of proda first)", file=sys.stderr)
        return 2
    from tabulate import tabulate

    run = last_run(path)
    rows, summary = table(run, args.all, replayed(run, args.study) if args.replay else None)
    headers = ["time (min)", "event", "nodes done", "work done", "ETA shown (min)", "true remaining (min)", "error"]
    print(tabulate(rows, headers=headers + (["ETA replayed (min)", "error"] if args.replay else []),
                   tablefmt="github"))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
