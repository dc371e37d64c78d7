"""Fidelity of the torch corruption backend to the reference (imagecorruptions), on the demo models.

    python benchmarks/corruption_fidelity.py [--n 500] [--corruptions ...]

For each corruption, on the same ``shapes`` test images: PSNR between the two backends' outputs
(the bar for deterministic corruptions: >= 30 dB) and, over the demo models, the largest
difference in top-1 error between the backends, errors averaged over severities 1-5 (the bar
for random corruptions: <= 2 percentage points), with that model's standard error of the gap
(paired over images): how far two independent draws of the same corruption lie apart by chance.
"""

from __future__ import annotations

import argparse

from emca_vis.inputs import load_models
from emca_vis.robustness.corruptions import DETERMINISTIC
from emca_vis.robustness.fidelity import compare_backends, shapes_test_images
from emca_vis.robustness.metrics import IMAGENET_C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--corruptions", nargs="+", default=list(IMAGENET_C))
    args = parser.parse_args()
    models = load_models()
    images, labels = shapes_test_images(args.n, models[0].input_size)
    print(f"{args.n} shapes test images at {models[0].input_size} px, {len(models)} demo models, severities 1-5")
    print("| corruption | kind | PSNR (dB) | torch error | reference error | max gap (pp) | its SE (pp) | bar |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in args.corruptions:
        r = compare_backends(models, images, labels, name)
        deterministic = name in DETERMINISTIC
        passed = r["psnr"] >= 30 if deterministic else r["max_gap"] <= 0.02
        print(f"| {name} | {'deterministic' if deterministic else 'random'} | {r['psnr']:.1f} | "
              f"{_mean_percent(r['torch_error']):.1f} | {_mean_percent(r['reference_error']):.1f} | {100 * r['max_gap']:.2f} | "
              f"{100 * r['gap_se']:.2f} | "
              f"{'met' if passed else 'NOT met'} |", flush=True)


def _mean_percent(errors: list[float]) -> float:
    return 100 * sum(errors) / len(errors)


if __name__ == "__main__":
    main()
