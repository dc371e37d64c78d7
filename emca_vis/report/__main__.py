"""python -m emca_vis.report: compute and render the robustness and interpretability report.

    python -m emca_vis.report --out report/                     # demo checkpoints on shapes, a few minutes
    python -m emca_vis.report --checkpoint a b c --data shapes --n 500 --out report/
    python -m emca_vis.report --from report/                    # re-render report.json, no recomputing

Writes ``report.html`` (one self-contained file: opens offline, prints on A4), ``report.md``,
and the data they are rendered from: ``report.json``, CSVs, ``figures/``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from ..errors import UserError, run_cli
from ..outputs import check_out
from .render import render


def build_parser() -> argparse.ArgumentParser:
    # The compute stack (torch, CAM libraries) is imported here, not for --from.
    from ..inputs import CHECKPOINT_HELP, add_nonfinite_option
    from ..options import Parser, nonnegative_int, positive_int
    from ..robustness.corruptions import BACKENDS, CORRUPTIONS
    from .compute import Settings

    defaults = Settings()
    parser = Parser(prog="python -m emca_vis.report", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", help=CHECKPOINT_HELP)
    parser.add_argument("--data", default=defaults.data, help="dataset spec: shapes, imagenet:/p, folder:/p, ...")
    parser.add_argument("--split", default=defaults.split, help="split for accuracy, robustness and explanations")
    parser.add_argument("--out", help="output folder (default: report/; with --from: that folder)")
    parser.add_argument("--from", dest="source", metavar="DIR", help="only render the results saved in DIR")
    parser.add_argument("--title", default=defaults.title)
    group = parser.add_argument_group("models")
    group.add_argument("--n-clean", type=positive_int, default=defaults.n_clean, help="images for clean top-1/top-5")
    group.add_argument("--throughput-batch", type=positive_int, default=defaults.throughput_batch)
    group.add_argument("--repeats", type=positive_int, default=defaults.repeats, help="timed turns per model")
    group = parser.add_argument_group("robustness")
    group.add_argument("--n", type=positive_int, default=defaults.n_robustness,
                       help="images per corruption and severity")
    group.add_argument("--corruptions", nargs="+", default=defaults.corruptions, metavar="NAME",
                       help=f"any of: {', '.join(CORRUPTIONS)}")
    group.add_argument("--severities", nargs="+", type=int, default=defaults.severities)
    group.add_argument("--backend", default=defaults.backend, choices=BACKENDS)
    group.add_argument("--baseline", help="CE baseline: a checkpoint or 'alexnet' (default: the plain ResNet)")
    group.add_argument("--resume", action="store_true", help="keep finished robustness cells of an earlier run")
    group.add_argument("--stability", nargs="?", const="gradcam", metavar="METHOD",
                       help="also the heatmap stability of METHOD (default gradcam) under the corruptions")
    group.add_argument("--detection-data", default=defaults.detection_data,
                       help="where detector checkpoints are scored (same --split): multishapes or coco:/path")
    group = parser.add_argument_group("explanations")
    group.add_argument("--n-explain", type=positive_int, default=defaults.n_explain, help="images for heatmap metrics")
    group.add_argument("--method", nargs="+", default=defaults.methods, help="heatmap methods (first: grids)")
    group.add_argument("--layer", default=defaults.layer)
    group.add_argument("--no-faithfulness", dest="faithfulness", action="store_false",
                       help="skip deletion/insertion AUC")
    group.add_argument("--steps", type=positive_int, default=defaults.steps, help="deletion/insertion steps")
    group.add_argument("--boxes", help="Pascal VOC box folder for localisation on image folders")
    group.add_argument("--samples", type=nonnegative_int, default=defaults.samples, help="images in the Grad-CAM grids")
    group.add_argument("--image", action="append", default=[], help="use this image in the grids (repeatable)")
    group.add_argument("--grid-corruptions", nargs="+", default=defaults.grid_corruptions, metavar="NAME")
    group.add_argument("--grid-severities", nargs="+", type=int, default=defaults.grid_severities)
    group = parser.add_argument_group("attention")
    group.add_argument("--n-attention", type=positive_int, default=defaults.n_attention)
    group.add_argument("--attention-split", default=defaults.attention_split)
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument("--seed", type=nonnegative_int, default=defaults.seed,
                        help="corruption noise and bootstrap resamples")
    parser.add_argument("--resamples", type=positive_int, default=defaults.resamples,
                        help="bootstrap resamples of the paired 95%% intervals")
    add_nonfinite_option(parser)
    return parser


def settings_from(args: argparse.Namespace):
    """Check the options before minutes of computing, then collect them."""
    from ..explain.heatmaps import check_method
    from ..robustness.corruptions import check
    from .compute import Settings

    for name in args.corruptions + args.grid_corruptions:
        for severity in set(args.severities + args.grid_severities):
            check(name, severity, args.backend)
    for method in args.method + ([args.stability] if args.stability else []):
        check_method(method)
    for option in ("n_clean", "n", "n_explain", "n_attention", "batch_size", "throughput_batch", "repeats", "steps",
                   "resamples"):
        if getattr(args, option) < 1:
            raise UserError(f"--{option.replace('_', '-')} must be at least 1")
    if args.samples < 0:
        raise UserError("--samples must not be negative")
    return Settings(checkpoints=args.checkpoint, data=args.data, split=args.split, n_clean=args.n_clean,
                    n_robustness=args.n, corruptions=list(args.corruptions), severities=list(args.severities),
                    backend=args.backend, baseline=args.baseline, n_explain=args.n_explain, methods=list(args.method),
                    layer=args.layer, faithfulness=args.faithfulness, steps=args.steps, boxes=args.boxes,
                    n_attention=args.n_attention, attention_split=args.attention_split, samples=args.samples,
                    images=list(args.image), grid_corruptions=list(args.grid_corruptions),
                    grid_severities=list(args.grid_severities), batch_size=args.batch_size,
                    throughput_batch=args.throughput_batch, repeats=args.repeats, seed=args.seed,
                    resamples=args.resamples, stability=args.stability,
                    resume=args.resume, allow_nonfinite=args.allow_nonfinite, title=args.title,
                    detection_data=args.detection_data)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    start = time.perf_counter()
    quick = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    quick.add_argument("--from", dest="source")
    quick.add_argument("--out")
    known, rest = quick.parse_known_args(argv)
    if known.source and not {"-h", "--help"} & set(rest):
        if rest:
            raise UserError(f"--from re-renders saved results and takes only --out; got {' '.join(rest)}")
        check_out(known.out or known.source, folder=True, files=["report.html", "report.md"])
        html_path, md_path = render(known.source, known.out)
    else:
        from .compute import compute_report

        args = build_parser().parse_args(argv)
        settings = settings_from(args)
        out = check_out(args.out or "report", folder=True,
                        files=["report.json", "report.html", "report.md", "models.csv", "robustness.json",
                               "detection_robustness.json",
                               "explanations.csv", "attention.json", "grad_cam_grid.npz"])
        check_out(out / "figures", folder=True)
        report = compute_report(settings, out, "python -m emca_vis.report " + shlex.join(argv))
        html_path, md_path = render(out)
        if report["errors"]:
            print(f"wrote {html_path}\nwrote {md_path}", file=sys.stderr)
            return 2
    print(f"wrote {html_path}\nwrote {md_path}\n({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
