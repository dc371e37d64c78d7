"""Self-describing checkpoints: weights in safetensors, metadata as JSON in its header.

    save_checkpoint("runs/emca.safetensors", model, class_names=[...], metrics={"top1": 91.2})
    model, meta = load_checkpoint("runs/emca.safetensors")

One file holds both, so weights and metadata cannot drift apart. Foreign files (torchvision,
timm, training scripts' containers; :mod:`.containers`, :mod:`.formats`) load once their
architecture is named, ``load_checkpoint("resnet50=r50.pth")`` (:mod:`.spec`); nothing is ever
unpickled: they go through ``torch.load(weights_only=True)``.

    python -m emca_vis.checkpoint runs/*.safetensors resnet50=r50.pth    # print what each file holds
    python -m emca_vis.checkpoint import r50.pth --model resnet50 --out r50.safetensors
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from .. import __version__
from ..errors import UserError
from ..models import UnknownModelError, create_model
from ..outputs import json_text
from ..validation import open_regular, parse_json, regular_file
from .containers import is_safetensors, read_tensors, short
from .formats import FormatError, detect_format, get_format
from .metadata import MAX_HEADER_BYTES, check_metadata
from .spec import CheckpointSpec, parse_spec

META_KEY = "emca_vis"


class CheckpointError(UserError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **meta) -> Path:
    """Write ``model``'s weights and metadata to ``path`` atomically (temp file + rename).

    ``model`` must come from :func:`create_model` or :func:`~emca_vis.detection.create_detector`
    (its ``config`` names the architecture; a detector's ``metadata`` adds task and options).
    Metadata keywords, all optional (defaults in :mod:`.metadata`): ``class_names``,
    ``input_size``, ``resize``, ``mean``, ``std``, ``dataset``, ``metrics``, ``train_args``, and
    anything else JSON-serialisable. Invalid metadata is a ``ValueError`` before anything is written.
    """
    path = Path(path)
    # Unwrap DDP / torch.compile wrappers; safetensors wants contiguous, unshared tensors.
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    config = getattr(module, "config", None)
    if config is None:
        raise ValueError("save_checkpoint needs a model built by create_model or create_detector")
    record = check_metadata({
        "model": config["name"],
        "model_kwargs": model_options(config),
        "num_classes": config["num_classes"],
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **getattr(module, "metadata", {}),  # a detector's task and options
        **meta,
    })
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={META_KEY: json_text(record, indent=None)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a checkpoint is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def model_options(config: dict) -> dict:
    """The ``create_model`` options of a model's ``config`` (everything but name and class count)."""
    return {k: v for k, v in config.items() if k not in ("name", "num_classes")}


def _header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """The safetensors header's metadata strings and tensor shapes, read without loading weights.
    The header's size is checked first, so a crafted one cannot make the reader allocate gigabytes."""
    with open_regular(path, "checkpoint file") as handle:
        prefix = handle.read(8)
        size = os.fstat(handle.fileno()).st_size
    if len(prefix) < 8:
        raise CheckpointError(f"{path}: not a readable safetensors file (shorter than its 8-byte header length)")
    length = int.from_bytes(prefix, "little")
    if length > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: safetensors header of {length:,} bytes is over the "
                              f"{MAX_HEADER_BYTES:,}-byte limit")
    if 8 + length > size:
        raise CheckpointError(f"{path}: truncated (header says {length:,} bytes, the file has {size - 8:,})")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({short(error)})") from None
    return metadata, shapes


def read_metadata(path: str | os.PathLike) -> dict:
    """The checked metadata of an emca-vis checkpoint, every optional field filled with its
    default (:mod:`.metadata`), without loading its weights."""
    path = _existing(path)
    return _metadata(path, _header(path)[0])


