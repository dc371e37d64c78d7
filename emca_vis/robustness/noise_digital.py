"""Noise and digital ImageNet-C corruptions, batched in PyTorch.

Noise: ``gaussian_noise``, ``shot_noise``, ``impulse_noise``, ``speckle_noise``.
Digital: ``brightness``, ``contrast``, ``saturate``, ``pixelate``, ``jpeg_compression``,
``elastic_transform``.

Every function maps float ``[N, 3, H, W]`` images in [0, 1] (any device) to the same, and follows
the reference ``imagecorruptions`` package (imagecorruptions-imaug 1.1.5,
``imagecorruptions/corruptions.py``): the per-severity parameters are copied from it, and its
image-size scaling (pixelate, elastic_transform) is kept.

* brightness, contrast, saturate, pixelate and jpeg_compression are deterministic and reproduce
  the reference (on the CPU pixelate and jpeg_compression run Pillow's resize and libjpeg, as the
  reference does; on an accelerator pixelate emulates Pillow's BOX / NEAREST resize, fixed-point
  rounding included).
* The noises and elastic_transform draw from ``generator`` with the reference's distributions.
"""

from __future__ import annotations

import functools
import io
from numbers import Integral
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode  # importing torchvision.io loads its torch.ops.image

from . import sampling
from .blur import banded_matrix, banded_rows

# Per-severity parameters, copied from imagecorruptions-imaug 1.1.5 (imagecorruptions/corruptions.py).
GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # noise std
SHOT_NOISE = (60, 25, 12, 5, 3)  # photons per unit intensity
IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)  # fraction of values set to 0 or 1
SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)  # multiplicative noise std
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor on the deviation from the channel mean
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))  # HSV saturation * a + b
JPEG_QUALITY = (25, 18, 15, 10, 7)
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # downscale factor
ELASTIC_ALPHA = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)  # displacement gain


def _check(images: torch.Tensor, severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, Integral) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1-5, got {severity}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")


def _randn(images: torch.Tensor, generator: torch.Generator | None, shape=None) -> torch.Tensor:
    return sampling.normal(images.shape if shape is None else shape, generator, images.device)


def _rand(images: torch.Tensor, generator: torch.Generator | None, shape=None) -> torch.Tensor:
    return sampling.uniform(images.shape if shape is None else shape, generator, images.device)


# ----------------------------------------------------------------------------- noise


