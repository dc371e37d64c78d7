"""Torch noise / digital corruptions: contract, and fidelity to the reference ``imagecorruptions``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from imagecorruptions import corrupt
from scipy.ndimage import map_coordinates
from skimage.color import hsv2rgb, rgb2hsv
from skimage.filters import gaussian

from emca_vis.robustness import noise_digital as nd

NAMES = list(nd.CORRUPTIONS)
DETERMINISTIC = ["brightness", "contrast", "saturate", "pixelate", "jpeg_compression"]
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "elastic_transform"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (capped at 120 dB for identical images)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(1 / max(np.mean((a - b) ** 2), 1e-12)))


def make_images(n: int = 3, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 ``[n, h, w, 3]``: a smooth colourful gradient, a random-coloured square, a grey bar
    and a black disc (grey and black exercise the HSV special cases)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for i in range(n):
        im = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + 3 * yy + i)], -1)
        im[h // 6 : h // 2, w // 6 : w // 2] = rng.random(3)
        im[int(h * 0.6) : int(h * 0.85), int(w * 0.55) : int(w * 0.9)] = 0.5
        im[(yy - 0.75 * h / max(h, w)) ** 2 + (xx - 0.25 * w / max(h, w)) ** 2 < 0.01] = 0
        out.append((im * 255).round().astype(np.uint8))
    return np.stack(out)


def to_torch(images: np.ndarray, device: str = "cpu") -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)


def to_numpy(images: torch.Tensor) -> np.ndarray:
    return images.detach().cpu().permute(0, 2, 3, 1).double().numpy()


def reference(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    np.random.seed(seed)
    return np.stack([corrupt(im, corruption_name=name, severity=severity) for im in images]) / 255.0


def run(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    return nd.CORRUPTIONS[name](images, severity, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_images()


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_contract(images, name, device):
    x = to_torch(images, device)
    changes = []
    for severity in range(1, 6):
        out = run(x, name, severity)
        assert out.shape == x.shape and out.dtype == torch.float32 and out.device == x.device
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, run(x, name, severity)), "same seed must give the same output"
        changes.append((out - x).abs().mean().item())
    assert min(changes) > 1e-3, changes
    if name != "saturate":
        # saturate is not monotonic in the reference either: severities 1-2 desaturate (x0.3, x0.1),
        # 3-5 oversaturate (x2, x5 + 0.1, x20 + 0.2), so severity 2 changes more than 3.
        assert all(b >= a - 1e-6 for a, b in zip(changes, changes[1:])), changes


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True])
def test_bad_severity(images, name, severity):
    with pytest.raises(ValueError, match="severity must be 1-5"):
        nd.CORRUPTIONS[name](to_torch(images[:1]), severity)


def test_random_seeds_differ(images):
    x = to_torch(images[:1])
    for name in RANDOM:
        assert not torch.equal(run(x, name, 3, seed=0), run(x, name, 3, seed=1)), name


def test_without_generator(images):
    x = to_torch(images[:1])
    for name in NAMES:
        assert nd.CORRUPTIONS[name](x, 2).shape == x.shape, name


# ----------------------------------------------------------------------------- fidelity


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_match_reference(images, name):
    x = to_torch(images)
    for severity in range(1, 6):
        value = psnr(to_numpy(run(x, name, severity)), reference(images, name, severity))
        assert value >= 30, (name, severity, value)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_match_reference_odd_size(name):
    # Non-square, non-divisible size: pixelate's box weights / nearest indices, JPEG padding.
    images = make_images(1, 37, 50, seed=1)
    for severity in (1, 5):
        value = psnr(to_numpy(run(to_torch(images), name, severity)), reference(images, name, severity))
        assert value >= 30, (name, severity, value)


# Random corruptions: the mean absolute change from the clean image, over the same 3 images,
# torch vs reference (numpy seeded; impulse_noise's reference draws from an unseeded generator).
# Measured spread between runs (40 seeds): <= 0.5% for the Gaussian / Poisson / speckle noises,
# ~2% for elastic_transform (few independent displacement blobs on 64 px), ~3% for impulse_noise
# at severity 1 (~1100 hit values, binomial). The tolerances are ~5 sigma of the difference of
# two such runs; a wrong parameter table entry moves these statistics by >= 20%.
TOLERANCE = {"gaussian_noise": 0.05, "shot_noise": 0.05, "speckle_noise": 0.05, "impulse_noise": 0.2,
             "elastic_transform": 0.1}


@pytest.mark.parametrize("name", RANDOM)
def test_random_statistics_match_reference(images, name):
    x = to_torch(images)
    clean = images / 255.0
    seeds = range(3) if name == "elastic_transform" else range(1)  # averaged: fewer blobs per run
    for severity in range(1, 6):
        ours = np.mean([np.abs(to_numpy(run(x, name, severity, s)) - clean).mean() for s in seeds])
        theirs = np.mean([np.abs(reference(images, name, severity, s) - clean).mean() for s in seeds])
        assert abs(ours / theirs - 1) <= TOLERANCE[name], (name, severity, ours, theirs)


def test_impulse_noise_hit_fraction(images):
    """Fraction of values the noise touches (set to 0 or 1 where they were not), per severity."""
    x = to_torch(images)
    clean = images / 255.0
    for severity, amount in enumerate(nd.IMPULSE_NOISE, 1):
        ours = to_numpy(run(x, "impulse_noise", severity))
        theirs = reference(images, "impulse_noise", severity)
        f_ours, f_theirs = (np.mean((o != clean) & ((o == 0) | (o == 1))) for o in (ours, theirs))
        # binomial: 5 standard errors of the difference of two independent fractions
        n = clean.size
        assert abs(f_ours - f_theirs) <= 5 * np.sqrt(2 * amount * (1 - amount) / n), (severity, f_ours, f_theirs)
        # salt and pepper in equal parts, among values that are neither 0 nor 1 to begin with
        inside = (clean > 0) & (clean < 1)
        salt, pepper = np.mean(ours[inside] == 1), np.mean(ours[inside] == 0)
        assert abs(salt - pepper) <= 5 * np.sqrt(amount / inside.sum()), (severity, salt, pepper)


def test_gaussian_noise_std(images):
    """Noise std on mid-tone values (no clipping within 3 sigma at severity 1)."""
    x = to_torch(images)
    noise = (run(x, "gaussian_noise", 1) - x)[(x > 0.3) & (x < 0.7)]
    assert abs(noise.std().item() / nd.GAUSSIAN_NOISE[0] - 1) < 0.05


def test_elastic_pipeline_matches_reference():
    """Given the reference's own random fields, the torch blur and warp reproduce it exactly."""
    image = make_images(1, 48, 64, seed=2)[0]
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    max_d = h * 0.005
    for severity in (1, 5):
        alpha = nd.ELASTIC_ALPHA[severity - 1]
        noise = rng.uniform(-max_d, max_d, size=(2, h, w))
        sigma = np.array([h, w]) * 0.01
        dx, dy = ((gaussian(u, sigma, mode="reflect", truncate=3) * alpha).astype(np.float32) for u in noise)
        fields = nd.gaussian_blur_reflect(torch.from_numpy(noise)[None], (h * 0.01, w * 0.01)) * alpha
        np.testing.assert_allclose(fields[0, 0].float().numpy(), dx, atol=1e-5)
        np.testing.assert_allclose(fields[0, 1].float().numpy(), dy, atol=1e-5)

        img = image / 255.0
        x, y, z = np.meshgrid(np.arange(w), np.arange(h), np.arange(3))
        coords = (y + dy[..., None]).reshape(-1), (x + dx[..., None]).reshape(-1), z.reshape(-1)
        expected = np.clip(map_coordinates(img, coords, order=1, mode="reflect").reshape(img.shape), 0, 1)
        out = nd.warp_reflect(to_torch(image[None]), torch.from_numpy(dx)[None], torch.from_numpy(dy)[None])
        assert psnr(to_numpy(out.clamp(0, 1))[0], expected) > 60


