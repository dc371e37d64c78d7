"""Random draws of the torch corruptions, one stream per image.

Every image draws from its own stream, seeded from the caller's generator, so an image's noise
does not depend on the batch it is in, nor on how :func:`.corruptions.corrupt` splits the batch
over threads. Pass a :class:`Streams` as the ``generator`` to go on with given streams (what
``corrupt`` does for each part of a batch); a ``torch.Generator`` starts fresh streams, seeded
from it, at every draw. On the CPU, uniform numbers and integers come from numpy's SFC64 bit
generator (one 64-bit word gives two 24-bit uniforms): several times faster than
``torch.rand``, whose CPU sampler (mt19937) made the noises the slowest corruptions. Normals
are Box-Muller transforms of the same 24-bit uniforms, as ``torch.randn`` makes them on the
CPU (same distribution), with both normals of each pair used and numpy's SIMD ``log`` / ``cos``
/ ``sin``: ~1.4x faster than ``torch.randn``, whose mt19937 uniforms are most of its time
(numpy's ziggurat is slower still). Sparse Bernoulli hits
(:func:`hits`) and Poisson counts (:func:`poisson_levels`) work on the raw words. With a CUDA
generator the whole batch is one call on the device.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch


class Streams:
    """Per-image random streams: image ``i`` draws from ``seeds[i]`` (a 64-bit bit generator).
    Slicing gives the streams of a part of
    the batch, which go on where the whole batch's would."""

    def __init__(self, seeds: list[int]):
        self.seeds = list(seeds)
        self._bits: list[np.random.SFC64 | None] = [None] * len(self.seeds)

    @classmethod
    def from_generator(cls, generator: torch.Generator | None, n: int) -> "Streams":
        return cls(torch.randint(2**62, (n,), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, part: slice) -> "Streams":
        out = Streams.__new__(Streams)
        out.seeds, out._bits = self.seeds[part], self._bits[part]
        return out

    def bits(self, i: int) -> np.random.SFC64:
        if self._bits[i] is None:
            self._bits[i] = np.random.SFC64(self.seeds[i])
        return self._bits[i]

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
    """``draw(i, count, out)`` writes image ``i``'s values into the flat view ``out`` (in place,
    or converting on the copy)."""
    out = torch.empty(tuple(shape), dtype=dtype)
    count = int(np.prod(shape[1:], dtype=np.int64))
    for i in range(shape[0]):
        draw(i, count, out[i].view(-1))
    return out


def uniform(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) numbers of ``shape`` (first dimension: images): 24 random bits for float32,
    53 for float64 (two words)."""
    streams = _streams(generator, shape[0])
    if streams is None:
        return torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)

    def draw(i: int, count: int, out: torch.Tensor) -> None:
        if dtype == torch.float64:
            out.copy_(torch.from_numpy((streams.bits(i).random_raw(count) >> np.uint64(11)).view(np.int64)))
        else:
            out.copy_(streams.words(i, count) & 0xFFFFFF)  # converted to float in the copy

    return _per_image(shape, streams, draw, dtype).mul_(2.0**-53 if dtype == torch.float64 else 2.0**-24).to(device)


def normal(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal numbers of ``shape`` (first dimension: images): :func:`_box_muller` for
    float32."""
    streams = _streams(generator, shape[0])
    if streams is None:
        return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)

    def draw(i: int, count: int, out: torch.Tensor) -> None:
        if dtype == torch.float32:
            _box_muller(streams.bits(i), out.numpy())
        else:  # full-precision normals from a torch generator seeded by the stream
            seed = int(streams.bits(i).random_raw()) >> 1
            torch.randn(count, generator=torch.Generator().manual_seed(seed), dtype=dtype, out=out)

    return _per_image(shape, streams, draw, dtype).to(device)


def _box_muller(bits: np.random.SFC64, out: np.ndarray) -> np.ndarray:
    """Fills the flat float32 ``out`` with standard normals: for each pair of 24-bit uniforms, ``r
    = sqrt(-2 log u1)`` with ``u1`` in (0, 1], and ``r cos(2 pi u2)``, ``r sin(2 pi u2)`` (the first
    half of ``out`` takes the cosines, the second the sines)."""
    count = out.size
    half = (count + 1) // 2
    words = bits.random_raw(half).view(np.uint32)  # u1's words, then u2's
    np.bitwise_and(words, np.uint32(0xFFFFFF), out=words)
    uniforms = torch.from_numpy(words.view(np.int32)).float().numpy()  # torch casts faster than numpy
    radius, angle = uniforms[:half], uniforms[half:]
    radius += 1
    radius *= np.float32(2.0**-24)  # (0, 1], exact
    np.log(radius, out=radius)
    radius *= -2
    np.sqrt(radius, out=radius)
    angle *= np.float32(2 * np.pi * 2.0**-24)
    np.multiply(np.cos(angle, out=out[:half]), radius, out=out[:half])
    rest = count - half
    np.multiply(np.sin(angle[:rest], out=angle[:rest]), radius[:rest], out=out[half:])
    return out


