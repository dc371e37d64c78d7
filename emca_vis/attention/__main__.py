"""python -m emca_vis.attention: channel-scale statistics and figures for several checkpoints.

    python -m emca_vis.attention [--checkpoint a b c] --data shapes --n 256 --out runs/attention
    python -m emca_vis.attention --checkpoint a b --image x.jpg [--image y.png ...] --out runs/attention

With no ``--checkpoint`` the demo checkpoints are analysed. Dataset images are grouped by
their labels; single images by each model's predicted class. Detector checkpoints: their
backbone ResNet is analysed on the images as the detector resizes and normalises them (data:
``multishapes`` by default, or ``coco:/path``); an image's class is that of its largest object
(by mask area; single images: of the largest detection scoring >= 0.5, else the best one), and
images without objects are left out. Writes ``attention.json`` (every number) and the figures
(PNG + SVG); ``--from attention.json`` redraws the figures only.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError, run_cli
from ..images import load_image
from ..inputs import CHECKPOINT_HELP, LoadedModel, add_nonfinite_option, load_models
from ..options import Parser, positive_int
from ..outputs import check_out, write_json
from .analysis import analyse
from .plots import all_figures
from .schema import read_attention


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m emca_vis.attention", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help=CHECKPOINT_HELP)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", action="append", help="an image file (repeatable)")
    source.add_argument("--data", help="dataset spec (default: shapes; detectors: multishapes)")
    source.add_argument("--from", dest="from_json", help="redraw the figures of a saved attention.json")
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=positive_int, default=256, help="images from the dataset split")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--stage", type=positive_int, default=3, help="stage of the class x channel heatmap")
    parser.add_argument("--out", default="runs/attention", help="output folder")
    add_nonfinite_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = check_out(args.out, folder=True, files=["attention.json"])
    failures: list[str] = []
    if args.from_json:
        data = read_attention(args.from_json)
    else:
        models = load_models(args.checkpoint, failures, args.allow_nonfinite, task=None)
        if args.image:
            images = []
            for path in args.image:
                try:
                    images.append(load_image(path))
                except UserError as error:
                    _report(error, failures)
            if not images:
                raise UserError("none of the images could be read")
        results = {}
        for m in models:  # a model that cannot be analysed (e.g. other classes) is reported; the others go on
            try:
                results[m.label] = _on_images(m, images) if args.image else _on_dataset(m, args)
            except UserError as error:
                _report(error, failures)
        if not results:
            raise UserError("none of the models could be analysed")
        specs = sorted({args.data or m.task.default_data for m in models})
        inputs = [str(p) for p in args.image] if args.image else f"{', '.join(specs)} {args.split} (first {args.n})"
        data = {"inputs": inputs, "models": results, "errors": failures}
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "attention.json", data)
        print(f"wrote {out / 'attention.json'}")
    for path in all_figures(data, out, args.stage):
        print(f"wrote {path}")
    return 2 if failures else 0


def _report(error: UserError, failures: list[str]) -> None:
    print(f"error: {error}", file=sys.stderr)
    failures.append(str(error))


def _on_images(loaded: LoadedModel, images) -> dict:
    model, batches, left_out = loaded.task.attention_images(loaded, images)
    for index in left_out:
        print(f"{loaded.label}: image {index + 1} has no detection; left out", file=sys.stderr)
    if not batches:
        raise UserError(f"{loaded.label}: none of the images could be labelled (no detection)")
    return analyse(model, loaded.class_names, batches, total=len(batches), desc=loaded.label)


def _on_dataset(loaded: LoadedModel, args) -> dict:
    model, batches, total = loaded.task.attention_dataset(loaded, args.data or loaded.task.default_data, args)
    return analyse(model, loaded.class_names, batches, total=total, desc=loaded.label)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