def test_hsv_matches_skimage():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(1, 3, 16, 16)).astype(np.float64)
    rgb[0, :, 0, :4] = [[0], [0], [0]]  # black
    rgb[0, :, 1, :4] = [[128], [128], [128]]  # grey
    rgb[0, :, 2, :4] = [[200], [200], [10]]  # red and green tie
    rgb[0, :, 3, :4] = [[10], [200], [200]]  # green and blue tie
    rgb /= 255
    hsv = nd.rgb_to_hsv(torch.from_numpy(rgb).float())
    expected = rgb2hsv(rgb[0].transpose(1, 2, 0))
    np.testing.assert_allclose(hsv[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    back = nd.hsv_to_rgb(torch.from_numpy(expected.transpose(2, 0, 1)[None]).float())
    np.testing.assert_allclose(back[0].permute(1, 2, 0).numpy(), hsv2rgb(expected), atol=1e-6)


def test_poisson_levels_is_the_cdf_inversion_of_its_uniforms():
    """Each count is the least k with u < F(k) for the value's own uniform (checked against a
    plain search of the CDF), and the counts follow the Poisson pmf (chi-square, 1.2M draws)."""
    from emca_vis.robustness import sampling

    rates = torch.tensor([0.0, 0.7, 3.0, 12.0, 60.0])
    levels = torch.arange(5).repeat_interleave(240_000).view(5, 1, 240_000, 1).float()
    counts = sampling.poisson_levels(levels, rates, torch.Generator().manual_seed(3))
    u = sampling.uniform(levels.shape, torch.Generator().manual_seed(3), "cpu").double()
    k = torch.arange(200, dtype=torch.float64)
    for level, lam in enumerate(rates.double().tolist()):
        pmf = (torch.xlogy(k, torch.tensor(lam, dtype=torch.float64)) - lam - torch.lgamma(k + 1)).exp()
        cdf = pmf.cumsum(0)
        ours = counts[level].flatten()
        assert torch.equal(ours[:5000], torch.searchsorted(cdf, u[level].flatten()[:5000], right=True).float())
        observed = torch.bincount(ours.long(), minlength=200)[:200].double()
        expected = pmf * ours.numel()
        cells = expected > 5
        chi2 = float((((observed - expected) ** 2 / expected)[cells]).sum())
        df = int(cells.sum()) - 1
        assert chi2 <= df + 5 * (2 * df) ** 0.5 + 1, (lam, chi2, df)  # 5 standard deviations
    assert counts[0].max() == 0


@pytest.mark.parametrize("size", [(64, 64), (37, 50)])
def test_pixelate_tensor_emulation_equals_pillow(size):
    # The accelerator path emulates Pillow in tensor ops; the CPU path is Pillow itself.
    images = to_torch(make_images(2, *size, seed=3))
    for severity in range(1, 6):
        c = nd.PIXELATE[severity - 1]
        emulated = nd._pixelate_tensor(nd._to_uint8(images), int(size[0] * c), int(size[1] * c))
        assert torch.equal(emulated, nd.pixelate(images, severity)), severity


def test_poisson_levels_scales_and_caps():
    """``scale`` and ``top`` give min(count * scale, top) of the same draws, walked values included."""
    from emca_vis.robustness import sampling

    rates = torch.arange(256, dtype=torch.float64) * (60 / 255)
    levels = torch.arange(256).repeat(2, 3, 200).view(2, 3, 200, 256).float()
    counts = sampling.poisson_levels(levels, rates, torch.Generator().manual_seed(5))
    scaled = sampling.poisson_levels(levels, rates, torch.Generator().manual_seed(5), 1 / 60, 1.0)
    torch.testing.assert_close(scaled, (counts / 60).clamp(max=1), rtol=1e-6, atol=1e-7)


def test_sparse_hits_are_independent_fair_bernoulli():
    """Hit rate p, fair coins, no dependence between neighbours (pairs hit at p^2), and an image's
    hits do not depend on the batch it is drawn in."""
    from emca_vis.robustness import sampling

    shape = (4, 3, 200, 200)
    per_image = 3 * 200 * 200
    for p in (0.03, 0.27):
        index, coin = sampling.hits(shape, p, sampling.Streams([7, 8, 9, 10]), "cpu")
        hit = torch.zeros(shape).view(-1)
        hit[index] = 1
        n = hit.numel()
        assert abs(hit.mean().item() - p) <= 5 * (p * (1 - p) / n) ** 0.5, p
        assert abs(coin.float().mean().item() - 0.5) <= 5 * (0.25 / coin.numel()) ** 0.5, p
        pairs = (hit[:-1] * hit[1:]).mean().item()
        assert abs(pairs - p * p) <= 5 * (p * p / n) ** 0.5, (p, pairs)
        alone, alone_coin = sampling.hits((1,) + shape[1:], p, sampling.Streams([9]), "cpu")
        third = (index >= 2 * per_image) & (index < 3 * per_image)
        assert torch.equal(index[third] - 2 * per_image, alone) and torch.equal(coin[third], alone_coin)


def test_brightness_is_the_hsv_round_trip(images):
    """The closed form equals adding c to the HSV value through :func:`rgb_to_hsv` / :func:`hsv_to_rgb`
    (black, grey and saturated pixels included)."""
    x = to_torch(images)
    x[:, :, :2] = 0
    x[:, 0, 2:4] = 1
    for severity, c in enumerate(nd.BRIGHTNESS, 1):
        hsv = nd.rgb_to_hsv(x)
        hsv = torch.cat((hsv[:, :2], (hsv[:, 2:] + c).clamp(0, 1)), 1)
        torch.testing.assert_close(nd.brightness(x, severity), nd.hsv_to_rgb(hsv).clamp(0, 1), rtol=0, atol=2e-6)


@pytest.mark.parametrize("size,sigma", [((37, 50), (2.5, 3.7)), ((224, 224), (2.24, 2.24)), ((5, 90), (2.0, 9.0))])
def test_banded_blur_matches_skimage(size, sigma):
    """The blockwise banded blur equals skimage's reflect-mode Gaussian, sizes not a multiple of the
    block and kernels wider than a short side included."""
    noise = np.random.default_rng(4).uniform(-1, 1, size=(2,) + size)
    ours = nd.gaussian_blur_reflect(torch.from_numpy(noise)[None], sigma)[0].numpy()
    for field, expected in zip(ours, noise):
        np.testing.assert_allclose(field, gaussian(expected, sigma, mode="reflect", truncate=3), atol=1e-12)


def test_normals_are_standard_and_per_image():
    """Box-Muller normals: the standard normal CDF (1M draws, odd sizes included), and an image's
    normals do not depend on the batch they are drawn in."""
    from scipy.stats import norm

    from emca_vis.robustness import sampling

    z = sampling.normal((4, 3, 301, 277), sampling.Streams([1, 2, 3, 4]), "cpu")
    values = np.sort(z.double().numpy().ravel())
    grid = np.linspace(-4, 4, 33)
    cdf = norm.cdf(grid)
    error = (np.searchsorted(values, grid) / values.size - cdf) / np.sqrt(cdf * (1 - cdf) / values.size)
    assert np.abs(error).max() < 5, error
    alone = sampling.normal((1, 3, 301, 277), sampling.Streams([3]), "cpu")
    assert torch.equal(z[2:3], alone)
    assert sampling.normal((2, 1), sampling.Streams([5, 6]), "cpu").shape == (2, 1)
