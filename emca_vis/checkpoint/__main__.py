"""``python -m emca_vis.checkpoint FILE...``: check checkpoint files and print what each holds."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError, run_cli
from ..options import Parser
from . import describe


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m emca_vis.checkpoint",
                                     description="Check checkpoint files and print what each holds.")
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--model", help="architecture of foreign .pt/.pth state dicts, e.g. resnet50")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="load weights holding NaN or infinities (refused otherwise), with a warning")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.paths:
        try:
            print(describe(path, args.model, args.allow_nonfinite))
        except UserError as error:  # report it and go on with the other files
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
