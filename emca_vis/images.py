"""Reading user images: any common format and mode, upright, as 8-bit RGB, or one clear error.

Formats: JPEG, PNG, WebP, BMP and TIFF. Modes: grayscale, 1-bit, palette, RGBA/LA and other
transparent images (composited over white), 16-bit grayscale (its full 0..65535 range scaled to
0..255), float grayscale (0..1 or 0..255), CMYK. EXIF orientation is applied.

Missing, unreadable, non-image, truncated and oversized (decompression bomb) files, and
anything but a regular file (a FIFO would block forever), raise :class:`ImageError`, whose
one-line message names the file and the problem.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError
from .validation import open_regular

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 100_000_000


class ImageError(UserError):
    """An image file that cannot be read; the message is one line naming the file."""


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image at ``path`` as a fully loaded, upright 8-bit RGB image.

    The size is checked against ``max_pixels`` before any pixel data is decoded.
    """
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        handle = open_regular(path)  # a FIFO or device would block or never end
    except UserError as error:
        raise ImageError(str(error)) from None
    try:
        with handle, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as image:  # lazy: reads the header only
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(f"{path}: {width}x{height} = {width * height} pixels is over the "
                                     f"{max_pixels}-pixel limit (decompression bomb?)")
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (cannot identify image format)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ImageError(f"{path}: too many pixels, {_one_line(error)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"{path}: truncated or corrupt image data ({_one_line(error)})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new 8-bit RGB image from ``image`` in any PIL mode."""
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        top = 1.0 if values.max(initial=0) <= 1 else 255.0
        return _gray_to_rgb(values / top)
    if image.mode == "I" or image.mode.startswith("I;16"):
        return _gray_to_rgb(np.asarray(image, dtype=np.float64) / 65535)
    if "transparency" in image.info:  # palette, L or RGB with a transparent colour
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    """An RGB image with three equal channels from gray ``values`` in 0..1 (clipped)."""
    gray = np.clip(np.round(values * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def find_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder`` (suffix in :data:`IMAGE_SUFFIXES`, any case), sorted."""
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ImageError(f"{folder}: is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"{folder}: no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths
