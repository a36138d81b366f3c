"""The official code's style of stage 1's ProDA-specific operations, on stand-ins for a step's network
outputs: the loop baseline of ``step_overhead.py`` (per-class norms, per-sample crops and strong views,
per-(image, class) prototype updates with ``.item()``, EMA by a Python loop with clones), and the small-tensor
checks that it computes what the library computes. Written from the behaviour described in
``shared/notes/official-code.md``; no code of the official repository.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from _common import CLOCKS
from proda.data.augment import GEOMETRIC_OPS, full_to_weak, op_matrix, strong_view, weak_to_strong, weak_view
from proda.method.losses import regulariser, sce_loss
from proda.method.prototypes import PrototypeBank, proto_distances
from proda.method.stages import resize

K, C = 19, 256
TAU, GAMMA1, GAMMA2, LAM, EMA_M = 1.0, 10.0, 0.1, 0.9999, 0.999


# ----------------------------------------------------------------------------------- inputs
class Inputs:
    """Stand-ins for one step's network outputs at a setting: batch n, crop (h, w), full image (H, W)."""

    def __init__(self, n: int, crop: tuple[int, int], full: tuple[int, int], channels: int = C, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.n, self.crop, self.full = n, crop, full
        self.res = (crop[0] // 4, crop[1] // 4)  # loss resolution (1/4 of the crop)
        ema_hw = (full[0] // 8, full[1] // 8)  # EMA model output on the full image (stride 8)
        stud_hw = (crop[0] // 8, crop[1] // 8)  # student output on the crop (stride 8)
        self.images = torch.rand(n, 3, *full, generator=g)
        self.xw, self.pw = weak_view(self.images, crop, scale=(0.5, 1.0), generator=g)
        self.ema_feat = torch.randn(n, channels, *ema_hw, generator=g)
        logits = torch.randn(n, K, *ema_hw, generator=g)
        absent = torch.rand(n, K, generator=g).argsort(1)[:, :7]  # ~12 of 19 classes per image, as in Cityscapes
        self.ema_out = logits.scatter(1, absent[:, :, None, None].expand(-1, -1, *ema_hw), -20.0)
        self.soft = F.softmax(3 * torch.randn(n, K, *ema_hw, generator=g), 1)  # p_{t,0} at the EMA's resolution
        self.protos = torch.randn(K, channels, generator=g)
        self.stud_out = torch.randn(n, K, *stud_hw, generator=g).requires_grad_()
        self.stud_feat = torch.randn(n, channels, *stud_hw, generator=g).requires_grad_()

    def zero_grad(self):
        self.stud_out.grad = self.stud_feat.grad = None

    def to(self, device) -> "Inputs":
        for k in ("images", "xw", "ema_feat", "ema_out", "soft", "protos"):
            setattr(self, k, getattr(self, k).to(device))
        self.stud_out = self.stud_out.detach().to(device).requires_grad_()
        self.stud_feat = self.stud_feat.detach().to(device).requires_grad_()
        self.pw = type(self.pw)(self.pw.boxes.to(device), self.pw.flip.to(device))
        return self


CLOCK = "cpu"  # set by --clock


class Stopwatch:
    def __init__(self):
        self.c = CLOCKS[CLOCK]
        self.t, self.parts = self.c(), {}

    def __call__(self, name: str):
        t = self.c()
        self.parts[name] = self.parts.get(name, 0.0) + t - self.t
        self.t = t


PARTS = ("full→weak replay", "distances + ω", "rectification ŷ", "strong view", "teacher z_T + replay",
         "SCE + regulariser (fwd)", "student distances + KL (fwd)", "losses backward",
         "centroids + prototype update", "EMA weight update")


# ----------------------------------------------------------------------- loop baseline
def loop_full2weak(x: torch.Tensor, pw, out_size) -> torch.Tensor:
    """Official style: per sample, resize the whole map so that the crop window has ``out_size``, cut it
    out with integer indices, flip by ``index_select`` (same maths as `full_to_weak` up to the rounding
    of the window to whole pixels)."""
    h, w = out_size
    parts = []
    for i in range(x.shape[0]):
        y0, x0, y1, x1 = pw.boxes[i].tolist()
        sh, sw = max(h, round(h / (y1 - y0))), max(w, round(w / (x1 - x0)))
        f = F.interpolate(x[i:i + 1], size=[sh, sw], mode="bilinear", align_corners=False)
        top, left = min(int(y0 * sh), sh - h), min(int(x0 * sw), sw - w)
        f = f[:, :, top:top + h, left:left + w]
        if bool(pw.flip[i]):
            f = f.index_select(3, torch.arange(f.size(3) - 1, -1, -1, device=f.device))
        parts.append(f)
    return torch.cat(parts, 0)


def loop_distances(feat: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Official `feat_prototype_distance`: one `torch.norm(η_k − f)` per class written into a buffer."""
    n, c, h, w = feat.shape
    d = -torch.ones(n, protos.shape[0], h, w, device=feat.device)
    for k in range(protos.shape[0]):
        d[:, k] = torch.norm(protos[k].reshape(-1, 1, 1).expand(-1, h, w) - feat, 2, dim=1)
    return d


def loop_strong_view(xw: torch.Tensor, gen):
    """Per-sample strong views (the official code draws RandAugment image by image)."""
    outs, params = [], []
    for i in range(xw.shape[0]):
        x, p = strong_view(xw[i:i + 1], generator=gen)
        outs.append(x)
        params.append(p)
    return torch.cat(outs), params


def loop_weak_to_strong(x: torch.Tensor, params, pad: float = 250.0):
    """Official `label_strong_T`: per sample, the flip, then one `grid_sample` per recorded geometric op,
    then the cutout; pixels from outside the view carry ``pad``. Returns (mapped, valid)."""
    out, h, w = x.clone() + 1, x.shape[-2], x.shape[-1]
    for i, p in enumerate(params):
        xi = out[i:i + 1]
        if bool(torch.linalg.det(p.theta[0, :, :2]) < 0):  # the flip is the only op with a negative determinant
            xi = xi.flip(-1)
        for s in range(p.ops.shape[1]):
            op = int(p.ops[0, s].item())
            if op < 0 or p.op_names[op] not in GEOMETRIC_OPS:
                continue
            theta = op_matrix(p.op_names[op], p.values[0, s:s + 1], (h, w))[:, :2]
            grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
            xi = F.grid_sample(xi, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        y0, x0, y1, x1 = p.cutout[0].tolist()
        xi[:, :, int(y0 * h):int(math.ceil(y1 * h)), int(x0 * w):int(math.ceil(x1 * w))] = 0
        out[i:i + 1] = xi
    valid = (out > 0.5).all(1, keepdim=True)  # (n, 1, h, w)
    out = torch.where(valid, out - 1, torch.full_like(out, pad))
    return out, valid


def loop_proto_update(protos: torch.Tensor, feat: torch.Tensor, out: torch.Tensor, lam: float,
                      min_pixels: int = 10) -> None:
    """Official `calculate_mean_vector` + `update_objective_SingleVector`: one EMA step per (image, class)."""
    prob = F.softmax(out, 1)
    arg = prob.argmax(1, keepdim=True)  # (n, 1, h, w)
    onehot = torch.zeros(out.shape[0], out.shape[1] + 1, *out.shape[2:], device=out.device).scatter_(1, arg, 1)
    scale = F.adaptive_avg_pool2d(onehot, 1)  # (n, K+1, 1, 1) class area fractions
    for n in range(feat.shape[0]):
        for t in range(out.shape[1]):
            if scale[n][t].item() == 0:
                continue
            if (onehot[n][t] > 0).sum() < min_pixels:
                continue
            v = F.adaptive_avg_pool2d(feat[n] * onehot[n][t], 1) / scale[n][t]
            if v.sum().item() == 0:
                continue
            protos[t] = protos[t] * lam + (1 - lam) * v.squeeze()


def loop_step(t: Inputs, protos: torch.Tensor, models, gen) -> dict[str, float]:
    """What `Stage1.micro_step` + `after_step` (pd + sl + reg) compute besides the network passes, in the
    official code's style, on stand-ins for the network's outputs; the time of each part (seconds)."""
    sw = Stopwatch()
    res = t.res
    soft_w = loop_full2weak(t.soft, t.pw, res)
    feat_w = loop_full2weak(t.ema_feat, t.pw, res)
    sw("full→weak replay")
    d = loop_distances(feat_w, protos)
    omega = F.softmax(-(d - d.min(1, keepdim=True)[0]) * TAU, 1)
    sw("distances + ω")
    r = omega * soft_w
    y_hat = r.max(1)[1]
    sw("rectification ŷ")
    xs, params = loop_strong_view(t.xw, gen)
    sw("strong view")
    with torch.no_grad():
        z_d, valid = loop_weak_to_strong(loop_distances(feat_w, protos), [p for p in params])
        z_t = F.softmax(-z_d * TAU, 1)
    sw("teacher z_T + replay")
    out_w = resize(t.stud_out, res).float()
    loss = sce_loss(out_w, y_hat) + GAMMA2 * regulariser(out_w)
    sw("SCE + regulariser (fwd)")
    feat_s = resize(t.stud_feat, res).float()
    student = F.log_softmax(-loop_distances(feat_s, protos) * TAU, 1)
    kl = F.kl_div(student, z_t, reduction="none")
    mask = valid.float()
    loss = loss + GAMMA1 * (kl * mask).sum() / mask.sum()
    sw("student distances + KL (fwd)")
    loss.backward()
    sw("losses backward")
    with torch.no_grad():
        loop_proto_update(protos, t.ema_feat, t.ema_out, LAM)
    sw("centroids + prototype update")
    model, ema = models
    for p_q, p_k in zip(model.parameters(), ema.parameters()):
        p_k.data = p_k.data.clone() * EMA_M + p_q.data.clone() * (1.0 - EMA_M)
    for b_q, b_k in zip(model.buffers(), ema.buffers()):
        b_k.data = b_q.data.clone()
    sw("EMA weight update")
    t.zero_grad()
    return sw.parts


def check_same_maths() -> list[str]:
    """Small-tensor checks that the loop baseline computes what the library computes."""
    g = torch.Generator().manual_seed(1)
    f, p = torch.randn(2, 16, 12, 20, generator=g), torch.randn(K, 16, generator=g)
    lines = [f"distances: max |loop − vectorised| = {(loop_distances(f, p) - proto_distances(f, p)).abs().max():.1e}"]
    out = torch.randn(2, K, 12, 20, generator=g)
    bank = PrototypeBank(K, 16, momentum=0.9, official_update=True)
    bank.reset(p.clone())
    bank.update(f, out.max(1)[1])
    q = p.clone()
    loop_proto_update(q, f, out, 0.9)
    lines.append(f"prototype update (per image, class): max |loop − PrototypeBank(official_update)| = "
                 f"{(q - bank.protos).abs().max():.1e}")
    x = torch.rand(2, 3, 64, 128, generator=g)
    xw, pw = weak_view(x, (32, 64), scale=(0.5, 1.0), generator=g)
    m = F.interpolate(torch.randn(2, 8, 8, 16, generator=g), size=(64, 128), mode="bilinear")  # a smooth map
    lines.append(f"full→weak: mean |loop − grid_sample| = {(loop_full2weak(m, pw, (32, 64)) - full_to_weak(m, pw, (32, 64))).abs().mean():.3f}"
                 f" (smooth map, std ~0.6;"
                 f" the loop rounds the window to whole pixels)")
    z = torch.rand(2, 4, 32, 64, generator=g)
    _, ps = strong_view(xw, generator=torch.Generator().manual_seed(3))
    a, va = weak_to_strong(z, ps)
    params = []
    for i in range(2):  # the batched params, sample by sample
        params.append(type(ps)(ps.theta[i:i + 1], ps.cutout[i:i + 1], ps.ops[i:i + 1], ps.values[i:i + 1], ps.op_names))
    b, vb = loop_weak_to_strong(z, params)
    both = va & vb
    lines.append(f"strong replay: valid masks agree on {(va == vb).float().mean():.1%} of pixels, mean |Δ| on "
                 f"shared pixels {((a - b).abs() * both).sum() / both.sum().clamp_min(1) / z.shape[1]:.3f} (values in [0, 1])")
    return lines
