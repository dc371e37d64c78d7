"""The report's compute stage: run every analysis once, save the numbers, draw the figures.

Everything the renderer needs goes into ``<out>/report.json`` (numbers, settings, figure paths
relative to ``<out>``), with CSVs beside it and PNGs under ``<out>/figures/``. The analyses
themselves are the library's (robustness, explanations, attention); this is glue.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Subset

from .. import __version__
from ..attention import analyse
from ..attention.plots import STYLE, scale_weights_figure, scaling_figure, source_share_figure
from ..checkpoint.classes import same_classes
from ..data import build_dataset
from ..errors import UserError
from ..explain.evaluate import evaluation_set, score_model, write_csv
from ..explain.heatmaps import LAYER_METHODS, check_layer
from ..explain.stability_figures import robustness_figure as stability_figure
from ..inputs import LoadedModel, load_models
from ..outputs import strict, write_json, write_npz
from ..robustness import IMAGENET_C, evaluate
from . import detection, figures, grid
from .curves import training_curves
from .models import architecture, model_rows

STAGES = ("models", "robustness", "explanations", "grad-cam grid", "attention", "figures")


@dataclasses.dataclass
class Settings:
    """Every option of a report run (the CLI's, with the same defaults); saved in report.json."""

    checkpoints: list[str] | None = None
    data: str = "shapes"
    split: str = "test"
    n_clean: int = 500
    n_robustness: int = 100
    corruptions: list[str] = dataclasses.field(default_factory=lambda: list(IMAGENET_C))
    severities: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5])
    backend: str = "torch"
    baseline: str | None = None
    n_explain: int = 100
    methods: list[str] = dataclasses.field(default_factory=lambda: ["gradcam"])
    layer: str = "layer4"
    faithfulness: bool = True
    steps: int = 10
    boxes: str | None = None
    n_attention: int = 128
    attention_split: str = "val"
    samples: int = 3
    images: list[str] = dataclasses.field(default_factory=list)
    grid_corruptions: list[str] = dataclasses.field(default_factory=lambda: ["gaussian_noise", "motion_blur", "fog"])
    grid_severities: list[int] = dataclasses.field(default_factory=lambda: [1, 3, 5])
    batch_size: int = 100
    throughput_batch: int = 16
    repeats: int = 5
    seed: int = 0  # corruption noise and bootstrap resamples
    resamples: int = 1000  # bootstrap resamples of the paired intervals
    stability: str | None = None  # heatmap method whose stability the robustness run measures
    resume: bool = False
    allow_nonfinite: bool = False
    detection_data: str = "multishapes"  # detector checkpoints are scored here (same split)
    title: str = "Robustness and interpretability report"


class _Stages:
    """Progress lines on stderr: each stage as it starts, with the seconds the previous one took."""

    def __init__(self):
        self.started = None

    def __call__(self, index: int, text: str) -> None:
        self.finish()
        print(f"[{index}/{len(STAGES)}] {text}", file=sys.stderr, flush=True)
        self.started = time.perf_counter()

    def detection(self, text: str) -> None:
        self.finish()
        print(f"[detection] {text}", file=sys.stderr, flush=True)
        self.started = time.perf_counter()

    def finish(self) -> None:
        if self.started is not None:
            print(f"      done in {time.perf_counter() - self.started:.1f} s", file=sys.stderr, flush=True)
        self.started = None


