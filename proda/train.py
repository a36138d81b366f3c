"""One variant's whole chain of stages in this process, without Ray.

    python -m proda.train --variant NAME [--preset NAME] [--seed N] --out DIR [--resume]
                          [--set stage1.gamma1=5 ...] [--config FILE.yaml] [--stop-after STEPS]

Writes ``DIR/config.yaml``, ``DIR/metrics.jsonl`` (train losses, images/s, evaluations with per-class
IoU), one folder per stage node, and ``DIR/summary.json`` with the per-class IoU and mIoU of the last
evaluation of each stage. ``--resume`` continues an interrupted run: finished stages are kept, the
interrupted one continues from its last checkpoint; ``--stop-after STEPS`` ends this call after that many
training steps (a checkpoint at the step it stops on; ``--resume`` goes on from there, bit for bit as an
uninterrupted run): a run split into time-boxed pieces. Under ``torchrun`` it runs DDP.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from proda import distributed as ddp
from proda.checkpoint import CheckpointError
from proda.config import Config, ConfigError, load_yaml
from proda.data.stream import check_data
from proda.engine.nodes import chain, run_node
from proda.presets import PRESETS, VARIANTS, make_config


def parse_sets(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--set {it!r}: expected FIELD=VALUE, e.g. stage1.gamma1=5")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = load_yaml(v)
        except ConfigError as e:
            raise ConfigError(f"--set {it!r}: {e}") from None
    return out


def run_chain(cfg: Config, out: Path, resume: bool = False, log=print, stop_after_steps: int | None = None) -> dict:
    check_data(cfg)  # a bad dataset tree is refused before the run folder exists
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.yaml"
    existed = cfg_path.is_file()
    if existed:
        old = Config.from_yaml(cfg_path)
        if old.hash() != cfg.hash():
            if not resume:
                raise ConfigError(f"--out '{out}' holds a run of another config; use a new folder")
            raise ConfigError(f"--resume: '{out}' was started with another config (hash {old.hash()} != {cfg.hash()})")
        if not resume:
            state = "a finished" if (out / "summary.json").is_file() else "an unfinished"
            raise ConfigError(f"--out '{out}' already holds {state} run; pass --resume to continue it or use a new folder")
    ddp.barrier()  # under torchrun every rank looks before the main one writes: a later rank would see its file
    if not existed and ddp.is_main():
        cfg_path.write_text(cfg.to_yaml())
    summary: dict = {"config_hash": cfg.hash(), "stages": {}}
    dirs: dict[str, Path] = {}  # node id → its folder, named by its chain position: DIR/warmup, DIR/stage1, ...
    for node in chain(cfg):
        dirs[node.id] = out / node.name
        res = run_node(node, cfg, dirs[node.id], {role: dirs[up] for role, up in node.inputs.items()},
                       resume=True, log=log, metrics_log=out / "metrics.jsonl",
                       stop_after=stop_after_steps)
        if "stopped_at" in res:
            log(f"stopped after step {res['stopped_at']} of '{node.name}' (as asked)")
            return summary
        summary["stages"][node.name] = res
    if ddp.is_main():
        (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=True))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proda.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", required=True, help=f"one of {', '.join(VARIANTS)}")
    ap.add_argument("--preset", default="synthetic", help=f"one of {', '.join(PRESETS)} (default synthetic)")
    ap.add_argument("--config", help="a YAML config file instead of a preset (the variant's switches still apply)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
    ap.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                    help="stop after STEPS training steps of this call, with a checkpoint; --resume continues")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)
    try:
        if args.stop_after is not None and args.stop_after < 1:
            raise ConfigError(f"--stop-after {args.stop_after}: must be >= 1")
        ddp.init_from_env()
        overrides = parse_sets(args.set)
        if args.config:
            from proda.presets import variant_overrides  # noqa: PLC0415

            cfg = Config.from_yaml(Path(args.config)).override(
                {**variant_overrides(args.variant), "seed": args.seed, **overrides})
        else:
            cfg = make_config(args.preset, args.variant, args.seed, overrides)
        summary = run_chain(cfg, args.out, resume=args.resume, stop_after_steps=args.stop_after)
    except (ConfigError, CheckpointError, OSError, ValueError) as e:  # OSError: e.g. --out not writable
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, res in summary["stages"].items():
        if "miou" in res:
            print(f"{name:>10}: mIoU {res['miou']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
