"""Writing result files: strict JSON (every JSON the project writes goes through here).

Python's ``json`` writes NaN and infinities as bare ``NaN`` / ``Infinity``, which is not JSON
(browsers, ``jq`` and most parsers refuse it). Here they become ``null``, numpy scalars and
arrays become plain numbers and lists, and ``allow_nan=False`` guarantees nothing slips through.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np


def strict(value):
    """``value`` with NaN/infinities as ``None`` and numpy values as Python ones, recursively."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return strict(value.tolist())
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def json_text(value, indent: int | None = 1) -> str:
    """Strict JSON text of ``value`` (see :func:`strict`)."""
    return json.dumps(strict(value), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, value, indent: int | None = 1) -> Path:
    """Write ``value`` to ``path`` as strict JSON; returns the path."""
    path = Path(path)
    path.write_text(json_text(value, indent) + "\n", encoding="utf-8")
    return path
