"""EMCA source ablation: S (earlier stages aggregated) and N (their last or all blocks), from a set of checkpoints.

    python analyses/source_ablation.py --checkpoint runs/*/best.safetensors [--robustness r.json] --out tables/

EMCA checkpoints are grouped by ``emca_stages`` (S: 0, 1 or all) and ``emca_blocks`` (N: 1 or
all) from their metadata; one row per EMCA type, one column per (S, N) present, with clean
top-1 (measured, or ``--metadata``) and, with ``--robustness``, mCE. It says which settings are
missing. Writes ``sources_ablation.md``, ``.csv`` and ``.json``.
"""

from __future__ import annotations

from emca_vis.errors import run_cli
from emca_vis.report import ablation


def main(argv: list[str] | None = None) -> int:
    return ablation.main("sources", argv, __doc__.split("\n")[0])


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
