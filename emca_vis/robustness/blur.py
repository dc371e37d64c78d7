"""Blur corruptions of ImageNet-C, batched and vectorised in PyTorch.

    defocus_blur, glass_blur, motion_blur, zoom_blur, gaussian_blur

Each takes float ``[N, 3, H, W]`` images in [0, 1] on any device and returns the corrupted batch
(same shape, dtype and device). They re-implement ``imagecorruptions.corrupt`` (the
imagecorruptions-imaug 1.1.5 package, ``imagecorruptions/corruptions.py``) with the same
per-severity parameters, copied from that file:

- ``defocus_blur``, ``zoom_blur`` and ``gaussian_blur`` have no randomness and match the
  reference pixel for pixel (up to float rounding and the reference's final uint8 cast;
  ``defocus_blur`` at severity 4-5 within ~1e-3, see :func:`_defocus_plan`).
- ``motion_blur`` draws one angle per image, uniform in [-45, 45) degrees as the reference
  does; given the angle it is exact.
- ``glass_blur`` draws the reference's local pixel moves; given the moves it is exact too,
  see :func:`glass_blur`.

Randomness comes only from ``generator`` (drawn on its device, then moved to the images').
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from numbers import Integral
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import sampling

# Per-severity parameters, copied from imagecorruptions/corruptions.py (imagecorruptions-imaug 1.1.5).
GAUSSIAN_SIGMA = (1, 2, 3, 4, 6)
DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # (disk radius, alias blur)
GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # (sigma, max delta, iterations)
MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # (radius, sigma)
ZOOM = (np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03))  # zoom factors (np.arange as in the reference)


def _check(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, Integral) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1-5, got {severity}")
    return int(severity)


@lru_cache(maxsize=32)
def _filter_matrix(size: int, kernel: tuple[float, ...], mode: str) -> torch.Tensor:
    """``[size, size]`` matrix of a 1-D correlation with ``kernel`` (centred), borders folded in.

    ``mode`` is 'replicate' (scipy 'nearest') or 'reflect' (OpenCV BORDER_REFLECT_101).
    Cached: the blurs use a few kernels at a few sizes.
    """
    taps = len(kernel)
    r = taps // 2
    out = torch.arange(size)[:, None].expand(size, taps)
    src = out + torch.arange(-r, r + 1)[None, :]
    if mode == "replicate":
        src = src.clamp(0, size - 1)
    else:
        src = src.abs()
        src = torch.where(src > size - 1, 2 * (size - 1) - src, src)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    weights = torch.tensor(kernel, dtype=torch.float64).expand(size, -1)
    return matrix.index_put_((out, src), weights, accumulate=True)


def _separable(x: torch.Tensor, kernel: torch.Tensor, mode: str, vertical: torch.Tensor | None = None) -> torch.Tensor:
    """Correlate every channel of ``x`` with ``kernel`` along W and ``vertical`` (default:
    ``kernel``) along H, borders by ``mode``.

    Short kernels (up to ``SHIFTED_TAPS``) as sums of shifted copies; longer ones as two matrix
    products with banded matrices. On CPU both beat conv2d with a one-channel 1-D kernel at
    ImageNet image sizes; on one thread the shifted sums win up to about 13 taps.
    """
    vertical = kernel if vertical is None else vertical
    if kernel.numel() <= SHIFTED_TAPS:
        rows = _shifted_sum(x, kernel, mode, -1)
        if x.shape[-2] < BANDED_MIN_ROWS:
            return _shifted_sum(rows, vertical, mode, -2)
        return _banded_rows(rows, vertical, mode)
    h, w = x.shape[-2:]
    rows = _filter_matrix(h, tuple(vertical.tolist()), mode).to(x)
    cols = _filter_matrix(w, tuple(kernel.tolist()), mode).to(x)
    return rows @ x @ cols.T


SHIFTED_TAPS = 13
BANDED_BLOCK, BANDED_MIN_ROWS = 4, 64


def _banded_rows(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlation of ``x`` with ``kernel`` along H (borders by ``mode``) by :func:`banded_rows`.
    On one thread 1.4-1.8x faster than the shifted sums for 7-13 taps (they pass over the
    image once per tap)."""
    *lead, h, w = x.shape
    r, blocks = kernel.numel() // 2, -(-h // BANDED_BLOCK)
    padded = F.pad(x.reshape(-1, h, w), (0, 0, r, r + blocks * BANDED_BLOCK - h), mode=mode)
    band = banded_matrix(tuple(kernel.tolist()), BANDED_BLOCK).to(x)
    return banded_rows(padded, band)[:, :h].reshape(*lead, h, w)


