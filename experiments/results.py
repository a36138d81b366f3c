"""Tables of a study folder — while it runs, after it was interrupted, or when it is done.

    python experiments/results.py STUDY [--format github|latex|csv|markdown] [--select last|best]
                                        [--stats] [--plot DIR] [--no-write]

Prints a status line (nodes done / running / failed / missing), the ablation table (mIoU mean ± std over
seeds, n and the 95 % Student-t CI; Δ against the row above and against source-only, paired over seeds,
each with its 95 % CI — a bootstrap CI as well from 5 seeds on — and ``*`` where the CI excludes 0), the
per-class IoU table and one table per swept axis, and writes ``STUDY/results.parquet`` (the tidy table,
per-seed values included, that every printed table is a view of) unless ``--no-write``. ``--stats`` adds
the same statistics per class. ``--format csv`` prints the numbers, one column each (``miou_ci_low``,
``vs_above_delta``, ``vs_base_sig``…). ``--select best`` scores each row at its best eval step (model
selection on target val; the tables say so).
``--plot DIR`` (needs matplotlib) draws per-class IoU bars per variant, mIoU ± std against each swept
value, and ``predictions.png``: the first ``--strip-images`` target-val images, their ground truth and the
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

from proda.ablation import results as R  # noqa: E402


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    return plt


def _plot(df, select: str, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    sc, axes, classes = R.scores(df, select), R.axis_columns(df), R.class_columns(df)
    groups = R.group_rows(sc, axes)
    label = lambda k: " ".join([k["variant"], *(f"{a}={k[a]}" for a in axes if a in k)])  # noqa: E731
    written = []
    if classes and groups:
        fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(classes) * max(1, len(groups)) / 2), 4))
        width = 0.8 / len(groups)
        for i, (k, g) in enumerate(groups):
            ax.bar([c + i * width for c in range(len(classes))], list(g[classes].mean()), width, label=label(k))
        ax.set_xticks([c + 0.4 - width / 2 for c in range(len(classes))], classes, rotation=60, ha="right")
        ax.set_ylabel(f"IoU (%), mean over seeds, {select} eval step")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out_dir / "per_class.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    for f in axes:
        sub = sc[sc[f].notna()]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        by_line: dict[str, list] = {}
        for k, g in R.group_rows(sub, axes):
            st = g["miou"].agg(["mean", "std", "count"])
            if st["count"]:
                rest = {a: k[a] for a in k if a != f}
                by_line.setdefault(" ".join(f"{a}={b}" for a, b in rest.items()), []).append(
                    (k[f], st["mean"], st["std"] if st["count"] > 1 else 0.0))
        for name, pts in by_line.items():
            pts.sort(key=lambda p: p[0])
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                        capsize=3, label=name)
        ax.set_xlabel(f)
        ax.set_ylabel("mIoU (%) ± std over seeds")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out_dir / f"axis_{f.replace('.', '_')}.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def _plot_strip(study: Path, out_dir: Path, n_images: int, seed: int | None) -> Path:
    from proda.ablation.predictions import prediction_strip  # noqa: PLC0415 - imports torch

    plt = _pyplot()
    strip = prediction_strip(study, n_images, seed)
    cols = [("target image", strip.images), ("ground truth", strip.truth),
            *zip(strip.columns, strip.predictions)]
    n = strip.images.shape[0]
    h, w = strip.images.shape[1:3]
    cell = 2.2
    fig, axes = plt.subplots(n, len(cols), squeeze=False,
                             figsize=(cell * len(cols), cell * n * h / w + 0.6))
    for j, (title, arr) in enumerate(cols):
        for i in range(n):
            ax = axes[i][j]
            ax.imshow(arr[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
    if strip.missing:
        fig.suptitle("not finished: " + ", ".join(strip.missing), fontsize=7)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "predictions.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="the study folder (holds plan.json)")
    ap.add_argument("--format", default="github", choices=("github", "latex", "csv", "markdown"))
    ap.add_argument("--select", default="last", choices=("last", "best"),
                    help="score a row at its final node's last eval step, or its best (selection on target val)")
    ap.add_argument("--stats", action="store_true",
                    help="also the per-class statistics: IoU mean ± std, 95 %% CI, paired Δ with CIs, per class")
    ap.add_argument("--plot", type=Path, metavar="DIR", help="write PNG plots there (needs matplotlib)")
    ap.add_argument("--strip-images", type=int, default=4, metavar="N",
                    help="target-val images in --plot's predictions.png (0: no strip)")
    ap.add_argument("--strip-seed", type=int, default=None, help="the seed whose models the strip shows")
    ap.add_argument("--no-write", action="store_true", help="do not write STUDY/results.parquet")
    args = ap.parse_args(argv)
    if args.plot:
        _pyplot()  # fail before printing anything
    try:
        print(R.report(args.study, args.format, args.select, write=not args.no_write, stats=args.stats))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.plot:
        for p in _plot(R.collect(args.study), args.select, args.plot):
            print(f"wrote {p}")
        if args.strip_images > 0:
            try:
                print(f"wrote {_plot_strip(args.study, args.plot, args.strip_images, args.strip_seed)}")
            except FileNotFoundError as e:
                print(f"no prediction strip: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
