"""Random draws of the torch corruptions: from the caller's generator, spread over CPU threads.

torch's CPU samplers run on one thread, which made the noise corruptions the slowest of the
batch. Here, on the CPU, every image gets its own generator (seeded from the caller's) and the
images are drawn on ``torch.get_num_threads()`` threads; the numbers do not depend on the thread
count. With a CUDA generator the whole batch is one call.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch

Sampler = Callable[[int, int, torch.Generator | None, torch.device], torch.Tensor]


def per_image(sample: Sampler, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``sample(start, stop, generator, device)`` draws for images ``start:stop``; all ``n``
    images' draws, concatenated and moved to ``device``."""
    where = generator.device if generator is not None else torch.device(device)
    if where.type != "cpu":
        return sample(0, n, generator, where).to(device)
    seeds = torch.randint(2**62, (n,), generator=generator).tolist()
    parts = _pool().map(lambda i: sample(i, i + 1, torch.Generator().manual_seed(seeds[i]), where), range(n))
    return torch.cat(list(parts)).to(device)


def uniform(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) numbers of ``shape`` (first dimension: images)."""
    return per_image(lambda a, b, g, d: torch.rand((b - a, *shape[1:]), generator=g, device=d, dtype=dtype),
                     shape[0], generator, device)


def normal(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal numbers of ``shape`` (first dimension: images)."""
    return per_image(lambda a, b, g, d: torch.randn((b - a, *shape[1:]), generator=g, device=d, dtype=dtype),
                     shape[0], generator, device)


def poisson(rates: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson counts with the given ``rates`` (first dimension: images)."""
    return per_image(lambda a, b, g, d: torch.poisson(rates[a:b].to(d), generator=g), len(rates), generator,
                     rates.device)


def integers(low: int, high: int, shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform integers in ``[low, high)`` of ``shape`` (first dimension: images), int64."""
    return per_image(lambda a, b, g, d: torch.randint(low, high, (b - a, *shape[1:]), generator=g, device=d),
                     shape[0], generator, device)


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=torch.get_num_threads(), thread_name_prefix="corruptions")
