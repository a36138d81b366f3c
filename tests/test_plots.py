"""The study's plots: the numbers behind them (exact), and PNGs a person can read (size, not blank).

Study folders are hand-made, as in test_results.py: a plan, and for some nodes a metrics.jsonl and a
done.json; no training, no Ray.
"""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from proda.ablation import plots as P
from proda.ablation import results as R
from proda.ablation.grid import AblationSpec, expand
from proda.data.classes import class_names

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = list(class_names(19))
VARIANTS = ("source-only", "st", "pd+sl")
T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (3 seeds)


def ious(vi: int, seed: int) -> dict:
    """Class c of variant vi, seed s: 10·vi + c + s·vi; bicycle never evaluated (null)."""
    out = {c: 10.0 * vi + ci + seed * vi for ci, c in enumerate(CLASSES)}
    out["bicycle"] = None
    return out


def write_node(root, nid, evals=(), train=(), done=True):
    """``evals``: (step, iou dict); ``train``: (step, {metric: value}) records, in the order given."""
    d = root / "nodes" / nid
    d.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"stage": "x", "step": s, "kind": "train", **m}) for s, m in train]
    for s, iou in evals:
        vals = [v for v in iou.values() if v is not None]
        lines.append(json.dumps({"stage": "x", "step": s, "kind": "eval", "miou": sum(vals) / len(vals), "iou": iou}))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if done:
        (d / "done.json").write_text(json.dumps({"miou": 0.0}))


def losses(step, *terms, speed=20.0):
    m = {t: 1.0 / step + i for i, t in enumerate(terms, 1)}
    return step, {**m, "total": sum(m.values()), "images_per_s": speed, "lr": 1e-3}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """source-only / st / pd+sl × seeds 0, 1, 2, 19 classes; train records for every warm-up and stage-1 node
    (st seed 0's stage 1 resumed: step 20 logged twice, the later record 5× the first)."""
    root = tmp_path_factory.mktemp("plots") / "table"
    plan = expand(AblationSpec(name="t", preset="smoke", variants=VARIANTS, seeds=(0, 1, 2)))
    root.mkdir()
    (root / "plan.json").write_text(plan.to_json())
    for r in plan.rows:
        vi = VARIANTS.index(r.variant)
        for nid in r.nodes:
            kind = plan.nodes[nid].kind
            if kind == "warmup" and nid != r.final:
                write_node(root, nid, train=[losses(s, "loss_src", "loss_adv") for s in (20, 40)])
            elif kind == "pseudo":
                write_node(root, nid)
        train = [losses(s, "loss_src", "loss_st") for s in (10, 20)] if vi else [losses(20, "loss_src")]
        if r.variant == "st" and r.seed == 0:
            train.append((20, {**train[-1][1], "total": 5 * train[-1][1]["total"]}))
        write_node(root, r.final, [(20, ious(vi, r.seed))], train)
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """pd+sl sweeping γ1 ∈ {1, 10} and λ ∈ {0.9, 0.99, 0.999}; 2 seeds; final nodes only, no train records."""
    root = tmp_path_factory.mktemp("plots") / "sens"
    plan = expand(AblationSpec(name="s", preset="smoke", variants=("pd+sl",), seeds=(0, 1),
                               axes=[{"stage1.gamma1": [1.0, 10.0]},
                                     {"stage1.proto_momentum": [0.9, 0.99, 0.999]}]))
    root.mkdir()
    (root / "plan.json").write_text(plan.to_json())
    combos = list(dict.fromkeys(json.dumps(r.axes) for r in plan.rows))  # the row groups, in order
    for r in plan.rows:
        write_node(root, r.final, [(20, ious(1 + combos.index(json.dumps(r.axes)), r.seed))])
    return root


def groups_of(root):
    df = R.collect(root)
    axes = R.axis_columns(df)
    return R.group_rows(R.scores(df), axes), axes


def read_png(path: Path) -> np.ndarray:
    img = imread(path)  # (H, W, 4) float in [0, 1]
    assert img.ndim == 3 and img.shape[2] in (3, 4), path
    return img[..., :3]


