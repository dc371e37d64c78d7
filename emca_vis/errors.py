"""Errors a user can cause, and the one way every CLI reports them."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input (path, file, option): shown as one line, no traceback."""


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI ``main``; a :class:`UserError` (or ``ValueError`` from option checks) becomes
    ``error: <message>`` on stderr and exit code 2."""
    try:
        return int(main(argv) or 0)
    except (UserError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
