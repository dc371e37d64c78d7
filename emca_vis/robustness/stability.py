"""``python -m emca_vis.robustness --stability [METHOD]``: heatmap stability in the same pass.

Each corrupted batch the robustness run classifies also gets its heatmaps (the ground-truth
class, as ``gradcam stability``), scored against the clean batch's heatmaps
(:class:`emca_vis.explain.stability_pass.StabilityPass`): the same numbers as
``python -m emca_vis.gradcam stability`` with the same ``--seed`` and ``--batch-size``. Every
cell line keeps its per-image measures (``stability`` in ``<out>.cells.jsonl``), so a resumed run
skips them like the errors; the results JSON gets ``stability`` (per model: the stability
tool's summaries per cell and per family) and ``stability_pairs`` (paired differences).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from ..errors import UserError
from ..explain.heatmaps import LAYER_METHODS, check_layer, check_method
from ..explain.stability_pass import StabilityPass, aggregate, families, pairs


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stability", nargs="?", const="gradcam", metavar="METHOD",
                        help="also heatmap stability of METHOD (default gradcam) between clean and corrupted images")


def start(args, models, dataset, info) -> Tracker | None:
    """The tracker for a group of models, None without ``--stability``; refuses what it cannot pair."""
    method = getattr(args, "stability", None)
    if not method:
        return None
    check_method(method)
    if args.c_data:
        raise UserError("--stability: needs the clean image of each corrupted one; not with --c-data")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--stability: runs in one process (not under torchrun)")
    if method in LAYER_METHODS:
        for m in models:
            check_layer(m.model, "layer4", m.input_size)
    return Tracker(method, dataset, info)


class Tracker:
    def __init__(self, method: str, dataset, info):
        self.method, self.dataset, self.info = method, dataset, info
        self.passes: dict[str, StabilityPass] = {}

    def _pass(self, m) -> StabilityPass:
        return self.passes.setdefault(m.label, StabilityPass([self.method]))

    def _masks(self, indices: list[int], loaded) -> np.ndarray | None:
        if self.info.kind != "shapes":
            return None
        from ..explain.stability_run import shape_masks

        return shape_masks([self.dataset.sample(i) for i in indices], loaded)

    def clean(self, models, batch: int, indices: list[int], images: torch.Tensor, labels: torch.Tensor) -> None:
        """The clean batch's heatmaps (from the clean cell's images, when that cell runs)."""
        masks = self._masks(indices, models[0])  # the models of a group share their preprocessing
        for m in models:
            self._pass(m).clean(m, batch, indices, images, labels.tolist(), masks)

    def corrupted(self, models, batch: int, indices: list[int], corruption: str, severity: int,
                  images: torch.Tensor, labels: torch.Tensor) -> None:
        for m in models:
            if (m.label, self.method, batch) not in self._pass(m)._clean:  # clean cell done by an earlier run
                clean, _ = zip(*(self.dataset[i] for i in indices))
                self.clean([m], batch, indices, torch.stack(clean), labels)
            self._pass(m).corrupted(m, batch, corruption, severity, images)

    def cell_data(self, label: str, corruption: str, severity: int) -> dict:
        """The cell line's ``stability``: ``{"method", measure: [per image, null where undefined]}``."""
        measures = self.passes[label].cell(label, self.method, corruption, severity)
        return {"method": self.method, **{name: [None if not np.isfinite(v) else round(float(v), 6) for v in values]
                                          for name, values in measures.items()}}


def needs(args, cell: dict | None, corruption: str) -> bool:
    """Whether a finished cell must be redone for ``--stability`` (it has no measures of that method)."""
    method = getattr(args, "stability", None)
    if not method or corruption == "clean" or cell is None:
        return False
    return (cell.get("stability") or {}).get("method") != method


def results(done: dict, labels: list[str], args) -> dict:
    """``stability`` and ``stability_pairs`` of the results JSON, from the cells' per-image measures."""
    method = args.stability

    def cells(label):
        return {(c, s): {name: np.array([np.nan if v is None else v for v in values], dtype=np.float64)
                         for name, values in done[(label, c, s)]["stability"].items() if name != "method"}
                for c in args.corruptions for s in args.severities}

    per_model = {label: cells(label) for label in labels}
    resamples = getattr(args, "resamples", 0) or 1000
    summary = {"method": method, "target": "ground truth", "families": families(args.corruptions), "models": {
        label: aggregate(per_model[label], args.corruptions, args.severities, resamples, args.seed)
        for label in labels}}
    return {"stability": summary,
            "stability_pairs": pairs(per_model, args.corruptions, args.severities, resamples, args.seed)}


def markdown(results: dict) -> str:
    """The stability table of a results dict, as ``gradcam stability`` prints it."""
    from ..explain.stability_run import markdown_table

    found = results["stability"]
    return markdown_table({"data": results.get("data"), "split": results.get("split"), "models": {
        label: {"methods": {found["method"]: summary}} for label, summary in found["models"].items()}})
