"""Paired statistics for comparing models on the same images.

* Bootstrap (Efron & Tibshirani, 1993, percentile intervals): images are resampled with
  replacement and every statistic of a comparison (both models and, for CE, the baseline that
  normalises it) is computed on the same resampled images, so the interval of a difference
  keeps the pairing. Resamples are drawn as per-image counts, so a mean over all resamples is
  one matrix product (:func:`resampled_means`); a fixed seed makes them reproducible.
* McNemar's exact test (McNemar, 1947): for top-1 on one split, only the images where exactly
  one model is right carry information; under "equally accurate" their split is
  Binomial(discordant, 1/2) (two-sided exact p-value from ``scipy.stats.binomtest``).

Per-image correctness travels in results files as a hex string of packed bits
(:func:`pack_hits` / :func:`unpack_hits`): 500 images take 126 characters.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
# A statistic undefined (a zero denominator) on more resamples than this has no usable interval.
MAX_UNDEFINED = 0.01
_BLOCK = 8_000_000  # entries of the count matrix held at once: resamples x images


def pack_hits(correct) -> str:
    """0/1 (or bool) per image -> hex string of the packed bits, first image in the high bit."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes().hex()


def unpack_hits(hits: str, n: int) -> np.ndarray:
    """Inverse of :func:`pack_hits`: a bool array of ``n`` images. ValueError when the string
    is not ``n`` packed bits (wrong length, odd characters, set padding bits)."""
    if len(hits) != 2 * math.ceil(n / 8):
        raise ValueError(f"holds {4 * len(hits)} bits, not {n} images packed ({2 * math.ceil(n / 8)} hex digits)")
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hits), dtype=np.uint8))
    if bits[n:].any():
        raise ValueError("has bits set past the last image")
    return bits[:n].astype(bool)


