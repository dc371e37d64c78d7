"""Corruption-robustness scores (Hendrycks & Dietterich, ICLR 2019, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations").

Errors are fractions in [0, 1]; ``errors[c]`` holds one error per severity 1..5.

* CE_c = sum_s E(c, s) / sum_s E_base(c, s)
* relative CE_c = sum_s (E(c, s) - E_clean) / sum_s (E_base(c, s) - E_base_clean)
* mCE and relative mCE: their means over the 15 ImageNet-C corruptions (the extra four are
  reported but, as in the paper, not averaged in)
* mean corruption accuracy: 1 - the mean error over corruptions and severities (RobustBench)
"""

from __future__ import annotations

import numpy as np

IMAGENET_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
              "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
              "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
FAMILIES = {"noise": IMAGENET_C[0:3], "blur": IMAGENET_C[3:7], "weather": IMAGENET_C[7:11],
            "digital": IMAGENET_C[11:15]}

# AlexNet top-1 errors on ImageNet-C per severity 1..5, as published with the benchmark
# (hendrycks/robustness, also used by timm); their means are the paper's CE normalisers.
ALEXNET_ERRORS = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
    "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
    "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
    "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
    "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}
ALEXNET_CLEAN_ERROR = 0.4348  # AlexNet's clean top-1 error (torchvision's AlexNet; 43.5% in the paper)


def corruption_error(errors, base_errors) -> float | None:
    """None when the baseline makes no error at all (the ratio is undefined)."""
    base = float(np.sum(base_errors))
    return float(np.sum(errors)) / base if base else None


def relative_corruption_error(errors, clean_error: float, base_errors, base_clean_error: float) -> float | None:
    """None unless the baseline degrades (errs more under the corruption than clean): otherwise
    the ratio is undefined, or flips sign and means nothing."""
    degradation = float(np.sum(np.asarray(base_errors) - base_clean_error))
    return float(np.sum(np.asarray(errors) - clean_error)) / degradation if degradation > 0 else None


def summarize(clean_error: float, errors: dict[str, dict[int, float]],
              base_errors: dict[str, dict[int, float] | tuple] | None = None,
              base_clean_error: float | None = None) -> dict:
    """Every score from a model's errors (corruption -> {severity: error}).

    The baseline defaults to the published AlexNet errors; CE uses the baseline's errors at
    the same severities. Corruptions the baseline lacks get no CE. mCE averages the 15
    ImageNet-C corruptions when all were evaluated, otherwise every corruption with a CE
    (``mce_over`` says which).
    """
    if base_errors is None:
        base_errors, base_clean_error = ALEXNET_ERRORS, ALEXNET_CLEAN_ERROR
    ce, relative = {}, {}
    for name, by_severity in errors.items():
        if name not in base_errors:
            continue
        base = base_errors[name]
        base = {s: base[s - 1] for s in by_severity} if isinstance(base, tuple) else base
        severities = sorted(by_severity)
        if any(s not in base for s in severities):
            continue
        values, reference = [by_severity[s] for s in severities], [base[s] for s in severities]
        ce[name] = corruption_error(values, reference)
        relative[name] = relative_corruption_error(values, clean_error, reference, base_clean_error)
    core = [c for c in IMAGENET_C if c in ce]
    averaged = core if len(core) == len(IMAGENET_C) else list(ce)
    all_errors = [e for by_severity in errors.values() for e in by_severity.values()]
    return {
        "clean_error": clean_error,
        "ce": ce,
        "relative_ce": relative,
        "mce": _mean_or_none([ce[c] for c in averaged]),
        "relative_mce": _mean_or_none([relative[c] for c in averaged]),
        "mce_over": averaged,
        "mean_corruption_accuracy": 1 - float(np.mean(all_errors)) if all_errors else None,
    }


def _mean_or_none(values) -> float | None:
    return None if not values or any(v is None for v in values) else float(np.mean(values))