def compute_report(settings: Settings, out: Path, command: str = "") -> dict:
    """Run all analyses for ``settings``; writes ``out/report.json`` and returns it."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    _stage = _Stages()
    loaded = load_models(settings.checkpoints, failures, settings.allow_nonfinite, task=None)
    models = [m for m in loaded if m.task.name == "classification"]
    detectors = [m for m in loaded if m.task.name == "detection"]
    if any(method in LAYER_METHODS for method in settings.methods):
        for m in models:
            check_layer(m.model, settings.layer, m.input_size)
    report = {"title": settings.title, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "version": __version__, "command": command, "settings": dataclasses.asdict(settings),
              "environment": {"torch": torch.__version__, "python": platform.python_version(),
                              "threads": torch.get_num_threads(), "device": "cpu"},
              "errors": failures, "figures": {}, "models": []}
    if detectors:
        _stage.detection(f"detection: {len(detectors)} detectors x "
                         f"{len(settings.corruptions) * len(settings.severities) + 1} cells on {settings.n_robustness} "
                         f"images of {settings.detection_data}")
        report["detection"] = strict(detection.compute(detectors, settings, out))
    if models:
        _classifier_stages(report, models, settings, out, _stage)
    report = strict(report)
    write_json(out / "report.json", report)
    _stage.finish()
    return report


def _classifier_stages(report: dict, models: list[LoadedModel], settings: Settings, out: Path, _stage) -> None:
    _stage(1, f"models: parameters, GFLOPs, throughput, clean accuracy on {settings.n_clean} images")
    report["models"] = model_rows(models, settings.data, settings.split, settings.n_clean, settings.batch_size,
                                  settings.throughput_batch, settings.repeats)
    _write_models_csv(report["models"], out / "models.csv")
    curves = training_curves(models, out / "figures" / "training_curves.png")
    report["training_logs"] = {"logs": curves["logs"], "missing": curves["missing"]}
    if curves["figure"]:
        report["figures"]["training_curves"] = _relative(curves["figure"], out)

    cells = len(settings.corruptions) * len(settings.severities) + 1
    _stage(2, f"robustness: {len(models)} models x {cells} cells on {settings.n_robustness} images")
    report["robustness"] = _partial_relative(strict(_robustness(models, settings, out)))
    report["corruption_families"] = figures.families(report["robustness"]["corruptions"])
    report["imagenet_c"] = list(IMAGENET_C)

    _stage(3, f"explanations: {', '.join(settings.methods)} scored on {settings.n_explain} images")
    report["explanations"] = _explanations(models, settings, out)

    _stage(4, f"Grad-CAM grid: {settings.samples or len(settings.images)} images, "
              f"{', '.join(settings.grid_corruptions)} at severities {settings.grid_severities}")
    report["grad_cam_grid"] = _grid(models, settings, out)

    _stage(5, f"attention: channel scales over {settings.n_attention} images")
    report["attention"] = _attention(models, settings, out)

    _stage(6, "figures")
    report["figures"].update(_robustness_figures(report["robustness"], out))


def _relative(path: Path, out: Path) -> str:
    return Path(path).relative_to(out).as_posix()


def _write_models_csv(rows: list[dict], path: Path) -> None:
    flat = []
    for row in rows:
        clean = row["clean"] or {}
        flat.append({"model": row["label"], "architecture": row["model"], "kind": row["kind"],
                     "placement": row["placement"], "params": row["params"], "gflops": row["gflops"],
                     "throughput": row["throughput"], "relative_throughput": row["relative_throughput"],
                     "clean_top1": clean.get("top1"), "clean_top5": clean.get("top5"), "n": clean.get("n"),
                     **{f"train_{k}": v for k, v in row["training"].items()}, "checkpoint": row["checkpoint"]})
    write_csv(flat, path)


def _robustness(models: list[LoadedModel], settings: Settings, out: Path) -> dict:
    path = out / "robustness.json"
    cells = path.with_suffix(".cells.jsonl")
    if cells.exists() and not settings.resume:
        cells.unlink()  # cells are keyed by model label: other checkpoints may share the labels
    baseline = settings.baseline
    if baseline is None:  # CE relative to the plain ResNet when there is one, else the first checkpoint
        plain = [m.label for m in models if architecture(m.meta)["attention"] is None]
        baseline = plain[0] if plain and not settings.data.startswith("imagenet") else None
    return evaluate(checkpoint=[m.spec for m in models], data=settings.data, split=settings.split,
                    corruptions=list(settings.corruptions), severities=list(settings.severities),
                    backend=settings.backend, n=settings.n_robustness, batch_size=settings.batch_size,
                    seed=settings.seed, resamples=settings.resamples, baseline=baseline, out=str(path),
                    allow_nonfinite=settings.allow_nonfinite, stability=settings.stability,
                    overwrite=not settings.resume)


def _explanations(models: list[LoadedModel], settings: Settings, out: Path) -> dict:
    args = SimpleNamespace(method=list(settings.methods), batch_size=50, layer=settings.layer,
                           faithfulness=settings.faithfulness, steps=settings.steps, road=False)
    rows = []
    try:
        for m in models:
            images, masks, labels = evaluation_set(m, settings.data, settings.split, settings.n_explain,
                                                   settings.boxes)
            rows.extend(score_model(m, images, masks, labels, args, per_image=True))
    except UserError as error:  # no masks or boxes for this dataset: the section says so
        print(f"warning: explanation metrics skipped: {error}", file=sys.stderr)
        return {"skipped": str(error), "rows": []}
    write_csv([{k: v for k, v in row.items() if k != "per_image"} for row in rows], out / "explanations.csv")
    return {"methods": list(settings.methods), "layer": settings.layer, "target": "true class",
            "faithfulness": settings.faithfulness, "steps": settings.steps, "rows": rows}


def _grid(models: list[LoadedModel], settings: Settings, out: Path) -> dict:
    samples = grid.sample_images(settings.data, settings.split, settings.samples, settings.images)
    conds = grid.conditions(settings.grid_corruptions, settings.grid_severities)
    records, arrays = [], {}
    for i, sample in enumerate(samples):
        record, sample_arrays = grid.explain_sample(models, sample, conds, settings.methods[0], settings.layer,
                                                    settings.seed)
        title = f"Image {i + 1}" + (f": true class {sample['true']}" if sample["true"] else f": {sample['source']}")
        path = grid.grid_figure(record, sample_arrays, out / "figures" / f"grad_cam_{i + 1}.png", title)
        record["figure"] = _relative(path, out)
        records.append(record)
        arrays.update({f"image{i + 1}/{key}": value for key, value in sample_arrays.items()})
    write_npz(out / "grad_cam_grid.npz", arrays)
    return {"method": settings.methods[0], "layer": settings.layer, "target": "predicted class",
            "samples": records}


def attention_data(models: list[LoadedModel], spec: str, split: str, n: int, batch_size: int = 64) -> dict:
    """The attention analysis (:func:`emca_vis.attention.analyse`) of each model over the first
    ``n`` images of a split, in the format of ``attention.json``."""
    data = {"inputs": f"{spec} {split} (first {n})", "models": {}}
    for m in models:
        dataset, info = build_dataset(spec, split, image_size=m.input_size, train=False)
        if not same_classes(info.class_names, m.class_names):
            raise UserError(f"{m.path}: its classes differ from those of {spec}")
        loader = DataLoader(Subset(dataset, range(min(n, len(dataset)))), batch_size=batch_size)
        data["models"][m.label] = analyse(m.model, m.class_names, loader, total=len(loader), desc=m.label)
    return data


def _attention(models: list[LoadedModel], settings: Settings, out: Path) -> dict:
    try:
        data = attention_data(models, settings.data, settings.attention_split, settings.n_attention)
    except UserError as error:
        print(f"warning: attention analysis skipped: {error}", file=sys.stderr)
        return {"skipped": str(error), "figures": {}, "scale_weights": []}
    write_json(out / "attention.json", data)
    folder = out / "figures"
    with _style():
        paths = scaling_figure(data["models"], folder) + scale_weights_figure(data["models"], folder)
        paths += source_share_figure(data["models"], folder)
    found = {p.stem: _relative(p, out) for p in paths if p.suffix == ".png"}
    for p in paths:
        if p.suffix == ".svg":
            p.unlink()  # the report embeds PNGs; attention.json redraws SVGs with python -m emca_vis.attention
    weights = [{"model": label, "stage": module["stage"], "block": module["block"], "name": module["name"],
                "sources": module["sources"], "scale_weights": module["scale_weights"],
                "source_share": module["source_share"],
                "earlier_share": _earlier_share(module)}
               for label, result in data["models"].items() for module in result["modules"] if "scale_weights" in module]
    modules = {label: len(result["modules"]) for label, result in data["models"].items()}
    return {"inputs": data["inputs"], "figures": found, "scale_weights": weights, "modules": modules}


def _partial_relative(results: dict) -> dict:
    """Relative mCE is undefined as soon as one corruption leaves the baseline's error at its clean
    error; then also give it over the corruptions where it is defined (``relative_mce_partial``,
    ``relative_mce_partial_over``), which the report shows and labels as such."""
    for model in results["models"].values():
        over = [c for c in model.get("mce_over", []) if (model.get("relative_ce") or {}).get(c) is not None]
        if model.get("relative_mce") is None and over:
            model["relative_mce_partial"] = sum(model["relative_ce"][c] for c in over) / len(over)
            model["relative_mce_partial_over"] = over
    return results


def _earlier_share(module: dict) -> float | None:
    """Share of EMCA's aggregated descriptor from maps other than the current one."""
    shares = [share for source, share in zip(module["sources"], module["source_share"]) if source != "current"]
    return float(sum(shares)) if shares else None


def _style():
    import matplotlib.pyplot as plt

    return plt.rc_context(STYLE)


def _robustness_figures(results: dict, out: Path) -> dict:
    folder = out / "figures"
    found = {"robustness_families": figures.severity_figure(results, folder / "robustness_families.png"),
             "robustness_corruptions": figures.corruption_figure(results, folder / "robustness_corruptions.png"),
             "mce": figures.mce_figure(results, folder / "mce.png")}
    if results.get("stability"):
        found["stability"] = stability_figure(results, folder / "stability.png")
    return {key: _relative(path, out) for key, path in found.items() if path is not None}
