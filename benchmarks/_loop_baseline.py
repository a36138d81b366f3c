"""The loop baseline of ``step_overhead.py``: stage 1's ProDA operations in the official code's style on
stand-ins for a step's network outputs, and small-tensor checks that its loops compute what the library does.

Kept: the loops that carry the official code's cost — per-class ``torch.norm(η_k − f)``, per-sample full→weak
crops that resize the whole map, per-(image, class) prototype updates with ``.item()``, the EMA by a Python loop
with clones. The strong view and z_T's replay into it run the library's batched code: cheap in both forms
(RESULTS.md §1: 32 ms of the loop's 5.2 s). From ``shared/notes/official-code.md``; no official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from _common import CLOCKS
from proda.data.augment import full_to_weak, strong_view, weak_to_strong, weak_view
from proda.method.losses import regulariser, sce_loss
from proda.method.prototypes import PrototypeBank, proto_distances
from proda.method.stages import resize

K, C = 19, 256
TAU, GAMMA1, GAMMA2, LAM, EMA_M = 1.0, 10.0, 0.1, 0.9999, 0.999


class Inputs:
    """Stand-ins for one step's network outputs: batch n, crop (h, w), full image (H, W); maps at stride 8."""

    def __init__(self, n: int, crop: tuple[int, int], full: tuple[int, int], device="cpu", seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.res = (crop[0] // 4, crop[1] // 4)  # the losses' resolution
        ema_hw, stud_hw = (full[0] // 8, full[1] // 8), (crop[0] // 8, crop[1] // 8)
        xw, pw = weak_view(torch.rand(n, 3, *full, generator=g), crop, scale=(0.5, 1.0), generator=g)
        absent = torch.rand(n, K, generator=g).argsort(1)[:, :7]  # ~12 of 19 classes per image, as in Cityscapes
        absent = absent[..., None, None].expand(-1, -1, *ema_hw)
        maps = dict(xw=xw, ema_feat=torch.randn(n, C, *ema_hw, generator=g),
                    ema_out=torch.randn(n, K, *ema_hw, generator=g).scatter(1, absent, -20.0),
                    soft=F.softmax(3 * torch.randn(n, K, *ema_hw, generator=g), 1),  # p_{t,0}
                    protos=torch.randn(K, C, generator=g), stud_out=torch.randn(n, K, *stud_hw, generator=g),
                    stud_feat=torch.randn(n, C, *stud_hw, generator=g))
        for k, v in maps.items():
            setattr(self, k, v.to(device).requires_grad_(k.startswith("stud")))
        self.pw = type(pw)(pw.boxes.to(device), pw.flip.to(device))


def loop_full2weak(x: torch.Tensor, pw, out_size) -> torch.Tensor:
    """Per sample: resize the whole map so that the crop window has ``out_size``, cut it out with integer
    indices, flip by ``index_select`` (`full_to_weak`'s maths up to the window's rounding to whole pixels)."""
    h, w = out_size
    parts = []
    for i in range(x.shape[0]):
        y0, x0, y1, x1 = pw.boxes[i].tolist()
        sh, sw = max(h, round(h / (y1 - y0))), max(w, round(w / (x1 - x0)))
        f = F.interpolate(x[i:i + 1], size=[sh, sw], mode="bilinear", align_corners=False)
        top, left = min(int(y0 * sh), sh - h), min(int(x0 * sw), sw - w)
        f = f[:, :, top:top + h, left:left + w]
        if bool(pw.flip[i]):
            f = f.index_select(3, torch.arange(w - 1, -1, -1, device=f.device))
        parts.append(f)
    return torch.cat(parts)


def loop_distances(feat: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """`feat_prototype_distance`: one `torch.norm(η_k − f)` per class, written into a buffer."""
    n, _, h, w = feat.shape
    d = -torch.ones(n, protos.shape[0], h, w, device=feat.device)
    for k in range(protos.shape[0]):
        d[:, k] = torch.norm(protos[k].reshape(-1, 1, 1).expand(-1, h, w) - feat, 2, dim=1)
    return d


def loop_proto_update(protos: torch.Tensor, feat: torch.Tensor, out: torch.Tensor, lam: float) -> None:
    """`calculate_mean_vector` + `update_objective_SingleVector`: one EMA step per (image, class)."""
    onehot = torch.zeros_like(out).scatter_(1, out.argmax(1, keepdim=True), 1)  # (n, K, h, w)
    scale = F.adaptive_avg_pool2d(onehot, 1)  # (n, K, 1, 1) class area fractions
    for n in range(feat.shape[0]):
        for t in range(out.shape[1]):
            if scale[n][t].item() == 0 or (onehot[n][t] > 0).sum() < 10:
                continue
            v = F.adaptive_avg_pool2d(feat[n] * onehot[n][t], 1) / scale[n][t]
            if v.sum().item() != 0:
                protos[t] = protos[t] * lam + (1 - lam) * v.squeeze()


def loop_step(t: Inputs, protos: torch.Tensor, models, gen, clock: str = "cpu") -> dict[str, float]:
    """What `Stage1.micro_step` + `after_step` (pd + sl + reg) compute besides the network passes, in the
    official code's style on ``t``; the seconds of each part."""
    c, parts = CLOCKS[clock], {}
    last = [c()]

    def lap(name):
        t = c()
        parts[name], last[0] = t - last[0], t

    soft_w, feat_w = loop_full2weak(t.soft, t.pw, t.res), loop_full2weak(t.ema_feat, t.pw, t.res)
    lap("full→weak replay")
    d = loop_distances(feat_w, protos)
    omega = F.softmax(-(d - d.min(1, keepdim=True)[0]) * TAU, 1)
    lap("distances + ω")
    y_hat = (omega * soft_w).max(1)[1]
    lap("rectification ŷ")
    _, params = strong_view(t.xw, generator=gen)
    lap("strong view")
    with torch.no_grad():
        z_t, valid = weak_to_strong(F.softmax(-loop_distances(feat_w, protos) * TAU, 1), params)
    lap("teacher z_T + replay")
    out_w = resize(t.stud_out, t.res).float()
    loss = sce_loss(out_w, y_hat) + GAMMA2 * regulariser(out_w)
    lap("SCE + regulariser (fwd)")
    student = F.log_softmax(-loop_distances(resize(t.stud_feat, t.res).float(), protos) * TAU, 1)
    loss = loss + GAMMA1 * (F.kl_div(student, z_t, reduction="none") * valid).sum() / valid.sum()
    lap("student distances + KL (fwd)")
    loss.backward()
    t.stud_out.grad = t.stud_feat.grad = None
    lap("losses backward")
    with torch.no_grad():
        loop_proto_update(protos, t.ema_feat, t.ema_out, LAM)
    lap("centroids + prototype update")
    model, ema = models
    for p_q, p_k in zip(model.parameters(), ema.parameters()):
        p_k.data = p_k.data.clone() * EMA_M + p_q.data.clone() * (1.0 - EMA_M)
    for b_q, b_k in zip(model.buffers(), ema.buffers()):
        b_k.data = b_q.data.clone()
    lap("EMA weight update")
    return parts


def check_same_maths() -> list[str]:
    """Small-tensor checks that the loops compute what the library computes."""
    g = torch.Generator().manual_seed(1)
    f, p = torch.randn(2, 16, 12, 20, generator=g), torch.randn(K, 16, generator=g)
    out = torch.randn(2, K, 12, 20, generator=g)
    bank = PrototypeBank(K, 16, momentum=0.9, official_update=True)
    bank.reset(p.clone())
    bank.update(f, out.max(1)[1])
    q = p.clone()
    loop_proto_update(q, f, out, 0.9)
    _, pw = weak_view(torch.rand(2, 3, 64, 128, generator=g), (32, 64), scale=(0.5, 1.0), generator=g)
    m = F.interpolate(torch.randn(2, 8, 8, 16, generator=g), size=(64, 128), mode="bilinear")  # a smooth map
    return [f"distances: max |loop − vectorised| = {(loop_distances(f, p) - proto_distances(f, p)).abs().max():.1e}",
            f"prototype update (per image, class): max |loop − PrototypeBank(official_update)| = "
            f"{(q - bank.protos).abs().max():.1e}",
            f"full→weak: mean |loop − grid_sample| = "
            f"{(loop_full2weak(m, pw, (32, 64)) - full_to_weak(m, pw, (32, 64))).abs().mean():.3f}"
            " (smooth map, std ~0.6; the loop rounds the window to whole pixels)"]
