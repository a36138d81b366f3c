"""Per-class IoU and mIoU from a confusion matrix kept on the tensors' device.

``ConfusionMatrix.update`` is one ``bincount`` (no numpy round trip, no host sync); ``all_reduce``
sums the matrix over DDP ranks and is a no-op in one process. SYNTHIA's 13-class mIoU is a view of the
16-class result (:func:`protocol_iou` with :func:`proda.data.classes.sub_protocol`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """``mat[t, p]`` counts pixels of true class ``t`` predicted as ``p``; 255 (or any id ≥ K) is skipped."""

    def __init__(self, num_classes: int, device: torch.device | str | None = None):
        self.num_classes = num_classes
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``, ``target``: integer tensors of the same shape (any), class ids; others ignored."""
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        k = self.num_classes
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        if self.mat.device != target.device:
            self.mat = self.mat.to(target.device)
        keep = (target >= 0) & (target < k) & (pred >= 0) & (pred < k)
        # skipped pixels count in an extra bin k·k, dropped (a boolean index would need a nonzero():
        # slow on CPU, a host sync on GPU)
        idx = torch.where(keep, target * k + pred, k * k)
        self.mat += torch.bincount(idx, minlength=k * k + 1)[: k * k].reshape(k, k)

    def all_reduce(self) -> None:
        """Sum over all DDP ranks (no-op without an initialised process group)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.mat)

    def iou(self) -> torch.Tensor:
        """(K,) float64 IoU per class; NaN for a class absent from both prediction and ground truth."""
        m = self.mat.double()
        tp = m.diagonal()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def miou(self, class_ids: Sequence[int] | None = None) -> float:
        """Mean IoU over the classes present (in prediction or ground truth), optionally over a
        protocol's ``class_ids`` only (see :func:`protocol_iou`)."""
        iou = self.iou()
        return nanmean(iou if class_ids is None else protocol_iou(iou, class_ids))

    def pixel_accuracy(self) -> float:
        total = self.mat.sum()
        return float(self.mat.diagonal().sum() / total) if total > 0 else math.nan


def nanmean(x: torch.Tensor) -> float:
    present = ~torch.isnan(x)
    return float(x[present].mean()) if bool(present.any()) else math.nan


def protocol_iou(iou: torch.Tensor, class_ids: Sequence[int]) -> torch.Tensor:
    """The per-class IoU of a smaller protocol's classes, given by their indices in ``iou``.

    SYNTHIA's 13-class mIoU* is the mean over ``protocol_iou(iou16, sub_protocol(16, 13))`` of the same
    16-class model's confusion matrix; a 19-class result gives the 16 or 13 with ``protocol_class_ids``.
    """
    return iou[torch.as_tensor(list(class_ids), device=iou.device)]
