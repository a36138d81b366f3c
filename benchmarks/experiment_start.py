"""What one `Tuner.fit()` costs before any node work: the fixed start-up of a Tune experiment.

The runner used to pay it once per chain position (one Tune experiment for the nodes at each position: every
warm-up, then every pseudo0, ...); since 2026-11-27 a study is one Tune experiment with reused trial
processes, so it is paid once per study (benchmarks/packing.py).

    python benchmarks/experiment_start.py [--reps 2]

On a fresh local Ray (2 CPUs), each row is one `Tuner.fit()` of two 1-CPU trials (two nodes at one chain
position, as the smoke study's), run ``--reps`` times in turn; the trainables do progressively more of what a node
trial does, with no training:
1. ``empty``: a function trainable that returns at once;
2. ``import``: the same after ``import torch, proda.engine.nodes`` (what a trial process must load);
3. ``train-local``: a TorchTrainer in Train's local mode (``num_workers=0``) whose loop returns at once —
   the runner's 1-CPU node trial without its node.
The differences between rows split that start (seen as ~9–10 s between chain positions in benchmarks/packing.py
while each position was its own experiment) into Tune's experiment start, the trial process's imports and Train's
controller.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, say, table  # noqa: E402


def empty(config):
    return None


def with_import(config):
    import torch  # noqa: F401

    import proda.engine.nodes  # noqa: F401


def _loop(config):
    return None


def train_local(config):
    import ray.train
    from ray.train.torch import TorchTrainer

    import proda.engine.nodes  # noqa: F401

    TorchTrainer(_loop, scaling_config=ray.train.ScalingConfig(num_workers=0),
                 run_config=ray.train.RunConfig(name="t", storage_path=config["storage"])).fit()


def one_fit(fn, storage: str, name: str) -> float:
    from ray import tune

    t0 = time.perf_counter()
    tune.Tuner(tune.with_resources(fn, {"cpu": 1}),
               param_space={"i": tune.grid_search([0, 1]), "storage": storage},
               tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
               run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0)).fit()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    say(machine())
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    kinds = {"empty": empty, "import": with_import, "train-local": train_local}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.reps):
            for k, fn in kinds.items():
                times[k].append(one_fit(fn, d, f"{k}-{r}"))
                say(f"  round {r + 1} {k}: {times[k][-1]:.2f} s")
    ray.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [["Tune experiment, 2 empty trials", med["empty"], med["empty"]],
            ["+ import torch, proda in the trial", med["import"], med["import"] - med["empty"]],
            ["+ TorchTrainer local mode (no work)", med["train-local"], med["train-local"] - med["import"]]]
    say(f"\nray.init {init_s:.1f} s; one Tuner.fit() of 2 trials, median of {args.reps}:")
    say(table(["trainable", "Tuner.fit s", "added s"], rows))
    emit({"ray_init_s": round(init_s, 2), **{f"fit_{k.replace('-', '_')}_s": round(v, 2) for k, v in med.items()},
          "reps": args.reps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
