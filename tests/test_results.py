"""Study folder → tidy table → tables: exact cells on a hand-made study (no Ray, no training)."""

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from proda.ablation import results as R
from proda.ablation import stats as S
from proda.ablation.grid import AblationSpec, expand

ROOT = Path(__file__).resolve().parents[1]


def iou(miou):  # three classes in train-id order; 'building' never evaluated (null → NaN)
    return {"road": miou + 40, "sidewalk": miou - 10, "building": None}


def write_node(study, nid, evals=(), done=None, failed=None, extra_lines=()):
    d = study / "nodes" / nid
    d.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"stage": "x", "step": s, "kind": "train", "loss": 1.0}) for s, _ in evals]
    lines += [json.dumps({"stage": "x", "step": s, "kind": "eval", "miou": m, "iou": iou(m), "eval_seconds": 0.1})
              for s, m in evals]
    (d / "metrics.jsonl").write_text("\n".join([*lines, *extra_lines]) + "\n")
    if done is not None:
        (d / "done.json").write_text(json.dumps(done))
    if failed is not None:
        (d / "failed.json").write_text(json.dumps(failed))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """warmup / st / pd+sl × seeds 0, 1, 2 on the smoke preset (warm-up 40 steps, stage 1 20 steps).

    warmup  s0: 20→30, 40→32   s1: 20→34, 40→33   s2: done.json only (31; step 40)
    st      s0: 10→36, 20→38   s1: failed          s2: missing
    pd+sl   s0: 10→40, 20→44   s1: 10→41, 20→42   s2: running (10→50, not counted)
    """
    root = tmp_path_factory.mktemp("study") / "table3"
    plan = expand(AblationSpec(name="t", preset="smoke", variants=("warmup", "st", "pd+sl"), seeds=(0, 1, 2)))
    root.mkdir()
    (root / "plan.json").write_text(plan.to_json())
    rows = {(r.variant, r.seed): r for r in plan.rows}
    warm = {0: [(20, 30.0), (40, 32.0)], 1: [(20, 34.0), (40, 33.0)]}
    for s in (0, 1, 2):
        r = rows["st", s]
        if s in warm:
            write_node(root, r.nodes[0], warm[s], done={"stage": "warmup", "kind": "warmup", "miou": warm[s][-1][1],
                                                        "iou": iou(warm[s][-1][1])})
        else:  # a finished node whose metrics log is gone: the score comes from done.json
            (root / "nodes" / r.nodes[0]).mkdir(parents=True)
            (root / "nodes" / r.nodes[0] / "done.json").write_text(
                json.dumps({"stage": "warmup", "kind": "warmup", "miou": 31.0, "iou": iou(31.0)}))
        write_node(root, r.nodes[1], done={"kind": "pseudo", "pseudo_label_accuracy": 70.0 + s})
    write_node(root, rows["st", 0].final, [(10, 36.0), (20, 38.0)], done={"miou": 38.0, "iou": iou(38.0)})
    write_node(root, rows["st", 1].final, [(10, 20.0)], failed={"type": "NonFiniteLoss", "error": "loss became NaN",
                                                                  "traceback": "traceback.txt", "node": "stage1"})
    write_node(root, rows["pd+sl", 0].final, [(10, 40.0), (20, 44.0)], done={"miou": 44.0, "iou": iou(44.0)})
    write_node(root, rows["pd+sl", 1].final, [(10, 41.0), (20, 42.0)], done={"miou": 42.0, "iou": iou(42.0)})
    write_node(root, rows["pd+sl", 2].final, [(10, 50.0)], extra_lines=['{"stage": "stage1", "ste'])  # torn line
    return root


@pytest.fixture(scope="module")
def sweep_study(tmp_path_factory):
    """pd+sl; sweeps γ1 ∈ {1, 10} and γ2 ∈ {0, 0.1} (the preset point γ1 10 / γ2 0.1 is one node); 2 seeds."""
    root = tmp_path_factory.mktemp("study") / "sens"
    spec = AblationSpec(name="s", preset="smoke", variants=("pd+sl",), seeds=(0, 1),
                        axes=[{"stage1.gamma1": [1.0, 10.0]}, {"stage1.gamma2": [0.0, 0.1]}])
    plan = expand(spec)
    root.mkdir()
    (root / "plan.json").write_text(plan.to_json())
    score = {("stage1.gamma1", 1.0): (30.0, 31.0), ("stage1.gamma1", 10.0): (40.0, 42.0),
             ("stage1.gamma2", 0.0): (35.0, 37.0), ("stage1.gamma2", 0.1): (40.0, 42.0)}
    for r in plan.rows:
        (f, v), = r.axes.items()
        m = score[f, v][r.seed]
        write_node(root, r.final, [(20, m)], done={"miou": m, "iou": iou(m)})
    return root