def assert_legible(path: Path) -> None:
    """At most 2000 px wide, a sensible height, and drawn on: many colours, much ink."""
    img = read_png(path)
    h, w = img.shape[:2]
    assert 300 <= w <= P.MAX_WIDTH_PX and 200 <= h <= P.MAX_HEIGHT_PX, (path.name, w, h)
    rgb = (img * 255).astype(np.uint32)  # (H, W, 3)
    colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
    ink = (img < 0.9).any(axis=2).mean()  # share of pixels that are not (nearly) white
    assert len(colours) > 50 and img.std() > 0.05 and ink > 0.03, (path.name, len(colours), img.std(), ink)


# -- the numbers ---------------------------------------------------------------------------------------------
def test_iou_matrix_is_the_mean_over_seeds_per_class_with_miou_last(study):
    groups, axes = groups_of(study)
    m = P.iou_matrix(groups, CLASSES, axes)
    assert list(m.index) == list(VARIANTS) and list(m.columns) == [*CLASSES, "mIoU"]
    assert m.loc["st", "road"] == 11.0 and m.loc["pd+sl", "sky"] == 20.0 + 10 + 2  # 10·vi + c + mean(s)·vi
    assert math.isnan(m.loc["source-only", "bicycle"])
    assert m.loc["st", "mIoU"] == pytest.approx(10 + np.mean(range(18)) + 1)


def test_delta_matrix_is_paired_over_seeds_against_the_chosen_baseline(study):
    groups, axes = groups_of(study)
    assert P.resolve_baseline(groups, axes) == 0  # source-only, as the tables
    delta, sig = P.delta_matrix(groups, CLASSES, axes, 0)
    assert list(delta.index) == ["st", "pd+sl"]  # the baseline row is not drawn against itself
    # st − source-only per seed: 10 + s → 10, 11, 12: Δ 11, t CI 11 ± 4.303/√3 excludes 0
    assert delta.loc["st", "road"] == 11.0 and sig.loc["st", "road"]
    assert math.isnan(delta.loc["st", "bicycle"]) and not sig.loc["st", "bicycle"]
    delta, sig = P.delta_matrix(groups, CLASSES, axes, P.resolve_baseline(groups, axes, "st"))
    assert list(delta.index) == ["source-only", "pd+sl"]
    assert delta.loc["source-only", "car"] == -11.0 and delta.loc["pd+sl", "mIoU"] == pytest.approx(11.0)
    with pytest.raises(ValueError, match=r"^--baseline 'nope' is not a row of the study; rows: source-only, st, pd\+sl$"):
        P.resolve_baseline(groups, axes, "nope")


def test_rows_are_named_with_the_papers_symbols(sweep):
    groups, axes = groups_of(sweep)
    assert [P.row_label(k, axes) for k, _ in groups] == [
        "pd+sl γ1=1.0", "pd+sl γ1=10.0", "pd+sl λ=0.9", "pd+sl λ=0.99", "pd+sl λ=0.999"]
    assert P.resolve_baseline(groups, axes, "pd+sl λ=0.99") == 3
    assert P.axis_name("stage1.gamma2") == "γ2 (stage1.gamma2)" and P.axis_name("eval.interval") == "eval.interval"


def test_axis_values_are_evenly_spaced_when_a_linear_scale_would_crowd_them():
    assert P._positions([1.0, 10.0]) == ([1.0, 10.0], False)
    assert P._positions([0.0, 0.1, 0.2, 0.4]) == ([0.0, 0.1, 0.2, 0.4], False)
    assert P._positions([0.9, 0.99, 0.999]) == ([0, 1, 2], True)
    assert P._positions(["sgd", "adam"]) == ([0, 1], True)


