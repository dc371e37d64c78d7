"""The metadata of an emca-vis checkpoint: one schema, with the documented defaults of every
optional field, used by ``save_checkpoint`` before writing and by every reader.

Required: ``model`` (a registered name) and ``num_classes``. Optional, with defaults:

| field | default | checked |
|---|---|---|
| ``task`` | ``"classification"`` | ``"classification"`` or ``"detection"`` (see below) |
| ``detector`` | ``None``; for detection :class:`DetectorOptions`' defaults | its fields and ranges |
| ``model_kwargs`` | ``{}`` (``create_model``'s defaults) | known options of ``create_model``, their values |
| ``class_names`` | ImageNet's at 1000 classes, else ``"0"``, ``"1"``, ... | ``num_classes`` names, 1-256 characters |
| ``input_size`` | 224 | 8-2048 px |
| ``resize`` | ``round(input_size * 256 / 224)`` (256 at 224, torchvision's ratio) | ``input_size``-4096 px |
| ``mean``, ``std`` | ImageNet's | 3 finite numbers; ``std`` in [1e-6, 1e3] |
| ``dataset`` | ``None`` | a string |
| ``metrics``, ``train_args`` | ``{}`` | objects; the keys the tools show typed (``epoch``, ``val_top1``, ``lr``, ...) |
| anything else | kept | JSON nested at most 16 levels; NaN and infinities read as ``null`` |

A detection checkpoint (``task: "detection"``) names a detector in ``model``
(``fasterrcnn_resnet50_emca_eca_fpn``), counts object classes (background not included) in
``num_classes``, keeps the backbone's options in ``model_kwargs`` and the detector's in ``detector``.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic import ValidationInfo

from ..data import IMAGENET_MEAN, IMAGENET_STD
from ..detection.names import parse_detector_name
from ..models import UnknownModelError, create_model, parse_model_name
from ..models.attention import CBAM_SPATIALS, GATES, SRM_STDS
from ..models.registry import PLACEMENTS
from ..validation import FreeJson, Name, Text, first_problem
from .classes import IMAGENET_CLASSES, imagenet_classes

MAX_CLASSES = 100_000
MIN_INPUT_SIZE, MAX_INPUT_SIZE, MAX_RESIZE = 8, 2048, 4096
MAX_WIDTH = 4.0  # channel multiplier: 4x a ResNet-152 is already about a billion parameters
MAX_HEADER_BYTES = 32 << 20  # safetensors header (tensor table + metadata) of one checkpoint

Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, strict=True)]
Std = Annotated[float, Field(ge=1e-6, le=1e3, allow_inf_nan=False, strict=True)]
Mean = Annotated[float, Field(ge=-1e3, le=1e3, allow_inf_nan=False, strict=True)]
Count = Annotated[int, Field(strict=True)]  # an integer in the JSON: not true, 3.0 or "3"


def default_resize(input_size: int) -> int:
    """The evaluation resize (shorter side) when a checkpoint does not say: torchvision's 256 for 224."""
    return round(input_size * 256 / 224)


class ModelOptions(BaseModel):
    """``create_model`` keyword arguments; an option not given keeps ``create_model``'s default."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]

    placement: Literal[PLACEMENTS] | None = None
    emca_stages: Literal[0, 1, "all"] = 1
    emca_blocks: Literal[1, "all"] = "all"
    stem: Literal["imagenet", "cifar"] = "imagenet"
    width: float = Field(1.0, gt=0, le=MAX_WIDTH, allow_inf_nan=False, strict=True)
    gate: Literal[GATES] = "mul"
    eca_kernels: list[Annotated[int, Field(ge=1, le=255, strict=True)]] | None = Field(None, min_length=4,
                                                                                      max_length=4)
    srm_std: Literal[SRM_STDS] = "biased"
    cbam_spatial: Literal[CBAM_SPATIALS] = "paper"
    se_divisor: Annotated[int, Field(ge=1, le=64, strict=True)] | None = None
    fca_bias: bool = Field(True, strict=True)

    @model_validator(mode="after")
    def _known(self) -> ModelOptions:
        accepted = set(inspect.signature(create_model).parameters) - {"name", "num_classes"}
        unknown = sorted(set(self.model_extra or {}) - accepted)
        if unknown:
            raise ValueError(f"unknown model option {unknown[0]!r}; create_model takes {', '.join(sorted(accepted))}")
        return self


class DetectorOptions(BaseModel):
    """``create_detector``'s options (see :mod:`emca_vis.detection.models`)."""

    model_config = ConfigDict(extra="forbid")

    min_size: Count = Field(800, ge=8, le=MAX_RESIZE)
    max_size: Count = Field(1333, ge=8, le=MAX_RESIZE)
    trainable_layers: Count = Field(3, ge=0, le=5)
    frozen_bn: bool = True
    fpn_channels: Count = Field(256, ge=1, le=4096)
    representation_size: Count = Field(1024, ge=1, le=1 << 16)
    box_batch_size_per_image: Count = Field(512, ge=1, le=1 << 16)
    proposals: Count = Field(1000, ge=1, le=1 << 20)
    mask_channels: Count = Field(256, ge=1, le=4096)

    @model_validator(mode="after")
    def _sizes(self) -> DetectorOptions:
        if self.max_size < self.min_size:
            raise ValueError(f"max_size={self.max_size} is smaller than min_size={self.min_size}")
        return self


