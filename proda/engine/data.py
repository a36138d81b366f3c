"""Data for the training loop: splits resized to ``data.full_size`` and a resumable, sharded batch stream.

The stream's order depends only on (seed, epoch): rank r of W takes every W-th index of the epoch's
permutation (a DistributedSampler without its hidden state), so a checkpoint needs just (epoch,
position) to resume the exact same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from proda.config import Config
from proda.engine import distributed as ddp


@dataclass
class Split:
    """One split of one domain. ``images`` (N,3,H,W) uint8 and ``labels`` (N,H,W) uint8 when held in
    memory (the embedded benchmark); otherwise ``dataset`` is read on demand and resized."""

    name: str
    size: int
    full_size: tuple[int, int]
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    dataset: torch.utils.data.Dataset | None = None

    def get(self, idx: torch.Tensor, with_labels: bool = True, resize_labels: bool = True):
        """(images float (n,3,H,W) in [0,1], labels int64 (n,h,w) or None) for the indices ``idx``."""
        if self.images is not None:
            img = self.images[idx].float().div_(255.0)
            lab = self.labels[idx].long() if with_labels and self.labels is not None else None
            return img, lab
        items = [self.dataset[int(i)] for i in idx]
        img = torch.stack([_resize_image(it["image"], self.full_size) for it in items])
        lab = None
        if with_labels:
            labs = [it["label"] for it in items]
            if resize_labels:
                labs = [_resize_label(lb, self.full_size) for lb in labs]
            lab = torch.stack(labs)
        return img, lab


def _resize_image(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _resize_label(lab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(lab.shape[-2:]) == tuple(size):
        return lab
    return F.interpolate(lab[None, None].float(), size=size, mode="nearest")[0, 0].long()


def synthetic_spec(cfg: Config):
    """The embedded benchmark's spec for ``cfg``: default size × ``data.synthetic_scale``."""
    import dataclasses

    from proda.data.synthetic import SyntheticSpec

    base = SyntheticSpec(seed=cfg.data.synthetic_seed)
    counts = {f.name: max(8, round(getattr(base, f.name) * cfg.data.synthetic_scale))
              for f in dataclasses.fields(base) if f.name.startswith("n_")}
    return dataclasses.replace(base, **counts)


def open_split(cfg: Config, domain: str, split: str) -> Split:
    """``domain`` is 'source' or 'target'; real datasets come from :func:`proda.data.open_dataset`."""
    d = cfg.data
    name = d.source if domain == "source" else d.target
    root = d.source_root if domain == "source" else d.target_root
    if name.startswith("synthetic"):
        from proda.data.synthetic import SyntheticDataset

        ds = SyntheticDataset(domain, split, spec=synthetic_spec(cfg), cache_dir=root)
        images, labels = ds.images, ds.labels
        if tuple(images.shape[-2:]) != tuple(d.full_size):
            images = F.interpolate(images.float(), size=d.full_size, mode="bilinear", antialias=True,
                                   align_corners=False).round().clamp(0, 255).to(torch.uint8)
            labels = F.interpolate(labels[:, None].float(), size=d.full_size, mode="nearest")[:, 0].to(torch.uint8)
        return Split(f"{name}/{split}", len(images), d.full_size, images=images, labels=labels)
    ds = _open_real(cfg, domain, split)
    return Split(f"{name}/{split}", len(ds), d.full_size, dataset=ds)


def _open_real(cfg: Config, domain: str, split: str):
    from proda.data import open_dataset

    d = cfg.data
    name, root = (d.source, d.source_root) if domain == "source" else (d.target, d.target_root)
    if root is None:
        raise ValueError(f"data.{domain}_root: required for dataset '{name}'")
    return open_dataset(name, root, split=split, num_classes=d.num_classes)


def check_data(cfg: Config) -> None:
    """Open every real dataset split a chain of ``cfg`` reads (layout) and check its files (complete PNGs,
    a sample read in full): a bad tree is one ``DataError`` line before training, not a failed node
    hours later. The embedded benchmark needs no check."""
    for domain, split in (("source", "train"), ("target", "train"), ("target", "val")):
        name = cfg.data.source if domain == "source" else cfg.data.target
        if not name.startswith("synthetic"):
            _open_real(cfg, domain, split).check_files()


class BatchStream:
    """Endless, sharded, resumable batches of a :class:`Split` (indices drawn without replacement per epoch)."""

    def __init__(self, split: Split, batch_size: int, seed: int, with_labels: bool = True):
        self.split, self.batch_size, self.seed, self.with_labels = split, batch_size, seed, with_labels
        self.epoch, self.pos = 0, 0
        self._order: torch.Tensor | None = None
        per_rank = split.size // ddp.world_size()
        if per_rank < batch_size:
            raise ValueError(
                f"data.batch_size: {split.name} has {split.size} images, too few for {batch_size} per rank "
                f"on {ddp.world_size()} ranks"
            )

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.split.size, generator=g)
            w = ddp.world_size()
            per_rank = self.split.size // w
            self._order = perm[ddp.rank():per_rank * w:w]  # (per_rank,) this rank's share
        return self._order

    def next_indices(self) -> torch.Tensor:
        order = self._epoch_order()
        if (self.pos + 1) * self.batch_size > len(order):
            self.epoch, self.pos, self._order = self.epoch + 1, 0, None
            order = self._epoch_order()
        idx = order[self.pos * self.batch_size:(self.pos + 1) * self.batch_size]
        self.pos += 1
        return idx

    def next(self):
        """(indices (n,), images float (n,3,H,W), labels int64 (n,H,W) or None)."""
        idx = self.next_indices()
        img, lab = self.split.get(idx, with_labels=self.with_labels)
        return idx, img, lab

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.pos, self._order = int(st["epoch"]), int(st["pos"]), None


def eval_batches(split: Split, batch_size: int, max_images: int | None = None):
    """This rank's shard of a split in order, for evaluation and pseudo-labelling: yields (indices, images, labels)."""
    n = split.size if max_images is None else min(split.size, max_images)
    idx_all = torch.arange(ddp.rank(), n, ddp.world_size())
    for s in range(0, len(idx_all), batch_size):
        idx = idx_all[s:s + batch_size]
        img, lab = split.get(idx, with_labels=split.labels is not None or split.dataset is not None,
                             resize_labels=False)
        yield idx, img, lab
