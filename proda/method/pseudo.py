"""Pseudo labels and initial prototypes from a trained model on target train (paper Sec. 3.2).

Soft labels p_{t,0} (class probabilities, optionally averaged with the flipped image's) are kept at the
model's output resolution of the full image, as float16; the stages derive hard labels ξ(p) from them
(:func:`~proda.method.prototypes.hard_label`; stage 1 with ``stage1.threshold``, distillation with
``pseudo.threshold``). Initial prototypes η(k) are the class centroids of the model's features under its
own hard labels, without a threshold. Generation is sharded over DDP ranks and gathered.
"""

from __future__ import annotations

import torch

from proda import distributed as ddp
from proda.data.augment import normalize
from proda.data.stream import Split, eval_batches, to_device
from proda.evaluation import ConfusionMatrix
from proda.method.prototypes import CentroidAccumulator, hard_label


@torch.inference_mode()
def generate(model: torch.nn.Module, split: Split, num_classes: int, device: torch.device,
             flip: bool = True, batch_size: int = 16, threshold: float = 0.0) -> dict[str, torch.Tensor]:
    """Returns ``{'soft': (N,K,h,w) float16, 'protos': (K,C), 'counts': (K,), 'accuracy': ()}``.

    ``accuracy`` is the pixel accuracy of the hard labels ξ(p) against the split's labels (NaN when the
    split has none), pixels below ``threshold`` (``pseudo.threshold``, the distillation targets' rule) left
    out — a diagnostic, never used for training.
    """
    model.eval()
    acc = CentroidAccumulator(num_classes, model.feat_channels if hasattr(model, "feat_channels")
                              else model.module.feat_channels, device=device)
    cm = ConfusionMatrix(num_classes, device=device)
    idx_parts, soft_parts = [], []
    has_labels = split.labels is not None or split.dataset is not None
    for idx, img, lab in eval_batches(split, batch_size):
        img, lab = to_device(img, lab, device)
        x = normalize(img)
        o = model(x)
        prob = o["out"].float().softmax(1)  # (n, K, h, w)
        if flip:
            prob = 0.5 * (prob + model(x.flip(-1))["out"].float().softmax(1).flip(-1))
        acc.add(o["feat"].float(), hard_label(prob))  # centroids under ξ(p), every pixel
        if has_labels and lab is not None:
            up = torch.nn.functional.interpolate(prob, size=lab.shape[-2:], mode="bilinear", align_corners=False)
            cm.update(pred=hard_label(up, threshold), target=lab)
        idx_parts.append(idx.to(device))
        soft_parts.append(prob.half())
    protos, counts = acc.compute()  # all-reduced over ranks
    cm.all_reduce()
    idx = ddp.all_gather_cat(torch.cat(idx_parts))
    soft = ddp.all_gather_cat(torch.cat(soft_parts))
    order = torch.argsort(idx)
    out = {"soft": soft[order].cpu(), "protos": protos.cpu(), "counts": counts.cpu()}
    total = cm.mat.sum()
    out["accuracy"] = (cm.mat.diagonal().sum() / total).double().cpu() if total > 0 else torch.tensor(float("nan"))
    return out
