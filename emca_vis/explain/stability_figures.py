"""Figures of heatmap stability, drawn from the stability JSON (and ``grid.npz``) alone.

* ``stability_<method>.png``: each measure against severity, one panel per (measure, family),
  one line per model with its 95% interval as a band; severity 0 is the clean image, where
  the measures are perfect by definition (rho = IoU = retention = 1, shift 0).
* ``grid_<method>_<corruption>.png``: one image's heatmaps across severities, rows models
  (the corrupted inputs on top), columns severity 0 (clean) to 5.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..attention.plots import OKABE_ITO, STYLE  # noqa: E402
from ..outputs import save_figure  # noqa: E402
from .figures import HEATMAP_CMAP, OVERLAY_ALPHA  # noqa: E402
from .stability import rank_correlation, top_iou  # noqa: E402

PANELS = {"rank_correlation": ("Spearman rho", 1.0, 1), "top_iou": ("top-q IoU", 1.0, 1),
          "peak_shift": ("peak shift (% of diagonal)", 0.0, 100),
          "pointing_retained": ("pointing game retained (%)", 1.0, 100), "flat": ("flat maps (%)", 0.0, 100)}


def colours(labels) -> dict[str, str]:
    return {label: OKABE_ITO[i % len(OKABE_ITO)] for i, label in enumerate(labels)}


def severity_figure(data: dict, method: str, path: Path) -> Path:
    """Measures (rows) x families (columns) against severity, one line per model."""
    models = data["models"]
    first = next(iter(models.values()))["methods"][method]
    family_names = list(first["families"])
    measures = [m for m in PANELS if any(m in fam["all"] and fam["all"][m]["mean"] is not None
                                         for entry in models.values()
                                         for fam in entry["methods"][method]["families"].values())]
    severities = [int(s) for s in data["severities"]]
    palette = colours(models)
    with plt.rc_context(STYLE):
        # One y scale per measure, so families compare at a glance.
        fig, axes = plt.subplots(len(measures), len(family_names), squeeze=False, sharex=True, sharey="row",
                                 figsize=(3.1 * len(family_names) + 1.6, 2.2 * len(measures) + 0.6),
                                 layout="constrained")
        for r, measure in enumerate(measures):
            title, clean, factor = PANELS[measure]
            for c, family in enumerate(family_names):
                ax = axes[r, c]
                for label, entry in models.items():
                    by_severity = entry["methods"][method]["families"][family]["severities"]
                    values = [by_severity[str(s)].get(measure) for s in severities]
                    mean = np.array([np.nan if v is None or v["mean"] is None else v["mean"] for v in values])
                    low = np.array([np.nan if v is None or v["ci_low"] is None else v["ci_low"] for v in values])
                    high = np.array([np.nan if v is None or v["ci_high"] is None else v["ci_high"] for v in values])
                    x = [0, *severities]
                    ax.plot(x, factor * np.r_[clean, mean], marker="o", markersize=3, lw=1.4,
                            color=palette[label], label=label)
                    ax.fill_between(severities, factor * low, factor * high, color=palette[label], alpha=0.15,
                                    lw=0)
                if r == 0:
                    members = ", ".join(models[next(iter(models))]["methods"][method]["families"][family]
                                        ["corruptions"])
                    # wrapped: four corruptions' names would run into the next panel's title
                    ax.set_title(f"{family}\n" + textwrap.fill(members.replace("_", " "), 34), fontsize=8)
                if c == 0:
                    ax.set_ylabel(title)
                if r == len(measures) - 1:
                    ax.set_xlabel("severity (0 = clean)")
                ax.set_xticks([0, *severities])
                ax.grid(alpha=0.3, lw=0.5)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center")
        fig.suptitle(f"{method} heatmap stability under corruption ({data.get('data')}, "
                     f"{next(iter(models.values()))['n']} images; bands: 95% CI)")
        try:
            return save_figure(fig, path, dpi=130)
        finally:
            plt.close(fig)


def grid_figure(data: dict, arrays, method: str, corruption: str, path: Path) -> Path | None:
    """One image across severities: the corrupted inputs, then one row of heatmap overlays per model,
    each titled with its Spearman rho and top-q IoU against the clean heatmap."""
    labels = [label for label in data["models"] if f"heatmap/{label}/{method}/clean/0" in arrays]
    if not labels:
        return None
    severities = [int(s) for s in data["severities"]]
    columns = [("clean", 0)] + [(corruption, s) for s in severities]
    size = arrays[f"heatmap/{labels[0]}/{method}/clean/0"].shape[0]
    q = float(data.get("q", 0.15))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1 + len(labels), len(columns), squeeze=False,
                                 figsize=(1.45 * len(columns) + 1.2, 1.5 * (1 + len(labels)) + 0.5),
                                 layout="constrained")
        mappable = None
        for c, (name, severity) in enumerate(columns):
            image = np.clip(arrays[f"image/{size}/{name}/{severity}"], 0, 1)
            axes[0, c].imshow(image)
            axes[0, c].set_title("clean" if severity == 0 else f"severity {severity}", fontsize=8)
            for r, label in enumerate(labels, start=1):
                heatmap = arrays[f"heatmap/{label}/{method}/{name}/{severity}"]
                clean = arrays[f"heatmap/{label}/{method}/clean/0"]
                ax = axes[r, c]
                # the image as this model sees it (models of another input size have their own)
                ax.imshow(np.clip(arrays[f"image/{heatmap.shape[0]}/{name}/{severity}"], 0, 1))
                mappable = ax.imshow(heatmap, cmap=HEATMAP_CMAP, vmin=0, vmax=1, alpha=OVERLAY_ALPHA,
                                     interpolation="bilinear")
                if severity and heatmap.max() == heatmap.min():
                    ax.set_title("flat map", fontsize=7)
                elif severity:
                    rho = rank_correlation(clean[None], heatmap[None])[0]
                    iou = top_iou(clean[None], heatmap[None], q)[0]
                    ax.set_title(f"rho {rho:.2f}  IoU {iou:.2f}", fontsize=7)
                if c == 0:
                    ax.set_ylabel(label, fontsize=7)
        axes[0, 0].set_ylabel("input", fontsize=7)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        if mappable is not None:
            bar = fig.colorbar(mappable, ax=axes, shrink=0.5, aspect=30, pad=0.01)
            bar.solids.set_alpha(1)
        fig.suptitle(f"{method}, {corruption}: image {data.get('grid_image', 0)} of {data.get('data')}", fontsize=9)
        try:
            return save_figure(fig, path, dpi=130)
        finally:
            plt.close(fig)


def all_figures(data: dict, grid: Path | None, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [severity_figure(data, method, out / f"stability_{method}.png") for method in data["methods"]]
    if grid is not None:
        with np.load(grid) as loaded:
            arrays = {key: loaded[key] for key in loaded.files}
        for method in data["methods"]:
            for corruption in data["corruptions"]:
                path = grid_figure(data, arrays, method, corruption, out / f"grid_{method}_{corruption}.png")
                if path is not None:
                    written.append(path)
    return written


def robustness_figure(results: dict, path: Path) -> Path:
    """:func:`severity_figure` of a robustness results dict holding ``stability`` (``--stability``)."""
    found = results["stability"]
    method = found["method"]
    data = {"data": results.get("data"), "severities": results["severities"], "models": {
        label: {"n": results["models"][label]["n"], "methods": {method: summary}}
        for label, summary in found["models"].items()}}
    return severity_figure(data, method, path)
