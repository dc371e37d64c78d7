"""Grad-CAM cost relative to a plain inference forward pass, and agreement with pytorch-grad-cam.

    python benchmarks/gradcam_speed.py [--model resnet50] [--batch-size 16] [--image-size 224]

Times, in turns within one run (median over repeats after a warm-up): a ``no_grad`` forward
pass, emca-vis's Grad-CAM (gradients only from the head down to the target layer) and
pytorch-grad-cam's ``GradCAM`` as shipped (a full backward pass). Prints ratios to the
forward pass and the largest difference between the two Grad-CAM heatmaps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from emca_vis.explain.heatmaps import heatmaps, target_layer
from emca_vis.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    with torch.no_grad():
        targets = model(images).argmax(1).tolist()
    stock = GradCAM(model, [target_layer(model, "layer4")])

    def forward():
        with torch.no_grad():
            model(images)

    def fast():
        return heatmaps(model, images, targets, "gradcam")

    def shipped():
        return stock(images, [ClassifierOutputTarget(t) for t in targets])

    runs = {"no_grad forward": forward, "emca-vis Grad-CAM": fast, "pytorch-grad-cam GradCAM": shipped}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(args.repeats + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if repeat:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["no_grad forward"])
    print(f"{args.model}, batch {args.batch_size}, {args.image_size} px, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:26s} {median * 1000:8.0f} ms  {median / base:5.2f}x forward")
    difference = abs(fast() - shipped()).max()
    print(f"  max |emca-vis - pytorch-grad-cam| on normalised heatmaps: {difference:.2e}")


if __name__ == "__main__":
    main()
