"""Heatmap stability under corruption: the heatmap of a corrupted image against that of the
clean image, for the same target class.

Per image (``clean`` and ``corrupted``: ``[N, H, W]`` heatmaps of the same images):

* ``rank_correlation``: Spearman's rho over the pixels (Pearson's r of the ranks, ties given
  their mean rank); NaN when either map is constant (no order to compare).
* ``top_iou``: intersection over union of the top-q share of pixels of each map (``q`` = 0.15:
  the 15% most salient pixels); ties at the threshold are broken by pixel order, so the region
  always holds exactly ``round(q * H * W)`` pixels.
* ``peak_shift_px`` and ``peak_shift``: distance between the two maxima (first in row-major
  order, as the pointing game takes it) in pixels, and as a share of the image diagonal.
* ``pointing_retained`` (with masks): 1 where the clean heatmap's maximum hits the object and
  the corrupted one's still does, 0 where it no longer does (a flat corrupted map has no maximum:
  0), NaN where the clean one missed (nothing to retain); its mean over hits is the pointing-game
  retention.
* ``flat``: 1 where the corrupted map is constant (a CAM whose class evidence vanished: ReLU of
  a negative sum is 0 everywhere), 0 otherwise. A flat map has no order, top region or peak,
  so :func:`stability` gives NaN for the three measures above on it (and on a flat clean map);
  their means are over the other images and ``flat`` says how many were left out.

:func:`summarize` gives each measure's mean over images with a 95% bootstrap interval
(:mod:`emca_vis.stats`, the same resamples for every measure).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from ..stats import LEVEL, RESAMPLES, SEED, percentile_intervals, resampled_means
from .metrics import _heatmaps, _masks, pointing_game

TOP_Q = 0.15
MEASURES = ("rank_correlation", "top_iou", "peak_shift_px", "peak_shift", "pointing_retained", "flat")


def _pair(clean, corrupted) -> tuple[np.ndarray, np.ndarray]:
    clean, corrupted = _heatmaps(clean, "clean heatmaps"), _heatmaps(corrupted, "corrupted heatmaps")
    if clean.shape != corrupted.shape:
        raise ValueError(f"clean and corrupted heatmaps differ in shape: {clean.shape} and {corrupted.shape}")
    return clean, corrupted


def rank_correlation(clean, corrupted) -> np.ndarray:
    """Spearman's rho per image ``[N]``; NaN where a map is constant."""
    clean, corrupted = _pair(clean, corrupted)
    n = len(clean)
    ranks = [rankdata(maps.reshape(n, -1), axis=1) for maps in (clean, corrupted)]
    centred = [r - r.mean(1, keepdims=True) for r in ranks]
    spread = np.sqrt((centred[0] ** 2).sum(1) * (centred[1] ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 0, (centred[0] * centred[1]).sum(1) / spread, np.nan)


def top_iou(clean, corrupted, q: float = TOP_Q) -> np.ndarray:
    """IoU of the top-``q`` pixels of each map, per image ``[N]``."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    clean, corrupted = _pair(clean, corrupted)
    n, pixels = len(clean), clean[0].size
    k = max(1, round(q * pixels))
    regions = []
    for maps in (clean, corrupted):
        # Stable sort of the negated values: the k largest, ties taken in pixel order.
        top = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")[:, :k]
        region = np.zeros((n, pixels), dtype=bool)
        np.put_along_axis(region, top, True, axis=1)
        regions.append(region)
    inter = (regions[0] & regions[1]).sum(1)
    return inter / (2 * k - inter)


def peak_shift(clean, corrupted) -> tuple[np.ndarray, np.ndarray]:
    """Distance between the maxima per image: (pixels ``[N]``, share of the image diagonal ``[N]``)."""
    clean, corrupted = _pair(clean, corrupted)
    n, height, width = clean.shape
    peaks = [np.stack(np.divmod(maps.reshape(n, -1).argmax(1), width), 1) for maps in (clean, corrupted)]
    pixels = np.hypot(*(peaks[0] - peaks[1]).T.astype(np.float64))
    return pixels, pixels / np.hypot(height, width)


def flat(maps) -> np.ndarray:
    """Per image ``[N]`` (bool): is the map constant?"""
    maps = _heatmaps(maps)
    return maps.reshape(len(maps), -1).max(1) == maps.reshape(len(maps), -1).min(1)


def stability(clean, corrupted, q: float = TOP_Q, masks=None, tolerance: int = 15) -> dict[str, np.ndarray]:
    """Every measure per image (see the module docstring); ``pointing_retained`` only with ``masks``
    (``[N, H, W]``; ``tolerance`` in pixels, as :func:`.metrics.pointing_game`)."""
    clean_maps, corrupted_maps = _pair(clean, corrupted)
    shift_px, shift = peak_shift(clean_maps, corrupted_maps)
    clean_flat, corrupted_flat = flat(clean_maps), flat(corrupted_maps)
    undefined = clean_flat | corrupted_flat
    found = {"rank_correlation": rank_correlation(clean_maps, corrupted_maps),
             "top_iou": np.where(undefined, np.nan, top_iou(clean_maps, corrupted_maps, q)),
             "peak_shift_px": np.where(undefined, np.nan, shift_px), "peak_shift": np.where(undefined, np.nan, shift)}
    if masks is not None:
        masks = _masks(masks, clean_maps.shape)
        before = pointing_game(clean_maps, masks, tolerance) & ~clean_flat
        after = pointing_game(corrupted_maps, masks, tolerance) & ~corrupted_flat
        found["pointing_retained"] = np.where(before, after.astype(np.float64), np.nan)
    found["flat"] = corrupted_flat.astype(np.float64)
    return found


def summarize(per_image: dict[str, np.ndarray], resamples: int = RESAMPLES, seed: int = SEED,
              level: float = LEVEL) -> dict[str, dict]:
    """``{measure: {"mean", "ci_low", "ci_high", "n"}}`` over the images where the measure is
    defined (NaN left out); the interval is a percentile bootstrap over those images, None
    (mean included) when no image has the measure."""
    found = {}
    for name, values in per_image.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            found[name] = {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
            continue
        low, high = percentile_intervals(resampled_means(values, resamples, seed), level)
        found[name] = {"mean": float(values.mean()), "ci_low": float(low), "ci_high": float(high),
                       "n": int(values.size)}
    return found
