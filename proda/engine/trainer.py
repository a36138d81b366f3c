"""The training loop: steps, evaluation, checkpoints with every RNG state, reporting through a callback.

``run_stage`` drives any stage of :mod:`proda.method.stages`. A run stopped at any step and resumed
from its last checkpoint ends bit-identical (on CPU) to an uninterrupted one. Losses are checked for
NaN/inf at every log step without adding host syncs to the other steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from proda import checkpoint as ckpt
from proda import distributed as ddp
from proda.data.augment import normalize
from proda.data.classes import class_names
from proda.data.stream import Split, eval_batches, to_device
from proda.evaluation import ConfusionMatrix

# reporter(metrics), called on every rank at every log step (kind "train": losses, images/s, lr) and every
# evaluation (kind "eval": mIoU, per-class IoU): the Ray layer plugs in ray.train.report; None → no reporting
Reporter = Callable[[dict[str, Any]], None]


class Notice(str):
    """A log line that reaches the user even when the caller keeps the step lines quiet (the runner without
    ``--verbose``): e.g. that a stage resumed from its checkpoint rather than starting over. A ``str``, so
    every ``log`` callable takes it as it takes any line."""


class NonFiniteLoss(RuntimeError):
    """A loss became NaN/inf; the message names the stage, step and loss term."""


def predict(model: torch.nn.Module, images: torch.Tensor, size) -> torch.Tensor:
    """Class map (n, *size) of images in [0, 1]: the logits upsampled bilinearly to ``size``, then argmax."""
    out = F.interpolate(model(normalize(images))["out"], size=tuple(size), mode="bilinear", align_corners=False)
    return out.max(1)[1]


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: Split, num_classes: int, device: torch.device,
             batch_size: int = 16, max_images: int | None = None) -> ConfusionMatrix:
    """Confusion matrix of ``model`` on ``split`` (sharded over ranks, all-reduced)."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, device=device)
    for _, img, lab in eval_batches(split, batch_size, max_images):
        img, lab = to_device(img, lab, device)
        cm.update(pred=predict(model, img, lab.shape[-2:]), target=lab)
    cm.all_reduce()
    model.train(was_training)
    return cm


def eval_class_names(num_classes: int) -> tuple[str, ...]:
    """The names of an evaluation's per-class IoU entries (a protocol's class names, else the channel numbers)."""
    return class_names(num_classes) if num_classes in (19, 16, 13) else tuple(str(i) for i in range(num_classes))


def eval_metrics(cm: ConfusionMatrix, prefix: str = "") -> dict[str, Any]:
    iou = cm.iou()
    names = eval_class_names(cm.num_classes)
    return {f"{prefix}miou": 100 * cm.miou(), f"{prefix}iou": {n: 100 * float(v) for n, v in zip(names, iou)}}


