"""Torch weather corruptions (snow, frost, fog, spatter): contract, and fidelity to ``imagecorruptions``.

All four are random. Fidelity is checked twice:
- exactly, by giving the reference (through its ``np.random`` calls) and our deterministic core
  (``weather._snow`` etc.) the same random draws: PSNR >= 40 dB at every severity;
- statistically, the public functions (drawing from a ``torch.Generator``) against the reference
  (seeded ``np.random``): the mean and spatial spread of the change to the clean image.
The OpenCV steps re-done in torch (Canny, distance transform, histogram equalisation, bicubic
resize of the frost photos) are also compared with OpenCV directly.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
import torch
from imagecorruptions import corrupt, corruption_dict
from PIL import Image
from scipy.stats import ks_2samp

from emca_vis.robustness import weather
from emca_vis.robustness.sampling import Streams

NAMES = list(weather.CORRUPTIONS)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (capped at 120 dB for identical images)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(1 / max(np.mean((a - b) ** 2), 1e-12)))


def make_images(n: int = 3, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 ``[n, h, w, 3]``: a colourful gradient with a random-coloured square, a grey bar and a black disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for i in range(n):
        im = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + 3 * yy + i)], -1)
        im[h // 6: h // 2, w // 6: w // 2] = rng.random(3)
        im[int(h * 0.6): int(h * 0.85), int(w * 0.55): int(w * 0.9)] = 0.5
        im[(yy - 0.75 * h / max(h, w)) ** 2 + (xx - 0.25 * w / max(h, w)) ** 2 < 0.01] = 0
        out.append((im * 255).round().astype(np.uint8))
    return np.stack(out)


def to_torch(images: np.ndarray, device: str = "cpu") -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)


def to_numpy(images: torch.Tensor) -> np.ndarray:
    return images.detach().cpu().permute(0, 2, 3, 1).double().numpy()


def run(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    return weather.CORRUPTIONS[name](images, severity, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_images()


@pytest.fixture
def cached_imread(monkeypatch):
    """The reference decodes a frost photo on every call (most of its time): decode each once."""
    read = functools.lru_cache(maxsize=None)(cv2.imread)
    monkeypatch.setattr(cv2, "imread", lambda path, *args: read(str(path), *args).copy())


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_contract(images, name, device):
    x = to_torch(images, device)
    for severity in range(1, 6):
        out = run(x, name, severity)
        assert out.shape == x.shape and out.dtype == torch.float32 and out.device == x.device
        assert out.min() >= 0 and out.max() <= 1
        assert (out - x).abs().mean() > 1e-3
        assert torch.equal(out, run(x, name, severity)), "same seed must give the same output"
        assert not torch.equal(out, run(x, name, severity, seed=1)), "another seed must give another output"
    assert weather.CORRUPTIONS[name](x[:1], 3).shape == (1, 3, 64, 64)  # no generator: torch's global one
    for bad in (0, 6, 2.0, "3"):
        with pytest.raises(ValueError, match="severity must be 1-5"):
            weather.CORRUPTIONS[name](x, bad)


def test_spatter_without_drops_leaves_the_image(images):
    # the reference divides by a zero maximum here (NaN); ours keeps the image
    x = to_torch(images)
    for severity in range(1, 6):
        assert torch.equal(weather._spatter(x, severity, torch.zeros(3, 64, 64)), x)


# Where the reference's own constants make the mean change shrink from one severity to the next
# (seen on its output too, see test_statistics_match_reference): snow 2 -> 3 (threshold 0.5 -> 0.9
# thins the flakes more than the larger mean and zoom add; -1 %), frost 3 -> 4 (same frost weight
# 0.7, image weight 0.7 -> 0.65: less change where the frost is brighter than the image; -3 to -4 %).
DIPS = {("snow", 2), ("frost", 3)}


@pytest.mark.parametrize("name", NAMES)
def test_stronger_with_severity(images, name):
    # the same seed at every severity draws the same random numbers: a paired comparison
    x = to_torch(images).repeat(4, 1, 1, 1)
    change = [(run(x, name, severity) - x).abs().mean().item() for severity in range(1, 6)]
    for severity in range(1, 5):
        low, high = change[severity - 1], change[severity]
        assert high >= (0.9 if (name, severity) in DIPS else 1.0) * low, change


# ----------------------------------------------------------------------------- exact, given the same draws


class Recorder:
    """Stands in for ``np.random.normal / uniform / randint`` while the reference runs; keeps the draws."""

    def __init__(self, monkeypatch):
        self.draws: list[np.ndarray] = []
        randint = np.random.randint
        monkeypatch.setattr(np.random, "normal", self.normal)
        monkeypatch.setattr(np.random, "uniform", self.uniform)
        monkeypatch.setattr(np.random, "randint", lambda *args, **kw: self.keep(randint(*args, **kw)))

    def keep(self, value):
        self.draws.append(np.asarray(value))
        return value

    def normal(self, loc=0.0, scale=1.0, size=None):  # kept as standard normal numbers
        return loc + scale * self.keep(np.random.standard_normal(size))

    def uniform(self, low=0.0, high=1.0, size=None):  # kept as uniform [0, 1) numbers
        return low + (high - low) * self.keep(np.random.random_sample(size))


def reference_with_draws(images: np.ndarray, name: str, severity: int, monkeypatch) -> tuple[np.ndarray, list]:
    """The reference on each image, and the random numbers it drew for each."""
    outs, draws = [], []
    for i, image in enumerate(images):
        np.random.seed(i)
        with monkeypatch.context() as patch:
            recorder = Recorder(patch)
            outs.append(corrupt(image, corruption_name=name, severity=severity) / 255.0)
        draws.append(recorder.draws)
    return np.stack(outs), draws


def ours_with_draws(x: torch.Tensor, name: str, severity: int, draws: list) -> torch.Tensor:
    """Our deterministic core fed with the reference's draws (one list per image)."""
    stack = lambda j: torch.from_numpy(np.stack([d[j] for d in draws]))  # noqa: E731
    if name == "snow":
        c = weather.SNOW[severity - 1]
        return weather._snow(x, severity, c[0] + c[1] * stack(0), -135 + 90 * stack(1))
    if name == "frost":
        return weather._frost(x, severity, stack(0), stack(1), stack(2))
    if name == "fog":
        mapsize = 1 << (max(x.shape[-2:]) - 1).bit_length()
        units = torch.cat([stack(j).reshape(len(x), -1) for j in range(len(draws[0]))], 1) * 2 - 1
        scales = weather._plasma_scales(mapsize, weather.FOG[severity - 1][1], x.device)
        plasma = weather._plasma_fractal(units.float() * scales, mapsize)
        return weather._fog(x, severity, plasma)
    c = weather.SPATTER[severity - 1]
    return weather._spatter(x, severity, c[0] + c[1] * stack(0))


