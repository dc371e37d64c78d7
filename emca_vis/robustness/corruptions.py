"""The ImageNet-C corruptions behind one function, in two backends.

    corrupt(images, "fog", severity=3)                          # torch: batched, CPU or GPU
    corrupt(images, "fog", severity=3, backend="reference")     # imagecorruptions, per image

``images`` are float ``[N, 3, H, W]`` in [0, 1] (before normalisation). ``reference`` runs the
maintained ``imagecorruptions`` package (imagecorruptions-imaug) on each image in worker
processes, one per core; ``torch`` runs the vectorised re-implementations in
:mod:`.noise_digital`, :mod:`.blur` and :mod:`.weather`, which use the same per-severity
parameters. Both are seeded: the same ``seed`` gives the same output, and every image draws
from its own random stream (:class:`.sampling.Streams`), so the output does not depend on the
batch size or the thread count.

On the CPU, with more than one torch thread, the batch is cut into parts for as many worker
processes running torch on one thread each (:mod:`.workers`).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from ..errors import UserError
from . import blur, noise_digital, sampling, weather, workers
from .metrics import EXTRA, IMAGENET_C

CORRUPTIONS = IMAGENET_C + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)
BACKENDS = ("torch", "reference")
# No randomness in the reference: the torch backend must reproduce these pixel for pixel
# (PSNR >= 30 dB); the others are compared by the errors they cause.
DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression", "saturate",
                 "gaussian_blur")
TORCH_CORRUPTIONS = {**noise_digital.CORRUPTIONS, **blur.CORRUPTIONS, **weather.CORRUPTIONS}


class CorruptionError(UserError):
    pass


def check(name: str, severity: int, backend: str = "torch") -> None:
    if name not in CORRUPTIONS:
        raise CorruptionError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise CorruptionError(f"unknown severity {severity!r}; choose from 1-5")
    if backend not in BACKENDS:
        raise CorruptionError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def corrupt(images: torch.Tensor, name: str, severity: int, backend: str = "torch", seed: int = 0) -> torch.Tensor:
    """``name`` at ``severity`` applied to every image; float ``[N, 3, H, W]`` in [0, 1]."""
    check(name, severity, backend)
    if backend == "torch":
        streams = sampling.Streams.from_generator(torch.Generator().manual_seed(seed), len(images))
        return _in_parts(name, images.float(), severity, streams)
    return _reference(images, name, severity, seed)


def _in_parts(name: str, images: torch.Tensor, severity: int, streams: sampling.Streams) -> torch.Tensor:
    """Corruption ``name`` on worker processes, one per torch thread (CPU); in this process on an
    accelerator, with one thread or for one image."""
    threads = torch.get_num_threads()
    small = images[:, 0].numel() < workers.SMALLEST  # the messages to and from workers would cost more
    if images.device.type != "cpu" or threads == 1 or small or not workers.usable():
        return TORCH_CORRUPTIONS[name](images, severity, streams)
    return workers.run(name, images.contiguous(), severity, streams.seeds, threads)


_pool: ProcessPoolExecutor | None = None


def _reference(images: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=len(os.sched_getaffinity(0)))
    # numpy conversions: torch's would wake this process' OpenMP threads, which spin on the cores
    # the reference's workers need
    pixels = np.rint(np.clip(images.detach().cpu().float().numpy(), 0, 1) * 255).astype(np.uint8)
    jobs = [(image, name, severity, seed * 1_000_003 + i) for i, image in enumerate(pixels.transpose(0, 2, 3, 1))]
    out = np.stack(list(_pool.map(_reference_one, jobs))).transpose(0, 3, 1, 2)
    return torch.from_numpy(out.astype(np.float32) / np.float32(255)).to(images.device)


def _reference_one(job) -> np.ndarray:
    from imagecorruptions import corrupt as reference_corrupt

    image, name, severity, seed = job
    np.random.seed(seed % 2**32)  # the package draws from numpy's global generator
    return np.asarray(reference_corrupt(image, corruption_name=name, severity=severity), dtype=np.uint8)
