"""How closely the torch backend follows the reference: pixels (PSNR) and the errors models make.

Deterministic corruptions must match the reference image (PSNR >= 30 dB); random ones can only
match in distribution, so they are compared by the top-1 error a model makes under each backend
on the same images.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.shapes import ShapesDataset
from ..inputs import LoadedModel
from .corruptions import corrupt


def shapes_test_images(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` shapes test images, float ``[n, 3, size, size]`` in [0, 1], and their labels."""
    dataset = ShapesDataset("test", image_size=size, length=n)
    samples = [dataset.sample(i) for i in range(n)]
    images = torch.stack([torch.from_numpy(np.array(s.image)).permute(2, 0, 1) for s in samples]).float() / 255
    return images, torch.tensor([s.label for s in samples])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the PSNR (dB) between two batches in [0, 1]."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1 / mse)).mean())


def top1_wrong(models: list[LoadedModel], images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[models, images]``: 1 where a model's top-1 class is wrong (inputs normalised as it was trained)."""
    wrong = []
    for m in models:
        with torch.no_grad():
            predicted = torch.cat([m.model(m.normalise(chunk)).argmax(1) for chunk in images.split(250)])
        wrong.append((predicted != labels).float())
    return torch.stack(wrong)


def compare_backends(models: list[LoadedModel], images: torch.Tensor, labels: torch.Tensor, name: str,
                     severities=(1, 2, 3, 4, 5), draws: int = 1) -> dict:
    """Both backends on the same images at each severity: mean PSNR between their outputs and, per
    model, the top-1 error under each backend averaged over ``severities`` and ``draws`` noise
    draws per severity (seeds ``severity + 1000 * draw``; more draws, less spread on few images).

    ``max_gap`` is the largest difference between the two errors over the models, ``gap_se`` that
    model's standard error of the difference (paired over images): the spread two independent
    draws of the same corruption would show.
    """
    values, difference = [], torch.zeros(len(models), len(images))
    fast_errors, reference_errors = torch.zeros(len(models)), torch.zeros(len(models))
    runs = [(severity, severity + 1000 * draw) for severity in severities for draw in range(draws)]
    for severity, seed in runs:
        fast = corrupt(images, name, severity, backend="torch", seed=seed)
        reference = corrupt(images, name, severity, backend="reference", seed=seed)
        values.append(psnr(fast, reference))
        fast_wrong, reference_wrong = top1_wrong(models, fast, labels), top1_wrong(models, reference, labels)
        fast_errors += fast_wrong.mean(1) / len(runs)
        reference_errors += reference_wrong.mean(1) / len(runs)
        difference += (fast_wrong - reference_wrong) / len(runs)
    gaps = (fast_errors - reference_errors).abs()
    worst = int(gaps.argmax())
    return {"psnr": sum(values) / len(values), "torch_error": fast_errors.tolist(),
            "reference_error": reference_errors.tolist(), "max_gap": float(gaps[worst]),
            "gap_se": float(difference[worst].std() / len(images) ** 0.5)}