def test_train_curves_read_every_train_record_once_per_step(study):
    c = P.train_curves(study)
    assert set(c["kind"]) == {"warmup", "stage1"}  # pseudo-label nodes log no train step
    assert set(c["metric"]) == {"loss_src", "loss_adv", "loss_st", "total", "images_per_s"}  # lr is not a curve
    plan = R.load_plan(study)
    st0 = next(r for r in plan.rows if r.variant == "st" and r.seed == 0).final
    tot = c[(c["node_id"] == st0) & (c["metric"] == "total")]
    assert list(tot["step"]) == [10, 20] and tot["value"].iloc[1] == pytest.approx(5 * (1 / 20 + 1 + 1 / 20 + 2))
    assert set(c.loc[c["node_id"] == st0, "rows"]) == {"st"}
    assert not (c["node_id"].isin([r.final for r in plan.rows if r.variant == "source-only"])
                & (c["metric"] == "loss_st")).any()


# -- the pictures --------------------------------------------------------------------------------------------
def test_every_plot_of_a_study_is_legible_at_its_natural_size(study, tmp_path):
    written = P.plot_study(study, tmp_path)
    assert [p.name for p in written] == ["iou_heatmap.png", "delta_heatmap.png", "miou.png", "learning_curves.png"]
    for p in written:
        assert_legible(p)


def test_a_sweep_gets_one_curve_per_swept_field_and_no_learning_curves_without_train_records(sweep, tmp_path):
    names = [p.name for p in P.plot_study(sweep, tmp_path, select="best")]
    assert names == ["iou_heatmap.png", "delta_heatmap.png", "miou.png", "axis_stage1_gamma1.png",
                     "axis_stage1_proto_momentum.png"]
    for n in names:
        assert_legible(tmp_path / n)


def test_a_study_that_is_still_warming_up_gets_its_learning_curves_only(tmp_path):
    plan = expand(AblationSpec(name="w", preset="smoke", variants=("source-only", "st"), seeds=(0,)))
    (tmp_path / "plan.json").write_text(plan.to_json())
    warmup = plan.rows[1].nodes[0]
    write_node(tmp_path, warmup, train=[losses(s, "loss_src", "loss_adv") for s in (10, 20, 30)], done=False)
    assert R.status_line(R.collect(tmp_path)) == "nodes: 0 done, 1 running, 0 failed, 3 missing (4 in all)"
    assert P.plot_study(tmp_path, tmp_path / "png") == [tmp_path / "png" / "learning_curves.png"]
    assert_legible(tmp_path / "png" / "learning_curves.png")


def test_a_blank_figure_fails_the_legibility_check(tmp_path):
    plt = P.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    fig.savefig(tmp_path / "blank.png", dpi=P.DPI)
    plt.close(fig)
    with pytest.raises(AssertionError):
        assert_legible(tmp_path / "blank.png")


def test_a_wide_prediction_strip_shrinks_its_cells_to_2000_px(tmp_path):
    from proda.ablation.predictions import Strip

    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 255, (4, 64, 128, 3), dtype=np.uint8)  # noqa: E731
    strip = Strip(img(), img(), [f"variant{i} (seed 0)" for i in range(10)], [img() for _ in range(10)])
    path = P.strip_png(strip, tmp_path / "predictions.png")
    h, w = read_png(path).shape[:2]
    assert w == P.MAX_WIDTH_PX and h < w / 2  # 12 columns at 2.2 in would be 3168 px


def _cli():
    spec = importlib.util.spec_from_file_location("results_cli", ROOT / "experiments" / "results.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_results_cli_plots_against_the_baseline_asked_for(sweep, tmp_path, capsys):
    assert _cli().main([str(sweep), "--no-write", "--plot", str(tmp_path), "--strip-images", "0",
                        "--baseline", "pd+sl λ=0.99"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'delta_heatmap.png'}" in out and "per_class.png" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["axis_stage1_gamma1.png", "axis_stage1_proto_momentum.png",
                                                         "delta_heatmap.png", "iou_heatmap.png", "miou.png"]


def test_results_cli_refuses_a_baseline_that_is_no_row_before_printing(study, tmp_path, capsys):
    assert _cli().main([str(study), "--no-write", "--plot", str(tmp_path), "--baseline", "nope"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.strip().splitlines() == [
        "error: --baseline 'nope' is not a row of the study; rows: source-only, st, pd+sl"]
    assert not tmp_path.exists() or not list(tmp_path.iterdir())
