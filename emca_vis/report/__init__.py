"""Robustness and interpretability report of several checkpoints: one HTML file, Markdown, and the data.

    python -m emca_vis.report --out report/                        # demo checkpoints on shapes
    python -m emca_vis.report --checkpoint a b c --data imagenet:/data/imagenet --split val --out report/
    python -m emca_vis.report --from report/                       # re-render only (seconds)

Two stages: :func:`compute_report` (:mod:`.compute`) runs the analyses (efficiency, clean
accuracy, corruption robustness, heatmap quality, Grad-CAM grids under corruption, attention
statistics) and saves numbers (``report.json``, CSVs) and figures; :mod:`.render` turns that folder into
``report.html`` (self-contained) and ``report.md``. :mod:`.summary` writes the sentences.
"""

from .render import render
from .summary import summarize

__all__ = ["Settings", "compute_report", "render", "summarize"]


def __getattr__(name: str):
    """``Settings`` and ``compute_report`` load the models' stack (torch, CAM libraries) on first
    use, so that rendering alone (``--from``) starts in a fraction of a second."""
    if name in ("Settings", "compute_report"):
        from importlib import import_module

        return getattr(import_module(f"{__name__}.compute"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
