"""Heatmap stability measures against hand-made maps with known answers."""

import numpy as np
import pytest

from emca_vis.explain import stability


def _blob(size, row, col, sigma=3.0):
    y, x = np.mgrid[:size, :size]
    return np.exp(-((y - row) ** 2 + (x - col) ** 2) / (2 * sigma ** 2))


def test_identical_maps_are_perfectly_stable():
    maps = np.stack([_blob(32, 10, 12), _blob(32, 20, 5)])
    found = stability.stability(maps, maps.copy())
    assert found["rank_correlation"] == pytest.approx([1.0, 1.0])
    assert found["top_iou"] == pytest.approx([1.0, 1.0])
    assert found["peak_shift_px"].tolist() == [0.0, 0.0] and found["peak_shift"].tolist() == [0.0, 0.0]


def test_a_shifted_blob_moves_the_peak_by_the_shift():
    clean = _blob(40, 10, 10)[None]
    corrupted = _blob(40, 13, 14)[None]  # 3 down, 4 right: 5 pixels
    pixels, share = stability.peak_shift(clean, corrupted)
    assert pixels.tolist() == [5.0]
    assert share == pytest.approx([5 / np.hypot(40, 40)])
    found = stability.stability(clean, corrupted)
    assert 0 < found["top_iou"][0] < 1 and found["rank_correlation"][0] < 1


def test_rank_correlation_by_hand():
    clean = np.arange(16, dtype=float).reshape(1, 4, 4)
    assert stability.rank_correlation(clean, -clean) == pytest.approx([-1.0])  # order reversed
    assert stability.rank_correlation(clean, clean ** 3) == pytest.approx([1.0])  # any increasing map
    # ranks 1..4 against 1, 3, 2, 4: rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert stability.rank_correlation([[[1, 2, 3, 4]]], [[[1, 3, 2, 4]]]) == pytest.approx([0.8])
    assert np.isnan(stability.rank_correlation(clean, np.zeros_like(clean))[0])  # a constant map has no order


def test_top_iou_by_hand():
    # 10 pixels, q = 0.2: the 2 largest of each; one shared -> IoU 1 / 3
    clean = np.array([[[9, 8, 0, 0, 0, 0, 0, 0, 0, 0]]], dtype=float)
    corrupted = np.array([[[9, 0, 8, 0, 0, 0, 0, 0, 0, 0]]], dtype=float)
    assert stability.top_iou(clean, corrupted, q=0.2) == pytest.approx([1 / 3])
    assert stability.top_iou(clean, clean, q=0.2) == pytest.approx([1.0])
    with pytest.raises(ValueError, match="q must be in"):
        stability.top_iou(clean, clean, q=0)


def test_pointing_retention_counts_only_clean_hits():
    masks = np.zeros((3, 20, 20), dtype=bool)
    masks[:, 2:6, 2:6] = True
    clean = np.stack([_blob(20, 3, 3), _blob(20, 3, 3), _blob(20, 15, 15)])  # hit, hit, miss
    corrupted = np.stack([_blob(20, 4, 4), _blob(20, 16, 16), _blob(20, 3, 3)])  # kept, lost, (irrelevant)
    found = stability.stability(clean, corrupted, masks=masks, tolerance=0)
    assert found["pointing_retained"][:2].tolist() == [1.0, 0.0] and np.isnan(found["pointing_retained"][2])
    summary = stability.summarize(found, resamples=200)
    assert summary["pointing_retained"]["mean"] == 0.5 and summary["pointing_retained"]["n"] == 2


def test_summary_intervals_bracket_the_mean():
    rng = np.random.default_rng(0)
    values = {"top_iou": rng.random(100), "rank_correlation": np.full(50, np.nan)}
    summary = stability.summarize(values, resamples=500)
    iou = summary["top_iou"]
    assert iou["ci_low"] < iou["mean"] < iou["ci_high"] and iou["n"] == 100
    assert iou["ci_high"] - iou["ci_low"] == pytest.approx(2 * 1.96 * values["top_iou"].std() / 10, rel=0.2)
    assert summary["rank_correlation"] == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}


def test_shapes_must_match():
    with pytest.raises(ValueError, match="differ in shape"):
        stability.stability(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))