def integers(low: int, high: int, shape, generator, device) -> torch.Tensor:
    """Uniform integers in ``[low, high)`` of ``shape`` (first dimension: images), int64: a 32-bit
    word times the range, shifted down 32 bits (bias below range / 2^32, as torch's modulo)."""
    streams = _streams(generator, shape[0])
    if streams is None:
        return torch.randint(low, high, tuple(shape), generator=generator, device=generator.device).to(device)

    def draw(i: int, count: int, out: torch.Tensor) -> None:
        words = streams.words(i, count).long() & 0xFFFFFFFF
        torch.add((words * (high - low)) >> 32, low, out=out)

    return _per_image(shape, streams, draw, torch.int64).to(device)


def hits(shape, p: float, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent Bernoulli(``p``) hits on the values of ``shape`` (first dimension: images),
    each with a fair coin: the flat indices of the hit values (int64, into the whole tensor) and
    their coins (bool).

    On the CPU the hits are drawn sparsely: the gaps between consecutive hits of an image are
    geometric, ``floor(log(u) / log(1 - p))`` for a 24-bit uniform ``u`` in (0, 1] (the low half of
    a 64-bit word; the sign of the high half is the coin). That takes one random word per hit
    instead of one per value; the gaps' tail probabilities are exact to 2^-24.
    """
    streams = _streams(generator, shape[0])
    count = int(np.prod(shape[1:], dtype=np.int64))
    if streams is None:
        u = torch.rand(tuple(shape), generator=generator, device=generator.device)
        index = (u < p).view(-1).nonzero().squeeze(1)
        coins = torch.rand(index.shape, generator=generator, device=generator.device) < 0.5
        return index.to(device), coins.to(device)
    indices, coins = [], []
    for i in range(shape[0]):
        index, coin = _sparse_hits(streams.bits(i), count, p)
        indices.append(index.add_(i * count))
        coins.append(coin)
    return torch.cat(indices).to(device), torch.cat(coins).to(device)


def _sparse_hits(bits: np.random.SFC64, count: int, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The hits of one image among ``count`` values: blocks of geometric gaps, drawn until the
    positions pass the end (numpy: these arrays are small, and its calls cost less than torch's)."""
    if p <= 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool)
    scale = np.float32(1 / np.log1p(-p)) if p < 1 else np.float32(0)
    mean = count * p
    block = int(mean + 4 * (mean * (1 - p)) ** 0.5 + 16)  # usually one block suffices
    positions, coins, end = [], [], -1
    while end < count - 1:
        words = bits.random_raw(block).view(np.uint32).reshape(block, 2)
        u = (words[:, 0] & np.uint32(0xFFFFFF)).astype(np.float32)
        u += 1
        u *= np.float32(2.0**-24)  # (0, 1], exact
        np.log(u, out=u)
        u *= scale
        u += 1  # 1 + the gap, truncated below
        steps = u.astype(np.int64)
        steps[0] += end
        positions.append(np.cumsum(steps, out=steps))
        coins.append(words[:, 1] >= 2**31)
        end = int(steps[-1])
    index, coin = np.concatenate(positions), np.concatenate(coins)
    inside = int(np.searchsorted(index, count))
    return torch.from_numpy(index[:inside]), torch.from_numpy(coin[:inside])


def poisson_levels(levels: torch.Tensor, rates: torch.Tensor, generator: torch.Generator | None,
                   scale: float = 1.0, top: float = float("inf")) -> torch.Tensor:
    """Poisson counts ``Poisson(rates[levels])`` times ``scale``, capped at ``top``, as float32,
    for values with few distinct rates.

    ``levels`` holds whole numbers (8-bit pixel values, say) in any float or integer dtype.
    Inversion of each rate's CDF with one 24-bit uniform per value, ``u = (word & 0xFFFFFF) / 2^24``
    (what :func:`uniform` gives): the uniform's bin (its top 11 bits) and the level index a table
    of the count (then scaled and capped), unless a CDF step falls inside that bin; those few
    values (marked negative in the table) then step along the CDF. Exact for the given uniforms (the
    count is the least k with u < F(k)), and many times faster than ``torch.poisson``, whose CPU
    sampler draws one value at a time. The table lookup works on the raw integer words: no
    float uniforms are made but for the values that step.
    """
    device = levels.device
    table = _poisson_table(tuple(rates.double().cpu().tolist()), float(scale), float(top))
    streams = _streams(generator, levels.shape[0])
    if streams is None:
        words = torch.randint(-2**31, 2**31, levels.shape, generator=generator, device=generator.device,
                              dtype=torch.int32).to(device)
    else:
        words = None
    codes = table.codes.to(device)
    out = torch.empty(levels.shape, dtype=torch.float32, device=device)
    flat = out.view(levels.shape[0], -1)
    walk_at, walk_levels, walk_words, walk_codes = [], [], [], []
    for i in range(levels.shape[0]):  # per image: its temporaries stay in cache
        level = levels[i].reshape(-1).to(torch.int32)
        w = streams.words(i, level.numel()) if words is None else words[i].view(-1)
        index = (w >> (24 - POISSON_BITS)).bitwise_and_(POISSON_BINS - 1).add_(level, alpha=POISSON_BINS)
        code = torch.index_select(codes, 0, index)
        flat[i].copy_(code)  # the count, scaled below with the others
        at = (code < 0).nonzero().squeeze(1) if device.type != "cpu" else \
            torch.from_numpy(np.flatnonzero(code.numpy() < 0))
        walk_at.append(at + i * level.numel())
        walk_levels.append(level.index_select(0, at))
        walk_words.append(w.index_select(0, at))
        walk_codes.append(code.index_select(0, at))
    out.mul_(table.scale).clamp_(max=table.top)
    walk = torch.cat(walk_at)
    if walk.numel():
        out.view(-1).index_copy_(0, walk, _walk(table, torch.cat(walk_levels), torch.cat(walk_words),
                                                torch.cat(walk_codes)))
    return out


