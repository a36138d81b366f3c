"""The one file of a node folder that the engine itself decides by: ``done.json``, written last.

A node folder is complete when it has ``done.json`` (its final metrics): :func:`proda.engine.nodes.run_node`
writes it last and never runs a node that has one, nor one whose inputs lack one. Everything else a study
folder holds — ``failed.json``, ``error.json``, ``plan.json``, the other statuses — is the ablation layer's
(:mod:`proda.ablation.study`), which reads completeness from here, so "done" is decided in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from proda.checkpoint import atomic_write

DONE = "done.json"


def is_done(node_dir: Path) -> bool:
    return (Path(node_dir) / DONE).is_file()


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; ``None`` when it is missing, unreadable or not an object."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def read_done(node_dir: Path) -> dict[str, Any] | None:
    """The node's final metrics; ``None`` when it has no ``done.json`` (or one that is not a JSON object —
    it is written atomically, so only a hand edit makes that). The one reader of ``done.json``."""
    return read_json(Path(node_dir) / DONE)


def write_json(path: Path, obj: Any, indent: int | None = None) -> None:
    """``obj`` as JSON at ``path``, atomically: a reader sees the old file or the new one, never a torn one."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=indent, allow_nan=True).encode()))
