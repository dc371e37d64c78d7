"""The paper's Grad-CAM comparison figure: one row per model, one column per image.

    python analyses/gradcam_figure.py [--checkpoint a b c] [--samples 4 | --image x.jpg ...]
        [--method gradcam] [--corruption fog --severity 3] --out figures/

Writes ``gradcam_comparison.png`` (top row: the inputs; below each heatmap, the predicted class
and its probability, marked when wrong) and ``gradcam_comparison.json`` (the predictions).
Heatmaps explain each model's predicted class. Images: the first ones of different classes of
``--data``'s ``--split``, or the given files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emca_vis.errors import run_cli
from emca_vis.inputs import load_models
from emca_vis.explain.heatmaps import LAYER_METHODS, check_layer, check_method
from emca_vis.options import Parser, nonnegative_int
from emca_vis.outputs import check_out, write_json
from emca_vis.report.grid import condition_title, explain_sample, grid_figure, sample_images


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help="checkpoints (default: the demo checkpoints)")
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--split", default="test")
    parser.add_argument("--samples", type=nonnegative_int, default=4,
                        help="images (of different classes) from the split")
    parser.add_argument("--image", action="append", default=[], help="an image file instead (repeatable)")
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--corruption", help="show the images under this corruption instead of clean")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--out", default="runs/analyses", help="output folder")
    args = parser.parse_args(argv)
    check_method(args.method)
    check_out(args.out, folder=True, files=["gradcam_comparison.png", "gradcam_comparison.json"])
    models = load_models(args.checkpoint)
    if args.method in LAYER_METHODS:
        for m in models:
            check_layer(m.model, args.layer, m.input_size)
    condition = (args.corruption, args.severity) if args.corruption else ("clean", 0)
    merged = {"conditions": [], "models": {m.label: [] for m in models}}
    arrays = {}
    for i, sample in enumerate(sample_images(args.data, args.split, args.samples, args.image)):
        record, sample_arrays = explain_sample(models, sample, [condition], args.method, args.layer)
        merged["conditions"].append(sample["true"] or Path(sample["source"]).name)
        for m in models:
            merged["models"][m.label] += record["models"][m.label]
            for kind in ("inputs", "heatmaps"):
                arrays.setdefault(f"{m.label}/{kind}", []).append(sample_arrays[f"{m.label}/{kind}"][0])
    arrays = {key: np.stack(value) for key, value in arrays.items()}
    out = Path(args.out)
    title = f"{args.method} ({args.layer}), {condition_title(condition)}"
    path = grid_figure(merged, arrays, out / "gradcam_comparison.png", title)
    write_json(out / "gradcam_comparison.json", merged)
    print(f"wrote {path}\nwrote {out / 'gradcam_comparison.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
