"""The torch corruptions on the CPU, on worker processes that share the batch's memory.

:func:`run` cuts a batch into parts that ``count`` processes take in turn, each running torch
on one thread, and gathers them back. Why processes: torch's intra-op threads wait for each
other at every operation and Python threads hand the GIL over between operations; when other
work shares the cores, a thread that loses its core holds the others up, and the backend fell
below the reference (whose worker processes run independently). The images and the output
travel through one file in ``/dev/shm`` mapped by every process, so a part costs its worker a
few bytes of messages, not a copy of its pixels.
"""

from __future__ import annotations

import atexit
import ctypes
import math
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np
import torch

PARTS_PER_WORKER = 2  # a worker held up by other work leaves its second part to the others
SMALLEST = 2 * 224 * 224  # pixels per channel in a batch worth sending to workers


def usable() -> bool:
    """Whether this process may start workers (a daemonic process, such as a DataLoader worker, may not)."""
    return not multiprocessing.current_process().daemon


def run(name: str, images: torch.Tensor, severity: int, seeds: list[int], count: int) -> torch.Tensor:
    """Corruption ``name`` of float32 CPU ``images`` [N, 3, H, W] on ``count`` worker processes,
    image ``i`` drawing from the random stream of ``seeds[i]``."""
    n = len(images)
    size = math.ceil(n / (PARTS_PER_WORKER * count))
    pool = _pool(count)
    # numpy copies: torch's would run on this process' OpenMP threads, which then spin for
    # milliseconds waiting for more work, on the cores the workers need (6 ms of CPU per batch)
    buffer = pool.buffer(2 * images.numel()).numpy()
    np.copyto(buffer[:images.numel()], images.numpy().reshape(-1))
    jobs = [pool.executor.submit(_part, pool.path, tuple(images.shape), name, severity, a, min(a + size, n),
                                 seeds[a:a + size]) for a in range(0, n, size)]
    for job in jobs:
        job.result()
    return torch.from_numpy(buffer[images.numel():2 * images.numel()].copy()).view_as(images)


class _Pool:
    def __init__(self, count: int):
        # fork, as DataLoader workers: spawn would re-run the caller's script in each worker; the
        # workers run torch on one thread, which never enters an OpenMP region inherited from here
        context = multiprocessing.get_context("fork")
        self.executor = ProcessPoolExecutor(count, mp_context=context, initializer=_start_worker)
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        handle, self.path = tempfile.mkstemp(prefix="emca-vis-corrupt-", suffix=".f32", dir=folder)
        os.close(handle)
        self._buffer = torch.empty(0)
        atexit.register(self.close)

    def buffer(self, numel: int) -> torch.Tensor:
        if self._buffer.numel() < numel:
            # a new file for a bigger batch: workers map files by name and size
            self._buffer = torch.from_file(self.path, shared=True, size=numel, dtype=torch.float32)
        return self._buffer

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if os.path.exists(self.path):
            os.unlink(self.path)


@lru_cache(maxsize=2)
def _pool(count: int) -> _Pool:
    return _Pool(count)


_mapped: dict[str, np.memmap] = {}


def _start_worker() -> None:
    torch.set_num_threads(1)
    # glibc hands allocations above 128 kB back to the kernel when freed, so every image-sized
    # temporary of every call came back as fresh zeroed pages (about 550 page faults per part);
    # keeping them in the heap makes the next call reuse them
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def _part(path: str, shape: tuple[int, ...], name: str, severity: int, start: int, stop: int,
          seeds: list[int]) -> None:
    from .corruptions import TORCH_CORRUPTIONS
    from .sampling import Streams

    numel = math.prod(shape)
    mapped = _mapped.get(path)
    if mapped is None or mapped.size < 2 * numel:
        mapped = _mapped[path] = np.memmap(path, dtype=np.float32, mode="r+")
    memory = torch.from_numpy(mapped)
    images, out = memory[:numel].view(shape), memory[numel:2 * numel].view(shape)
    out[start:stop] = TORCH_CORRUPTIONS[name](images[start:stop], severity, Streams(seeds))