class JsonlLog:
    """Append-only metrics log (rank 0 writes)."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, rec: dict) -> None:
        if self.path is None or not ddp.is_main():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(rec, allow_nan=True) + "\n"
        with open(self.path, "ab+") as f:  # writes append; reads may look back
            size = f.seek(0, 2)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # the last writer was killed mid-line: do not glue onto its fragment
                    line = "\n" + line
            f.write(line.encode())


def run_stage(stage, steps: int, out_dir: str | Path, val: Split | None = None, *, reporter: Reporter | None = None,
              resume: bool = True, log: Callable[[str], None] = print, metrics_log: Path | None = None,
              stop_after: int | None = None, stage_name: str | None = None) -> dict[str, Any]:
    """Train ``stage`` for ``steps`` optimiser steps; return the last evaluation's metrics.

    The loop's settings are the stage's config's: ``log_interval``, ``checkpoint_interval``, and, with a
    ``val`` split, ``eval.interval`` / ``eval.batch_size`` / ``eval.max_images`` over ``data.num_classes``.
    Checkpoints go to ``out_dir/checkpoint.pt`` (atomically replaced); ``resume`` continues from it.
    ``stop_after`` ends this call after that many steps, with a checkpoint at the step it stops on
    (``python -m proda.train --stop-after``; the tests' way to interrupt a run at a chosen step).
    """
    cfg = stage.cfg
    log_interval, checkpoint_interval, eval_interval = cfg.log_interval, cfg.checkpoint_interval, cfg.eval.interval
    out_dir = Path(out_dir)
    name = stage_name or stage.name
    ck_path = out_dir / "checkpoint.pt"
    jl = JsonlLog(metrics_log)
    start = 0
    last_eval: dict[str, Any] = {}
    if resume and ck_path.is_file():
        st = ckpt.load(ck_path)
        stage.load_state_dict(st["stage"])
        rng = st["rng"] if ddp.is_main() else ckpt.load(out_dir / f"rng_rank{ddp.rank()}.pt")
        ckpt.set_rng_state(rng, stage.generators)
        start, last_eval = int(st["step"]), st.get("last_eval", {})
        log(Notice(f"[{name}] resumed from step {start}"))
    accum = cfg.optim.grad_accum
    t0, seen, done_in_call = time.perf_counter(), 0, 0
    bad = None  # accumulated non-finite flags per loss term, checked at log steps only (no per-step sync)
    for step in range(start, steps):
        stage.set_lr(step, steps)
        acc: dict[str, torch.Tensor] = {}
        for _ in range(accum):
            losses = stage.micro_step(accum)
            for k, v in losses.items():
                acc[k] = acc.get(k, 0) + v / accum
        stage.optimizer_step()
        stage.after_step()
        seen += stage.micro_bs * accum * ddp.world_size()
        flags = torch.stack([~torch.isfinite(v) for v in acc.values()])
        bad = flags if bad is None else bad | flags
        last = step + 1 == steps
        if (step + 1) % log_interval == 0 or last:
            if bool(bad.any()):
                term = list(acc)[int(bad.nonzero()[0, 0])]
                raise NonFiniteLoss(f"stage '{name}': loss term '{term}' became NaN/inf at or before step {step + 1}")
            bad = None
            dt = time.perf_counter() - t0
            rec = {"stage": name, "step": step + 1, "kind": "train", **{k: float(v) for k, v in acc.items()},
                   "images_per_s": seen / max(dt, 1e-9), "lr": stage.opt.param_groups[0]["lr"]}
            jl.write(rec)
            log(f"[{name}] step {step + 1}/{steps} " + " ".join(f"{k}={float(v):.4f}" for k, v in acc.items())
                + f" {rec['images_per_s']:.1f} img/s")
            if reporter is not None:  # the learning curves (Tune's results, TensorBoard)
                reporter(rec)
            t0, seen = time.perf_counter(), 0
        metrics = None
        if val is not None and ((step + 1) % eval_interval == 0 or last):
            te = time.perf_counter()
            cm = evaluate(stage.eval_model, val, cfg.data.num_classes, stage.device, cfg.eval.batch_size,
                          cfg.eval.max_images)
            last_eval = eval_metrics(cm)
            metrics = {"stage": name, "step": step + 1, "kind": "eval", **last_eval,
                       "eval_seconds": time.perf_counter() - te}
            jl.write(metrics)
            log(f"[{name}] step {step + 1} eval mIoU {last_eval['miou']:.2f}")
            t0 += time.perf_counter() - te  # keep evaluation out of images/s
        done_in_call += 1
        stopping = stop_after is not None and done_in_call >= stop_after and not last
        if (step + 1) % checkpoint_interval == 0 or last or metrics is not None or stopping:
            rng = ckpt.rng_state(stage.generators)  # each rank's own RNG streams
            if ddp.is_main():
                ckpt.save(ck_path, {"stage": stage.state_dict(), "rng": rng, "step": step + 1,
                                    "last_eval": last_eval})
            else:
                ckpt.save(out_dir / f"rng_rank{ddp.rank()}.pt", rng)
            ddp.barrier()
        if reporter is not None and metrics is not None:
            reporter(metrics)
        if stopping:
            return {"stopped_at": step + 1, **last_eval}
    return last_eval
