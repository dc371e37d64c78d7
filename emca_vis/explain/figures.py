"""Figures of explanations: models as rows, the input then one heatmap overlay per column."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.patches

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..outputs import save_figure  # noqa: E402

HEATMAP_CMAP = "inferno"  # perceptually uniform and colour-blind safe
OVERLAY_ALPHA = 0.55


def blend(image: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The heatmap (``[H, W]`` in [0, 1]) in the figures' colour map, blended over ``image`` (``[H, W, 3]``)."""
    return (1 - alpha) * image + alpha * matplotlib.colormaps[HEATMAP_CMAP](np.clip(heatmap, 0, 1))[..., :3]


def comparison_figure(rows: list[dict], path: Path, title: str = "") -> Path:
    """Draw one row per model and save it at ``path`` (format from the suffix: .png, .svg, .pdf).

    Each row is ``{"label", "image" [H, W, 3] in [0, 1], "caption", "maps": [(column title,
    [H, W] heatmap in [0, 1]), ...]}``. Every heatmap uses the same 0-1 colour scale, shown
    by one colour bar; images keep their aspect ratio. Detectors' rows add ``"detections"``
    (``[{"box": (x0, y0, x1, y1), "text", "mask": [H, W] bool or None}, ...]``, drawn on the
    input) and a third item per map, the boxes to outline on it.
    """
    columns = 1 + max(len(row["maps"]) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.3 * columns + 0.8, 2.5 * len(rows) + 0.4),
                             squeeze=False, layout="constrained")
    mappable = None
    for r, row in enumerate(rows):
        axes[r, 0].imshow(row["image"])
        axes[r, 0].set_title(f"{row['label']}\n{row['caption']}", fontsize=9)
        draw_detections(axes[r, 0], row.get("detections", []))
        for c, (column_title, heatmap, *boxes) in enumerate(row["maps"], start=1):
            ax = axes[r, c]
            ax.imshow(row["image"])
            mappable = ax.imshow(heatmap, cmap=HEATMAP_CMAP, vmin=0, vmax=1, alpha=OVERLAY_ALPHA,
                                 interpolation="bilinear")
            draw_detections(ax, [{"box": box} for box in (boxes[0] if boxes else [])])
            ax.set_title(column_title, fontsize=9 if "\n" not in column_title else 8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[r, 1 + len(row["maps"]):]:
            ax.set_visible(False)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes, shrink=0.6, aspect=30, pad=0.01)
        bar.set_label("relevance (each map scaled to 0-1)", fontsize=9)
        bar.solids.set_alpha(1)
    if title:
        fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_figure(fig, path, dpi=150)
    finally:
        plt.close(fig)
    return path


DETECTION_COLOUR = "#56B4E9"  # Okabe-Ito sky blue: visible on the inferno map and on the images


def draw_detections(ax, detections: list[dict]) -> None:
    """Outline each detection's box on ``ax``; its ``text`` above the box, its ``mask`` tinted."""
    for detection in detections:
        mask = detection.get("mask")
        if mask is not None and mask.any():
            tint = np.zeros((*mask.shape, 4))
            tint[mask] = matplotlib.colors.to_rgba(DETECTION_COLOUR, 0.45)
            ax.imshow(tint, interpolation="nearest")
        x0, y0, x1, y1 = detection["box"]
        ax.add_patch(matplotlib.patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                                  edgecolor=DETECTION_COLOUR, linewidth=1.2))
        if detection.get("text"):
            ax.text(x0 - 0.5, y0 - 1.5, detection["text"], color="black", fontsize=6, va="bottom",
                    bbox={"facecolor": DETECTION_COLOUR, "edgecolor": "none", "pad": 0.5, "alpha": 0.85})


def to_display(image: np.ndarray) -> np.ndarray:
    """``[3, H, W]`` tensor-like array in [0, 1] -> ``[H, W, 3]`` for imshow."""
    return np.clip(np.transpose(np.asarray(image), (1, 2, 0)), 0, 1)
