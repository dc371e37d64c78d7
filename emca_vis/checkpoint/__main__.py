"""``python -m emca_vis.checkpoint FILE...``: check checkpoint files and print what each holds.
``python -m emca_vis.checkpoint import SRC --model NAME --out X.safetensors``: import a foreign file.

FILE and SRC are paths or checkpoint specs ``MODEL[:ema][:FORMAT]=PATH`` (:mod:`.spec`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError, run_cli
from ..options import Parser, finite_float, int_range
from . import describe
from .formats import FORMATS


def import_parser() -> Parser:
    parser = Parser(
        prog="python -m emca_vis.checkpoint import",
        description="Write a foreign checkpoint (torchvision, timm, the official ECA-Net, CBAM, SRM, FcaNet, "
                    "BAM, EPSANet, SA-Net and EMCA code, training containers) as a self-describing "
                    "emca-vis checkpoint, after checking that its weights fit the architecture exactly and "
                    "give finite logits.")
    parser.add_argument("source", help="the foreign file (or a MODEL[:ema][:FORMAT]=PATH spec)")
    parser.add_argument("--model", help="its architecture: an emca-vis name (resnet50_se) or one its format "
                                        "maps (timm's seresnet50, ECA-Net's eca_resnet50); default: read from "
                                        "the blocks where the key names say it")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS], metavar="FORMAT",
                        help="key-name format, detected from the key names by default (auto): "
                             + "; ".join(f"{name}: {fmt.summary}" for name, fmt in FORMATS.items()))
    parser.add_argument("--ema", action="store_true", help="the EMA weights (model_ema / state_dict_ema)")
    parser.add_argument("--classes", help="'imagenet' or a file of class names (one per line, or a JSON list); "
                                          "default: ImageNet's at 1000 classes, else 0, 1, ...")
    parser.add_argument("--input-size", type=int_range(8, 2048), help="input size in px (default 224)")
    parser.add_argument("--resize", type=int_range(8, 4096),
                        help="shorter side before the centre crop (default: 256 at 224)")
    parser.add_argument("--mean", type=finite_float, nargs=3, help="normalisation mean (default: ImageNet's)")
    parser.add_argument("--std", type=finite_float, nargs=3, help="normalisation std (default: ImageNet's)")
    parser.add_argument("--dataset", help="what it was trained on (shown by the tools)")
    parser.add_argument("--out", type=Path, required=True, help="the emca-vis checkpoint to write (.safetensors)")
    return parser


def import_main(argv: list[str]) -> int:
    from .importer import import_checkpoint

    args = import_parser().parse_args(argv)
    out, meta = import_checkpoint(args.source, args.out, model=args.model, format=args.format, ema=args.ema,
                                  classes=args.classes, input_size=args.input_size, resize=args.resize,
                                  mean=args.mean, std=args.std, dataset=args.dataset)
    source = meta["source"]
    print(f"wrote {out}: {meta['model']} {meta['model_kwargs']} from {source['file']} ({source['format']}"
          f"{', EMA weights' if source['ema'] else ''}), {meta['num_classes']} classes, {meta['input_size']} px")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["import"]:
        return import_main(argv[1:])
    parser = Parser(prog="python -m emca_vis.checkpoint",
                                     description="Check checkpoint files and print what each holds "
                                                 "(or: python -m emca_vis.checkpoint import --help).")
    parser.add_argument("paths", nargs="+", help="checkpoints: paths or MODEL[:ema][:FORMAT]=PATH specs")
    parser.add_argument("--model", help="architecture of foreign files named by a plain path, e.g. resnet50")
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
