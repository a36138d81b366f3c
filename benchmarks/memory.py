"""Peak memory (RSS) of a smoke stage-1 node and of one paper-gta5 stage-1 step on CPU, and what gradient
accumulation, bf16 autocast and an earlier source backward change.

    python benchmarks/memory.py [--storage /tmp/proda-memory] [--skip-paper] [--max-rss-gb 16]

Every measurement is a fresh process; its peak RSS is ``ru_maxrss`` at its end, its "base" the RSS just
before the measured work (interpreter, torch, model, optimiser state and data loaded). A watcher in this
process kills a measurement whose RSS passes ``--max-rss-gb`` (other processes share this machine).
1. smoke: the stage-1 node of the smoke preset's pd+sl chain (seed 0), run with `run_node` (its warm-up
   and pseudo-label nodes are prepared first, unmeasured); as is, with ``optim.grad_accum=2`` and with
   ``optim.amp=bf16``.
2. paper: one `Stage1` step (micro_step + optimizer_step + after_step) of the paper-gta5 preset with
   DeepLab-v2-R101 at batch 1: crop 512×896, full image 1024×2048 for the EMA model; synthetic stand-in
   images, soft labels (19×128×256) and prototypes. The same step at a reduced size (crop 256×448, full
   512×1024) shows the options cheaply: batch 2 vs batch 2 with grad_accum=2, and "early source backward"
   (the source CE's graph freed before the target passes, as the official code's `loss_GTA.backward()`
   does; a subclass here, not the library's behaviour). bf16 autocast of
   the R101 step only with ``--paper-bf16``: a CPU without bf16 units (this one: AVX2) emulates it at a
   small fraction of fp32 speed; benchmarks/gpu_check.sh measures it on a GPU.
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
from _common import ROOT, build_stage, emit, fake_split, full_step, machine, parser, peak_rss_mb, say, table  # noqa: E402

K = 19


def rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# ---------------------------------------------------------------------------------- children
def smoke_plan():
    from proda.ablation.grid import AblationSpec, expand

    return expand(AblationSpec(name="memory", preset="smoke", variants=("pd+sl",), seeds=(0,)))


def child_prepare(storage: Path) -> dict:
    from proda.config import Config
    from proda.engine.nodes import run_node

    plan = smoke_plan()
    for name in ("warmup", "pseudo0"):
        for n in plan.nodes_at(name):
            run_node(n, Config.from_dict(n.config),
                     storage / "nodes" / n.id, {r: storage / "nodes" / u for r, u in n.inputs.items()},
                     log=lambda s: None)
    return {}


def child_smoke(storage: Path, overrides: dict, out_name: str) -> dict:
    import torch

    from proda.config import Config
    from proda.engine.nodes import run_node

    torch.set_num_threads(2)
    (node,) = smoke_plan().nodes_at("stage1")
    cfg = Config.from_dict(node.config).override(overrides)
    out = storage / out_name
    shutil.rmtree(out, ignore_errors=True)
    base = rss_mb()
    t0 = time.time()
    run_node(node, cfg, out,
             {r: storage / "nodes" / u for r, u in node.inputs.items()}, log=lambda s: None)
    return {"base_mb": base, "seconds": time.time() - t0}


def child_paper(crop, full, batch: int, amp: str, accum: int, early: bool) -> dict:
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
    stage = build_stage(cfg, build_model("resnet101", K), fake_split("src", 2 * batch, full, 1),
                        fake_split("tgt", 2 * batch, full, 2), 8, cls=EarlySourceBackward if early else Stage1)
    base = rss_mb()
    t0 = time.time()
    full_step(stage, accum)  # the optimiser step allocates SGD momentum buffers: part of a step's footprint
    return {"base_mb": base, "seconds": time.time() - t0}


# ------------------------------------------------------------------------------------ driver
def run_child(argv: list[str], limit_mb: float, timeout: float) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, __file__, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    seen, killed = [0.0], [False]

    def watch():
        while p.poll() is None:
            r = rss_mb(p.pid)
            seen[0] = max(seen[0], r)
            if r > limit_mb:
                killed[0] = True
                p.kill()
                return
            time.sleep(0.2)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return {"error": f"timed out after {timeout:.0f} s", "watched_peak_mb": seen[0]}
    w.join()
    if killed[0]:
        return {"error": f"killed at RSS > {limit_mb / 1024:.1f} GB", "watched_peak_mb": seen[0]}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": f"rc {p.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}",
                "watched_peak_mb": seen[0]}
    return json.loads(lines[-1])


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--storage", type=Path, default=Path("/tmp/proda-memory"))
    ap.add_argument("--skip-paper", action="store_true", help="only the smoke node")
    ap.add_argument("--skip-full", action="store_true", help="the paper step at the reduced size only")
    ap.add_argument("--paper-bf16", action="store_true",
                    help="also the reduced paper step under bf16 autocast (slow where the CPU has no bf16 units)")
    ap.add_argument("--max-rss-gb", type=float, default=None,
                    help="kill a measurement above this RSS (default: min(18, available − 3) GB)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kw = json.loads(a.args)
        res = {"prepare": lambda: child_prepare(a.storage), "smoke": lambda: child_smoke(a.storage, **kw),
               "paper": lambda: child_paper(**kw)}[a.child]()
        res["peak_mb"] = peak_rss_mb()
        print(json.dumps(res), flush=True)
        return 0

    say(machine())
    avail = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                 if ln.startswith("MemAvailable")) / 1024 ** 2
    limit_gb = a.max_rss_gb or min(18.0, avail - 3.0)
    say(f"memory available now: {avail:.1f} GB; a measurement is stopped above {limit_gb:.1f} GB RSS")
    limit = limit_gb * 1024
    rows, res = [], {}

    def measure(label, key, argv, note=""):
        r = run_child(argv, limit, a.timeout)
        res[key] = r
        if "error" in r:
            rows.append([label, "—", "—", "—", "—", f"{r['error']} (peak seen {r['watched_peak_mb'] / 1024:.1f} GB)"])
        else:
            rows.append([label, r["base_mb"], r["peak_mb"], r["peak_mb"] - r["base_mb"], r["seconds"], note])
        say(f"  {label}: " + json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}))

    a.storage.mkdir(parents=True, exist_ok=True)
    say("\npreparing the smoke warm-up and pseudo-label nodes ...")
    prep = run_child(["--child", "prepare", "--storage", str(a.storage)], limit, a.timeout)
    if "error" in prep:
        raise RuntimeError(f"preparing the smoke nodes failed: {prep['error']}")
    smoke = [("smoke stage-1 node", "smoke", {}, ""),
             ("  + grad_accum 2", "smoke_accum2", {"optim.grad_accum": 2}, "micro-batch 4 instead of 8"),
             ("  + bf16 autocast", "smoke_bf16", {"optim.amp": "bf16"}, "")]
    for label, key, ov, note in smoke:
        measure(label, key, ["--child", "smoke", "--storage", str(a.storage),
                        "--args", json.dumps({"overrides": ov, "out_name": "stage1-" + "-".join(map(str, ov.values()))})],
                note)
    if not a.skip_paper:
        def step(batch=1, accum=1, amp="off", early=False, crop=(256, 448), full=(512, 1024)):
            return dict(crop=list(crop), full=list(full), batch=batch, amp=amp, accum=accum, early=early)

        paper = [("paper step, reduced, batch 2", "reduced_b2", step(batch=2), ""),
                 ("  + grad_accum 2", "reduced_b2_accum2", step(batch=2, accum=2), "2 micro-batches of 1"),
                 ("paper step, reduced, batch 1", "reduced_b1", step(), ""),
                 ("  + early source backward", "reduced_b1_early", step(early=True), "source graph freed first")]
        if a.paper_bf16:
            paper.append(("  + bf16 autocast", "reduced_b1_bf16", step(amp="bf16"),
                          "emulated bf16 on a CPU without it: very slow"))
        if not a.skip_full:
            paper.append(("paper step, 512×896 / 1024×2048, batch 1", "paper",
                          step(crop=(512, 896), full=(1024, 2048)), ""))
        for label, key, kw, note in paper:
            measure(label, key, ["--child", "paper", "--args", json.dumps(kw)], note)
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
