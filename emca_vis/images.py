"""Reading user images: any common format and mode, upright, as 8-bit RGB, or one clear error.

JPEG, PNG, WebP, BMP and TIFF; grayscale, 1-bit, palette, RGBA/LA (composited over white),
16-bit and float grayscale (scaled from their full range), CMYK; EXIF orientation applied.
Unreadable, truncated, non-image and oversized (decompression bomb) files raise
:class:`ImageError` with a one-line message naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 100_000_000


class ImageError(UserError):
    pass


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image at ``path`` as a fully loaded, upright 8-bit RGB image."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:  # checked before any pixel is decoded
                    raise ImageError(f"{path}: {width}x{height} = {width * height} pixels is over the "
                                     f"{max_pixels}-pixel limit (decompression bomb?)")
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (cannot identify image format)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(f"{path}: too many pixels (decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"{path}: truncated or corrupt image data ({_one_line(error)})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scale = 1.0 if values.max(initial=0) <= 1 else 255.0
        else:
            scale = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(values / scale * 255), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def find_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such folder")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths
