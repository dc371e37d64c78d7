"""The tensors of a checkpoint file, whatever container a training script wrapped them in.

A ``*.safetensors`` file, or one that starts like one (its header length, then ``{``), is read
as safetensors; anything else is read by ``torch.load(weights_only=True)``, which builds tensors
and plain containers only and refuses every other pickled object (so a pickle payload never runs).

Containers: a bare state dict; ``{"state_dict": ...}`` or ``{"model": ...}`` beside optimiser
state, epochs and arguments; EMA weights under ``"model_ema"`` or ``"state_dict_ema"`` (chosen
with ``ema=True``). Key prefixes of ``DistributedDataParallel`` (``module.``) and
``torch.compile`` (``_orig_mod.``) are removed when every key carries them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import UserError
from ..validation import open_regular

RAW_KEYS = ("state_dict", "model")
EMA_KEYS = ("model_ema", "state_dict_ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether the file is named ``*.safetensors`` or starts like one (8-byte header length, then ``{``)."""
    if Path(path).suffix == ".safetensors":
        return True
    with open_regular(path, "checkpoint file") as handle:
        start = handle.read(9)
    return len(start) == 9 and start[8:9] == b"{"


def read_tensors(path: str | os.PathLike, ema: bool = False) -> dict[str, torch.Tensor]:
    """The state dict a file holds: container unwrapped, wrapper prefixes removed.
    ``UserError`` (one line naming the file) for anything unreadable, refused or ambiguous."""
    path = Path(path)
    if is_safetensors(path):
        if ema:
            raise UserError(f"{path}: a safetensors file holds one set of weights; ':ema' (--ema) "
                            "applies to training checkpoints that hold two")
        try:
            return strip_prefixes(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as error:
            raise UserError(f"{path}: weights cannot be read ({short(error)})") from None
    with open_regular(path, "checkpoint file") as handle:  # the regular-file check of every reader
        start = handle.read(4)
    if not (start.startswith(b"PK\x03\x04") or start[:1] == b"\x80"):  # torch.save's zip, or a legacy pickle
        raise UserError(f"{path}: neither a safetensors file nor one written by torch.save")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():  # torch's long advice to trust the file is not ours
            raise UserError(f"{path}: refused: it pickles objects other than tensors and plain containers "
                            "(nothing in it was run)") from None
        raise UserError(f"{path}: unreadable as a weights-only file ({short(error)})") from None
    except Exception as error:  # noqa: BLE001 - any failure here means the file is unusable
        raise UserError(f"{path}: unreadable as a weights-only file ({short(error)})") from None
    return strip_prefixes(unwrap(path, loaded, ema))


def unwrap(path: Path, loaded, ema: bool) -> dict[str, torch.Tensor]:
    """The state dict inside what ``torch.load`` returned (see the module docstring)."""
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: holds a {type(loaded).__name__}, not a state dict of tensors")
    if _all_tensors(loaded) and not ema:
        return loaded
    names = EMA_KEYS if ema else RAW_KEYS
    found = [k for k in names if isinstance(loaded.get(k), dict)]
    if not found:
        keys = ", ".join(sorted(map(str, loaded))[:8])
        what = "EMA weights" if ema else "a state dict"
        raise UserError(f"{path}: no {what} under {' or '.join(map(repr, names))} (the file's keys: {keys})")
    state_dict = loaded[found[0]]
    if not _all_tensors(state_dict):
        raise UserError(f"{path}: {found[0]!r} does not hold a state dict of tensors")
    return state_dict


def _all_tensors(value: dict) -> bool:
    return bool(value) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` (in any order and number) while every key has it."""
    while state_dict:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state_dict)), None)
        if prefix is None:
            break
        state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}
    return state_dict


def short(error: Exception) -> str:
    """An exception's first line, at most 200 characters."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