def resampled_means(values, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Means of ``values`` (``[..., n]``, one value per image) over bootstrap resamples of the
    images: ``[..., resamples]``. Every row sees the same resamples (the pairing), and the
    same ``(n, resamples, seed)`` give the same resamples in any call."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    if n < 1 or resamples < 1:
        raise ValueError(f"need at least one image and one resample (got {n} images, {resamples} resamples)")
    rng = np.random.default_rng(seed)
    flat = values.reshape(-1, n)
    out = np.empty((flat.shape[0], resamples))
    block = max(1, _BLOCK // n)  # bounded memory for 50,000-image sets
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        # How often each image is drawn in each resample: one bincount over all of them.
        drawn = rng.integers(0, n, (size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
        # Small products without BLAS, whose thread start-up costs more than them on a busy machine.
        if flat.size * size <= 10_000_000:
            out[:, start:start + size] = np.einsum("rn,bn->rb", flat, counts) / n
        else:
            out[:, start:start + size] = flat @ counts.T.astype(np.float64) / n
    return out.reshape(values.shape[:-1] + (resamples,))


def interval(samples, level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile interval of bootstrap ``samples`` (NaN = undefined on that resample); None when
    more than :data:`MAX_UNDEFINED` of them are undefined."""
    samples = np.asarray(samples, dtype=np.float64)
    finite = samples[np.isfinite(samples)]
    if finite.size == 0 or finite.size < (1 - MAX_UNDEFINED) * samples.size:
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def percentile_intervals(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`interval` along the last axis of ``samples``, vectorised: (low, high), NaN where undefined."""
    tail = 100 * (1 - level) / 2
    defined = np.isfinite(samples).mean(-1) >= 1 - MAX_UNDEFINED
    with warnings.catch_warnings():  # all-NaN slices are expected and masked below
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=-1)
    return np.where(defined, low, np.nan), np.where(defined, high, np.nan)


def difference(a, b, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> dict:
    """Paired bootstrap of ``mean(a) - mean(b)`` for per-image scores of two models on the same
    images (a heatmap score, correctness): ``{difference, low, high, n}``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need the same images: got shapes {a.shape} and {b.shape}")
    means = resampled_means(np.stack([a, b]), resamples, seed)
    low, high = interval(means[0] - means[1], level)  # always defined: a mean has no denominator to vanish
    return {"difference": float(a.mean() - b.mean()), "low": low, "high": high, "n": int(a.size)}


def mcnemar(a_correct, b_correct) -> dict:
    """McNemar's exact test of two models' top-1 on the same images: the images only ``a`` gets
    right (``a_only``), only ``b`` gets right (``b_only``), the accuracy difference a - b and
    the two-sided exact p-value (1 when no image is discordant)."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired correctness needs the same images: got shapes {a.shape} and {b.shape}")
    from scipy.stats import binomtest  # here: reading results files must not pay for scipy.stats

    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "difference": (a_only - b_only) / a.size, "p_value": float(p)}


def robustness_intervals(correct: dict[str, np.ndarray], severities: int, over: list[int],
                         baseline: str | np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                         level: float = LEVEL) -> dict:
    """Bootstrap intervals of the robustness scores, per model and per pair of models.

    ``correct[label]``: bool ``[1 + C * S, n]``, the clean cell then corruption-major cells
    (S severities each), the same images in every cell. ``over``: indices of the corruptions
    that mCE averages. ``baseline``: the label of the model normalising CE (resampled with the
    others) or fixed errors ``[1 + C * S]`` (the published AlexNet errors; not resampled).
    Returns ``{"models": {label: {score: [low, high] | None, "ce": [...]}}, "pairs": [...]}``
    with every pair's differences (first minus second), and McNemar's test on the clean cell.
    """
    labels = list(correct)
    errors = 1.0 - np.stack([correct[label] for label in labels]).astype(np.float64)  # [M, K, n]
    m, k, n = errors.shape
    corruptions = (k - 1) // severities
    point = errors.mean(-1)[..., None]  # [M, K, 1]: the reported scores, through the same formulas
    sampled = resampled_means(errors, resamples, seed)  # [M, K, B]
    if isinstance(baseline, str):
        base_point, base_sampled = point[labels.index(baseline)], sampled[labels.index(baseline)]
    else:
        base_point = base_sampled = np.asarray(baseline, dtype=np.float64)[:, None]
    scores = {name: _scores(sampled, base_sampled, corruptions, severities, over)[name] for name in _SCORES}
    points = _scores(point, base_point, corruptions, severities, over)
    models = {}
    for i, label in enumerate(labels):
        entry = {}
        for name in _SCORES:
            low, high = percentile_intervals(scores[name][i], level)
            if name == "ce":
                entry[name] = [_pair(low[c], high[c]) for c in range(corruptions)]
            else:
                entry[name] = _pair(low, high)
        models[label] = entry
    pairs = []
    for i in range(m):
        for j in range(i + 1, m):
            pair = {"a": labels[i], "b": labels[j]}
            for name in ("clean_error", "mce", "relative_mce", "mean_corruption_accuracy"):
                low, high = percentile_intervals(scores[name][i] - scores[name][j], level)
                value = points[name][i, 0] - points[name][j, 0]
                pair[name] = None if not np.isfinite(value) or np.isnan(low) else {
                    "difference": float(value), "low": float(low), "high": float(high)}
            test = mcnemar(correct[labels[i]][0], correct[labels[j]][0])
            pair["clean_error"] = {**pair["clean_error"], "a_only": test["a_only"], "b_only": test["b_only"],
                                   "p_value": test["p_value"]}
            pairs.append(pair)
    return {"models": models, "pairs": pairs, "resamples": resamples, "seed": seed, "level": level, "n": n}


_SCORES = ("clean_error", "mce", "relative_mce", "mean_corruption_accuracy", "ce")


def _scores(errors: np.ndarray, base: np.ndarray, corruptions: int, severities: int, over: list[int]) -> dict:
    """The robustness scores of :mod:`.robustness.metrics` for errors ``[M, K, B]`` (B resamples,
    or 1 for the point estimate) against baseline errors ``[K, B]``; NaN where undefined."""
    m, _, b = errors.shape
    clean = errors[:, 0]  # [M, B]
    table = errors[:, 1:].reshape(m, corruptions, severities, b)
    base_table = base[1:].reshape(corruptions, severities, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        base_sum = base_table.sum(1)
        ce = np.where(base_sum > 0, table.sum(2) / base_sum, np.nan)  # [M, C, B]
        degradation = (base_table - base[0]).sum(1)
        relative = np.where(degradation > 0, (table - clean[:, None, None]).sum(2) / degradation, np.nan)
    return {"clean_error": clean, "ce": ce,
            "mce": ce[:, over].mean(1) if over else np.full((m, b), np.nan),
            "relative_mce": relative[:, over].mean(1) if over else np.full((m, b), np.nan),
            "mean_corruption_accuracy": 1 - table.mean((1, 2)) if corruptions else np.full((m, b), np.nan)}


def _pair(low, high) -> list[float] | None:
    return None if np.isnan(low) else [float(low), float(high)]


def find_pair(pairs: list[dict], a: str, b: str) -> dict | None:
    """The comparison of ``a`` with ``b`` from ``pairs`` (:func:`robustness_intervals`), as
    differences a - b whichever way it is stored; None when absent."""
    for pair in pairs:
        if (pair["a"], pair["b"]) == (a, b):
            return pair
        if (pair["a"], pair["b"]) == (b, a):
            flipped = {"a": a, "b": b}
            for key, value in pair.items():
                if isinstance(value, dict):
                    value = {**value, "difference": -value["difference"], "low": -value["high"],
                             "high": -value["low"]}
                    if "a_only" in value:
                        value["a_only"], value["b_only"] = value["b_only"], value["a_only"]
                    flipped[key] = value
                elif key not in ("a", "b"):
                    flipped[key] = value
            return flipped
    return None


def excludes_zero(comparison: dict | None) -> bool:
    """Whether a difference's interval lies on one side of 0 (not a tie)."""
    return comparison is not None and (comparison["low"] > 0 or comparison["high"] < 0)
