"""What a run shows: ``metrics.jsonl`` / ``metrics.csv``, ``last`` and ``best`` checkpoints.

All of it is derived from the resume record (:mod:`.state`), so writing it again after a kill
gives the same files: the metrics files are rewritten whole from the record's rows (a row is
never lost or repeated), ``last`` holds the weights of the newest evaluated epoch, ``best``
those of the epoch with the highest top-1.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from ..checkpoint import save_checkpoint
from ..outputs import json_text
from .faults import fault_point
from .state import ResumeRecord


def _replace_text(path: Path, text: str) -> None:
    """``path`` holds ``text`` or its previous content, never a mix (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a plain write would not
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_metrics(out: Path, rows: list[dict]) -> None:
    """``metrics.jsonl`` and ``metrics.csv`` with exactly ``rows`` (none: the files removed)."""
    paths = out / "metrics.jsonl", out / "metrics.csv"
    if not rows:
        for path in paths:
            path.unlink(missing_ok=True)
        return
    _replace_text(paths[0], "".join(json_text(row, indent=None) + "\n" for row in rows))
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
    writer.writeheader()
    writer.writerows(rows)
    _replace_text(paths[1], table.getvalue())


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
