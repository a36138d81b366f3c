"""Peak memory (RSS) of a smoke stage-1 node and of one paper-gta5 stage-1 step on CPU, and what gradient
accumulation, bf16 autocast and an earlier source backward change (RESULTS.md §6).

    python benchmarks/memory.py [--storage /tmp/proda-memory] [--skip-paper] [--skip-full] [--max-rss-gb 16]

Every measurement is a fresh process: peak = its ``ru_maxrss`` at the end, base = its RSS just before the
measured work; this process kills one whose RSS passes ``--max-rss-gb`` (other processes share the machine).
1. smoke: the stage-1 node of the smoke preset's pd+sl chain (seed 0) by `run_node` (its inputs prepared first,
   unmeasured); as is, with ``optim.grad_accum=2`` and with ``optim.amp=bf16``.
2. paper: one `Stage1` step of paper-gta5 with DeepLab-v2-R101 at batch 1, crop 512×896, full image 1024×2048,
   random stand-in data; at a reduced size (crop 256×448, full 512×1024) batch 2 with and without grad_accum=2,
   and batch 1 with an "early source backward" (the source CE's graph freed before the target passes, as the
   official `loss_GTA.backward()`; a subclass here, not the library's behaviour). bf16 on a GPU: gpu_check.sh.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ROOT, build_stage, emit, fake_split, full_step, last_json, machine, parser,  # noqa: E402
                     peak_rss_mb, say, table)


def rss_mb(pid: int | str = "self") -> float:
    try:
        line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return 0.0


# ---------------------------------------------------------------------------------- children
def child_smoke(storage: Path, overrides: dict | None = None, out_name: str = "") -> dict:
    """The smoke pd+sl chain's stage-1 node; without ``out_name``: its warm-up and pseudo-label inputs."""
    import torch

    from proda.ablation.grid import AblationSpec, expand
    from proda.config import Config
    from proda.engine.nodes import run_node

    torch.set_num_threads(2)
    plan = expand(AblationSpec(name="memory", preset="smoke", variants=("pd+sl",), seeds=(0,)))
    inputs = lambda n: {r: storage / "nodes" / u for r, u in n.inputs.items()}  # noqa: E731
    if not out_name:
        for n in plan.nodes_at("warmup") + plan.nodes_at("pseudo0"):
            run_node(n, Config.from_dict(n.config), storage / "nodes" / n.id, inputs(n), log=lambda s: None)
        return {}
    (node,) = plan.nodes_at("stage1")
    shutil.rmtree(storage / out_name, ignore_errors=True)
    base, t0 = rss_mb(), time.time()
    run_node(node, Config.from_dict(node.config).override(overrides), storage / out_name, inputs(node),
             log=lambda s: None)
    return {"base_mb": base, "seconds": time.time() - t0}


def child_paper(crop, full, batch: int, accum: int, early: bool, amp: str = "off") -> dict:
    import torch

    from proda.method.stages import Stage1
    from proda.models import build_model
    from proda.presets import make_config

    torch.set_num_threads(2)

    class EarlySourceBackward(Stage1):
        """Backpropagates the source CE at once, so its graph is freed before the target passes."""

        def micro_step(self, accum):
            self._accum = accum
            return super().micro_step(accum)

        def source_ce(self, x, y):
            loss = super().source_ce(x, y)
            self.backward(loss, self._accum)
            return loss.detach()

    cfg = make_config("paper-gta5", "pd+sl", 0, {"device": "cpu", "data.batch_size": batch, "data.crop": list(crop),
                                                 "data.full_size": list(full), "optim.amp": amp,
                                                 "optim.grad_accum": accum})
    stage = build_stage(cfg, build_model("resnet101", 19), fake_split("src", 2 * batch, full, 1),
                        fake_split("tgt", 2 * batch, full, 2), 8, cls=EarlySourceBackward if early else Stage1)
    base, t0 = rss_mb(), time.time()
    full_step(stage, accum)  # the optimiser step allocates SGD momentum buffers: part of a step's footprint
    return {"base_mb": base, "seconds": time.time() - t0}


