"""Run a ProDA ablation study on Ray and print its tables.

    python experiments/ablation.py                       # the default study on the embedded benchmark
    python experiments/ablation.py --grid smoke          # ≤ 2 minutes: first contact, tests
    python experiments/ablation.py --grid paper --dataset gta5 --data-root /data   # the paper's Table 3
    python experiments/ablation.py --grid my_grid.yaml --address auto --workers-per-trial 4 --gpus-per-worker 1

``--grid`` names a study: a built-in one — default (the 7 Table-3 variants and the control row × 3 seeds,
embedded benchmark), smoke, paper, sensitivity (λ, γ1, γ2 sweeps) — or a grid YAML file (experiments/grids/
holds the built-ins as files).
A grid's ``preset:`` key names the configuration its rows start from (a key of ``proda.presets.PRESETS``, as in
``python -m proda.train --preset``). ``--preset NAME``, the older spelling of ``--grid NAME``, still works and
says so. The study lives in STORAGE/NAME: running the same command again completes an interrupted
study without re-running finished nodes. ``python experiments/results.py STORAGE/NAME`` prints the tables
at any time; ``tensorboard --logdir STORAGE/NAME`` shows each node's learning curves; Tune's own tables
(``ray.tune.ExperimentAnalysis(STORAGE/NAME/tune/study-…).dataframe()``) carry each node's seed, rows,
variants, stage switches and swept values in its config.

While it runs: on a terminal one bar for the study (share of the estimated work, nodes done, ETA) with a line
per running node; elsewhere (CI, a log file) one line per node event and a progress line at most every 30 s.
``--verbose`` adds Tune's own reporter and every node's step lines.

Exit status: 0 when every node finished; 1 when the study ran but some nodes failed (the summary lists
each with its error and the path of its traceback; the same command runs them again, keeping every
finished node); 2 on bad input or when the study could not start (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

try:
    import proda  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proda.ablation.grid import BUILTIN_SPECS, AblationSpec, builtin_spec, expand  # noqa: E402
from proda.config import ConfigError  # noqa: E402

DATASETS = {  # --dataset → overrides
    "synthetic": {},
    "gta5": {"data.source": "gta5", "data.target": "cityscapes", "data.num_classes": 19},
    "synthia": {"data.source": "synthia", "data.target": "cityscapes", "data.num_classes": 16},
}


def build_spec(args) -> AblationSpec:
    spec = grid_spec(args.grid)
    d = spec.to_dict()
    if args.name:
        d["name"] = args.name
    if args.seeds:
        d["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip() != ""]
    over = dict(d.get("overrides") or {})
    if args.dataset:
        if args.dataset not in DATASETS:
            raise ConfigError(f"--dataset {args.dataset!r}: must be one of {list(DATASETS)}")
        over.update(DATASETS[args.dataset])
        if args.dataset != "synthetic":
            if not args.data_root:
                raise ConfigError(f"--dataset {args.dataset}: needs --data-root (holding {args.dataset}/ and cityscapes/)")
            root = Path(args.data_root).expanduser()
            if not root.is_dir():
                raise ConfigError(f"--data-root '{root}' does not exist")
            src_dir = {"gta5": "GTA5", "synthia": "SYNTHIA"}[args.dataset]
            over["data.source_root"] = str(_subdir(root, (args.dataset, src_dir, src_dir.lower())))
            over["data.target_root"] = str(_subdir(root, ("cityscapes", "Cityscapes")))
            if d.get("preset", "").startswith("paper") and args.dataset == "synthia":
                d["preset"] = "paper-synthia"
        elif d.get("preset", "").startswith("paper"):
            raise ConfigError("--grid paper runs on real data: give --dataset gta5|synthia and --data-root")
    elif args.data_root:
        raise ConfigError("--data-root needs --dataset gta5|synthia")
    d["overrides"] = over
    return AblationSpec.from_dict(d)


def grid_spec(grid: str) -> AblationSpec:
    """``--grid``: a YAML file when one is there (or the word names a path), else a built-in study's name."""
    path = Path(grid).expanduser()
    if path.is_file() or path.suffix in (".yaml", ".yml") or os.sep in grid:
        if not path.is_file():
            raise ConfigError(f"--grid '{grid}': no such file")
        return AblationSpec.from_yaml(path)
    return builtin_spec(grid)


