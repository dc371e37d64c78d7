"""python -m emca_vis.robustness: evaluation (:mod:`.evaluate`); ``generate``: write -C datasets (:mod:`.generate`)."""

import sys

from ..errors import run_cli

if __name__ == "__main__":
    if sys.argv[1:2] == ["generate"]:
        from .generate import main

        sys.exit(run_cli(main, sys.argv[2:]))
    from .evaluate import main

    sys.exit(run_cli(main))
