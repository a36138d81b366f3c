"""Weak and strong views of an image batch that return their parameters, so any map can be replayed.

ProDA (Sec. 3.3) compares two views of one target image: the weak view T(x) (random-sized crop + flip)
seen by the momentum encoder, and a strong view T'(x) (RandAugment on top of T(x)) seen by the student.
Its losses need maps of one frame in the other frame: the full-image EMA features / soft labels in the
weak crop (:func:`full_to_weak`), the weak-frame teacher z_T and labels in the strong frame
(:func:`weak_to_strong`). Every geometric operation is therefore an affine map in normalised
coordinates (``align_corners=False``, the image spans [-1, 1]), which makes a replay exact and
independent of the resolution of the replayed map. Everything is batched: one ``grid_sample`` per call,
per-sample choices by masks, all randomness from the ``generator`` argument.

Images are float tensors in [0, 1], (N, 3, H, W); :func:`normalize` applies ImageNet mean/std afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# RandAugment op pools. OFFICIAL_OPS is the pool of the official strong view (FixMatch's).
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "scale")
PHOTOMETRIC_OPS = ("identity", "autocontrast", "equalize", "brightness", "color", "contrast",
                   "sharpness", "posterize", "solarize", "noise")
OFFICIAL_OPS = ("autocontrast", "brightness", "color", "contrast", "equalize", "identity", "posterize",
                "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y")
_SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "scale")


def normalize(images: Tensor) -> Tensor:
    """ImageNet mean/std normalisation of (N, 3, H, W) images in [0, 1] (the model's input)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """U[0, 1) drawn on the generator's device (so its state is the only source), moved to ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def _grid_sample(x: Tensor, grid: Tensor, mode: str, padding_mode: str) -> Tensor:
    """``grid_sample`` that also takes (N, H, W) or integer maps (labels: nearest, returned in their dtype)."""
    squeeze = x.dim() == 3
    x = x[:, None] if squeeze else x  # (N, C, H, W)
    if x.is_floating_point():
        out = F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding_mode, align_corners=False)
    else:
        if mode != "nearest":
            raise ValueError(f"an integer map (dtype {x.dtype}) can only be replayed with mode='nearest'")
        out = F.grid_sample(x.float(), grid.float(), mode="nearest", padding_mode=padding_mode,
                            align_corners=False).round().to(x.dtype)
    return out[:, 0] if squeeze else out


# --------------------------------------------------------------------------------------- weak view
@dataclass
class WeakParams:
    """Parameters of :func:`weak_view`.

    boxes: (N, 4) crop window [y0, x0, y1, x1] in normalised [0, 1] coordinates of the full image.
    flip:  (N,) bool, horizontal flip applied after cropping.
    """

    boxes: Tensor
    flip: Tensor

    def theta(self) -> Tensor:
        """(N, 2, 3) affine: weak-view output coords → full-image coords (normalised, align_corners=False)."""
        y0, x0, y1, x1 = self.boxes.unbind(1)  # (N,) each
        sign = 1.0 - 2.0 * self.flip.to(self.boxes.dtype)  # -1 where flipped
        zero = torch.zeros_like(y0)
        return torch.stack([(x1 - x0) * sign, zero, x0 + x1 - 1, zero, y1 - y0, y0 + y1 - 1], 1).view(-1, 2, 3)


def weak_view(images: Tensor, out_size: tuple[int, int], scale: tuple[float, float] = (0.5, 1.0),
              flip_p: float = 0.5, generator: torch.Generator | None = None) -> tuple[Tensor, WeakParams]:
    """The weak view T(x): random-sized crop, resized to ``out_size`` (h, w), then a random horizontal flip.

    The crop covers an area fraction drawn uniformly from ``scale`` and has the aspect ratio of
    ``out_size`` (no distortion); where that window would not fit, it is shrunk (aspect kept) until it
    does. Its position is uniform among those that fit. One bilinear ``grid_sample`` for the batch.
    Returns the views (N, 3, h, w) and their :class:`WeakParams`.
    """
    n, _, H, W = images.shape
    h, w = out_size
    u = _rand((n, 4), generator, images.device)  # (N, 4): area, y, x, flip
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    ratio = (w / h) * (H / W)  # box width / box height, both in normalised units
    bh, bw = torch.sqrt(area / ratio), torch.sqrt(area * ratio)
    shrink = torch.maximum(bh, bw).clamp_min(1.0)
    bh, bw = bh / shrink, bw / shrink
    y0, x0 = u[:, 1] * (1 - bh), u[:, 2] * (1 - bw)
    params = WeakParams(torch.stack([y0, x0, y0 + bh, x0 + bw], 1), u[:, 3] < flip_p)
    return full_to_weak(images, params, out_size), params


