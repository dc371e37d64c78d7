"""``report.json`` as read back by the renderer (``python -m emca_vis.report --from``): one schema.

Every field a section or the summary reads is typed and bounded, and required where the
renderer needs it (the compute stage always writes it); figure paths must stay inside the
results folder. Sections that were skipped carry ``{"skipped": reason}``. Fields absent from
the file stay absent (the renderer shows a dash or leaves the part out).
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..detection.robustness import DetectionResults
from ..robustness.results import MAX_CORRUPTIONS, MAX_MODELS, Hits, ModelResults, Ratio, Results
from ..stats import unpack_hits
from ..validation import FreeJson, Name, Text, read_json

MAX_REPORT_BYTES = 96 << 20  # the robustness results (at most 64 MB) and the rest

Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
Number = Annotated[float, Field(ge=-1e15, le=1e15, allow_inf_nan=False, strict=True)]
Count = Annotated[int, Field(ge=0, le=10**15, strict=True)]


def _inside(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or "\\" in path or ".." in parts or ":" in parts[0]:
        raise ValueError(f"figure path {path!r} is not a relative path inside the results folder")
    return path


Figure = Annotated[str, Field(max_length=500), AfterValidator(_inside)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]


def _needs(model: BaseModel, *fields: str) -> None:
    """Fields a non-skipped section must have."""
    missing = [f for f in fields if f not in model.model_fields_set]
    if missing:
        raise ValueError(f"{missing[0]}: Field required")


class Clean(_Open):
    top1: Fraction
    top5: Fraction
    n: Annotated[int, Field(ge=1, strict=True)]
    correct: Hits | None = None  # top-1 per image, for McNemar's test

    @model_validator(mode="after")
    def _per_image(self) -> Clean:
        if self.correct is not None:
            try:
                hits = unpack_hits(self.correct, self.n)
            except ValueError as problem:
                raise ValueError(f"correct: {problem}") from None
            if abs(hits.sum() / self.n - self.top1) > 1e-9:
                raise ValueError(f"correct: {int(hits.sum())} of {self.n} images right does not give top1 {self.top1}")
        return self


class Training(_Open):
    dataset: Text | None
    input_size: Count | None
    epoch: Count | None
    epochs: Count | None
    optimizer: Name | None
    lr: Number | None
    batch_size: Count | None
    val_top1: Fraction | None
    val_top5: Fraction | None
    created: Name | None


class ModelRow(_Open):
    label: Name
    model: Name
    kind: Name
    placement: Name | None
    depth: Count | None
    attention: Name | None
    emca: bool
    params: Count | None
    gflops: Number | None
    throughput: Number | None
    relative_throughput: Number | None
    throughput_baseline: Name | None
    clean: Clean | None
    training: Training


class Settings(_Open):
    data: Text
    split: Name
    throughput_batch: Annotated[int, Field(ge=1, strict=True)]
    repeats: Annotated[int, Field(ge=1, strict=True)]


class ReportModelResults(ModelResults):
    n: Annotated[int, Field(ge=1, le=10**12, strict=True)]
    relative_mce_partial: Ratio | None = None
    relative_mce_partial_over: list[Name] = Field(default_factory=list, max_length=MAX_CORRUPTIONS)


class Robustness(Results):
    models: dict[Name, ReportModelResults] = Field(min_length=1, max_length=MAX_MODELS)
    data: Text
    split: Name
    backend: Name
    baseline: Name


class ExplanationRow(_Open):
    model: Name
    method: Name
    n: Annotated[int, Field(ge=1, strict=True)]
    top1: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, strict=True)]
    pointing_game_mean: Fraction | None = None
    pointing_game_ci_low: Fraction | None = None
    pointing_game_ci_high: Fraction | None = None
    energy_pointing_game_mean: Fraction | None = None
    deletion_auc_mean: Number | None = None
    insertion_auc_mean: Number | None = None
    per_image: dict[Name, list[Number]] | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _images(self) -> ExplanationRow:
        for metric, values in (self.per_image or {}).items():
            if len(values) != self.n:
                raise ValueError(f"per_image.{metric}: {len(values)} scores for n={self.n} images")
        return self

    @model_validator(mode="after")
    def _interval(self) -> ExplanationRow:
        if "pointing_game_mean" in self.model_fields_set:
            _needs(self, "pointing_game_ci_low", "pointing_game_ci_high")
        return self


class Explanations(_Open):
    skipped: Text | None = None
    rows: list[ExplanationRow] = Field(max_length=10_000)
    methods: list[Name] = Field(default_factory=list, max_length=50)
    layer: Name = "layer4"
    steps: Count | None = None

    @model_validator(mode="after")
    def _complete(self) -> Explanations:
        if not self.skipped:
            _needs(self, "methods", "layer")
        return self


class GridSample(_Open):
    true: Name | None = None
    source: Text
    conditions: list[Name] = Field(min_length=1, max_length=100)
    figure: Figure


class Grid(_Open):
    method: Name
    layer: Name
    samples: list[GridSample] = Field(default_factory=list, max_length=100)


class ScaleWeights(_Open):
    model: Name
    stage: Count | None = None
    sources: list[Name] = Field(min_length=1, max_length=64)
    scale_weights: list[Number] = Field(default_factory=list, max_length=64)
    earlier_share: Fraction | None = None


class Attention(_Open):
    skipped: Text | None = None
    inputs: Text | list[Text] = ""
    figures: dict[Name, Figure] = Field(max_length=50)
    scale_weights: list[ScaleWeights] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _complete(self) -> Attention:
        if not self.skipped:
            _needs(self, "inputs")
        return self


class DetectionRow(_Open):
    label: Name
    model: Name
    family: Name
    backbone: Name
    params: Count
    min_size: Count
    max_size: Count
    train_bbox_AP: Fraction | None = None


class DetectionGridSample(_Open):
    image_id: Count
    conditions: list[Name] = Field(min_length=1, max_length=100)
    figure: Figure


class DetectionGrid(_Open):
    method: Name
    layer: Name
    score_threshold: Fraction
    samples: list[DetectionGridSample] = Field(default_factory=list, max_length=100)


class Detection(_Open):
    """The detector checkpoints' part (:mod:`.detection`)."""

    data: Text
    split: Name
    models: list[DetectionRow] = Field(min_length=1, max_length=MAX_MODELS)
    robustness: DetectionResults
    figures: dict[Name, Figure] = Field(default_factory=dict, max_length=50)
    grid: DetectionGrid | None = None

    @model_validator(mode="after")
    def _same_models(self) -> Detection:
        if [row.label for row in self.models] != list(self.robustness.models):
            raise ValueError("robustness: its models are not the detector rows")
        return self


