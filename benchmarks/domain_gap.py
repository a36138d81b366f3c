"""How wide is the embedded benchmark's domain gap? Source-only vs. oracle on the target val split.

Trains the default small DeepLab-v2 twice with the same budget — on source train (source-only) and on
target train with its labels (oracle, the upper bound) — and evaluates both on target val. Also reports
the pixel accuracy of the source-only model's argmax pseudo labels on target train, against the hidden
labels: the starting point of ProDA's self-training. The last line printed is one JSON object.

    python benchmarks/domain_gap.py [--steps 600] [--batch 16] [--seed 0]

The training loop is deliberately minimal (the project's engine is not used): ImageNet-normalised
input, random horizontal flip, logits upsampled bilinearly to label size, cross-entropy ignoring 255,
Adam with a polynomial learning-rate decay.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402
from proda.data.augment import normalize  # noqa: E402
from proda.data.classes import CITYSCAPES_19  # noqa: E402
from proda.data.synthetic import SyntheticSpec, load_split  # noqa: E402
from proda.evaluation import ConfusionMatrix  # noqa: E402
from proda.models import build_model  # noqa: E402

# The default small model of the embedded benchmark (see benchmarks/RESULTS.md for how it was chosen).
MODEL = dict(width=16, output_stride=4, feat_channels=32, dilations=(1, 2, 4, 6))


def normalise(images: torch.Tensor) -> torch.Tensor:  # uint8 (N, 3, H, W) → float32, ImageNet mean/std
    return normalize(images.float() / 255)


def train(images: torch.Tensor, labels: torch.Tensor, model_args: dict, steps: int, batch: int, lr: float,
          seed: int, log_every: int = 100) -> tuple[torch.nn.Module, float]:
    """Train a fresh model on (uint8 (N, 3, H, W), uint8 (N, H, W)); returns (model, median seconds per
    step — the median, because other jobs on a shared 2-core machine make the mean jumpy)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model("small", 19, **model_args)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / steps) ** 0.9)
    model.train()
    t0 = time.perf_counter()
    step_times = []
    for step in range(steps):
        t_step = time.perf_counter()
        idx = torch.randint(len(labels), (batch,), generator=gen)
        x, y = normalise(images[idx]), labels[idx].long()  # (B, 3, H, W), (B, H, W)
        flip = torch.rand(batch, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        logits = F.interpolate(model(x)["out"], size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step_times.append(time.perf_counter() - t_step)
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return model, statistics.median(step_times) if step_times else float("nan")


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 64) -> ConfusionMatrix:
    model.eval()
    cm = ConfusionMatrix(19)
    for i in range(0, len(labels), batch):
        y = labels[i:i + batch]
        logits = F.interpolate(model(normalise(images[i:i + batch]))["out"], size=y.shape[-2:],
                               mode="bilinear", align_corners=False)
        cm.update(pred=logits.argmax(1), target=y)
    return cm


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="training steps per model")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0, help="training seed (the benchmark's images use --data-seed)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--width", type=int, default=MODEL["width"])
    p.add_argument("--output-stride", type=int, default=MODEL["output_stride"])
    p.add_argument("--feat-channels", type=int, default=MODEL["feat_channels"])
    p.add_argument("--dilations", type=int, nargs="+", default=MODEL["dilations"])
    args = p.parse_args(argv)
    model_args = dict(width=args.width, output_stride=args.output_stride, feat_channels=args.feat_channels,
                      dilations=tuple(args.dilations))
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    spec = SyntheticSpec(seed=args.data_seed)
    src = load_split("source", "train", spec, args.cache_dir)
    tgt = load_split("target", "train", spec, args.cache_dir)
    val = load_split("target", "val", spec, args.cache_dir)
    print(f"spec {spec}; model {model_args}; batch {args.batch}, steps {args.steps}, Adam lr {args.lr}", flush=True)

    results = {}
    for name, (images, labels) in (("source-only", src), ("oracle", tgt)):
        print(f"training {name} on {len(labels)} images", flush=True)
        model, sps = train(images, labels, model_args, args.steps, args.batch, args.lr, args.seed)
        results[name] = (model, evaluate(model, *val), sps)
    pseudo = evaluate(results["source-only"][0], *tgt)  # argmax pseudo labels vs the hidden target labels

    iou = {k: (v[1].iou() * 100).tolist() for k, v in results.items()}
    rows = [[c, iou["source-only"][k], iou["oracle"][k], iou["oracle"][k] - iou["source-only"][k]]
            for k, c in enumerate(CITYSCAPES_19)]
    mious = {k: v[1].miou() * 100 for k, v in results.items()}
    rows.append(["mIoU", mious["source-only"], mious["oracle"], mious["oracle"] - mious["source-only"]])
    print(table(["class", "source-only", "oracle", "gap"], rows, digits=1))
    sps = {k: round(v[2], 3) for k, v in results.items()}
    print(f"median seconds/step (batch {args.batch}): {sps}; pixel accuracy on target val: "
          f"source-only {results['source-only'][1].pixel_accuracy() * 100:.1f}, "
          f"oracle {results['oracle'][1].pixel_accuracy() * 100:.1f}")
    out = {"source_only_miou": round(mious["source-only"], 2), "oracle_miou": round(mious["oracle"], 2),
           "pseudo_label_accuracy": round(pseudo.pixel_accuracy() * 100, 2),
           "seconds": round(time.perf_counter() - t_start, 1)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
