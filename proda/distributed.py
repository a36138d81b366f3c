"""DDP helpers that are no-ops in one process (torchvision references style)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate (along dim 0) the tensors of all ranks, which may differ in length along dim 0."""
    if not is_dist():
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    pad = t.new_zeros((max(sizes) - t.shape[0], *t.shape[1:]))
    buf = [t.new_zeros((max(sizes), *t.shape[1:])) for _ in sizes]
    dist.all_gather(buf, torch.cat([t, pad]))
    return torch.cat([b[:s] for b, s in zip(buf, sizes)])


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the default process group from torchrun-style env vars, if present and not done yet."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist.is_initialized()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend)
    return True
