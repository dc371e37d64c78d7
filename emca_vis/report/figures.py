"""Robustness figures of the report, drawn from the robustness results JSON only.

Same look as the attention figures (:mod:`emca_vis.attention.plots`): Okabe-Ito colours,
one colour per model in checkpoint order, so a model has the same colour in every figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..attention.plots import OKABE_ITO, STYLE  # noqa: E402
from ..outputs import save_figure  # noqa: E402
from ..robustness.metrics import EXTRA, FAMILIES  # noqa: E402

MARKERS = "osD^vP*X"


def colours(labels) -> dict[str, str]:
    """The attention figures' assignment: i-th model, i-th Okabe-Ito colour."""
    return {label: OKABE_ITO[i % len(OKABE_ITO)] for i, label in enumerate(labels)}


def save_png(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_figure(fig, path, dpi=150, metadata={"Software": None})  # no version stamp: same data, same bytes
    finally:
        plt.close(fig)
    return path


def families(corruptions: list[str]) -> dict[str, list[str]]:
    """The evaluated corruptions grouped as in ImageNet-C (noise, blur, weather, digital, extra)."""
    groups = {name: [c for c in members if c in corruptions] for name, members in FAMILIES.items()}
    groups["extra"] = [c for c in corruptions if c in EXTRA]
    return {name: members for name, members in groups.items() if members}


def _curve(model: dict, corruptions: list[str], severities: list[int]) -> list[float]:
    """Clean error, then the mean error over ``corruptions`` at each severity, in percent."""
    return [100 * model["clean_error"]] + [
        100 * float(np.mean([model["errors"][c][str(s)] for c in corruptions])) for s in severities]


def _lines(ax, results: dict, corruptions: list[str], palette: dict[str, str]) -> None:
    severities = results["severities"]
    x = [0] + list(severities)
    for i, (label, model) in enumerate(results["models"].items()):
        ax.plot(x, _curve(model, corruptions, severities), color=palette[label], marker=MARKERS[i % len(MARKERS)],
                markersize=3.5, lw=1.2, label=label)
    ax.set_xticks(x, ["clean"] + [str(s) for s in severities])


def severity_figure(results: dict, path: Path) -> Path:
    """Top-1 error vs severity, one panel per corruption family (mean over its corruptions)."""
    groups = families(results["corruptions"])
    palette = colours(results["models"])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups) + 0.4, 3.0), squeeze=False,
                                 sharey=True, layout="constrained")
        for ax, (family, members) in zip(axes[0], groups.items()):
            _lines(ax, results, members, palette)
            ax.set(title=f"{family} ({len(members)})", xlabel="severity")
            ax.grid(axis="y", lw=0.4, alpha=0.5)
        axes[0, 0].set_ylabel("top-1 error (%)")
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4))
        return save_png(fig, path)


def corruption_figure(results: dict, path: Path) -> Path:
    """Top-1 error vs severity for every corruption: small multiples, five per row."""
    corruptions = results["corruptions"]
    palette = colours(results["models"])
    cols = min(5, len(corruptions))
    rows = -(-len(corruptions) // cols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols + 0.4, 1.9 * rows + 0.6), squeeze=False,
                                 sharex=True, sharey=True, layout="constrained")
        for ax, name in zip(axes.flat, corruptions):
            _lines(ax, results, [name], palette)
            ax.set_title(name.replace("_", " "), fontsize=8)
            ax.grid(axis="y", lw=0.4, alpha=0.5)
            ax.tick_params(labelsize=7)
        for ax in axes.flat[len(corruptions):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("error (%)", fontsize=8)
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4))
        return save_png(fig, path)


def mce_figure(results: dict, path: Path) -> Path | None:
    """Horizontal bars of mCE per model, the baseline's 100% dashed; ``None`` without any mCE."""
    models = {label: m for label, m in results["models"].items() if m.get("mce") is not None}
    if not models:
        return None
    palette = colours(results["models"])
    labels = list(models)
    values = [100 * models[label]["mce"] for label in labels]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(labels) + 1.1), layout="constrained")
        y = np.arange(len(labels))
        ax.barh(y, values, color=[palette[label] for label in labels], height=0.65)
        for yi, value in zip(y, values):
            ax.annotate(f"{value:.1f}", (value, yi), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=8)
        ax.axvline(100, color="black", lw=0.8, ls="--")
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlim(0, max(max(values), 100) * 1.12)  # bars start at zero; the labels give the differences
        ax.set_xlabel(f"mCE (% of {results['baseline']}'s errors; lower is better)")
        return save_png(fig, path)
