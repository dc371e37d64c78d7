"""Figures of the attention analysis, drawn from its JSON (``{"models": {label: result}}``).

One style for all: the Okabe-Ito colour-blind-safe palette, one colour per model kept across
figures, and every figure written as PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..outputs import save_figure  # noqa: E402
from .analysis import BINS  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
         "legend.frameon": False, "svg.hashsalt": "emca-vis", "figure.dpi": 100}


def stage_modules(result: dict) -> dict[int, dict]:
    """The first attention module of each stage (every model has one there: EMCA's place)."""
    chosen: dict[int, dict] = {}
    for module in result["modules"]:
        chosen.setdefault(module["stage"], module)
    return dict(sorted(chosen.items()))


def _colours(labels) -> dict[str, str]:
    return {label: OKABE_ITO[i % len(OKABE_ITO)] for i, label in enumerate(labels)}


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    try:
        save_figure(fig, paths[0], dpi=150, metadata={"Software": None})
        save_figure(fig, paths[1], metadata={"Date": None, "Creator": None})
    finally:
        plt.close(fig)
    return paths


def scaling_figure(models: dict[str, dict], out: Path) -> list[Path]:
    """The paper's scaling figure: per stage, mean channel scale vs channel index, one line per model."""
    colours = _colours(models)
    stages = sorted({s for result in models.values() for s in stage_modules(result)})
    if not stages:  # plain ResNets only: no attention module to draw
        return []
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 3.0), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, stage in zip(axes[0], stages):
        for label, result in models.items():
            module = stage_modules(result).get(stage)
            if module:
                ax.plot(module["channel_mean"], color=colours[label], lw=1.0, label=label)
        ax.set(title=f"stage {stage}", xlabel="channel index", ylim=(0, 1))
    axes[0, 0].set_ylabel("mean channel scale z")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4))
    return _save(fig, out, "scaling")


def _emca(models: dict[str, dict]) -> dict[str, list[dict]]:
    return {label: [m for m in result["modules"] if "scale_weights" in m] for label, result in models.items()
            if any("scale_weights" in m for m in result["modules"])}


def _short(source: str) -> str:
    return {"current": "cur"}.get(source, source.replace("stage ", "s").replace(" block ", "b"))


def _source_bars(models: dict[str, dict], out: Path, key: str, name: str, ylabel: str, stacked: bool) -> list[Path]:
    """Bars of a per-source quantity of each EMCA module; source r keeps one colour everywhere."""
    emca = _emca(models)
    if not emca:
        return []
    palette = ["#555555"] + OKABE_ITO  # r = 0 (the current map) in grey
    fig, axes = plt.subplots(1, len(emca), figsize=(4.2 * len(emca), 3.4), squeeze=False, layout="constrained")
    for ax, (label, modules) in zip(axes[0], emca.items()):
        width = 0.8 / max(len(m[key]) for m in modules)
        for i, module in enumerate(modules):
            bottom = 0.0
            for r, (value, source) in enumerate(zip(module[key], module["sources"])):
                style = {"color": palette[r % len(palette)], "label": f"r={r}"}
                if stacked:
                    ax.bar(i, value, width=0.6, bottom=bottom, **style)
                    bottom += value
                else:
                    x = i - 0.4 + width * (r + 0.5)
                    ax.bar(x, value, width=width, **style)
                    ax.annotate(_short(source), (x, max(value, 0)), fontsize=6, ha="center", va="bottom", rotation=90)
        ax.set_xticks(range(len(modules)), [f"stage {m['stage']}" for m in modules])
        ax.set(title=label, ylabel=ylabel)
        ax.axhline(0, color="black", lw=0.6)
    fig.legend(*_unique_legend(axes[0]), loc="outside right center", title="source r\n(0 = current map)")
    return _save(fig, out, name)


def _unique_legend(axes):
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def scale_weights_figure(models: dict[str, dict], out: Path) -> list[Path]:
    """EMCA's per-scale weights ``w_r``: one bar group per stage, one panel per EMCA model."""
    return _source_bars(models, out, "scale_weights", "scale_weights", "weight w_r", stacked=False)


def source_share_figure(models: dict[str, dict], out: Path) -> list[Path]:
    """Each source's share of EMCA's aggregated descriptor, stacked per stage."""
    return _source_bars(models, out, "source_share", "source_share", "share of mean |w_r s_r|", stacked=True)


def distribution_figure(models: dict[str, dict], out: Path) -> list[Path]:
    """Histogram (density) of channel scales per stage, one line per model."""
    colours = _colours(models)
    stages = sorted({s for result in models.values() for s in stage_modules(result)})
    if not stages:
        return []
    centres = (np.arange(BINS) + 0.5) / BINS
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 3.0), squeeze=False, layout="constrained")
    for ax, stage in zip(axes[0], stages):
        for label, result in models.items():
            module = stage_modules(result).get(stage)
            if module:
                counts = np.asarray(module["histogram"], dtype=float)
                ax.step(centres, counts / counts.sum() * BINS, where="mid", color=colours[label], lw=1.2, label=label)
        ax.set(title=f"stage {stage}", xlabel="channel scale z", xlim=(0, 1))
    axes[0, 0].set_ylabel("density")
    fig.legend(*_unique_legend(axes[0]), loc="outside lower center", ncols=4)
    return _save(fig, out, "scale_distribution")


def class_heatmap_figure(models: dict[str, dict], out: Path, stage: int = 3) -> list[Path]:
    """Class x channel mean scales of the first module of ``stage``, one panel per model."""
    panels = {label: stage_modules(result).get(stage) for label, result in models.items()}
    panels = {label: module for label, module in panels.items() if module}
    if not panels:
        return []
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.0 + 0.22 * 12 * len(panels)), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (label, module) in zip(axes[:, 0], panels.items()):
        class_names = models[label]["class_names"]
        rows = [(name, row) for name, row in zip(class_names, module["class_mean"]) if row is not None]
        image = ax.imshow(np.array([row for _, row in rows]), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                          interpolation="nearest")
        ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=7)
        ax.set(title=f"{label}: stage {stage} ({module['name']})", xlabel="channel index")
    fig.colorbar(image, ax=axes, label="mean scale z", shrink=0.8)
    return _save(fig, out, f"class_channel_stage{stage}")


def all_figures(data: dict, out: Path, stage: int = 3) -> list[Path]:
    """Every figure from the analysis JSON; returns the files written."""
    models = data["models"]
    with plt.rc_context(STYLE):
        paths = scaling_figure(models, out)
        paths += scale_weights_figure(models, out)
        paths += source_share_figure(models, out)
        paths += distribution_figure(models, out)
        paths += class_heatmap_figure(models, out, stage)
    return paths
