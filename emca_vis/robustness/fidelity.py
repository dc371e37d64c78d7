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


def top1_errors(models: list[LoadedModel], images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 error of each model on ``images`` in [0, 1] (normalised as each model was trained)."""
    errors = []
    for m in models:
        mean = torch.tensor(m.meta["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(m.meta["std"]).view(1, 3, 1, 1)
        with torch.no_grad():
            predicted = torch.cat([m.model((chunk - mean) / std).argmax(1) for chunk in images.split(250)])
        errors.append(float((predicted != labels).float().mean()))
    return torch.tensor(errors)


def compare_backends(models: list[LoadedModel], images: torch.Tensor, labels: torch.Tensor, name: str,
                     severities=(1, 2, 3, 4, 5)) -> dict:
    """Both backends on the same images at each severity: mean PSNR between their outputs and, per
    model, the top-1 error under each backend averaged over ``severities``."""
    values, fast_errors, reference_errors = [], torch.zeros(len(models)), torch.zeros(len(models))
    for severity in severities:
        fast = corrupt(images, name, severity, backend="torch", seed=severity)
        reference = corrupt(images, name, severity, backend="reference", seed=severity)
        values.append(psnr(fast, reference))
        fast_errors += top1_errors(models, fast, labels) / len(severities)
        reference_errors += top1_errors(models, reference, labels) / len(severities)
    return {"psnr": sum(values) / len(values), "torch_error": fast_errors.tolist(),
            "reference_error": reference_errors.tolist(),
            "max_gap": float((fast_errors - reference_errors).abs().max())}
