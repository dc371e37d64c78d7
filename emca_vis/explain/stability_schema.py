"""The stability JSON as read back (``gradcam stability --from``, the report): checked against a
schema, so an edited or foreign file is one line naming its first problem."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..validation import FreeJson, Name, Text, read_json

MAX_STABILITY_BYTES = 64 << 20
Number = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]


class Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: Number | None
    ci_low: Number | None
    ci_high: Number | None
    n: Annotated[int, Field(ge=0, le=10**9)]


Measures = dict[Name, Summary]


class Family(BaseModel):
    model_config = ConfigDict(extra="allow")
    corruptions: list[Name] = Field(min_length=1, max_length=50)
    all: Measures
    severities: dict[Name, Measures]


class MethodResults(BaseModel):
    model_config = ConfigDict(extra="allow")
    cells: dict[Name, dict[Name, Measures]]
    families: dict[Name, Family]
    clean_pointing_game: Annotated[float, Field(ge=0, le=1)] | None = None


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]
    checkpoint: Text | None = None
    n: Annotated[int, Field(ge=1)]
    methods: dict[Name, MethodResults]


class StabilityData(BaseModel):
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FreeJson]
    data: Text | None = None
    split: Text | None = None
    methods: list[Name] = Field(min_length=1, max_length=20)
    corruptions: list[Name] = Field(min_length=1, max_length=50)
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(min_length=1, max_length=5)
    models: dict[Name, ModelEntry] = Field(min_length=1, max_length=100)
    pairs: dict[Name, list[dict[str, FreeJson]]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> StabilityData:
        for label, entry in self.models.items():
            for method in self.methods:
                if method not in entry.methods:
                    raise ValueError(f"models.{label}: no results for method {method}")
                cells = entry.methods[method].cells
                for corruption in self.corruptions:
                    if set(cells.get(corruption, {})) != {str(s) for s in self.severities}:
                        raise ValueError(f"models.{label}.methods.{method}.cells: {corruption} lacks a severity")
        return self


def read_stability(path) -> dict:
    return read_json(path, StabilityData, MAX_STABILITY_BYTES).model_dump(mode="json")
