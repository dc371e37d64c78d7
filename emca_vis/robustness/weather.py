"""Weather corruptions of ImageNet-C, batched and vectorised in PyTorch.

    snow     random snow layer, zoomed, motion-blurred along a random angle, over a greyed image
    frost    blend with a random crop of one of the frost photos shipped with ``imagecorruptions``
    fog      add a plasma fractal (diamond-square) made per image
    spatter  water drops (severity 1-3) or mud (4-5) from a blurred random field

Every function takes float ``[N, 3, H, W]`` images in [0, 1] on any device, a severity 1-5 and
an optional ``torch.Generator`` (the only source of randomness), and returns the corrupted
images in [0, 1] on the same device. The per-severity constants and the steps follow the
reference, ``imagecorruptions/corruptions.py`` of imagecorruptions-imaug 1.1.5 (itself after
Hendrycks & Dietterich's ImageNet-C code); the OpenCV / scipy / skimage steps are re-done in
torch (bilinear ``scipy.ndimage.zoom``, bicubic ``cv2.resize``, ``skimage`` gaussian,
``cv2.Canny``, ``cv2.distanceTransform``, ``cv2.equalizeHist``, ...). Each random corruption
draws its random fields first and then calls a deterministic ``_name`` function of the images
and those fields, so that the fields can be given to both backends in tests.
"""

from __future__ import annotations

import importlib.resources
import io
import math
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import sampling
from .blur import motion_blur_at

# Constant tables copied from imagecorruptions-imaug 1.1.5, imagecorruptions/corruptions.py.
SNOW = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]
FROST = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FOG = [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)]
SPATTER = [(0.65, 0.3, 4, 0.69, 0.6, 0),
           (0.65, 0.3, 3, 0.68, 0.6, 0),
           (0.65, 0.3, 2, 0.68, 0.5, 0),
           (0.65, 0.3, 1, 0.65, 1.5, 1),
           (0.67, 0.4, 1, 0.65, 1.5, 1)]
WATER = (175 / 255., 238 / 255., 238 / 255.)  # pale turquoise
MUD = (63 / 255., 42 / 255., 20 / 255.)  # brown


# ---------------------------------------------------------------- helpers


def _check(images: torch.Tensor, severity: int) -> None:
    if not isinstance(severity, int) or isinstance(severity, bool) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1-5, got {severity}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {list(images.shape)}")


def _rand(shape, generator, device, dtype=torch.float32, normal=False) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) numbers from ``generator``, moved to ``device``."""
    return (sampling.normal if normal else sampling.uniform)(shape, generator, device, dtype)


def _conv_sep(x: torch.Tensor, kernel: torch.Tensor, pad_mode: str) -> torch.Tensor:
    """Separable correlation of ``x`` [N, H, W] with the 1-D ``kernel`` along both axes."""
    r = kernel.numel() // 2
    k = kernel.to(x)
    y = F.pad(x[:, None], (r, r, r, r), mode=pad_mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))[:, 0]


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``skimage.filters.gaussian`` (scipy kernel, truncate=4, mode 'nearest') of [N, H, W]."""
    radius = int(4.0 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * t ** 2 / sigma ** 2)
    return _conv_sep(x, kernel / kernel.sum(), "replicate")


def _box3(x: torch.Tensor) -> torch.Tensor:
    """``cv2.blur(x, (3, 3))`` (border reflect-101) of [N, H, W], unrounded."""
    return _conv_sep(x, torch.full((3,), 1 / 3, dtype=torch.float64), "reflect")


# ---------------------------------------------------------------- snow


