"""Readers for GTA5, Cityscapes and SYNTHIA-RAND-CITYSCAPES, and :func:`open_dataset`, the one entry.

Items are ``{'image': (3, H, W) float32 in [0, 1] (not normalised), 'label': (H, W) int64 protocol indices
(19: the train ids; SYNTHIA's 16/13: positions in the protocol's class list; 255 = ignore), 'name': str}`` at the files' own resolution, without augmentation.
``name`` is the image's path relative to the dataset root, with ``/`` separators.

Layout problems are found in the constructor (cheap: directory listings only) and file problems when an
item is read; both raise :class:`DataError` with one line naming the file or folder and what was expected.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, decode_png, read_file

from .classes import (
    IGNORE_INDEX,
    LABEL_ID_MAX,
    LABEL_ID_TO_TRAIN_ID,
    SYNTHIA_ID_MAX,
    SYNTHIA_ID_TO_TRAIN_ID,
    protocol_lut,
)

DATASETS = ("gta5", "cityscapes", "synthia", "synthetic-source", "synthetic-target")


class DataError(ValueError):
    """A dataset's layout or one of its files is not what the reader expects."""


def _pngs(folder: Path) -> list[str]:
    """Sorted ``*.png`` file names in ``folder`` (one listdir, no stat per file)."""
    return sorted(e.name for e in os.scandir(folder) if e.name.endswith(".png") and e.is_file())


