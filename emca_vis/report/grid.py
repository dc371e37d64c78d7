"""Heatmaps of several models on a few images, clean and at increasing corruption severity.

Each model sees the image as it was trained to (its resize, crop and normalisation), with the
corruption applied to the resized [0, 1] pixels and the same seed for every model, so models
of the same input size see identical corrupted pixels. Heatmaps explain the predicted class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ..attention.plots import STYLE  # noqa: E402
from ..data import build_dataset  # noqa: E402
from ..explain import heatmaps, predict  # noqa: E402
from ..outputs import save_figure  # noqa: E402
from ..explain.figures import HEATMAP_CMAP, blend  # noqa: E402
from ..images import load_image  # noqa: E402
from ..inputs import LoadedModel  # noqa: E402
from ..robustness import corrupt  # noqa: E402

WRONG = "#D55E00"  # Okabe-Ito vermillion


def sample_images(spec: str, split: str, k: int, paths: Sequence[str] = ()) -> list[dict]:
    """``k`` images of different classes from a dataset split (or the given files):
    ``[{"image": PIL RGB, "true": class name or None, "source": str}]``."""
    if paths:
        return [{"image": load_image(p), "true": None, "source": str(p)} for p in paths]
    dataset, info = build_dataset(spec, split, train=False)
    chosen, seen = [], set()
    for i in range(len(dataset)):
        image, label = _raw(dataset, i)
        if label in seen:
            continue
        seen.add(label)
        chosen.append({"image": image, "true": info.class_names[label], "source": f"{spec} {split} #{i}"})
        if len(chosen) == k:
            break
    return chosen


def _raw(dataset, i: int) -> tuple[Image.Image, int]:
    if hasattr(dataset, "sample"):  # shapes: rendered on access
        sample = dataset.sample(i)
        return sample.image, sample.label
    if hasattr(dataset, "samples"):  # image files
        path, label = dataset.samples[i]
        return load_image(path), label
    return Image.fromarray(dataset.data[i]).convert("RGB"), int(dataset.targets[i])  # CIFAR arrays


def conditions(corruptions: Sequence[str], severities: Sequence[int]) -> list[tuple[str, int]]:
    return [("clean", 0)] + [(c, s) for c in corruptions for s in severities]


def condition_title(condition: tuple[str, int]) -> str:
    name, severity = condition
    return "clean" if name == "clean" else f"{name.replace('_', ' ')} {severity}"


def explain_sample(models: Sequence[LoadedModel], sample: dict, conds: list[tuple[str, int]], method: str = "gradcam",
                   layer: str = "layer4", seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """Predictions (JSON-ready) and arrays (inputs and heatmaps per model) for one image."""
    record = {"true": sample["true"], "source": sample["source"],
              "conditions": [condition_title(c) for c in conds], "models": {}}
    arrays: dict[str, np.ndarray] = {}
    for m in models:
        pixels = m.pixels(sample["image"])[None]
        batch = torch.cat([pixels if name == "clean" else corrupt(pixels, name, severity, "torch", seed=seed)
                           for name, severity in conds]).clamp(0, 1)
        x = m.normalise(batch)
        probs = predict(m.model, x)
        predicted = probs.argmax(1).tolist()
        maps = heatmaps(m.model, x, predicted, method, layer)
        names = m.class_names
        record["models"][m.label] = [
            {"prediction": names[p], "probability": round(float(probs[i, p]), 4),
             "correct": None if sample["true"] is None else names[p] == sample["true"]}
            for i, p in enumerate(predicted)]
        arrays[f"{m.label}/inputs"] = batch.permute(0, 2, 3, 1).numpy().astype(np.float16)
        arrays[f"{m.label}/heatmaps"] = maps.astype(np.float16)
    return record, arrays


def _two_lines(title: str) -> str:
    """``"gaussian noise 3"`` -> ``"gaussian noise\nseverity 3"``: narrow columns, readable titles."""
    name, _, last = title.rpartition(" ")
    return f"{name}\nseverity {last}" if name and last.isdigit() else f"{title}\n"


def grid_figure(record: dict, arrays: dict[str, np.ndarray], path: Path, title: str = "", dpi: int = 100) -> Path:
    """Top row: the (first model's) inputs per condition; then one row of overlays per model,
    each captioned with the prediction and its probability (vermillion and an x when wrong).

    Laid out by hand in inches (a grid of 80 axes takes seconds under constrained layout),
    overlays blended beforehand: one image per cell.
    """
    labels = list(record["models"])
    titles = record["conditions"]
    rows, cols = 1 + len(labels), len(titles)
    # Sized to be shown at 100 dpi within the report's width (about 11 inches for 10 columns).
    cell, gap, caption = 0.85, 0.05, 0.34  # inches
    left, right, top, bottom = 1.4, 0.85, 0.72 if title else 0.45, 0.05
    width = left + cols * (cell + gap) + right
    height = top + cell + gap + len(labels) * (cell + caption + gap) + bottom
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(width, height))

        def axes(r: int, c: int):
            start = top if r == 0 else top + cell + gap + (r - 1) * (cell + caption + gap)  # from the top edge
            ax = fig.add_axes(((left + c * (cell + gap)) / width, (height - start - cell) / height,
                               cell / width, cell / height))
            ax.set_axis_off()
            return ax

        inputs = arrays[f"{labels[0]}/inputs"].astype(np.float32)
        for c, column_title in enumerate(titles):
            ax = axes(0, c)
            ax.imshow(inputs[c])
            ax.set_title(_two_lines(column_title), fontsize=7.5, pad=3, linespacing=1.1)
            if c == 0:
                ax.text(-0.08, 0.5, "input", transform=ax.transAxes, ha="right", va="center", fontsize=8.5)
        for r, label in enumerate(labels, start=1):
            images = arrays[f"{label}/inputs"].astype(np.float32)
            maps = arrays[f"{label}/heatmaps"].astype(np.float32)
            for c, info in enumerate(record["models"][label]):
                ax = axes(r, c)
                ax.imshow(blend(images[c], maps[c]))
                wrong = info["correct"] is False
                ax.text(0.5, -0.03, f"{'x ' if wrong else ''}{info['prediction']}\n{info['probability']:.2f}",
                        transform=ax.transAxes, ha="center", va="top", fontsize=7, linespacing=1.05,
                        color=WRONG if wrong else "black")
                if c == 0:
                    ax.text(-0.08, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=8.5)
        block = len(labels) * (cell + caption + gap)  # the model rows, centred on by the colour bar
        bar_height = min(3.0, 0.6 * block)
        bar_bottom = bottom + (block - bar_height) / 2
        bar = fig.add_axes(((width - right + 0.12) / width, bar_bottom / height, 0.12 / width, bar_height / height))
        colorbar = fig.colorbar(ScalarMappable(Normalize(0, 1), HEATMAP_CMAP), cax=bar)
        colorbar.set_label("relevance (0-1 per map)", fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
        if title:
            fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_figure(fig, path, dpi=dpi, metadata={"Software": None})
        finally:
            plt.close(fig)
        return path