def _metadata(path: Path, header: dict[str, str]) -> dict:
    if META_KEY not in header:
        raise CheckpointError(f"{path}: safetensors file without emca-vis metadata; was it written by save_checkpoint?")
    try:
        raw = parse_json(header[META_KEY], f"{path}: metadata", MAX_HEADER_BYTES)
    except UserError as error:
        raise CheckpointError(str(error)) from None
    try:
        return check_metadata(raw)
    except ValueError as error:
        raise CheckpointError(f"{path}: metadata: {error}") from None


def load_checkpoint(checkpoint: str | os.PathLike | CheckpointSpec, map_location: str | torch.device = "cpu", *,
                    num_classes: int | None = None, model: str | None = None, format: str = "auto",
                    ema: bool = False, allow_nonfinite: bool = False, task: str | None = "classification",
                    **model_kwargs):
    """Load a checkpoint; returns ``(model in eval mode, metadata dict with every default filled in)``.

    Args:
        checkpoint: a path, or a spec string ``MODEL[:ema][:FORMAT]=PATH`` (:mod:`.spec`) naming
            what a foreign file holds; a ``Path`` is always a path.
        task: the task the caller handles (``"classification"``, ``"detection"``); a checkpoint
            of another task is a one-line error. ``None`` takes any.
        num_classes: if given, the checkpoint must have exactly this many classes.
        model, format, ema, model_kwargs: what a foreign file holds, as in a spec (the spec's
            values win where both are given): the architecture, its :mod:`.formats` entry
            (``"auto"``: detected from key names), the EMA weights of a training checkpoint,
            extra ``create_model`` options. An emca-vis checkpoint says all of it itself.
        allow_nonfinite: load weights holding NaN or infinities (refused otherwise), with a warning.
    """
    spec = parse_spec(checkpoint)
    model, ema = spec.model or model, spec.ema or ema
    fmt = spec.format if spec.format != "auto" else format
    path = _existing(spec.path)
    state_dict = None
    header, shapes = _header(path) if _is_safetensors(path) else ({}, {})
    if META_KEY in header:
        meta = _metadata(path, header)
        if model is not None and model != meta["model"]:
            raise CheckpointError(f"{path}: holds {meta['model']}, not {model} (an emca-vis checkpoint names "
                                  "its own model)")
        if ema:
            raise CheckpointError(f"{path}: an emca-vis checkpoint holds one set of weights; ':ema' applies to "
                                  "training checkpoints that hold two")
    else:
        state_dict, meta = _load_foreign(path, model, fmt, ema, model_kwargs)
        shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    if task is not None and meta["task"] != task:
        raise CheckpointError(f"{path}: a {meta['task']} checkpoint ({meta['model']}); this takes {task} checkpoints")
    if num_classes is not None and meta["num_classes"] != num_classes:
        raise CheckpointError(f"{path}: has {meta['num_classes']} classes, expected {num_classes}")
    # The architecture is first built on the meta device (no memory), so weights that do not fit
    # it are refused before metadata can make the loader allocate more than the file holds.
    with torch.device("meta"):
        skeleton = _build(path, meta)
    _check_weights_fit(path, {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, shapes)
    if state_dict is None:
        state_dict = read_state_dict(path)
    check_finite(path, state_dict, allow_nonfinite)
    net = _build(path, meta)
    net.load_state_dict(state_dict)
    meta["model_kwargs"] = model_options(net.config)  # the options in effect, create_model's defaults included
    return net.to(map_location).eval(), meta


def _is_safetensors(path: Path) -> bool:
    try:
        return is_safetensors(path)
    except UserError as error:
        raise CheckpointError(str(error)) from None


def _build(path: Path, meta: dict) -> nn.Module:
    try:
        if meta["task"] == "detection":
            from ..detection.models import create_detector  # torchvision's detectors, loaded when needed

            return create_detector(meta["model"], meta["num_classes"], **meta["detector"], mean=meta["mean"],
                                   std=meta["std"], **meta["model_kwargs"])
        return create_model(meta["model"], num_classes=meta["num_classes"], **meta["model_kwargs"])
    except (UnknownModelError, ValueError, TypeError, OverflowError) as error:
        raise CheckpointError(f"{path}: metadata describes no buildable model ({short(error)})") from None


def check_finite(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], allow: bool = False) -> None:
    """Refuse weights holding NaN or infinities (they poison every output); with ``allow``, warn loudly."""
    # A NaN or infinity makes the sum non-finite, so a finite sum clears a tensor; the exact
    # element-wise test (30x slower on CPU) only runs where the sum is not finite (or overflowed).
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v.sum()))
           and not bool(torch.isfinite(v).all())]
    if not bad:
        return
    what = f"{len(bad)} tensor{'s' if len(bad) > 1 else ''} with NaN or infinite values (first: {bad[0]})"
    if not allow:
        raise CheckpointError(f"{path}: {what}; --allow-nonfinite (allow_nonfinite=True) loads it anyway")
    print(f"warning: {path}: {what}; loaded anyway (--allow-nonfinite): its outputs may be NaN", file=sys.stderr)


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        regular_file(path, "checkpoint file")
    except UserError as error:
        raise CheckpointError(str(error)) from None
    return path