@lru_cache(maxsize=32)
def banded_matrix(kernel: tuple[float, ...], block: int) -> torch.Tensor:
    """``[block, block + taps - 1]`` float64: row ``i`` holds ``kernel`` from column ``i``, the
    correlation of a window of ``block + taps - 1`` values to its ``block`` outputs."""
    band = torch.zeros(block, block + len(kernel) - 1, dtype=torch.float64)
    for i in range(block):
        band[i, i:i + len(kernel)] = torch.tensor(kernel, dtype=torch.float64)
    return band


def banded_rows(padded: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """A correlation along the rows of contiguous ``[P, R, W]`` planes, padded already, by blocks:
    each block of ``block`` output rows is ``band`` ``[block, window]`` times its window of padded
    rows (a banded product: at 224 px about a tenth of the multiplications of a dense ``[R, R]``
    one). One batched product per plane on strided views, no copies of windows; returns the
    ``[P, blocks * block, W]`` outputs of the whole windows."""
    planes, rows, w = padded.shape
    block, window = band.shape
    blocks = (rows - window) // block + 1
    bands = band.expand(blocks, block, window)
    out = padded.new_empty(planes, blocks * block, w)
    for plane, result in zip(padded, out):
        windows = plane.as_strided((blocks, window, w), (block * w, w, 1))
        torch.bmm(bands, windows, out=result.view(blocks, block, w))
    return out


def _shifted_sum(x: torch.Tensor, kernel: torch.Tensor, mode: str, dim: int) -> torch.Tensor:
    """Correlation of ``x`` with ``kernel`` along ``dim`` (-1 or -2): one scaled add per tap."""
    r = kernel.numel() // 2
    size = x.shape[dim]
    padded = F.pad(x, (r, r, 0, 0) if dim == -1 else (0, 0, r, r), mode=mode)
    weights = kernel.tolist()
    out = padded.narrow(dim, 0, size) * weights[0]
    for i in range(1, len(weights)):
        out.add_(padded.narrow(dim, i, size), alpha=weights[i])
    return out


def _gaussian_filter(x: torch.Tensor, sigma: float, scale: float = 1.0) -> torch.Tensor:
    """``skimage.filters.gaussian`` per channel: scipy's kernel (truncate 4), mode 'nearest';
    times ``scale``."""
    radius = int(4.0 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * t**2 / sigma**2)
    rows = kernel / kernel.sum()
    return _separable(x, rows * scale, "replicate", rows)


def gaussian_blur(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur with sigma 1, 2, 3, 4, 6; borders replicated (scipy 'nearest')."""
    sigma = GAUSSIAN_SIGMA[_check(severity) - 1]
    return _gaussian_filter(images, sigma).clamp(0, 1)


def _alias_taps(radius: int, alias_blur: float) -> torch.Tensor:
    """The reference's ``cv2.getGaussianKernel(ksize, alias_blur)`` (float64) that smooths the disk."""
    ksize = 3 if radius <= 8 else 5
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(t**2) / (2 * alias_blur**2))
    return g / g.sum()


def _disk(radius: int, alias_blur: float) -> torch.Tensor:
    """The reference's anti-aliased disk: a normalised binary disk smoothed by ``cv2.GaussianBlur``."""
    if radius <= 8:
        coords = torch.arange(-8, 9)
    else:
        coords = torch.arange(-radius, radius + 1)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    disk = (x**2 + y**2 <= radius**2).float()
    disk = disk / disk.sum()
    # applied separably with BORDER_REFLECT_101 (= 'reflect')
    return _separable(disk[None, None], _alias_taps(radius, alias_blur), "reflect")[0, 0]


class _DefocusPlan(NamedTuple):
    """How :func:`defocus_blur` applies one severity's kernel (see there)."""

    halves: tuple[int, ...]  # half-widths of the horizontal box sums, ascending (0: the image itself)
    taps: tuple[tuple[int, int, float], ...]  # (row offset, index into halves, weight)
    side: float  # side taps of the 3-tap passes along each axis (centre 1); 0: no such passes


@lru_cache(maxsize=None)
def _defocus_plan(radius: int, alias_blur: float) -> _DefocusPlan:
    """Fit the reference kernel (:func:`_disk`) as a sum of weighted, vertically shifted
    horizontal box sums, followed by a 3-tap pass along each axis (the anti-aliasing Gaussian).

    Each row of the binary disk is one box, so without the rim the fit is exact (up to float
    rounding). For radius 8 and 10 the Gaussian reaches the border of the reference's kernel
    array, whose reflection there adds mass at the rim: a few more boxes (least squares, the
    Gaussian's inverse truncated) bring the kernel within ~1e-6 of it (~80 dB on images).
    """
    kernel = _disk(radius, alias_blur).double().numpy()
    r = kernel.shape[0] // 2
    g = _alias_taps(radius, alias_blur).numpy()
    side = float(g[len(g) // 2 + 1] / g[len(g) // 2])
    side = side if side > 1e-9 else 0.0  # sigma 0.1: the Gaussian's side taps are ~2e-22
    half = {a: math.isqrt(radius**2 - a**2) for a in range(-radius, radius + 1)}
    support = {(a, v) for a, v in half.items()}
    if side and radius + 1 > r:  # the rim: its rows (reflected, cropped) and columns
        rim = half[radius - 1]
        support |= {(s * a, v) for s in (1, -1) for a in (radius, radius + 1) for v in (rim, 0)}
        support |= {(a, radius) for a in range(-rim, rim + 1)}
        support |= {(a, radius + 1) for a in (-1, 0, 1)}
    support = sorted(support)
    extent = r + 3
    target = np.zeros((2 * extent + 1,) * 2)
    target[extent - r:extent + r + 1, extent - r:extent + r + 1] = kernel
    cols = np.arange(-extent, extent + 1)

    def smooth(profile: np.ndarray) -> np.ndarray:  # the 3-tap pass along one axis
        return np.convolve(profile.astype(np.float64), [side, 1.0, side], "same")

    basis = [np.outer(smooth(cols == a), smooth(np.abs(cols) <= v)).ravel() for a, v in support]
    weights = np.linalg.lstsq(np.stack(basis, 1), target.ravel(), rcond=None)[0]
    halves = tuple(sorted({v for _, v in support}))
    return _DefocusPlan(halves, tuple((a, halves.index(v), float(w)) for (a, v), w in zip(support, weights)), side)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices folded into ``0..size - 1`` as OpenCV's BORDER_REFLECT_101 (-1 -> 1)."""
    if size == 1:
        return torch.zeros_like(index)
    index = index.remainder(2 * (size - 1))
    return torch.where(index >= size, 2 * (size - 1) - index, index)


@lru_cache(maxsize=16)
def _defocus_bags(plan: _DefocusPlan, planes: int, h: int, dtype: torch.dtype,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices, offsets and weights for ``F.embedding_bag``: output row ``(plane p, y)``
    sums the table rows ``(box j, p, reflected y + a)`` with their weights, for the plan's taps
    ``(a, j, weight)`` and ``y`` from -1 to ``h`` (0 to ``h - 1`` without 3-tap passes, which
    read the rows beyond the image)."""
    reach = 1 if plan.side else 0
    taps = sorted(plan.taps, key=lambda t: (t[1], t[0]))  # box by box: ~7% faster
    rows = _reflect(torch.arange(-reach, h + reach)[:, None] + torch.tensor([a for a, _, _ in taps]), h)
    index = (torch.tensor([j for _, j, _ in taps]) * planes)[None, None] + torch.arange(planes)[:, None, None]
    index = (index * h + rows).view(-1)
    weights = torch.tensor([v for _, _, v in taps], dtype=dtype).repeat(planes * (h + 2 * reach))
    offsets = torch.arange(0, index.numel(), len(taps))
    return index.to(device), offsets.to(device), weights.to(device)


def _box_table(images: torch.Tensor, halves: tuple[int, ...], pad: int) -> torch.Tensor:
    """``[len(halves), N * C * H * (W + 2 pad)]``: the image rows with ``pad`` columns reflected on
    each side (BORDER_REFLECT_101), then their horizontal box sums of each half-width in
    ``halves``, centred.

    The sums run along the flattened rows (one contiguous add per step, cheaper than row by row):
    in plane ``j`` the ``halves[j]`` columns at each end of a row mix two rows, or are unset at
    the ends of the plane, and only reach output columns that are cropped.
    """
    n, c, h, w = images.shape
    width = w + 2 * pad
    size = n * c * h * width
    powers = [2 ** i for i in range(1, (2 * halves[1] + 1).bit_length())] if len(halves) > 1 else []
    buffer = _scratch((len(halves) + len(powers)) * size, images.dtype, images.device)
    table = buffer[:len(halves) * size].view(len(halves), size)
    rows = table[0].view(n, c, h, width)
    rows[..., pad:pad + w] = images
    if w > pad:  # one reflection: the columns next to each edge, flipped
        rows[..., :pad] = rows[..., pad + 1:2 * pad + 1].flip(-1)
        rows[..., pad + w:] = rows[..., w - 1:pad + w - 1].flip(-1)
    else:
        cols = torch.arange(-pad, 0, device=images.device)
        rows[..., :pad] = images.index_select(-1, _reflect(cols, w))
        rows[..., pad + w:] = images.index_select(-1, _reflect(cols + w + pad, w))
    # Start-aligned sums of k consecutive entries: k = 1, the powers of two up to the narrowest
    # box, then each box from the widest known sum plus the widest sums that fit the rest.
    sums = {1: table[0]}
    for i, k in enumerate(powers):
        sums[k] = _row_sum(sums, k, buffer[(len(halves) + i) * size:][:size - k + 1])
    for j, half in enumerate(halves[1:], 1):
        sums[2 * half + 1] = _row_sum(sums, 2 * half + 1, table[j, half:size - half])
    return table


_SCRATCH = threading.local()


def _scratch(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``size`` elements of scratch memory; on CPU the same buffer per thread across calls, made
    once with room for a chunk of :func:`defocus_blur` at any severity. A fresh box table (~10 MB)
    often comes from pages new to the process, whose first touch (page faults) can cost as much
    as filling the table."""
    if device.type != "cpu":
        return torch.empty(size, dtype=dtype, device=device)
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
        room = max(size, _DEFOCUS_TABLE_BYTES // torch.empty((), dtype=dtype).element_size())
        buffer = _SCRATCH.buffer = torch.empty(room, dtype=dtype)
    return buffer[:size]


def _row_sum(sums: dict[int, torch.Tensor], length: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Sums of ``length`` consecutive columns (start-aligned, 'valid') from the ``sums`` known
    (length -> sums): the largest known one, then the largest that fits the rest; one add each."""
    size = sums[1].shape[-1] - length + 1
    pieces, done = [], 0
    while done < length:
        piece = max(k for k in sums if k <= length - done)
        pieces.append(sums[piece][..., done:done + size])
        done += piece
    out = torch.add(pieces[0], pieces[1], out=out)
    for piece in pieces[2:]:
        out.add_(piece)
    return out


def defocus_blur(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Convolution with an anti-aliased disk (``cv2.filter2D``: borders BORDER_REFLECT_101).

    The kernel is a binary disk smoothed by a 3-tap (radius 10: 5-tap, outer taps 3e-4) Gaussian;
    where that reaches the border of the reference's kernel array (radius 8, 10) the reflection
    there adds mass at the rim. Applied as fitted by :func:`_defocus_plan`: horizontal box sums
    of each row width (:func:`_box_table`, one add each), one ``F.embedding_bag`` that sums for
    every output row its weighted box rows above and below (rows reflected by index), then the
    Gaussian's 3 taps across and down (two adds each) and the clamp. About 16 passes over the
    images at radius 10, where a 2-D FFT costs about 30.
    """
    radius, alias_blur = DEFOCUS[_check(severity) - 1]
    plan = _defocus_plan(radius, alias_blur)
    n, c, h, w = images.shape
    # A few images at a time: box tables beyond ~16 MB fall out of cache (4 images at radius 10:
    # 14% slower per image than one at a time).
    table_bytes = (len(plan.halves) + 3) * c * h * (w + 2 * plan.halves[-1] + 2) * images.element_size()
    chunk = max(1, _DEFOCUS_TABLE_BYTES // table_bytes)
    if n <= chunk:
        return _defocus_chunk(images, plan)
    return torch.cat([_defocus_chunk(images[i:i + chunk], plan) for i in range(0, n, chunk)])


_DEFOCUS_TABLE_BYTES = 16 << 20


def _defocus_chunk(images: torch.Tensor, plan: _DefocusPlan) -> torch.Tensor:
    """:func:`defocus_blur` of ``images`` by ``plan``."""
    n, c, h, w = images.shape
    width = w + 2 * (plan.halves[-1] + (1 if plan.side else 0))
    pad = (width - w) // 2
    table = _box_table(images, plan.halves, pad)
    index, offsets, weights = _defocus_bags(plan, n * c, h, images.dtype, images.device)
    rows = F.embedding_bag(index, table.view(-1, width), offsets, mode="sum", per_sample_weights=weights)
    if not plan.side:
        return rows.view(n, c, h, width)[..., pad:pad + w].clamp(0, 1)
    # The 3-tap passes along the flattened rows, in the scratch memory the table is done with:
    # horizontal (cropped to the image's columns), then vertical (rows -1..h of each plane).
    flat, size, planes = rows.view(-1), rows.numel(), rows.shape[0]
    scratch = _scratch(size + 2 * planes * w, images.dtype, images.device)
    sides, cropped, vertical = scratch[:size], scratch[size:][:planes * w], scratch[size + planes * w:]
    torch.add(flat[:-2], flat[2:], out=sides[:-2])  # the last two entries (unused) are not set
    torch.add(rows[:, pad:pad + w], sides.view(planes, width)[:, pad - 1:pad - 1 + w], alpha=plan.side,
              out=cropped.view(planes, w))
    torch.add(cropped[:-2 * w], cropped[2 * w:], out=vertical[:-2 * w])
    out = torch.empty(n, c, h, w, dtype=images.dtype, device=images.device)
    torch.add(cropped.view(n * c, h + 2, w)[:, 1:h + 1], vertical.view(n * c, h + 2, w)[:, :h], alpha=plan.side,
              out=out.view(n * c, h, w))
    return out.clamp_(0, 1)


def _motion_taps(radius: int, sigma: float, angles: torch.Tensor, h: int, w: int) -> list[list[tuple[int, int, float]]]:
    """Per image, the reference's motion-blur taps ``(dy, dx, weight)``, equal shifts merged.

    The reference adds ``kernel[i]`` times the image shifted by ``(dy_i, dx_i)`` for ``i`` in
    ``range(2 radius + 1)`` and stops (``break``) at the first shift that leaves the image, without
    renormalising. The shifts are rounded points on a line, so they repeat only consecutively.
    """
    width = 2 * radius + 1
    k = [math.exp(-(i**2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma) for i in range(width)]
    total = math.fsum(k)
    k = [v / total for v in k]
    out = []
    for angle in angles.detach().to("cpu", torch.float64).tolist():
        p0, p1 = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
        hypot = math.hypot(p0, p1)
        merged: list[tuple[int, int, float]] = []
        for i, weight in enumerate(k):
            a, b = -math.ceil(i * p0 / hypot - 0.5), -math.ceil(i * p1 / hypot - 0.5)
            if abs(a) >= h or abs(b) >= w:
                break
            if merged and merged[-1][:2] == (a, b):
                merged[-1] = (a, b, merged[-1][2] + weight)
            else:
                merged.append((a, b, weight))
        out.append(merged)
    return out


def motion_blur_at(images: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """The reference ``_motion_blur`` at one angle (degrees) per image.

    A half-Gaussian line kernel: the sum over taps ``i`` of ``k_i`` times the image shifted by
    ``(dy_i, dx_i)`` with edge replication; the taps stop where the shift would leave the image,
    without renormalising, as in the reference. Exact for given angles (up to float rounding).

    Computed as that sum, one scaled add of a slice of the edge-padded image per distinct shift:
    the line has at most 41 taps, fewer passes over the image than a 2-D FFT costs.
    """
    n, c, h, w = images.shape
    out = torch.empty_like(images)
    for j, taps in enumerate(_motion_taps(radius, sigma, angles, h, w)):
        # out[y, x] = sum_i k_i image[y - dy_i, x - dx_i], indices clamped: pad only as far as needed
        top, bottom = max(max(t[0] for t in taps), 0), max(-min(t[0] for t in taps), 0)
        left, right = max(max(t[1] for t in taps), 0), max(-min(t[1] for t in taps), 0)
        padded = F.pad(images[j:j + 1], (left, right, top, bottom), mode="replicate")[0]
        acc = out[j]
        for i, (a, b, weight) in enumerate(taps):
            shifted = padded[:, top - a:top - a + h, left - b:left - b + w]
            if i == 0:
                torch.mul(shifted, weight, out=acc)
            else:
                acc.add_(shifted, alpha=weight)
    return out.clamp_(0, 1)


def motion_blur(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Motion blur along a random direction per image, uniform in [-45, 45) degrees."""
    radius, sigma = MOTION[_check(severity) - 1]
    angles = sampling.uniform((images.shape[0],), generator, "cpu", torch.float64) * 90 - 45
    return motion_blur_at(images, radius, sigma, angles)


def zoom_blur(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Average of the image and its centre zooms, as the reference's ``clipped_zoom``: crop the
    ``ceil(size / z)`` central pixels (top at ``(size - crop) // 2``), zoom them to
    ``round(crop * z)`` pixels (scipy order 1: output ``o`` samples ``o * (crop - 1) / (out - 1)``,
    which is bilinear with ``align_corners=True``) and keep the first ``size`` outputs.

    Each zoom is done separably, rows then columns, with all images and channels innermost: every
    pass interpolates whole rows of ``W * N * C`` values at once (see :func:`_zoom_rows`), where
    a 2-D bilinear kernel pays for each output pixel's taps on only ``N * C`` values."""
    factors = ZOOM[_check(severity) - 1]
    n, c, h, w = images.shape
    k = n * c
    x = images.reshape(k, h, w).permute(1, 2, 0).contiguous()  # [H, W, K]
    # scratch reused by every zoom: the rows pass' output (up to one row more than kept), the
    # crop's columns, the columns pass' output, and the sum of the zooms (kept transposed,
    # [W, H, K], as the columns pass writes it)
    rows_out, cols, cols_out, total = x.new_empty(4, (max(h, w) + 1) * max(h, w) * k)
    out = None
    for z in factors[1:]:  # the first factor, 1, samples every pixel exactly: added below
        ch, cw = int(np.ceil(h / float(z))), int(np.ceil(w / float(z)))
        top, left = (h - ch) // 2, (w - cw) // 2
        rows = _zoom_rows(x[top:top + ch].view(ch, w * k), int(round(ch * z)), rows_out)[:h]
        crop = cols[:cw * h * k].view(cw, h, k)
        _copy_wide(crop, rows.view(h, w, k)[:, left:left + cw].transpose(0, 1))
        zoomed = _zoom_rows(crop.view(cw, h * k), int(round(cw * z)), total if out is None else cols_out)[:w]
        out = zoomed if out is None else out.add_(zoomed)
    # (image + zoom 1 + the others) / count, back to [N, C, H, W] via [H, W, K] (for four images
    # these two transposing copies take 0.6 of the time of one reversing all three dims)
    summed = rows_out[:h * w * k].view(h, w, k)
    _copy_wide(summed, out.view(w, h, k).transpose(0, 1))
    out = images.new_empty(n, c, h, w)
    out.view(k, h, w).copy_(summed.permute(2, 0, 1))  # a plain copy: a transposing add is 2x slower
    return out.add_(images, alpha=2).mul_(1 / (len(factors) + 1)).clamp_(0, 1)


def _zoom_rows(x: torch.Tensor, size: int, buffer: torch.Tensor) -> torch.Tensor:
    """``[size, K]``, in ``buffer``: linear interpolation (``align_corners=True``) of the rows of
    contiguous ``x`` ``[rows, K]``. Done by the channels-last bilinear kernel on ``[1, K, 1, rows]``
    views, which computes each output row's two taps once for all ``K`` values."""
    rows, k = x.shape
    out = buffer[:size * k].view(size, k)
    torch.ops.aten.upsample_bilinear2d.out(
        x.as_strided((1, k, 1, rows), (rows * k, 1, rows * k, k)), [1, size], True, None, None,
        out=out.as_strided((1, k, 1, size), (size * k, 1, size * k, k)))
    return out


def _copy_wide(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)`` for float32 ``[..., K]`` with contiguous last dims, moving each ``K``
    values as 16- or 8-byte words where ``K`` allows (a transposing copy of 4-byte values is
    up to 1.5x slower)."""
    k = src.shape[-1]
    wide = torch.complex128 if k % 4 == 0 else torch.int64 if k % 2 == 0 else None
    if wide is None or src.dtype != torch.float32:
        dst.copy_(src)
    else:
        dst.view(wide).copy_(src.view(wide))


def _glass_sources(codes: torch.Tensor, delta: int, h: int, w: int) -> torch.Tensor:
    """Where one pass of the reference's pixel loop takes each pixel's value from, given its moves.

    ``codes`` is an integer ``[N, H - 2 delta, W - 2 delta]``, the moves of the interior pixels
    ``(h, w)``, ``delta < h <= H - delta`` (same for w), as ``(dy + delta) * 2 delta + dx +
    delta`` (dy, dx in ``[-delta, delta)``). The reference visits them in descending raster
    order and does ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on array views, which is a copy
    ``x[h, w] <- x[h', w']`` (the second assignment rewrites ``x[h', w']`` with itself). A
    source already visited in this pass (an interior pixel later in raster order) has already
    been overwritten, so the copies chain: the value at ``p`` is the pre-pass value at ``T(p)``
    with ``T(p) = src(p)``, or ``T(src(p))`` when the source was visited before ``p``. The
    chains only go forward in raster order, so pointer jumping resolves them in O(log length)
    vectorised steps over all pixels.

    Returns ``T`` as integer ``[N * H * W]`` indices into the flattened batch (image ``i``'s
    pixels at ``i * H * W``); pixels outside the interior keep their own value.
    """
    n = codes.shape[0]
    grid = _glass_grid(n, h, w, delta, str(codes.device))
    # Over the whole batch, the pixels outside the interior get the code of no move (0, 0).
    border = (delta + 1, delta - 1, delta + 1, delta - 1)
    codes = F.pad(codes, border, value=2 * delta * delta + delta).view(-1)
    src = grid.offsets.index_select(0, codes).add_(grid.base)
    # Pointer jumping: a pixel points to its source if that comes later in raster order (dy > 0,
    # or dy = 0 and dx > 0: a larger flat index), else to itself. A pixel outside the interior
    # points to itself and is its own source, so following into it is right too (its value
    # never changes). Every pointer ends at the last pixel of its chain, whose source is the one
    # the chain takes.
    pointer = torch.maximum(src, grid.base)
    # chains of 4 or more pixels are all but certain at ImageNet sizes: jump twice before testing
    # (jumping on from a chain's end changes nothing)
    pointer = pointer.index_select(0, pointer)
    while True:
        jumped = pointer.index_select(0, pointer)
        if torch.equal(jumped, pointer):
            return src.index_select(0, pointer)
        pointer = jumped


class _GlassGrid(NamedTuple):
    base: torch.Tensor  # [N * H * W] flat pixel indices of the batch
    offsets: torch.Tensor  # [(2 delta)^2] flat index offset dy * W + dx of each move code


@lru_cache(maxsize=8)
def _glass_grid(n: int, h: int, w: int, delta: int, device: str) -> _GlassGrid:
    # int32 indices where they fit: half the memory traffic of int64 (index_select takes them)
    dtype = torch.int32 if n * h * w < 2**31 else torch.int64
    base = torch.arange(n * h * w, dtype=dtype, device=device)
    moves = torch.arange(-delta, delta, dtype=dtype, device=device)
    offsets = (moves[:, None] * w + moves[None, :]).flatten()
    return _GlassGrid(base, offsets)


def _glass_shuffle(x: torch.Tensor, moves: torch.Tensor, delta: int) -> torch.Tensor:
    """One pass of the reference's pixel loop on ``x``, given ``moves`` ``[N, 2, H - 2 delta,
    W - 2 delta]`` (dy, dx); exact, see :func:`_glass_sources`."""
    n, c, h, w = x.shape
    source = _glass_sources(_glass_codes(moves, delta), delta, h, w)
    pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    return pixels.index_select(0, source).view(n, h, w, c).permute(0, 3, 1, 2).contiguous()


def _glass_codes(moves: torch.Tensor, delta: int) -> torch.Tensor:
    """The codes of :func:`_glass_sources` of ``moves`` ``[N, 2, ...]`` (dy, dx)."""
    moves = moves.long() + delta
    return moves[:, 0] * (2 * delta) + moves[:, 1]


def _glass_blur(images: torch.Tensor, sigma: float, delta: int, moves: list[torch.Tensor]) -> torch.Tensor:
    """Reference glass blur given the moves of each pass (see :func:`_glass_sources`)."""
    return _glass_passes(images, sigma, delta, [_glass_codes(m.to(images.device), delta) for m in moves])


def _glass_passes(images: torch.Tensor, sigma: float, delta: int, codes: list[torch.Tensor]) -> torch.Tensor:
    """Gaussian, quantise to uint8 levels, the passes of move ``codes``, Gaussian."""
    n, c, h, w = images.shape
    levels = _gaussian_filter(images, sigma, 255).clamp_(0, 255).floor_()  # np.uint8(... * 255)
    # The passes only move pixels: compose their sources, then move the values once, all
    # channels by one gather (pixel p = i H W + y W + x of channel k is at p + ((C - 1) i + k) H W)
    source = None
    for code in codes:
        step = _glass_sources(code, delta, h, w)
        source = step if source is None else source.index_select(0, step)
    planes = torch.arange(n * c, device=source.device, dtype=source.dtype).view(n, c, 1)
    planes -= torch.arange(n, device=source.device, dtype=source.dtype).view(n, 1, 1)
    index = torch.add(source.view(n, 1, h * w), planes, alpha=h * w)
    levels = levels.reshape(-1).index_select(0, index.view(-1)).view(n, c, h, w)
    # the levels / 255, with the 1 / 255 folded into the blur's kernel
    return _gaussian_filter(levels, sigma, 1 / 255).clamp_(0, 1)


def glass_blur(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur, ``iterations`` passes of local random pixel moves, Gaussian blur again.

    The reference runs a sequential (numba) loop over the pixels; here each pass is resolved
    at once by :func:`_glass_sources`, which is exact for given moves (not an approximation):
    the moves follow the reference's distribution (``randint(-delta, delta)`` for dy and dx,
    independent per pixel and pass), only the random number generator differs.
    """
    sigma, delta, iterations = GLASS[_check(severity) - 1]
    n, _, h, w = images.shape
    # one integer per pixel and pass codes both moves: dy, dx = divmod(code, 2 delta) - delta
    codes = _uniform_codes((2 * delta) ** 2, (n, iterations, h - 2 * delta, w - 2 * delta), generator, images.device)
    return _glass_passes(images, sigma, delta, list(codes.unbind(1)))


def _uniform_codes(k: int, shape: tuple[int, ...], generator, device) -> torch.Tensor:
    """Uniform integers in ``[0, k)`` of ``shape`` (first dimension: images), int32. For ``k`` up
    to 256 and per-image streams, one random byte each: bytes below the largest multiple of
    ``k`` that fits are kept and divided by ``256 // k`` (exactly uniform; a quarter of the random
    bits a 32-bit word per number took, and no int64 arithmetic). Else ``sampling.integers``."""
    if k > 256 or not isinstance(generator, sampling.Streams) or len(generator) != shape[0]:
        return sampling.integers(0, k, shape, generator, device).int()
    limit = 256 - 256 % k
    out = np.empty(shape, dtype=np.int32)
    for i, codes in enumerate(out.reshape(shape[0], -1)):
        count = codes.size
        kept = _random_bytes(generator, i, count * 256 // limit + 64)
        while limit < 256:  # rejection: drawn again in the (rare) case too few were kept
            kept = kept[kept < limit]
            if kept.size >= count:
                break
            kept = np.concatenate([kept, _random_bytes(generator, i, count - kept.size + 64)])
        np.floor_divide(kept[:count], np.uint8(256 // k), out=codes, casting="unsafe")
    return torch.from_numpy(out).to(device)


def _random_bytes(generator: sampling.Streams, i: int, count: int) -> np.ndarray:
    return generator.bits(i).random_raw(-(-count // 8)).view(np.uint8)


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "gaussian_blur": gaussian_blur,
}
