"""Smoke studies on the real datasets' on-disk layouts: `experiments/ablation.py --dataset gta5|synthia
--data-root DIR` on the session's Ray, over tiny trees written by tests/trees.py (GTA5 → Cityscapes reports
the 19 classes and mIoU; SYNTHIA → Cityscapes the 16 classes, mIoU over 16 and mIoU* over 13)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.io import ImageReadMode, decode_png, read_file

import trees
from proda.chain import NODE_SECTIONS
from proda.data import open_dataset
from proda.data.classes import SYNTHIA_CLASSES, class_names

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]

# every node kind once: ssl (the students start from it), the source and the adversarial warm-up, the warm-up
# continued (warmup+), pseudo labels, stage 1 and one distillation round — 8 nodes of a few steps each, on
# 32×64 images; ssl.batch_size 4, as the trees hold 8 images per split (the smoke preset's 32 takes 16 per domain)
SMOKE_GRID = {
    "name": "real-smoke", "preset": "smoke", "seeds": [0],
    "variants": {"source-only": {}, "warmup+": {}, "proda-kd1": {"kd": 1}},
    "overrides": {"data.full_size": [32, 64], "data.crop": [32, 64], "data.batch_size": 2, "warmup.steps": 2,
                  "stage1.steps": 2, "distill.steps": 2, "ssl.steps": 2, "ssl.batch_size": 4,
                  "ssl.view_size": [16, 32], "eval.batch_size": 4, "checkpoint_interval": 2, "log_interval": 1},
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    trees.make_gta5(root / "gta5")
    trees.make_synthia(root / "synthia")
    trees.make_cityscapes(root / "cityscapes")
    return root


def _raw_ids(folder: Path) -> set[int]:
    """Every id in the label PNGs under ``folder``, as stored (palette indices, the first channel of SYNTHIA's
    16-bit labels, Cityscapes label ids) — decoded here, not by the readers under test."""
    return {int(v) for p in folder.rglob("*.png")
            for v in decode_png(read_file(str(p)), ImageReadMode.UNCHANGED)[0].int().unique()}


def _classes(name: str, root: Path, num_classes: int, split: str = "train") -> set[str]:
    """The names of the classes that occur in a split, read through the reader (protocol indices)."""
    ds = open_dataset(name, root, split=split, num_classes=num_classes)
    ids = torch.cat([ds[i]["label"].flatten() for i in range(len(ds))]).unique().tolist()
    return {class_names(num_classes)[i] for i in ids if i != 255}


def test_the_trees_hold_every_label_id_of_their_tables_bicycle_and_motorcycle_included(data_root):
    # as stored: every Cityscapes label id (0..33 and 255 void) in GTA5's and Cityscapes' labels, every
    # SYNTHIA class id (0..22) in SYNTHIA's
    assert _raw_ids(data_root / "gta5" / "labels") == set(trees.CITYSCAPES_IDS) == {*range(34), 255}
    assert _raw_ids(data_root / "cityscapes" / "gtFine" / "train") == set(trees.CITYSCAPES_IDS)
    assert _raw_ids(data_root / "cityscapes" / "gtFine" / "val") == set(trees.CITYSCAPES_IDS)
    assert _raw_ids(data_root / "synthia" / "GT" / "LABELS") == set(range(len(SYNTHIA_CLASSES)))
    # as read: every class of the study's table, bicycle and motorcycle included (the last two of both
    # tables, the ids a SYNTHIA run once died on)
    for name, num_classes, split in (("gta5", 19, "train"), ("cityscapes", 19, "train"), ("cityscapes", 19, "val"),
                                     ("synthia", 16, "train"), ("cityscapes", 16, "train"), ("cityscapes", 16, "val")):
        present = _classes(name, data_root / name, num_classes, split)
        assert present == set(class_names(num_classes)), (name, num_classes, split)
        assert {"bicycle", "motorcycle"} <= present


def _header(out: str, title: str) -> list[str]:
    """The column names of the markdown table printed under ``### title``."""
    lines = out.split(f"### {title}\n", 1)[1].lstrip("\n").splitlines()
    return [c.strip() for c in lines[0].strip().strip("|").split("|")]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("dataset, means", [("gta5", ["mIoU"]),
                                            ("synthia", ["mIoU (16 classes)", "mIoU* (13 classes)"])])
