"""Shared helpers of the benchmarks: timing with interleaved repetitions, tables, machine info, peak RSS.

Timings on a shared 2-core machine are noisy: every comparison runs its candidates side by side in one
process, alternating them repetition by repetition, and reports medians. Where other processes load the
machine, wall-clock times swing by several times within minutes; ``clock="cpu"`` measures this process's
CPU time instead (``time.process_time``: all its threads), which other processes barely inflate — with
one torch thread it is the wall time the work would take on an idle core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
try:
    import proda  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def now() -> float:
    return time.perf_counter()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def sync(device=None) -> None:
    """Wait for queued device work (a no-op on CPU)."""
    import torch

    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device=None, clock: str = "wall") -> float:
    c = CLOCKS[clock]
    sync(device)
    t0 = c()
    fn()
    sync(device)
    return c() - t0


def alternate(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1, device=None,
              log: Callable[[str], None] | None = None, clock: str = "wall") -> dict[str, list[float]]:
    """Run each candidate ``warmup`` times, then ``reps`` rounds of all candidates in turn (the order
    rotates every round); return every candidate's timings in seconds (of ``clock``: wall or cpu)."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            out[n].append(timed(fns[n], device, clock))
            if log:
                log(f"  rep {r + 1}/{reps} {n}: {out[n][-1]:.3f} s")
    return out


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain fixed-width table; floats printed with 3 decimals (below 1000)."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    rows = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    def line(cells):
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line([str(h) for h in headers]), line(["-" * w for w in widths])] + [line(r) for r in rows])


def machine() -> str:
    import torch

    return (f"{platform.node() or 'host'}: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}, python {platform.python_version()}, "
            f"load avg {os.getloadavg()[0]:.2f}")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(obj: dict) -> None:
    """The benchmark's last line: one JSON object."""
    print(json.dumps(obj), flush=True)


def parser(doc: str, timing: bool = False) -> argparse.ArgumentParser:
    """The script's parser, described by its docstring's first paragraph; ``timing`` adds --reps, --threads
    and --clock (cpu: this process's CPU time, robust to other processes' load; wall: wall time)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if timing:
        ap.add_argument("--reps", type=int, default=3, help="rounds of all measurements (after a warm-up round)")
        ap.add_argument("--threads", type=int, default=1)
        ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    return ap


def start(args) -> None:
    """Set the torch threads of a timing script and print the machine and clock lines."""
    import torch

    torch.set_num_threads(args.threads)
    say(machine())
    say(f"clock: {args.clock} time, {args.threads} torch thread(s)")


def last_json(stdout: str) -> dict | None:
    """The last line of a benchmark's (or a child's) output that is a JSON object, or None."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run_child(script: str, argv: list[str], timeout: float | None = None) -> dict:
    """Run ``script`` (a path) in a fresh Python process and return its last JSON line (with ``process_s``)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    p = subprocess.run([sys.executable, script, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    res = last_json(p.stdout)
    if p.returncode != 0 or res is None:
        raise RuntimeError(f"{Path(script).name} {' '.join(argv[:2])} failed (rc {p.returncode}):\n"
                           f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return {**res, "process_s": time.time() - t0}


def fake_split(name: str, n: int, size: tuple[int, int], seed: int, k: int = 19):
    """An in-memory split of ``n`` random uint8 images and labels at ``size``."""
    import torch

    from proda.data.stream import Split

    g = torch.Generator().manual_seed(seed)
    return Split(name, n, tuple(size), images=torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g),
                 labels=torch.randint(0, k, (n, *size), dtype=torch.uint8, generator=g))


def build_stage(cfg, model, source, target, stride: int, seed: int = 0, device="cpu", cls=None):
    """A `Stage1` (or ``cls``) on ``source``/``target`` with random soft labels (at the model's ``stride``) and
    prototypes."""
    import torch
    import torch.nn.functional as F

    from proda.method.stages import Stage1

    k, g = cfg.data.num_classes, torch.Generator().manual_seed(seed)
    out_hw = (cfg.data.full_size[0] // stride, cfg.data.full_size[1] // stride)
    soft = F.softmax(3 * torch.randn(target.size, k, *out_hw, generator=g), 1).half()
    protos = torch.randn(k, model.feat_channels, generator=g)
    return (cls or Stage1)(cfg, model, source, target, soft, protos, torch.ones(k), torch.device(device), seed)


def full_step(stage, accum: int = 1) -> None:
    """One optimiser step of a stage, as the trainer runs it."""
    for _ in range(accum):
        stage.micro_step(accum)
    stage.optimizer_step()
    stage.after_step()


def say(*a) -> None:
    print(*a, flush=True)


class NodeWatcher(threading.Thread):
    """Stamps (time.time()) when each node folder under ``nodes_dir`` first exists (``began``) and when its
    done.json does (``ended``); set ``stop`` to end the thread."""

    def __init__(self, nodes_dir: Path):
        super().__init__(daemon=True)
        self.nodes_dir, self.began, self.ended, self.stop = nodes_dir, {}, {}, False

    def run(self):
        while not self.stop:
            t = time.time()
            if self.nodes_dir.is_dir():
                for d in self.nodes_dir.iterdir():
                    self.began.setdefault(d.name, t)
                    if d.name not in self.ended and (d / "done.json").is_file():
                        self.ended[d.name] = t
            time.sleep(0.05)
