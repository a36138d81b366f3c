"""Target-val evaluation speed, the confusion matrix on the device vs. a numpy round trip, and the share
of a `synthetic`-preset node's time spent evaluating.

    python benchmarks/eval_speed.py [--reps 3] [--node-dir DIR] [--storage /tmp/proda-bench]

1. images/s of `proda.engine.trainer.evaluate` on the embedded benchmark's target val split (500 images
   at 64×128) with the `synthetic` preset's model and eval batch size (64), plus its parts: the model's
   forward, the upsampling + argmax, the confusion-matrix update.
2. `ConfusionMatrix.update` (one `bincount` on the tensors' device) vs. the official code's round trip
   (`.cpu().numpy()` + `np.bincount`), on one eval batch (64×64×128 pixels), alternated.
3. A `synthetic`-preset node (the source-only warm-up: 600 steps, evaluated at steps 200/400/600 — the
   node kind with the cheapest steps, so the largest evaluation share) is run plainly with `run_node`,
   with `evaluate` wrapped to add up its CPU and wall time; share = evaluation time ÷ the node's time
   (CPU time: robust to other processes' load; wall: with the `eval_seconds` of its metrics.jsonl).
   ``--node-dir`` reads the wall-time share of a node folder that has already run instead (its wall
   time from ``node_seconds.json`` written by benchmarks/ray_overhead.py, else from file times).
Timings use this process's CPU time (``--clock cpu``, 1 thread) unless ``--clock wall``.
The last line is one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLOCKS, alternate, emit, full_step, med, parser, say, start, table  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from proda.data.augment import normalize  # noqa: E402
from proda.data.stream import eval_batches, open_split, to_device  # noqa: E402
from proda.engine.nodes import Node, new_model, run_node  # noqa: E402
from proda.engine.trainer import evaluate  # noqa: E402
from proda.evaluation import ConfusionMatrix  # noqa: E402
from proda.presets import make_config  # noqa: E402

K = 19


def numpy_update(hist: np.ndarray, pred: torch.Tensor, target: torch.Tensor) -> None:
    """The official code's `fast_hist` after a host round trip."""
    p, t = pred.cpu().numpy().ravel(), target.cpu().numpy().ravel()
    keep = (t >= 0) & (t < K) & (p >= 0) & (p < K)
    hist += np.bincount(K * t[keep].astype(np.int64) + p[keep], minlength=K * K).reshape(K, K)


def node_share(cfg, storage: Path) -> dict:
    """Run the synthetic-preset source-only warm-up node plainly; return its eval share (CPU and wall)."""
    import proda.engine.trainer as trainer

    spent = {"cpu": 0.0, "wall": 0.0}
    inner = trainer.evaluate

    def counted(*a, **k):  # run_stage looks `evaluate` up in its module at each call
        c0, w0 = CLOCKS["cpu"](), CLOCKS["wall"]()
        try:
            return inner(*a, **k)
        finally:
            spent["cpu"] += CLOCKS["cpu"]() - c0
            spent["wall"] += CLOCKS["wall"]() - w0

    out = storage / "eval-node"
    trainer.evaluate = counted
    try:
        c0, w0 = CLOCKS["cpu"](), CLOCKS["wall"]()
        run_node(Node("warmup", "warmup"), cfg, out, {}, metrics_log=out / "metrics.jsonl", log=lambda s: None)
        cpu, wall = CLOCKS["cpu"]() - c0, CLOCKS["wall"]() - w0
    finally:
        trainer.evaluate = inner
    res = read_share(out, wall)
    res.update(node_cpu_s=cpu, eval_cpu_s=spent["cpu"], share_cpu=spent["cpu"] / cpu)
    return res


