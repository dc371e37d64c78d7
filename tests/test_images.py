"""Tests for emca_vis.images: every fixture is a tiny image generated here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

from emca_vis.images import IMAGE_SUFFIXES, ImageError, find_images, load_image

RED, BLUE, WHITE = (220, 30, 40), (20, 40, 210), (255, 255, 255)


def two_colour(width: int = 8, height: int = 6) -> Image.Image:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2:] = BLUE
    return Image.fromarray(pixels)


def rgb(path, **kwargs) -> np.ndarray:
    """``load_image(path)`` as an int array, after checking it is 8-bit RGB."""
    image = load_image(path, **kwargs)
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def saved_mode(path) -> str:
    """The PIL mode of the file at ``path``, as read back from disk."""
    with Image.open(path) as image:
        return image.mode


def near(pixel, colour, tolerance: int) -> bool:
    return int(np.abs(np.asarray(pixel) - colour).max()) <= tolerance


@pytest.mark.parametrize("name, options", [("x.png", {}), ("x.bmp", {}), ("x.tiff", {}),
                                           ("x.webp", {"lossless": True}), ("x.jpg", {"quality": 95})])
def test_formats_round_trip_to_rgb(tmp_path, name, options):
    original = two_colour(16, 8)
    original.save(tmp_path / name, **options)
    pixels = rgb(tmp_path / name)
    assert pixels.shape == (8, 16, 3)
    if name.endswith(".jpg"):
        assert near(pixels[4, 2], RED, 30) and near(pixels[4, 13], BLUE, 30)
    else:
        assert np.array_equal(pixels, np.asarray(original))


def test_grayscale_gives_three_equal_channels(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(gray).save(tmp_path / "g.png")
    pixels = rgb(tmp_path / "g.png")
    assert pixels.shape == (6, 8, 3)
    assert all(np.array_equal(pixels[..., c], gray) for c in range(3))


def test_one_bit_and_palette(tmp_path):
    checks = (np.indices((6, 8)).sum(axis=0) % 2).astype(bool)
    Image.fromarray(checks).save(tmp_path / "b.png")
    assert saved_mode(tmp_path / "b.png") == "1"
    assert np.array_equal(rgb(tmp_path / "b.png")[..., 1], checks * 255)

    two_colour().convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(tmp_path / "p.png")
    assert saved_mode(tmp_path / "p.png") == "P"
    pixels = rgb(tmp_path / "p.png")
    assert tuple(pixels[0, 0]) == RED and tuple(pixels[5, 7]) == BLUE


def test_palette_transparency_becomes_white(tmp_path):
    palette = Image.new("P", (8, 6))
    palette.putpalette([*RED, *BLUE])
    palette.paste(1, (4, 0, 8, 6))  # right half: index 1 (blue), made transparent below
    palette.save(tmp_path / "pt.png", transparency=1)
    pixels = rgb(tmp_path / "pt.png")
    assert tuple(pixels[0, 0]) == RED and tuple(pixels[0, 7]) == WHITE


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[:, :4] = (*RED, 255)
    rgba[:, 4:] = (*BLUE, 0)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    pixels = rgb(tmp_path / "a.png")
    assert tuple(pixels[0, 0]) == RED and tuple(pixels[0, 7]) == WHITE

    Image.fromarray(rgba[..., [0, 3]]).save(tmp_path / "la.png")
    assert saved_mode(tmp_path / "la.png") == "LA"
    pixels = rgb(tmp_path / "la.png")
    assert tuple(pixels[0, 0]) == (RED[0],) * 3 and tuple(pixels[0, 7]) == WHITE


@pytest.mark.parametrize("name", ["d.png", "d.tif"])
def test_sixteen_bit_uses_the_full_range(tmp_path, name):
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(tmp_path / name)
    assert saved_mode(tmp_path / name) in ("I;16", "I;16B", "I")
    pixels = rgb(tmp_path / name)
    assert pixels[0, :, 0].tolist() == [0, 128, 255]
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])


@pytest.mark.parametrize("values, expected", [([0.0, 0.5, 1.0, 1.0], [0, 128, 255, 255]),
                                              ([0.0, 100.0, 255.0, 400.0], [0, 100, 255, 255])])
def test_float_images_are_scaled_and_clipped(tmp_path, values, expected):
    Image.fromarray(np.array([values], dtype=np.float32)).save(tmp_path / "f.tif")
    assert saved_mode(tmp_path / "f.tif") == "F"
    assert rgb(tmp_path / "f.tif")[0, :, 2].tolist() == expected


def test_cmyk_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert saved_mode(tmp_path / "c.jpg") == "CMYK"
    assert near(rgb(tmp_path / "c.jpg")[4, 4], (0, 255, 255), 30)  # cyan
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    assert tuple(rgb(tmp_path / "c.tif")[0, 0]) == (255, 0, 0)  # red


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored image must be turned 90 degrees clockwise for display
    two_colour(8, 4).save(tmp_path / "r.jpg", exif=exif, quality=95, subsampling=0)
    pixels = rgb(tmp_path / "r.jpg")
    assert pixels.shape == (8, 4, 3)  # now 4 wide, 8 high
    assert near(pixels[1, 1], RED, 40) and near(pixels[1, 2], RED, 40)  # the left half is on top
    assert near(pixels[6, 1], BLUE, 40) and near(pixels[6, 2], BLUE, 40)


def error_from(path, **kwargs) -> str:
    """The message of the ImageError that ``load_image(path)`` raises, checked to be one line."""
    with pytest.raises(ImageError) as error:
        load_image(path, **kwargs)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    return message


def test_non_image_and_truncated_files(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello, not a picture\n")
    assert "not an image" in error_from(tmp_path / "notes.jpg")

    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in error_from(tmp_path / "cut.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_too_many_pixels_is_refused_before_decoding(tmp_path):
    Image.new("1", (3000, 3000)).save(tmp_path / "bomb.png")
    message = error_from(tmp_path / "bomb.png", max_pixels=1_000_000)
    assert "3000x3000 = 9000000 pixels" in message and "1000000-pixel limit" in message

    data = (tmp_path / "bomb.png").read_bytes()  # header intact, pixel data cut: the check
    (tmp_path / "cut_bomb.png").write_bytes(data[: len(data) // 2])  # must come before decoding
    assert "pixel limit" in error_from(tmp_path / "cut_bomb.png", max_pixels=1_000_000)
    assert load_image(tmp_path / "bomb.png", max_pixels=9_000_000).size == (3000, 3000)


@pytest.mark.parametrize("size", [(6, 5), (8, 6)])  # PIL warns over 20 pixels, refuses over 40
def test_pil_decompression_bomb_guard_becomes_image_error(tmp_path, monkeypatch, size):
    two_colour(*size).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    assert "pixels" in error_from(tmp_path / "small.png")


def test_missing_file_and_directory(tmp_path):
    assert "no such file" in error_from(tmp_path / "missing.jpg")
    (tmp_path / "dir.png").mkdir()
    assert "is a directory" in error_from(tmp_path / "dir.png")


def test_find_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt", "c.webp", "D.JPEG", "e.Tif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in find_images(tmp_path)] == ["D.JPEG", "a.jpg", "b.PNG", "c.webp", "e.Tif"]
    assert all(p.parent == tmp_path for p in find_images(str(tmp_path)))


def test_find_images_errors(tmp_path):
    with pytest.raises(ImageError, match="no such folder"):
        find_images(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ImageError, match="not a folder"):
        find_images(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    with pytest.raises(ImageError, match="no images") as error:
        find_images(tmp_path / "empty")
    assert all(suffix in str(error.value) for suffix in IMAGE_SUFFIXES)
