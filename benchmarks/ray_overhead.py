"""The Ray runner's overhead on one node (RESULTS.md §2): the same node (config, seed, data, threads) run in a
plain process vs. as a Tune trial that launches a TorchTrainer in Train's local mode (``ray-local``, the default
for one CPU worker) vs. with a real worker group (``ray-group``).

    python benchmarks/ray_overhead.py [--steps N] [--rounds 2] [--modes plain,ray-local,ray-group]

The node: the `synthetic` preset's source-only warm-up (``--steps``: its optimiser steps, default the preset's).
Every run is a fresh process, modes alternating round by round; the Ray modes time ``ray.init`` and `run_study`
apart, and a watcher stamps when the node's folder and its done.json appear (start-up, node, teardown). The
modes train the same node, so their mIoU must agree. Ratios (medians over rounds): `run_study` ÷ the plain
node, without and with ray.init. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NodeWatcher, emit, machine, med, parser, run_child, say, table  # noqa: E402

MODES = ("plain", "ray-local", "ray-group")


def child(mode: str, steps: int | None, cpus: float, out: Path) -> dict:
    """One measurement, in this (fresh) process."""
    t_start = time.time()
    import torch

    from proda.ablation.grid import AblationSpec, expand
    from proda.config import Config
    from proda.engine.folder import read_done
    from proda.engine.nodes import run_node

    plan = expand(AblationSpec(name="ray-overhead", preset="synthetic", variants=("source-only",), seeds=(0,),
                               overrides={"warmup.steps": steps} if steps else {}))
    (node,) = plan.nodes.values()
    res: dict = {"mode": mode, "import_s": time.time() - t_start, "steps": node.config["warmup"]["steps"]}
    if mode == "plain":
        torch.set_num_threads(max(1, int(cpus)))  # what the runner gives a Ray worker
        node_dir = out / "nodes" / node.id
        t0 = time.time()
        run_node(node, Config.from_dict(node.config), node_dir, {},
                 metrics_log=node_dir / "metrics.jsonl", log=lambda s: None)
        res.update(node_s=time.time() - t0, study_s=time.time() - t0, init_s=0.0)
    else:
        import ray

        from proda.ablation.runner import connect, run_study

        watcher = NodeWatcher(out / "nodes")
        watcher.start()
        t0 = time.time()
        connect(None)
        t1 = time.time()
        run_study(plan, out, cpus_per_worker=cpus, local=(mode == "ray-local"), max_failures=0,
                  log=lambda s: None)
        t2 = time.time()
        watcher.stop = True
        ray.shutdown()
        started, done = watcher.began.get(node.id), watcher.ended.get(node.id)
        res.update(init_s=t1 - t0, study_s=t2 - t1, startup_s=(started or t2) - t1,
                   node_s=(done or t2) - (started or t1), teardown_s=t2 - (done or t2),
                   shutdown_s=time.time() - t2)
    return {**res, "miou": read_done(out / "nodes" / node.id).get("miou")}


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--steps", type=int, default=0, help="optimiser steps of the node (0: the preset's)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (plain, ray-local, ray-group), alternated")
    ap.add_argument("--cpus-per-worker", type=float, default=1.0, help="as run_study's (threads = int of it)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--storage", type=Path, default=None, help="temp folders go here (default: system temp)")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        emit(child(args.child, args.steps or None, args.cpus_per_worker, args.out))
        return 0

    say(machine())
    modes = args.modes.split(",")
    say(f"node: synthetic preset, source-only warm-up, {args.steps or 'preset'} steps, "
        f"{int(args.cpus_per_worker)} thread(s); modes {modes}, {args.rounds} round(s)")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for m in order:
            with tempfile.TemporaryDirectory(dir=args.storage, prefix=f"ray-overhead-{m}-") as d:
                res = run_child(__file__, ["--child", m, "--steps", str(args.steps), "--cpus-per-worker",
                                           str(args.cpus_per_worker), "--out", d], args.timeout)
            runs[m].append(res)
            say(f"  round {r + 1} {m}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in res.items() if k != "mode"))
    plain = med([r["node_s"] for r in runs["plain"]]) if runs.get("plain") else float("nan")
    rows, out = [], {}
    for m in modes:
        rs = runs[m]
        g = lambda k: med([r.get(k, 0.0) for r in rs])  # noqa: E731
        over = g("study_s") / plain
        over_init = (g("study_s") + g("init_s")) / plain
        rows.append([m, g("process_s"), g("init_s"), g("startup_s"), g("node_s"), g("teardown_s"), g("study_s"),
                     over, over_init, f"{rs[0].get('miou', float('nan')):.3f}"])
        out[m] = (over, over_init)
    say("\nseconds (medians); 'run' = run_node for plain, run_study (after ray.init) for Ray; "
        "ratios = run ÷ plain node, and (ray.init + run) ÷ plain node")
    say(table(["mode", "process", "ray.init", "start-up", "node", "teardown", "run", "÷ plain", "÷ plain (+init)",
               "mIoU"], rows))
    mious = {round(runs[m][0].get("miou") or 0, 6) for m in modes}
    say(f"same result in every mode: {len(mious) == 1}")
    nan = (float("nan"), float("nan"))
    emit({"ray_over_plain": round(out.get("ray-local", nan)[0], 3),
          "ray_over_plain_worker_group": round(out.get("ray-group", nan)[0], 3),
          "ray_over_plain_with_init": round(out.get("ray-local", nan)[1], 3),
          "ray_over_plain_worker_group_with_init": round(out.get("ray-group", nan)[1], 3),
          "plain_node_s": round(plain, 1), "steps": runs[modes[0]][0].get("steps"), "rounds": args.rounds,
          "load_avg_1min": round(os.getloadavg()[0], 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
