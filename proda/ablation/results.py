"""A study folder → one tidy table (Parquet) → the ablation, per-class and per-axis tables.

The study folder (written by the runner) holds ``plan.json`` and ``nodes/<node_id>/`` with
``metrics.jsonl`` (train and eval records), ``done.json`` (complete) or ``failed.json`` (the error's type
and first line, and the name of the node's file holding the full traceback, ``traceback.txt``). Whatever
exists is read, so the tables work while a study runs and after it was interrupted (DESIGN.md decision 5).

Scores: a row (variant × axis values × seed) is scored by its FINAL node's evaluation on target val —
its last eval step (``select="last"``) or its best one (``select="best"``: model selection on target val,
and the tables say so). Variants are reported as mean ± sample std over the seeds whose final node is
done, with the count and the 95 % Student-t CI; rows with missing, running or failed seeds say so instead
of being dropped. Every Δ is paired over seeds (:mod:`proda.ablation.stats`): against the row above and
against source-only (the first row when the study has none), with its CI and a ``*`` where the CI excludes
0. ``numeric=True`` gives each table as a DataFrame of numbers (the csv format prints those).

SYNTHIA → Cityscapes studies (16-class models) get two mIoU columns, as the paper's tables: mIoU over
the 16 classes and mIoU* over 13 (without wall, fence, pole), the 13 averaged from the same models'
per-class IoU (:data:`MIOU13`). GTA5 → Cityscapes and the embedded benchmark report the 19.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from proda.ablation import study
from proda.ablation.render import is_null, render  # noqa: F401 - render: part of this module's interface
from proda.ablation.stats import BOOTSTRAP_MIN_N, baseline, describe, excludes_zero, group_stats, prefixed
from proda.ablation.study import STATUSES, load_plan
from proda.chain import STEPS_SECTION
from proda.data.classes import class_names, sub_protocol

# columns of the tidy table; the swept fields (one column each, dotted names) come after "seed"
BASE_COLUMNS = ("study", "row", "variant", "seed", "node_id", "node", "kind", "step", "class", "iou", "miou",
                "status", "is_final", "pseudo_label_accuracy", "error", "traceback")
MIOU = "mIoU"
MIOU_BEST = "mIoU (best eval step: model selection on target val)"
MIOU13 = "mIoU* (13 classes)"  # SYNTHIA studies: the 13-class view of the same 16-class models
CI, CI13 = "95 % CI", "95 % CI (mIoU*)"
ABOVE = "Δ vs row above"
BOOT = ", bootstrap CI"  # suffix of the bootstrap columns, shown when some Δ pairs BOOTSTRAP_MIN_N seeds
NOTE = ("mIoU / IoU: mean ± sample std (n seeds), 95 % Student-t CI. Δ: paired over the seeds both rows have "
        "(the mean of the per-seed differences) [its 95 % t CI], * where the CI excludes 0; a bootstrap CI as "
        f"well where {BOOTSTRAP_MIN_N} or more seeds pair.")
_SYNTHIA_16 = class_names(16)
_SYNTHIA_13 = tuple(_SYNTHIA_16[i] for i in sub_protocol(16, 13))
# the node kinds that train and evaluate, and the config section holding each one's `steps`; ssl nodes train
# the backbone alone and, like pseudo-label nodes, have no evaluation
TRAINING_KINDS = {k: sec for k, sec in STEPS_SECTION.items() if k != "ssl"}


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (a node's ``metrics.jsonl``); [] when it is absent."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # blank, or a line still being written
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _failure(node_dir: Path, failed: dict) -> tuple[str, str | None]:
    """A failed node's error as one line (``IndexError: list index out of range``; a reason in words for a
    skipped node) and the path of the file holding its full traceback (``None`` when there is none)."""
    error = str(failed.get("error") or "")
    if failed.get("type"):
        error = f"{failed['type']}: {error}" if error else str(failed["type"])
    tb = failed.get("traceback")
    return error, str(node_dir / tb) if tb else None


def node_state(node_dir: Path, node) -> dict[str, Any]:
    """``{"status", "evals": [(step, miou, {class: iou})] by step, "pseudo_label_accuracy", "error",
    "traceback"}``."""
    status = study.status(node_dir)
    done = study.read_done(node_dir) if status == "done" else None
    evals: dict[int, tuple] = {}  # step → record; a step evaluated twice (resume) keeps the later record
    for rec in read_jsonl(node_dir / "metrics.jsonl"):
        if rec.get("kind") == "eval" and "miou" in rec and "step" in rec:
            evals[int(rec["step"])] = (float(rec["miou"]), dict(rec.get("iou") or {}))
    if done is not None and not evals and "miou" in done and node.kind in TRAINING_KINDS:
        evals[int(node.config[TRAINING_KINDS[node.kind]]["steps"])] = (float(done["miou"]), dict(done.get("iou") or {}))
    acc = (done or {}).get("pseudo_label_accuracy")
    error, tb = _failure(node_dir, study.read_failed(node_dir) or {}) if status == "failed" else (None, None)
    return {"status": status, "evals": [(s, *evals[s]) for s in sorted(evals)],
            "pseudo_label_accuracy": float(acc) if acc is not None else math.nan, "error": error, "traceback": tb}


def collect(study_dir: str | Path) -> pd.DataFrame:
    """One row per (study row × node of its chain × eval step × class); nodes without evaluations
    (pseudo labels, missing, running or failed nodes) appear once per study row with NaN IoU."""
    study_dir = Path(study_dir)
    plan = load_plan(study_dir)
    axes = plan.spec.axis_fields()
    states = {nid: node_state(study.node_dir(study_dir, nid), node) for nid, node in plan.nodes.items()}
    cols: dict[str, list] = {c: [] for c in (*BASE_COLUMNS[:4], *axes, *BASE_COLUMNS[4:])}

    def add(i, row, nid, step, cls, iou, miou):
        node, st = plan.nodes[nid], states[nid]
        vals = {"study": study_dir.name, "row": i, "variant": row.variant, "seed": row.seed, "node_id": nid,
                "node": node.name, "kind": node.kind, "step": step, "class": cls, "iou": iou, "miou": miou,
                "status": st["status"], "is_final": nid == row.final,
                "pseudo_label_accuracy": st["pseudo_label_accuracy"], "error": st["error"],
                "traceback": st["traceback"]}
        vals.update({f: row.axes.get(f) for f in axes})
        for c, v in vals.items():
            cols[c].append(v)

    for i, row in enumerate(plan.rows):
        for nid in row.nodes:
            evals = states[nid]["evals"]
            if not evals:
                add(i, row, nid, None, None, math.nan, math.nan)
            for step, miou, iou in evals:
                for cls, v in (iou.items() if iou else [(None, math.nan)]):
                    add(i, row, nid, step, cls, math.nan if v is None else float(v), miou)
    df = pd.DataFrame(cols)
    df["step"] = df["step"].astype("Int64")
    return df


def write_parquet(study_dir: str | Path, df: pd.DataFrame | None = None) -> Path:
    """``STUDY/results.parquet`` from :func:`collect` (or ``df``, collected already), written atomically."""
    from proda.checkpoint import atomic_write  # noqa: PLC0415 - imports torch

    path = Path(study_dir) / "results.parquet"
    df = collect(study_dir) if df is None else df
    atomic_write(path, lambda f: df.to_parquet(f, index=False))
    return path


# -- scores ----------------------------------------------------------------------------------------
def axis_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in BASE_COLUMNS]


def class_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df["class"].dropna().unique()]  # in the order of the eval records: train-id order


def has_miou13(classes) -> bool:
    """Whether the per-class IoU are SYNTHIA's 16 classes: then the tables also give mIoU* over 13."""
    return tuple(classes) == _SYNTHIA_16


