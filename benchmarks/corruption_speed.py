"""Throughput of the torch corruption backend vs the reference (imagecorruptions, one worker per core).

    python benchmarks/corruption_speed.py [--image-size 224] [--batch-size 16] [--corruptions ...]

Every corruption at every severity 1-5, both backends on the same images, in one run; prints
milliseconds per corrupted image and the speed-up per corruption and overall.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from emca_vis.robustness.corruptions import SEVERITIES, corrupt
from emca_vis.robustness.metrics import IMAGENET_C


def smooth_images(n: int, size: int) -> torch.Tensor:
    """Natural-looking test images: smooth colour gradients plus random rectangles."""
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = torch.stack([x, y, (x + y) / 2]).expand(n, 3, size, size).clone()
    for image in images:
        for _ in range(6):
            x0, y0 = torch.randint(0, size * 3 // 4, (2,), generator=g).tolist()
            w, h = torch.randint(size // 10, size // 3, (2,), generator=g).tolist()
            image[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g)
    return images


def seconds(backend: str, images: torch.Tensor, name: str) -> float:
    start = time.perf_counter()
    for severity in SEVERITIES:
        corrupt(images, name, severity, backend=backend, seed=severity)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--corruptions", nargs="+", default=list(IMAGENET_C))
    args = parser.parse_args()
    images = smooth_images(args.batch_size, args.image_size)
    corrupt(images[:2], "fog", 1, backend="reference")  # start the worker processes
    per_image = args.batch_size * len(SEVERITIES)
    print(f"{args.image_size} px, batch {args.batch_size}, severities 1-5, torch {torch.get_num_threads()} threads, "
          f"reference {len(os.sched_getaffinity(0))} worker processes")
    print(f"| corruption | reference ms/img | torch ms/img | speed-up |\n|---|---:|---:|---:|")
    totals = [0.0, 0.0]
    for name in args.corruptions:
        corrupt(images[:2], name, 1)  # warm-up (caches, lazy imports)
        reference, fast = seconds("reference", images, name), seconds("torch", images, name)
        totals[0] += reference
        totals[1] += fast
        print(f"| {name} | {1000 * reference / per_image:.1f} | {1000 * fast / per_image:.1f} | "
              f"{reference / fast:.1f}x |", flush=True)
    count = per_image * len(args.corruptions)
    print(f"| all | {1000 * totals[0] / count:.1f} | {1000 * totals[1] / count:.1f} | {totals[0] / totals[1]:.1f}x |")


if __name__ == "__main__":
    main()
