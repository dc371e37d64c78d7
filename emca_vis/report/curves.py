"""Training curves from the logs ``python -m emca_vis.train`` writes (``metrics.csv`` / ``metrics.jsonl``).

A checkpoint does not carry its history, only its final metrics, so the log is looked for
where training put it: beside the checkpoint (``runs/x/best.safetensors``), in the run folder
named by the checkpoint's ``train_args.out``, or under ``<demo dir>/runs/<model>/``.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from ..attention.plots import STYLE  # noqa: E402
from ..demo import demo_dir  # noqa: E402
from ..errors import UserError  # noqa: E402
from ..inputs import LoadedModel  # noqa: E402
from ..validation import FreeJson, parse_json, read_bytes, validate  # noqa: E402
from .figures import MARKERS, colours, save_png  # noqa: E402

LOG_NAMES = ("metrics.jsonl", "metrics.csv")
MAX_LOG_BYTES = 64 << 20


def find_log(loaded: LoadedModel) -> Path | None:
    """The training log of a checkpoint, or ``None`` when none is where training writes it."""
    folders = [loaded.path.parent]
    out = loaded.meta["train_args"].get("out")
    if out:
        folders.append(Path(out))
    folders.append(demo_dir() / "runs" / loaded.meta["model"])
    for folder in folders:
        for name in LOG_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def read_log(path: Path) -> list[dict]:
    """Per-epoch rows of a ``metrics.csv`` or ``metrics.jsonl`` (numbers as floats)."""
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in LOG_NAMES if (path / n).is_file()), None)
        if found is None:
            raise UserError(f"{path}: no metrics.jsonl or metrics.csv in this folder")
        path = found
    try:
        text = read_bytes(path, "file", MAX_LOG_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: the training log is not UTF-8 text") from None
    if path.suffix == ".jsonl":
        lines = [(n, parse_json(line, f"{path}, line {n}", MAX_LOG_BYTES))
                 for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    else:
        lines = [(n, {k: _number(v) for k, v in row.items()})
                 for n, row in enumerate(csv.DictReader(text.splitlines()), start=2)]
    rows = [validate(LogRow, row, f"{path}, line {n}").model_dump() for n, row in lines]
    rows = [row for row in rows if row["epoch"] is not None]
    if not rows:
        raise UserError(f"{path}: no epoch rows; is it a metrics log of python -m emca_vis.train?")
    return rows


class LogRow(BaseModel):
    """One epoch of a training log: the numbers the figure draws are checked, the rest kept."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]

    epoch: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] | None = None
    val_top1: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    train_top1: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None


def _number(value: str):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None if value in ("", None) else value


def curves_figure(logs: dict[str, list[dict]], path: Path, endpoints: dict[str, tuple[float, float]] | None = None,
                  key: str = "val_top1") -> Path:
    """Top-1 (``val_top1``; ``train_top1`` dashed when logged) per epoch, one colour per model.

    ``endpoints``: models without a log, drawn as one marker at (epoch, top-1) from the
    checkpoint's metadata so they are not silently missing.
    """
    endpoints = endpoints or {}
    palette = colours(list(logs) + [label for label in endpoints if label not in logs])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
        for i, (label, rows) in enumerate(logs.items()):
            epochs = [row["epoch"] for row in rows]
            ax.plot(epochs, [row.get(key) for row in rows], color=palette[label], marker=MARKERS[i % len(MARKERS)],
                    markersize=3.5, lw=1.3, label=f"{label} (val)")
            if any(row.get("train_top1") is not None for row in rows):
                ax.plot(epochs, [row.get("train_top1") for row in rows], color=palette[label], lw=1.0, ls="--",
                        alpha=0.8, label=f"{label} (train)")
        for i, (label, (epoch, top1)) in enumerate(endpoints.items(), start=len(logs)):
            ax.plot([epoch], [top1], color=palette[label], marker=MARKERS[i % len(MARKERS)], ls="none",
                    markersize=6, label=f"{label} (checkpoint only)")
        ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)")
        ax.grid(lw=0.4, alpha=0.5)
        ax.legend(loc="lower right", fontsize=7)
        return save_png(fig, path)


def training_curves(models: Sequence[LoadedModel], path: Path, logs: dict[str, Path] | None = None) -> dict:
    """Find the logs, draw the figure; returns ``{"logs": {label: path}, "missing": [labels],
    "curves": {label: rows}, "figure": path or None}``."""
    found = dict(logs or {})
    for m in models:
        if m.label not in found:
            log = find_log(m)
            if log is not None:
                found[m.label] = log
    curves = {}
    for label, log in found.items():
        try:
            curves[label] = read_log(log)
        except UserError as error:  # a broken log costs its curve, not the report
            print(f"warning: no training curve for {label}: {error}", file=sys.stderr)
    found = {label: log for label, log in found.items() if label in curves}
    missing = [m.label for m in models if m.label not in curves]
    endpoints = {}
    for m in models:
        metrics = m.meta["metrics"]
        if m.label in missing and metrics.get("epoch") is not None and metrics.get("val_top1") is not None:
            endpoints[m.label] = (metrics["epoch"], metrics["val_top1"])
    figure = curves_figure(curves, path, endpoints) if curves or endpoints else None
    return {"logs": {label: str(p) for label, p in found.items()}, "missing": missing, "curves": curves,
            "figure": figure}
