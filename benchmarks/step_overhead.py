"""ProDA's own cost per stage-1 step against the network passes of that step, and against a loop baseline.

    python benchmarks/step_overhead.py [--reps 3] [--quick]

"ProDA's own cost" is everything `Stage1.micro_step` / `after_step` do that is not a network pass:
prototype distances and weights ω, the full→weak replay of the EMA features and soft labels, the
rectified label ŷ, the strong view and the replay of the teacher z_T into it, the student-side
distances, SCE / regulariser / KL (forward and backward), batch centroids and the prototype update,
and the EMA weight update. It is timed on the real code path, never re-implemented here:

1. The real `Stage1` (proda/method/stages.py): `micro_step + optimizer_step + after_step` with a stub
   network (a strided slice and two 1×1 convolutions that carry the real model's parameters, so the EMA
   update is real) minus the stub's own passes, the source CE (standard training) and the data
   augmentation → ProDA's cost as the library runs it.
2. A loop baseline in the style of the official code (per-class `torch.norm(f - η_k)`, per-sample crops
   that resize the whole map, per-sample per-op strong replay, per-(image, class) prototype updates with
   `.item()`, EMA by a Python loop over parameters with clones) on tensors of the paper step's shapes,
   checked first to compute the same maths on small tensors; its total against (1), round by round.
3. The network: DeepLab-v2-R101 forward+backward at 2×3×256×512 and forward (no grad) at
   2×3×512×1024. The paper-like step (crop 512×896, full image 1024×2048, batch 2) runs 3 student
   forward+backward passes at the crop (source, weak, strong) and one EMA forward on the full image;
   its network time is extrapolated by pixel count from the measured passes. The "same input" row
   measures everything at crop 256×512 / full 512×1024, without extrapolation.
Plus the `synthetic` preset's small model, whose network is tiny, measured end to end.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLOCKS, alternate, emit, machine, med, now, say, table  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from proda.data.augment import (full_to_weak, op_matrix, strong_view, weak_to_strong, weak_view,  # noqa: E402
                                GEOMETRIC_OPS)
from proda.data.stream import Split  # noqa: E402
from proda.method.losses import regulariser, sce_loss  # noqa: E402
from proda.method.prototypes import PrototypeBank, proto_distances  # noqa: E402
from proda.method.stages import Stage1, resize  # noqa: E402
from proda.models import build_model  # noqa: E402
from proda.presets import make_config  # noqa: E402

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


# ----------------------------------------------------------------------------- real path
class StubNet(nn.Module):
    """A nearly free stand-in for DeepLab-v2 that holds the real model's parameters (unused in forward),
    so `Stage1`'s EMA copy and update cost what they cost with the real network."""

    def __init__(self, real: nn.Module, stride: int = 8):
        super().__init__()
        self.real, self.stride = real, stride
        self.f = nn.Conv2d(3, real.feat_channels, 1)
        self.c = nn.Conv2d(real.feat_channels, real.num_classes, 1, bias=False)

    @property
    def feat_channels(self):
        return self.real.feat_channels

    @property
    def num_classes(self):
        return self.real.num_classes

    def forward(self, x):
        s = self.stride
        feat = self.f(x[:, :, s // 2::s, s // 2::s])
        return {"feat": feat, "out": self.c(feat)}

    def param_groups(self, lr, head_lr_mult=10.0):
        return [{"params": list(self.f.parameters()) + list(self.c.parameters()), "lr": lr, "lr_mult": 1.0}]


def fake_split(name: str, n: int, size: tuple[int, int], seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(name, n, size, images=torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g),
                 labels=torch.randint(0, K, (n, *size), dtype=torch.uint8, generator=g))


def build_stage(cfg, model, source: Split, target: Split, stride: int, seed: int = 0, device="cpu") -> Stage1:
    n = target.size
    out_hw = (cfg.data.full_size[0] // stride, cfg.data.full_size[1] // stride)
    g = torch.Generator().manual_seed(seed)
    soft = F.softmax(3 * torch.randn(n, K, *out_hw, generator=g), 1).half()
    protos = torch.randn(K, model.feat_channels, generator=g)
    return Stage1(cfg, model, source, target, soft, protos, torch.ones(K), torch.device(device), seed)


def full_step(stage: Stage1) -> None:
    stage.micro_step(1)
    stage.optimizer_step()
    stage.after_step()


def data_only(stage: Stage1) -> None:
    stage.target_batch()
    stage.source_batch()


def stub_passes(stage: Stage1) -> None:
    """What is not ProDA's in a step, with the stub network: its passes as `micro_step` makes them (EMA on
    the full image, 3 student passes) and the source CE (logits upsampled to the labels), which any
    segmentation training has."""
    c = stage.cfg.data
    n = stage.micro_bs
    full = torch.rand(n, 3, *c.full_size, device=stage.device)
    crop = torch.rand(n, 3, *c.crop, device=stage.device)
    y = torch.randint(0, K, (n, *c.crop), device=stage.device)
    with torch.no_grad():
        stage.ema(full)
    loss = stage.source_ce(crop, y) + sum(v.float().mean() for x in (crop, crop) for v in stage.model(x).values())
    loss.backward()
    stage.opt.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------- network
def network_fns(model: nn.Module, n: int, crop: tuple[int, int], full: tuple[int, int]) -> dict:
    """DeepLab-v2 forward+backward at the crop (train mode) and forward without grad at the full image."""
    xc, xf = torch.randn(n, 3, *crop), torch.randn(n, 3, *full)

    def fb():
        model.train()
        o = model(xc)
        (o["out"].float().mean() + o["feat"].float().mean()).backward()
        model.zero_grad(set_to_none=True)

    def fwd():
        with torch.no_grad():
            model(xf)

    return {"net: fwd+bwd crop": fb, "net: fwd full": fwd}


# ---------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="rounds of all measurements (after one warm-up round)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: this process's CPU time (robust to other processes' load; default), wall: wall time")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and ResNet-18: a dry run of the script")
    args = ap.parse_args()
    global CLOCK
    CLOCK = args.clock
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    say(machine())
    say(f"clock: {args.clock} time, {args.threads} torch thread(s)")
    quick = args.quick
    backbone = "resnet18" if quick else "resnet101"
    paper = dict(n=2, crop=(512, 896), full=(1024, 2048)) if not quick else dict(n=2, crop=(64, 112), full=(128, 256))
    small = dict(n=2, crop=(256, 512), full=(512, 1024)) if not quick else dict(n=2, crop=(32, 64), full=(64, 128))

    say("\n== loop baseline computes the same maths (small tensors)")
    for line in check_same_maths():
        say("  " + line)

    model = build_model(backbone, K)
    ema = copy.deepcopy(model).requires_grad_(False)
    nparams = sum(p.numel() for p in model.parameters())

    # every measurement runs in every round, in rotating order: the load of this shared machine swings by
    # several times within minutes, so each ratio is taken within a round, then the median over rounds
    t = Inputs(**paper)
    protos_loop = t.protos.clone()
    gen_l = torch.Generator().manual_seed(5)
    loop_parts = []
    fns = {"loop": lambda: loop_parts.append(loop_step(t, protos_loop, (model, ema), gen_l))}
    for name, s in (("paper", paper), ("same", small)):
        cfg = make_config("paper-gta5", "pd+sl", 0, {"data.batch_size": s["n"], "data.crop": list(s["crop"]),
                                                     "data.full_size": list(s["full"]), "device": "cpu"})
        stage = build_stage(cfg, StubNet(model, 8), fake_split("src", 4, s["full"], 1),
                            fake_split("tgt", 4, s["full"], 2), 8)
        fns[f"{name}: stub step"] = lambda st=stage: full_step(st)
        fns[f"{name}: stub passes"] = lambda st=stage: stub_passes(st)
        fns[f"{name}: data"] = lambda st=stage: data_only(st)
    fns.update(network_fns(model, small["n"], small["crop"], small["full"]))
    say(f"\n== measuring: {len(fns)} items × (1 warm-up + {args.reps} rounds), rotating order")
    t0 = now()
    times = alternate(fns, args.reps, warmup=1, clock=CLOCK)
    say(f"  ({now() - t0:.0f} s)")
    loop_parts = loop_parts[1:]  # drop the warm-up's breakdown
    R = range(args.reps)

    # 1. the real code path
    ops = {n: [times[f"{n}: stub step"][r] - times[f"{n}: stub passes"][r] - times[f"{n}: data"][r] for r in R]
           for n in ("paper", "same")}
    say(f"\n== 1. the real Stage1 code path (stub network carrying the {nparams / 1e6:.1f}M parameters of {backbone} "
        "DeepLab-v2): ProDA ops = stub step − (stub passes + source CE) − data augmentation")
    say(table(["setting", "stub step s", "stub passes + src CE s", "data aug s", "ProDA ops s"],
              [[n, med(times[f"{n}: stub step"]), med(times[f"{n}: stub passes"]), med(times[f"{n}: data"]),
                med(ops[n])] for n in ("paper", "same")]))

    # 2. the loop baseline against it
    speedup = med([times["loop"][r] / ops["paper"][r] for r in R])
    say(f"\n== 2. loop baseline (official style), paper-like: batch {paper['n']}, {C}-ch features, {K} classes, "
        f"loss maps {paper['crop'][0] // 4}×{paper['crop'][1] // 4}, EMA maps {paper['full'][0] // 8}×"
        f"{paper['full'][1] // 8}; medians of {args.reps} rounds")
    rows = [[p, 1000 * med([d[p] for d in loop_parts])] for p in PARTS]
    rows.append(["total (whole calls)", 1000 * med(times["loop"])])
    say(table(["component", "loop ms"], rows))
    say(f"  loop total / the real Stage1's ProDA ops (paper row of 1), per round: {speedup:.1f}×")

    # 3. the network
    fb, fw = times["net: fwd+bwd crop"], times["net: fwd full"]
    scale_crop = (paper["crop"][0] * paper["crop"][1]) / (small["crop"][0] * small["crop"][1])
    scale_full = (paper["full"][0] * paper["full"][1]) / (small["full"][0] * small["full"][1])
    net_same = [3 * fb[r] + fw[r] for r in R]
    net_paper = [scale_crop * 3 * fb[r] + scale_full * fw[r] for r in R]
    say(f"\n== 3. {backbone} DeepLab-v2 passes, batch {small['n']}: fwd+bwd at {small['crop']} "
        f"{', '.join(f'{x:.1f}' for x in fb)} s; fwd (no grad) at {small['full']} {', '.join(f'{x:.1f}' for x in fw)} s")
    say(f"  same-input step: 3 × fwd+bwd + 1 × fwd; paper step (crop {paper['crop']}, full {paper['full']}): "
        f"3 × {scale_crop:.2f} × fwd+bwd + {scale_full:.0f} × fwd (pixel-count scaling)")
    del model, ema

    # 4. the synthetic preset, end to end (real small model vs the same step with a stub)
    scfg = make_config("synthetic", "pd+sl", 0, {"device": "cpu"})
    say(f"\n== 4. the `synthetic` preset (small model, {scfg.model.feat_channels}-ch features, batch "
        f"{scfg.data.batch_size}, crop {scfg.data.crop[0]}×{scfg.data.crop[1]}), real step vs stub step")
    from proda.data.stream import open_split
    from proda.engine.nodes import new_model

    ssrc, stgt = open_split(scfg, "source", "train"), open_split(scfg, "target", "train")
    real_stage = build_stage(scfg, new_model(scfg), ssrc, stgt, 4)
    stub_stage = build_stage(scfg, StubNet(new_model(scfg), 4), ssrc, stgt, 4)
    sreps = max(5, 3 * args.reps)
    st = alternate({"real step": lambda: full_step(real_stage), "stub step": lambda: full_step(stub_stage),
                    "stub passes": lambda: stub_passes(stub_stage), "data": lambda: data_only(stub_stage)},
                   reps=sreps, warmup=2, clock=CLOCK)
    s_ops = [st["stub step"][r] - st["stub passes"][r] - st["data"][r] for r in range(sreps)]
    synth_frac = med([s_ops[r] / st["real step"][r] for r in range(sreps)])
    say(table(["real step s", "stub step s", "stub passes + src CE s", "data aug s", "ProDA ops s", "ops % of step"],
              [[med(st["real step"]), med(st["stub step"]), med(st["stub passes"]), med(st["data"]), med(s_ops),
                100 * synth_frac]]))

    # summary: per-round fractions, median over rounds
    def frac(n, net):
        return [ops[n][r] / (net[r] + ops[n][r] + times[f"{n}: data"][r]) for r in R]

    f_paper, f_same = frac("paper", net_paper), frac("same", net_same)
    say("\n== ProDA's share of a stage-1 step (step = network passes + ProDA ops + data augmentation; the "
        "optimiser step is left out of the paper rows, which makes their share larger, not smaller); "
        "shares are per round, then the median (min–max)")
    rows = [["paper-like (network extrapolated)", med(net_paper), med(ops["paper"]), med(times["paper: data"]),
             100 * med(f_paper), f"{100 * min(f_paper):.2f}–{100 * max(f_paper):.2f}"],
            ["same input (all measured)", med(net_same), med(ops["same"]), med(times["same: data"]),
             100 * med(f_same), f"{100 * min(f_same):.2f}–{100 * max(f_same):.2f}"],
            ["synthetic preset (all measured)", med(st["real step"]) - med(s_ops) - med(st["data"]), med(s_ops),
             med(st["data"]), 100 * synth_frac, ""]]
    say(table(["setting", "network s", "ProDA ops s", "data aug s", "ops %", "range %"], rows))
    say(f"loop baseline (official style) / the real Stage1's ProDA ops, paper-like: {speedup:.1f}×")
    emit({"overhead_fraction": round(med(f_paper), 4), "loop_baseline_speedup": round(speedup, 1),
          "overhead_fraction_same_input": round(med(f_same), 4),
          "overhead_fraction_synthetic": round(synth_frac, 4),
          "proda_ops_s_paper": round(med(ops["paper"]), 3), "network_s_paper_est": round(med(net_paper), 1),
          "net_fwd_bwd_s": round(med(fb), 2), "net_fwd_full_s": round(med(fw), 2),
          "loop_components_s": round(med(times["loop"]), 3), "backbone": backbone, "clock": CLOCK,
          "threads": args.threads, "quick": quick})
    return 0


if __name__ == "__main__":
    sys.exit(main())
