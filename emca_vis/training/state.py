"""The resume record and the ``resume/step-*`` states it is saved in.

A state is a folder ``resume/step-<N>/`` (or ``step-<N>-evaluated/`` at the end of an epoch)
holding the weights (``model.safetensors``) and ``state.pt``: optimiser, scheduler, scaler,
RNG and the :class:`ResumeRecord`, read back weights-only. The record says where the run stands
(step, epoch, phase) and carries everything the visible files are made from: the epoch's
running training sums, the metrics rows of the evaluated epochs, the best top-1 and its epoch.
At the end of an epoch the state is written *before* the metrics files and checkpoints, so
those never get ahead of it; ``--resume`` rewrites them from the newest state and goes on.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..checkpoint import read_metadata, read_state_dict, save_checkpoint
from ..errors import UserError
from ..validation import validate
from .faults import fault_point

KEEP_STATES = 2
# Options that may change on --resume: where and how fast the run goes, and how long (more epochs).
FREE_SETTINGS = {"resume", "out", "workers", "checkpoint_every", "epochs", "device", "compile", "init", "eval_only"}


class ResumeRecord(BaseModel):
    """Where a run stands. ``phase``: ``training`` (mid-epoch, ``step`` optimiser steps done),
    ``trained`` (every step of ``epoch`` done, not yet evaluated) or ``evaluated`` (its metrics row
    is in ``rows``). The sums cover the epoch's training so far, over all processes."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0)
    epoch: int = Field(ge=1)
    phase: Literal["training", "trained", "evaluated"]
    loss_sum: float = 0.0
    correct: int = Field(0, ge=0)
    seen: int = Field(0, ge=0)
    seconds: float = Field(0.0, ge=0)
    best_score: float = -1.0  # the task's best_metric (top-1 %, box AP) at best_epoch
    best_epoch: int = Field(0, ge=0)
    rows: list[dict[str, int | float | None]] = Field(default_factory=list)
    world: int = Field(1, ge=1)
    settings: dict[str, Any] = Field(default_factory=dict)

    @property
    def folder_name(self) -> str:
        # "step-N" sorts before "step-N-evaluated", which sorts before "step-N+1".
        return f"step-{self.step:09d}" + ("-evaluated" if self.phase == "evaluated" else "")

    def next_epoch(self) -> ResumeRecord:
        return self.model_copy(update={"epoch": self.epoch + 1, "phase": "training", "loss_sum": 0.0,
                                       "correct": 0, "seen": 0, "seconds": 0.0})


def save_state(out: Path, model, optimizer, scheduler, scaler, record: ResumeRecord, meta: dict) -> Path:
    """Write the state of ``record`` as ``resume/<folder_name>/`` atomically (temp folder +
    rename), replacing an unusable one of the same name; keep the newest two."""
    root = out / "resume"
    final = root / record.folder_name
    for stale in root.glob(".tmp-*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{final.name}"
    tmp.mkdir(parents=True)
    save_checkpoint(tmp / "model.safetensors", model, **meta)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else {}, "record": record.model_dump(),
             "cpu_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(state, tmp / "state.pt")
    with open(tmp / "state.pt", "rb") as f:
        os.fsync(f.fileno())
    fault_point("state")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-KEEP_STATES]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(out: Path, remove_unusable: bool) -> tuple[dict, dict, ResumeRecord, Path]:
    """The newest usable state: (weights, state, record, folder). An unusable newer one is
    reported and the previous one used (the unusable ones are then removed when
    ``remove_unusable``); none usable is an error, and nothing is removed."""
    root = out / "resume"
    states = sorted(root.glob("step-*"), reverse=True)
    if not states:
        raise UserError(f"--resume: no saved state in {root}; start without --resume")
    unusable = []
    for folder in states:
        try:
            read_metadata(folder / "model.safetensors")
            weights = read_state_dict(folder / "model.safetensors")
            state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "record" not in state:
                raise ValueError("no resume record (saved by an older emca-vis?)")
            record = validate(ResumeRecord, state["record"], "resume record")
        except Exception as error:  # noqa: BLE001 - whatever is wrong with it, the state is unusable
            print(f"warning: resume state {folder} is unusable ({str(error).splitlines()[0][:160]}); "
                  "trying the previous one", file=sys.stderr)
            unusable.append(folder)
            continue
        if remove_unusable:  # newer than the state resumed from, they would shadow the run's next ones
            for folder_ in unusable:
                shutil.rmtree(folder_, ignore_errors=True)
        return weights, state, record, folder
    raise UserError(f"--resume: every saved state in {root} is unusable; not starting over silently")


def check_settings(record: ResumeRecord, args, world: int, folder: Path) -> None:
    """The options of this run against those of the saved one: all must match but the
    :data:`FREE_SETTINGS`, and ``--epochs`` must reach the saved epoch."""
    if record.world != world:
        raise UserError(f"--resume: the saved run ({folder}) ran in {record.world} process(es), this one in "
                        f"{world}; the data order and batch depend on it")
    for key, value in vars(args).items():
        if key in FREE_SETTINGS or key not in record.settings or record.settings[key] == value:
            continue
        raise UserError(f"--resume: --{key.replace('_', '-')} {_shown(value)} does not match the saved run's "
                        f"{_shown(record.settings[key])} ({folder}); resume with the saved settings or train "
                        "into another --out")
    if args.epochs < record.epoch:
        raise UserError(f"--resume: --epochs {args.epochs} is fewer than the {record.epoch} the saved run has "
                        f"reached ({folder})")


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "(not given)"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "(none)"
    return str(value)