@pytest.mark.parametrize("name", NAMES)
def test_exact_given_the_same_draws(images, name, monkeypatch):
    # The reference's output is truncated to uint8 (up to 1/255 below ours): ~53-56 dB when all
    # else matches. Spatter's Canny / distance transform / equalisation are reproduced exactly too.
    sizes = [images, make_images(2, 48, 80, seed=1)]
    if name == "frost":
        sizes.append(make_images(2, 40, 600, seed=2))  # wider than most photos: they are scaled up
    for batch in sizes:
        for severity in range(1, 6):
            expected, draws = reference_with_draws(batch, name, severity, monkeypatch)
            ours = to_numpy(ours_with_draws(to_torch(batch), name, severity, draws))
            assert psnr(ours, expected) >= 40, (batch.shape, severity, psnr(ours, expected))


def test_opencv_steps_of_spatter():
    rng = np.random.default_rng(0)
    field = cv2.GaussianBlur(rng.normal(0.65, 0.3, (4, 64, 64)).transpose(1, 2, 0), (0, 0), 2).transpose(2, 0, 1)
    liquid = np.where(field < 0.66, 0, field * 255).astype(np.uint8)  # drops: steps and smooth slopes
    edges = weather._canny(torch.from_numpy(liquid).float(), 50, 150).numpy()
    assert all(np.array_equal(e, cv2.Canny(im, 50, 150) > 0) for e, im in zip(edges, liquid))
    dist = weather._chamfer_distance(torch.from_numpy(edges), 20).numpy()
    for d, e in zip(dist, edges):
        expected = np.minimum(cv2.distanceTransform((255 - 255 * e).astype(np.uint8), cv2.DIST_L2, 5), 20)
        np.testing.assert_allclose(d, expected, atol=1e-4)
    levels = rng.integers(3, 21, (2, 64, 64)).astype(np.uint8)
    equalised = weather._equalize_hist(torch.from_numpy(levels).float()).numpy()
    assert all(np.array_equal(e, cv2.equalizeHist(im)) for e, im in zip(equalised, levels))


