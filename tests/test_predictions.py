"""The prediction strip of a study: final models of each variant on target-val images, Cityscapes colours."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from proda import checkpoint as ckpt
from proda.ablation.grid import AblationSpec, expand
from proda.ablation.predictions import colourise, palette, prediction_strip
from proda.config import Config
from proda.data.classes import PALETTE_19, class_names
from proda.engine.nodes import new_model

ROOT = Path(__file__).resolve().parents[1]


def test_colourise_uses_the_cityscapes_palette_and_blacks_out_ignore():
    lab = torch.tensor([[0, 1, 18], [255, 10, 13]])
    rgb = colourise(lab, 19)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 64, 128)  # road
    assert tuple(rgb[1, 1]) == (70, 130, 180)  # sky
    assert tuple(rgb[1, 2]) == (0, 0, 142)  # car
    assert tuple(rgb[1, 0]) == (0, 0, 0)  # ignore


def test_palette_of_the_16_class_protocol_follows_its_class_names():
    names19 = class_names(19)
    for name, colour in zip(class_names(16), palette(16)):
        assert tuple(colour) == tuple(PALETTE_19[names19.index(name)])


@pytest.fixture()
def strip_study(tmp_path, synthetic_cache):
    over = {"data.source_root": synthetic_cache, "data.target_root": synthetic_cache, "data.synthetic_scale": 0.05}
    plan = expand(AblationSpec(name="p", preset="smoke", variants=("source-only", "warmup"), seeds=(0, 1),
                               overrides=over))
    (tmp_path / "plan.json").write_text(plan.to_json())
    # finished final nodes for seed 1 of both variants and seed 0 of source-only only; untrained weights
    for r in plan.rows:
        if r.variant == "warmup" and r.seed == 0:
            continue
        d = tmp_path / "nodes" / r.final
        d.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(r.seed)
        ckpt.save(d / "model.pt", {"model": new_model(Config.from_dict(plan.nodes[r.final].config)).state_dict()})
        (d / "done.json").write_text(json.dumps({"miou": 1.0}))
    return tmp_path


def test_strip_shows_each_variant_of_the_chosen_seed_and_names_the_missing(strip_study):
    s = prediction_strip(strip_study, n_images=3, seed=0)
    assert s.images.shape[0] == 3 and s.images.shape[-1] == 3 and s.images.dtype == np.uint8
    assert s.truth.shape == s.images.shape
    assert s.columns == ["source-only (seed 0)"] and s.missing == ["warmup (seed 0)"]
    colours = {tuple(c) for c in PALETTE_19} | {(0, 0, 0)}
    assert {tuple(c) for c in s.predictions[0].reshape(-1, 3)} <= colours
    assert {tuple(c) for c in s.truth.reshape(-1, 3)} <= colours


def test_strip_defaults_to_each_variants_smallest_finished_seed(strip_study):
    s = prediction_strip(strip_study, n_images=2)
    assert s.columns == ["source-only (seed 0)", "warmup (seed 1)"] and s.missing == []
    assert not np.array_equal(s.predictions[0], s.predictions[1])  # different weights, different pictures


def test_strip_of_a_study_with_nothing_finished_says_so(tmp_path):
    plan = expand(AblationSpec(name="e", preset="smoke", variants=("source-only",), seeds=(0,)))
    (tmp_path / "plan.json").write_text(plan.to_json())
    with pytest.raises(FileNotFoundError, match="no row has a finished final node"):
        prediction_strip(tmp_path)


def test_results_cli_writes_the_strip_png(strip_study, tmp_path):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("results_cli", ROOT / "experiments" / "results.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main([str(strip_study), "--plot", str(tmp_path / "png"), "--no-write", "--strip-images", "2"]) == 0
    png = tmp_path / "png" / "predictions.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