def scores(df: pd.DataFrame, select: str = "last") -> pd.DataFrame:
    """One row per study row: variant, seed, axes, final node status, the selected eval step, mIoU and
    the per-class IoU (NaN when the final node is not done or has no evaluation); for SYNTHIA studies
    also ``miou13``, the mean IoU over the 13 classes of the same evaluation (classes absent from both
    prediction and ground truth are left out, as in :meth:`ConfusionMatrix.miou`)."""
    if select not in ("last", "best"):
        raise ValueError(f"select={select!r}: must be 'last' or 'best'")
    axes, classes = axis_columns(df), class_columns(df)
    fin = df[df["is_final"]]
    first = fin.drop_duplicates("row").sort_values("row", kind="stable")  # one record per study row
    sc = first[["row", "variant", "seed", *axes, "status"]].reset_index(drop=True)
    sc["seed"] = sc["seed"].astype(int)
    # mIoU per (row, eval step) of the done final nodes; the selected step of each row: its last, or its best
    ev = fin[fin["step"].notna() & (fin["status"] == "done")]
    per_step = ev.groupby(["row", "step"], sort=True)["miou"].first().dropna()  # (row, step) → mIoU
    by_row = per_step.groupby(level="row")
    chosen = by_row.tail(1) if select == "last" else per_step.loc[by_row.idxmax()]
    chosen = chosen.reset_index()  # row, step, miou
    sc = sc.merge(chosen, on="row", how="left")
    sc["step"] = sc["step"].astype("Int64")
    at = ev.merge(chosen[["row", "step"]], on=["row", "step"])  # the records of each row's selected step
    at = at[at["class"].notna()].drop_duplicates(["row", "class"], keep="last")
    iou = at.pivot(index="row", columns="class", values="iou").reindex(columns=classes)  # (rows, classes)
    iou.columns.name = None
    sc = sc.join(iou.astype(float), on="row")
    if has_miou13(classes):
        sc["miou13"] = sc[list(_SYNTHIA_13)].mean(axis=1)
    return sc


