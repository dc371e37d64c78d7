"""What a run shows: ``metrics.jsonl`` / ``metrics.csv``, ``last`` and ``best`` checkpoints.

All of it is derived from the resume record (:mod:`.state`), so writing it again after a kill
gives the same files: the metrics files are rewritten whole from the record's rows (a row is
never lost or repeated), ``last`` holds the weights of the newest evaluated epoch, ``best``
those of the epoch with the highest top-1.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import save_checkpoint
from ..outputs import json_text, write_dict_csv, write_text
from .faults import fault_point
from .state import ResumeRecord


def write_metrics(out: Path, rows: list[dict]) -> None:
    """``metrics.jsonl`` and ``metrics.csv`` with exactly ``rows`` (none: the files removed)."""
    if not rows:
        for name in ("metrics.jsonl", "metrics.csv"):
            (out / name).unlink(missing_ok=True)
        return
    write_text(out / "metrics.jsonl", "".join(json_text(row, indent=None) + "\n" for row in rows))
    write_dict_csv(out / "metrics.csv", rows)


def remove_leftovers(out: Path) -> None:
    """Temporary files of writes that a kill interrupted (the files they were for are intact)."""
    for name in ("last.safetensors", "best.safetensors", "metrics.jsonl", "metrics.csv"):
        for leftover in out.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)


def publish_epoch(out: Path, model, meta: dict, record: ResumeRecord) -> None:
    """The files of the evaluated epoch ``record`` ends with; ``model`` holds its weights."""
    write_metrics(out, record.rows)
    fault_point("metrics")
    checkpoint_meta = {**meta, "metrics": record.rows[-1]}
    save_checkpoint(out / "last.safetensors", model, **checkpoint_meta)
    fault_point("last")
    if record.best_epoch == record.epoch:
        save_checkpoint(out / "best.safetensors", model, **checkpoint_meta)


class TensorBoard:
    """Epoch rows as TensorBoard scalars when ``tensorboard`` is installed; otherwise nothing."""

    def __init__(self, out: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(str(out / "tensorboard"))

    def add(self, row: dict) -> None:
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