def _typed(schema: type[BaseModel]):
    """A validator of a free-form object whose well-known keys ``schema`` types; key order kept."""
    def check(value: dict) -> dict:
        try:
            known = schema.model_validate(value).model_dump(mode="json", exclude_unset=True)
        except ValidationError as error:
            raise ValueError(first_problem(error)) from None
        return {key: known[key] for key in value}

    return AfterValidator(check)


class Metrics(BaseModel):
    """Training metrics of the saved epoch; the keys the tools show are typed, others kept."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]

    epoch: Count | None = Field(None, ge=0, le=1_000_000)
    val_top1: Percent | None = None
    val_top5: Percent | None = None
    best_val_top1: Percent | None = None


class TrainArgs(BaseModel):
    """The training command's options; the ones the tools show are typed, others kept."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]

    epochs: Count | None = Field(None, ge=0, le=1_000_000)
    optimizer: Name | None = None
    lr: float | None = Field(None, ge=0, allow_inf_nan=False, strict=True)
    batch_size: Count | None = Field(None, ge=1, le=1 << 24)
    out: Text | None = None


class CheckpointMetadata(BaseModel):
    """What a checkpoint says about itself (see the module docstring for fields and defaults)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    __pydantic_extra__: dict[str, FreeJson]

    task: Literal["classification", "detection"] = "classification"
    model: Name
    num_classes: Count = Field(ge=1, le=MAX_CLASSES)
    model_kwargs: ModelOptions = Field(default_factory=ModelOptions)
    class_names: list[Name] | None = Field(None, max_length=MAX_CLASSES)
    input_size: Count = Field(224, ge=MIN_INPUT_SIZE, le=MAX_INPUT_SIZE)
    resize: Count | None = Field(None, ge=MIN_INPUT_SIZE, le=MAX_RESIZE)
    mean: list[Mean] = Field(list(IMAGENET_MEAN), min_length=3, max_length=3)
    std: list[Std] = Field(list(IMAGENET_STD), min_length=3, max_length=3)
    detector: DetectorOptions | None = None
    dataset: Text | None = None
    metrics: Annotated[dict[Name, Any], _typed(Metrics)] = Field(default_factory=dict)
    train_args: Annotated[dict[Name, Any], _typed(TrainArgs)] = Field(default_factory=dict)
    version: Name | None = None
    created: Name | None = None

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str, info: ValidationInfo) -> str:
        try:
            (parse_detector_name if info.data.get("task") == "detection" else parse_model_name)(name)
        except UnknownModelError as error:
            raise ValueError(str(error)) from None
        return name

    @model_validator(mode="after")
    def _consistent(self) -> CheckpointMetadata:
        if self.task == "detection" and self.detector is None:
            self.detector = DetectorOptions()
        elif self.task != "detection" and self.detector is not None:
            raise ValueError("detector options in a classification checkpoint")
        if self.class_names is None:
            self.class_names = (list(imagenet_classes()) if self.num_classes == IMAGENET_CLASSES
                                else [str(i) for i in range(self.num_classes)])
        elif len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for num_classes={self.num_classes}")
        if self.resize is None:
            self.resize = default_resize(self.input_size)
        elif self.resize < self.input_size:
            raise ValueError(f"resize={self.resize} is smaller than input_size={self.input_size} (the centre crop)")
        return self

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with every default filled in (options not given stay out of
        ``model_kwargs``, metrics not recorded out of ``metrics``)."""
        data = self.model_dump(mode="json")
        data["model_kwargs"] = self.model_kwargs.model_dump(mode="json", exclude_unset=True)
        return data


def check_metadata(raw: Any) -> dict[str, Any]:
    """``raw`` metadata checked, defaults filled in; ``ValueError`` with the first problem on one line."""
    if not isinstance(raw, dict):
        raise ValueError(f"is not a JSON object but {type(raw).__name__}")
    try:
        return CheckpointMetadata.model_validate(raw).as_dict()
    except ValidationError as error:
        raise ValueError(first_problem(error)) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