def test_report_names_each_failed_node_with_its_error_and_traceback(study):
    nid = R.collect(study).query("status == 'failed'")["node_id"].iloc[0]
    text = R.report(study, write=False)
    assert f"  failed: {nid} (stage1, seed 1): NonFiniteLoss: loss became NaN " \
           f"(traceback: {study / 'nodes' / nid / 'traceback.txt'})" in text.splitlines()


def test_collect_lists_every_node_of_every_row_with_its_status(study):
    df = R.collect(study)
    assert list(df.columns) == list(R.BASE_COLUMNS)  # no axes in this study
    assert R.status_line(df) == "nodes: 9 done, 1 running, 1 failed, 1 missing (12 in all)"
    missing = df[df["status"] == "missing"]
    assert len(missing) == 1 and missing["iou"].isna().all() and missing["is_final"].all()
    failed = df[df["status"] == "failed"]
    assert len(failed) == 3 and set(failed["error"]) == {"NonFiniteLoss: loss became NaN"}  # 1 eval × 3 classes
    assert set(failed["traceback"]) == {str(study / "nodes" / failed["node_id"].iloc[0] / "traceback.txt")}
    pseudo = df[df["node"] == "pseudo0"]
    assert len(pseudo) == 6 and pseudo["step"].isna().all()  # once per row that uses it (st, pd+sl × 3 seeds)
    assert sorted(set(pseudo["pseudo_label_accuracy"])) == [70.0, 71.0, 72.0]
    w2 = df[(df["variant"] == "warmup") & (df["seed"] == 2)]
    assert list(w2["step"]) == [40, 40, 40] and list(w2["miou"]) == [31.0] * 3  # from done.json
    # a warm-up is listed under every row whose chain holds it: 3 variants × (2 evals × 3 classes) for seed 0
    assert len(df[(df["node"] == "warmup") & (df["seed"] == 0)]) == 3 * 6


def test_ablation_table_last(study):
    """CI: mean ± t(0.975, n−1)·s/√n; Δ paired over the seeds both rows have; one pair: no CI."""
    t = R.ablation_table(R.collect(study), "last")
    assert [r["variant"] for r in t] == ["warmup", "st", "pd+sl"]
    assert list(t[0]) == ["variant", "mIoU", R.CI, "Δ vs row above", "Δ vs first row", "seeds"]  # no source-only
    # warm-up 32, 33, 31: 32 ± 4.3027 · 1/√3
    assert t[0] == {"variant": "warmup", "mIoU": "32.00 ± 1.00 (n=3)", R.CI: "[29.52, 34.48]",
                    "Δ vs row above": "–", "Δ vs first row": "–", "seeds": "3 of 3 seeds"}
    # st has seed 0 only: 38 − 32 against both rows above, one pair
    assert t[1] == {"variant": "st", "mIoU": "38.00 ± – (n=1)", R.CI: "–", "Δ vs row above": "+6.00 [–]",
                    "Δ vs first row": "+6.00 [–]", "seeds": "1 of 3 seeds; 1 failed, 1 missing"}
    # pd+sl 44, 42 (43 ± 12.706 · 1/√2); vs st: seed 0 only (44 − 38); vs warmup: 44 − 32, 42 − 33 = 12, 9 →
    # 10.5 ± 12.706 · 1.5 (the paired Δ, not 43 − 32: seed 2 has no pd+sl score)
    assert t[2] == {"variant": "pd+sl", "mIoU": "43.00 ± 1.41 (n=2)", R.CI: "[30.29, 55.71]",
                    "Δ vs row above": "+6.00 [–]", "Δ vs first row": "+10.50 [-8.56, +29.56]",
                    "seeds": "2 of 3 seeds; 1 running"}


def test_ablation_table_best_selects_the_best_step_and_says_so(study):
    t = R.ablation_table(R.collect(study), "best")
    # warm-up best steps: 32, 34, 31 → mean 32.33, sample std sqrt(14/3 / 2) = 1.53
    assert t[0][R.MIOU_BEST] == "32.33 ± 1.53 (n=3)"
    # pd+sl − warm-up, paired: 44 − 32, 42 − 34 = 12, 8 → 10 ± 12.706 · 2
    assert t[2][R.MIOU_BEST] == "43.00 ± 1.41 (n=2)" and t[2]["Δ vs first row"] == "+10.00 [-15.41, +35.41]"
    assert "(best eval step: model selection on target val)" in R.render(t)