def step_costs(clock: str, steps: int = 8) -> dict[str, float]:
    """Seconds per optimiser step of each node kind of the synthetic preset (after 3 warm-up steps)."""
    from proda.method import stages as S

    cfg = make_config("synthetic", "proda", 0, {"device": "cpu"})
    dev = torch.device("cpu")
    src, tgt = open_split(cfg, "source", "train"), open_split(cfg, "target", "train")
    g = torch.Generator().manual_seed(0)
    h, w = cfg.data.full_size[0] // 4, cfg.data.full_size[1] // 4  # the small model's output (stride 4)
    soft = F.softmax(3 * torch.randn(tgt.size, K, h, w, generator=g), 1).half()
    protos = torch.randn(K, cfg.model.feat_channels, generator=g)
    kinds = {
        "warmup (source-only)": (lambda: S.SourceStage(cfg, new_model(cfg), src, dev, 0), cfg.warmup.steps),
        "warmup (adversarial)": (lambda: S.AdversarialWarmup(cfg, new_model(cfg), src, tgt, dev, 0), cfg.warmup.steps),
        "stage1 (pd+sl)": (lambda: S.Stage1(cfg, new_model(cfg), src, tgt, soft, protos, torch.ones(K), dev, 0),
                           cfg.stage1.steps),
        "distill": (lambda: S.DistillStage(cfg, new_model(cfg), new_model(cfg), src, tgt, soft, dev, 0),
                    cfg.distill.steps),
    }
    out = {}
    for name, (make, node_steps) in kinds.items():
        st = make()
        for _ in range(3):
            full_step(st)
        c = CLOCKS[clock]
        t0 = c()
        for _ in range(steps):
            full_step(st)
        out[name] = ((c() - t0) / steps, node_steps)
    return out


