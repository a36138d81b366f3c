"""Data for the training loop: splits resized to ``data.full_size`` and a resumable, sharded batch stream.

The stream's order depends only on (seed, epoch): rank r of W takes every W-th index of the epoch's
permutation (a DistributedSampler without its hidden state), so a checkpoint needs just (epoch,
position) to resume the exact same batches.

Real datasets are read by a :class:`torch.utils.data.DataLoader` with ``data.num_workers`` worker
processes: they decode the PNGs (torchvision's decoders), resize to ``data.full_size`` and ship uint8
batches, ``prefetch_factor`` batches each ahead of the training thread, into pinned memory on CUDA. The
batches stay uint8 until :func:`to_device` has copied them (a quarter of float32's bytes, non-blocking
from the pinned buffer) and converts them there: the training thread only receives them. The
loader is fed the stream's own index batches (its ``batch_sampler``) from the current (epoch, position)
on, and an item depends on its index only, so what it delivers is the same with 0 or N workers and
after a resume. The embedded benchmark is held in memory and indexed directly (no loader, no workers).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from proda import distributed as ddp
from proda.config import Config
from proda.data.readers import DataError


@dataclass
class Split:
    """One split of one domain. ``images`` (N,3,H,W) uint8 and ``labels`` (N,H,W) uint8 when held in
    memory (the embedded benchmark); otherwise ``dataset`` (a :class:`proda.data.LabelledImages`) is
    read by a DataLoader with ``num_workers`` processes, into pinned memory when ``pin_memory``."""

    name: str
    size: int
    full_size: tuple[int, int]
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    dataset: torch.utils.data.Dataset | None = None
    num_workers: int = 0
    pin_memory: bool = False
    prefetch_factor: int = 2  # batches each worker has ready ahead of the training thread

    def get(self, idx: torch.Tensor, with_labels: bool = True, resize_labels: bool = True):
        """(images uint8 (n,3,H,W), labels uint8 (n,h,w) or None) for the indices ``idx``: a batch as the
        streams deliver it (:func:`to_device` makes it float in [0, 1] and int64)."""
        if self.images is not None:
            lab = self.labels[idx] if with_labels and self.labels is not None else None
            return self.images[idx], lab
        items = _Items(self.dataset, self.full_size, with_labels, resize_labels)  # one batch: in this thread
        _, img, lab = _collate([items[int(i)] for i in idx])
        return _checked(img), lab

    def loader(self, batches: Iterable[torch.Tensor], with_labels: bool = True,
               resize_labels: bool = True) -> DataLoader:
        """A DataLoader of a real dataset over the index batches ``batches`` (any iterable, endless
        included): yields (indices (n,), images uint8 (n,3,H,W), labels uint8 (n,h,w) or None)."""
        items = _Items(self.dataset, self.full_size, with_labels, resize_labels)
        workers = self.num_workers
        return DataLoader(items, batch_sampler=_Batches(batches), num_workers=workers, collate_fn=_collate,
                          pin_memory=self.pin_memory, prefetch_factor=self.prefetch_factor if workers else None,
                          worker_init_fn=_one_thread if workers else None,
                          # its own generator: creating an iterator must not draw from the global RNG
                          generator=torch.Generator().manual_seed(0))


class _Batches:
    """A ``batch_sampler`` over given index batches (``DataLoader`` asks for an iterable of lists)."""

    def __init__(self, batches: Iterable[torch.Tensor]):
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return (b.tolist() for b in self.batches)


class _Items(torch.utils.data.Dataset):
    """Index → (index, image uint8 (3,H,W) at full size, label uint8 (full size, or the file's own
    size when not ``resize_labels``) or None): the work a loader worker does for one item."""

    def __init__(self, dataset, full_size, with_labels: bool, resize_labels: bool):
        self.dataset, self.full_size = dataset, tuple(full_size)
        self.with_labels, self.resize_labels = with_labels, resize_labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:  # without labels the reader does not decode the label file
            img, lab = self.dataset.read(i, label=self.with_labels)  # (3, H, W) uint8, (H, W) uint8 or None
        except DataError as e:  # shipped as a value: a worker's own exception would come back with its traceback
            return i, e, None
        if tuple(img.shape[-2:]) != self.full_size:
            # uint8 in, uint8 out (round half up): the vectorised CPU kernel torchvision's resize uses
            img = F.interpolate(img[None], size=self.full_size, mode="bilinear", align_corners=False,
                                antialias=True)[0]
        if not self.with_labels:
            return i, img, None
        if self.resize_labels and tuple(lab.shape) != self.full_size:
            lab = F.interpolate(lab[None, None], size=self.full_size, mode="nearest")[0, 0]
        return i, img, lab


def _collate(items):
    """(indices, images, labels or None); a reader's error (caught in the worker) travels as the batch's
    images and is raised by :func:`_checked` in the training process, as the reader's one line."""
    errors = [it[1] for it in items if isinstance(it[1], DataError)]
    if errors:
        return None, errors[0], None
    idx = torch.tensor([it[0] for it in items], dtype=torch.int64)
    img = torch.stack([it[1] for it in items])
    lab = None if items[0][2] is None else torch.stack([it[2] for it in items])
    return idx, img, lab


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # N workers × 1 thread: no oversubscription of the node's cores


def _checked(img: torch.Tensor | DataError) -> torch.Tensor:
    if isinstance(img, DataError):
        raise img
    return img


# x / 255 in float32 for every uint8 x, divided on the CPU: (256,)
_UNIT = torch.arange(256, dtype=torch.float32).div_(255.0)


@functools.lru_cache(maxsize=None)
def _unit_table(device: torch.device) -> torch.Tensor:
    return _UNIT.to(device)  # once per device: a copy from pageable memory would wait for the device