class Report(_Open):
    """Classifier checkpoints fill models, robustness, explanations and attention; detector
    checkpoints fill detection; a report has one or both."""

    title: Text
    created: Name
    version: Name
    command: Text = ""
    settings: Settings
    models: list[ModelRow] = Field(default_factory=list, max_length=MAX_MODELS)
    robustness: Robustness | None = None
    explanations: Explanations | None = None
    grad_cam_grid: Grid | None = None
    attention: Attention | None = None
    detection: Detection | None = None
    figures: dict[Name, Figure] = Field(max_length=50)
    corruption_families: dict[Name, list[Name]] = Field(default_factory=dict, max_length=MAX_CORRUPTIONS)
    imagenet_c: list[Name] = Field(default_factory=list, max_length=MAX_CORRUPTIONS)
    errors: list[Text] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _complete(self) -> Report:
        if self.models:
            _needs(self, "robustness", "explanations", "attention")
        elif self.detection is None:
            raise ValueError("models: no classifier rows and no detection part")
        return self


def read_report(path: str | os.PathLike) -> dict[str, Any]:
    """A ``report.json``, checked; one-line :class:`UserError` naming it otherwise."""
    return read_json(path, Report, MAX_REPORT_BYTES).model_dump(mode="json", exclude_unset=True)
