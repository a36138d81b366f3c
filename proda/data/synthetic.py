"""The embedded synthetic domain-shift benchmark: procedural street scenes with the 19 Cityscapes classes.

A scene is a pinhole view down a street (vanishing point at ``(h0, vx)``): sky, a distant skyline,
road and sidewalks on the ground plane, façades (buildings, trees) on two vertical planes, walls and
fences along the sidewalks, then objects drawn far to near — vehicles, persons, riders, bicycles,
motorcycles, poles with traffic signs and lights, trees. Objects shrink towards the horizon.

* ``source`` — "rendered" (GTA5-like): saturated flat colours, sharp edges, almost no noise.
* ``target`` — "real" (Cityscapes-like): another, muted palette; a warm tint of the whole domain, darker
  exposure; per-image colour cast, saturation, brightness and gamma; texture, haze, blur and sensor noise;
  other class frequencies (more persons, bicycles, trees; fewer trucks, buses, walls). Within a domain some classes share colours (building /
  wall, grey building / overcast sky, glass / sky, green truck / vegetation), and the target moves the
  source's colours, so colour alone misleads: a model needs shape, position and context.

The drawing lives in :mod:`proda.data.synthetic_scene`; this module holds the sizes, the splits, the
cache and the Dataset. Labels are Cityscapes train ids 0..18 for every pixel (no 255). Sizes and the default training budget
were measured: ``benchmarks/RESULTS.md`` ("Domain gap of the embedded benchmark"; its script, removed since, is
``git show 79e4893:benchmarks/domain_gap.py``).

Every image is drawn from its own ``numpy`` Generator seeded by ``(seed, domain, split, index)``: an
image does not depend on how many are generated. :func:`load_split` caches arrays under
``$PRODA_CACHE/synthetic/<version>-<hash of height, width, seed>/`` (atomic writes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from proda.checkpoint import atomic_write
from proda.config import SYNTHETIC_VERSION  # noqa: F401 - re-exported: caches are keyed by it
from proda.data.synthetic_scene import render

DOMAINS = {"source": ("train", "val"), "target": ("train", "val")}
_DOMAIN_ID = {"source": 0, "target": 1}
_SPLIT_ID = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticSpec:
    """Image size, images per split, and the seed of the images (not of any training run)."""

    height: int = 64
    width: int = 128
    n_source_train: int = 2000
    n_target_train: int = 1000
    n_target_val: int = 500
    seed: int = 0
    n_source_val: int = 250

    def count(self, domain: str, split: str) -> int:
        return getattr(self, f"n_{domain}_{split}")

    def scaled(self, scale: float) -> SyntheticSpec:
        """This spec with every split's image count × ``scale``, at least 8 (``data.synthetic_scale``)."""
        return dataclasses.replace(self, **{f.name: max(8, round(getattr(self, f.name) * scale))
                                            for f in dataclasses.fields(self) if f.name.startswith("n_")})


# --- public API -----------------------------------------------------------------------------------
def _check(domain: str, split: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"domain={domain!r}: must be one of {sorted(DOMAINS)}")
    if split not in DOMAINS[domain]:
        raise ValueError(f"split={split!r}: must be one of {list(DOMAINS[domain])} for domain {domain!r}")


def generate(spec: SyntheticSpec, domain: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw a split without caching: (images uint8 (N, 3, H, W), labels uint8 (N, H, W))."""
    _check(domain, split)
    n = spec.count(domain, split)
    images = np.empty((n, 3, spec.height, spec.width), np.uint8)
    labels = np.empty((n, spec.height, spec.width), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([spec.seed, _DOMAIN_ID[domain], _SPLIT_ID[split], i])
        images[i], labels[i] = render(rng, spec.height, spec.width, domain)
    return images, labels


def cache_folder(spec: SyntheticSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/`` or ``$PRODA_CACHE/synthetic/<version>-<hash>/``; images do not depend on counts."""
    if cache_dir is not None:
        return Path(cache_dir)
    root = Path(os.environ.get("PRODA_CACHE", Path.home() / ".cache" / "proda"))
    key = hashlib.sha1(repr((spec.height, spec.width, spec.seed)).encode()).hexdigest()[:10]
    return root / "synthetic" / f"{SYNTHETIC_VERSION}-{key}"


def load_split(domain: str, split: str, spec: SyntheticSpec = SyntheticSpec(),
               cache_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached :func:`generate`: (images uint8 (N, 3, H, W), labels uint8 (N, H, W)) as tensors."""
    _check(domain, split)
    folder = cache_folder(spec, cache_dir)
    stem = f"{domain}_{split}_{spec.count(domain, split)}_{spec.height}x{spec.width}_s{spec.seed}"
    if cache_dir is not None:  # an explicit folder holds no version/hash in its name: put them in the stem
        stem = f"{SYNTHETIC_VERSION}_{stem}"
    img_path, lbl_path = folder / f"{stem}_images.npy", folder / f"{stem}_labels.npy"
    if not (img_path.is_file() and lbl_path.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        images, labels = generate(spec, domain, split)
        atomic_write(img_path, lambda f: np.save(f, images))
        atomic_write(lbl_path, lambda f: np.save(f, labels))
        print(f"synthetic: generated {domain}/{split} ({len(labels)} images) in {time.perf_counter() - t0:.1f} s "
              f"-> {folder}", flush=True)
    return torch.from_numpy(np.load(img_path)), torch.from_numpy(np.load(lbl_path))


class SyntheticDataset(Dataset):
    """One split of the embedded benchmark; ``images``/``labels`` hold the whole split as uint8 tensors."""

    def __init__(self, domain: str, split: str = "train", spec: SyntheticSpec = SyntheticSpec(),
                 cache_dir: str | os.PathLike | None = None):
        self.domain, self.split, self.spec = domain, split, spec
        self.images, self.labels = load_split(domain, split, spec, cache_dir)  # (N, 3, H, W), (N, H, W)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i].float() / 255.0, "label": self.labels[i].long(),
                "name": f"synthetic-{self.domain}/{self.split}/{i:05d}"}
