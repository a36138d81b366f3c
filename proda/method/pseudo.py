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
    """Returns ``{'soft': (N,K,h,w) float16, 'protos': (K,C), 'counts': (K,), 'accuracy': (), 'kept': (),
    'accuracy_all': ()}``.

    Diagnostics against the split's labels, never used for training (NaN when the split has none):
    ``accuracy`` is the pixel accuracy of the hard labels ξ(p) whose maximum reaches ``threshold``
    (``pseudo.threshold``, the distillation targets' rule; NaN when no pixel does), ``kept`` the share of
    labelled pixels that reach it, ``accuracy_all`` the accuracy of ξ(p) on every pixel (threshold 0).
    """
    model.eval()
    acc = CentroidAccumulator(num_classes, model.feat_channels if hasattr(model, "feat_channels")
                              else model.module.feat_channels, device=device)
    cm = ConfusionMatrix(num_classes, device=device)
    cm_all = ConfusionMatrix(num_classes, device=device)  # every pixel's argmax
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
            cm_all.update(pred=hard_label(up), target=lab)
        idx_parts.append(idx.to(device))
        soft_parts.append(prob.half())
    protos, counts = acc.compute()  # all-reduced over ranks
    cm.all_reduce()
    cm_all.all_reduce()
    idx = ddp.all_gather_cat(torch.cat(idx_parts))
    soft = ddp.all_gather_cat(torch.cat(soft_parts))
    order = torch.argsort(idx)
    out = {"soft": soft[order].cpu(), "protos": protos.cpu(), "counts": counts.cpu()}
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    kept, labelled = cm.mat.sum(), cm_all.mat.sum()
    out["accuracy"] = (cm.mat.diagonal().sum() / kept).double().cpu() if kept > 0 else nan
    out["kept"] = (kept / labelled).double().cpu() if labelled > 0 else nan
    out["accuracy_all"] = (cm_all.mat.diagonal().sum() / labelled).double().cpu() if labelled > 0 else nan
    return out


def pseudo_text(result: dict) -> str:
    """A pseudo-label node's diagnostics in words, from its result (``pseudo_label_accuracy`` and, where
    recorded, ``pseudo_label_kept`` / ``pseudo_label_accuracy_all`` in %, ``pseudo_label_threshold``):
    ``label accuracy 93.61 % on the 53.4 % of pixels ≥ 0.9, 75.32 % on all``."""
    acc = result.get("pseudo_label_accuracy", float("nan"))
    kept, every = result.get("pseudo_label_kept"), result.get("pseudo_label_accuracy_all")
    if kept is None or every is None:  # a result written before these were recorded
        return f"label accuracy {acc:.2f} %"
    if every != every:
        return "label accuracy not known (the split has no labels)"
    threshold = result.get("pseudo_label_threshold")
    rule = f"≥ {threshold:g}" if threshold else "kept"
    if kept == 0:
        return f"label accuracy {every:.2f} % on all pixels, none {rule}"
    return f"label accuracy {acc:.2f} % on the {kept:.1f} % of pixels {rule}, {every:.2f} % on all"
