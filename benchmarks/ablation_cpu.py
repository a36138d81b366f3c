"""The paper's ablation (Table 3 rows) on the embedded benchmark, in this process (no Ray), 3 seeds.

    python benchmarks/ablation_cpu.py [--preset synthetic] [--seeds 0,1,2] [--study runs/ablation-cpu]
                                      [--set model.init=ssl ...]

Runs the merged DAG of the Table-3 variants and the control row node by node (finished nodes are reused:
rerun to resume), trains a target-supervised oracle per seed for as many steps as the study's longest training
(the distillation student's ``distill.steps`` when it is longer than the warm-up; ``--oracle-steps N`` to set it;
its backbone, like every warm-up's, from the seed's ssl node when ``model.init=ssl``), and prints the ablation
table, the per-class table and, last, one JSON line
``{"miou": {variant: mean}, "std": {variant: std}, "oracle_miou": .., "gap_closed_by_proda": {seed: share},
"seconds": ..}``, after a table of each step's paired Δ with its per-seed values (issue 12's ordering).
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

from proda import checkpoint as ckpt  # noqa: E402
from proda.ablation import results as R  # noqa: E402
from proda.ablation.grid import TABLE3_VARIANTS, AblationSpec, expand  # noqa: E402
from proda.ablation.runner import run_study_local  # noqa: E402
from proda.chain import node_id  # noqa: E402
from proda.data.stream import open_split  # noqa: E402
from proda.engine.folder import is_done  # noqa: E402
from proda.engine.nodes import device_of, load_ssl_backbone, new_model  # noqa: E402
from proda.engine.trainer import evaluate, run_stage  # noqa: E402
from proda.method.stages import SourceStage  # noqa: E402
from proda.presets import make_config  # noqa: E402
from proda.train import parse_sets  # noqa: E402


def oracle(preset: str, seed: int, out: Path, study: Path, overrides: dict | None = None,
           steps: int | None = None) -> float:
    """Target-supervised training (the labels of target train) for ``steps`` (default: the warm-up's): the upper
    bound. With ``model.init=ssl`` its backbone starts, like the warm-ups', from the seed's ssl node in ``study``."""
    cfg = make_config(preset, "source-only", seed, {**(overrides or {}), **({"warmup.steps": steps} if steps else {})})
    if cfg.model.init == "ssl":
        out = out.with_name(out.name + "-ssl")
    done = out / "oracle.json"
    if done.is_file():
        return json.loads(done.read_text())["miou"]
    ckpt.seed_everything(seed * 1000 + 11)
    dev = device_of(cfg)
    model = new_model(cfg)
    if cfg.model.init == "ssl":
        ssl_dir = study / "nodes" / node_id("ssl", cfg, seed, {})
        if not is_done(ssl_dir):
            raise RuntimeError(f"oracle of seed {seed}: model.init=ssl, but its ssl node '{ssl_dir}' is not done")
        load_ssl_backbone(model, ssl_dir)
    stage = SourceStage(cfg, model, open_split(cfg, "target", "train"), dev, seed)
    run_stage(stage, cfg.warmup.steps, out, log=lambda s: None)
    cm = evaluate(stage.model, open_split(cfg, "target", "val"), 19, dev, cfg.eval.batch_size)
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"miou": 100 * cm.miou()}))
    return 100 * cm.miou()


# the issue-12 ordering: (row, the row it must beat); SCE is compared with ST but only needs to stay within ±0.5
STEPS = [("warmup", "source-only"), ("warmup+", "warmup"), ("st", "warmup"), ("st", "warmup+"), ("st+sce", "st"),
         ("pd", "st+sce"), ("pd+sl", "pd"), ("proda", "pd+sl")]


def paired_report(per_seed: dict[str, dict[int, float]]) -> str:
    """Each step's Δ paired over the seeds both rows have, with the per-seed values and whether all are > 0."""
    lines = ["| step | paired Δ (mean) | per seed | all seeds > 0 |", "|---|---:|---|---|"]
    for row, base in STEPS:
        common = sorted(set(per_seed.get(row, {})) & set(per_seed.get(base, {})))
        if not common:
            continue
        d = [per_seed[row][s] - per_seed[base][s] for s in common]
        cells = ", ".join(f"s{s}: {x:+.2f}" for s, x in zip(common, d))
        lines.append(f"| {row} − {base} | {statistics.mean(d):+.2f} | {cells} | {'yes' if min(d) > 0 else 'no'} |")
    return "\n".join(lines)


def gap_closed(per_seed: dict[str, dict[int, float]], oracles: dict[int, float]) -> dict[str, float] | None:
    """Per seed, the share of the source-only → oracle gap that ProDA closes, (proda − src) / (oracle − src)."""
    src, pro = per_seed.get("source-only", {}), per_seed.get("proda", {})
    common = sorted(set(src) & set(pro) & set(oracles))
    return {f"seed{s}": round((pro[s] - src[s]) / (oracles[s] - src[s]), 3) for s in common} or None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="synthetic")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--study", type=Path, default=Path("runs/ablation-cpu"))
    ap.add_argument("--oracle-steps", type=int, default=None,
                    help="the oracle's steps (default: the longest training of the study, warm-up or student)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a config field for every row and the oracle, e.g. model.init=ssl")
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    overrides = parse_sets(args.set)
    spec = AblationSpec(name=args.study.name, preset=args.preset, variants=TABLE3_VARIANTS, seeds=seeds,
                        overrides=overrides)
    plan = expand(spec)
    print(plan.summary(), flush=True)
    t0 = time.perf_counter()
    run_study_local(plan, args.study, log=lambda s: print(s, flush=True) if "eval" in s or "pseudo" in s else None)
    longest = make_config(args.preset, "proda", seeds[0], overrides)
    steps = args.oracle_steps or max(longest.warmup.steps, longest.distill.steps if longest.distill.rounds else 0)
    oracles = [oracle(args.preset, s, args.study / "oracle" / f"seed{s}-{steps}steps", args.study.resolve(),
                      overrides, steps) for s in seeds]
    seconds = time.perf_counter() - t0
    print(R.report(args.study))
    print(f"\noracle (target-supervised, {steps} steps): {statistics.mean(oracles):.2f} ± "
          f"{statistics.stdev(oracles) if len(oracles) > 1 else 0:.2f}")
    sc = R.scores(R.collect(args.study), "last")
    miou, std = {}, {}
    for v in TABLE3_VARIANTS:
        vals = [float(x) for x in sc[sc["variant"] == v]["miou"].dropna()]
        miou[v] = round(statistics.mean(vals), 2) if vals else None
        std[v] = round(statistics.stdev(vals), 2) if len(vals) > 1 else None
    per_seed = {v: {int(r.seed): float(r.miou) for r in sc[sc["variant"] == v].itertuples() if r.miou == r.miou}
                for v in TABLE3_VARIANTS}
    print("\n" + paired_report(per_seed))
    gap = gap_closed(per_seed, dict(zip(seeds, oracles)))
    print(json.dumps({"miou": miou, "std": std, "oracle_miou": round(statistics.mean(oracles), 2),
                      "oracle_steps": steps,
                      "gap_closed_by_proda": gap, "seconds": round(seconds, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
