"""The files of a robustness run, as read back: the results JSON and the ``.cells.jsonl`` lines.

Both are checked against a schema (types, ranges, sizes, consistency) before any tool uses
them, so a truncated, edited or foreign file is one line naming it and its first problem.
Optional fields of the results JSON get their defaults here: ``ce`` and ``relative_ce`` ``{}``
(no CE shown), the scores ``None`` (shown as a dash), ``data``/``split``/``backend``/``baseline``
``None``, the per-image correctness (``correct_clean``, ``correct``: hex strings of packed bits,
:func:`emca_vis.stats.pack_hits`) absent and ``intervals`` ``None`` (no intervals shown). Per-image
correctness must agree with the errors it comes with.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import UserError
from ..outputs import write_text
from ..stats import unpack_hits
from ..validation import FreeJson, Name, Text, parse_json, read_bytes, validate
from .corruptions import SEVERITIES

MAX_MODELS = 100
MAX_CORRUPTIONS = 50
# Per-image correctness takes n / 4 characters per cell: 7 models x 76 cells on 500 images ~70 kB,
# on ImageNet's 50,000 validation images ~6.6 MB (so the limit holds ~60 such models).
MAX_RESULTS_BYTES = 64 << 20
MAX_CELLS_BYTES = 128 << 20
MAX_IMAGES_PACKED = 10_000_000

Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
Ratio = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False, strict=True)]
Severity = Annotated[int, Field(ge=min(SEVERITIES), le=max(SEVERITIES), strict=True)]
SeverityKey = Annotated[str, Field(pattern=f"^[{min(SEVERITIES)}-{max(SEVERITIES)}]$")]
Count = Annotated[int, Field(ge=0, le=10**12, strict=True)]
Hits = Annotated[str, Field(pattern="^[0-9a-f]*$", max_length=MAX_IMAGES_PACKED // 4)]
Bounds = Annotated[list[Ratio], Field(min_length=2, max_length=2)]


def _check_hits(hits: str, n: int, error: float | None, where: str) -> None:
    try:
        correct = unpack_hits(hits, n)
    except ValueError as problem:
        raise ValueError(f"{where}: {problem}") from None
    if error is not None and abs(1 - correct.sum() / n - error) > 1e-9:
        raise ValueError(f"{where}: {int(correct.sum())} of {n} images right does not give the error {error}")


class ModelResults(BaseModel):
    """One model's errors and scores (fractions; CE as a ratio of the baseline's errors)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]

    clean_error: Fraction
    errors: dict[Name, dict[SeverityKey, Fraction]] = Field(max_length=MAX_CORRUPTIONS)
    checkpoint: Text | None = None
    n: Annotated[int, Field(ge=1, le=10**12, strict=True)] | None = None
    ce: dict[Name, Ratio | None] = Field(default_factory=dict, max_length=MAX_CORRUPTIONS)
    relative_ce: dict[Name, Ratio | None] = Field(default_factory=dict, max_length=MAX_CORRUPTIONS)
    mce: Ratio | None = None
    relative_mce: Ratio | None = None
    mce_over: list[Name] = Field(default_factory=list, max_length=MAX_CORRUPTIONS)
    mean_corruption_accuracy: Fraction | None = None
    correct_clean: Hits | None = None
    correct: dict[Name, dict[SeverityKey, Hits]] = Field(default_factory=dict, max_length=MAX_CORRUPTIONS)

    @model_validator(mode="after")
    def _per_image(self) -> ModelResults:
        if self.correct_clean is None:
            if self.correct:
                raise ValueError("correct: per-image results without correct_clean")
            return self
        if self.n is None:
            raise ValueError("correct_clean: per-image results need n")
        _check_hits(self.correct_clean, self.n, self.clean_error, "correct_clean")
        if set(self.correct) != set(self.errors):
            raise ValueError("correct: its corruptions are not those of errors")
        for corruption, by_severity in self.correct.items():
            if set(by_severity) != set(self.errors[corruption]):
                raise ValueError(f"correct.{corruption}: its severities are not those of errors")
            for severity, hits in by_severity.items():
                _check_hits(hits, self.n, self.errors[corruption][severity], f"correct.{corruption}.{severity}")
        return self


class _Difference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    difference: Ratio
    low: Ratio
    high: Ratio

    @model_validator(mode="after")
    def _ordered(self) -> _Difference:
        if self.low > self.high:
            raise ValueError(f"low={self.low} is above high={self.high}")
        return self


class _CleanDifference(_Difference):
    a_only: Count
    b_only: Count
    p_value: Fraction


class _Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: Name
    b: Name
    clean_error: _CleanDifference
    mce: _Difference | None = None
    relative_mce: _Difference | None = None
    mean_corruption_accuracy: _Difference | None = None


class _ModelIntervals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clean_error: Bounds | None = None
    mce: Bounds | None = None
    relative_mce: Bounds | None = None
    mean_corruption_accuracy: Bounds | None = None
    ce: dict[Name, Bounds | None] = Field(default_factory=dict, max_length=MAX_CORRUPTIONS)