def _subdir(root: Path, names) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise ConfigError(f"--data-root '{root}' has none of the folders {list(names)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 every node finished, 1 some nodes failed (listed in the "
                                        "summary; the same command retries them), 2 bad input or the study "
                                        "could not start")
    ap.add_argument("--grid", default=None, help=f"the study: a built-in one ({', '.join(BUILTIN_SPECS)}; default: "
                    "default) or a grid YAML file (see experiments/grids/)")
    ap.add_argument("--preset", help=argparse.SUPPRESS)  # the older spelling of --grid NAME
    ap.add_argument("--dataset", help="synthetic (default) | gta5 | synthia")
    ap.add_argument("--data-root", help="folder holding the source dataset and cityscapes/")
    ap.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    ap.add_argument("--storage", default=os.environ.get("PRODA_STORAGE", "runs"),
                    help="where studies live (default ./runs; a shared path on a cluster)")
    ap.add_argument("--name", help="study name (default: the spec's name)")
    ap.add_argument("--address", default=None, help="Ray cluster address ('auto' to join a running cluster; "
                    "default: start a local Ray)")
    ap.add_argument("--workers-per-trial", type=int, default=1, help="DDP workers per node (default 1)")
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--worker-group", action="store_true",
                    help="always start a Train worker group, also for one CPU worker (default: Train's local mode "
                         "runs a 1-worker CPU node inside its trial process)")
    ap.add_argument("--max-concurrent", type=int, default=None, help="nodes at once (default: fill the cluster)")
    ap.add_argument("--format", default="github", choices=("github", "latex", "csv", "markdown"))
    ap.add_argument("--select", default="last", choices=("last", "best"))
    ap.add_argument("--stats", action="store_true", help="also print the per-class statistics (as results.py --stats)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--verbose", action="store_true", help="also Tune's own progress reporter and every node's log "
                    "lines (default: the live view — a bar on a terminal, one line per node event elsewhere)")
    args = ap.parse_args(argv)
    try:
        if args.preset is not None:
            if args.grid is not None:
                raise ConfigError("--preset is the older spelling of --grid: give one of them")
            print(f"note: --preset {args.preset} is spelled --grid {args.preset} now (a study; proda.train's "
                  "--preset names a configuration)", file=sys.stderr)
            args.grid = args.preset
        args.grid = args.grid or "default"
        if args.workers_per_trial < 1:
            raise ConfigError(f"--workers-per-trial {args.workers_per_trial}: must be >= 1")
        if args.gpus_per_worker < 0 or args.cpus_per_worker <= 0:
            raise ConfigError("--gpus-per-worker must be >= 0 and --cpus-per-worker > 0")
        spec = build_spec(args)
        plan = expand(spec)
        print(plan.summary(), flush=True)
        if args.dry_run:
            return 0
        from proda.ablation import results as R
        from proda.ablation.runner import run_study
        from proda.ablation.study import node_status

        study = Path(args.storage).expanduser() / spec.name
        t0 = time.monotonic()
        run_study(plan, study, address=args.address, workers_per_trial=args.workers_per_trial,
                  gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                  max_concurrent=args.max_concurrent, local=False if args.worker_group else None,
                  log=lambda s: print(s, flush=True), verbose=args.verbose)
        print(f"\nstudy {study} — wall time {time.monotonic() - t0:.0f} s\n")
        print(R.report(study, args.format, args.select, stats=args.stats))
        if (study / "tensorboard").is_dir():  # each node's learning curves, by node name, variants and seed
            print(f"\nlearning curves: tensorboard --logdir {study}   (pip install tensorboard)")
        failed = [i for i in plan.nodes if node_status(study, i) == "failed"]
    except Exception as e:  # noqa: BLE001 - one clear line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    if failed:
        print(f"study {study}: {len(failed)} of {len(plan.nodes)} nodes failed (listed above); running the same "
              f"command again retries them and keeps every finished node", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