def snow(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Snow: a thresholded, zoomed, motion-blurred noise layer added twice (and rotated) to a greyed image."""
    _check(images, severity)
    c = SNOW[severity - 1]
    n, _, h, w = images.shape
    # the reference draws an [H, W] field but zooms only its centre: drawing just that is the same law
    _, ch, _, cw = _zoom_crop(h, w, c[2])
    field = _rand((n, ch, cw), generator, images.device, normal=True).mul_(c[1]).add_(c[0])
    angle = _rand((n,), generator, images.device, torch.float64) * 90 - 135  # uniform(-135, -45)
    return _snow(images, severity, field, angle)


def _snow(images: torch.Tensor, severity: int, field: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Snow from the normal ``field`` (mean c0, std c1) and blur ``angle`` [N] in degrees.

    ``field`` is the reference's [N, H, W] field or just its centre that the zoom keeps
    (``_zoom_crop``).
    """
    c = SNOW[severity - 1]
    n, _, h, w = images.shape
    layer = _clipped_zoom(field.float(), c[2], h, w)
    F.threshold_(layer, _below(c[3]), 0).clamp_(max=1)  # layer[layer < c3] = 0 (lt + masked_fill: 10x slower)
    layer = motion_blur_at(layer[:, None], c[4], c[5], angle)[:, 0, :h, :w]
    layer = layer.mul(255).round_()  # the reference's uint8 layer, in units of 1/255
    layer = layer.add_(layer.flip(-2, -1))[:, None]
    gray = images[:, 0] * (0.299 * 1.5)  # cv2 RGB2GRAY, times 1.5, plus 0.5
    gray.add_(images[:, 1], alpha=0.587 * 1.5).add_(images[:, 2], alpha=0.114 * 1.5).add_(0.5)
    x = torch.maximum(images, gray[:, None])
    x = torch.lerp(images, x, 1 - c[6], out=x)  # c6 * images + (1 - c6) * max(images, gray)
    return x.add_(layer, alpha=1 / 255).clamp_(0, 1)


def _below(value: float) -> float:
    """The float32 just below ``value``'s: ``x > _below(v)`` is ``x >= v`` for float32 ``x``."""
    return torch.nextafter(torch.tensor(value), torch.tensor(-math.inf)).item()


def _zoom_crop(h: int, w: int, zoom: float) -> tuple[int, int, int, int]:
    """(top, height, left, width) of the centre of an ``h`` x ``w`` map that ``clipped_zoom`` keeps."""
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    return (h - ch) // 2, ch, (w - cw) // 2, cw


def _clipped_zoom(x: torch.Tensor, zoom: float, h: int, w: int) -> torch.Tensor:
    """The reference's ``clipped_zoom`` of an [N, h, w] map (or of its centre crop, already cut).

    A centre crop, then ``scipy.ndimage.zoom(order=1)``, which maps the corner pixels onto each
    other (bilinear with align_corners=True); the output is round(crop * zoom) >= the input size,
    as in the reference (cropped later). Done one axis at a time, columns first on the small
    crop (2.5x faster than ``F.interpolate``'s bilinear, which weighs four pixels per output).
    """
    top, ch, left, cw = _zoom_crop(h, w, zoom)
    if x.shape[-2:] != (ch, cw):
        x = x[..., top:top + ch, left:left + cw]
    x = _stretch(x, int(round(cw * zoom)), 2)
    return _stretch(x, int(round(ch * zoom)), 1)


def _stretch(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Linear interpolation of [N, H, W] along ``dim`` (1 or 2) to ``size`` points, the end points kept."""
    low, high, frac = _stretch_weights(x.shape[dim], size, x.device)
    frac = frac.to(x.dtype).view(-1, 1) if dim == 1 else frac.to(x.dtype)
    return torch.lerp(x.index_select(dim, low), x.index_select(dim, high), frac)


@lru_cache(maxsize=32)
def _stretch_weights(length: int, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``size`` points spread over ``length`` samples, ends on ends: the samples around each, its weight."""
    position = torch.arange(size, dtype=torch.float64) * ((length - 1) / max(size - 1, 1))
    low = position.floor().long().clamp(max=max(length - 2, 0))
    frac = (position - low).float()
    return low.to(device), (low + 1).clamp(max=length - 1).to(device), frac.to(device)


# ---------------------------------------------------------------- frost


def frost(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Frost: ``c0 * image + c1 * crop`` of a random frost photo (rescaled by 1.1, more if small)."""
    _check(images, severity)
    n, _, h, w = images.shape
    which = (_rand((n,), generator, torch.device("cpu"), torch.float64) * len(FROST_FILES)).long()
    sizes = torch.tensor([_frost_size(k, h, w) for k in range(len(FROST_FILES))])[which]  # [N, 2]
    u = _rand((n, 2), generator, torch.device("cpu"), torch.float64)
    start = (u * (sizes - torch.tensor([h, w]))).long()  # randint(0, size - image size)
    return _frost(images, severity, which, start[:, 0], start[:, 1])


def _frost(images: torch.Tensor, severity: int, which: torch.Tensor, top: torch.Tensor,
           left: torch.Tensor) -> torch.Tensor:
    """Frost with photo ``which`` [N] cropped at (``top``, ``left``) [N] after rescaling."""
    c = FROST[severity - 1]
    h, w = images.shape[-2:]
    photos = _frost_photos(h, w, images.device)
    out = torch.empty_like(images)
    for i, (k, t, l) in enumerate(zip(which.tolist(), top.tolist(), left.tolist())):
        torch.mul(photos[k][:, t:t + h, l:l + w], c[1] / 255, out=out[i])  # the crop is a slice, cast once
    return out.add_(images, alpha=c[0]).clamp_(0, 1)


@lru_cache(maxsize=None)
def _frost_original(k: int) -> torch.Tensor:
    """Frost photo ``k`` from the installed imagecorruptions package, uint8 [3, h, w] RGB (alpha dropped)."""
    data = (importlib.resources.files("imagecorruptions") / "frost" / FROST_FILES[k]).read_bytes()
    pixels = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


@lru_cache(maxsize=64)
def _frost_size(k: int, h: int, w: int) -> tuple[int, int]:
    """Size of photo ``k`` after the reference's rescaling for an ``h`` x ``w`` image (same float ops)."""
    fh, fw = _frost_original(k).shape[-2:]
    scaling_factor = 1
    if fh >= h and fw >= w:
        scaling_factor = 1
    elif fh < h and fw >= w:
        scaling_factor = h / fh
    elif fh >= h and fw < w:
        scaling_factor = w / fw
    else:  # both too small: the bigger factor
        scaling_factor = max(h / fh, w / fw)
    scaling_factor *= 1.1
    return int(np.ceil(fh * scaling_factor)), int(np.ceil(fw * scaling_factor))


@lru_cache(maxsize=8)
def _frost_photos(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """All the photos resized for ``h`` x ``w`` images, made together on first use (a fixed cost,
    not one that falls on whichever later call first draws a photo)."""
    return tuple(_frost_photo(k, _frost_size(k, h, w), device) for k in range(len(FROST_FILES)))


@lru_cache(maxsize=32)
def _frost_photo(k: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Photo ``k`` resized to ``size`` like ``cv2.resize(INTER_CUBIC)`` (a=-0.75), uint8, cached on ``device``."""
    photo = _frost_original(k)[None].float()
    resized = F.interpolate(photo, size=size, mode="bicubic", align_corners=False)[0]
    return resized.round().clamp(0, 255).to(torch.uint8).to(device)


# ---------------------------------------------------------------- fog


def fog(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fog: add ``c0`` times a plasma fractal (one per image), then rescale to the image maximum."""
    _check(images, severity)
    c = FOG[severity - 1]
    n, _, h, w = images.shape
    mapsize = 1 << (max(h, w) - 1).bit_length()  # next power of 2
    count = mapsize**2 - 1  # what all the levels draw
    if isinstance(generator, sampling.Streams) and len(generator) == n:
        # 24 random bits as a signed integer v: v / 2^23 is uniform in [-1, 1), as 2u - 1 is
        words = torch.stack([generator.words(i, count) for i in range(n)]).bitwise_right_shift_(8)
        scales = _plasma_scales(mapsize, c[1], images.device, 2.0**-23)
        noise = words.to(images.device, torch.float32).mul_(scales)
    else:
        scales = _plasma_scales(mapsize, c[1], images.device)
        noise = torch.addcmul(-scales, _rand((n, count), generator, images.device), 2 * scales)
    return _fog(images, severity, _plasma_fractal(noise, mapsize))


def _fog(images: torch.Tensor, severity: int, plasma: torch.Tensor) -> torch.Tensor:
    """Fog from the height map ``plasma`` [N, S, S], S >= H, W (its top-left corner; scaled to [0, 1] here).

    ``(x + c0 * p) * peak / (peak + c0)``, ``p`` the map scaled to [0, 1] and ``peak`` the image
    maximum, is one multiply-add of the image with per-image constants. ``plasma`` is overwritten.
    """
    c = FOG[severity - 1]
    n, _, h, w = images.shape
    low, high = plasma.reshape(n, -1).amin(dim=1), plasma.reshape(n, -1).amax(dim=1)  # (aminmax is slower)
    peak = images.reshape(n, -1).amax(dim=1)
    keep = peak / (peak + c[0])  # the image's factor
    gain = c[0] * keep / (high - low)  # the map's
    layer = plasma[:, :h, :w].sub_(low.view(n, 1, 1)).mul_(gain.view(n, 1, 1))  # in place: no new buffer
    return torch.addcmul(layer[:, None], images, keep.view(n, 1, 1, 1)).clamp_(0, 1)


# The first levels (up to a 16 x 16 grid) work on a few numbers each: one product with a matrix.
_PLASMA_START = 16


@lru_cache(maxsize=16)
def _plasma_scales(mapsize: int, wibbledecay: float, device: torch.device, unit: float = 1.0) -> torch.Tensor:
    """``unit * wibble**2`` for each of the ``mapsize**2 - 1`` draws of ``plasma_fractal``, in its order.

    The reference adds ``wibble * np.random.uniform(-wibble, wibble)`` to each new point, with
    ``wibble`` 100 at the first level (3 draws) and divided by ``wibbledecay`` at each next one
    (4 times as many draws).
    """
    counts = [3 * 4**level for level in range(mapsize.bit_length() - 1)]
    wibbles = torch.tensor([100.0 / wibbledecay**level for level in range(len(counts))], dtype=torch.float64)
    return (unit * wibbles**2).repeat_interleave(torch.tensor(counts, dtype=torch.long)).float().to(device)


def _plasma_fractal(noise: torch.Tensor, mapsize: int) -> torch.Tensor:
    """Diamond-square height maps [n, mapsize, mapsize]: the reference's ``plasma_fractal``, unscaled.

    ``noise`` [n, mapsize**2 - 1] are the reference's ``wibble * np.random.uniform(-wibble,
    wibble)`` terms, in its order: per level, squares, then the two diamond grids, each
    row-major. The map is built coarse to fine as a grid of the points set so far; the first
    levels are linear in their noise (a cached matrix), the others are done level by level on
    whole grids.
    """
    assert mapsize & (mapsize - 1) == 0, "mapsize must be a power of two"
    n = noise.shape[0]
    start = min(mapsize, _PLASMA_START)
    used = start**2 - 1
    matrix = _plasma_matrix(start).to(noise)
    m = noise.new_empty(n, start * start)
    for i in range(n):  # image by image: a product's rounding may depend on the number of rows
        torch.mm(noise[i:i + 1, :used], matrix, out=m[i:i + 1])
    m = m.view(n, start, start)
    while m.shape[-1] < mapsize:
        g = m.shape[-1]
        m = _diamond_square(m, noise[:, used:used + 3 * g * g].view(n, 3, g, g))
        used += 3 * g * g
    return m


@lru_cache(maxsize=8)
def _plasma_matrix(size: int) -> torch.Tensor:
    """The ``size`` x ``size`` grid of the first levels, linear in their noise: [size**2 - 1, size**2]."""
    count = size**2 - 1
    noise = torch.eye(count, dtype=torch.float64)
    m, used = torch.zeros(count, 1, 1, dtype=torch.float64), 0
    while m.shape[-1] < size:
        g = m.shape[-1]
        m = _diamond_square(m, noise[:, used:used + 3 * g * g].view(count, 3, g, g))
        used += 3 * g * g
    return m.reshape(count, size * size).float()


def _diamond_square(corners: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One level of diamond-square: the [n, G, G] grid (periodic) to [n, 2G, 2G].

    With Z the new square centres and C the corners, each a mean of four neighbours plus
    ``noise`` ([n, 3, G, G]: centres, then the two diamond grids):
    Z[i, j] ~ C[i:i+2, j:j+2], the diamond at (i, j + 1/2) ~ Z[i-1, j], Z[i, j], C[i, j], C[i, j+1],
    the one at (i + 1/2, j) ~ Z[i, j-1], Z[i, j], C[i, j], C[i+1, j]; indices wrap around.
    Each G x G grid is computed whole (contiguous, fast) with rolls for the wrapped neighbours,
    and written into the interleaved map through strided views (few small calls: at the small
    levels the time goes to the number of torch calls, views included).
    """
    n, g, _ = corners.shape
    out = corners.new_empty(n, 2 * g, 2 * g)

    def points(a: int, b: int) -> torch.Tensor:  # the points (i + a/2, j + b/2) of the map, [n, G, G]
        return out.as_strided((n, g, g), (4 * g * g, 4 * g, 2), 2 * g * a + b)

    points(0, 0).copy_(corners)
    down, right = corners.roll(-1, 1), corners.roll(-1, 2)  # C[i+1, j], C[i, j+1]
    centres = torch.add(corners, down)  # the reference's order: rows, then columns
    centres = torch.add(noise[:, 0], centres.add_(centres.roll(-1, 2)), alpha=0.25, out=centres)
    points(1, 1).copy_(centres)
    shared = torch.add(centres, corners)
    diamonds = torch.add(shared, centres.roll(1, 1)).add_(right)  # with Z[i-1, j]
    torch.add(noise[:, 1], diamonds, alpha=0.25, out=points(0, 1))
    diamonds = shared.add_(centres.roll(1, 2)).add_(down)  # with Z[i, j-1]
    torch.add(noise[:, 2], diamonds, alpha=0.25, out=points(1, 0))
    return out


# ---------------------------------------------------------------- spatter


def spatter(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Spatter: water drops (severity 1-3) or mud (4-5) where a blurred random field is high."""
    _check(images, severity)
    c = SPATTER[severity - 1]
    n, _, h, w = images.shape
    field = _rand((n, h, w), generator, images.device, normal=True) * c[1] + c[0]
    return _spatter(images, severity, field)


def _spatter(images: torch.Tensor, severity: int, field: torch.Tensor) -> torch.Tensor:
    """Spatter from the normal ``field`` [N, H, W] (mean c0, std c1)."""
    c = SPATTER[severity - 1]
    liquid = _gaussian(field.float(), c[2])
    liquid = torch.where(liquid < c[3], 0, liquid)
    if c[5] == 0:  # water
        liquid = (liquid * 255).floor()  # .astype(np.uint8)
        dist = _chamfer_distance(_canny(liquid, 50, 150), 20)  # then cv2.threshold(TRUNC at 20)
        dist = _equalize_hist(_box3(dist).floor())
        emboss = torch.tensor([[-2., -1, 0], [-1, 1, 1], [0, 1, 2]], device=dist.device)
        dist = F.conv2d(F.pad(dist[:, None], (1, 1, 1, 1), mode="reflect"), emboss[None, None])[:, 0]
        dist = _box3(dist.round().clamp(0, 255)).round()  # cv2.filter2D to CV_8U, then a uint8 blur
        m = liquid * dist
        peak = m.amax(dim=(1, 2), keepdim=True)
        # the reference divides by zero (NaN) when no drop is drawn; here the image is left as it is
        m = torch.where(peak > 0, m / peak.clamp(min=1e-12), 0) * c[4]
        color = torch.tensor(WATER, device=images.device).view(1, 3, 1, 1)
        return (images + m[:, None] * color).clamp(0, 1)
    m = _gaussian((liquid > c[3]).float(), c[4])  # mud
    m = torch.where(m < 0.8, 0, m)[:, None]
    color = torch.tensor(MUD, device=images.device).view(1, 3, 1, 1)
    return (images * (1 - m) + color * m).clamp(0, 1)


def _canny(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``cv2.Canny(x, low, high)`` of uint8-valued [N, H, W] as a bool edge map.

    3x3 Sobel (border replicated), L1 magnitude, non-maximum suppression along the gradient
    direction binned as OpenCV does (tan 22.5 in 15-bit fixed point, same strict / non-strict
    comparisons), then hysteresis: weak edges 8-connected to a strong one are kept.
    """
    sobel = torch.tensor([[-1., 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device)
    p = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(p, sobel[None, None])[:, 0].int()
    gy = F.conv2d(p, sobel.t()[None, None])[:, 0].int()
    mag = gx.abs() + gy.abs()
    mp = F.pad(mag, (1, 1, 1, 1))  # outside the image the magnitude is 0
    h, w = mag.shape[-2:]

    def at(dr: int, dc: int) -> torch.Tensor:
        return mp[:, 1 + dr:1 + dr + h, 1 + dc:1 + dc + w]

    ax, ay = gx.abs(), gy.abs() << 15
    tg22x = ax * 13573  # round(tan(22.5 deg) * 2**15)
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg22x + (ax << 16))
    diagonal = ~horizontal & ~vertical
    opposite = (gx * gy) < 0
    maximum = ((horizontal & (mag > at(0, -1)) & (mag >= at(0, 1)))
               | (vertical & (mag > at(-1, 0)) & (mag >= at(1, 0)))
               | (diagonal & opposite & (mag > at(-1, 1)) & (mag > at(1, -1)))
               | (diagonal & ~opposite & (mag > at(-1, -1)) & (mag > at(1, 1))))
    weak = maximum & (mag > low)
    edges = weak & (mag > high)
    while True:  # hysteresis: grow the strong edges inside the weak ones until nothing changes
        grown = weak & (F.max_pool2d(edges[:, None].float(), 3, 1, 1)[:, 0] > 0)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _chamfer_distance(edges: torch.Tensor, limit: float) -> torch.Tensor:
    """``min(cv2.distanceTransform(DIST_L2, 5), limit)``: distance to the nearest edge of [N, H, W].

    OpenCV's 5x5 chamfer is the shortest-path distance over steps of 1 (4 neighbours), 1.4
    (diagonals) and 2.1969 (knight moves). Starting from ``limit`` off the edges, each round
    relaxes all pixels over every offset of a 5x5 window at its chamfer cost (1, 1.4, 2, 2.1969,
    2.8), using separable 3-tap min-filters; the distances are exact once a round changes
    nothing, after about ``limit / 2`` rounds.
    """
    def pool(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:  # min over -step, 0, +step along dim
        out, n = x.clone(), x.shape[dim] - step
        for a, b in ((0, step), (step, 0)):
            part = out.narrow(dim, a, n)
            torch.minimum(part, x.narrow(dim, b, n), out=part)
        return out

    # a filter may also offer a nearer offset at a higher cost: that never goes below the true distance
    dist = torch.where(edges, 0.0, float(limit))
    for _ in range(int(math.ceil(limit))):
        c1, c2 = pool(dist, 2, 1), pool(dist, 2, 2)  # columns +-1, +-2
        best = torch.minimum(dist, torch.minimum(c1, pool(dist, 1, 1)) + 1.0)
        best = torch.minimum(best, pool(c1, 1, 1) + 1.4)
        best = torch.minimum(best, torch.minimum(c2, pool(dist, 1, 2)) + 2.0)
        best = torch.minimum(best, torch.minimum(pool(c2, 1, 1), pool(c1, 1, 2)) + 2.1969)
        best = torch.minimum(best, pool(c2, 1, 2) + 2.8)
        if torch.equal(best, dist):
            break
        dist = best
    return dist


def _equalize_hist(x: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` of uint8-valued [N, H, W], per image."""
    n = x.shape[0]
    flat = x.reshape(n, -1).long()
    hist = torch.zeros(n, 256, device=x.device).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float))
    first = hist[torch.arange(n, device=x.device), (hist > 0).float().argmax(dim=1)][:, None]
    total = float(flat.shape[1])
    scale = 255.0 / (total - first).clamp(min=1)
    lut = ((hist.cumsum(dim=1) - first) * scale).round().clamp(0, 255)
    lut = torch.where(first == total, torch.arange(256., device=x.device), lut)  # a flat image stays
    return lut.gather(1, flat).view_as(x)


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "spatter": spatter,
}