def test_per_class_table(study):
    headers, rows = R.per_class_table(R.collect(study))
    assert headers == ["variant", "road", "sidewalk", "building", "mIoU"]
    assert rows[0] == ["warmup", "72.00", "22.00", "–", "32.00 ± 1.00 (n=3)"]
    assert rows[2] == ["pd+sl", "83.00", "33.00", "–", "43.00 ± 1.41 (n=2)"]


def test_axis_tables_one_per_sweep(sweep_study):
    df = R.collect(sweep_study)
    assert R.axis_columns(df) == ["stage1.gamma1", "stage1.gamma2"]
    # 2 seeds × (warm-up, pseudo0, 3 stage-1 nodes); only the final (stage-1) nodes were written
    assert R.status_line(df) == "nodes: 6 done, 0 running, 0 failed, 4 missing (10 in all)"
    tables = R.axis_tables(df)
    assert tables["stage1.gamma1"] == (["stage1.gamma1", "mIoU", R.CI, "seeds"],
                                       [["1.0", "30.50 ± 0.71 (n=2)", "[24.15, 36.85]", "2 of 2 seeds"],
                                        ["10.0", "41.00 ± 1.41 (n=2)", "[28.29, 53.71]", "2 of 2 seeds"]])
    assert tables["stage1.gamma2"][1] == [["0.0", "36.00 ± 1.41 (n=2)", "[23.29, 48.71]", "2 of 2 seeds"],
                                          ["0.1", "41.00 ± 1.41 (n=2)", "[28.29, 53.71]", "2 of 2 seeds"]]
    ab = R.ablation_table(df)
    # above: (40 − 30, 42 − 31) = 10, 11; (35 − 40, 37 − 42) = −5, −5: no spread, the interval is the point
    assert [(r["stage1.gamma1"], r["stage1.gamma2"], r["Δ vs row above"], r["Δ vs first row"]) for r in ab] == [
        ("1.0", "", "–", "–"),
        ("10.0", "", "+10.50 [+4.15, +16.85]*", "+10.50 [+4.15, +16.85]*"),
        ("", "0.0", "-5.00 [-5.00, -5.00]*", "+5.50 [-0.85, +11.85]"),
        ("", "0.1", "+5.00 [+5.00, +5.00]*", "+10.50 [+4.15, +16.85]*")]


def test_parquet_is_written_atomically_and_readable(study):
    path = R.write_parquet(study)
    assert path == study / "results.parquet"
    assert not [p for p in study.iterdir() if p.name.endswith(".tmp")]
    table = pq.read_table(path)
    assert table.num_rows == len(R.collect(study))
    for col in ("study", "variant", "seed", "node_id", "node", "kind", "step", "class", "iou", "miou", "status",
                "is_final"):
        assert col in table.column_names
    df = table.to_pandas()
    assert set(df["study"]) == {"table3"}
    assert R.ablation_table(df) == R.ablation_table(R.collect(study))  # tables are views of the Parquet


def test_sweep_parquet_keeps_axis_columns(sweep_study):
    df = pq.read_table(R.write_parquet(sweep_study)).to_pandas()
    assert {"stage1.gamma1", "stage1.gamma2"} <= set(df.columns)
    assert R.axis_tables(df) == R.axis_tables(R.collect(sweep_study))


def test_render_formats(study):
    t = R.ablation_table(R.collect(study))
    gh = R.render({"Ablation": t})
    assert "### Ablation" in gh and "| pd+sl" in gh and "+10.50" in gh  # numbers are not re-parsed
    assert "\\hline" in R.render(t, "latex") or "\\toprule" in R.render(t, "latex")
    assert "43.00 $\\pm$ 1.41 (n=2)" in R.render(t, "latex")
    csv_text = R.render(t, "csv").splitlines()
    assert csv_text[0] == "variant,mIoU,95 % CI,Δ vs row above,Δ vs first row,seeds"
    assert csv_text[3] == "pd+sl,43.00 ± 1.41 (n=2),\"[30.29, 55.71]\",+6.00 [–],\"+10.50 [-8.56, +29.56]\"," \
                          "2 of 3 seeds; 1 running"
    assert R.render(t, "markdown").splitlines()[1].startswith("|:")
    with pytest.raises(ValueError, match="must be one of"):
        R.render(t, "html")


