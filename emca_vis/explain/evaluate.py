"""Score heatmaps of several models: localisation against object masks, and faithfulness.

    python -m emca_vis.gradcam evaluate [--checkpoint ...] --data shapes --n 500 [--method ...]
    python -m emca_vis.gradcam evaluate --checkpoint m.safetensors --data imagenet:/data/imagenet \\
        --boxes /data/imagenet/val_boxes --n 2000
    python -m emca_vis.gradcam evaluate --checkpoint det.safetensors --data multishapes --n 50

Detectors (``multishapes`` or ``coco:/path``): the heatmaps of the kept detections that match
an object of their class (IoU >= 0.5, greedy by score) are scored against that object (pointing
game against its mask, or its box without masks; energy inside its box); ``recall`` is the share
of objects matched. See :mod:`emca_vis.detection.explain`.

Heatmaps explain the ground-truth class. The pointing game is TorchRay's (a hit when the
maximum lies less than ``--tolerance`` px from the object, 15 px at 224 px scaled to the input),
reported per image and per class (each class's hit rate, then their mean, as Zhang et al. do). ``shapes`` carries a mask per image; for image
folders (ImageNet) ``--boxes`` names a folder of Pascal VOC XML files, one per image
(``<image stem>.xml``), whose boxes are mapped through the model's resize and centre crop.
``--faithfulness`` adds deletion/insertion AUC, ``--road`` pytorch-grad-cam's ROAD score
(``(road_lerf - road_morf) / 2``). Writes ``scores.csv`` and ``scores.json`` (per model and method: sample count, mean and 95%
confidence interval of each metric) and prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..checkpoint.classes import same_classes
from ..data import build_dataset
from ..errors import UserError
from ..inputs import CHECKPOINT_HELP, LoadedModel, add_nonfinite_option, load_models
from ..options import Parser, nonnegative_float, positive_int, probability
from ..outputs import check_out, write_dict_csv, write_json
from . import metrics
from .heatmaps import LAYER_METHODS, METHODS, check_method, heatmaps, predict

DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m emca_vis.gradcam evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help=CHECKPOINT_HELP)
    parser.add_argument("--layer", help="target layer: layer4, layer3, layer4.1, ...; detectors also "
                        "fpn.0, fpn.1, ... (default: layer4; detectors: fpn.0)")
    parser.add_argument("--data", help="shapes, or folder:/p / imagenet:/p with --boxes; detectors: multishapes "
                        "or coco:/p (default: shapes, multishapes)")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--boxes", help="folder of Pascal VOC XML box files (image folders only)")
    parser.add_argument("--n", type=positive_int, default=500, help="number of images (the first n of the split)")
    parser.add_argument("--method", nargs="+", help=f"any of: {', '.join(METHODS)} (default: "
                        f"{' '.join(DEFAULT_METHODS)}; detectors: layercam gradcam eigencam)")
    add_detection_options(parser)
    parser.add_argument("--tolerance", type=nonnegative_float, default=metrics.POINTING_TOLERANCE,
                        help="pointing-game tolerance in pixels at 224 px, scaled to the input (default 15: "
                             "TorchRay's; 4.29 px at 64 px)")
    parser.add_argument("--faithfulness", action="store_true", help="also deletion and insertion AUC (slower)")
    parser.add_argument("--steps", type=positive_int, default=20, help="deletion/insertion steps")
    parser.add_argument("--road", action="store_true", help="also pytorch-grad-cam's ROAD score (slowest)")
    parser.add_argument("--batch-size", type=positive_int, default=50)
    parser.add_argument("--out", default="runs/gradcam-eval", help="output folder")
    add_nonfinite_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for method in args.method or []:
        check_method(method)
    out = check_out(args.out, folder=True, files=["scores.csv", "scores.json"])
    failures: list[str] = []
    models = load_models(args.checkpoint, failures, args.allow_nonfinite, task=None)
    plans = [model_plan(loaded, args, "evaluate") for loaded in models]
    torch.manual_seed(0)  # ROAD's imputation noise
    rows = []
    for loaded, (methods, layer, data) in zip(models, plans):
        # a model that cannot be scored (other classes, ...) is reported; the others go on
        settings = argparse.Namespace(**{**vars(args), "layer": layer, "data": data})
        try:
            rows.extend(loaded.task.score_heatmaps(loaded, methods, settings))
        except ClassMismatch as error:  # dataset problems (no masks, no such split) stop the run instead
            print(f"error: {error}", file=sys.stderr)
            failures.append(str(error))
    if not rows:
        raise UserError(f"none of the checkpoints could be scored on {args.data or 'the default data'}")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "scores.csv")
    layers = sorted({layer for _, layer, _ in plans})
    write_json(out / "scores.json", {"data": args.data or plans[0][2], "split": args.split,
                                     "layer": layers[0] if len(layers) == 1 else layers, "rows": rows,
                                     "errors": failures}, indent=2)
    print(markdown_table(rows))
    print(f"wrote {out / 'scores.csv'}\nwrote {out / 'scores.json'}")
    return 2 if failures else 0


class ClassMismatch(UserError):
    """A model that does not know the dataset's classes: it is left out, the others are scored."""