def test_a_smoke_study_on_real_layouts_runs_every_node_and_reports_the_datasets_classes(
        dataset, means, data_root, tmp_path, ray_address):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(SMOKE_GRID))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}  # with ray.init's RAY_AUTH_MODE
    run = subprocess.run([sys.executable, "experiments/ablation.py", "--grid", str(grid), "--dataset", dataset,
                          "--data-root", str(data_root), "--storage", str(tmp_path), "--address", ray_address],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    study = tmp_path / SMOKE_GRID["name"]
    plan = json.loads((study / "plan.json").read_text())
    assert sorted({n["kind"] for n in plan["nodes"].values()}) == sorted(NODE_SECTIONS)  # every kind ran
    assert "nodes: 8 done, 0 running, 0 failed, 0 missing (8 in all)" in out
    assert all((study / "nodes" / i / "done.json").is_file() for i in plan["nodes"])
    num_classes = {"gta5": 19, "synthia": 16}[dataset]
    assert {n["config"]["data"]["num_classes"] for n in plan["nodes"].values()} == {num_classes}
    cis = {"mIoU": "95 % CI", "mIoU (16 classes)": "95 % CI", "mIoU* (13 classes)": "95 % CI (mIoU*)"}
    assert _header(out, "Ablation") == ["variant", *(c for m in means for c in (m, cis[m])), "Δ vs row above",
                                        "Δ vs source-only", "seeds"]
    assert _header(out, "Per-class IoU") == ["variant", *class_names(num_classes), *means]
    for variant in ("source-only", "warmup+", "proda-kd1"):
        assert f"| {variant} " in out
    _tune_tables_and_tensorboard_explain_themselves(study, plan, num_classes, out)


def _tune_tables_and_tensorboard_explain_themselves(study: Path, plan: dict, num_classes: int, out: str):
    """Tune's own tables, read without proda: each trial's config carries its node's seed, rows, variants and
    stage switches as flat keys; each node reported its learning curve (one result per log step) and mIoU with
    per-class IoU; and each node's curves are TensorBoard event files under the study folder, named."""
    from ray import tune
    from ray.tune import ExperimentAnalysis

    from conftest import tensorboard_scalars
    from proda.ablation.runner import _node_trial  # Tuner.restore asks for the trainable it ran

    (exp,) = (study / "tune").glob("study-*")
    df = tune.Tuner.restore(str(exp), trainable=_node_trial).get_results().get_dataframe()
    assert {f"config/{k}" for k in ("node_id", "node", "kind", "seed", "rows", "variants", "final_of",
                                    "st", "sce", "pd", "sl", "reg", "kd")} <= set(df.columns)
    assert sorted(df["config/node_id"]) == sorted(plan["nodes"])
    assert all(df["config/seed"] == [plan["nodes"][i]["seed"] for i in df["config/node_id"]])
    # group by variant and seed: each row of the study once, its score the mIoU of the node it ends at
    finals = df.explode("config/final_of").dropna(subset=["config/final_of"])
    assert sorted(finals["config/final_of"]) == ["proda-kd1 seed0", "source-only seed0", "warmup+ seed0"]
    per_variant = df.explode("config/variants").groupby(["config/variants", "config/seed"])["config/node_id"].size()
    assert per_variant.to_dict() == {(r["variant"], r["seed"]): len(r["nodes"]) for r in plan["rows"]}
    assert df[df["config/final_of"].map(lambda rows: "proda-kd1 seed0" in rows)]["config/kd"].tolist() == [1]
    # every result of every node: more than one per node, the training nodes' curves at each log step
    # (log_interval 1), mIoU and every class's IoU at every evaluation
    classes = [f"iou/{c}" for c in class_names(num_classes)]
    analysis = ExperimentAnalysis(str(exp))
    for t in analysis.trials:
        rows = analysis.trial_dataframes[t.trial_id]
        assert len(rows) > 1, t
        if t.config["kind"] == "pseudo":
            # the confident labels' accuracy is NaN on these tiny trees (no pixel reaches 0.9), every pixel's is not
            assert "pseudo_label_accuracy" in rows and rows["pseudo_label_accuracy_all"].between(0, 100).all()
            continue
        train = rows[rows["kind"] == "train"]  # every node kind trains for 2 steps here
        assert list(train["step"]) == [1, 2] and (train["images_per_s"] > 0).all(), t
        if t.config["kind"] != "ssl":  # SimCLR has no evaluation
            evals = rows[rows["kind"] == "eval"]
            assert len(evals) >= 1 and evals[["miou", *classes]].notna().all().all(), t
            # Tune's progress.csv (its columns come from the first report, a train step) has them too
            import pandas as pd

            csv = pd.read_csv(Path(t.local_path) / "progress.csv")
            assert csv.loc[csv["kind"] == "eval", ["miou", *classes]].notna().all().all(), t
    # TensorBoard: one run per node under STUDY/tensorboard, named <node>-<variants>-seed<k>-<id8>, that parses
    runs = {p.name: p for p in (study / "tensorboard").iterdir()}
    assert sorted(r.rsplit("-", 1)[1] for r in runs) == sorted(i[:8] for i in plan["nodes"])
    for t in analysis.trials:
        name = f"{t.config['node']}-{','.join(t.config['variants'])}-seed{t.config['seed']}-{t.config['node_id'][:8]}"
        tags = tensorboard_scalars(runs[name])
        if t.config["kind"] == "pseudo":
            assert {"pseudo/pseudo_label_accuracy_all", "pseudo/pseudo_label_kept"} <= set(tags)
        else:
            assert [s for s, _ in tags["train/images_per_s"]] == [1, 2]
            # tensorboardX writes a tag's spaces as underscores: eval/iou/traffic_light
            evals = {"eval/miou", *(f"eval/{c}".replace(" ", "_") for c in classes)}
            assert t.config["kind"] == "ssl" or evals <= set(tags)
    assert f"tensorboard --logdir {study}" in out and "/tmp/ray/session" not in out
