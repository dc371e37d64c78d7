"""Foreign file -> self-describing emca-vis checkpoint, verified before anything is written.

    import_checkpoint("r50.pth", "r50.safetensors", model="resnet50")
    python -m emca_vis.checkpoint import r50.pth --model resnet50 --out r50.safetensors

The weights must fit the architecture exactly (the loader names the first missing, unexpected or
mis-shaped tensors otherwise) and one forward pass must give finite logits. Metadata not given
gets the schema's defaults: ImageNet's class names at 1000 classes and ImageNet preprocessing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import UserError
from . import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from .classes import IMAGENET_CLASSES, imagenet_classes, read_classes
from .spec import parse_spec


def class_names_for(classes: str | os.PathLike | Sequence[str] | None, num_classes: int) -> list[str] | None:
    """``"imagenet"``, a file of names (:func:`.classes.read_classes`), a list, or ``None`` (the default)."""
    if classes is None:
        return None
    if isinstance(classes, str) and classes == "imagenet":
        names, what = list(imagenet_classes()), "ImageNet"
    elif isinstance(classes, (str, os.PathLike)):
        names, what = read_classes(classes), str(classes)
    else:
        names, what = list(classes), "class_names"
    if len(names) != num_classes:
        raise UserError(f"{what}: {len(names)} class names, but the checkpoint has {num_classes} classes"
                        + (f" (ImageNet has {IMAGENET_CLASSES})" if what == "ImageNet" else ""))
    return names


def import_checkpoint(source: str | os.PathLike, out: str | os.PathLike, *, model: str | None = None,
                      format: str = "auto", ema: bool = False,
                      classes: str | os.PathLike | Sequence[str] | None = None, input_size: int | None = None,
                      resize: int | None = None, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, dataset: str | None = None) -> tuple[Path, dict]:
    """Write ``source`` (a path or ``MODEL[:ema][:FORMAT]=PATH`` spec) to ``out`` as an emca-vis
    checkpoint; returns ``(out, its metadata)``. Nothing is written when a check fails."""
    spec = parse_spec(source)
    out = Path(out)
    if out.exists() and out.resolve() == spec.path.resolve():
        raise UserError(f"{out}: is the source file; write the import to another path")
    net, meta = load_checkpoint(spec, model=model, format=format, ema=ema)
    size = input_size if input_size is not None else meta["input_size"]
    with torch.no_grad():
        logits = net(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)))
    if not bool(torch.isfinite(logits).all()):
        raise CheckpointError(f"{spec.path}: a forward pass at {size} px gives NaN or infinite logits")
    given = {"class_names": class_names_for(classes, meta["num_classes"]), "input_size": input_size,
             "resize": resize, "mean": list(mean) if mean is not None else None,
             "std": list(std) if std is not None else None, "dataset": dataset}
    try:
        save_checkpoint(out, net, source=meta["source"], **{k: v for k, v in given.items() if v is not None})
    except ValueError as error:  # metadata the schema refuses; nothing was written
        raise UserError(f"{out}: metadata: {error}") from None
    return out, read_metadata(out)
