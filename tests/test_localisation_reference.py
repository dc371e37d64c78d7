"""The pointing game and the energy pointing game against their reference implementations:
TorchRay's pointing-game test (its formula, restated with torch), Quantus' PointingGame and
RelevanceMassAccuracy (a test dependency) where the definitions agree, and where they differ."""

import warnings

import numpy as np
import pytest
import torch

from emca_vis.explain.metrics import energy_pointing_game, per_class_mean, pointing_game, pointing_tolerance

quantus = pytest.importorskip("quantus")


def _torchray_hit(mask: torch.Tensor, point: tuple[int, int], tolerance: float) -> bool:
    """TorchRay's PointingGame.evaluate: (u, v) = (column, row); a disc of radius tolerance, strict."""
    v, u = torch.meshgrid((torch.arange(mask.shape[0], dtype=torch.float32) - point[1]) ** 2,
                          (torch.arange(mask.shape[1], dtype=torch.float32) - point[0]) ** 2, indexing="ij")
    return bool((mask & ((v + u) < tolerance ** 2)).view(-1).any())


def _torchray_point(saliency: torch.Tensor) -> tuple[int, int]:
    """TorchRay's _saliency_to_point for one map: argmax of the flattened map, as (column, row)."""
    index = int(torch.argmax(saliency.reshape(-1)))
    return index % saliency.shape[1], index // saliency.shape[1]


def _random_case(rng, n=60, size=24):
    """Noisy maps whose peak lies near a small box mask (0-6 px outside or on it)."""
    maps = rng.random((n, size, size))
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        r, c = rng.integers(4, size - 8, 2)
        h, w = rng.integers(1, 5, 2)
        masks[i, r:r + h, c:c + w] = True
        pr, pc = np.clip([r + rng.integers(-3, 7), c + rng.integers(-3, 7)], 0, size - 1)
        maps[i, pr, pc] = 2.0
    return maps, masks


@pytest.mark.parametrize("tolerance", [1, 2, 3, 4.29, 5, 15])
def test_pointing_game_is_torchrays(tolerance):
    maps, masks = _random_case(np.random.default_rng(7))
    ours = pointing_game(maps, masks, tolerance)
    theirs = [_torchray_hit(torch.from_numpy(m), _torchray_point(torch.from_numpy(h)), tolerance)
              for h, m in zip(maps, masks)]
    assert ours.tolist() == theirs
    assert 0 < ours.sum() and (ours.sum() < len(ours) or tolerance == 15)  # the cases discriminate


def test_tolerance_scales_with_the_input():
    assert pointing_tolerance(224) == 15 and pointing_tolerance(64) == pytest.approx(4.2857, abs=1e-4)
    assert pointing_tolerance(448, 10) == 20


def test_pointing_game_agrees_with_quantus_without_tolerance_and_ties():
    maps, masks = _random_case(np.random.default_rng(3))  # one maximum each
    metric = quantus.PointingGame(disable_warnings=True)
    theirs = metric(model=None, x_batch=np.zeros((60, 1, 24, 24)), y_batch=np.zeros(60, int),
                    a_batch=maps[:, None], s_batch=masks[:, None].astype(float))
    ours = pointing_game(maps, masks, tolerance=1)  # Quantus has no tolerance: the peak on the mask itself
    assert ours.tolist() == [bool(t) for t in theirs] and 0 < ours.sum() < 60


def test_where_quantus_pointing_game_differs():
    heatmap = np.zeros((2, 8, 8))
    heatmap[:, 1, 6] = heatmap[:, 6, 1] = 1.0  # two maxima; (1, 6) is first in row-major order
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 5:, :3] = True  # holds only the second maximum
    metric = quantus.PointingGame(disable_warnings=True)
    theirs = metric(model=None, x_batch=np.zeros((2, 1, 8, 8)), y_batch=np.zeros(2, int), a_batch=heatmap[:, None],
                    s_batch=masks[:, None].astype(float))
    # Quantus: any maximal pixel on the mask is a hit, and an empty mask (its NaN written into a
    # bool array) counts as a hit too. Here: the first maximum only, and an empty mask is refused.
    assert [bool(t) for t in theirs] == [True, True]
    assert not pointing_game(heatmap[:1], masks[:1], tolerance=1)[0]
    with pytest.raises(ValueError, match="empty mask"):
        pointing_game(heatmap[1:], masks[1:])


def test_energy_pointing_game_agrees_with_quantus_relevance_mass():
    maps, masks = _random_case(np.random.default_rng(5), n=30)
    metric = quantus.RelevanceMassAccuracy(disable_warnings=True)
    theirs = metric(model=None, x_batch=np.zeros((30, 1, 24, 24)), y_batch=np.zeros(30, int), a_batch=maps[:, None],
                    s_batch=masks[:, None].astype(float))
    np.testing.assert_allclose(energy_pointing_game(maps, masks), theirs, rtol=1e-10)
    # They differ on negative values: clipped to 0 here (Score-CAM's maps are non-negative).
    signed = maps - 0.5
    unnormalised = quantus.RelevanceMassAccuracy(normalise=False, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = unnormalised(model=None, x_batch=np.zeros((30, 1, 24, 24)), y_batch=np.zeros(30, int),
                           a_batch=signed[:, None], s_batch=masks[:, None].astype(float))
    assert not np.allclose(energy_pointing_game(signed, masks), raw)


def test_per_class_mean_by_hand():
    # class 0: 1 of 4 hit; class 1: 2 of 2 hit -> per class (0.25 + 1) / 2 = 0.625; per image 3 / 6 = 0.5
    hits = np.array([1, 0, 0, 0, 1, 1], dtype=float)
    labels = np.array([0, 0, 0, 0, 1, 1])
    found = per_class_mean(hits, labels, resamples=500)
    assert found["mean"] == 0.625 and found["classes"] == 2
    assert 0.0 <= found["ci_low"] < 0.625 < found["ci_high"] <= 1.0
    with pytest.raises(ValueError, match="one label per score"):
        per_class_mean(hits, labels[:3])