def full_to_weak(x: Tensor, params: WeakParams, out_size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Replay the weak crop/flip on any full-image map x (N, C, H', W') or (N, H', W') → (N, C, h, w).

    Features, probabilities (``mode="bilinear"``) and labels (``mode="nearest"``) alike; one
    ``grid_sample`` that reads only the crop window. ``weak_view`` itself is this function on the images.
    """
    theta = params.theta().to(x.device, torch.float32)  # (N, 2, 3)
    grid = F.affine_grid(theta, [x.shape[0], 1, *out_size], align_corners=False)  # (N, h, w, 2)
    return _grid_sample(x, grid, mode, "border")


# ------------------------------------------------------------------------------------- strong view
@dataclass
class StrongParams:
    """Parameters of :func:`strong_view`.

    theta:   (N, 2, 3) affine mapping strong-view output coords → weak-view coords (normalised,
             align_corners=False): the composition of the flip and all geometric ops, in the order applied.
    cutout:  (N, 4) cutout box [y0, x0, y1, x1] in normalised [0, 1] coords of the strong view (empty
             when there is none). Cutout moves no pixel; :func:`weak_to_strong` masks it as invalid by default.
    ops:     (N, n_ops) index into ``op_names`` of the op drawn in each slot, -1 where it was not applied.
    values:  (N, n_ops) the op's value (factor, bits, threshold, degrees, shear, fraction of the size…).
    """

    theta: Tensor
    cutout: Tensor
    ops: Tensor | None = None
    values: Tensor | None = None
    op_names: tuple[str, ...] = field(default=())


def op_matrix(name: str, value: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 3, 3) output→input affine of one geometric op, in normalised coordinates of an (H, W) view.

    Ops are defined in pixel units around the image centre (so a rotation is a rotation on a non-square
    image) and conjugated by S = diag(W/2, H/2): M = S⁻¹ P S. ``value``: degrees (rotate), shear factor
    (shear_x/y), fraction of the width/height (translate_x/y), zoom factor (scale), anything (hflip).
    """
    H, W = size
    aspect = W / H
    v = value.to(torch.float32)
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    tx, ty = zero, zero
    if name == "rotate":
        a = torch.deg2rad(v)
        p = (torch.cos(a), -torch.sin(a), torch.sin(a), torch.cos(a))
    elif name == "shear_x":
        p = (one, v, zero, one)
    elif name == "shear_y":
        p = (one, zero, v, one)
    elif name == "translate_x":  # a shift of v·W pixels: 2v in normalised x (the width, not the height)
        p, tx = (one, zero, zero, one), 2 * v
    elif name == "translate_y":
        p, ty = (one, zero, zero, one), 2 * v
    elif name == "scale":
        p = (1 / v, zero, zero, 1 / v)
    elif name == "hflip":
        p = (-one, zero, zero, one)
    else:
        raise ValueError(f"unknown geometric op {name!r}; expected one of {GEOMETRIC_OPS + ('hflip',)}")
    rows = [p[0], p[1] / aspect, tx, p[2] * aspect, p[3], ty, zero, zero, one]
    return torch.stack(rows, 1).view(-1, 3, 3)


def _op_value(name: str, frac: Tensor, sign: Tensor) -> Tensor:
    """The op's value at level ``frac`` ∈ (0, 1) (the official pool's ranges, FixMatch's RandAugment)."""
    if name in ("brightness", "color", "contrast", "sharpness"):
        return 0.05 + 0.9 * frac  # enhancement factor
    if name == "posterize":
        return 4 + torch.floor(4 * frac)  # bits kept
    if name == "solarize":
        return 256 - torch.floor(256 * frac)  # 8-bit threshold
    if name == "noise":
        return 0.1 * frac  # Gaussian σ
    if name == "rotate":
        return 30 * frac * sign
    if name in ("shear_x", "shear_y", "translate_x", "translate_y"):
        return 0.3 * frac * sign
    if name == "scale":
        return 1 + 0.3 * frac * sign
    return torch.zeros_like(frac)  # identity, autocontrast, equalize


def _equalize(x8: Tensor) -> Tensor:
    """PIL's ``ImageOps.equalize`` per image and channel on 8-bit values x8 (N, 3, P) int64."""
    ones = torch.ones_like(x8, dtype=torch.float32)
    hist = torch.zeros(*x8.shape[:2], 256, device=x8.device).scatter_add_(2, x8, ones)  # (N, 3, 256)
    last = (torch.arange(256, device=x8.device) * (hist > 0)).amax(2, keepdim=True)  # (N, 3, 1) last used bin
    step = torch.floor((hist.sum(2, keepdim=True) - hist.gather(2, last)) / 255)  # (N, 3, 1)
    lut = torch.floor((torch.floor(step / 2) + hist.cumsum(2) - hist) / step.clamp_min(1)).clamp(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x8.device, dtype=lut.dtype))  # (N, 3, 256)
    return lut.gather(2, x8)


