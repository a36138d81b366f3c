"""How good was the live view's ETA? The ETA it showed at each node event of a study's last run vs the
time that run really still took, from the study's event log (``STUDY/events.jsonl``,
:mod:`proda.ablation.progress`).

    python experiments/ablation.py --storage /tmp/s      # any study; then
    python benchmarks/eta_accuracy.py /tmp/s/default     # a markdown table; the last line is one JSON object

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


def table(run: list[dict], every: bool = False) -> tuple[list[list], dict]:
    end = run[-1]["t"]
    rows, late = [], []
    for r in run[1:-1]:
        if not every and r["event"] != "finished":
            continue
        true = end - r["t"]
        eta = r["eta_s"]
        err = None if eta is None or true <= 0 else 100 * (eta - true) / true
        rows.append([f"{r['t'] / 60:.1f}", f"{r['event']} {r['phase']}", f"{r['nodes_done']}/{r['nodes']}",
                     f"{100 * r['work_done']:.0f}%", "unknown" if eta is None else f"{eta / 60:.1f}",
                     f"{true / 60:.1f}", "–" if err is None else f"{err:+.0f}%"])
        if err is not None and end / 2 <= r["t"] <= 0.9 * end:
            late.append(abs(err))
    summary = {"wall_s": round(end, 1), "events": len(rows),
               "max_abs_error_pct_half_to_90pct": round(max(late), 1) if late else None,
               "mean_abs_error_pct_half_to_90pct": round(sum(late) / len(late), 1) if late else None}
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="a study folder (holding events.jsonl)")
    ap.add_argument("--all", action="store_true", help="every event, not only the finished nodes")
    args = ap.parse_args(argv)
    path = args.study / "events.jsonl"
    if not path.is_file():
        print(f"error: {path}: no such file (run the study with this version of proda first)", file=sys.stderr)
        return 2
    from tabulate import tabulate

    rows, summary = table(last_run(path), args.all)
    print(tabulate(rows, headers=["time (min)", "event", "nodes done", "work done", "ETA shown (min)",
                                  "true remaining (min)", "error"], tablefmt="github"))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
