"""Target-val evaluation speed and the share of a `synthetic`-preset node's time spent evaluating (RESULTS.md §5).

    python benchmarks/eval_speed.py [--reps 3] [--skip-node] [--storage /tmp/proda-bench]

1. images/s of `proda.engine.trainer.evaluate` on the embedded benchmark's target val split with the
   `synthetic` preset's model and eval batch size, and its parts: forward, upsampling + argmax, confusion update.
3a. evaluation's share by node kind, predicted: each kind's measured step cost × its steps against the
   measured evaluation × its evaluations.
3b. measured: the source-only warm-up node (the kind with the cheapest steps, so the largest evaluation share)
   run plainly with `run_node`, `evaluate` wrapped to add up its CPU and wall time; share = evaluation time ÷
   the node's time (CPU time, and wall time with the ``eval_seconds`` of its metrics.jsonl).
(2., the confusion matrix on the device vs. a numpy round trip — §5's 0.84× / 1.12×, the same on a CPU — was
removed in issue 16 item 7: ``git show 6151bdd:benchmarks/eval_speed.py``; so was ``--node-dir``.)
Timings use this process's CPU time (``--clock cpu``, 1 thread) unless ``--clock wall``. The last line is one
JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLOCKS, alternate, emit, full_step, med, parser, say, start, table, timed  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from proda.data.augment import normalize  # noqa: E402
from proda.data.stream import eval_batches, open_split, to_device  # noqa: E402
from proda.engine.nodes import Node, new_model, run_node  # noqa: E402
from proda.engine.trainer import evaluate  # noqa: E402
from proda.evaluation import ConfusionMatrix  # noqa: E402
from proda.presets import make_config  # noqa: E402

K = 19


def node_share(cfg, out: Path) -> dict:
    """Run the synthetic-preset source-only warm-up node plainly; its evaluation share (CPU and wall)."""
    import proda.engine.trainer as trainer

    spent, inner = {"cpu": 0.0, "wall": 0.0}, trainer.evaluate

    def counted(*a, **k):  # run_stage looks `evaluate` up in its module at each call
        c0, w0 = CLOCKS["cpu"](), CLOCKS["wall"]()
        try:
            return inner(*a, **k)
        finally:
            spent["cpu"] += CLOCKS["cpu"]() - c0
            spent["wall"] += CLOCKS["wall"]() - w0

    trainer.evaluate = counted
    try:
        c0, w0 = CLOCKS["cpu"](), CLOCKS["wall"]()
        run_node(Node("warmup", "warmup"), cfg, out, {}, metrics_log=out / "metrics.jsonl", log=lambda s: None)
        cpu, wall = CLOCKS["cpu"]() - c0, CLOCKS["wall"]() - w0
    finally:
        trainer.evaluate = inner
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r["eval_seconds"] for r in recs if r.get("kind") == "eval"]
    return {"node_seconds": wall, "evals": len(evals), "eval_seconds": sum(evals), "share": sum(evals) / wall,
            "steps": max(r["step"] for r in recs), "node_cpu_s": cpu, "eval_cpu_s": spent["cpu"],
            "share_cpu": spent["cpu"] / cpu}


def step_costs(clock: str, steps: int = 8) -> dict[str, tuple[float, int]]:
    """(seconds per optimiser step, the node's steps) of each node kind of the synthetic preset."""
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
        out[name] = (timed(lambda: [full_step(st) for _ in range(steps)], clock=clock) / steps, node_steps)
    return out


def main() -> int:
    ap = parser(__doc__, timing=True)
    ap.add_argument("--storage", type=Path, default=None, help="where the node runs (default: a temp folder)")
    ap.add_argument("--skip-node", action="store_true", help="without the measured node (3b)")
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
                for k, dt in zip(t, (t1 - t0, t2 - t1, now() - t2)):
                    t[k] += dt
        return t

    part_runs = []
    times = alternate({"evaluate": lambda: evaluate(model, val, K, dev, bs),
                       "parts": lambda: part_runs.append(parts())}, args.reps, clock=args.clock)
    ev = med(times["evaluate"])
    ips = val.size / ev
    say(f"\n== 1. evaluate() on target val: {val.size} images at {tuple(val.full_size)}, batch {bs}, "
        f"synthetic-preset model, {args.threads} threads")
    rows = [["evaluate() (whole call)", ev, ips]]
    for k in part_runs[0]:
        v = med([p[k] for p in part_runs[1:] or part_runs])
        rows.append([f"  {k}", v, val.size / v])
    say(table(["part", "seconds", "images/s"], rows))

    # 3a. predicted share per node kind: measured step cost × steps vs measured evaluation × evaluations
    say(f"\n== 3a. evaluation's share by node kind (synthetic preset: eval every {cfg.eval.interval} steps and at the "
        f"end, {val.size} val images; step and evaluation costs measured here, {args.clock} time)")
    rows, shares = [], {}
    for name, (step_s, steps) in step_costs(args.clock).items():
        n_eval = steps // cfg.eval.interval + (1 if steps % cfg.eval.interval else 0)
        train_s, eval_s = steps * step_s, n_eval * ev
        shares[name] = eval_s / (train_s + eval_s)
        rows.append([name, step_s, steps, train_s, n_eval, eval_s, 100 * shares[name]])
    say(table(["node kind", "s / step", "steps", "training s", "evaluations", "evaluation s", "eval share %"], rows))

    # 3b. share of a node, measured
    share = None
    if not args.skip_node:
        with tempfile.TemporaryDirectory(dir=args.storage, prefix="eval-speed-") as d:
            say("\n(running a synthetic-preset source-only warm-up node plainly; ~2-4 min here)")
            share = node_share(cfg, Path(d) / "eval-node")
        say(f"\n== 3b. evaluation's share of a synthetic-preset node, measured (source-only warm-up, "
            f"{share['steps']} steps, eval every {cfg.eval.interval})")
        say(table(["clock", "node s", "evaluation s", "evaluations", "eval share %"],
                  [["CPU time (evaluate wrapped)", share["node_cpu_s"], share["eval_cpu_s"], share["evals"],
                    100 * share["share_cpu"]],
                   ["wall (metrics.jsonl eval_seconds)", share["node_seconds"], share["eval_seconds"], share["evals"],
                    100 * share["share"]]]))
    frac = None if share is None else share["share_cpu" if args.clock == "cpu" else "share"]
    emit({"eval_fraction_of_node": None if frac is None else round(frac, 4),
          "eval_fraction_of_node_wall": None if share is None else round(share["share"], 4),
          "eval_fraction_by_kind": {k: round(v, 4) for k, v in shares.items()}, "eval_images_per_s": round(ips, 1),
          "node_seconds": None if share is None else round(share["node_seconds"], 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