def _walk(table: "_PoissonTable", levels: torch.Tensor, words: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The counts of values whose bin holds a CDF step, scaled and capped: a few steps up the
    level's CDF from the bin's lower-edge count (coded as ``-count - 1``), then, for the rare
    values that are still below their count (a bin with many steps: the far tail), a search of the
    whole table (whose rows are offset so that it is sorted as one)."""
    grid = table.grid.to(levels.device)
    width = grid.numel() * POISSON_BINS // table.codes.numel()  # K + 1
    value = (words & 0xFFFFFF).long().add_(levels.long() << 26)
    first = levels.long() * width
    count = codes.long().neg_().sub_(1)
    for _ in range(WALK_STEPS):
        further = grid.index_select(0, first + count) <= value
        count += further
    more = (grid.index_select(0, first + count) <= value).nonzero().squeeze(1)
    if more.numel():
        found = torch.searchsorted(grid, value.index_select(0, more), right=True) - first.index_select(0, more)
        count.index_copy_(0, more, found)
    return count.float().mul_(table.scale).clamp_(max=table.top)


WALK_STEPS = 3  # most bins hold one CDF step; the search handles the rest
POISSON_BITS = 11
POISSON_BINS = 2**POISSON_BITS


class _PoissonTable(NamedTuple):
    grid: torch.Tensor  # [rates * (K + 1)] int64: F(k) 2^24 rounded up (u < F(k) iff u 2^24 < that),
    # 2^25 for k = K (beyond any uniform), plus the rate's index times 2^26 (sorted as a whole)
    codes: torch.Tensor  # [rates * BINS], the smallest integer dtype that holds them (int8 for 8-bit
    # shot noise: a table that stays in cache): the count at the bin's lower edge, or -count - 1 if a
    # CDF step is inside the bin
    scale: float
    top: float


@lru_cache(maxsize=16)
def _poisson_table(rates: tuple[float, ...], scale: float, top: float) -> _PoissonTable:
    lam = torch.tensor(rates, dtype=torch.float64)[:, None]
    top_rate = float(lam.max())
    k = torch.arange(int(top_rate + 12 * top_rate**0.5 + 12) + 1, dtype=torch.float64)  # P(X > K) < 1e-20
    cdf = (torch.xlogy(k, lam) - lam - torch.lgamma(k + 1)).exp().cumsum(1)
    cdf[:, -1] = 2.0
    # count at each bin edge j / BINS: #{k : F(k) <= j / BINS} = #{k : ceil(F(k) BINS) <= j} (exact,
    # BINS a power of 2), a running sum of how many k have each ceil(F(k) BINS)
    first_edge = (cdf * POISSON_BINS).ceil_().clamp_(max=POISSON_BINS + 1).long()
    counts = torch.zeros(len(rates), POISSON_BINS + 2, dtype=torch.float32)
    counts = counts.scatter_add_(1, first_edge, torch.ones(first_edge.shape)).cumsum_(1)[:, :-1]
    start, stepped = counts[:, :-1], counts[:, 1:] > counts[:, :-1]
    codes = torch.where(stepped, -1 - start, start).long()
    low, high = int(codes.min()), int(codes.max())
    dtype = next(t for t in (torch.int8, torch.int16, torch.int32, torch.int64)
                 if torch.iinfo(t).min <= low and high <= torch.iinfo(t).max)
    grid = (cdf * 2**24).ceil_().long().add_(torch.arange(len(rates))[:, None] << 26)
    return _PoissonTable(grid.flatten(), codes.flatten().to(dtype), scale, top)