def add_detection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--score-threshold", type=probability, default=0.5,
                        help="detectors: explain the detections scoring at least this (default: 0.5)")
    parser.add_argument("--max-detections", type=positive_int, default=5,
                        help="detectors: explain at most this many detections per image, best first (default: 5)")


def model_plan(loaded: LoadedModel, args, tool: str) -> tuple[list[str], str, str]:
    """``(methods, layer, data)`` of one model: the options given, else its task's defaults, each
    checked (one-line errors) before any heatmap is computed."""
    task = loaded.task
    methods = list(args.method or task.default_methods[tool])
    for method in methods:
        task.check_method(loaded, method)
    layer = task.default_layer if args.layer is None else args.layer
    if any(method in LAYER_METHODS for method in methods):
        task.check_layer(loaded, layer)
    task.check_targets(loaded, args)
    for option in ("faithfulness", "road"):
        if getattr(args, option, False) and task.name != "classification":
            raise UserError(f"--{option}: not available for the {task.name} model {loaded.label}")
    return methods, layer, getattr(args, "data", None) or task.default_data


def evaluation_set(loaded: LoadedModel, spec: str, split: str, n: int, boxes: str | None):
    """Model inputs ``[n, 3, S, S]``, object masks ``[n, S, S]`` and labels for ``loaded``."""
    dataset, info = build_dataset(spec, split, image_size=loaded.input_size, train=False)
    # ImageNet's synset folders are the model's ImageNet names, index for index
    names = loaded.class_names if same_classes(info.class_names, loaded.class_names) else list(info.class_names)
    unknown = sorted(set(names) - set(loaded.class_names))
    if unknown:
        raise ClassMismatch(f"{loaded.path}: the model has no class {unknown[0]!r} of {spec} "
                            f"({len(unknown)} of its {len(names)} classes are unknown to it)")
    model_index = [loaded.class_names.index(name) for name in names]  # dataset label -> model class
    n = min(n, len(dataset))
    if info.kind == "shapes":
        samples = [dataset.sample(i) for i in range(n)]
        images = torch.stack([loaded.preprocess(s.image) for s in samples])
        return images, np.stack([s.mask for s in samples]), [model_index[s.label] for s in samples]
    if not boxes:
        raise UserError(f"{spec} has no object masks: give --boxes with a folder of Pascal VOC XML files")
    files = dataset.samples[:n]
    images = torch.stack([dataset[i][0] for i in range(n)])
    masks = np.stack([_box_mask(Path(boxes) / f"{Path(path).stem}.xml", path, loaded.meta) for path, _ in files])
    return images, masks, [model_index[label] for _, label in files]


def _box_mask(xml: Path, image_path: str, meta: dict) -> np.ndarray:
    """The union of an image's boxes, mapped through resize(shorter side) + centre crop."""
    if not xml.exists():
        raise UserError(f"{xml}: no box file for {Path(image_path).name}")
    with Image.open(image_path) as image:
        width, height = image.size
    scale = meta["resize"] / min(width, height)
    size = meta["input_size"]
    left = int(round((round(width * scale) - size) / 2))
    top = int(round((round(height * scale) - size) / 2))
    mapped = [(round(x0 * scale) - left, round(y0 * scale) - top, round(x1 * scale) - left, round(y1 * scale) - top)
              for _, (x0, y0, x1, y1) in metrics.read_voc_boxes(xml)]
    return metrics.boxes_to_masks([mapped], size, size)[0]


