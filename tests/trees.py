"""Tiny dataset trees in the real on-disk layouts, with EVERY label id of each class table present
(bicycle and motorcycle included): GTA5 (palette labels), SYNTHIA-RAND-CITYSCAPES (16-bit 3-channel
labels) and Cityscapes (``*_gtFine_labelIds.png``). Images are the class colours plus noise, so a
model has something to learn; sizes differ from ``data.full_size`` so the resize path runs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torchvision.io import write_png

from proda.data.classes import LABEL_ID_MAX, LABEL_ID_TO_TRAIN_ID, PALETTE_19, SYNTHIA_ID_MAX, SYNTHIA_ID_TO_TRAIN_ID


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_raw_png(path: Path, arr: np.ndarray, bit_depth: int = 8, palette: bool = False) -> None:
    """``arr``: (H, W) or (H, W, C) of uint8/uint16. Colour type 0 grey, 2 RGB, 3 palette (indices);
    torchvision cannot write 16-bit or palette PNGs."""
    arr = arr if arr.ndim == 3 else arr[:, :, None]
    h, w, c = arr.shape
    colour_type = 3 if palette else {1: 0, 3: 2}[c]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + arr[y].astype(dtype).tobytes() for y in range(h))  # filter 0 per row
    body = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0))
    if palette:  # a palette whose colours are not the indices, as in GTA5's labels
        body += _chunk(b"PLTE", bytes((7 * i + 3) % 256 for i in range(768)))
    body += _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _id_map(ids: list[int], h: int, w: int, seed: int) -> np.ndarray:
    """(h, w) map of vertical bands, one per id (every id appears), in a seeded order."""
    order = np.random.default_rng(seed).permutation(ids)
    return order[(np.arange(w) * len(order)) // w][None].repeat(h, 0).astype(np.int64)


def _image(train_ids: np.ndarray, seed: int) -> torch.Tensor:
    """(3, h, w) uint8: the Cityscapes colour of each pixel's train id (grey for ignore) plus noise."""
    colours = np.vstack([PALETTE_19, np.full((237, 3), 90, np.uint8)])  # index 255 → grey
    rgb = colours[np.minimum(train_ids, 255)].astype(np.int64)
    rgb += np.random.default_rng(seed).integers(-20, 21, rgb.shape)
    return torch.from_numpy(np.clip(rgb, 0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()


CITYSCAPES_IDS = [*range(LABEL_ID_MAX + 1), 255]  # 0..33 and void
SYNTHIA_IDS = list(range(SYNTHIA_ID_MAX + 1))  # 0..22


def make_gta5(root: Path, n: int = 8, size=(40, 72)) -> Path:
    """``images/*.png`` + palette ``labels/*.png``; the last label is half its image's size (as some
    GTA5 labels are): the reader resizes it."""
    for i in range(n):
        ids = _id_map(CITYSCAPES_IDS, *size, seed=i)
        write_png(_image(LABEL_ID_TO_TRAIN_ID[ids], seed=i), str(_mk(root / "images" / f"{i:05d}.png")))
        lab = ids[::2, ::2] if i == n - 1 else ids
        write_raw_png(root / "labels" / f"{i:05d}.png", lab.astype(np.uint8), palette=True)
    return root


def make_synthia(root: Path, n: int = 8, size=(40, 72)) -> Path:
    """``RGB/*.png`` + ``GT/LABELS/*.png``: 16-bit, 3 channels, the class id in the first, instance ids
    (values above 255) in the second."""
    for i in range(n):
        ids = _id_map(SYNTHIA_IDS, *size, seed=100 + i)
        write_png(_image(SYNTHIA_ID_TO_TRAIN_ID[ids], seed=100 + i), str(_mk(root / "RGB" / f"{i:07d}.png")))
        lbl = np.zeros((*size, 3), np.uint16)
        lbl[..., 0], lbl[..., 1] = ids, 1000 + i
        write_raw_png(root / "GT" / "LABELS" / f"{i:07d}.png", lbl, bit_depth=16)
    return root


def make_cityscapes(root: Path, n_train: int = 8, n_val: int = 4, size=(48, 96)) -> Path:
    """``leftImg8bit/<split>/<city>/`` + ``gtFine/<split>/<city>/*_gtFine_labelIds.png``, two cities."""
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            city = ("aachen", "bremen")[i % 2]
            stem = f"{city}_{i:06d}_000019"
            ids = _id_map(CITYSCAPES_IDS, *size, seed=200 + i + 50 * (split == "val"))
            img = _image(LABEL_ID_TO_TRAIN_ID[ids], seed=300 + i)
            write_png(img, str(_mk(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")))
            lab = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            write_png(torch.from_numpy(ids.astype(np.uint8))[None], str(_mk(lab)))
    return root


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
