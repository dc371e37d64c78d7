"""Fidelity of the torch corruption backend to the reference (imagecorruptions), on the demo models.

    python benchmarks/corruption_fidelity.py [--n 500] [--corruptions ...]

For each corruption, on the same ``shapes`` test images: PSNR between the two backends' outputs
(meaningful for the deterministic corruptions) and, for every demo model, top-1 error under
each backend; prints per corruption the PSNR and the largest over models of |error difference|,
both averaged over severities 1-5.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from emca_vis.data.shapes import ShapesDataset
from emca_vis.inputs import load_models
from emca_vis.robustness.corruptions import DETERMINISTIC, SEVERITIES, corrupt
from emca_vis.robustness.metrics import IMAGENET_C


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1 / mse)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--corruptions", nargs="+", default=list(IMAGENET_C))
    args = parser.parse_args()
    models = load_models()
    size = models[0].input_size
    dataset = ShapesDataset("test", image_size=size, length=args.n)
    samples = [dataset.sample(i) for i in range(args.n)]
    images = torch.stack([torch.from_numpy(np.asarray(s.image)).permute(2, 0, 1) for s in samples]).float() / 255
    labels = torch.tensor([s.label for s in samples])

    def errors(batch: torch.Tensor) -> list[float]:
        out = []
        for m in models:
            mean = torch.tensor(m.meta["mean"]).view(1, 3, 1, 1)
            std = torch.tensor(m.meta["std"]).view(1, 3, 1, 1)
            with torch.no_grad():
                predicted = torch.cat([m.model((chunk - mean) / std).argmax(1) for chunk in batch.split(250)])
            out.append(float((predicted != labels).float().mean()))
        return out

    print(f"{args.n} shapes test images at {size} px, {len(models)} demo models, severities 1-5")
    print("| corruption | kind | PSNR torch vs reference (dB) | max over models of mean |error difference| (pp) |")
    print("|---|---|---:|---:|")
    for name in args.corruptions:
        values, gaps = [], torch.zeros(len(models))
        for severity in SEVERITIES:
            fast = corrupt(images, name, severity, backend="torch", seed=severity)
            reference = corrupt(images, name, severity, backend="reference", seed=severity)
            values.append(psnr(fast, reference))
            gaps += (torch.tensor(errors(fast)) - torch.tensor(errors(reference))).abs()
        kind = "deterministic" if name in DETERMINISTIC else "random"
        print(f"| {name} | {kind} | {sum(values) / len(values):.1f} | {100 * float(gaps.max()) / len(SEVERITIES):.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