# ------------------------------------------------------------------------------------ driver
def run_child(argv: list[str], limit_mb: float, timeout: float) -> dict:
    """This script as a child; its JSON line, or an error (killed above ``limit_mb`` RSS, timed out, failed)."""
    p = subprocess.Popen([sys.executable, __file__, *argv], cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, error = [0.0], []

    def watch():
        while p.poll() is None:
            seen[0] = max(seen[0], rss_mb(p.pid))
            if seen[0] > limit_mb:
                error.append(f"killed at RSS > {limit_mb / 1024:.1f} GB")
                return p.kill()
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        error.append(f"timed out after {timeout:.0f} s")
    res = last_json(out)
    if error or p.returncode != 0 or res is None:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        return {"error": error[0] if error else f"rc {p.returncode}: {last}", "watched_peak_mb": seen[0]}
    return res


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--storage", type=Path, default=Path("/tmp/proda-memory"))
    ap.add_argument("--skip-paper", action="store_true", help="only the smoke node")
    ap.add_argument("--skip-full", action="store_true", help="the paper step at the reduced size only")
    ap.add_argument("--max-rss-gb", type=float, default=None,
                    help="kill a measurement above this RSS (default: min(18, available − 3) GB)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kw = json.loads(a.args)
        res = child_smoke(a.storage, **kw) if a.child == "smoke" else child_paper(**kw)
        emit({**res, "peak_mb": peak_rss_mb()})
        return 0

    say(machine())
    avail = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                 if ln.startswith("MemAvailable")) / 1024 ** 2
    limit_gb = a.max_rss_gb or min(18.0, avail - 3.0)
    say(f"memory available now: {avail:.1f} GB; a measurement is stopped above {limit_gb:.1f} GB RSS")
    a.storage.mkdir(parents=True, exist_ok=True)
    say("\npreparing the smoke warm-up and pseudo-label nodes ...")
    prep = run_child(["--child", "smoke", "--storage", str(a.storage)], limit_gb * 1024, a.timeout)
    if "error" in prep:
        raise RuntimeError(f"preparing the smoke nodes failed: {prep['error']}")

    def smoke(ov):
        return ["--child", "smoke", "--storage", str(a.storage),
                "--args", json.dumps({"overrides": ov, "out_name": "stage1-" + "-".join(map(str, ov.values()))})]

    def paper(batch=1, accum=1, early=False, crop=(256, 448), full=(512, 1024)):
        return ["--child", "paper", "--args",
                json.dumps(dict(crop=list(crop), full=list(full), batch=batch, accum=accum, early=early))]

    todo = [("smoke stage-1 node", "smoke", smoke({}), ""),
            ("  + grad_accum 2", "smoke_accum2", smoke({"optim.grad_accum": 2}), "micro-batch 4 instead of 8"),
            ("  + bf16 autocast", "smoke_bf16", smoke({"optim.amp": "bf16"}), "")]
    if not a.skip_paper:
        todo += [("paper step, reduced, batch 2", "reduced_b2", paper(batch=2), ""),
                 ("  + grad_accum 2", "reduced_b2_accum2", paper(batch=2, accum=2), "2 micro-batches of 1"),
                 ("paper step, reduced, batch 1", "reduced_b1", paper(), ""),
                 ("  + early source backward", "reduced_b1_early", paper(early=True), "source graph freed first")]
        if not a.skip_full:
            todo.append(("paper step, 512×896 / 1024×2048, batch 1", "paper",
                         paper(crop=(512, 896), full=(1024, 2048)), ""))
    rows, res = [], {}
    for label, key, argv, note in todo:
        r = res[key] = run_child(argv, limit_gb * 1024, a.timeout)
        if "error" in r:
            seen = f"{r['error']} (peak seen {r['watched_peak_mb'] / 1024:.1f} GB)"
            rows.append([label, "—", "—", "—", "—", seen])
        else:
            rows.append([label, r["base_mb"], r["peak_mb"], r["peak_mb"] - r["base_mb"], r["seconds"], note])
        say(f"  {label}: " + json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}))
    say("\nRSS in MB; 'step' = peak − base (what the measured work added); reduced = crop 256×448, full 512×1024")
    say(table(["measurement", "base MB", "peak MB", "step MB", "seconds", "note"], rows))
    full = res.get("paper", {})
    emit({"smoke_node_peak_rss_mb": round(res["smoke"].get("peak_mb", float("nan")), 0),
          "paper_step_peak_rss_mb": round(full["peak_mb"], 0) if "peak_mb" in full else None,
          **{f"{k}_peak_mb": round(v["peak_mb"], 0) for k, v in res.items() if "peak_mb" in v and k != "paper"},
          **{f"{k}_step_mb": round(v["peak_mb"] - v["base_mb"], 0) for k, v in res.items() if "peak_mb" in v}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
