"""A study's results as pictures: IoU and Δ heatmaps, mIoU per seed with its CI, one curve per swept
axis, learning curves per node kind, the prediction strip.

Every number drawn comes from the tables' own functions (:func:`proda.ablation.results.scores`, the
statistics of :mod:`proda.ablation.stats`), so a plot and a table of the same study never disagree.
matplotlib is imported inside :func:`pyplot` only (Agg backend, no display): the rest of proda does not need
it. Each figure is at most :data:`MAX_WIDTH_PX` wide and :data:`MAX_HEIGHT_PX` high at :data:`DPI`, saved
without a tight bounding box, so the PNG has exactly the figure's size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from proda.ablation import results as R
from proda.ablation.stats import baseline, by_seed, describe, paired_delta

DPI = 120
MAX_WIDTH_PX, MAX_HEIGHT_PX = 2000, 2400
# the paper's names of the fields a sensitivity study sweeps (proda/config.py)
SYMBOLS = {"stage1.proto_momentum": "λ", "stage1.gamma1": "γ1", "stage1.gamma2": "γ2", "stage1.tau": "τ",
           "stage1.alpha": "α", "stage1.beta": "β"}
# node kinds in chain order, as the learning curves are laid out; pseudo-label nodes do not train
CURVE_KINDS = {"ssl": "ssl", "warmup": "warmup", "extend": "warmup+ (extend)", "stage1": "stage1",
               "distill": "distill"}
_NOT_LOSSES = {"step", "kind", "stage", "lr", "images_per_s", "node_id"}


def pyplot():
    """matplotlib.pyplot on the Agg backend; ImportError with the install line when it is missing."""
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise ImportError("plots need matplotlib: pip install -e '.[plot]' (or pip install matplotlib)") from None
    return plt


def _figure(w_in: float, h_in: float, nrows: int = 1, ncols: int = 1, **kw):
    """A constrained-layout figure of ``w_in × h_in`` inches, clamped to the size rule."""
    w, h = min(w_in, MAX_WIDTH_PX / DPI), min(h_in, MAX_HEIGHT_PX / DPI)
    return pyplot().subplots(nrows, ncols, figsize=(w, h), layout="constrained", squeeze=False, **kw)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path


def axis_name(field: str) -> str:
    """``"γ1 (stage1.gamma1)"`` for a field the paper names, else the field."""
    return f"{SYMBOLS[field]} ({field})" if field in SYMBOLS else field


def row_label(key: dict, axes: list[str]) -> str:
    """A row group's name, as the tables list it: ``"pd+sl γ1=5.0"``."""
    return " ".join([key["variant"], *(f"{SYMBOLS.get(a, a)}={key[a]}" for a in axes if a in key)])


def _select_note(select: str) -> str:
    return "best eval step (model selection on target val)" if select == "best" else "last eval step"


# -- the numbers behind the heatmaps ---------------------------------------------------------------------
def iou_matrix(groups, classes: list[str], axes: list[str], miou13: bool = False) -> pd.DataFrame:
    """(row groups, classes + mIoU [+ mIoU*]): each class's IoU and the mIoU, mean over the seeds with a
    score; NaN where no seed has one."""
    cols = [*classes, "miou", *(["miou13"] if miou13 else [])]
    m = pd.DataFrame([g[cols].mean() for _, g in groups], columns=cols, dtype=float)
    m.index = [row_label(k, axes) for k, _ in groups]
    return m.rename(columns={"miou": "mIoU", "miou13": "mIoU*"})


def resolve_baseline(groups, axes: list[str], name: str | None = None) -> int:
    """The index of the baseline group: ``name`` as :func:`row_label` writes it, or a variant name (its
    first row); None: the tables' baseline (source-only, else the first row)."""
    if name is None:
        return baseline(groups)[0]
    labels = [row_label(k, axes) for k, _ in groups]
    for i, (k, _) in enumerate(groups):
        if name in (labels[i], k["variant"]):
            return i
    raise ValueError(f"--baseline {name!r} is not a row of the study; rows: {', '.join(labels)}")


