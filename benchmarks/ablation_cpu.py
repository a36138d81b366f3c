"""The paper's ablation (Table 3 rows) on the embedded benchmark, in this process (no Ray), 3 seeds.

    python benchmarks/ablation_cpu.py [--preset synthetic] [--seeds 0,1,2] [--study runs/ablation-cpu]

Runs the merged DAG of the seven variants node by node (finished nodes are reused: rerun to resume),
trains a target-supervised oracle per seed with the same budget as the warm-up, and prints the ablation
table, the per-class table and, last, one JSON line
``{"miou": {variant: mean}, "std": {variant: std}, "oracle_miou": .., "seconds": ..}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

try:
    import proda  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from proda.ablation import results as R  # noqa: E402
from proda.ablation.grid import TABLE3_VARIANTS, AblationSpec, expand  # noqa: E402
from proda.ablation.runner import run_study_local  # noqa: E402
from proda.engine import checkpoint as ckpt  # noqa: E402
from proda.engine.data import open_split  # noqa: E402
from proda.engine.nodes import device_of, new_model  # noqa: E402
from proda.engine.trainer import evaluate, run_stage  # noqa: E402
from proda.method.stages import SourceStage  # noqa: E402
from proda.presets import make_config  # noqa: E402


def oracle(preset: str, seed: int, out: Path) -> float:
    """Target-supervised training (the labels of target train), same steps as the warm-up: the upper bound."""
    done = out / "oracle.json"
    if done.is_file():
        return json.loads(done.read_text())["miou"]
    cfg = make_config(preset, "source-only", seed)
    ckpt.seed_everything(seed * 1000 + 11)
    dev = device_of(cfg)
    stage = SourceStage(cfg, new_model(cfg), open_split(cfg, "target", "train"), dev, seed)
    run_stage(stage, steps=cfg.warmup.steps, out_dir=out, val=None, num_classes=19, eval_interval=10**9,
              checkpoint_interval=cfg.checkpoint_interval, log_interval=cfg.log_interval, log=lambda s: None)
    cm = evaluate(stage.model, open_split(cfg, "target", "val"), 19, dev, cfg.eval.batch_size)
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"miou": 100 * cm.miou()}))
    return 100 * cm.miou()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="synthetic")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--study", type=Path, default=Path("runs/ablation-cpu"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    spec = AblationSpec(name=args.study.name, preset=args.preset, variants=TABLE3_VARIANTS, seeds=seeds)
    plan = expand(spec)
    print(plan.summary(), flush=True)
    t0 = time.perf_counter()
    run_study_local(plan, args.study, log=lambda s: print(s, flush=True) if "eval" in s or "pseudo" in s else None)
    oracles = [oracle(args.preset, s, args.study / "oracle" / f"seed{s}") for s in seeds]
    seconds = time.perf_counter() - t0
    print(R.report(args.study))
    print(f"\noracle (target-supervised): {statistics.mean(oracles):.2f} ± "
          f"{statistics.stdev(oracles) if len(oracles) > 1 else 0:.2f}")
    sc = R.scores(R.collect(args.study), "last")
    miou, std = {}, {}
    for v in TABLE3_VARIANTS:
        vals = [float(x) for x in sc[sc["variant"] == v]["miou"].dropna()]
        miou[v] = round(statistics.mean(vals), 2) if vals else None
        std[v] = round(statistics.stdev(vals), 2) if len(vals) > 1 else None
    print(json.dumps({"miou": miou, "std": std, "oracle_miou": round(statistics.mean(oracles), 2),
                      "seconds": round(seconds, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