def _check_weights_fit(path: Path, own: dict[str, tuple], found: dict[str, tuple]) -> None:
    missing = sorted(set(own) - set(found))
    unexpected = sorted(set(found) - set(own))
    shapes = [k for k in own if k in found and own[k] != found[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} shape mismatches (e.g. {k}: file {found[k]}, model {own[k]})")
    if problems:
        raise CheckpointError(f"{path}: weights do not match the metadata's architecture: {'; '.join(problems)}")


def read_state_dict(path: str | os.PathLike, ema: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file without building a model: an emca-vis ``.safetensors``
    file, or a foreign file in any container of :mod:`.containers` (read weights-only), keys as
    they are in the file."""
    path = _existing(path)
    try:
        return read_tensors(path, ema)
    except UserError as error:
        raise CheckpointError(str(error)) from None


def _load_foreign(path: Path, model: str | None, fmt: str, ema: bool, model_kwargs: dict) -> tuple[dict, dict]:
    state_dict = read_state_dict(path, ema)
    try:
        found = detect_format(state_dict) if fmt == "auto" else get_format(fmt)
        name = found.model_name(model) if model is not None else None
        state_dict, options = found.convert(state_dict, name)
    except FormatError as error:
        raise CheckpointError(f"{path}: {error}") from None
    name = name or found.infer_model(state_dict)
    if name is None:
        raise CheckpointError(f"{path}: its key names do not say the architecture; name it as MODEL=PATH "
                              f"(e.g. resnet50_eca={path}; model='resnet50_eca' in Python)")
    if "fc.weight" not in state_dict:
        raise CheckpointError(f"{path}: state dict has no fc.weight, so it is not a ResNet classifier")
    try:  # every other field: the schema's defaults (ImageNet preprocessing at 224 px)
        meta = check_metadata({"model": name, "model_kwargs": {**options, **model_kwargs},
                               "num_classes": state_dict["fc.weight"].shape[0],
                               "source": {"file": str(path), "format": found.name, "ema": ema}})
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    return state_dict, meta


def describe(checkpoint: str | os.PathLike, model: str | None = None, allow_nonfinite: bool = False) -> str:
    """One line about a checkpoint (a path or spec), after checking its weights against its metadata."""
    path = parse_spec(checkpoint).path
    _, meta = load_checkpoint(checkpoint, model=model, allow_nonfinite=allow_nonfinite, task=None)
    metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in meta["metrics"].items())
    return (f"{path}: {meta['model']} {meta['model_kwargs']}, {meta['num_classes']} classes, "
            f"{meta['input_size']} px, dataset={meta['dataset']}" + (f", {metrics}" if metrics else ""))