def test_cli_prints_status_and_tables(study):
    out = subprocess.run([sys.executable, "experiments/results.py", str(study), "--no-write", "--select", "best"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "nodes: 9 done, 1 running, 1 failed, 1 missing (12 in all)"
    assert "failed:" in lines[1] and "NonFiniteLoss" in lines[1]
    assert "### Per-class IoU" in out.stdout and "model selection on target val" in out.stdout


def test_mean_std_strings():
    assert R.mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00 (n=3)"
    assert R.mean_std([5.0, math.nan]) == "5.00 ± – (n=1)"
    assert R.mean_std([]) == "–"


def test_synthia_tables_give_miou_over_16_and_13_classes_of_the_same_models(tmp_path):
    """A 16-class study: mIoU over the 16, mIoU* over the 13 (no wall, fence, pole) from the same evals."""
    from proda.data.classes import class_names

    root = tmp_path / "syn"
    plan = expand(AblationSpec(name="syn", preset="smoke", variants=("source-only",), seeds=(0, 1),
                               overrides={"data.source": "synthia", "data.target": "cityscapes",
                                          "data.num_classes": 16, "data.source_root": "/s",
                                          "data.target_root": "/t"}))
    root.mkdir()
    (root / "plan.json").write_text(plan.to_json())
    names = class_names(16)
    for r in plan.rows:
        # wall, fence, pole score 0; the other 13 score 40 (seed 0) / 50 (seed 1); motorcycle never seen
        ious = {n: 0.0 if n in ("wall", "fence", "pole") else 40.0 + 10 * r.seed for n in names}
        ious["motorcycle"] = None
        m16 = (12 * (40.0 + 10 * r.seed)) / 15
        d = root / "nodes" / r.final
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text(json.dumps({"step": 40, "kind": "eval", "miou": m16, "iou": ious}) + "\n")
        (d / "done.json").write_text(json.dumps({"miou": m16, "iou": ious}))
    df = R.collect(root)
    assert R.class_columns(df) == list(names)
    sc = R.scores(df)
    assert list(sc["miou13"]) == [40.0, 50.0]  # nanmean over the 12 of the 13 with an IoU
    (row,) = R.ablation_table(df)
    assert row == {"variant": "source-only", "mIoU (16 classes)": "36.00 ± 5.66 (n=2)", R.CI: "[-14.82, 86.82]",
                   R.MIOU13: "45.00 ± 7.07 (n=2)", R.CI13: "[-18.53, 108.53]", "Δ vs row above": "–",
                   "Δ vs source-only": "–", "seeds": "2 of 2 seeds"}
    headers, rows = R.per_class_table(df)
    assert headers[-2:] == ["mIoU (16 classes)", R.MIOU13] and len(headers) == 1 + 16 + 2
    assert rows[0][-1] == "45.00 ± 7.07 (n=2)" and rows[0][1 + names.index("motorcycle")] == "–"
    best = R.ablation_table(df, "best")[0]
    assert "mIoU (16 classes) (best eval step: model selection on target val)" in best


def test_gta5_and_embedded_tables_have_one_miou_column(study):
    assert "miou13" not in R.scores(R.collect(study)).columns
    assert R.MIOU13 not in R.ablation_table(R.collect(study))[0]


# -- statistics ------------------------------------------------------------------------------------
T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (3 seeds)


def final_scores_study(root, variants, scores):
    """A study whose rows' final nodes are done with mIoU ``scores[variant][i]`` for seed i (nothing else
    written: only final nodes are scored)."""
    plan = expand(AblationSpec(name=root.name, preset="smoke", variants=tuple(variants),
                               seeds=tuple(range(len(scores[variants[0]])))))
    root.mkdir()
    (root / "plan.json").write_text(plan.to_json())
    for r in plan.rows:
        m = scores[r.variant][r.seed]
        write_node(root, r.final, [(20, m)], done={"miou": m, "iou": iou(m)})
    return root


def test_paired_delta_pairs_by_seed_and_its_t_interval_is_the_paired_t_test_s():
    a = pd.Series([41.0, 43.0, 45.0], index=[0, 1, 2])
    b = pd.Series([42.0, 40.0, 41.0], index=[2, 0, 1])  # another order: pairing is by seed, not position
    d = S.paired_delta(a, b)  # differences 1, 2, 3: mean 2, s = 1
    half = T_975_2 / math.sqrt(3)
    assert d["delta"] == 2.0 and d["n"] == 3
    assert d["ci_low"] == pytest.approx(2 - half) and d["ci_high"] == pytest.approx(2 + half)
    ci = stats.ttest_rel(a.sort_index(), b.sort_index()).confidence_interval(0.95)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert not d["sig"]  # [-0.48, 4.48] holds 0
    assert math.isnan(d["boot_low"])  # 3 pairs: no bootstrap
    # differences 2, 2.5, 3: mean 2.5, s = 0.5 → [1.26, 3.74], which excludes 0
    d = S.paired_delta(pd.Series([42.0, 42.5, 43.0]), pd.Series([40.0, 40.0, 40.0]))
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((2.5 - 0.5 * half, 2.5 + 0.5 * half)) and d["sig"]
    # a seed missing on either side is not paired; one pair has no interval
    d = S.paired_delta(pd.Series([41.0, math.nan, 45.0]), pd.Series([40.0, 41.0]))
    assert d["n"] == 1 and d["delta"] == 1.0 and math.isnan(d["ci_low"]) and not d["sig"]
    assert S.paired_delta(pd.Series([1.0]), pd.Series([2.0], index=[5]))["n"] == 0


def test_describe_gives_mean_sample_std_n_and_the_t_interval():
    d = S.describe([30.0, 32.0, 34.0, None])
    assert (d["mean"], d["std"], d["n"]) == (32.0, 2.0, 3)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((32 - 2 * T_975_2 / math.sqrt(3), 32 + 2 * T_975_2 / math.sqrt(3)))
    one = S.describe([5.0])
    assert one["n"] == 1 and one["mean"] == 5.0 and math.isnan(one["std"]) and math.isnan(one["ci_low"])


def test_bootstrap_interval_from_five_values_is_scipys_bca_with_the_fixed_seed():
    assert all(math.isnan(v) for v in S.bootstrap_interval([1.0, 2.0, 3.0, 4.0]))
    x = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    lo, hi = S.bootstrap_interval(x)
    ref = stats.bootstrap((x,), np.mean, confidence_level=0.95,
                          **{S._BOOTSTRAP_RNG: np.random.default_rng(S.BOOTSTRAP_SEED)}).confidence_interval
    assert (lo, hi) == (ref.low, ref.high) and 1.0 <= lo < x.mean() < hi <= 6.0
    assert S.bootstrap_interval(x) == (lo, hi)  # the same numbers every time
    assert S.bootstrap_interval([2.0] * 5) == (2.0, 2.0)


def test_ablation_table_marks_a_delta_whose_ci_excludes_zero(tmp_path):
    """3 seeds; Δ vs the row above and vs source-only, each paired: the mark follows the t interval."""
    root = final_scores_study(tmp_path / "mark", ["source-only", "warmup", "st"],
                              {"source-only": [30.0, 32.0, 34.0], "warmup": [32.0, 34.5, 37.0],
                               "st": [33.0, 36.5, 38.0]})
    t = R.ablation_table(R.collect(root))
    assert list(t[0]) == ["variant", "mIoU", R.CI, "Δ vs row above", "Δ vs source-only", "seeds"]
    assert [(r["Δ vs row above"], r["Δ vs source-only"]) for r in t] == [
        ("–", "–"),
        ("+2.50 [+1.26, +3.74]*", "+2.50 [+1.26, +3.74]*"),  # 2, 2.5, 3: the std of the means hides it
        ("+1.33 [-0.10, +2.77]", "+3.83 [+1.94, +5.73]*")]  # 1, 2, 1 (holds 0); 3, 4.5, 4
    assert t[1]["mIoU"] == "34.50 ± 2.50 (n=3)" and t[0][R.CI] == "[27.03, 36.97]"  # the CIs of the rows overlap
    st = R.ablation_table(R.collect(root), numeric=True)
    ref = stats.ttest_rel([33.0, 36.5, 38.0], [32.0, 34.5, 37.0]).confidence_interval(0.95)
    assert st.loc[2, ["vs_above_ci_low", "vs_above_ci_high"]].tolist() == pytest.approx([ref.low, ref.high])
    assert st["vs_base_sig"].tolist() == [False, True, True] and set(st["base"]) == {"source-only"}
    assert "Δ vs row above" + R.BOOT not in t[0]  # 3 seeds: no bootstrap columns


def test_bootstrap_columns_appear_from_five_paired_seeds(tmp_path):
    root = final_scores_study(tmp_path / "boot", ["source-only", "warmup"],
                              {"source-only": [30.0] * 5, "warmup": [31.0, 32.0, 33.0, 34.0, 36.0]})
    (_, row) = R.ablation_table(R.collect(root))
    lo, hi = S.bootstrap_interval([1.0, 2.0, 3.0, 4.0, 6.0])
    assert row["Δ vs source-only" + R.BOOT] == f"[{lo:+.2f}, {hi:+.2f}]*"
    assert row["Δ vs source-only"].startswith("+3.20 [") and row["Δ vs source-only"].endswith("]*")
    assert "Δ vs source-only" + R.BOOT in R.render(R.ablation_table(R.collect(root)))


def test_per_class_stats_on_request_only(study):
    df = R.collect(study)
    rows = R.per_class_stats(df)
    assert [(r["class"], r["variant"]) for r in rows[:3]] == [("road", "warmup"), ("road", "st"), ("road", "pd+sl")]
    # road = mIoU + 40 for every seed: the same statistics as the mIoU, shifted
    assert rows[2] == {"class": "road", "variant": "pd+sl", "IoU": "83.00 ± 1.41 (n=2)", R.CI: "[70.29, 95.71]",
                       "Δ vs row above": "+6.00 [–]", "Δ vs first row": "+10.50 [-8.56, +29.56]"}
    assert rows[-1]["IoU"] == "–" and rows[-1]["Δ vs first row"] == "–"  # building: never evaluated
    assert "statistics over seeds" not in R.report(study, write=False)
    assert "### Per-class IoU: statistics over seeds" in R.report(study, write=False, stats=True)
    num = R.per_class_stats(df, numeric=True)
    assert num.loc[num["class"] == "sidewalk", "iou_mean"].tolist() == [22.0, 28.0, 33.0]


def test_csv_carries_the_statistics_as_numeric_columns(study):
    text = R.report(study, fmt="csv", write=False, stats=True)
    section = text.split("# Ablation\n", 1)[1].split("\n\n", 1)[0]
    ab = pd.read_csv(io.StringIO(section))
    for col in ("miou_mean", "miou_std", "miou_n", "miou_ci_low", "miou_ci_high", "vs_above_delta", "vs_above_ci_low",
                "vs_base_delta", "vs_base_n", "vs_base_ci_low", "vs_base_ci_high", "vs_base_boot_low", "vs_base_sig"):
        assert col in ab.columns
    assert ab["miou_ci_low"].dtype == float and ab["miou_n"].tolist() == [3, 1, 2]
    assert ab.loc[2, "vs_base_delta"] == 10.5 and ab.loc[2, "vs_base_ci_high"] == pytest.approx(10.5 + 12.7062047 * 1.5)
    assert math.isnan(ab.loc[1, "miou_ci_low"])  # one seed: no interval
    assert "# Per-class IoU: statistics over seeds" in text and "iou_ci_low" in text


def test_parquet_keeps_the_per_seed_values_to_recompute_a_delta(study):
    """From results.parquet alone: each row's score at its final node's last eval step, by seed, and the
    paired Δ of pd+sl against the warm-up as the table has it."""
    df = pq.read_table(R.write_parquet(study)).to_pandas()
    fin = df[df["is_final"] & (df["status"] == "done") & df["step"].notna()]
    last = fin[fin["step"] == fin.groupby("row")["step"].transform("max")]
    per_seed = last.drop_duplicates("row").pivot(index="seed", columns="variant", values="miou")
    both = per_seed[["pd+sl", "warmup"]].dropna()
    assert both.index.tolist() == [0, 1]
    ci = stats.ttest_rel(both["pd+sl"], both["warmup"]).confidence_interval(0.95)
    st = R.ablation_table(df, numeric=True).set_index("variant")
    assert st.loc["pd+sl", "vs_base_delta"] == (both["pd+sl"] - both["warmup"]).mean()
    assert st.loc["pd+sl", ["vs_base_ci_low", "vs_base_ci_high"]].tolist() == pytest.approx([ci.low, ci.high])


def test_cli_stats_flag(study):
    out = subprocess.run([sys.executable, "experiments/results.py", str(study), "--no-write", "--stats"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "### Per-class IoU: statistics over seeds" in out.stdout and "| road     | pd+sl " in out.stdout
    assert R.NOTE in out.stdout
