"""Channel-scale statistics of every attention module, accumulated over a stream of batches.

Memory is bounded by the model, not the data: per module only sums over images are kept
(per channel, per class and channel, a histogram of scale values, and EMCA's per-source
contribution magnitudes).

Statistics per module (``z`` = channel scales in [0, 1], over images x channels):

* ``mean``, ``std`` of ``z``; ``frac_below_0.1``, ``frac_above_0.9`` ("decisiveness");
* ``entropy``: Shannon entropy (bits) of the histogram of ``z`` in ``BINS`` equal bins over
  [0, 1]: 0 when every scale is the same, log2(BINS) when spread evenly;
* per channel: mean and std over images, per-class means, and the class-selectivity index
  (Morcos et al., 2018): ``(mu_max - mu_rest) / (mu_max + mu_rest)`` with ``mu_max`` the
  largest class-conditional mean and ``mu_rest`` the mean of the other classes' means;
* EMCA modules: the per-scale weights ``w_r`` with source labels, and each source's share
  of the aggregated descriptor, ``mean |w_r * s_r|`` over images and channels, normalised to
  sum to 1 per module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..models import attention_modules, record_attention

BINS = 20


@dataclass
class _ModuleSums:
    stage: int
    block: int
    sources: list[str]
    channels: int
    classes: int
    n: int = 0
    sum: np.ndarray = field(init=False)
    sum_sq: np.ndarray = field(init=False)
    class_sum: np.ndarray = field(init=False)
    class_count: np.ndarray = field(init=False)
    histogram: np.ndarray = field(init=False)
    below: int = 0
    above: int = 0
    scale_weights: list[float] | None = None
    contribution: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.sum = np.zeros(self.channels)
        self.sum_sq = np.zeros(self.channels)
        self.class_sum = np.zeros((self.classes, self.channels))
        self.class_count = np.zeros(self.classes, dtype=np.int64)
        self.histogram = np.zeros(BINS, dtype=np.int64)


class AttentionStats:
    """Accumulates channel-scale statistics of one model over batches (:meth:`update`)."""

    def __init__(self, model: nn.Module, class_names: list[str]):
        self.model = model
        self.class_names = list(class_names)
        self.sums: dict[str, _ModuleSums] = {}

    @torch.no_grad()
    def update(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Run a batch through the model, accumulate; returns the logits."""
        self.model.eval()
        with record_attention(self.model) as records:
            logits = self.model(images)
        labels = labels.cpu().numpy()
        for name, record in records.items():
            z = record.scales.cpu().double().numpy()  # [N, C]
            sums = self.sums.get(name)
            if sums is None:
                sums = self.sums[name] = _ModuleSums(record.stage, record.block, record.sources, z.shape[1],
                                                     len(self.class_names))
            sums.n += len(z)
            sums.sum += z.sum(0)
            sums.sum_sq += (z * z).sum(0)
            np.add.at(sums.class_sum, labels, z)
            np.add.at(sums.class_count, labels, 1)
            sums.histogram += np.histogram(z, bins=BINS, range=(0.0, 1.0))[0]
            sums.below += int((z < 0.1).sum())
            sums.above += int((z > 0.9).sum())
            if record.scale_weights is not None:
                sums.scale_weights = [float(w) for w in record.scale_weights]
                # |w_r s_r| summed over images, channels (and SRM's two statistics): [R]
                magnitude = record.contributions.abs().double().flatten(0, -2).sum(0).cpu().numpy()
                sums.contribution = magnitude if sums.contribution is None else sums.contribution + magnitude
        return logits

    def result(self) -> dict:
        """All numbers as a JSON-ready dict, modules in forward order."""
        modules = []
        for name, s in self.sums.items():
            mean = s.sum / s.n
            std = np.sqrt(np.maximum(s.sum_sq / s.n - mean ** 2, 0))
            values = s.n * s.channels
            overall_mean = s.sum.sum() / values
            overall_std = math.sqrt(max(s.sum_sq.sum() / values - overall_mean ** 2, 0))
            seen = s.class_count > 0
            class_mean = np.where(seen[:, None], s.class_sum / np.maximum(s.class_count, 1)[:, None], np.nan)
            entry = {
                "name": name, "stage": s.stage, "block": s.block, "channels": s.channels, "images": s.n,
                "mean": overall_mean, "std": overall_std, "entropy": histogram_entropy(s.histogram),
                "frac_below_0.1": s.below / values, "frac_above_0.9": s.above / values,
                "histogram": s.histogram.tolist(),
                "channel_mean": mean.tolist(), "channel_std": std.tolist(),
                "class_mean": [row.tolist() if ok else None for row, ok in zip(class_mean, seen)],
                "class_selectivity": class_selectivity(class_mean[seen]).tolist(),
                "sources": s.sources,
            }
            if s.scale_weights is not None:
                share = s.contribution / s.contribution.sum() if s.contribution.sum() > 0 else s.contribution
                entry["scale_weights"] = s.scale_weights
                entry["source_share"] = share.tolist()
            modules.append(_plain(entry))
        return {"class_names": self.class_names, "modules": modules}


def histogram_entropy(counts) -> float:
    p = np.asarray(counts, dtype=float)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def class_selectivity(class_mean: np.ndarray) -> np.ndarray:
    """Per-channel selectivity from class-conditional means ``[K, C]`` (K >= 2 classes seen)."""
    if len(class_mean) < 2:
        return np.zeros(class_mean.shape[1])
    top = class_mean.max(0)
    rest = (class_mean.sum(0) - top) / (len(class_mean) - 1)
    return np.where(top + rest > 0, (top - rest) / np.maximum(top + rest, 1e-12), 0.0)


def _plain(value):
    """numpy scalars -> Python floats, recursively (JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def analyse(model: nn.Module, class_names: list[str], batches, total: int | None = None, desc: str = "") -> dict:
    """Statistics over an iterable of ``(images, labels)`` batches, with a progress bar."""
    if not attention_modules(model):
        return {"class_names": list(class_names), "modules": []}
    stats = AttentionStats(model, class_names)
    for images, labels in tqdm(batches, total=total, desc=desc, leave=False):
        stats.update(images, labels)
    return stats.result()
