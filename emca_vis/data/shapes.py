"""Embedded synthetic shapes dataset with ground-truth boxes and masks.

Every sample is rendered on the fly from ``(seed, split, index)``: one
geometric shape (the class) on a cluttered, textured background.  The class
depends on the shape only; colour, size, position and rotation are random.
Shapes are drawn with PIL at a supersampled resolution and box-filtered down,
so the object's coverage map gives both antialiased edges and an exact mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch.utils.data
from PIL import Image, ImageDraw

SPLIT_SIZES = {"train": 10000, "val": 2000, "test": 2000}
_SPLIT_IDS = {name: i for i, name in enumerate(SPLIT_SIZES)}

MIN_IMAGE_SIZE = 16
# Object's circumscribed diameter as a fraction of the image side.
_OBJECT_DIAMETER = (0.4, 0.7)
# The object colour is at least this far (RGB distance, channels in [0, 1])
# from 90% of the background pixels in its box, whenever a candidate allows it.
_MIN_CONTRAST = 0.5
_COLOUR_CANDIDATES = 16
_BACKGROUND_SPREAD = 0.2  # how far background colours stray from their base
_DISTRACTORS = (0, 3)  # inclusive range of the number of strokes and blobs
_FLAT_BACKGROUND = (128, 128, 128)  # used when clutter is disabled
_PIXEL_NOISE = 8.0  # std of grey noise, in 8-bit levels

# A shape is a list of (polygon, fill) parts drawn in order; fill=False
# erases, which is how rings and crescents get their holes.
_Part = tuple[np.ndarray, bool]


def _regular_polygon(n: int, phase: float = 0.0, radius: float = 1.0) -> np.ndarray:
    t = phase + np.arange(n) * 2 * math.pi / n
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.5) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return radii[:, None] * _regular_polygon(2 * points, phase=-math.pi / 2)


def _cross(half_width: float = 0.3) -> np.ndarray:
    w = half_width
    return np.array([(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1),
                     (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)], float)


def _arrow() -> np.ndarray:
    return np.array([(-1, -0.25), (0.1, -0.25), (0.1, -0.65), (1, 0),
                     (0.1, 0.65), (0.1, 0.25), (-1, 0.25)], float)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y - (y.min() + y.max()) / 2], axis=1)


def _normalized(parts: list[_Part]) -> list[_Part]:
    """Scale a shape (centred by construction) to touch the unit circle."""
    filled = np.concatenate([poly for poly, fill in parts if fill])
    radius = np.linalg.norm(filled, axis=1).max()
    return [(poly / radius, fill) for poly, fill in parts]


_CIRCLE = _regular_polygon(96)
_SHAPES: dict[str, list[_Part]] = {
    name: _normalized(parts) for name, parts in {
        "circle": [(_CIRCLE, True)],
        "square": [(_regular_polygon(4, math.pi / 4), True)],
        "triangle": [(_regular_polygon(3, -math.pi / 2), True)],
        "pentagon": [(_regular_polygon(5, -math.pi / 2), True)],
        "semicircle": [(_CIRCLE[:49], True)],  # half of the 96-gon, closed by its diameter
        "star": [(_star(), True)],
        "cross": [(_cross(), True)],
        # Elongated so that it never looks like a rotated square.
        "diamond": [(np.array([(1, 0), (0, 0.5), (-1, 0), (0, -0.5)], float), True)],
        "ring": [(_CIRCLE, True), (0.55 * _CIRCLE, False)],
        "crescent": [(_CIRCLE, True), (0.8 * _CIRCLE + (0.5, 0), False)],
        "arrow": [(_arrow(), True)],
        "heart": [(_heart(), True)],
    }.items()
}
SHAPE_CLASSES: tuple[str, ...] = tuple(_SHAPES)


@dataclass(frozen=True)
class ShapeSample:
    image: Image.Image  # RGB, image_size x image_size
    label: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    mask: np.ndarray  # bool [H, W]


# --- rasterisation -----------------------------------------------------------

def _supersampling(image_size: int) -> int:
    """At least 2x, and enough to draw on a canvas of ~256 px or more."""
    return max(2, math.ceil(256 / image_size))


def _coverage(paint: Callable[[ImageDraw.ImageDraw], None], size: int, ss: int) -> Image.Image:
    """8-bit coverage of each output pixel by what ``paint`` draws at ``ss`` x."""
    canvas = Image.new("L", (size * ss, size * ss), 0)
    paint(ImageDraw.Draw(canvas))
    return canvas.reduce(ss)  # box filter: exact area average


def _polygons_coverage(parts: list[_Part], size: int, ss: int) -> Image.Image:
    def paint(draw: ImageDraw.ImageDraw) -> None:
        for poly, fill in parts:
            draw.polygon((poly * ss).ravel().tolist(), fill=255 if fill else 0)
    return _coverage(paint, size, ss)


def _stroke_coverage(points: np.ndarray, width: float, size: int, ss: int) -> Image.Image:
    def paint(draw: ImageDraw.ImageDraw) -> None:
        draw.line((points * ss).ravel().tolist(), fill=255,
                  width=max(1, round(width * ss)), joint="curve")
    return _coverage(paint, size, ss)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.round(colour * 255))


def _rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), math.sin(angle)],
                     [-math.sin(angle), math.cos(angle)]])


# --- scene content -----------------------------------------------------------

def _place_object(rng: np.random.Generator, label: int, size: int) -> list[_Part]:
    """Random scale, rotation and position, keeping the whole shape in view."""
    radius = rng.uniform(*_OBJECT_DIAMETER) * size / 2
    rotation = _rotation(rng.uniform(0, 2 * math.pi))
    centre = rng.uniform(radius + 1, size - radius - 1, size=2)
    return [(poly @ rotation * radius + centre, fill)
            for poly, fill in _SHAPES[SHAPE_CLASSES[label]]]


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth colour gradients around a random base colour, plus a blotchy texture."""
    grid = rng.random(3) + rng.uniform(-_BACKGROUND_SPREAD, _BACKGROUND_SPREAD, (3, 3, 3))
    grid = (grid.clip(0, 1) * 255).astype(np.uint8)
    colours = Image.fromarray(grid).resize((size, size), Image.BICUBIC)
    cells = max(2, size // 8)
    blotches = (rng.normal(0.5, 0.15, (cells, cells)).clip(0, 1) * 255).astype(np.uint8)
    texture = Image.fromarray(blotches).resize((size, size), Image.BILINEAR)
    pixels = np.asarray(colours, np.int16) + (np.asarray(texture, np.int16)[..., None] - 128) // 6
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _draw_distractors(rng: np.random.Generator, image: Image.Image, ss: int) -> None:
    """Strokes and elongated blobs: clutter that is never one of the classes."""
    size = image.width
    for _ in range(rng.integers(_DISTRACTORS[0], _DISTRACTORS[1] + 1)):
        if rng.random() < 0.6:
            points = rng.uniform(-0.1, 1.1, size=(rng.integers(2, 5), 2)) * size
            width = rng.uniform(0.01, 0.03) * size
            coverage = _stroke_coverage(points, width, size, ss)
        else:
            length = rng.uniform(0.1, 0.25) * size
            blob = _regular_polygon(32) * (1.0, 1 / rng.uniform(2.5, 4.0))
            centre = rng.uniform(0, size, size=2)
            poly = blob @ _rotation(rng.uniform(0, math.pi)) * length / 2 + centre
            coverage = _polygons_coverage([(poly, True)], size, ss)
        image.paste(_rgb(rng.random(3)), mask=coverage)


def _contrasting_colour(rng: np.random.Generator, image: Image.Image,
                        box: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """Pick a random colour that stands out from the background around the object."""
    local = np.asarray(image.crop(box), np.float32).reshape(-1, 3) / 255
    local = local[::max(1, len(local) // 256)]  # a subsample estimates the quantile well
    candidates = rng.random((_COLOUR_CANDIDATES, 3), dtype=np.float32)
    squared = ((candidates[:, None, :] - local[None]) ** 2).sum(axis=2)
    # Most (not all) nearby pixels must differ: a thin stroke may match.
    decile = len(local) // 10
    scores = np.sqrt(np.partition(squared, decile, axis=1)[:, decile])
    good = np.flatnonzero(scores >= _MIN_CONTRAST)
    return _rgb(candidates[good[0] if good.size else scores.argmax()])


def _add_pixel_noise(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Grey sensor noise; one channel keeps it cheap."""
    noise = rng.standard_normal((image.height, image.width, 1), dtype=np.float32)
    pixels = np.asarray(image, np.int16) + np.rint(noise * _PIXEL_NOISE).astype(np.int16)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# --- public API ----------------------------------------------------------------

def _check_split(split: str) -> None:
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLIT_SIZES)}")


def render_sample(seed: int, split: str, index: int, image_size: int = 64,
                  clutter: bool = True) -> ShapeSample:
    """Render sample ``index`` of ``split``; bitwise deterministic in its arguments.

    With ``clutter=False`` the same object (shape, size, pose) is drawn on a
    flat grey background without texture, distractors or noise.
    """
    _check_split(split)
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    ss = _supersampling(image_size)
    label = index % len(SHAPE_CLASSES)

    # The object's geometry is drawn first so that it does not depend on clutter.
    coverage = _polygons_coverage(_place_object(rng, label, image_size), image_size, ss)
    mask = np.asarray(coverage) >= 128  # coverage >= 0.5
    box = _mask_box(mask)

    if clutter:
        image = _background(rng, image_size)
        _draw_distractors(rng, image, ss)
    else:
        image = Image.new("RGB", (image_size, image_size), _FLAT_BACKGROUND)
    image.paste(_contrasting_colour(rng, image, box), mask=coverage)
    if clutter:
        image = _add_pixel_noise(rng, image)
    return ShapeSample(image, label, box, mask)


class ShapesDataset(torch.utils.data.Dataset):
    """A split of the synthetic shapes; samples are rendered on access."""

    def __init__(self, split: str = "train", image_size: int = 64, seed: int = 0,
                 length: int | None = None, transform: Callable | None = None):
        _check_split(split)
        self.split = split
        self.image_size = image_size
        self.seed = seed
        self.length = SPLIT_SIZES[split] if length is None else length
        self.transform = transform
        self.classes: list[str] = list(SHAPE_CLASSES)

    def __len__(self) -> int:
        return self.length

    def sample(self, i: int) -> ShapeSample:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} samples")
        return render_sample(self.seed, self.split, i, self.image_size)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        s = self.sample(i)
        return (s.image if self.transform is None else self.transform(s.image)), s.label