def photometric(x: Tensor, name: str, value: Tensor, noise: Tensor | None = None) -> Tensor:
    """One pixel-wise op on images x (N, 3, H, W) in [0, 1] with a per-sample value (N,)."""
    v = value.to(x.dtype).view(-1, 1, 1, 1)
    if name == "identity":
        return x
    if name in ("brightness", "color", "contrast", "sharpness"):  # PIL ImageEnhance: blend with a degenerate
        gray = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # (N, 1, H, W) ITU-R 601 luma
        if name == "brightness":
            deg = torch.zeros_like(x)
        elif name == "color":
            deg = gray.expand_as(x)
        elif name == "contrast":
            deg = gray.mean((2, 3), keepdim=True).expand_as(x)
        else:  # PIL's SMOOTH kernel, image border kept
            k = x.new_tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]).div(13).repeat(3, 1, 1, 1)  # (3, 1, 3, 3)
            inner = torch.zeros_like(x[:1, :1])
            inner[..., 1:-1, 1:-1] = 1
            deg = torch.where(inner > 0, F.conv2d(x, k, padding=1, groups=3), x)
        return (deg + v * (x - deg)).clamp(0, 1)
    if name == "autocontrast":
        lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)  # (N, 3, 1, 1)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-12), x)
    x8 = torch.round(x * 255)
    if name == "posterize":
        q = torch.pow(2.0, 8 - v)
        return torch.floor(x8 / q) * q / 255
    if name == "solarize":
        return torch.where(x8 >= v, 255 - x8, x8) / 255
    if name == "equalize":
        n, c, h, w = x.shape
        return _equalize(x8.long().view(n, c, h * w)).view(n, c, h, w).to(x.dtype) / 255
    if name == "noise":
        return (x + v * noise).clamp(0, 1)
    raise ValueError(f"unknown photometric op {name!r}; expected one of {PHOTOMETRIC_OPS}")


def _slot_draw(us: Tensor, n_ops: int, apply_p: float) -> tuple[Tensor, Tensor]:
    """One RandAugment slot's draws from its uniforms (columns: op, apply, …): op index, and whether it applies."""
    return (us[:, 0] * n_ops).long().clamp(max=n_ops - 1), us[:, 1] < apply_p


