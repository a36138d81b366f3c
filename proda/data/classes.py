"""Class tables: the 19 Cityscapes train classes, SYNTHIA's 16/13-class protocols, id → train-id LUTs.

Every label in this project is a *protocol index*: the position of its class in the protocol's class
list (:func:`protocol_class_ids`), 255 = ignore. Under the 19-class protocol (GTA5, the embedded
benchmark) that is the Cityscapes train id (0 road … 18 bicycle); under SYNTHIA's 16 it is 0 road …
15 bicycle, and the model, discriminator, prototypes and confusion matrix have K = 16 channels, as in
the official ProDA code (docs/differences.md says why not DAFormer's 19-output model). SYNTHIA's
13-class mIoU is a view of the 16-class result (:func:`sub_protocol`), not a second training.

The Cityscapes table is read from ``torchvision.datasets.Cityscapes.classes`` rather than retyped.
The SYNTHIA-RAND-CITYSCAPES ids follow the dataset's README and the official ProDA loader
(``data/synthia_dataset.py``: ``valid_classes`` lists the SYNTHIA ids in train-id order).

LUTs are read-only 256-entry ``uint8`` arrays, applied as ``lut[label]``.
"""

from __future__ import annotations

import numpy as np
from torchvision.datasets import Cityscapes

IGNORE_INDEX = 255

# --- Cityscapes -----------------------------------------------------------------------------------

_TRAIN = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < IGNORE_INDEX), key=lambda c: c.train_id)
assert [c.train_id for c in _TRAIN] == list(range(19)), "torchvision's Cityscapes table changed"

CITYSCAPES_19: tuple[str, ...] = tuple(c.name for c in _TRAIN)  # train-id order: road … bicycle


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


PALETTE_19: np.ndarray = _readonly(np.array([c.color for c in _TRAIN], dtype=np.uint8))  # (19, 3) RGB

# The largest Cityscapes label id (33 bicycle); ids above it (other than 255) belong to no class.
LABEL_ID_MAX = max(c.id for c in Cityscapes.classes)


def _label_id_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for c in Cityscapes.classes:
        if c.id >= 0:  # 'license plate' has id -1: as uint8 that is 255, already ignore
            lut[c.id] = c.train_id if 0 <= c.train_id < IGNORE_INDEX else IGNORE_INDEX
    return _readonly(lut)


LABEL_ID_TO_TRAIN_ID: np.ndarray = _label_id_lut()  # (256,) uint8: Cityscapes/GTA5 label id → train id

# --- SYNTHIA protocols ----------------------------------------------------------------------------

_ID = {name: i for i, name in enumerate(CITYSCAPES_19)}


def _ids(names: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(_ID[n] for n in names)


# 16 = 19 minus terrain, truck, train; 13 = 16 minus wall, fence, pole (the SYNTHIA → Cityscapes protocols).
SYNTHIA_16: tuple[int, ...] = tuple(i for i in range(19) if i not in _ids(("terrain", "truck", "train")))
SYNTHIA_13: tuple[int, ...] = tuple(i for i in SYNTHIA_16 if i not in _ids(("wall", "fence", "pole")))
_PROTOCOLS = {19: tuple(range(19)), 16: SYNTHIA_16, 13: SYNTHIA_13}


def protocol_class_ids(num_classes: int) -> tuple[int, ...]:
    """The 19-space train ids evaluated under a protocol: 19 (all), 16 or 13 (SYNTHIA)."""
    try:
        return _PROTOCOLS[num_classes]
    except (KeyError, TypeError):
        raise ValueError(f"num_classes={num_classes!r} is not a protocol (allowed: 19, 16, 13)") from None


def class_names(num_classes: int) -> tuple[str, ...]:
    """Names of a protocol's classes, in train-id order."""
    return tuple(CITYSCAPES_19[i] for i in protocol_class_ids(num_classes))


def protocol_lut(num_classes: int) -> np.ndarray:
    """(256,) uint8 19-space train id → protocol index (its position in the protocol's class list);
    the classes outside the protocol (and 19..254) → 255. The identity on 0..18 for 19."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    keep = np.array(protocol_class_ids(num_classes), dtype=np.int64)
    lut[keep] = np.arange(len(keep))
    return _readonly(lut)


def sub_protocol(num_classes: int, sub: int) -> tuple[int, ...]:
    """The protocol indices (under ``num_classes``) of the classes of the smaller protocol ``sub``:
    ``sub_protocol(16, 13)`` picks SYNTHIA's 13 classes out of a 16-class result."""
    outer, inner = protocol_class_ids(num_classes), protocol_class_ids(sub)
    if not set(inner) <= set(outer):
        raise ValueError(f"protocol {sub} is not part of protocol {num_classes}")
    return tuple(outer.index(c) for c in inner)


# --- SYNTHIA-RAND-CITYSCAPES ----------------------------------------------------------------------

# GT/LABELS class ids 0..22 (first channel of the 16-bit PNG), with the Cityscapes class each one is
# evaluated as; None = no Cityscapes counterpart (ignored).
SYNTHIA_CLASSES: tuple[tuple[str, str | None], ...] = (
    ("void", None),                     # 0
    ("sky", "sky"),                     # 1
    ("building", "building"),           # 2
    ("road", "road"),                   # 3
    ("sidewalk", "sidewalk"),           # 4
    ("fence", "fence"),                 # 5
    ("vegetation", "vegetation"),       # 6
    ("pole", "pole"),                   # 7
    ("car", "car"),                     # 8
    ("traffic sign", "traffic sign"),   # 9
    ("pedestrian", "person"),           # 10
    ("bicycle", "bicycle"),             # 11
    ("motorcycle", "motorcycle"),       # 12
    ("parking-slot", None),             # 13
    ("road-work", None),                # 14
    ("traffic light", "traffic light"), # 15
    ("terrain", "terrain"),             # 16
    ("rider", "rider"),                 # 17
    ("truck", "truck"),                 # 18
    ("bus", "bus"),                     # 19
    ("train", "train"),                 # 20
    ("wall", "wall"),                   # 21
    ("lanemarking", None),              # 22
)
SYNTHIA_ID_MAX = len(SYNTHIA_CLASSES) - 1  # 22; larger ids belong to no class


def _synthia_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for sid, (_, city) in enumerate(SYNTHIA_CLASSES):
        if city is not None and _ID[city] in SYNTHIA_16:  # terrain, truck, train: not in the 16 → 255
            lut[sid] = _ID[city]
    return _readonly(lut)


SYNTHIA_ID_TO_TRAIN_ID: np.ndarray = _synthia_lut()  # (256,) uint8: SYNTHIA class id → 19-space train id
# (the readers then apply protocol_lut(16 or 13) to reach the protocol index)
