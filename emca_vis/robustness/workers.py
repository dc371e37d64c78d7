"""The torch corruptions on the CPU, on worker processes that share the batch's memory.

:func:`run` cuts a batch into parts that ``count`` processes take in turn, each running torch
on one thread, and gathers them back. Why processes: torch's intra-op threads wait for each
other at every operation and Python threads hand the GIL over between operations; when other
work shares the cores, a thread that loses its core holds the others up, and the backend fell
below the reference (whose worker processes run independently). The images and the output
travel through one file in ``/dev/shm`` mapped by every process, so a batch costs each worker one
message each way and a semaphore per part, not a copy of its pixels. The messages go through a
pipe per worker, written by the calling thread: ``concurrent.futures``' pools pass them through
helper threads that wait for the GIL, which started one of two workers about 1 ms late per batch.
"""

from __future__ import annotations

import atexit
import ctypes
import math
import multiprocessing
import os
import pickle
import tempfile

import numpy as np
import torch

PARTS_PER_WORKER = 4  # parts are taken as workers come free: one held up by other work takes fewer
# Pixels per channel in a part: one ImageNet image, whose temporaries stay in the core's cache
# (parts of 1 image at 224 px: 11% less time over the 15 corruptions than parts of 2, 20% than 4).
# Two for the corruptions with a fixed cost per call: zoom's dozen interpolations (0.7 ms), fog's
# coarse diamond-square levels (0.1 ms).
PART_PIXELS = 224 * 224
LARGER_PARTS = {"zoom_blur": 2, "fog": 2}
SMALLEST = 2 * 224 * 224  # pixels per channel in a batch worth sending to workers


def usable() -> bool:
    """Whether this process may start workers (a daemonic process, such as a DataLoader worker, may not)."""
    return not multiprocessing.current_process().daemon


def run(name: str, images: torch.Tensor, severity: int, seeds: list[int], count: int) -> torch.Tensor:
    """Corruption ``name`` of float32 CPU ``images`` [N, 3, H, W] on ``count`` worker processes,
    image ``i`` drawing from the random stream of ``seeds[i]``."""
    n = len(images)
    size = max(1, LARGER_PARTS.get(name, 1) * PART_PIXELS // images[0, 0].numel())
    size = min(size, math.ceil(n / (PARTS_PER_WORKER * count)))  # enough parts to share out
    pool = _pool(count)
    try:
        return pool.run(name, images, severity, seeds, size)
    except BaseException:
        # a worker failed or died, or this process was interrupted with parts in flight: the
        # semaphore's count is off, so the next batch gets fresh workers
        _pools.pop(count, None)
        pool.close()
        raise


def close() -> None:
    """Stop every worker process (the next batch starts new ones)."""
    while _pools:
        _pools.popitem()[1].close()


class WorkerError(RuntimeError):
    """A corruption worker process ended without answering."""


class _Pool:
    def __init__(self, count: int):
        # fork, as DataLoader workers: spawn would re-run the caller's script in each worker; the
        # workers run torch on one thread, which never enters an OpenMP region inherited from here
        context = multiprocessing.get_context("fork")
        # parts copied in (plus one stop per worker) and the next part to take, shared by fork
        self.ready, self.next_part = context.Semaphore(0), context.Value("i", 0)
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        handle, self.path = tempfile.mkstemp(prefix="emca-vis-corrupt-", suffix=".f32", dir=folder)
        os.close(handle)
        self._buffer = torch.empty(0)
        self.connections, self.processes = [], []
        for _ in range(count):
            here, there = context.Pipe()
            process = context.Process(target=_serve, args=(there, self.ready, self.next_part), daemon=True)
            process.start()
            there.close()
            self.connections.append(here)
            self.processes.append(process)
        atexit.register(self.close)

    def run(self, name: str, images: torch.Tensor, severity: int, seeds: list[int], size: int) -> torch.Tensor:
        n, numel = len(images), images.numel()
        buffer = self.buffer(2 * numel).numpy()
        source, target = images.numpy().reshape(n, -1), buffer[:numel].reshape(n, -1)
        # the jobs go first: the workers then take parts as this process copies them in
        self.next_part.value = 0
        for connection in self.connections:
            connection.send((self.path, tuple(images.shape), name, severity, size, seeds))
        for a in range(0, n, size):
            # numpy copies: torch's would run on this process' OpenMP threads, which then spin for
            # milliseconds waiting for more work, on the cores the workers need (6 ms of CPU per batch)
            np.copyto(target[a:a + size], source[a:a + size])
            self.ready.release()
        for _ in self.connections:
            self.ready.release()  # one stop per worker
        failed = [error for error in map(_answer, self.connections) if error is not None]
        if failed:  # a failed worker left its stop behind: run() starts a fresh pool
            raise failed[0]
        return torch.from_numpy(buffer[numel:2 * numel].copy()).view_as(images)

    def buffer(self, numel: int) -> torch.Tensor:
        if self._buffer.numel() < numel:
            # a new file for a bigger batch: workers map files by name and size
            self._buffer = torch.from_file(self.path, shared=True, size=numel, dtype=torch.float32)
        return self._buffer

    def close(self) -> None:
        for connection in self.connections:
            try:
                connection.send(None)
            except OSError:  # that worker is gone
                pass
            connection.close()
        for process in self.processes:
            process.join(timeout=1)
            if process.is_alive():
                process.kill()
        self.connections, self.processes = [], []
        if os.path.exists(self.path):
            os.unlink(self.path)


def _answer(connection) -> BaseException | None:
    try:
        return connection.recv()
    except (EOFError, OSError):
        return WorkerError("a corruption worker process ended (killed, or out of memory?)")


_pools: dict[int, _Pool] = {}  # by worker count


def _pool(count: int) -> _Pool:
    if count not in _pools:
        _pools[count] = _Pool(count)
    return _pools[count]


_mapped: dict[str, np.memmap] = {}

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def _serve(connection, ready, next_part) -> None:
    """A worker: runs the jobs it is sent, answers each with None or the exception it raised."""
    torch.set_num_threads(1)
    # glibc hands allocations above 128 kB back to the kernel when freed, so every image-sized
    # temporary of every call came back as fresh zeroed pages (about 550 page faults per part);
    # keeping them in the heap makes the next call reuse them
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except OSError:  # not glibc
        pass
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            _take_parts(ready, next_part, *job)
        except Exception as error:
            connection.send(error if _picklable(error) else RuntimeError(repr(error)))
        else:
            connection.send(None)


def _picklable(error: Exception) -> bool:
    try:
        pickle.dumps(error)
    except Exception:
        return False
    return True


def _take_parts(ready, next_part, path: str, shape: tuple[int, ...], name: str, severity: int, size: int,
                seeds: list[int]) -> None:
    """Corrupt parts of ``size`` images, each as soon as it is copied in, until a stop."""
    from .corruptions import TORCH_CORRUPTIONS
    from .sampling import Streams

    numel = math.prod(shape)
    mapped = _mapped.get(path)
    if mapped is None or mapped.size < 2 * numel:
        mapped = _mapped[path] = np.memmap(path, dtype=np.float32, mode="r+")
    memory = torch.from_numpy(mapped)
    images, out = memory[:numel].view(shape), memory[numel:2 * numel].view(shape)
    while True:
        ready.acquire()
        with next_part.get_lock():  # parts are copied in and taken in the same order
            start = next_part.value * size
            next_part.value += 1
        if start >= shape[0]:
            return
        stop = min(start + size, shape[0])
        out[start:stop] = TORCH_CORRUPTIONS[name](images[start:stop], severity, Streams(seeds[start:stop]))
