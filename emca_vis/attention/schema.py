"""``attention.json`` as read back by ``python -m emca_vis.attention --from``: one schema.

Types, ranges (scales in [0, 1]), sizes (models, modules, classes, channels, file size) and
consistency (one histogram bin per :data:`BINS`, one mean per channel, one class row per class,
one weight per source) are checked before any figure is drawn.
"""

from __future__ import annotations

import math
import os
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..checkpoint.metadata import MAX_CLASSES
from ..validation import FreeJson, Name, Text, read_json
from .analysis import BINS

MAX_MODELS = 100
MAX_MODULES = 100  # a ResNet-152 with attention in every block has 50
MAX_CHANNELS = 1 << 14
MAX_ATTENTION_BYTES = 256 << 20

Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
Finite = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False, strict=True)]
Int = Annotated[int, Field(ge=0, le=10**12, strict=True)]


class Module(BaseModel):
    """Statistics of one attention module (see :mod:`.analysis`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    __pydantic_extra__: dict[str, FreeJson]

    name: Name
    stage: Annotated[int, Field(ge=0, le=16, strict=True)]
    block: Annotated[int, Field(ge=0, le=1000, strict=True)]
    channels: Annotated[int, Field(ge=1, le=MAX_CHANNELS, strict=True)]
    images: Annotated[int, Field(ge=1, le=10**12, strict=True)]
    mean: Unit
    std: Unit
    entropy: Annotated[float, Field(ge=0, le=math.log2(BINS) + 1e-9, allow_inf_nan=False, strict=True)]
    frac_below: Unit = Field(alias="frac_below_0.1")
    frac_above: Unit = Field(alias="frac_above_0.9")
    histogram: list[Int] = Field(min_length=BINS, max_length=BINS)
    channel_mean: list[Unit] = Field(max_length=MAX_CHANNELS)
    channel_std: list[Unit] = Field(max_length=MAX_CHANNELS)
    class_mean: list[list[Unit] | None] = Field(max_length=MAX_CLASSES)
    class_selectivity: list[Finite] = Field(max_length=MAX_CHANNELS)
    sources: list[Name] = Field(min_length=1, max_length=64)
    scale_weights: list[Finite] | None = None
    source_share: list[Unit] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Module:
        for key in ("channel_mean", "channel_std"):
            if len(getattr(self, key)) != self.channels:
                raise ValueError(f"{len(getattr(self, key))} values in {key} for {self.channels} channels")
        if any(row is not None and len(row) != self.channels for row in self.class_mean):
            raise ValueError(f"a class_mean row does not have {self.channels} values")
        if len(self.class_selectivity) not in (0, self.channels):
            raise ValueError(f"{len(self.class_selectivity)} values in class_selectivity for {self.channels} channels")
        for key in ("scale_weights", "source_share"):
            values = getattr(self, key)
            if values is not None and len(values) != len(self.sources):
                raise ValueError(f"{len(values)} values in {key} for {len(self.sources)} sources")
        if (self.scale_weights is None) != (self.source_share is None):
            raise ValueError("scale_weights and source_share go together (EMCA modules)")
        return self


class ModelAttention(BaseModel):
    class_names: list[Name] = Field(max_length=MAX_CLASSES)
    modules: list[Module] = Field(max_length=MAX_MODULES)

    @model_validator(mode="after")
    def _consistent(self) -> ModelAttention:
        for module in self.modules:
            if len(module.class_mean) != len(self.class_names):
                raise ValueError(f"module {module.name}: {len(module.class_mean)} class_mean rows for "
                                 f"{len(self.class_names)} classes")
        return self


class AttentionData(BaseModel):
    """The whole file: ``{"inputs", "models": {label: {"class_names", "modules"}}, "errors"}``."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]

    inputs: Text | list[Text] = Field("", max_length=10_000)
    models: dict[Name, ModelAttention] = Field(min_length=1, max_length=MAX_MODELS)
    errors: list[Text] = Field(default_factory=list, max_length=1000)


def read_attention(path: str | os.PathLike) -> dict[str, Any]:
    """A saved ``attention.json``, checked; one-line :class:`UserError` naming it otherwise.
    Optional keys absent from the file stay absent (a module without ``scale_weights`` is not EMCA's)."""
    data = read_json(path, AttentionData, MAX_ATTENTION_BYTES)
    return data.model_dump(mode="json", by_alias=True, exclude_unset=True)
