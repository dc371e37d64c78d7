"""python -m emca_vis.attention: channel-scale statistics and figures for several checkpoints.

    python -m emca_vis.attention [--checkpoint a b c] --data shapes --n 256 --out runs/attention
    python -m emca_vis.attention --checkpoint a b --image x.jpg [--image y.png ...] --out runs/attention

With no ``--checkpoint`` the demo checkpoints are analysed. Dataset images are grouped by
their labels; single images by each model's predicted class. Writes ``attention.json`` (every
number) and the figures (PNG + SVG); ``--from attention.json`` redraws the figures only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from ..data import build_dataset
from ..errors import UserError, run_cli
from ..images import load_image
from ..inputs import LoadedModel, load_models
from .analysis import analyse
from .plots import all_figures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emca_vis.attention", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help="checkpoints (default: the demo checkpoints)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", action="append", help="an image file (repeatable)")
    source.add_argument("--data", help="dataset spec (default: shapes)")
    source.add_argument("--from", dest="from_json", help="redraw the figures of a saved attention.json")
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=256, help="images from the dataset split")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--stage", type=int, default=3, help="stage of the class x channel heatmap")
    parser.add_argument("--out", default="runs/attention", help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    failures: list[str] = []
    if args.from_json:
        data = _read_json(Path(args.from_json))
    else:
        models = load_models(args.checkpoint, failures)
        if args.image:
            images = []
            for path in args.image:
                try:
                    images.append(load_image(path))
                except UserError as error:
                    print(f"error: {error}", file=sys.stderr)
                    failures.append(str(error))
            if not images:
                raise UserError("none of the images could be read")
            data = {"inputs": [str(p) for p in args.image], "models": {m.label: _on_images(m, images) for m in models}}
        else:
            spec = args.data or "shapes"
            data = {"inputs": f"{spec} {args.split} (first {args.n})",
                    "models": {m.label: _on_dataset(m, spec, args) for m in models}}
        data["errors"] = failures
        out.mkdir(parents=True, exist_ok=True)
        (out / "attention.json").write_text(json.dumps(data, indent=1))
        print(f"wrote {out / 'attention.json'}")
    for path in all_figures(data, out, args.stage):
        print(f"wrote {path}")
    return 2 if failures else 0


def _on_images(loaded: LoadedModel, images) -> dict:
    x = torch.stack([loaded.preprocess(image) for image in images])
    with torch.no_grad():
        predicted = loaded.model(x).argmax(1)
    return analyse(loaded.model, loaded.class_names, [(x, predicted)], total=1, desc=loaded.label)


def _on_dataset(loaded: LoadedModel, spec: str, args) -> dict:
    dataset, info = build_dataset(spec, args.split, image_size=loaded.input_size, train=False)
    if list(info.class_names) != loaded.class_names:
        raise UserError(f"{loaded.path}: its classes differ from those of {spec}")
    if args.n < 1:
        raise UserError("--n must be at least 1")
    subset = Subset(dataset, range(min(args.n, len(dataset))))
    loader = DataLoader(subset, batch_size=args.batch_size)
    return analyse(loaded.model, loaded.class_names, loader, total=len(loader), desc=loaded.label)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not a JSON file") from None
    if not isinstance(data, dict) or "models" not in data:
        raise UserError(f"{path}: not an attention.json written by python -m emca_vis.attention")
    return data


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