def test_frost_photos_decoded_and_resized_like_opencv():
    for k, file in enumerate(weather.FROST_FILES):
        path = weather.importlib.resources.files("imagecorruptions") / "frost" / file
        original = cv2.imread(str(path))
        assert np.array_equal(weather._frost_original(k).permute(1, 2, 0).numpy()[..., ::-1], original)
        size = weather._frost_size(k, 64, 64)
        ours = weather._frost_photo(k, size, torch.device("cpu")).permute(1, 2, 0).numpy()[..., ::-1]
        theirs = cv2.resize(original, size[::-1], interpolation=cv2.INTER_CUBIC)
        # OpenCV's bicubic runs in fixed point: a few pixels in 10^4 are one level apart
        difference = np.abs(ours.astype(int) - theirs)
        assert ours.shape == theirs.shape and difference.max() <= 1 and (difference > 0).mean() < 1e-3


# ----------------------------------------------------------------------------- statistics


# The statistics are taken on the reference's float output (the function ``corrupt`` calls), before
# ``corrupt`` truncates it to uint8: that truncation lowers the change by ~0.5/255 on average,
# 1-3 % of the mean change of snow and spatter, as much as the differences looked for.
# Per-image values over DRAWS independent draws of each of the 3 images, at 64 x 64. Tolerances
# are ~4 standard errors of the difference of the two means (two-sample z-test, false alarm
# ~6e-5 per check), from the spread of the per-draw values measured on the reference: snow and fog
# vary by <= 10 % from draw to draw -> se <= 2 % (48 a side) -> 8 %; frost by ~40 % (six photos of
# different brightness) -> se 5.5 % (96 a side) -> 25 %; spatter by 50, 40, 21, 21, 16 % (a few
# drops or mud splashes on a small image) -> se 7.5, 6, 3, 3, 2 % (96 a side). The KS test checks
# the whole distribution of the per-draw mean change (frost's mixture of photos included).
DRAWS = {"snow": 16, "fog": 16, "frost": 32, "spatter": 32}
TOLERANCE = {"snow": (0.08,) * 5, "fog": (0.08,) * 5, "frost": (0.25,) * 5,
             "spatter": (0.30, 0.25, 0.15, 0.15, 0.12)}


def change_statistics(out: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per image: the mean absolute change and the spatial standard deviation of the change."""
    delta = out - clean
    return np.stack([np.abs(delta).mean(axis=(1, 2, 3)), delta.std(axis=(1, 2, 3))], axis=1)


@pytest.mark.parametrize("name", NAMES)
def test_statistics_match_reference(images, name, cached_imread):
    clean, draws = images / 255.0, DRAWS[name]
    x = to_torch(images).repeat(draws, 1, 1, 1)
    for severity in range(1, 6):
        ours = change_statistics(to_numpy(run(x, name, severity, seed=severity)), np.tile(clean, (draws, 1, 1, 1)))
        theirs = []
        for k in range(draws):
            np.random.seed(1000 * severity + k)
            out = [np.asarray(corruption_dict[name](Image.fromarray(im), severity), np.float64) for im in images]
            theirs.append(change_statistics(np.stack(out) / 255.0, clean))
        theirs = np.concatenate(theirs)
        relative = np.abs(ours.mean(0) / theirs.mean(0) - 1)
        assert (relative <= TOLERANCE[name][severity - 1]).all(), (severity, ours.mean(0), theirs.mean(0))
        assert ks_2samp(ours[:, 0], theirs[:, 0]).pvalue > 1e-3, severity


@pytest.mark.parametrize("name", NAMES)
def test_an_image_output_does_not_depend_on_its_batch(images, name):
    # per-image streams (as the worker processes use): a part of the batch gives the same images
    x = to_torch(images)
    for severity in (1, 5):
        whole = weather.CORRUPTIONS[name](x, severity, Streams([7, 8, 9]))
        part = weather.CORRUPTIONS[name](x[1:], severity, Streams([8, 9]))
        assert torch.equal(whole[1:], part), severity