def group_key(v: Any) -> str | None:
    """An axis value as a hashable group key (values may be lists); null: no key."""
    return None if is_null(v) else json.dumps(v, sort_keys=True, default=str)


def group_rows(sc: pd.DataFrame, axes: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    """Study rows grouped by (variant, axis values), in the order of the plan's rows; each group's key
    holds the variant and the axes its rows sweep (a null axis value is not part of the key)."""
    if sc.empty:
        return []
    by = [sc["variant"], *(sc[a].map(group_key).rename(a) for a in axes)]
    out = []
    for _, g in sc.groupby(by, sort=False, dropna=False):
        r = g.iloc[0]
        out.append(({"variant": r["variant"], **{a: r[a] for a in axes if not is_null(r[a])}}, g))
    return out


def _fmt_mean_std(r: dict, p: str) -> str:
    n = int(r[f"{p}_n"])
    if n == 0:
        return "–"
    return f"{r[f'{p}_mean']:.2f} ± {'–' if n == 1 else format(r[f'{p}_std'], '.2f')} (n={n})"


def mean_std(values) -> str:
    """``"41.20 ± 0.35 (n=3)"``: mean ± sample std (ddof=1) of the non-null values, ``–`` for one value."""
    return _fmt_mean_std(prefixed(describe(values), "x"), "x")


def _fmt_ci(lo: float, hi: float, sign: str = "") -> str:
    return "–" if math.isnan(lo) else f"[{lo:{sign}.2f}, {hi:{sign}.2f}]"


def _fmt_delta(r: dict, p: str) -> str:
    """``"+2.30 [+0.90, +3.70]*"``: the paired Δ, its t CI (``[–]`` for one pair), ``*`` if it excludes 0."""
    if int(r[f"{p}_n"]) == 0:
        return "–"
    ci = _fmt_ci(r[f"{p}_ci_low"], r[f"{p}_ci_high"], "+")
    return f"{r[f'{p}_delta']:+.2f} {'[–]' if ci == '–' else ci}{'*' if r[f'{p}_sig'] else ''}"


def _fmt_boot(r: dict, p: str) -> str:
    lo, hi = r[f"{p}_boot_low"], r[f"{p}_boot_high"]
    return _fmt_ci(lo, hi, "+") + ("*" if excludes_zero(lo, hi) else "")


def _delta_cells(r: dict, base_label: str, boot: bool) -> dict[str, str]:
    cells = {ABOVE: _fmt_delta(r, "vs_above"), f"Δ vs {base_label}": _fmt_delta(r, "vs_base")}
    if boot:
        cells.update({ABOVE + BOOT: _fmt_boot(r, "vs_above"), f"Δ vs {base_label}{BOOT}": _fmt_boot(r, "vs_base")})
    return cells


def _any_bootstrap(st: pd.DataFrame) -> bool:
    return bool((st[["vs_above_n", "vs_base_n"]] >= BOOTSTRAP_MIN_N).to_numpy().any())


def _seeds_note(g: pd.DataFrame) -> str:
    """``"2 of 3 seeds; 1 failed"``: seeds with a score, and why the others have none."""
    note = f"{int(g['miou'].notna().sum())} of {len(g)} seeds"
    other = g.loc[g["miou"].isna(), "status"].replace("done", "done, no eval").value_counts()
    parts = [f"{other[s]} {s}" for s in ("failed", "running", "missing", "done, no eval") if s in other.index]
    return f"{note}; {', '.join(parts)}" if parts else note


def _fmt_axis(v: Any) -> str:
    return "" if is_null(v) else str(v)


def _miou_header(select: str, sc: pd.DataFrame | None = None) -> str:
    head = MIOU_BEST if select == "best" else MIOU
    if sc is not None and "miou13" in sc.columns:  # SYNTHIA: say which of the paper's two columns it is
        head = head.replace(MIOU, f"{MIOU} (16 classes)", 1)
    return head


def _miou13_cells(sc: pd.DataFrame, g: pd.DataFrame) -> dict[str, str]:
    """``{MIOU13: "mean ± std (n=k)"}`` for SYNTHIA studies, else nothing."""
    return {MIOU13: mean_std(g["miou13"])} if "miou13" in sc.columns else {}


def _mean_cells(r: dict, head: str, miou13: bool) -> dict[str, str]:
    """The mIoU cells of a stats row: mean ± std (n), its CI; the same for mIoU* in SYNTHIA studies."""
    cells = {head: _fmt_mean_std(r, "miou"), CI: _fmt_ci(r["miou_ci_low"], r["miou_ci_high"])}
    if miou13:
        cells.update({MIOU13: _fmt_mean_std(r, "miou13"), CI13: _fmt_ci(r["miou13_ci_low"], r["miou13_ci_high"])})
    return cells


def ablation_table(df: pd.DataFrame, select: str = "last", numeric: bool = False) -> list[dict] | pd.DataFrame:
    """Rows in spec order: variant, axis values, mIoU "mean ± std (n=k)" and its 95 % CI, the paired Δ
    against the row above and against source-only (the first row when there is none), seeds.

    ``numeric``: a DataFrame instead, one row per table row: ``miou_mean``, ``_std``, ``_n``, ``_ci_low``,
    ``_ci_high`` (and ``miou13_*``), ``vs_above_*`` and ``vs_base_*`` (``delta``, ``n``, ``ci_low``,
    ``ci_high``, ``boot_low``, ``boot_high``, ``sig``), ``base`` (which row ``vs_base`` is against), seeds."""
    sc, axes = scores(df, select), axis_columns(df)
    groups = group_rows(sc, axes)
    if not groups:
        return pd.DataFrame() if numeric else []
    st = pd.DataFrame(group_stats(groups, "miou", axes, "miou"))
    miou13 = "miou13" in sc.columns
    if miou13:
        d13 = pd.DataFrame([prefixed(describe(g["miou13"]), "miou13") for _, g in groups])
        at = st.columns.get_loc("miou_ci_high") + 1
        st = pd.concat([st.iloc[:, :at], d13, st.iloc[:, at:]], axis=1)
    base_label = baseline(groups)[1]
    st["base"] = base_label
    st["seeds"] = [_seeds_note(g) for _, g in groups]
    if numeric:
        return st
    head, boot = _miou_header(select, sc), _any_bootstrap(st)
    return [{"variant": r["variant"], **{a: _fmt_axis(r[a]) for a in axes}, **_mean_cells(r, head, miou13),
             **_delta_cells(r, base_label, boot), "seeds": r["seeds"]} for r in st.to_dict("records")]


def per_class_table(df: pd.DataFrame, select: str = "last") -> tuple[list[str], list[list]]:
    """Per-class IoU (mean over seeds) and mIoU per variant row, like the paper's Table 1."""
    sc, axes, classes = scores(df, select), axis_columns(df), class_columns(df)
    headers = ["variant", *axes, *classes, _miou_header(select, sc), *_miou13_cells(sc, sc)]
    rows = []
    for k, g in group_rows(sc, axes):
        cells = g[classes].mean()  # per class, over the seeds with an IoU
        rows.append([k["variant"], *(_fmt_axis(k.get(a)) for a in axes),
                     *("–" if math.isnan(c) else f"{c:.2f}" for c in cells), mean_std(g["miou"]),
                     *_miou13_cells(sc, g).values()])
    return headers, rows


def per_class_stats(df: pd.DataFrame, select: str = "last", numeric: bool = False) -> list[dict] | pd.DataFrame:
    """The ablation table's statistics for each class's IoU (``--stats``): one row per class × table row,
    class by class (so the row above is the variant above, for the same class): IoU mean ± std (n), 95 %
    CI, the paired Δ against the row above and against source-only. ``numeric``: a DataFrame, columns as
    :func:`ablation_table`'s with ``iou_*`` for ``miou_*``."""
    sc, axes, classes = scores(df, select), axis_columns(df), class_columns(df)
    groups = group_rows(sc, axes)
    st = pd.DataFrame([{"class": c, **r} for c in classes for r in group_stats(groups, c, axes, "iou")])
    if numeric or st.empty:
        return st if numeric else []
    head = "IoU" + (MIOU_BEST[len(MIOU):] if select == "best" else "")
    base_label, boot = baseline(groups)[1], _any_bootstrap(st)
    return [{"class": r["class"], "variant": r["variant"], **{a: _fmt_axis(r[a]) for a in axes},
             head: _fmt_mean_std(r, "iou"), CI: _fmt_ci(r["iou_ci_low"], r["iou_ci_high"]),
             **_delta_cells(r, base_label, boot)} for r in st.to_dict("records")]


def axis_tables(df: pd.DataFrame, select: str = "last", numeric: bool = False) -> dict[str, tuple | pd.DataFrame]:
    """One table per swept field: value → mIoU mean ± std over seeds and its 95 % CI. Rows where the field
    is not swept (other sweeps of a union) are left out; in a cross product the other axes are listed
    alongside. ``numeric``: DataFrames with ``miou_mean``, ``_std``, ``_n``, ``_ci_low``, ``_ci_high``."""
    sc, axes = scores(df, select), axis_columns(df)
    metrics = ["miou", *(["miou13"] if "miou13" in sc.columns else [])]
    out = {}
    for f in axes:
        sub = sc[sc[f].notna()]
        groups = group_rows(sub, axes)
        others = [a for a in axes if a != f and any(a in k for k, _ in groups)]
        show_variant = len({k["variant"] for k, _ in groups}) > 1
        st = pd.DataFrame([{**({"variant": k["variant"]} if show_variant else {}), **{a: k.get(a) for a in others},
                            f: k[f], **{c: v for m in metrics for c, v in prefixed(describe(g[m]), m).items()},
                            "seeds": _seeds_note(g)} for k, g in groups])
        if numeric:
            out[f] = st
            continue
        head, miou13 = _miou_header(select, sc), len(metrics) > 1
        headers = [*(["variant"] if show_variant else []), *others, f, head, CI, *([MIOU13, CI13] if miou13 else []),
                   "seeds"]
        rows = [[*([r["variant"]] if show_variant else []), *(_fmt_axis(r[a]) for a in others), _fmt_axis(r[f]),
                 *_mean_cells(r, head, miou13).values(), r["seeds"]] for r in st.to_dict("records")]
        out[f] = (headers, rows)
    return out


def status_counts(df: pd.DataFrame) -> dict[str, int]:
    c = df.drop_duplicates("node_id")["status"].value_counts().reindex(STATUSES, fill_value=0)
    return {s: int(n) for s, n in c.items()}


def status_line(df: pd.DataFrame) -> str:
    c = status_counts(df)
    return f"nodes: {c['done']} done, {c['running']} running, {c['failed']} failed, {c['missing']} missing " \
           f"({sum(c.values())} in all)"


def report(study_dir: str | Path, fmt: str = "github", select: str = "last", write: bool = True,
           stats: bool = False) -> str:
    """Everything a person reads about a study: status line, failed nodes, the tables (and writes the
    Parquet table unless ``write`` is False). ``stats``: the per-class statistics table as well. The csv
    format prints the numeric tables (``numeric=True``): one column per number."""
    df = collect(study_dir)
    lines = [status_line(df)]
    failed = df[df["status"] == "failed"].drop_duplicates("node_id")
    for r in failed.itertuples(index=False):
        lines.append(f"  failed: {r.node_id} ({r.node}, seed {r.seed}): {r.error}"
                     + (f" (traceback: {r.traceback})" if isinstance(r.traceback, str) else ""))
    numeric = fmt == "csv"
    tables = {"Ablation": ablation_table(df, select, numeric), "Per-class IoU": per_class_table(df, select)}
    if stats:
        tables["Per-class IoU: statistics over seeds"] = per_class_stats(df, select, numeric)
    tables.update({f"mIoU vs {f}": t for f, t in axis_tables(df, select, numeric).items()})
    lines += ["", render(tables, fmt)]
    if not numeric:
        lines += ["", ("% " if fmt == "latex" else "") + NOTE]
    if write:
        lines += ["", f"wrote {write_parquet(study_dir, df)}"]
    return "\n".join(lines)
