"""Corruption robustness of detectors, as in Michaelis et al. (2019, "Benchmarking Robustness in
Object Detection: Autonomous Driving when Winter is Coming"): COCO AP on clean images and under
every corruption and severity.

* P_clean: box AP [0.5:0.95] (COCOeval) on the clean images
* mPC = mean of AP(c, s) over corruptions c and severities s (the paper: 15 corruptions x 5
  severities); averaged over the 15 ImageNet-C corruptions when all were run, otherwise over every
  corruption that was run (``mpc_over`` says which); the extra four are reported, not averaged in
* rPC = mPC / P_clean (undefined, ``None``, when the clean AP is 0)

The same summary is given for AP50 and, for Mask R-CNN, for mask AP (``summary``).
:mod:`emca_vis.robustness.evaluate` runs the cells; this module supplies what differs from
classifiers (through :class:`emca_vis.detection.task.DetectionTask`): the evaluation set in
pixels, corruption of whole images of any size, COCO metrics per cell gathered over processes,
pre-generated COCO-C folders, the results JSON, its table and CSV.

Corruptions act on each whole image before the detector's own resize, as in the paper. Images
of one batch that share a size are corrupted together; a group's noise seed depends only on its
batch's index, so any number of processes gives the numbers of one.

``--c-data coco-c:/root`` reads pre-generated corrupted images (the imagecorruptions layout of
Michaelis et al.'s benchmark tooling) with the clean split's annotations:
``/root/<corruption>/<severity>/<split folder>/<file_name>`` (e.g.
``coco-c/fog/3/val2017/000000000139.jpg``) or ``/root/<corruption>/<severity>/<file_name>``.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import UserError
from ..images import load_image
from ..outputs import write_csv
from ..robustness.corruptions import corrupt
from ..robustness.metrics import IMAGENET_C
from ..robustness.results import MAX_CORRUPTIONS, MAX_MODELS, Fraction, Severity, SeverityKey
from ..validation import FreeJson, Name, Text
from .data import CocoDetection, build_detection_dataset
from .evaluate import coco_metrics, to_coco_results

METRIC = "bbox_AP"  # the benchmark's: box AP [0.5:0.95]
SUMMARISED = ("bbox_AP", "bbox_AP50", "segm_AP")


def performance_under_corruption(clean: float | None, ap: dict[str, dict[int, float | None]]) -> dict:
    """mPC, rPC and the mean AP per corruption from a model's clean AP and AP per corruption and
    severity (fractions; ``ap[c][s]``). See the module docstring for what is averaged."""
    per_corruption = {c: _mean([v for v in by_severity.values()]) for c, by_severity in ap.items()}
    core = [c for c in IMAGENET_C if c in ap]
    over = core if len(core) == len(IMAGENET_C) else list(ap)
    mpc = _mean([v for c in over for v in ap[c].values()])
    rpc = mpc / clean if mpc is not None and clean else None
    return {"clean": clean, "mpc": mpc, "rpc": rpc, "per_corruption": per_corruption, "over": over}


def _mean(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else float(np.mean(values))


# ------------------------------------------------------------------ the cells ----------

def evaluation_set(loaded, spec: str, split: str, n: int) -> tuple[CocoDetection, SimpleNamespace]:
    """The first ``n`` images of a detection split, whole, in [0, 1] (what ``predict`` takes), and
    its info (``kind``, ``class_names``)."""
    dataset = build_detection_dataset(spec, split, masks=False, length=n, image_size=loaded.input_size)
    return dataset, SimpleNamespace(kind="detection", class_names=tuple(dataset.classes))


def corrupt_images(images: list[torch.Tensor], corruption: tuple, index: int) -> list[torch.Tensor]:
    """``corruption`` = (name, severity, backend, seed) on every image, same-size images together."""
    name, severity, backend, seed = corruption
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    out: list[torch.Tensor] = list(images)
    for k, members in enumerate(groups.values()):
        # Batches are at most a few thousand images, so k never reaches the next batch's seeds.
        corrupted = corrupt(torch.stack([images[i] for i in members]), name, severity, backend,
                            seed=(seed * 100_003 + index) * 65_536 + k)
        for i, image in zip(members, corrupted):
            out[i] = image
    return out


def _predicts_masks(model: torch.nn.Module) -> bool:
    heads = getattr(model, "roi_heads", None)
    return bool(heads is not None and getattr(heads, "has_mask", lambda: False)())


def cell_scores(models: list, source: CocoDetection, batches: list[tuple[int, list[int]]],
                corruption: tuple | None, n: int, world: int) -> list[dict]:
    """Each model's cell: COCO metrics over the first ``n`` images of ``source``. This process
    predicts its ``batches``; detections are gathered so that every process scores them all."""
    records: list[list[dict]] = [[] for _ in models]
    for index, indices in batches:
        images, targets = zip(*(source[i] for i in indices))
        if corruption is not None:
            images = corrupt_images(list(images), corruption, index)
        for m, found in zip(models, records):
            for output, target in zip(m.task.predict(m, list(images)), targets):
                found.extend(to_coco_results(output, int(target["image_id"]), source.category_ids))
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, records)
        records = [[r for part in gathered for r in part[i]] for i in range(len(models))]
    ids = source.ids[:n]
    return [{"metrics": coco_metrics(source.coco, found, ("bbox", "segm") if _predicts_masks(m.model) else ("bbox",),
                                     ids), "total": n}
            for m, found in zip(models, records)]


def c_data(spec: str, corruption: str, severity: int, clean: CocoDetection, split: str) -> CocoDetection:
    """The clean split's annotations over pre-generated corrupted images (module docstring)."""
    kind, _, path = spec.partition(":")
    if kind != "coco-c" or not path:
        raise UserError(f"--c-data {spec}: detectors read pre-generated corruptions as coco-c:/path")
    root = Path(path).expanduser()
    folder = root / corruption / str(severity)
    if not folder.is_dir():
        raise UserError(f"--c-data {spec}: no folder {folder}; expected {root}/<corruption>/<severity>/"
                        "[<split folder>/]<image file>")
    first = Path(str(clean.coco.imgs[clean.ids[0]]["file_name"]))
    for base in (folder / f"{split}2017", folder / split, folder):
        if (base / first).is_file():
            break
    else:
        raise UserError(f"--c-data {spec}: no image {first} in {folder} (nor in its {split}2017/ or {split}/)")

    def load(info: dict):
        name = Path(str(info.get("file_name", "")))
        if name.is_absolute() or ".." in name.parts or not name.name:
            raise UserError(f"--c-data {spec}: image {info['id']} has file_name {str(name)!r} outside {base}")
        return load_image(base / name)

    dataset = CocoDetection(clean.coco, load, masks=False)
    dataset.ids = list(clean.ids)
    return dataset