def read_share(node_dir: Path, wall: float | None = None) -> dict:
    recs = [json.loads(line) for line in (node_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r["eval_seconds"] for r in recs if r.get("kind") == "eval"]
    if wall is None:
        meta = node_dir / "node_seconds.json"
        if meta.is_file():
            wall = json.loads(meta.read_text())["seconds"]
        else:  # from file times: the first checkpoint/metrics write to done.json (misses the start-up)
            wall = (node_dir / "done.json").stat().st_mtime - min(p.stat().st_mtime for p in node_dir.iterdir())
    steps = max(r["step"] for r in recs)
    return {"node_seconds": wall, "evals": len(evals), "eval_seconds": evals, "steps": steps,
            "share": sum(evals) / wall}


def main() -> int:
    ap = parser(__doc__, timing=True)
    ap.add_argument("--node-dir", type=Path, help="read an already-run node folder instead of running one")
    ap.add_argument("--storage", type=Path, default=None, help="where the node runs (default: a temp folder)")
    ap.add_argument("--skip-node", action="store_true")
    args = ap.parse_args()
    start(args)
    now = CLOCKS[args.clock]
    cfg = make_config("synthetic", "source-only", 0, {"device": "cpu"})
    dev = torch.device("cpu")
    model = new_model(cfg).eval()
    val = open_split(cfg, "target", "val")
    bs = cfg.eval.batch_size

    # 1. evaluate(): images/s and its parts
    batches = [to_device(img, lab, dev) for _, img, lab in eval_batches(val, bs)]

    def parts():
        t = {"forward": 0.0, "upsample + argmax": 0.0, "confusion update": 0.0}
        cm = ConfusionMatrix(K, device=dev)
        with torch.inference_mode():
            for img, lab in batches:
                t0 = now()
                out = model(normalize(img))["out"]
                t1 = now()
                pred = F.interpolate(out, size=lab.shape[-2:], mode="bilinear", align_corners=False).max(1)[1]
                t2 = now()
                cm.update(pred=pred, target=lab)
                t3 = now()
                t["forward"] += t1 - t0
                t["upsample + argmax"] += t2 - t1
                t["confusion update"] += t3 - t2
        return t

    part_runs = []
    times = alternate({"evaluate": lambda: evaluate(model, val, K, dev, bs),
                       "parts": lambda: part_runs.append(parts())}, args.reps, clock=args.clock)
    ev = med(times["evaluate"])
    ips = val.size / ev
    say(f"\n== 1. evaluate() on target val: {val.size} images at {tuple(val.full_size)}, batch {bs}, "
        f"synthetic-preset model, {args.threads} threads")
    rows = [["evaluate() (whole call)", ev, ips]]
    for k in ("forward", "upsample + argmax", "confusion update"):
        v = med([p[k] for p in part_runs[1:] or part_runs])
        rows.append([f"  {k}", v, val.size / v])
    say(table(["part", "seconds", "images/s"], rows))

    # 2. confusion matrix: device bincount vs numpy round trip
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, K, (bs, *val.full_size), generator=g)
    target = torch.randint(0, K, (bs, *val.full_size), generator=g)
    target[:, :4] = 255  # some ignored pixels
    cm, hist = ConfusionMatrix(K, device=dev), np.zeros((K, K), dtype=np.int64)
    cm.update(pred, target)
    numpy_update(hist, pred, target)
    assert (cm.mat.numpy() == hist).all(), "device and numpy confusion matrices differ"
    inner = 20
    t = alternate({"device bincount": lambda: [cm.update(pred, target) for _ in range(inner)],
                   "numpy round trip": lambda: [numpy_update(hist, pred, target) for _ in range(inner)]},
                  max(5, args.reps * 3), clock=args.clock)
    dev_s, np_s = med(t["device bincount"]) / inner, med(t["numpy round trip"]) / inner
    say(f"\n== 2. confusion-matrix update of one eval batch ({pred.numel():,} pixels), median of {inner}-update runs")
    say(table(["implementation", "ms / batch", "Mpixel/s"],
              [["ConfusionMatrix.update (device bincount)", 1000 * dev_s, pred.numel() / dev_s / 1e6],
               [".cpu().numpy() + np.bincount", 1000 * np_s, pred.numel() / np_s / 1e6]]))
    say("(on this CPU-only machine the round trip copies nothing: the difference is the two bincounts; on a GPU "
        "the device version also avoids a device→host copy and a sync per batch)")
    speedup = np_s / dev_s

    # 3a. predicted share per node kind: measured step cost × steps vs measured evaluation × evaluations
    say(f"\n== 3a. evaluation's share by node kind (synthetic preset: eval every {cfg.eval.interval} steps and at the "
        f"end, {val.size} val images; step and evaluation costs measured here, {args.clock} time)")
    kinds = step_costs(args.clock)
    rows, shares = [], {}
    for name, (step_s, steps) in kinds.items():
        n_eval = steps // cfg.eval.interval + (1 if steps % cfg.eval.interval else 0)
        train_s, eval_s = steps * step_s, n_eval * ev
        shares[name] = eval_s / (train_s + eval_s)
        rows.append([name, step_s, steps, train_s, n_eval, eval_s, 100 * shares[name]])
    say(table(["node kind", "s / step", "steps", "training s", "evaluations", "evaluation s", "eval share %"], rows))

    # 3b. share of a node, measured
    share = None
    if not args.skip_node:
        if args.node_dir:
            share = read_share(args.node_dir)
        else:
            with tempfile.TemporaryDirectory(dir=args.storage, prefix="eval-speed-") as d:
                say("\n(running a synthetic-preset source-only warm-up node plainly; ~2-4 min here)")
                share = node_share(cfg, Path(d))
        say(f"\n== 3b. evaluation's share of a synthetic-preset node, measured (source-only warm-up, {share['steps']} steps, "
            f"eval every {cfg.eval.interval})")
        rows = [["wall (metrics.jsonl eval_seconds)", share["node_seconds"], sum(share["eval_seconds"]), share["evals"],
                 100 * share["share"]]]
        if "share_cpu" in share:
            rows.insert(0, ["CPU time (evaluate wrapped)", share["node_cpu_s"], share["eval_cpu_s"], share["evals"],
                            100 * share["share_cpu"]])
        say(table(["clock", "node s", "evaluation s", "evaluations", "eval share %"], rows))
    frac = None if share is None else share.get("share_cpu" if args.clock == "cpu" else "share", share["share"])
    emit({"eval_fraction_of_node": None if frac is None else round(frac, 4),
          "eval_fraction_of_node_wall": None if share is None else round(share["share"], 4),
          "eval_fraction_by_kind": {k: round(v, 4) for k, v in shares.items()},
          "device_vs_numpy_speedup": round(speedup, 2), "eval_images_per_s": round(ips, 1),
          "node_seconds": None if share is None else round(share["node_seconds"], 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
