"""A test-only fault hook: ``EMCA_VIS_FAULT=<point>:<n>`` makes the process SIGKILL itself the
n-th time it passes ``fault_point("<point>")``, so tests can kill a run at a precise moment (between
steps, during validation, halfway through a save) and check that ``--resume`` recovers exactly.
Unset, as in every real run, it costs one environment lookup.

Points: ``step`` (after an optimiser step and its state save), ``val`` (after a validation batch),
``state`` (a resume state fully written but not yet renamed into place), ``saved`` (the epoch's
state in place, metrics not yet written), ``metrics`` (metrics written, ``last`` not yet),
``last`` (``last`` written, ``best`` not yet), ``cell`` (a robustness cell appended to
``<out>.cells.jsonl``).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_passed: Counter = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get("EMCA_VIS_FAULT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
