"""Detector names, ``{family}_{backbone}_fpn``: parsed without importing torchvision's detectors
(checkpoint metadata checks them on every read)."""

from __future__ import annotations

import re

from ..models import UnknownModelError, list_models, parse_model_name

FAMILIES = ("fasterrcnn", "maskrcnn", "retinanet")
_NAME = re.compile(r"(fasterrcnn|maskrcnn|retinanet)_(.+)_fpn")


def parse_detector_name(name: str) -> tuple[str, str]:
    """``"maskrcnn_resnet50_se_fpn"`` -> ``("maskrcnn", "resnet50_se")``."""
    match = _NAME.fullmatch(name)
    try:
        if not match:
            raise UnknownModelError
        parse_model_name(match.group(2))
    except UnknownModelError:
        raise UnknownModelError(f"unknown detector {name!r}; names are <{'|'.join(FAMILIES)}>_<backbone>_fpn "
                                "with a backbone from emca_vis.models.list_models()") from None
    return match.group(1), match.group(2)


def is_detector_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def list_detectors() -> list[str]:
    return [f"{family}_{backbone}_fpn" for family in FAMILIES for backbone in list_models()]