def gaussian_noise(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise, std ``GAUSSIAN_NOISE``."""
    _check(images, severity)
    c = GAUSSIAN_NOISE[severity - 1]
    noise = _randn(images, generator)
    return torch.add(images, noise, alpha=c, out=noise).clamp_(0, 1)


def shot_noise(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson noise on the 8-bit values the reference receives: ``Poisson(x * c) / c``."""
    _check(images, severity)
    c = SHOT_NOISE[severity - 1]
    rates = torch.arange(256, dtype=torch.float64) * (c / 255)
    return sampling.poisson_levels(_to_uint8(images), rates, generator, 1 / c, 1.0)


def impulse_noise(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Salt and pepper (skimage ``random_noise(mode='s&p')``): each value, channels separately, is
    hit with probability ``IMPULSE_NOISE``, then set to 1 or 0 with equal chance. The hits are
    drawn sparsely (:func:`.sampling.hits`) and written into a copy of the images."""
    _check(images, severity)
    c = IMPULSE_NOISE[severity - 1]
    index, salt = sampling.hits(images.shape, c, generator, images.device)
    out = images.contiguous().clamp(0, 1)  # contiguous in, contiguous out
    out.view(-1).index_copy_(0, index, salt.to(out.dtype))
    return out


def speckle_noise(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiplicative Gaussian noise: ``x + x * N(0, c^2)``."""
    _check(images, severity)
    c = SPECKLE_NOISE[severity - 1]
    return (images + images * c * _randn(images, generator)).clamp(0, 1)


# ----------------------------------------------------------------------------- HSV


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` RGB in [0, 1] to HSV, all in [0, 1], as ``skimage.color.rgb2hsv``
    (hue and saturation 0 for grey; where several channels are the maximum, blue wins over green
    over red)."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    v = rgb.amax(1, keepdim=True)
    delta = v - rgb.amin(1, keepdim=True)
    colour = delta > 0
    s = delta / torch.where(colour, v, torch.ones_like(v))
    blue_max, green_max = b == v, g == v
    num = torch.where(blue_max, r - g, torch.where(green_max, b - r, g - b))
    offset = torch.where(blue_max, 4.0, torch.where(green_max, 2.0, 0.0))
    h = torch.remainder((offset + num / torch.where(colour, delta, torch.ones_like(delta))) / 6, 1.0)
    return torch.cat((h * colour, s, v), 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`, equal to ``skimage.color.hsv2rgb`` (its six-sector table
    written as ``v - v s clip(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``, n = 5, 3, 1)."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6 * h, 6)
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)


# ----------------------------------------------------------------------------- digital


def brightness(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adds ``BRIGHTNESS`` to the HSV value (clipped to 1).

    Hue and saturation stay, so the HSV round trip reduces to a scaling: with ``v`` the largest
    channel and ``v' = min(v + c, 1)``, each channel ``x`` becomes ``v' - (v' / v)(v - x)``, i.e.
    ``x v' / v``, and black (``v = 0``, grey in HSV) becomes ``v'``. Three full-size passes
    instead of the two colour-space conversions.
    """
    _check(images, severity)
    c = BRIGHTNESS[severity - 1]
    v = images.amax(1, keepdim=True)
    lifted = (v + c).clamp_(max=1)
    ratio = lifted / v.clamp(min=1e-30)  # finite for black, where v - x = 0
    return torch.addcmul(lifted - ratio * v, ratio, images).clamp_(0, 1)


def contrast(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shrinks each channel towards its mean over the image by ``CONTRAST``."""
    _check(images, severity)
    c = CONTRAST[severity - 1]
    means = images.mean(dim=(2, 3), keepdim=True)
    return ((images - means) * c + means).clamp(0, 1)


def saturate(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """HSV saturation ``s * a + b`` (clipped to [0, 1]) with ``(a, b) = SATURATE``."""
    _check(images, severity)
    a, b = SATURATE[severity - 1]
    hsv = rgb_to_hsv(images)
    hsv = torch.stack((hsv[:, 0], (hsv[:, 1] * a + b).clamp(0, 1), hsv[:, 2]), 1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float to 0..255 integers (rounded), what the reference receives."""
    return images.clamp(0, 1).mul_(255).round_()


@functools.lru_cache(maxsize=64)
def _pil_box_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BOX downscaling weights (``precompute_coeffs`` and ``normalize_coeffs_8bpc`` in
    Pillow's Resample.c): a ``[out, in]`` 0/1 matrix of the input pixels each output averages, and
    per output the 8-bit fixed-point coefficient (22 fractional bits) they all share."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    ss = 1.0 / filterscale
    members = np.zeros((out_size, in_size), dtype=np.float32)
    coeff = np.zeros(out_size, dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        arg = (np.arange(xmin, xmax) - center + 0.5) * ss
        inside = (arg > -0.5) & (arg <= 0.5)
        members[xx, xmin:xmax] = inside
        coeff[xx] = int(0.5 + (1.0 / inside.sum()) * (1 << 22)) if inside.any() else 0
    return members, coeff


@functools.lru_cache(maxsize=64)
def _pil_nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output pixel in Pillow's NEAREST resize (``ImagingScaleAffine``:
    the position is accumulated in double precision, then truncated)."""
    step = in_size / out_size
    positions = np.add.accumulate(np.concatenate(([step * 0.5], np.full(out_size - 1, step))))
    return positions.astype(np.int64)


@functools.lru_cache(maxsize=64)
def _pil_box_plan(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Pillow BOX pass as index arithmetic: per output, the first and one-past-last input
    pixel it averages (as indices into the running sum, which starts with a 0), and the offset
    of its row in a table of Pillow's fixed-point result for every (pixel count, sum)."""
    members, coeff = _pil_box_coeffs(in_size, out_size)
    counts = members.sum(1).astype(np.int64)
    first = np.where(counts > 0, members.argmax(1), 0)
    stride = 255 * max(int(counts.max()), 1) + 1
    sums = np.arange(stride, dtype=np.int64)
    table = np.zeros((int(counts.max()) + 1, stride), dtype=np.float32)
    for count in np.unique(counts):
        c = coeff[np.argmax(counts == count)]
        table[count] = np.clip((sums * c + (1 << 21)) >> 22, 0, 255)
    return (torch.as_tensor(first), torch.as_tensor(first + counts), torch.as_tensor(counts * stride, dtype=torch.float32),
            torch.as_tensor(table.ravel()))


def _pil_box_pass(pixels: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """One Pillow BOX pass along dim 2 of 0..255 integer-valued float32 ``pixels`` [N, C, in, M]:
    exact integer sums of each output's pixels (differences of a running sum, exact below
    2^24), then Pillow's fixed-point scaling and rounding looked up in a table. Along dim 2
    every index picks whole rows (a copy each), which is several times faster than picking
    columns."""
    start, stop, offset, table = (t.to(pixels.device) for t in _pil_box_plan(in_size, out_size))
    running = F.pad(pixels.cumsum(2), (0, 0, 1, 0))
    sums = running.index_select(2, stop).sub_(running.index_select(2, start)).add_(offset.view(-1, 1))
    return table.index_select(0, sums.view(-1).int()).view(sums.shape)


def pixelate(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pillow BOX resize to ``PIXELATE`` times the size (``int(side * c)``), then NEAREST back up,
    on 8-bit pixels as Pillow does (both passes round to integers).

    On the CPU this is Pillow's own resize, per image: the reference's library, and faster than
    any tensor version here (its two passes are a few C loops over 8-bit rows, while the tensor
    version needs a dozen full-size passes); on an accelerator, the tensor emulation. Pillow's
    resize is ~0.17 of the ~0.3 ms per 224 px image; the rest is the 8-bit conversions.
    """
    _check(images, severity)
    c = PIXELATE[severity - 1]
    h, w = images.shape[-2:]
    small_h, small_w = int(h * c), int(w * c)
    if images.device.type != "cpu":
        return _pixelate_tensor(_to_uint8(images), small_h, small_w)

    def corrupt(image: Image.Image, out: np.ndarray) -> None:
        image = image.resize((small_w, small_h), Image.BOX).resize((w, h), Image.NEAREST)
        for channel, plane in enumerate(image.split()):
            np.divide(np.asarray(plane), np.float32(255), out=out[channel])

    return _through_pil(images, corrupt)


def _pixelate_tensor(pixels: torch.Tensor, small_h: int, small_w: int) -> torch.Tensor:
    """:func:`pixelate` of 0..255 integer-valued float ``pixels`` in tensor operations (Pillow emulated)."""
    h, w = pixels.shape[-2:]
    pixels = _pil_box_pass(pixels.transpose(2, 3), w, small_w).transpose(2, 3)  # horizontal first, as Pillow
    pixels = _pil_box_pass(pixels, h, small_h).div_(255)
    rows = torch.as_tensor(_pil_nearest_index(small_h, h), device=pixels.device)
    cols = torch.as_tensor(_pil_nearest_index(small_w, w), device=pixels.device)
    return pixels.index_select(3, cols).index_select(2, rows)


def _through_pil(images: torch.Tensor, corrupt: Callable[[Image.Image, np.ndarray], None]) -> torch.Tensor:
    """``corrupt(image, out)`` for each image as an 8-bit Pillow RGB image (:func:`_pil_image`),
    writing the float [3, H, W] result into ``out``, on the CPU; moves the results back. Each
    image's ``out`` is first the scratch space of its conversion, so that little memory is touched."""
    array = images.detach().to("cpu", torch.float32).contiguous().numpy()
    out = np.empty(array.shape, dtype=np.float32)
    planes = np.empty(array.shape[1:], dtype=np.uint8)
    for image, result in zip(array, out):
        corrupt(_pil_image(image, result, planes), result)
    return torch.from_numpy(out).to(images.device)


def _pil_image(image: np.ndarray, scaled: np.ndarray, planes: np.ndarray) -> Image.Image:
    """A [3, H, W] float32 image in [0, 1] as an 8-bit Pillow RGB image, rounded as the reference
    receives it, through the float32 ``scaled`` and uint8 ``planes`` of its shape. One pass per
    step: numpy scales, rounds and casts to uint8 (several times faster than torch), torch clips
    (twice as fast as numpy), Pillow interleaves the planes (several times faster than a uint8
    tensor transpose)."""
    np.multiply(image, np.float32(255), out=scaled)
    scaled += np.float32(0.5)
    torch.from_numpy(scaled).clamp_(0, 255)  # then truncation rounds half up: no .5 from 8-bit inputs
    np.copyto(planes, scaled, casting="unsafe")
    h, w = planes.shape[1:]
    return Image.merge("RGB", [Image.frombuffer("L", (w, h), plane, "raw", "L", 0, 1) for plane in planes])


def jpeg_compression(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """JPEG encode and decode at quality ``JPEG_QUALITY`` (libjpeg, 4:2:0, as Pillow's save).

    Runs on the CPU and moves the result back: Pillow's encoder (the reference's own call; it
    takes the interleaved pixels Pillow holds, where torchvision's encoder would transpose
    [3, H, W] uint8 itself, slowly), then torchvision's decoder (bit-identical to Pillow's,
    without its Python header parsing). libjpeg's encode and decode are ~0.15 ms of the ~0.3 ms
    per 224 px image; the rest is the 8-bit conversions, one pass per step.
    """
    _check(images, severity)
    quality = JPEG_QUALITY[severity - 1]

    def corrupt(image: Image.Image, out: np.ndarray) -> None:
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=quality)
        # the op itself: torchvision's decode_jpeg adds ~15 us a call (usage logging, a deprecation warning)
        decoded = torch.ops.image.decode_jpeg(torch.frombuffer(encoded.getbuffer(), dtype=torch.uint8),
                                              ImageReadMode.UNCHANGED.value, False)
        np.divide(decoded.numpy(), np.float32(255), out=out)  # one pass: cast and scale

    return _through_pil(images, corrupt)


# outputs per block of the banded blur along rows and along columns (smaller blocks waste fewer
# multiplications on the band's zeros; these were fastest at 224 px on one thread)
ROWS_BLOCK, COLS_BLOCK = 8, 16


@functools.lru_cache(maxsize=64)
def _blur_plan(size: int, sigma: float, truncate: float, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scipy.ndimage's 1-D Gaussian filter along an axis of ``size`` (kernel radius
    ``int(truncate * sigma + 0.5)``, 'reflect' = half-sample symmetric borders) in blocks: the
    source index of each position of the input padded by the radius (and up to a whole number of
    blocks), and the ``[block, block + 2 radius]`` band matrix that maps a block's window of it
    to the block's outputs."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    block = min(block, size)
    blocks = -(-size // block)
    src = np.remainder(np.arange(-radius, blocks * block + radius), 2 * size)
    src = np.where(src >= size, 2 * size - 1 - src, src)
    return torch.as_tensor(src), banded_matrix(tuple(kernel.tolist()), block)


def _reflect_pad(x: torch.Tensor, dim: int, src: torch.Tensor, radius: int) -> torch.Tensor:
    """``x.index_select(dim, src)``: ``x`` padded by ``radius`` before and the rest of ``src`` after,
    reflected (half-sample symmetric). Where one reflection suffices, as copies of ``x`` and its
    flipped ends (index_select along a row dimension is about 3x slower)."""
    size = x.shape[dim]
    after = src.numel() - size - radius
    if radius > size or after > size:
        return x.index_select(dim, src.to(x.device))
    shape = list(x.shape)
    shape[dim] = src.numel()
    out = x.new_empty(shape)
    out.narrow(dim, radius, size).copy_(x)
    out.narrow(dim, 0, radius).copy_(x.narrow(dim, 0, radius).flip(dim))
    out.narrow(dim, radius + size, after).copy_(x.narrow(dim, size - after, after).flip(dim))
    return out


def _blur_rows(fields: torch.Tensor, sigma: float, truncate: float) -> torch.Tensor:
    """:func:`gaussian_blur_reflect` along dim -2 of ``[..., H, W]``: the reflected padding, then
    :func:`.blur.banded_rows`."""
    size, width = fields.shape[-2:]
    src, band = _blur_plan(size, sigma, truncate, ROWS_BLOCK)
    block, window = band.shape
    padded = _reflect_pad(fields.reshape(-1, size, width), -2, src, (window - block) // 2)
    return banded_rows(padded, band.to(fields))[:, :size].view(fields.shape)


def _blur_cols(fields: torch.Tensor, sigma: float, truncate: float) -> torch.Tensor:
    """:func:`gaussian_blur_reflect` along dim -1, as :func:`_blur_rows`: per block of outputs,
    one product of all rows' windows with the band, written in place."""
    size = fields.shape[-1]
    src, band = _blur_plan(size, sigma, truncate, COLS_BLOCK)
    block, window = band.shape
    blocks = (src.numel() - window) // block + 1
    padded = _reflect_pad(fields.reshape(-1, size), -1, src, (window - block) // 2)
    band = band.to(fields).t()
    out = fields.new_empty(padded.shape[0], blocks * block)
    for b in range(blocks):
        torch.mm(padded[:, b * block:b * block + window], band, out=out[:, b * block:(b + 1) * block])
    return out[:, :size].reshape(fields.shape)


def gaussian_blur_reflect(fields: torch.Tensor, sigma: tuple[float, float], truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, C, H, W]`` as ``skimage.filters.gaussian(..., mode='reflect')``
    with per-axis ``sigma = (sigma_h, sigma_w)``, in the dtype of ``fields``."""
    return _blur_cols(_blur_rows(fields, sigma[0], truncate), sigma[1], truncate)


@functools.lru_cache(maxsize=16)
def _base_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    """``[H, W, 2]`` grid_sample coordinates (align_corners=False) of every pixel's own centre
    (cached: read only)."""
    xs = (2 * torch.arange(w, device=device, dtype=dtype) + 1) / w - 1
    ys = (2 * torch.arange(h, device=device, dtype=dtype) + 1) / h - 1
    return torch.stack((xs.expand(h, w), ys[:, None].expand(h, w)), -1)


def _sample_reflect(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def warp_reflect(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Samples ``images`` at ``(row + dy, col + dx)`` (``[N, H, W]`` displacements in pixels),
    bilinear with half-sample symmetric borders: ``map_coordinates(order=1, mode='reflect')``."""
    _, _, h, w = images.shape
    scale = torch.tensor([2 / w, 2 / h], device=images.device, dtype=images.dtype)
    offsets = torch.stack((dx, dy), -1).to(images.dtype)
    return _sample_reflect(images, torch.addcmul(_base_grid(h, w, images.device, images.dtype), offsets, scale))


def elastic_transform(images: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Elastic deformation: per image, two fields of uniform noise in ``+-0.005 H`` pixels,
    Gaussian-blurred (sigma 1% of each side, truncate 3, reflect) and scaled by
    ``ELASTIC_ALPHA``, displace the sampling positions (columns by dx, rows by dy).

    The blur is linear and keeps constants, so the noise is blurred as drawn, in [0, 1), and the
    affine map to displacements and then to grid_sample coordinates is one multiply-add."""
    _check(images, severity)
    alpha = ELASTIC_ALPHA[severity - 1]
    n, _, h, w = images.shape
    max_d = h * 0.005  # the reference uses the height for both directions
    blurred = gaussian_blur_reflect(_rand(images, generator, (n, 2, h, w)), (h * 0.01, w * 0.01))
    # displacement d = (2 b - 1) max_d alpha pixels; coordinate + 2 d / side
    gain = (4 * max_d * alpha / w, 4 * max_d * alpha / h)
    # the grid kept as [N, 2, H, W] (no interleaving pass); grid_sample reads its permuted view
    # as fast as an interleaved one
    grid = torch.addcmul(*_elastic_base(h, w, gain, images.device), blurred, out=blurred)
    return _sample_reflect(images, grid.permute(0, 2, 3, 1)).clamp_(0, 1)


@functools.lru_cache(maxsize=16)
def _elastic_base(h: int, w: int, gain: tuple[float, float], device) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine map of blurred noise ``b`` to grid coordinates, ``base + gain * b``, as
    ``[2, H, W]`` planes (x then y) ``base`` and ``[2, 1, 1]`` ``gain`` (cached: read only)."""
    gains = torch.tensor(gain, device=device)[:, None, None]
    return (_base_grid(h, w, device, torch.float32).permute(2, 0, 1) - gains / 2).contiguous(), gains


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "brightness": brightness,
    "contrast": contrast,
    "saturate": saturate,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "elastic_transform": elastic_transform,
}
