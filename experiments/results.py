"""Tables of a study folder — while it runs, after it was interrupted, or when it is done.

    python experiments/results.py STUDY [--format github|latex|csv|markdown] [--select last|best]
                                        [--stats] [--plot DIR [--baseline ROW]] [--no-write]

Prints a status line (nodes done / running / failed / missing), the ablation table (mIoU mean ± std over
seeds, n and the 95 % Student-t CI; Δ against the row above and against source-only, paired over seeds,
each with its 95 % CI — a bootstrap CI as well from 5 seeds on — and ``*`` where the CI excludes 0), the
per-class IoU table and one table per swept axis, and writes ``STUDY/results.parquet`` (the tidy table,
per-seed values included, that every printed table is a view of) unless ``--no-write``. ``--stats`` adds
the same statistics per class. ``--format csv`` prints the numbers, one column each (``miou_ci_low``,
``vs_above_delta``, ``vs_base_sig``…). ``--select best`` scores each row at its best eval step (model
selection on target val; the tables say so).
``--plot DIR`` (needs matplotlib: ``pip install -e '.[plot]'``) writes PNGs there
(:mod:`proda.ablation.plots`): ``iou_heatmap.png`` (row groups × classes), ``delta_heatmap.png`` (the IoU
Δ of each row against ``--baseline``, paired over seeds, diverging colours), ``miou.png`` (a dot per seed,
the mean with its 95 % CI), ``axis_<field>.png`` per swept field (mIoU against its values, with CIs),
``learning_curves.png`` (losses and images/s against the step, one row of panels per node kind) and
``predictions.png``: the first ``--strip-images`` target-val images, their ground truth and the
prediction of each variant's final model (one seed, ``--strip-seed``; default the smallest finished) in the
Cityscapes palette.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import proda  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proda.ablation import plots as P  # noqa: E402
from proda.ablation import results as R  # noqa: E402


def _plot_strip(study: Path, out_dir: Path, n_images: int, seed: int | None) -> Path:
    from proda.ablation.predictions import prediction_strip  # noqa: PLC0415 - imports torch

    return P.strip_png(prediction_strip(study, n_images, seed), out_dir / "predictions.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="the study folder (holds plan.json)")
    ap.add_argument("--format", default="github", choices=("github", "latex", "csv", "markdown"))
    ap.add_argument("--select", default="last", choices=("last", "best"),
                    help="score a row at its final node's last eval step, or its best (selection on target val)")
    ap.add_argument("--stats", action="store_true",
                    help="also the per-class statistics: IoU mean ± std, 95 %% CI, paired Δ with CIs, per class")
    ap.add_argument("--plot", type=Path, metavar="DIR", help="write PNG plots there (needs matplotlib)")
    ap.add_argument("--baseline", default=None, metavar="ROW",
                    help="the row --plot's Δ heatmap is against: a variant or a row label as the plot writes it "
                         "('pd+sl γ1=5.0'); default: source-only, else the first row (as the tables)")
    ap.add_argument("--strip-images", type=int, default=4, metavar="N",
                    help="target-val images in --plot's predictions.png (0: no strip)")
    ap.add_argument("--strip-seed", type=int, default=None, help="the seed whose models the strip shows")
    ap.add_argument("--no-write", action="store_true", help="do not write STUDY/results.parquet")
    args = ap.parse_args(argv)
    try:
        if args.plot:  # fail before printing anything: no matplotlib, a --baseline that is no row
            P.pyplot()
            df = R.collect(args.study)
            axes = R.axis_columns(df)
            P.resolve_baseline(R.group_rows(R.scores(df, args.select), axes), axes, args.baseline)
        print(R.report(args.study, args.format, args.select, write=not args.no_write, stats=args.stats))
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.plot:
        for p in P.plot_study(args.study, args.plot, args.select, args.baseline):
            print(f"wrote {p}")
        if args.strip_images > 0:
            try:
                print(f"wrote {_plot_strip(args.study, args.plot, args.strip_images, args.strip_seed)}")
            except FileNotFoundError as e:
                print(f"no prediction strip: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