def strong_view(views: Tensor, generator: torch.Generator | None = None, n_ops: int = 2, magnitude: int = 10,
                cutout: float | None = 1 / 3, ops: tuple[str, ...] = OFFICIAL_OPS, apply_p: float = 0.5,
                flip_p: float = 0.5, fill: float = 0.5) -> tuple[Tensor, StrongParams]:
    """The strong view T'(x) of weak views (N, 3, H, W): RandAugment as the official ``RandAugmentMC(2, 10)``.

    Per sample: a horizontal flip with ``flip_p``; ``n_ops`` ops drawn from ``ops`` with replacement, each
    applied with ``apply_p`` at an integer level in [1, magnitude) (value = level/10 of the op's range);
    then a cutout square of side ``cutout``·min(H, W), filled with gray (None or 0: no cutout).
    Per-sample choices are masks: every candidate op that some sample drew is evaluated for the batch
    and selected by ``torch.where`` (which ops were drawn is read from the generator's draws when they
    are on the host, so no device sync; with a device generator every candidate is evaluated). Pixel-wise ops commute with a remapping of pixels, so they are applied first and all
    geometric ops (flip included) are composed into one affine applied by one ``grid_sample``; pixels
    sampled from outside the weak view are ``fill`` gray. Returns the views and :class:`StrongParams`.
    """
    if magnitude < 2:
        raise ValueError(f"magnitude must be ≥ 2 (levels are drawn from [1, magnitude)), got {magnitude}")
    unknown = [o for o in ops if o not in GEOMETRIC_OPS + PHOTOMETRIC_OPS]
    if unknown:
        raise ValueError(f"unknown ops {unknown}; expected names from {GEOMETRIC_OPS + PHOTOMETRIC_OPS}")
    n, _, H, W = views.shape
    dev = views.device
    gdev = generator.device if generator is not None else dev
    u_gen = torch.rand((n, 1 + 4 * n_ops + 2), generator=generator, device=gdev)  # as _rand, kept on its device
    u = u_gen.to(dev)  # flip | per slot: op, apply, level, sign | cutout centre
    noise = None
    if "noise" in ops:
        noise = torch.randn((n_ops, *views.shape), generator=generator, device=gdev).to(dev, views.dtype)
    theta = op_matrix("hflip", torch.zeros(n, device=dev), (H, W))  # (N, 3, 3), flip applied first
    theta = torch.where((u[:, 0] < flip_p).view(-1, 1, 1), theta, torch.eye(3, device=dev))
    img = views
    op_ids, values = [], []
    for s in range(n_ops):  # a fixed number of slots, not samples
        us = u[:, 1 + 4 * s: 5 + 4 * s]  # (N, 4)
        idx, applied = _slot_draw(us, len(ops), apply_p)  # (N,) op drawn, (N,) whether it applies
        drawn = range(len(ops))
        if u_gen.device.type == "cpu":  # skip candidates no sample drew: read on the host, no device sync
            h_idx, h_applied = (idx, applied) if u is u_gen else _slot_draw(u_gen[:, 1 + 4 * s:], len(ops), apply_p)
            drawn = set(h_idx[h_applied].tolist())
        frac = (1 + torch.floor(us[:, 2] * (magnitude - 1))) / 10  # level in [1, magnitude), over 10
        sign = torch.where(us[:, 3] < 0.5, -1.0, 1.0)
        step, cand, value = torch.eye(3, device=dev).expand(n, 3, 3), img, torch.zeros(n, device=dev)
        for i, name in enumerate(ops):
            if i not in drawn:  # selects no sample: leaves step, cand and value as they are
                continue
            sel = applied & (idx == i)  # (N,)
            v = _op_value(name, frac, sign)
            value = torch.where(sel, v, value)
            if name in GEOMETRIC_OPS:
                step = torch.where(sel.view(-1, 1, 1), op_matrix(name, v, (H, W)), step)
            elif name != "identity":
                out = photometric(img, name, v, None if noise is None else noise[s])
                cand = torch.where(sel.view(-1, 1, 1, 1), out, cand)
        img = cand
        theta = theta @ step  # out(x) = in(A₁ A₂ … x): later ops multiply on the right
        op_ids.append(torch.where(applied, idx, -1))
        values.append(value)
    theta = theta[:, :2]  # (N, 2, 3)
    grid = F.affine_grid(theta, [n, 1, H, W], align_corners=False)  # (N, H, W, 2)
    sampled = F.grid_sample(torch.cat([img, torch.ones_like(img[:, :1])], 1), grid.to(img.dtype),
                            mode="bilinear", padding_mode="zeros", align_corners=False)  # (N, 4, H, W)
    img = sampled[:, :3] + (1 - sampled[:, 3:]) * fill  # coverage channel → gray outside the weak view
    boxes = torch.zeros(n, 4, device=dev)
    if cutout:
        side = cutout * min(H, W)
        sy, sx = side / H, side / W  # normalised sides
        y0 = (u[:, -2] - sy / 2).clamp_min(0)
        x0 = (u[:, -1] - sx / 2).clamp_min(0)
        boxes = torch.stack([y0, x0, (y0 + sy).clamp_max(1), (x0 + sx).clamp_max(1)], 1)
        img = torch.where(_box_mask(boxes, (H, W)), torch.full_like(img, fill), img)
    return img, StrongParams(theta, boxes, torch.stack(op_ids, 1), torch.stack(values, 1), tuple(ops))


def _box_mask(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 1, h, w) bool: pixel centres inside boxes (N, 4) [y0, x0, y1, x1] (normalised [0, 1])."""
    h, w = size
    ys = (torch.arange(h, device=boxes.device) + 0.5) / h  # (h,)
    xs = (torch.arange(w, device=boxes.device) + 0.5) / w  # (w,)
    iny = (ys >= boxes[:, 0:1]) & (ys < boxes[:, 2:3])  # (N, h)
    inx = (xs >= boxes[:, 1:2]) & (xs < boxes[:, 3:4])  # (N, w)
    return (iny[:, :, None] & inx[:, None, :])[:, None]


def weak_to_strong(x: Tensor, params: StrongParams, mode: str = "bilinear", fill: float = 0.0,
                   mask_cutout: bool = True) -> tuple[Tensor, Tensor]:
    """Replay the strong view's geometry on a weak-frame map x (N, C, h, w) or (N, h, w), any resolution.

    Returns (mapped, valid): valid (N, 1, h, w) bool is False where the strong pixel came from outside
    the weak view (and, with ``mask_cutout``, inside the cutout box, as the official replay does);
    there ``mapped`` holds ``fill`` (e.g. 255 for labels with ``mode="nearest"``).
    """
    h, w = x.shape[-2:]
    grid = F.affine_grid(params.theta.to(x.device, torch.float32), [x.shape[0], 1, h, w], align_corners=False)
    valid = (grid.abs() <= 1 + 1e-6).all(-1)[:, None]  # (N, 1, h, w)
    if mask_cutout:
        valid = valid & ~_box_mask(params.cutout.to(x.device), (h, w))
    mapped = _grid_sample(x, grid, mode, "border")
    keep = valid if x.dim() == 4 else valid[:, 0]
    return torch.where(keep, mapped, torch.full_like(mapped, fill)), valid