def unit_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) → float32 x / 255 in [0, 1], the same bits on every device.

    On the CPU the division itself; elsewhere a gather from the CPU's table of the 256 quotients: CUDA
    divides by a Python scalar as a multiply by its reciprocal, one ulp off x / 255 for 126 of the 256
    values (tests/test_input_pipeline.py counts them on the CPU), and a gather does no arithmetic."""
    if img.device.type == "cpu":
        return img.float().div_(255.0)
    return _unit_table(img.device).index_select(0, img.reshape(-1).int()).view(img.shape)


def to_device(img: torch.Tensor, lab: torch.Tensor | None, device: torch.device):
    """A batch's trip to ``device``: uint8 images (n,3,H,W) and uint8 labels (n,h,w) or None, as
    :class:`BatchStream` and :func:`eval_batches` deliver them (pinned on CUDA), copied non-blocking
    and converted there → (images float32 in [0, 1], labels int64 or None). On the CPU: no copy."""
    img = unit_float(img.to(device, non_blocking=True))
    return img, None if lab is None else lab.to(device, non_blocking=True).long()


def synthetic_spec(cfg: Config):
    """The embedded benchmark's spec for ``cfg``: default size × ``data.synthetic_scale``."""
    from proda.data.synthetic import SyntheticSpec

    return SyntheticSpec(seed=cfg.data.synthetic_seed).scaled(cfg.data.synthetic_scale)


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
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    return Split(f"{name}/{split}", len(ds), d.full_size, dataset=ds, num_workers=d.num_workers, pin_memory=cuda)


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
    """Endless, sharded, resumable batches of a :class:`Split` (indices drawn without replacement per epoch).

    (epoch, pos) counts the batches handed out by :meth:`next`; a real dataset's loader reads ahead of
    it, from a copy of the order started at that point, and is restarted there after a resume.
    """

    def __init__(self, split: Split, batch_size: int, seed: int, with_labels: bool = True,
                 batch_field: str = "data.batch_size"):
        """``batch_field``: the config field the batch comes from, named when the split is too small."""
        self.split, self.batch_size, self.seed, self.with_labels = split, batch_size, seed, with_labels
        self.epoch, self.pos = 0, 0
        self._order: torch.Tensor | None = None
        self._loaded: Iterator | None = None  # the loader's iterator (real datasets), from (epoch, pos)
        per_rank = split.size // ddp.world_size()
        if per_rank < batch_size:
            raise ValueError(
                f"{batch_field}: {split.name} has {split.size} images, too few for {batch_size} per rank "
                f"on {ddp.world_size()} ranks (lower {batch_field} or give the split more images)"
            )

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.split.size, generator=g)
        w = ddp.world_size()
        per_rank = self.split.size // w
        return perm[ddp.rank():per_rank * w:w]  # (per_rank,) this rank's share

    def _batches(self, epoch: int, pos: int) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Endless (epoch, pos, indices) from (epoch, pos) on; an epoch's last partial batch is dropped."""
        per_epoch = (self.split.size // ddp.world_size()) // self.batch_size
        while True:
            order = self._epoch_order(epoch)
            for p in range(pos, per_epoch):
                yield epoch, p, order[p * self.batch_size:(p + 1) * self.batch_size]
            epoch, pos = epoch + 1, 0

    def next_indices(self) -> torch.Tensor:
        per_epoch = (self.split.size // ddp.world_size()) // self.batch_size
        if self.pos >= per_epoch:
            self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self._epoch_order(self.epoch)
        idx = self._order[self.pos * self.batch_size:(self.pos + 1) * self.batch_size]
        self.pos += 1
        return idx

    def next(self):
        """(indices (n,), images uint8 (n,3,H,W), labels uint8 (n,H,W) or None), in pinned memory when
        the split's loader pins (CUDA); :func:`to_device` moves them and makes them float / int64."""
        if self.split.images is not None:  # in memory: index it, no loader
            idx = self.next_indices()
            img, lab = self.split.get(idx, with_labels=self.with_labels)
            return idx, img, lab
        if self._loaded is None:
            batches = (b for _, _, b in self._batches(self.epoch, self.pos))
            self._loaded = iter(self.split.loader(batches, self.with_labels))
        want = self.next_indices()
        idx, img, lab = next(self._loaded)
        img = _checked(img)
        if not torch.equal(idx, want):  # the loader follows the stream's order, always
            raise RuntimeError(f"{self.split.name}: loader delivered {idx.tolist()}, expected {want.tolist()}")
        return idx, img, lab

    def close(self) -> None:
        """Stops the loader's workers (they are also stopped when the stream is garbage-collected)."""
        self._loaded = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.pos, self._order = int(st["epoch"]), int(st["pos"]), None
        self.close()  # the loader read ahead from the old position: start it again at the new one


def eval_batches(split: Split, batch_size: int, max_images: int | None = None):
    """This rank's shard of a split in order, for evaluation and pseudo-labelling: yields (indices, images
    uint8, labels uint8 at the files' size) as :meth:`BatchStream.next` does; :func:`to_device` converts."""
    n = split.size if max_images is None else min(split.size, max_images)
    idx_all = torch.arange(ddp.rank(), n, ddp.world_size())
    batches = [idx_all[s:s + batch_size] for s in range(0, len(idx_all), batch_size)]
    if split.images is not None:
        for idx in batches:
            img, lab = split.get(idx, with_labels=split.labels is not None, resize_labels=False)
            yield idx, img, lab
        return
    for idx, img, lab in split.loader(batches, with_labels=True, resize_labels=False):
        yield idx, _checked(img), lab
