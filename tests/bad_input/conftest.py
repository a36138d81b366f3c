"""Helpers of the bad-input suite: run the two commands (in this process or as a subprocess) and check
that a refusal is clean — one line on stderr starting with ``error:``, a non-zero exit, no traceback."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_png

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "control: a positive control (a good input is accepted), not a bad input")


@pytest.fixture(autouse=True)
def _bad_input(request, record_property):
    """Each test here tries one bad input (counted by benchmarks/faults.py) unless marked ``control``."""
    if request.node.get_closest_marker("control") is None:
        record_property("bad_input", request.node.name)


def ablation_main():
    """``main`` of ``experiments/ablation.py`` (a script, not a module of the package)."""
    spec = importlib.util.spec_from_file_location("ablation_cli", ROOT / "experiments" / "ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def run_cli(args: list[str], timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python ARGS`` in the repository root, the way a user runs it."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_refused(rc: int, stderr: str, *needles: str) -> str:
    """A clean refusal: non-zero exit, exactly one non-empty stderr line, starting with ``error:`` and
    naming every needle; no traceback. Returns that line."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert rc != 0, f"exit code {rc}, expected a refusal; stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in: {lines[0]}"
    return lines[0]


# -- tiny dataset trees in the real layouts --------------------------------------------------------
GOOD_IDS = np.array([[7, 26, 0, 255], [33, 8, 22, 27]], np.uint8)  # Cityscapes label ids (road, car, ...)


def write_rgb(path: Path, h: int = 2, w: int = 4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.full((3, h, w), 128, dtype=torch.uint8), str(path))


def write_label(path: Path, ids: np.ndarray = GOOD_IDS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.as_tensor(ids)[None], str(path))


def make_gta5(root: Path, n: int = 3) -> Path:
    for i in range(n):
        write_rgb(root / "images" / f"{i:05d}.png")
        write_label(root / "labels" / f"{i:05d}.png")
    return root


def make_cityscapes(root: Path, splits=("train", "val"), n: int = 2) -> Path:
    for split in splits:
        for i in range(n):
            stem = f"aachen_{i:06d}_000019"
            write_rgb(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png")
            write_label(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png")
    return root
