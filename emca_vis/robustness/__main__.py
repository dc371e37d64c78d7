"""python -m emca_vis.robustness: see :mod:`emca_vis.robustness.evaluate`."""

import sys

from ..errors import run_cli
from .evaluate import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
