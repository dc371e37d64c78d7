"""Placement ablation: attention in all / the first / the last block of each stage, from a set of checkpoints.

    python analyses/placement_ablation.py --checkpoint runs/*/best.safetensors [--robustness r.json] --out tables/

Checkpoints are grouped by the ``placement`` stored in their metadata and by attention type;
the table has one row per type (SE, ECA, EMCA-ECA, ...) and one column per placement present,
with clean top-1 (measured on ``--n`` images of ``--data``/``--split``, or ``--metadata``: the
recorded validation top-1) and, with ``--robustness``, mCE. It says which placements are
missing. Writes ``placement_ablation.md``, ``.csv`` and ``.json``.
"""

from __future__ import annotations

from emca_vis.errors import run_cli
from emca_vis.report import ablation


def main(argv: list[str] | None = None) -> int:
    return ablation.main("placement", argv, __doc__.split("\n")[0])


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