# ------------------------------------------------------------------ the results ----------

def results(models: list, done: dict, args) -> dict:
    """The results JSON of a detector run: every cell's metrics and each model's summaries."""
    out = {"task": "detection", "metric": METRIC, "data": args.data, "split": args.split, "backend": args.backend,
           "baseline": None, "corruptions": list(args.corruptions), "severities": list(args.severities),
           "settings": {key: getattr(args, key) for key in ("data", "split", "n", "backend", "seed", "c_data")},
           "models": {}}
    for m in models:
        clean = done[(m.label, "clean", 0)]["metrics"]
        metrics = {c: {str(s): done[(m.label, c, s)]["metrics"] for s in args.severities} for c in args.corruptions}
        summary = {}
        for key in SUMMARISED:
            if key in clean:
                summary[key] = performance_under_corruption(
                    clean[key], {c: {s: metrics[c][str(s)].get(key) for s in args.severities} for c in args.corruptions})
        box = summary[METRIC]
        out["models"][m.label] = {"checkpoint": m.spec, "model": m.meta["model"], "n": done[(m.label, "clean", 0)]["total"],
                                  "clean_ap": box["clean"], "mpc": box["mpc"], "rpc": box["rpc"],
                                  "mpc_over": box["over"], "mean_ap": box["per_corruption"],
                                  "ap": {c: {s: v.get(METRIC) for s, v in by_s.items()} for c, by_s in metrics.items()},
                                  "clean": clean, "metrics": metrics, "summary": summary}
    return out


