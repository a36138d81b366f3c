"""Example predictions of a study's rows on target val, coloured with the Cityscapes palette.

For each row group (variant × swept values) the final node of one seed is loaded (its ``model.pt``) and run
on the first ``n_images`` target-val images; the result is a grid of RGB arrays: per image the input, the
ground truth, then one prediction per group. Rows whose final node is not done are left out and named.
Runs the models, on CPU; :mod:`proda.ablation.results` only reads the study folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from proda.ablation import study
from proda.config import Config
from proda.data.classes import IGNORE_INDEX, PALETTE_19, protocol_class_ids
from proda.data.stream import eval_batches, open_split, to_device
from proda.engine.nodes import load_model
from proda.engine.trainer import predict


@dataclass
class Strip:
    images: np.ndarray  # (n, H, W, 3) uint8
    truth: np.ndarray  # (n, H, W, 3) uint8, ignore pixels black
    columns: list[str] = field(default_factory=list)  # one per prediction column: "variant [axes] (seed s)"
    predictions: list[np.ndarray] = field(default_factory=list)  # each (n, H, W, 3) uint8
    missing: list[str] = field(default_factory=list)  # groups without a finished final node


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB of the protocol's classes (the Cityscapes colours)."""
    return PALETTE_19[list(protocol_class_ids(num_classes))]


def colourise(labels: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """Train ids (…, H, W) → RGB uint8 (…, H, W, 3); ids outside the protocol (ignore 255) are black."""
    lab = np.asarray(labels, dtype=np.int64)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:num_classes] = palette(num_classes)
    return lut[np.where((lab >= 0) & (lab < 256), lab, IGNORE_INDEX)]


def _label(variant: str, axes: dict, seed: int) -> str:
    extra = " ".join(f"{k.split('.')[-1]}={v}" for k, v in axes.items())
    return f"{variant}{' ' + extra if extra else ''} (seed {seed})"


@torch.no_grad()
def prediction_strip(study_dir: str | Path, n_images: int = 4, seed: int | None = None) -> Strip:
    """Predictions of every row group's final model on the first ``n_images`` target-val images.

    ``seed``: the seed whose models are shown (default: the smallest seed each group has finished)."""
    study_dir = Path(study_dir)
    plan = study.load_plan(study_dir)
    groups: dict[tuple, list] = {}
    for row in plan.rows:
        groups.setdefault((row.variant, tuple(sorted(row.axes.items()))), []).append(row)
    missing: list[str] = []
    chosen = []  # (label, row) of each group with a finished final node
    for (variant, axes), rows in groups.items():
        done = sorted((r for r in rows if (seed is None or r.seed == seed)
                       and study.node_status(study_dir, r.final) == "done"), key=lambda r: r.seed)
        if done:
            chosen.append((_label(variant, dict(axes), done[0].seed), done[0]))
        else:
            missing.append(_label(variant, dict(axes), seed if seed is not None else min(r.seed for r in rows)))
    if not chosen:
        raise FileNotFoundError(f"{study_dir}: no row has a finished final node (model.pt) to predict with")
    cfg0 = Config.from_dict(plan.nodes[chosen[0][1].final].config)
    k = cfg0.data.num_classes
    _, img, lab = next(eval_batches(open_split(cfg0, "target", "val"), n_images, n_images))
    img, lab = to_device(img, lab, torch.device("cpu"))  # float in [0, 1], int64
    size = tuple(img.shape[-2:])  # real data: labels at their own size, images at full_size → show at full_size
    lab = F.interpolate(lab[:, None].float(), size=size, mode="nearest")[:, 0].long()
    strip = Strip(images=(img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
                  truth=colourise(lab, k), missing=missing)
    for label, row in chosen:
        cfg = Config.from_dict(plan.nodes[row.final].config)
        model = load_model(cfg, study.node_dir(study_dir, row.final)).eval()
        strip.columns.append(label)
        strip.predictions.append(colourise(predict(model, img, size), k))
    return strip
