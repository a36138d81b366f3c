"""Datasets: class tables (19/16/13), GTA5 / SYNTHIA / Cityscapes readers and the embedded synthetic
benchmark, all behind :func:`open_dataset`.

Labels are protocol indices (the train ids under 19 classes; 255 = ignore); see :mod:`proda.data.classes`.
"""

from .classes import (
    CITYSCAPES_19,
    IGNORE_INDEX,
    LABEL_ID_TO_TRAIN_ID,
    PALETTE_19,
    SYNTHIA_13,
    SYNTHIA_16,
    SYNTHIA_ID_TO_TRAIN_ID,
    class_names,
    protocol_class_ids,
    protocol_lut,
)
from .readers import DATASETS, Cityscapes, DataError, GTA5, LabelledImages, Synthia, open_dataset

__all__ = [
    "CITYSCAPES_19", "IGNORE_INDEX", "LABEL_ID_TO_TRAIN_ID", "PALETTE_19", "SYNTHIA_13", "SYNTHIA_16",
    "SYNTHIA_ID_TO_TRAIN_ID", "class_names", "protocol_class_ids", "protocol_lut",
    "DATASETS", "Cityscapes", "DataError", "GTA5", "LabelledImages", "Synthia", "open_dataset",
    "SyntheticDataset", "SyntheticSpec",
]


def __getattr__(name: str):
    # The synthetic benchmark is imported on first use only (it is written in another module and
    # generating it is not free); ``from proda.data import SyntheticDataset`` still works.
    if name in ("SyntheticDataset", "SyntheticSpec"):
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
