"""Self-describing checkpoints: weights in safetensors, metadata as JSON in its header.

    save_checkpoint("runs/emca.safetensors", model, class_names=[...], metrics={"top1": 91.2})
    model, meta = load_checkpoint("runs/emca.safetensors")

One file holds both, so weights and metadata cannot drift apart. Nothing is ever
unpickled: foreign ``.pt``/``.pth`` files (e.g. torchvision weights) go through
``torch.load(weights_only=True)`` and need the architecture named.

    python -m emca_vis.checkpoint runs/*.safetensors    # print what each file holds
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..data import IMAGENET_MEAN, IMAGENET_STD
from ..errors import UserError
from ..models import UnknownModelError, create_model

META_KEY = "emca_vis"
FOREIGN_SUFFIXES = (".pt", ".pth", ".bin")
MODEL_OPTIONS = ("placement", "emca_stages", "emca_blocks", "stem", "width", "gate")


class CheckpointError(UserError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **meta) -> Path:
    """Write ``model``'s weights and metadata to ``path`` atomically (temp file + rename).

    ``model`` must come from :func:`create_model` (its ``config`` names the architecture).
    Metadata keywords, all optional: ``class_names``, ``input_size``, ``mean``, ``std``,
    ``dataset``, ``metrics``, ``train_args``, and anything else JSON-serialisable.
    """
    path = Path(path)
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("save_checkpoint needs a model built by emca_vis.models.create_model")
    num_classes = config["num_classes"]
    class_names = list(meta.pop("class_names", None) or [str(i) for i in range(num_classes)])
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for a model with {num_classes} classes")
    record = {
        "model": config["name"],
        "model_kwargs": {k: config[k] for k in MODEL_OPTIONS},
        "num_classes": num_classes,
        "class_names": class_names,
        "input_size": meta.pop("input_size", 224),
        "mean": list(meta.pop("mean", IMAGENET_MEAN)),
        "std": list(meta.pop("std", IMAGENET_STD)),
        "dataset": meta.pop("dataset", None),
        "metrics": meta.pop("metrics", {}),
        "train_args": meta.pop("train_args", {}),
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **meta,
    }
    # Unwrap DDP / torch.compile wrappers; safetensors wants contiguous, unshared tensors.
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={META_KEY: json.dumps(record)})
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


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of an emca-vis checkpoint, without loading its weights."""
    path = _existing(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_short(error)})") from None
    if META_KEY not in header:
        raise CheckpointError(f"{path}: safetensors file without emca-vis metadata; was it written by save_checkpoint?")
    try:
        return json.loads(header[META_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: metadata is not valid JSON") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    num_classes: int | None = None, model: str | None = None, **model_kwargs):
    """Load a checkpoint; returns ``(model in eval mode, metadata dict)``.

    Args:
        num_classes: if given, the checkpoint must have exactly this many classes.
        model, model_kwargs: the architecture of a foreign ``.pt``/``.pth`` state dict
            (e.g. torchvision weights); ignored for emca-vis checkpoints, which say it.
    """
    path = _existing(path)
    if path.suffix in FOREIGN_SUFFIXES:
        state_dict, meta = _load_foreign(path, model, model_kwargs)
    else:
        meta = read_metadata(path)
        state_dict = read_state_dict(path)
    if num_classes is not None and meta["num_classes"] != num_classes:
        raise CheckpointError(f"{path}: has {meta['num_classes']} classes, expected {num_classes}")
    try:
        net = create_model(meta["model"], num_classes=meta["num_classes"], **meta.get("model_kwargs", {}))
    except (UnknownModelError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: metadata describes no buildable model ({error})") from None
    _check_weights_fit(path, net, state_dict)
    net.load_state_dict(state_dict)
    return net.to(map_location).eval(), meta


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    return path


def _short(error: Exception) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


def _check_weights_fit(path: Path, net: nn.Module, state_dict: dict) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} shape mismatches (e.g. {k}: file {tuple(state_dict[k].shape)}, "
                        f"model {tuple(own[k].shape)})")
    if problems:
        raise CheckpointError(f"{path}: weights do not match the metadata's architecture: {'; '.join(problems)}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file without building a model: an emca-vis
    ``.safetensors`` file or a foreign ``.pt``/``.pth`` state dict (read weights-only)."""
    path = _existing(path)
    if path.suffix not in FOREIGN_SUFFIXES:
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: weights cannot be read ({_short(error)})") from None
    try:
        # weights_only=True: tensors and plain containers only, never arbitrary objects.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure here means the file is unusable
        raise CheckpointError(f"{path}: refused or unreadable as a weights-only file ({_short(error)})") from None
    state_dict = loaded.get("state_dict", loaded.get("model", loaded)) if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _load_foreign(path: Path, model: str | None, model_kwargs: dict) -> tuple[dict, dict]:
    state_dict = read_state_dict(path)
    if model is None:
        raise CheckpointError(f"{path}: a foreign state dict does not say its architecture; name the model "
                              "(e.g. model='resnet50')")
    if "fc.weight" not in state_dict:
        raise CheckpointError(f"{path}: state dict has no fc.weight, so it is not a ResNet classifier")
    num_classes = state_dict["fc.weight"].shape[0]
    meta = {"model": model, "model_kwargs": model_kwargs, "num_classes": num_classes,
            "class_names": [str(i) for i in range(num_classes)], "input_size": 224, "resize": 256, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "dataset": None, "metrics": {}, "train_args": {}, "source": str(path)}
    return state_dict, meta


def describe(path: str | os.PathLike, model: str | None = None) -> str:
    """One line about a checkpoint, after checking its weights against its metadata."""
    _, meta = load_checkpoint(path, model=model)
    metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in meta["metrics"].items())
    return (f"{path}: {meta['model']} {meta['model_kwargs']}, {meta['num_classes']} classes, "
            f"{meta['input_size']} px, dataset={meta.get('dataset')}" + (f", {metrics}" if metrics else ""))
