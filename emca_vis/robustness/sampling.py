"""Random draws of the torch corruptions, one stream per image.

Every image draws from its own stream, seeded from the caller's generator, so an image's noise
does not depend on the batch it is in, nor on how :func:`.corruptions.corrupt` splits the batch
over threads. Pass a :class:`Streams` as the ``generator`` to go on with given streams (what
``corrupt`` does for each part of a batch); a ``torch.Generator`` starts fresh streams, seeded
from it, at every draw. On the CPU, uniform numbers and integers come from numpy's SFC64 bit
generator (one 64-bit word gives two 24-bit uniforms): several times faster than
``torch.rand``, whose CPU sampler (mt19937) made the noises the slowest corruptions. Normals
come from ``torch.randn`` with the image's torch generator. With a CUDA generator the whole
batch is one call on the device.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch


class Streams:
    """Per-image random streams: image ``i`` draws from ``seeds[i]`` (a 64-bit bit generator for
    uniforms and integers, a torch generator for normals). Slicing gives the streams of a part of
    the batch, which go on where the whole batch's would."""

    def __init__(self, seeds: list[int]):
        self.seeds = list(seeds)
        self._bits: list[np.random.SFC64 | None] = [None] * len(self.seeds)
        self._torch: list[torch.Generator | None] = [None] * len(self.seeds)

    @classmethod
    def from_generator(cls, generator: torch.Generator | None, n: int) -> "Streams":
        return cls(torch.randint(2**62, (n,), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, part: slice) -> "Streams":
        out = Streams.__new__(Streams)
        out.seeds, out._bits, out._torch = self.seeds[part], self._bits[part], self._torch[part]
        return out

    def bits(self, i: int) -> np.random.SFC64:
        if self._bits[i] is None:
            self._bits[i] = np.random.SFC64(self.seeds[i])
        return self._bits[i]

    def torch_generator(self, i: int) -> torch.Generator:
        if self._torch[i] is None:
            self._torch[i] = torch.Generator().manual_seed(self.seeds[i])
        return self._torch[i]

    def words(self, i: int, count: int) -> torch.Tensor:
        """``count`` random 32-bit words of image ``i``, as int32."""
        return torch.from_numpy(self.bits(i).random_raw((count + 1) // 2).view(np.int32)[:count])


def _streams(generator, n: int) -> Streams | None:
    """The per-image streams behind ``generator``; None for a generator on an accelerator."""
    if isinstance(generator, Streams):
        if len(generator) != n:
            raise ValueError(f"{len(generator)} random streams for {n} images")
        return generator
    if generator is not None and generator.device.type != "cpu":
        return None
    return Streams.from_generator(generator, n)


def _per_image(shape, streams: Streams, draw, dtype) -> torch.Tensor:
    out = torch.empty(tuple(shape), dtype=dtype)
    for i in range(shape[0]):
        out[i] = draw(i, int(np.prod(shape[1:], dtype=np.int64))).view(tuple(shape[1:]))
    return out


def uniform(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) numbers of ``shape`` (first dimension: images): 24 random bits for float32,
    53 for float64 (two words)."""
    streams = _streams(generator, shape[0])
    if streams is None:
        return torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)

    def draw(i: int, count: int) -> torch.Tensor:
        if dtype == torch.float64:
            words = torch.from_numpy((streams.bits(i).random_raw(count) >> np.uint64(11)).view(np.int64))
            return words.double().mul_(2.0**-53)
        return (streams.words(i, count) & 0xFFFFFF).to(dtype).mul_(2.0**-24)

    return _per_image(shape, streams, draw, dtype).to(device)


def normal(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal numbers of ``shape`` (first dimension: images)."""
    streams = _streams(generator, shape[0])
    if streams is None:
        return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)
    return _per_image(shape, streams, lambda i, count: torch.randn(count, generator=streams.torch_generator(i),
                                                                   dtype=dtype), dtype).to(device)


def integers(low: int, high: int, shape, generator, device) -> torch.Tensor:
    """Uniform integers in ``[low, high)`` of ``shape`` (first dimension: images), int64: a 32-bit
    word times the range, shifted down 32 bits (bias below range / 2^32, as torch's modulo)."""
    streams = _streams(generator, shape[0])
    if streams is None:
        return torch.randint(low, high, tuple(shape), generator=generator, device=generator.device).to(device)

    def draw(i: int, count: int) -> torch.Tensor:
        words = streams.words(i, count).long() & 0xFFFFFFFF
        return ((words * (high - low)) >> 32) + low

    return _per_image(shape, streams, draw, torch.int64).to(device)


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