def markdown_table(found: dict) -> str:
    """Clean AP, mPC, rPC and the mean AP per corruption (box AP [0.5:0.95], in %)."""
    corruptions = found["corruptions"]
    short = [c.replace("_noise", "").replace("_blur", "").replace("_transform", "").replace("_compression", "")
             for c in corruptions]
    lines = [f"Box AP [0.5:0.95] in %; mPC: mean AP over corruptions and severities {found['severities']}, "
             f"rPC: mPC / clean AP; {found['data']} {found['split']}, {found['backend']} backend",
             "| model | clean AP | AP50 | mPC | rPC (%) | " + " | ".join(short) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(corruptions)]
    for label, m in found["models"].items():
        cells = [_pct(m["clean_ap"]), _pct(m["clean"].get("bbox_AP50")), _pct(m["mpc"]), _pct(m["rpc"])]
        lines.append(f"| {label} | " + " | ".join(cells + [_pct(m["mean_ap"].get(c)) for c in corruptions]) + " |")
    masks = {label: m["summary"]["segm_AP"] for label, m in found["models"].items() if "segm_AP" in m["summary"]}
    if masks:
        lines += ["", "Mask AP [0.5:0.95] in %", "| model | clean AP | mPC | rPC (%) |", "|---|---:|---:|---:|"]
        lines += [f"| {label} | {_pct(s['clean'])} | {_pct(s['mpc'])} | {_pct(s['rpc'])} |" for label, s in masks.items()]
    return "\n".join(lines)


def csv_rows(found: dict, path: Path) -> None:
    """One row per model, corruption and severity (clean: severity 0) with every COCO metric."""
    keys = sorted({k for m in found["models"].values() for k in m["clean"]})
    rows = []
    for label, m in found["models"].items():
        rows.append([label, "clean", 0, *[m["clean"].get(k) for k in keys]])
        for c in found["corruptions"]:
            for s in found["severities"]:
                rows.append([label, c, s, *[m["metrics"][c][str(s)].get(k) for k in keys]])
    write_csv(path, [["" if v is None else v for v in row] for row in rows], header=["model", "corruption", "severity", *keys])


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


# ------------------------------------------------------------------ the schema ----------

Metrics = dict[Name, Fraction | None]
Ratio = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False, strict=True)]


class _Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clean: Fraction | None
    mpc: Fraction | None
    rpc: Ratio | None
    per_corruption: dict[Name, Fraction | None] = Field(max_length=MAX_CORRUPTIONS)
    over: list[Name] = Field(max_length=MAX_CORRUPTIONS)


class DetectionModelResults(BaseModel):
    """One detector's COCO metrics per cell and its summaries (fractions; rPC a ratio)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]

    checkpoint: Text | None = None
    model: Name | None = None
    n: Annotated[int, Field(ge=1, le=10**12, strict=True)]
    clean_ap: Fraction | None
    mpc: Fraction | None
    rpc: Ratio | None
    mpc_over: list[Name] = Field(max_length=MAX_CORRUPTIONS)
    mean_ap: dict[Name, Fraction | None] = Field(max_length=MAX_CORRUPTIONS)
    ap: dict[Name, dict[SeverityKey, Fraction | None]] = Field(max_length=MAX_CORRUPTIONS)
    clean: Metrics = Field(max_length=50)
    metrics: dict[Name, dict[SeverityKey, Metrics]] = Field(max_length=MAX_CORRUPTIONS)
    summary: dict[Name, _Summary] = Field(max_length=len(SUMMARISED))

    @model_validator(mode="after")
    def _consistent(self) -> DetectionModelResults:
        if self.clean.get(METRIC) != self.clean_ap:
            raise ValueError(f"clean_ap {self.clean_ap} is not the clean {METRIC} {self.clean.get(METRIC)}")
        for c, by_severity in self.metrics.items():
            for s, found in by_severity.items():
                if (self.ap.get(c) or {}).get(s, "missing") != found.get(METRIC):
                    raise ValueError(f"ap.{c}.{s}: not the {METRIC} of metrics.{c}.{s}")
        return self


class DetectionResults(BaseModel):
    """The results JSON of ``python -m emca_vis.robustness`` on detectors."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]

    task: Name
    metric: Name = METRIC
    models: dict[Name, DetectionModelResults] = Field(min_length=1, max_length=MAX_MODELS)
    corruptions: list[Name] = Field(max_length=MAX_CORRUPTIONS)
    severities: list[Severity] = Field(max_length=5)
    data: Text | None = None
    split: Name | None = None
    backend: Name | None = None
    baseline: None = None

    @model_validator(mode="after")
    def _complete(self) -> DetectionResults:
        severities = {str(s) for s in self.severities}
        for label, model in self.models.items():
            if set(model.metrics) != set(self.corruptions):
                raise ValueError(f"models.{label}.metrics: its corruptions are not those listed")
            for c, by_severity in model.metrics.items():
                if set(by_severity) != severities:
                    raise ValueError(f"models.{label}.metrics.{c}: its severities are not those listed")
        return self
