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
from typing import NamedTuple

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


def poisson_levels(levels: torch.Tensor, rates: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson counts ``Poisson(rates[levels])``, as float32, for values with few distinct rates.

    ``levels`` holds whole numbers (8-bit pixel values, say) in any float or integer dtype.
    Inversion of each rate's CDF with one float32 uniform per value: the uniform's bin
    (1/POISSON_BINS wide) gives the count from a table, unless a CDF step falls inside that bin;
    those few values then step along the CDF. Exact for the given uniforms (the count is the
    least k with u < F(k)), and several times faster than ``torch.poisson``, whose CPU sampler
    draws one value at a time.
    """
    device = levels.device
    table = _poisson_table(tuple(rates.double().cpu().tolist()))
    u = uniform(levels.shape, generator, device)
    # bin numbers stay below 2^24, so float32 holds them exactly
    index = (u * POISSON_BINS).floor_().add_(levels.to(torch.float32), alpha=POISSON_BINS).to(torch.int32)
    coded = table.coded.to(device).index_select(0, index.view(-1))
    counts = coded.floor()
    walk = (coded != counts).nonzero().squeeze(1)
    if walk.numel():
        cdf = table.cdf.to(device)
        row = levels.reshape(-1).index_select(0, walk).long() * cdf.shape[1]
        value = u.view(-1).index_select(0, walk).double()
        count = counts.index_select(0, walk).long()
        while True:
            further = cdf.view(-1).index_select(0, row + count) <= value
            if not bool(further.any()):
                break
            count += further
        counts.index_copy_(0, walk, count.to(counts.dtype))
    return counts.view(levels.shape)


POISSON_BINS = 2048


class _PoissonTable(NamedTuple):
    cdf: torch.Tensor  # [rates, K + 1] float64, last column 2 (beyond any uniform)
    coded: torch.Tensor  # [rates * BINS] float32: count at the bin's lower edge, + 0.5 if a CDF step is inside


@lru_cache(maxsize=16)
def _poisson_table(rates: tuple[float, ...]) -> _PoissonTable:
    lam = torch.tensor(rates, dtype=torch.float64)[:, None]
    top = float(lam.max())
    k = torch.arange(int(top + 12 * top**0.5 + 12) + 1, dtype=torch.float64)  # P(X > K) < 1e-20
    cdf = (torch.xlogy(k, lam) - lam - torch.lgamma(k + 1)).exp().cumsum(1)
    cdf[:, -1] = 2.0
    edges = (torch.arange(POISSON_BINS + 1, dtype=torch.float64) / POISSON_BINS).expand(len(rates), -1).contiguous()
    counts = torch.searchsorted(cdf, edges, right=True)  # X(u) = #{k : F(k) <= u}
    start, end = counts[:, :-1], counts[:, 1:]
    return _PoissonTable(cdf, (start + 0.5 * (end > start)).to(torch.float32).flatten())


def integers(low: int, high: int, shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform integers in ``[low, high)`` of ``shape`` (first dimension: images), int64."""
    return per_image(lambda a, b, g, d: torch.randint(low, high, (b - a, *shape[1:]), generator=g, device=d),
                     shape[0], generator, device)


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=torch.get_num_threads(), thread_name_prefix="corruptions")