def score_model(loaded: LoadedModel, images: torch.Tensor, masks: np.ndarray, labels: list[int], args,
                per_image: bool = False, methods=None) -> list[dict]:
    """One table row per method (``methods``, default ``args.method``) for one model; with
    ``per_image``, the rows also keep every image's scores (``per_image``: metric -> list) for
    paired comparisons between models."""
    model, size = loaded.model, loaded.input_size
    tolerance = metrics.pointing_tolerance(size, getattr(args, "tolerance", metrics.POINTING_TOLERANCE))
    accuracy = float((predict(model, images).argmax(1) == torch.tensor(labels)).float().mean())
    rows = []
    for method in methods or args.method:
        scored: dict[str, list[np.ndarray]] = {}
        chunks = range(0, len(images), args.batch_size)
        for start in tqdm(chunks, desc=f"{loaded.label} {method}", leave=False):
            batch = images[start:start + args.batch_size]
            targets = labels[start:start + args.batch_size]
            maps = heatmaps(model, batch, targets, method, args.layer, batch_size=args.batch_size)
            mask = masks[start:start + args.batch_size]
            scores = {"pointing_game": metrics.pointing_game(maps, mask, tolerance),
                      "energy_pointing_game": metrics.energy_pointing_game(maps, mask)}
            if args.faithfulness:
                curves = metrics.deletion_insertion(model, batch, maps, targets, steps=args.steps,
                                                    batch_size=args.batch_size)
                scores["deletion_auc"] = curves["deletion_auc"]
                scores["insertion_auc"] = curves["insertion_auc"]
            if args.road:
                road = metrics.road(model, batch, maps, targets)
                scores["road"] = (road["road_lerf"] - road["road_morf"]) / 2  # the library's combined score
            for key, value in scores.items():
                scored.setdefault(key, []).append(np.asarray(value, dtype=float))
        row = {"model": loaded.label, "method": method, "n": len(images), "top1": round(100 * accuracy, 2)}
        for key, parts in scored.items():
            summary = metrics.summarize(np.concatenate(parts), proportion=key == "pointing_game",
                                        limits=metrics.LIMITS.get(key))
            row.update({f"{key}_{stat}": summary[stat] for stat in ("mean", "ci_low", "ci_high")})
        # The paper's figure: each class's hit rate, then their mean.
        per_class = metrics.per_class_mean(np.concatenate(scored["pointing_game"]), labels)
        row.update({f"pointing_game_per_class_{stat}": per_class[stat] for stat in ("mean", "ci_low", "ci_high")},
                   pointing_game_classes=per_class["classes"], pointing_tolerance=round(tolerance, 4))
        if per_image:
            row["per_image"] = {key: np.concatenate(parts).tolist() for key, parts in scored.items()}
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    write_dict_csv(path, rows)


METRIC_TITLES = {"pointing_game": "pointing game (%)", "pointing_game_per_class": "PG per class (%)",
                 "energy_pointing_game": "energy PG (%)",
                 "deletion_auc": "deletion AUC (lower better)", "insertion_auc": "insertion AUC (higher better)",
                 "road": "ROAD (higher better)"}


def markdown_table(rows: list[dict]) -> str:
    """Each metric as ``mean [95% CI]``; localisation scores in percent. The accuracy column is
    classifiers' top-1, detectors' recall of matched objects (``n``: matched detections)."""
    present = [key for key in METRIC_TITLES if any(f"{key}_mean" in row for row in rows)]
    kinds = {"top1" if "top1" in row else "recall" for row in rows}
    accuracy = {"top1": "top-1 (%)", "recall": "recall (%)"}.get(*kinds) if len(kinds) == 1 else "top-1 / recall (%)"
    lines = [f"| model | method | n | {accuracy} | " + " | ".join(METRIC_TITLES[k] for k in present) + " |",
             "|---|---|---:|---:|" + "---:|" * len(present)]
    for row in rows:
        cells = []
        for key in present:
            factor, digits = (100, 1) if key in ("pointing_game", "pointing_game_per_class",
                                                 "energy_pointing_game") else (1, 3)
            low, mean, high = (factor * row[f"{key}_{s}"] for s in ("ci_low", "mean", "ci_high"))
            cells.append(f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]")
        score = row["top1"] if "top1" in row else row["recall"]
        lines.append(f"| {row['model']} | {row['method']} | {row['n']} | {score:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
