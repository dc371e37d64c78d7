"""Process group set-up under torchrun, and sums over processes."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..errors import UserError


def setup_distributed(device_arg: str) -> tuple[int, int, int, torch.device]:
    """(rank, world size, local rank, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, local, device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over all processes (unchanged in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