class Intervals(BaseModel):
    """Paired bootstrap intervals and McNemar tests (:func:`emca_vis.stats.robustness_intervals`)."""

    model_config = ConfigDict(extra="forbid")

    level: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False, strict=True)]
    resamples: Annotated[int, Field(ge=1, le=10**7, strict=True)]
    seed: Count
    n: Annotated[int, Field(ge=1, le=10**12, strict=True)]
    models: dict[Name, _ModelIntervals] = Field(max_length=MAX_MODELS)
    pairs: list[_Pair] = Field(max_length=MAX_MODELS * (MAX_MODELS - 1) // 2)


class Results(BaseModel):
    """The results JSON of ``python -m emca_vis.robustness`` (also the report's ``robustness.json``)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]

    models: dict[Name, ModelResults] = Field(min_length=1, max_length=MAX_MODELS)
    corruptions: list[Name] = Field(max_length=MAX_CORRUPTIONS)
    severities: list[Severity] = Field(max_length=len(SEVERITIES))
    data: Text | None = None
    split: Name | None = None
    backend: Name | None = None
    baseline: Name | None = None
    intervals: Intervals | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Results:
        if self.intervals is not None:
            named = set(self.intervals.models) | {p.a for p in self.intervals.pairs} | {p.b for p in self.intervals.pairs}
            if named - set(self.models):
                raise ValueError(f"intervals: model {sorted(named - set(self.models))[0]!r} is not among the models")
        severities = {str(s) for s in self.severities}
        for label, model in self.models.items():
            if set(model.errors) != set(self.corruptions):
                odd = sorted(set(model.errors) ^ set(self.corruptions))[0]
                raise ValueError(f"models.{label}.errors: its corruptions are not those listed (e.g. {odd!r})")
            for corruption, by_severity in model.errors.items():
                if set(by_severity) != severities:
                    odd = sorted(set(by_severity) ^ severities)[0]
                    raise ValueError(f"models.{label}.errors.{corruption}: its severities are not those listed "
                                     f"(e.g. {odd})")
        return self


StabilityValue = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)] | None


class CellStability(BaseModel):
    """A cell's per-image heatmap stability (``--stability``): the method, then each measure's
    values (None where undefined), one per image."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, list[StabilityValue]]

    method: Name


class Cell(BaseModel):
    """One line of ``<out>.cells.jsonl``: a finished (model, corruption, severity): a classifier's
    count of right images (``correct``, ``hits``), or a detector's COCO metrics (``metrics``)."""

    model_config = ConfigDict(extra="forbid")

    model: Name
    corruption: Name
    severity: Annotated[int, Field(ge=0, le=max(SEVERITIES), strict=True)]
    correct: Count | None = None
    total: Annotated[int, Field(ge=1, le=10**12, strict=True)]
    hits: Hits | None = None  # per image, packed; absent in cells of older runs (they are redone)
    metrics: dict[Name, Fraction | None] | None = Field(default=None, max_length=50)
    setting: Text
    stability: CellStability | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Cell:
        if (self.correct is None) == (self.metrics is None):
            raise ValueError("a cell holds either correct (a classifier's) or metrics (a detector's)")
        if self.metrics is not None:
            if self.hits is not None:
                raise ValueError("hits: a detector's cell holds metrics, not per-image hits")
        elif self.correct > self.total:
            raise ValueError(f"correct={self.correct} is more than total={self.total}")
        if self.hits is not None:
            try:
                hits = unpack_hits(self.hits, self.total)
            except ValueError as problem:
                raise ValueError(f"hits: {problem}") from None
            if int(hits.sum()) != self.correct:
                raise ValueError(f"hits: {int(hits.sum())} images right, not correct={self.correct}")
        if (self.corruption == "clean") != (self.severity == 0):
            raise ValueError("severity 0 is for the clean cell only")
        for name, values in (self.stability.__pydantic_extra__ if self.stability else {}).items():
            if len(values) != self.total:
                raise ValueError(f"stability.{name}: {len(values)} values for {self.total} images")
        return self


def parse_results(data: bytes | str, name: str) -> dict[str, Any]:
    """Results JSON text -> checked dict with defaults filled in; one-line :class:`UserError` otherwise.
    A detector run's results (``"task": "detection"``) have their own schema
    (:class:`emca_vis.detection.robustness.DetectionResults`)."""
    raw = parse_json(data, name, MAX_RESULTS_BYTES)
    if isinstance(raw, dict) and raw.get("task") == "detection":
        from ..detection.robustness import DetectionResults

        return validate(DetectionResults, raw, name).model_dump(mode="json")
    return validate(Results, raw, name).model_dump(mode="json")


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """A results JSON file, checked (see :func:`parse_results`)."""
    return parse_results(read_bytes(path, "file", MAX_RESULTS_BYTES), str(path))


def read_cells(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """The checked cells of a ``.cells.jsonl`` file. A last line cut short by a kill is not a
    cell: it is dropped (its cell is redone) and, with ``repair``, removed from the file so
    that appended cells start on a line of their own."""
    if not os.path.exists(path):
        return []
    raw = read_bytes(path, "file", MAX_CELLS_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; delete it to recompute its cells") from None
    complete = text[: text.rfind("\n") + 1]
    cells = []
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            cells.append(validate(Cell, parse_json(line, where, MAX_CELLS_BYTES), where).model_dump())
        except UserError as error:
            raise UserError(f"{error}; delete that line (or the file) to recompute its cell") from None
    if repair and complete != text:
        write_text(path, complete)
    return cells
