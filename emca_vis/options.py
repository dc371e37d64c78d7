"""Command-line options checked while parsing: argparse types and a parser whose errors are one line.

A value out of range (``--n 0``, ``--batch-size -1``) is refused by argparse before anything
is loaded or computed, as ``error: argument --n: must be at least 1 (got 0)`` with exit code 2
(:class:`Parser` turns argparse's usage-plus-message into the project's one-line
:class:`~emca_vis.errors.UserError`).
"""

from __future__ import annotations

import argparse
import math

from .errors import UserError


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are a :class:`UserError` (one ``error:`` line, rc 2)."""

    def error(self, message: str):
        raise UserError(" ".join(message.split()))


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def int_range(low: int, high: int | None = None):
    """An argparse type: an integer of at least ``low`` (and at most ``high``)."""
    def parse(text: str) -> int:
        value = _integer(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low} (got {value})")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,} (got {value:,})")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in some messages
    return parse


positive_int = int_range(1)
nonnegative_int = int_range(0)


def finite_float(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text})")
    return value


def nonnegative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0 (got {text})")
    return value


def probability(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (got {text})")
    return value


def seed(text: str) -> int:
    """An argparse type: a random seed (0 to 2**32 - 1, what numpy accepts)."""
    value = _integer(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be between 0 and {2**32 - 1} (got {value})")
    return value
