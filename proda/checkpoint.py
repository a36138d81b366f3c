"""One checkpoint format: a dict of tensors and plain values, written atomically, loaded weights-only.

A checkpoint holds model, EMA, discriminator, optimisers, prototypes, step and every RNG state
(torch CPU/CUDA, numpy, python, and the engine's own generators), so a run stopped at any step and
resumed is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import os
import pickle
import random
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the model.

    ``reason``: what is wrong with the file, without its name (a caller that names the file by the config
    field it came from words its own line around it)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = message if reason is None else reason


_HOST = socket.gethostname()


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of ``path`` left by writers of this host that were killed mid-write (their pid is
    gone): a SIGKILL skips every cleanup, and on the next write of the same file they are removed."""
    prefix = f".{path.name}.{_HOST}."
    try:
        names = [e.name for e in os.scandir(path.parent) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            (path.parent / name).unlink(missing_ok=True)
        except OSError:
            pass


def atomic_write(path: str | Path, write_fn) -> None:
    """Write through ``write_fn(file_obj)`` to a temporary name, fsync, then rename over ``path``.

    A crash at any point leaves either the previous complete file or the new one, never a torn file; the
    temporary file of a writer killed mid-write is removed by the next write of the same file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)``: a pickle carrying code is refused, with the file named."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise CheckpointError(f"checkpoint '{path}' refused by weights_only loading (it may carry code): {first}",
                              reason=first) from None
    except Exception as e:  # noqa: BLE001 - truncated / not a torch file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]  # torch's message spans many lines
        raise CheckpointError(f"checkpoint '{path}' is unreadable ({type(e).__name__}: {e})", reason=first) from None


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with one clear line when the architecture or class count differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint '{source}' does not fit the model: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}) — another architecture?"
        )
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise CheckpointError(
                f"checkpoint '{source}': tensor '{k}' has shape {tuple(state[k].shape)}, the model expects "
                f"{tuple(v.shape)} — another architecture or class count?"
            )
    model.load_state_dict(state)


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state: torch CPU (and CUDA), numpy, python, and named torch generators."""
    np_state = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _py_state_to_tensor(random.getstate()),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_py_state_from_tensor(st["python"]))
    for k, g in (generators or {}).items():
        g.set_state(st["generators"][k])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _py_state_to_tensor(s) -> dict:
    version, internal, gauss = s
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss}


def _py_state_from_tensor(d) -> tuple:
    return (d["version"], tuple(int(x) for x in d["internal"].tolist()), d["gauss"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
