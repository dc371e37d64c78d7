"""python -m emca_vis.robustness: evaluation (:mod:`.evaluate`); ``generate``: write -C datasets (:mod:`.generate`)."""

import sys

from ..errors import run_cli


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["generate"]:
        from .generate import main as generate_main

        return generate_main(argv[1:])
    from .evaluate import main as evaluate_main

    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
