"""The paper's scaling figure, and EMCA's per-scale weights, from the channel scales of each model.

    python analyses/scaling_figure.py [--checkpoint a b c] [--data shapes --split val --n 256] --out figures/

Writes ``scaling.png``/``.svg`` (per stage: mean channel scale z against channel index, one
line per model), ``scale_weights.png``/``.svg`` (EMCA's w_r per stage and source) and
``attention.json`` (every statistic; ``python -m emca_vis.attention --from`` redraws all figures).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from emca_vis.attention.plots import STYLE, scale_weights_figure, scaling_figure
from emca_vis.errors import run_cli
from emca_vis.inputs import load_models
from emca_vis.options import Parser, positive_int
from emca_vis.outputs import check_out, write_json
from emca_vis.report.compute import attention_data


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help="checkpoints (default: the demo checkpoints)")
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=positive_int, default=256, help="images from the split")
    parser.add_argument("--out", default="runs/analyses", help="output folder")
    args = parser.parse_args(argv)
    check_out(args.out, folder=True, files=["attention.json"])
    data = attention_data(load_models(args.checkpoint), args.data, args.split, args.n)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "attention.json", data)
    with plt.rc_context(STYLE):
        paths = scaling_figure(data["models"], out) + scale_weights_figure(data["models"], out)
    for path in [out / "attention.json", *paths]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
