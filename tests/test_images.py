import numpy as np
import pytest
from PIL import Image, ImageFile

from emca_vis.images import ImageError, find_images, load_image

RED, BLUE = (220, 30, 40), (20, 40, 210)


def two_colour(width=8, height=4):
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2:] = BLUE
    return Image.fromarray(pixels)


@pytest.mark.parametrize("suffix, lossless", [(".png", True), (".bmp", True), (".tiff", True), (".webp", False),
                                               (".jpg", False)])
def test_formats_load_as_rgb(tmp_path, suffix, lossless):
    path = tmp_path / f"x{suffix}"
    two_colour(16, 8).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (16, 8)
    pixels = np.asarray(image).astype(int)
    if lossless or suffix == ".webp":
        assert tuple(pixels[0, 0]) == RED and tuple(pixels[0, -1]) == BLUE
    else:
        assert np.abs(pixels[4, 2] - RED).max() < 30 and np.abs(pixels[4, 13] - BLUE).max() < 30


def test_grayscale_palette_and_one_bit(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(gray).save(tmp_path / "g.png")
    loaded = np.asarray(load_image(tmp_path / "g.png"))
    assert loaded.shape == (6, 8, 3) and all(np.array_equal(loaded[..., c], gray) for c in range(3))
    two_colour().convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    assert tuple(np.asarray(load_image(tmp_path / "p.png"))[0, 0]) == RED
    Image.new("1", (8, 6), 1).save(tmp_path / "b.png")
    assert np.asarray(load_image(tmp_path / "b.png")).min() == 255


def test_transparency_becomes_white(tmp_path):
    rgba = np.zeros((4, 8, 4), np.uint8)
    rgba[:, :4] = (*RED, 255)
    rgba[:, 4:] = (*BLUE, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    pixels = np.asarray(load_image(tmp_path / "a.png"))
    assert tuple(pixels[0, 0]) == RED and tuple(pixels[0, 7]) == (255, 255, 255)
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    la = np.asarray(load_image(tmp_path / "la.png"))
    assert tuple(la[0, 0]) == (RED[0],) * 3 and tuple(la[0, 7]) == (255, 255, 255)


def test_sixteen_bit_uses_the_full_range(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode in ("I;16", "I")
    pixels = np.asarray(load_image(tmp_path / "d.png"))
    assert pixels[0, :, 0].tolist() == [0, 128, 255] and np.array_equal(pixels[..., 0], pixels[..., 2])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "c.jpg")
    r, g, b = np.asarray(load_image(tmp_path / "c.jpg"))[4, 4].astype(int)
    assert r < 40 and g > 215 and b > 215  # cyan


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise to display
    two_colour(16, 8).save(tmp_path / "r.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "r.jpg")
    assert image.size == (8, 16)
    pixels = np.asarray(image).astype(int)
    assert np.abs(pixels[2, 4] - RED).max() < 40 and np.abs(pixels[13, 4] - BLUE).max() < 40  # left half on top


def test_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello")
    two_colour(64, 64).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:120])
    Image.new("1", (3000, 3000)).save(tmp_path / "bomb.png")
    cases = {tmp_path / "notes.jpg": "not an image", tmp_path / "cut.png": "truncated or corrupt",
             tmp_path / "bomb.png": "9000000 pixels is over the 1000000-pixel limit",
             tmp_path / "missing.png": "no such file", tmp_path: "is a directory"}
    for path, message in cases.items():
        with pytest.raises(ImageError) as error:
            load_image(path, max_pixels=1_000_000)
        assert str(path) in str(error.value) and message in str(error.value)
        assert "\n" not in str(error.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_find_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]
    with pytest.raises(ImageError, match="no such folder"):
        find_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no images"):
        find_images(tmp_path / "empty")
