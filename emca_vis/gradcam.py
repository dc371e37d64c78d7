"""Explain predictions of several models side by side, or score their heatmaps.

    python -m emca_vis.gradcam --image x.jpg [--image y.png ... | --dir folder]
        [--checkpoint a.safetensors ...] [--method gradcam ...] [--target CLASS | --top-k K]
        [--layer layer4] [--out gradcam.png]
    python -m emca_vis.gradcam evaluate [--checkpoint ...] --data shapes --n 500 [--method ...]
    python -m emca_vis.gradcam stability [--checkpoint ...] --data shapes --n 200 [--corruptions ...]

With no ``--checkpoint`` the demo checkpoints are compared. The first form writes one figure
per image (rows: models; columns: the input, then one heatmap per method and target), a
JSON of predictions, targets and heatmap statistics, and the heatmaps themselves (.npz).
Detector checkpoints draw their detections (boxes, classes, scores; Mask R-CNN's masks) and
one heatmap per kept detection and method (``--score-threshold``, ``--max-detections``); see
:mod:`emca_vis.detection.explain` for the target, the layers and the keys.
``evaluate`` scores heatmaps against object masks (pointing game, energy pointing game) and,
with ``--faithfulness``, by deletion/insertion AUC; see :mod:`emca_vis.explain.evaluate`.
``stability`` compares heatmaps of corrupted images with the clean ones; see
:mod:`emca_vis.explain.stability_run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import UserError, run_cli
from .explain.figures import comparison_figure, to_display
from .explain.evaluate import add_detection_options, model_plan
from .explain.heatmaps import METHODS, check_method, heatmap_stats, heatmaps, predict, resolve_target
from .images import find_images, load_image
from .inputs import CHECKPOINT_HELP, LoadedModel, add_nonfinite_option, load_models
from .options import Parser, positive_int
from .outputs import check_out, figure_format, figure_formats, write_json, write_npz

DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam", "integrated_gradients")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m emca_vis.gradcam", description=__doc__.split("\n")[0],
                                     epilog="`python -m emca_vis.gradcam evaluate --help` for heatmap scores, "
                                            "`... stability --help` for stability under corruption")
    parser.add_argument("--image", action="append", default=[], help="an image file (repeatable)")
    parser.add_argument("--dir", help="explain every image in this folder")
    add_model_options(parser)
    parser.add_argument("--method", nargs="+", help=f"any of: {', '.join(METHODS)} (default: "
                        f"{' '.join(DEFAULT_METHODS)}; detectors: layercam gradcam eigencam, which have "
                        "gradcam, gradcam++, hirescam, xgradcam, layercam, eigencam)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--target", help="class index or name to explain (default: the predicted class)")
    group.add_argument("--top-k", type=positive_int, default=1, help="explain each of the k most probable classes")
    parser.add_argument("--aug-smooth", action="store_true", help="test-time augmentation smoothing (CAM methods)")
    parser.add_argument("--eigen-smooth", action="store_true", help="first principal component (CAM methods)")
    add_detection_options(parser)
    parser.add_argument("--out", default="runs/gradcam/gradcam.png",
                        help="figure path; with several images, the image name is appended to its stem")
    return parser


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", nargs="+", help=CHECKPOINT_HELP)
    parser.add_argument("--layer", help="target layer: a stage, block or module (layer4, layer3, layer4.1, "
                        "layer4.0.conv2; default layer4); detectors also a feature-pyramid level: fpn.0 .. fpn.3 "
                        "and fpn.pool (R-CNNs, P2..P6), fpn.0 .. fpn.2, fpn.p6, fpn.p7 (RetinaNet, P3..P7); "
                        "detectors' default fpn.0")
    add_nonfinite_option(parser)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["evaluate"]:
        from .explain.evaluate import main as evaluate_main

        return evaluate_main(argv[1:])
    if argv[:1] == ["stability"]:
        from .explain.stability_run import main as stability_main

        return stability_main(argv[1:])
    args = build_parser().parse_args(argv)
    for method in args.method or []:
        check_method(method)
    paths = [Path(p) for p in args.image] + (find_images(args.dir) if args.dir else [])
    if not paths:
        raise UserError("give at least one --image or a --dir of images")
    out = Path(args.out)
    if figure_format(out) not in figure_formats():
        raise UserError(f"--out {out}: unknown figure format {figure_format(out)!r}; "
                        f"use one of {', '.join(figure_formats())}")
    figure_paths = [out if len(paths) == 1 else out.with_name(f"{out.stem}_{index:03d}_{path.stem}{out.suffix}")
                    for index, path in enumerate(paths)]
    check_out(out, files=[*figure_paths, out.with_suffix(".json"), out.with_suffix(".npz")])
    failures: list[str] = []
    models = load_models(args.checkpoint, failures, args.allow_nonfinite, task=None)
    plans = [model_plan(loaded, args, "gradcam")[:2] for loaded in models]
    report = {"models": [{"label": m.label, "checkpoint": m.spec} for m in models], "images": []}
    arrays: dict[str, np.ndarray] = {}
    for index, path in enumerate(paths):
        try:
            image = load_image(path)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            failures.append(str(error))
            continue
        figure_path = figure_paths[index]
        rows, entries = [], []
        for loaded, (methods, layer) in zip(models, plans):
            settings = argparse.Namespace(**{**vars(args), "layer": layer})
            row, entry, maps = loaded.task.explain_image(loaded, image, methods, settings)
            rows.append(row)
            entries.append(entry)
            for key, heatmap in maps.items():
                arrays[f"{index:03d}/{loaded.label}/{key}"] = heatmap
        comparison_figure(rows, figure_path, title=path.name)
        report["images"].append({"path": str(path), "figure": str(figure_path), "models": entries})
        print(f"wrote {figure_path}")
    report["errors"] = failures
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, npz_path = out.with_suffix(".json"), out.with_suffix(".npz")
    write_json(json_path, report, indent=2)
    write_npz(npz_path, arrays)
    print(f"wrote {json_path}\nwrote {npz_path}")
    return 2 if failures else 0


def explain_class_image(loaded: LoadedModel, image, methods, args) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """One classifier on one image: the figure row, the JSON entry and the heatmaps by column key."""
    x = loaded.preprocess(image)[None]
    probs = predict(loaded.model, x)[0]
    names = loaded.class_names
    predicted = int(probs.argmax())
    fixed = resolve_target(args.target, names)
    targets = [fixed] if fixed is not None else probs.topk(min(args.top_k, len(names))).indices.tolist()
    maps, columns, explanations = {}, [], []
    for method in methods:
        for target in targets:
            heatmap = heatmaps(loaded.model, x, [target], method, args.layer, args.aug_smooth, args.eigen_smooth)[0]
            key = f"{method}/{names[target]}"
            maps[key] = heatmap
            title = method if len(targets) == 1 and target == predicted else f"{method}: {names[target]}"
            columns.append((title, heatmap))
            explanations.append({"method": method, "target": target, "target_name": names[target],
                                 "target_probability": round(float(probs[target]), 4), "heatmap": heatmap_stats(heatmap)})
    top = probs.topk(min(5, len(names)))
    entry = {
        "model": loaded.label,
        "prediction": {"index": predicted, "class": names[predicted], "probability": round(float(probs[predicted]), 4)},
        "top5": [{"class": names[i], "probability": round(float(p), 4)} for p, i in zip(top.values, top.indices)],
        "explanations": explanations,
    }
    row = {"label": loaded.label, "image": to_display(loaded.unnormalise(x)[0]),
           "caption": f"{names[predicted]} ({float(probs[predicted]):.2f})", "maps": columns}
    return row, entry, maps


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