def delta_matrix(groups, classes: list[str], axes: list[str], base: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Δ, sig), each (row groups other than ``base``, classes + mIoU): the IoU Δ against the baseline group,
    paired over seeds (:func:`paired_delta`), and whether its 95 % t CI excludes 0."""
    cols = [*classes, "miou"]
    delta, sig = {}, {}
    for i, (k, g) in enumerate(groups):
        if i == base:
            continue
        ds = [paired_delta(by_seed(g, c), by_seed(groups[base][1], c)) for c in cols]
        delta[row_label(k, axes)] = [d["delta"] for d in ds]
        sig[row_label(k, axes)] = [d["sig"] for d in ds]
    names = [*classes, "mIoU"]
    return (pd.DataFrame.from_dict(delta, orient="index", columns=names, dtype=float),
            pd.DataFrame.from_dict(sig, orient="index", columns=names, dtype=bool))


# -- heatmaps ------------------------------------------------------------------------------------------
def _heatmap(m: pd.DataFrame, path: Path, title: str, cmap: str, vmin: float, vmax: float, fmt: str,
             marks: pd.DataFrame | None = None, bar: str = "") -> Path:
    """One cell per (row, column) of ``m``, its value written in it (``–`` for NaN, on grey); the last
    columns (mIoU) set off by a line; ``marks``: a ``*`` after the values where True."""
    n_rows, n_cols = m.shape
    left = 0.3 + 0.075 * max(len(str(i)) for i in m.index)
    fig, axs = _figure(left + 0.55 * n_cols + 1.3, 1.7 + 0.34 * n_rows)
    ax = axs[0][0]
    vals = m.to_numpy(float)  # (rows, cols)
    colours = pyplot().get_cmap(cmap).with_extremes(bad="#dddddd")  # NaN cells grey
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=colours, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(n_cols), list(m.columns), rotation=50, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n_rows), list(m.index), fontsize=8)
    for i in range(n_rows):
        for j in range(n_cols):
            v = vals[i, j]
            text = "–" if math.isnan(v) else format(v, fmt) + ("*" if marks is not None and marks.iat[i, j] else "")
            shade = 0.5 if math.isnan(v) else (v - vmin) / (vmax - vmin)
            dark = shade < 0.35 if cmap == "viridis" else abs(shade - 0.5) > 0.35
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    n_summary = sum(c.startswith("mIoU") for c in m.columns)
    if n_summary:
        ax.axvline(n_cols - n_summary - 0.5, color="white", lw=3)
    ax.set_title(title, fontsize=9, loc="left")
    fig.colorbar(im, ax=ax, shrink=0.9, pad=0.01).set_label(bar, fontsize=8)
    return _save(fig, path)


def iou_heatmap(sc: pd.DataFrame, axes: list[str], classes: list[str], path: Path, select: str = "last") -> Path:
    """Row groups × classes, the IoU (%) mean over seeds, sequential colours on 0–100."""
    groups = R.group_rows(sc, axes)
    m = iou_matrix(groups, classes, axes, "miou13" in sc.columns)
    return _heatmap(m, path, f"IoU (%) per class, mean over seeds, {_select_note(select)}", "viridis", 0.0, 100.0,
                    ".1f", bar="IoU (%)")


def delta_heatmap(sc: pd.DataFrame, axes: list[str], classes: list[str], path: Path, base: str | None = None,
                  select: str = "last") -> Path | None:
    """Row groups × classes, the IoU Δ against the baseline group, paired over seeds; diverging colours
    centred on 0; ``*`` where the 95 % CI excludes 0. None when the study has a single row group."""
    groups = R.group_rows(sc, axes)
    if len(groups) < 2:
        return None
    b = resolve_baseline(groups, axes, base)
    delta, sig = delta_matrix(groups, classes, axes, b)
    lim = max(1.0, float(np.nanmax(np.abs(delta.to_numpy(float))))) if delta.notna().any().any() else 1.0
    title = (f"Δ IoU (points) vs {row_label(groups[b][0], axes)}, paired over seeds, {_select_note(select)}; "
             "* 95 % CI excludes 0")
    return _heatmap(delta, path, title, "RdBu", -lim, lim, "+.1f", marks=sig, bar="Δ IoU (points)")


# -- mIoU per seed, and per swept value ----------------------------------------------------------------
def _seed_colours(seeds) -> dict[int, tuple]:
    cmap = pyplot().get_cmap("tab10")
    return {s: cmap(i % 10) for i, s in enumerate(sorted(set(seeds)))}


def _ci_err(st: dict) -> tuple[float, float]:
    """The CI as error-bar lengths below and above the mean (0, 0 without a CI)."""
    if math.isnan(st["ci_low"]):
        return 0.0, 0.0
    return st["mean"] - st["ci_low"], st["ci_high"] - st["mean"]


def miou_dots(sc: pd.DataFrame, axes: list[str], path: Path, select: str = "last") -> Path:
    """One line per row group: a dot per seed (one colour per seed, across rows: the pairing), the mean and
    its 95 % t CI as an error bar, the numbers written at the right."""
    groups = R.group_rows(sc, axes)
    colours = _seed_colours(sc["seed"])
    labels = [row_label(k, axes) for k, _ in groups]
    fig, axs = _figure(3.5 + 0.075 * max(map(len, labels)) + 2.0, 1.5 + 0.42 * len(groups))
    ax = axs[0][0]
    offsets = np.linspace(-0.18, 0.18, len(colours)) if len(colours) > 1 else [0.0]
    off = dict(zip(sorted(colours), offsets))
    x_hi = 0.0
    for i, (_, g) in enumerate(groups):
        for s, v in zip(g["seed"], g["miou"]):
            if not math.isnan(v):
                ax.plot(v, i + off[s], "o", color=colours[s], ms=5, alpha=0.8)
                x_hi = max(x_hi, v)
        st = describe(g["miou"])
        if st["n"]:
            lo, hi = _ci_err(st)
            ax.errorbar(st["mean"], i, xerr=[[lo], [hi]], fmt="D", color="black", ms=5, capsize=4, lw=1.2)
            ci = "" if math.isnan(st["ci_low"]) else f" [{st['ci_low']:.1f}, {st['ci_high']:.1f}]"
            ax.annotate(f"{st['mean']:.1f}{ci} (n={st['n']})", (1.0, i), xycoords=("axes fraction", "data"),
                        xytext=(6, 0), textcoords="offset points", va="center", fontsize=7)
    for s, c in colours.items():
        ax.plot([], [], "o", color=c, label=f"seed {s}")
    ax.errorbar([], [], xerr=[], fmt="D", color="black", capsize=4, label="mean, 95 % t CI")
    ax.set_yticks(range(len(groups)), labels, fontsize=8)
    ax.set_ylim(len(groups) - 0.5, -0.5)  # the plan's order, top to bottom
    ax.set_xlabel(f"mIoU (%), {_select_note(select)}", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(colours) + 1, frameon=False)
    return _save(fig, path)


def _positions(values: list) -> tuple[list[float], bool]:
    """x positions of an axis's values: the values when they are numbers spaced evenly enough to read on a
    linear scale, else 0, 1, 2… (then the ticks carry the values; ``True``)."""
    try:
        x = [float(v) for v in values]
    except (TypeError, ValueError):
        return list(range(len(values))), True
    gaps = np.diff(sorted(x))
    if len(gaps) > 1 and gaps.min() > 0 and gaps.max() / gaps.min() > 4:  # e.g. λ = 0.9, 0.99, 0.999
        return list(range(len(values))), True
    return x, False


def axis_curve(sc: pd.DataFrame, axes: list[str], field: str, path: Path, select: str = "last") -> Path:
    """mIoU against the values of one swept field: a line per (variant, other swept values), the mean with
    its 95 % t CI as error bars, each seed's score as a faint dot."""
    sub = sc[sc[field].notna()]
    lines: dict[str, list] = {}
    for k, g in R.group_rows(sub, axes):
        rest = {a: k[a] for a in k if a != field}
        lines.setdefault(row_label(rest, [a for a in axes if a != field]), []).append((k[field], g))
    values = sorted({R.group_key(v): v for pts in lines.values() for v, _ in pts}.values(), key=_sort_key)
    xs, categorical = _positions(values)
    pos = {R.group_key(v): x for v, x in zip(values, xs)}
    fig, axs = _figure(6.5, 4.2)
    ax = axs[0][0]
    for j, (name, pts) in enumerate(lines.items()):
        pts.sort(key=lambda p: pos[R.group_key(p[0])])
        x = [pos[R.group_key(v)] for v, _ in pts]
        st = [describe(g["miou"]) for _, g in pts]
        err = np.array([_ci_err(s) for s in st]).T.reshape(2, -1)  # (2, points)
        colour = f"C{j % 10}"
        ax.errorbar(x, [s["mean"] for s in st], yerr=err, marker="o", capsize=4, color=colour, label=name)
        for xi, (_, g) in zip(x, pts):
            ax.plot([xi] * len(g), g["miou"], ".", color=colour, alpha=0.35)
    if categorical:
        ax.set_xticks(xs, [str(v) for v in values])
    ax.set_xlabel(axis_name(field) + (" (evenly spaced)" if categorical else ""), fontsize=9)
    ax.set_ylabel(f"mIoU (%), {_select_note(select)}", fontsize=8)
    ns = sorted({int(g["miou"].notna().sum()) for pts in lines.values() for _, g in pts})
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    ax.set_title(f"mean and 95 % t CI over seeds (n = {n} per point); dots: single seeds", fontsize=8, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _sort_key(v):
    return (0, float(v), "") if isinstance(v, (int, float)) else (1, 0.0, str(v))


# -- learning curves -----------------------------------------------------------------------------------
def _served(plan, axes: list[str]) -> dict[str, str]:
    """node id → the row groups it serves (``"pd+sl, proda"``; ``"st +6 more"`` past three), seeds left out."""
    out: dict[str, list[str]] = {}
    for row in plan.rows:
        label = row_label({"variant": row.variant, **row.axes}, axes)
        for nid in row.nodes:
            if label not in out.setdefault(nid, []):
                out[nid].append(label)
    return {nid: ", ".join(ls) if len(ls) <= 3 else f"{ls[0]} +{len(ls) - 1} more" for nid, ls in out.items()}


def train_curves(study_dir: str | Path) -> pd.DataFrame:
    """Every train record of every node in ``metrics.jsonl``, long: ``node_id, node, kind, rows, seed, step,
    metric, value`` (the loss terms, ``total``, ``images_per_s``; ``rows``: the row groups the node serves);
    a step logged twice (a resumed node) keeps its later record."""
    study_dir = Path(study_dir)
    plan = R.load_plan(study_dir)
    served = _served(plan, plan.spec.axis_fields())
    recs = []
    for nid, node in plan.nodes.items():
        by_step = {int(r["step"]): r for r in R.read_jsonl(study_dir / "nodes" / nid / "metrics.jsonl")
                   if r.get("kind") == "train" and "step" in r}
        for step, r in sorted(by_step.items()):
            for k, v in r.items():
                if (k not in _NOT_LOSSES or k == "images_per_s") and isinstance(v, (int, float)):
                    recs.append((nid, node.name, node.kind, served.get(nid, ""), node.seed, step, k, float(v)))
    return pd.DataFrame(recs, columns=["node_id", "node", "kind", "rows", "seed", "step", "metric", "value"])


def _band(ax, c: pd.DataFrame, colour: str, label: str, lw: float = 1.2) -> None:
    """The mean over ``c``'s nodes against the step, and their min–max as a band when there are several."""
    s = c.groupby("step")["value"].agg(["mean", "min", "max"])  # (steps, 3)
    ax.plot(s.index, s["mean"], color=colour, lw=lw, label=label)
    if c["node_id"].nunique() > 1:
        ax.fill_between(s.index, s["min"], s["max"], color=colour, alpha=0.15, lw=0)


def learning_curves(curves: pd.DataFrame, path: Path) -> Path | None:
    """One row of panels per node kind (chain order), against the stage's step: the total loss, a line
    per row group the nodes serve (mean over seeds); each loss term (mean over the nodes that log it); and
    images/s. Bands: min–max over the nodes averaged. None when no node logged a train step."""
    kinds = [k for k in CURVE_KINDS if k in set(curves["kind"])]
    if not kinds:
        return None
    fig, axs = _figure(15.5, 0.6 + 2.7 * len(kinds), len(kinds), 3)
    for r, kind in enumerate(kinds):
        c = curves[curves["kind"] == kind]
        name, (tot, terms, speed) = CURVE_KINDS[kind], axs[r]
        for j, (rows, g) in enumerate(c[c["metric"] == "total"].groupby("rows", sort=False)):
            _band(tot, g, f"C{j % 10}", f"{rows} ({g['node_id'].nunique()})")
        tot.set_title(f"{name}: total loss per row group (nodes)", fontsize=8, loc="left")
        parts = c[~c["metric"].isin(["total", "images_per_s"])]
        for j, (m, g) in enumerate(parts.groupby("metric")):
            _band(terms, g, f"C{j % 10}", f"{m} ({g['node_id'].nunique()})")
        if len(parts) and (parts["value"] > 0).all():
            terms.set_yscale("log")
        terms.set_title(f"{name}: loss terms (nodes logging each)", fontsize=8, loc="left")
        _band(speed, c[c["metric"] == "images_per_s"], "C0", "images/s")
        speed.set_title(f"{name}: images/s, mean over {c['node_id'].nunique()} nodes", fontsize=8, loc="left")
        for ax in axs[r]:
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if ax is not speed and ax.lines:
                ax.legend(fontsize=6.5)
    for ax in axs[-1]:
        ax.set_xlabel("step (of the stage)", fontsize=8)
    return _save(fig, path)


# -- the prediction strip ------------------------------------------------------------------------------
def strip_png(strip, path: Path) -> Path:
    """:class:`proda.ablation.predictions.Strip` as a grid: a row per image; target image, ground truth,
    then one prediction per row group. Cells shrink to keep the figure within the size rule."""
    cols = [("target image", strip.images), ("ground truth", strip.truth), *zip(strip.columns, strip.predictions)]
    n, (h, w) = strip.images.shape[0], strip.images.shape[1:3]
    cell = min(2.2, (MAX_WIDTH_PX / DPI - 0.2) / len(cols), (MAX_HEIGHT_PX / DPI - 0.8) * w / (h * n))
    fig, axs = _figure(cell * len(cols) + 0.2, cell * n * h / w + 0.8, n, len(cols))
    for j, (title, arr) in enumerate(cols):
        for i in range(n):
            axs[i][j].imshow(arr[i], interpolation="nearest")
            axs[i][j].set_xticks([])
            axs[i][j].set_yticks([])
        axs[0][j].set_title(title, fontsize=7)
    if strip.missing:
        fig.suptitle("not finished: " + ", ".join(strip.missing), fontsize=7)
    return _save(fig, path)


# -- all of them ---------------------------------------------------------------------------------------
def plot_study(study_dir: str | Path, out_dir: str | Path, select: str = "last", base: str | None = None,
               df: pd.DataFrame | None = None) -> list[Path]:
    """Every plot of a study (but the prediction strip, which runs the models) into ``out_dir``:
    ``iou_heatmap.png``, ``delta_heatmap.png`` (two row groups or more), ``miou.png``, ``axis_<field>.png``
    per swept field — these four once some row has a score —, ``learning_curves.png`` (once some node logged
    a train step). ``base``: the Δ
    heatmap's baseline row (:func:`resolve_baseline`)."""
    out = Path(out_dir)
    df = R.collect(study_dir) if df is None else df
    sc, axes, classes = R.scores(df, select), R.axis_columns(df), R.class_columns(df)
    written: list[Path | None] = []
    if sc["miou"].notna().any():  # some row has a score (nothing to draw but curves while a study warms up)
        if classes:
            written.append(iou_heatmap(sc, axes, classes, out / "iou_heatmap.png", select))
            written.append(delta_heatmap(sc, axes, classes, out / "delta_heatmap.png", base, select))
        written.append(miou_dots(sc, axes, out / "miou.png", select))
        written += [axis_curve(sc, axes, f, out / f"axis_{f.replace('.', '_')}.png", select) for f in axes]
    written.append(learning_curves(train_curves(study_dir), out / "learning_curves.png"))
    return [p for p in written if p is not None]