def _decode(path: Path, label: bool) -> torch.Tensor:
    """(C, H, W) uint8/uint16 tensor. Labels are decoded UNCHANGED: palette PNGs (GTA5) give their
    indices, 16-bit PNGs (SYNTHIA) their 16-bit values — PIL would silently read the latter as 8-bit."""
    try:
        data = read_file(str(path))
        return decode_png(data, ImageReadMode.UNCHANGED) if label else decode_image(data, ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        kind = "label" if label else "image"
        raise DataError(f"cannot read {kind} file '{path}': unreadable, truncated or corrupt "
                        f"({e.__class__.__name__}; expected a PNG)") from e


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last bytes of a complete PNG


def check_png(path: Path, full: bool = False) -> None:
    """A cheap completeness check of one PNG (two small reads): its signature, and an IEND chunk at its
    end — a file cut short by a crash or an interrupted copy has none. ``full``: also every chunk's CRC
    (reads the whole file; finds damage inside it before libpng does). :class:`DataError` otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read() if full else b""
            f.seek(0)
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError as e:
        raise DataError(f"cannot read file '{path}' ({e.strerror or e})") from None
    if head != _PNG_SIGNATURE:
        raise DataError(f"file '{path}' is not a PNG (expected a PNG image)")
    if _PNG_END not in tail:
        raise DataError(f"file '{path}' is truncated: it has no PNG end chunk (expected a complete PNG)")
    pos = 8
    while full and pos + 12 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body, crc = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n], data[pos + 8 + n:pos + 12 + n]
        if len(crc) < 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            raise DataError(f"file '{path}' is corrupt: the PNG chunk at byte {pos} fails its checksum "
                            f"(expected an intact PNG)")
        if kind == b"IEND":
            break
        pos += 12 + n


class LabelledImages(Dataset):
    """(image, label) file pairs under ``root``; subclasses give the layout and the id table.

    ``num_classes`` picks the protocol (19, or SYNTHIA's 16/13): labels are protocol indices
    (:func:`proda.data.classes.protocol_lut`) and the classes outside the protocol become 255.
    """

    layout = ""  # for messages: "GTA5 layout: images/, labels/"
    splits: tuple[str, ...] = ("train",)
    protocols: tuple[int, ...] = (19, 16, 13)
    id_lut: np.ndarray = LABEL_ID_TO_TRAIN_ID  # (256,) raw label id → train id
    max_id = LABEL_ID_MAX  # raw ids above this (other than void_id) belong to no class
    void_id: int | None = IGNORE_INDEX  # Cityscapes/GTA5 write 255 (id -1 as uint8) for "no class"
    label_channels: tuple[int, ...] = (1,)  # grey or palette; a colour PNG is the wrong file
    resize_label = False  # GTA5 only: labels of the wrong size are resized to the image (nearest)

    def __init__(self, root: str | os.PathLike, split: str = "train", num_classes: int = 19):
        if split not in self.splits:
            raise DataError(f"{type(self).__name__}: unknown split {split!r} (allowed: {', '.join(self.splits)})")
        if num_classes not in self.protocols:
            raise DataError(
                f"{type(self).__name__}: num_classes={num_classes} is not supported "
                f"(allowed: {', '.join(map(str, self.protocols))})"
            )
        self.root, self.split, self.num_classes = Path(root), split, num_classes
        if not self.root.is_dir():
            raise DataError(f"data.root '{self.root}' is not a folder (expected {self.layout})")
        self.pairs: list[tuple[Path, Path]] = self._find_pairs()
        if not self.pairs:
            raise DataError(f"data.root '{self.root}' has no images for split {split!r} (expected {self.layout})")
        # raw id → train id → protocol index, one (256,) uint8 table; indexing it maps a whole label at once.
        self.lut = torch.from_numpy(protocol_lut(num_classes)[self.id_lut].copy())

    # -- layout -----------------------------------------------------------------------------------

    def _find_pairs(self) -> list[tuple[Path, Path]]:
        raise NotImplementedError

    def _folder(self, rel: str) -> Path:
        path = self.root / rel
        if not path.is_dir():
            raise DataError(f"data.root '{self.root}' has no {rel}/ folder (expected {self.layout})")
        return path

    def _pair_up(self, images: Path, labels: Path, label_name, suffix: str = ".png") -> list[tuple[Path, Path]]:
        """Pairs ``images/x`` (names ending in ``suffix``) with ``labels/label_name(x)``; a missing
        label is an error."""
        present = set(_pngs(labels))
        pairs = []
        for name in (n for n in _pngs(images) if n.endswith(suffix)):
            lbl = label_name(name)
            if lbl not in present:
                raise DataError(f"image '{images / name}' has no label (expected '{labels / lbl}')")
            pairs.append((images / name, labels / lbl))
        return pairs

    # -- items ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img, label = self.read(index)
        name = self.pairs[index][0].relative_to(self.root).as_posix()
        return {"image": img.float().div_(255.0), "label": label.long(), "name": name}

    def read(self, index: int, label: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image (3, H, W) uint8, label (H, W) uint8 protocol indices, 255 = ignore) of item ``index``:
        what the input pipeline's workers ship (a quarter of the bytes of float / int64). With
        ``label=False`` the label file is not read (None): a stream that drops the labels."""
        img_path, lbl_path = self.pairs[index]
        img = _decode(img_path, label=False)  # (3, H, W) uint8 (uint16 for 16-bit PNGs)
        if img.dtype != torch.uint8:  # 16-bit RGB: to 8 bits, rounding (65535 / 255 = 257)
            img = img.to(torch.int32).add_(128).div_(257, rounding_mode="floor").to(torch.uint8)
        if not label:
            return img, None
        raw = _decode(lbl_path, label=True)  # (C, H', W'); the id is in channel 0
        if raw.shape[0] not in self.label_channels:
            raise DataError(f"label '{lbl_path}' has {raw.shape[0]} channels (expected {self._label_format()})")
        ids = raw[0].to(torch.int64)  # (H', W')
        bad = ids > self.max_id
        if self.void_id is not None:
            bad &= ids != self.void_id
        if bool(bad.any()):
            found = ids[bad].unique()[:5].tolist()  # sorted; a few are enough to recognise the file
            raise DataError(f"label '{lbl_path}' holds id {found[0]} outside the class table "
                            f"(ids found: {found}; expected {self._label_format()})")
        h, w = img.shape[-2:]
        if ids.shape != (h, w):
            if not self.resize_label:
                raise DataError(f"image '{img_path}' is {w}x{h} but its label '{lbl_path}' is "
                                f"{ids.shape[1]}x{ids.shape[0]} (expected the same size)")
            # nearest-exact samples pixel centres, as PIL's NEAREST resize in the official loader
            ids = F.interpolate(ids[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0].long()
        return img, self.lut[ids]  # (H, W) uint8 protocol indices, 255 = ignore / outside the protocol

    def check_files(self, decode: int = 8) -> None:
        """Before training: every file of every pair is a complete PNG (:func:`check_png`), and
        ``decode`` items spread over the dataset read in full (sizes, channels, label ids). A bad file
        deeper in the dataset is still named when its item is read."""
        for pair in self.pairs:
            for path in pair:
                check_png(path)
        n, m = len(self.pairs), min(decode, len(self.pairs))
        for i in sorted({round(k * (n - 1) / max(m - 1, 1)) for k in range(m)}):
            for path in self.pairs[i]:
                check_png(path, full=True)
            self[i]

    def _label_format(self) -> str:
        void = "" if self.void_id is None else f" or {self.void_id}"
        chans = "/".join(map(str, self.label_channels))
        return f"a {chans}-channel PNG of label ids 0..{self.max_id}{void}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root='{self.root}', split={self.split!r}, "
                f"num_classes={self.num_classes}, n={len(self)})")


class GTA5(LabelledImages):
    """GTA5 (Richter et al. 2016): ``images/*.png`` with ``labels/*.png`` of the same name, holding
    Cityscapes label ids (palette PNGs; the palette index is the id). One split, ``train`` (all of it).

    Some GTA5 labels are not the size of their image (a known defect of the release): such a label is
    resized to its image with nearest-neighbour sampling rather than rejected.
    """

    layout = "GTA5 layout: images/, labels/"
    resize_label = True

    def _find_pairs(self):
        return self._pair_up(self._folder("images"), self._folder("labels"), lambda n: n)


class Cityscapes(LabelledImages):
    """Cityscapes: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (label ids, mapped to train ids)."""

    layout = ("Cityscapes layout: leftImg8bit/<split>/<city>/*_leftImg8bit.png, "
              "gtFine/<split>/<city>/*_gtFine_labelIds.png")
    splits = ("train", "val", "test")

    def _find_pairs(self):
        images = self._folder(f"leftImg8bit/{self.split}")
        labels = self._folder(f"gtFine/{self.split}")
        suffix = "_leftImg8bit.png"
        pairs = []
        for city in sorted(e.name for e in os.scandir(images) if e.is_dir()):
            if not (labels / city).is_dir():
                raise DataError(f"data.root '{self.root}' has no gtFine/{self.split}/{city}/ folder "
                                f"for the images in '{images / city}' (expected {self.layout})")
            pairs += self._pair_up(images / city, labels / city,
                                   lambda n: n[: -len(suffix)] + "_gtFine_labelIds.png", suffix)
        return pairs


class Synthia(LabelledImages):
    """SYNTHIA-RAND-CITYSCAPES: ``RGB/*.png`` with ``GT/LABELS/*.png`` of the same name — 16-bit
    3-channel PNGs with the SYNTHIA class id (0..22) in the first channel. Evaluated under the 16- or
    13-class protocol only (its terrain, truck and train are not used). One split, ``train``."""

    layout = "SYNTHIA-RAND-CITYSCAPES layout: RGB/, GT/LABELS/"
    protocols = (16, 13)
    id_lut = SYNTHIA_ID_TO_TRAIN_ID
    max_id = SYNTHIA_ID_MAX
    void_id = None  # 0 is void; every id above 22 is an error
    label_channels = (1, 3, 4)

    def _find_pairs(self):
        return self._pair_up(self._folder("RGB"), self._folder("GT/LABELS"), lambda n: n)


_READERS = {"gta5": GTA5, "cityscapes": Cityscapes, "synthia": Synthia}


class _ProtocolView(Dataset):
    """A 19-class dataset seen under a 16/13-class protocol: protocol indices, other classes 255."""

    def __init__(self, base: Dataset, num_classes: int):
        self.base, self.num_classes = base, num_classes
        self.lut = torch.from_numpy(protocol_lut(num_classes).astype(np.int64))  # (256,)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.base[index])
        item["label"] = self.lut.to(item["label"].device)[item["label"].long()]
        return item


def open_dataset(name: str, root: str | os.PathLike | None, split: str = "train", num_classes: int = 19) -> Dataset:
    """The dataset ``name`` (one of :data:`DATASETS`) under ``root``; items as in the module docstring.

    ``synthetic-source`` / ``synthetic-target`` are the embedded benchmark; for them ``root`` is
    optional and, when given, used as the cache folder.
    """
    if name in _READERS:
        if root is None:
            raise DataError(f"dataset {name!r} needs data.root (the folder holding its files)")
        return _READERS[name](root, split=split, num_classes=num_classes)
    if name in ("synthetic-source", "synthetic-target"):
        if num_classes not in (19, 16, 13):
            raise DataError(f"{name}: num_classes={num_classes!r} is not supported (allowed: 19, 16, 13)")
        from .synthetic import SyntheticDataset  # lazy: generating the benchmark is not free

        try:
            ds = SyntheticDataset(name.split("-")[1], split=split, cache_dir=root or None)
        except ValueError as e:  # e.g. an unknown split: one exception type for every dataset
            raise DataError(f"{name}: {e}") from e
        return ds if num_classes == 19 else _ProtocolView(ds, num_classes)
    raise DataError(f"unknown dataset {name!r} (allowed: {', '.join(DATASETS)})")
