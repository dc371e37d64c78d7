"""Heatmap stability of several models over corrupted batches, and its summaries.

:class:`StabilityPass` is fed batch by batch: the clean images once (their heatmaps are kept),
then every corrupted version of the same batch; it keeps each image's measures
(:func:`.stability.stability`) per model, method, corruption and severity. Both
``python -m emca_vis.gradcam stability`` and ``python -m emca_vis.robustness --stability`` use it,
so the two report the same numbers for the same corrupted images.

The heatmaps explain the ground-truth class, in the clean and in the corrupted image (the
target the pointing game and ``gradcam evaluate`` use): a changed prediction must not count as
a changed explanation.

:func:`aggregate` turns the per-image measures into means with 95% percentile-bootstrap
intervals over images: per cell (corruption, severity), per corruption family (ImageNet-C's
noise / blur / weather / digital; each image's mean over the family's cells first) overall and
per severity. :func:`pairs` compares models on the same images (paired bootstrap of the
difference of family means, :func:`emca_vis.stats.difference`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..robustness.metrics import FAMILIES
from ..stats import RESAMPLES, SEED, difference
from .heatmaps import heatmaps
from .metrics import POINTING_TOLERANCE, pointing_tolerance
from .stability import TOP_Q, stability, summarize

# ImageNet-C's four held-out corruptions belong to these families (Hendrycks & Dietterich, appendix).
EXTRA_FAMILIES = {"speckle_noise": "noise", "gaussian_blur": "blur", "spatter": "weather", "saturate": "digital"}
COMPARED = ("rank_correlation", "top_iou", "peak_shift", "pointing_retained", "flat")  # peak_shift_px is the same ranking


def family_of(corruption: str) -> str:
    for family, members in FAMILIES.items():
        if corruption in members:
            return family
    return EXTRA_FAMILIES[corruption]


def families(corruptions: Sequence[str]) -> dict[str, list[str]]:
    """``{family: [corruptions]}`` of ``corruptions``, families in ImageNet-C's order."""
    found: dict[str, list[str]] = {}
    for family in FAMILIES:
        members = [c for c in corruptions if family_of(c) == family]
        if members:
            found[family] = members
    return found


class StabilityPass:
    """Per-image stability measures, accumulated over batches (see the module docstring).

    ``tolerance``: the pointing game's, in pixels at 224 px, scaled to each model's input
    (:func:`.metrics.pointing_tolerance`: 15 px is 4.29 px at 64 px).
    """

    def __init__(self, methods: Sequence[str] = ("gradcam",), layer: str = "layer4", q: float = TOP_Q,
                 tolerance: float = POINTING_TOLERANCE, batch_size: int = 32):
        self.methods, self.layer, self.q = list(methods), layer, q
        self.tolerance, self.batch_size = tolerance, batch_size
        self._clean: dict[tuple, tuple] = {}  # (label, method, batch) -> (maps, targets, masks, indices)
        self._found: dict[tuple, dict[int, dict[str, np.ndarray]]] = {}  # (label, method, c, s) -> batch -> measures

    def tolerance_for(self, loaded) -> float:
        return pointing_tolerance(loaded.input_size, self.tolerance)

    def _maps(self, loaded, pixels: torch.Tensor, targets: list[int], method: str) -> np.ndarray:
        return heatmaps(loaded.model, loaded.normalise(pixels), targets, method, self.layer,
                        batch_size=self.batch_size)

    def clean(self, loaded, batch: int, indices: list[int], pixels: torch.Tensor, targets: list[int],
              masks: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Heatmaps of the clean images ``pixels`` (``[B, 3, S, S]`` in [0, 1]) per method, kept for the batch."""
        found = {}
        for method in self.methods:
            maps = self._maps(loaded, pixels, targets, method)
            self._clean[(loaded.label, method, batch)] = (maps, list(targets), masks, list(indices))
            found[method] = maps
        return found

    def corrupted(self, loaded, batch: int, corruption: str, severity: int,
                  pixels: torch.Tensor) -> dict[str, np.ndarray]:
        """Heatmaps of a corrupted version of a clean batch, scored against the clean ones."""
        found = {}
        for method in self.methods:
            clean, targets, masks, _ = self._clean[(loaded.label, method, batch)]
            maps = self._maps(loaded, pixels, targets, method)
            measures = stability(clean, maps, self.q, masks, self.tolerance_for(loaded))
            self._found.setdefault((loaded.label, method, corruption, severity), {})[batch] = measures
            found[method] = maps
        return found

    def indices(self, label: str, method: str) -> list[int]:
        """The images seen so far, in the order :meth:`cell` returns their measures."""
        batches = sorted(b for (lab, m, b) in self._clean if (lab, m) == (label, method))
        return [i for b in batches for i in self._clean[(label, method, b)][3]]

    def cell(self, label: str, method: str, corruption: str, severity: int) -> dict[str, np.ndarray]:
        """``{measure: [n]}`` of one cell, the batches in order."""
        parts = self._found[(label, method, corruption, severity)]
        batches = sorted(parts)
        return {name: np.concatenate([parts[b][name] for b in batches]) for name in parts[batches[0]]}


def _nanmean(stacked: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # an image with no defined value (retention after a clean miss) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stacked, axis=0)


def family_values(cells: dict[tuple[str, int], dict[str, np.ndarray]], members: Sequence[str],
                  severities: Sequence[int]) -> dict[str, np.ndarray]:
    """Each image's mean of each measure over the cells of ``members`` x ``severities`` (NaN left out)."""
    chosen = [cells[(c, s)] for c in members for s in severities]
    return {name: _nanmean(np.stack([cell[name] for cell in chosen])) for name in chosen[0]}


def aggregate(cells: dict[tuple[str, int], dict[str, np.ndarray]], corruptions: Sequence[str],
              severities: Sequence[int], resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """One model and method: ``{"cells": {c: {s: summary}}, "families": {family: {"all": summary,
    "severities": {s: summary}}}}``, each summary ``{measure: {mean, ci_low, ci_high, n}}``."""
    found = {"cells": {c: {str(s): summarize(cells[(c, s)], resamples, seed) for s in severities}
                       for c in corruptions}, "families": {}}
    for family, members in families(corruptions).items():
        found["families"][family] = {
            "corruptions": members,
            "all": summarize(family_values(cells, members, severities), resamples, seed),
            "severities": {str(s): summarize(family_values(cells, members, [s]), resamples, seed)
                           for s in severities}}
    return found


def pairs(per_model: dict[str, dict[tuple[str, int], dict[str, np.ndarray]]], corruptions: Sequence[str],
          severities: Sequence[int], resamples: int = RESAMPLES, seed: int = SEED) -> list[dict]:
    """Every pair of models, every family and compared measure: the paired bootstrap of the
    difference of the family means (first minus second) over the images where both are defined."""
    labels, found = list(per_model), []
    grouped = families(corruptions)
    values = {label: {family: family_values(per_model[label], members, severities)
                      for family, members in grouped.items()} for label in labels}
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            for family in grouped:
                for measure in COMPARED:
                    if measure not in values[a][family]:
                        continue
                    x, y = values[a][family][measure], values[b][family][measure]
                    both = np.isfinite(x) & np.isfinite(y)
                    if not both.any():
                        continue
                    found.append({"a": a, "b": b, "family": family, "measure": measure,
                                  **difference(x[both], y[both], resamples, seed)})
    return found
