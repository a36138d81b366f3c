"""ProDA's own cost per stage-1 step against the network passes of that step, and against a loop baseline
(RESULTS.md §1).

    python benchmarks/step_overhead.py [--reps 3] [--quick]

"ProDA's own cost" is everything `Stage1.micro_step` / `after_step` do that is not a network pass (prototype
distances and ω, the full→weak replay, ŷ, the strong view and z_T's replay into it, SCE / regulariser / KL
forward and backward, centroids and the prototype update, the EMA update), timed on the real code path:
1. the real `Stage1` with a stub network (`StubNet`: carries the real model's parameters, so the EMA update is
   real) — a full step minus the stub's passes with the source CE, minus the data augmentation;
2. the loop baseline in the official code's style (`_loop_baseline.py`, checked first to compute the same maths)
   on tensors of the paper step's shapes, against (1) round by round;
3. DeepLab-v2-R101 forward+backward at 2×3×256×512 and forward at 2×3×512×1024; the paper step (crop 512×896,
   full 1024×2048, batch 2: 3 student passes at the crop, one EMA pass on the full image) extrapolated by pixel
   count, the "same input" row (crop 256×512 / full 512×1024) all measured;
4. the `synthetic` preset's small model end to end (real step vs stub step).
gpu_check.sh imports this module (StubNet, stub_passes, data_only, Inputs, loop_step, build_stage, ...).
The last line is one JSON object.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (alternate, build_stage, emit, fake_split, full_step, med, now, parser, say, start,  # noqa: E402
                     table)
from _loop_baseline import C, K, Inputs, check_same_maths, loop_step  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from proda.models import build_model  # noqa: E402
from proda.presets import make_config  # noqa: E402


class StubNet(nn.Module):
    """A nearly free stand-in for DeepLab-v2 that holds the real model's parameters (unused in forward),
    so `Stage1`'s EMA copy and update cost what they cost with the real network."""

    def __init__(self, real: nn.Module, stride: int = 8):
        super().__init__()
        self.real, self.stride = real, stride
        self.feat_channels, self.num_classes = real.feat_channels, real.num_classes
        self.f = nn.Conv2d(3, real.feat_channels, 1)
        self.c = nn.Conv2d(real.feat_channels, real.num_classes, 1, bias=False)

    def forward(self, x):
        s = self.stride
        feat = self.f(x[:, :, s // 2::s, s // 2::s])
        return {"feat": feat, "out": self.c(feat)}

    def param_groups(self, lr, head_lr_mult=10.0):
        return [{"params": list(self.f.parameters()) + list(self.c.parameters()), "lr": lr, "lr_mult": 1.0}]


def data_only(stage) -> None:
    stage.target_batch()
    stage.source_batch()


def stub_passes(stage) -> None:
    """What is not ProDA's in a step, with the stub network: its passes as `micro_step` makes them (EMA on
    the full image, 3 student passes) and the source CE, which any segmentation training has."""
    c, n, dev = stage.cfg.data, stage.micro_bs, stage.device
    full, crop = torch.rand(n, 3, *c.full_size, device=dev), torch.rand(n, 3, *c.crop, device=dev)
    with torch.no_grad():
        stage.ema(full)
    loss = stage.source_ce(crop, torch.randint(0, K, (n, *c.crop), device=dev))
    (loss + sum(v.float().mean() for x in (crop, crop) for v in stage.model(x).values())).backward()
    stage.opt.zero_grad(set_to_none=True)


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


def main() -> int:
    ap = parser(__doc__, timing=True)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and ResNet-18: a dry run of the script")
    args = ap.parse_args()
    start(args)
    torch.manual_seed(0)
    quick = args.quick
    backbone = "resnet18" if quick else "resnet101"
    paper = dict(n=2, crop=(64, 112), full=(128, 256)) if quick else dict(n=2, crop=(512, 896), full=(1024, 2048))
    small = dict(n=2, crop=(32, 64), full=(64, 128)) if quick else dict(n=2, crop=(256, 512), full=(512, 1024))
    say("\n== loop baseline computes the same maths (small tensors)")
    for line in check_same_maths():
        say("  " + line)
    model = build_model(backbone, K)
    ema = copy.deepcopy(model).requires_grad_(False)
    nparams = sum(p.numel() for p in model.parameters())

    # every measurement runs in every round, in rotating order: the load of this shared machine swings by
    # several times within minutes, so each ratio is taken within a round, then the median over rounds
    t = Inputs(**paper)
    protos_loop, gen_l, loop_parts = t.protos.clone(), torch.Generator().manual_seed(5), []
    fns = {"loop": lambda: loop_parts.append(loop_step(t, protos_loop, (model, ema), gen_l, args.clock))}
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
    times = alternate(fns, args.reps, warmup=1, clock=args.clock)
    say(f"  ({now() - t0:.0f} s)")
    loop_parts, R = loop_parts[1:], range(args.reps)  # the warm-up's breakdown dropped

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
    rows = [[p, 1000 * med([d[p] for d in loop_parts])] for p in loop_parts[0]]
    say(table(["component", "loop ms"], rows + [["total (whole calls)", 1000 * med(times["loop"])]]))
    say("  not in the loop baseline: the strong view and the replay of z_T into it (their rows time the "
        "vectorised path in both columns; its distances are the loop's)")
    say(f"  loop total / the real Stage1's ProDA ops (paper row of 1), per round: {speedup:.1f}×")

    # 3. the network
    fb, fw = times["net: fwd+bwd crop"], times["net: fwd full"]
    scale_crop = (paper["crop"][0] * paper["crop"][1]) / (small["crop"][0] * small["crop"][1])
    scale_full = (paper["full"][0] * paper["full"][1]) / (small["full"][0] * small["full"][1])
    net_same = [3 * fb[r] + fw[r] for r in R]
    net_paper = [scale_crop * 3 * fb[r] + scale_full * fw[r] for r in R]
    secs = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    say(f"\n== 3. {backbone} DeepLab-v2 passes, batch {small['n']}: fwd+bwd at {small['crop']} {secs(fb)} s; "
        f"fwd (no grad) at {small['full']} {secs(fw)} s")
    say(f"  same-input step: 3 × fwd+bwd + 1 × fwd; paper step (crop {paper['crop']}, full {paper['full']}): "
        f"3 × {scale_crop:.2f} × fwd+bwd + {scale_full:.0f} × fwd (pixel-count scaling)")
    del model, ema

    # 4. the synthetic preset, end to end (real small model vs the same step with a stub)
    from proda.data.stream import open_split
    from proda.engine.nodes import new_model

    scfg = make_config("synthetic", "pd+sl", 0, {"device": "cpu"})
    say(f"\n== 4. the `synthetic` preset (small model, {scfg.model.feat_channels}-ch features, batch "
        f"{scfg.data.batch_size}, crop {scfg.data.crop[0]}×{scfg.data.crop[1]}), real step vs stub step")
    ssrc, stgt = open_split(scfg, "source", "train"), open_split(scfg, "target", "train")
    real_stage = build_stage(scfg, new_model(scfg), ssrc, stgt, 4)
    stub_stage = build_stage(scfg, StubNet(new_model(scfg), 4), ssrc, stgt, 4)
    sreps = max(5, 3 * args.reps)
    st = alternate({"real step": lambda: full_step(real_stage), "stub step": lambda: full_step(stub_stage),
                    "stub passes": lambda: stub_passes(stub_stage), "data": lambda: data_only(stub_stage)},
                   reps=sreps, warmup=2, clock=args.clock)
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
    rng = lambda f: f"{100 * min(f):.2f}–{100 * max(f):.2f}"  # noqa: E731
    say(table(["setting", "network s", "ProDA ops s", "data aug s", "ops %", "range %"], [
        ["paper-like (network extrapolated)", med(net_paper), med(ops["paper"]), med(times["paper: data"]),
         100 * med(f_paper), rng(f_paper)],
        ["same input (all measured)", med(net_same), med(ops["same"]), med(times["same: data"]),
         100 * med(f_same), rng(f_same)],
        ["synthetic preset (all measured)", med(st["real step"]) - med(s_ops) - med(st["data"]), med(s_ops),
         med(st["data"]), 100 * synth_frac, ""]]))
    say(f"loop baseline (official style) / the real Stage1's ProDA ops, paper-like: {speedup:.1f}×")
    emit({"overhead_fraction": round(med(f_paper), 4), "loop_baseline_speedup": round(speedup, 1),
          "overhead_fraction_same_input": round(med(f_same), 4),
          "overhead_fraction_synthetic": round(synth_frac, 4),
          "proda_ops_s_paper": round(med(ops["paper"]), 3), "network_s_paper_est": round(med(net_paper), 1),
          "net_fwd_bwd_s": round(med(fb), 2), "net_fwd_full_s": round(med(fw), 2),
          "loop_components_s": round(med(times["loop"]), 3), "backbone": backbone, "clock": args.clock,
          "threads": args.threads, "quick": quick})
    return 0


if __name__ == "__main__":
    sys.exit(main())
