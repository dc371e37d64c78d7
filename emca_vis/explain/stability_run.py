"""Heatmap stability under corruption, per model, method, corruption and severity.

    python -m emca_vis.gradcam stability [--checkpoint ...] --data shapes --n 200 \\
        [--method gradcam ...] [--corruptions gaussian_noise motion_blur fog] [--severities 1 2 3 4 5]
    python -m emca_vis.gradcam stability --from runs/gradcam-stability/stability.json   # redraw only

For every image the heatmap of the ground-truth class in the clean image is compared with the
one in each corrupted version (:mod:`emca_vis.explain.stability`: Spearman's rho, top-q IoU,
peak shift, pointing-game retention where the dataset has masks). Images are corrupted after
the model's resize and crop with the torch backend and the seeds of ``python -m
emca_vis.robustness`` (same ``--seed`` and ``--batch-size``: the same corrupted images).
Writes ``stability.json`` (each measure's mean and 95% bootstrap interval per cell and per
corruption family, paired differences between models), ``stability.csv``, ``grid.npz`` (one
image's heatmaps across severities), ``per_image.npz`` with ``--per-image``, and the figures
drawn from them (:mod:`.stability_figures`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..checkpoint.classes import same_classes
from ..data import build_dataset, eval_pixels
from ..errors import UserError
from ..inputs import CHECKPOINT_HELP, LoadedModel, add_nonfinite_option, load_models
from ..options import Parser, nonnegative_float, nonnegative_int, positive_int, probability
from ..outputs import check_out, write_dict_csv, write_json, write_npz
from ..robustness.corruptions import CORRUPTIONS, SEVERITIES, check, corrupt
from ..stats import RESAMPLES
from .heatmaps import LAYER_METHODS, METHODS, check_layer, check_method, predict
from .metrics import POINTING_TOLERANCE, pointing_game
from .stability import MEASURES, TOP_Q
from .stability_pass import StabilityPass, aggregate, families, pairs
from .stability_schema import read_stability

DEFAULT_CORRUPTIONS = ("gaussian_noise", "motion_blur", "fog")  # one each of noise, blur, weather
FILES = ("stability.json", "stability.csv", "grid.npz")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m emca_vis.gradcam stability", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help=CHECKPOINT_HELP)
    parser.add_argument("--layer", default="layer4", help="target layer: layer4, layer3, layer4.1, ...")
    parser.add_argument("--data", default="shapes", help="dataset spec (default: shapes, which has object masks)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=positive_int, default=200, help="images (the first n of the split)")
    parser.add_argument("--method", nargs="+", default=["gradcam"], help=f"any of: {', '.join(METHODS)}")
    parser.add_argument("--corruptions", nargs="+", default=list(DEFAULT_CORRUPTIONS),
                        help=f"any of: {', '.join(CORRUPTIONS)}")
    parser.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    parser.add_argument("--q", type=probability, default=TOP_Q, help="top share of pixels for the IoU (default 0.15)")
    parser.add_argument("--tolerance", type=nonnegative_float, default=POINTING_TOLERANCE,
                        help="pointing-game tolerance in pixels at 224 px, scaled to the input (default 15)")
    parser.add_argument("--batch-size", type=positive_int, default=100)
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="corruption noise and bootstrap resamples")
    parser.add_argument("--resamples", type=positive_int, default=RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--grid-image", type=nonnegative_int, default=0, help="the image of the heatmap grid")
    parser.add_argument("--per-image", action="store_true", help="also per_image.npz: every image's measures")
    parser.add_argument("--from", dest="source", help="redraw the figures of a stability.json (nothing computed)")
    parser.add_argument("--out", default="runs/gradcam-stability", help="output folder")
    add_nonfinite_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .stability_figures import all_figures

    args = build_parser().parse_args(argv)
    out = check_out(args.out, folder=True, files=list(FILES))
    if args.source:
        source = Path(args.source)
        data = read_stability(source)
        grid = source.with_name("grid.npz")
        for path in all_figures(data, grid if grid.is_file() else None, out):
            print(f"wrote {path}")
        return 0
    for method in args.method:
        check_method(method)
    for name in args.corruptions:
        for severity in args.severities:
            check(name, severity, "torch")
    if args.q == 0:
        raise UserError("--q 0: the top region needs a share of pixels above 0")
    if args.grid_image >= args.n:
        raise UserError(f"--grid-image {args.grid_image}: only {args.n} images (--n)")
    failures: list[str] = []
    models = load_models(args.checkpoint, failures, args.allow_nonfinite)
    if any(method in LAYER_METHODS for method in args.method):
        for loaded in models:
            check_layer(loaded.model, args.layer, loaded.input_size)
    data, grid, per_image = run(models, args, failures)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "stability.json", data, indent=1)
    write_dict_csv(out / "stability.csv", csv_rows(data))
    write_npz(out / "grid.npz", grid)
    written = [out / name for name in FILES]
    if args.per_image:
        write_npz(out / "per_image.npz", per_image)
        written.append(out / "per_image.npz")
    written += all_figures(data, out / "grid.npz", out)
    print(markdown_table(data))
    for path in written:
        print(f"wrote {path}")
    return 2 if failures else 0


def evaluation_data(loaded: LoadedModel, spec: str, split: str, n: int):
    """Clean pixels ``[n, 3, S, S]`` in [0, 1] after the model's resize and crop, labels, and
    object masks ``[n, S, S]`` (None for datasets without them)."""
    dataset, info = build_dataset(spec, split, image_size=loaded.input_size, train=False)
    if not same_classes(info.class_names, loaded.class_names):
        raise UserError(f"{loaded.path}: its classes are not those of {spec} (in order)")
    n = min(n, len(dataset))
    transform = eval_pixels(loaded.input_size, loaded.resize)
    if info.kind == "shapes":
        samples = [dataset.sample(i) for i in range(n)]
        return (torch.stack([transform(s.image) for s in samples]), [s.label for s in samples],
                shape_masks(samples, loaded))
    dataset.transform = transform
    items = [dataset[i] for i in range(n)]
    return torch.stack([image for image, _ in items]), [int(label) for _, label in items], None


def shape_masks(samples, loaded: LoadedModel) -> np.ndarray:
    """Object masks of shapes samples ``[n, S, S]``, through the model's resize and crop when it has one."""
    masks = np.stack([s.mask for s in samples])
    if loaded.resize == loaded.input_size == masks.shape[-1]:
        return masks
    transform = eval_pixels(loaded.input_size, loaded.resize)
    return np.stack([transform(Image.fromarray(mask.astype(np.uint8) * 255))[0].numpy() >= 0.5 for mask in masks])


def run(models: list[LoadedModel], args, failures: list[str]) -> tuple[dict, dict, dict]:
    """Every model on every cell: the JSON data, the grid's arrays and the per-image arrays."""
    passes: dict[str, StabilityPass] = {}
    grid: dict[str, np.ndarray] = {}
    clean_scores: dict[str, dict] = {}
    cells = [(c, s) for c in args.corruptions for s in args.severities]
    data_cache: dict[tuple, tuple] = {}
    for loaded in models:
        key = (loaded.input_size, loaded.resize)
        if key not in data_cache:  # models that see the same pixels share them (and the corrupted batches)
            data_cache[key] = evaluation_data(loaded, args.data, args.split, args.n)
    groups: dict[tuple, list[LoadedModel]] = {}
    for loaded in models:
        groups.setdefault((loaded.input_size, loaded.resize), []).append(loaded)
    total = sum(len(g) * len(range(0, len(data_cache[k][0]), args.batch_size)) * (1 + len(cells))
                for k, g in groups.items())
    bar = tqdm(total=total, desc="stability", unit="batch")
    for key, group in groups.items():
        pixels, labels, masks = data_cache[key]
        for loaded in group:
            passes[loaded.label] = StabilityPass(args.method, args.layer, args.q, args.tolerance)
        for start in range(0, len(pixels), args.batch_size):
            index = start // args.batch_size
            indices = list(range(start, min(start + args.batch_size, len(pixels))))
            batch, targets = pixels[indices], [labels[i] for i in indices]
            batch_masks = None if masks is None else masks[indices]
            grid_row = args.grid_image - start if args.grid_image in indices else None
            if grid_row is not None:
                grid[f"image/{key[0]}/clean/0"] = batch[grid_row].permute(1, 2, 0).numpy()
            for loaded in group:
                maps = passes[loaded.label].clean(loaded, index, indices, batch, targets, batch_masks)
                _clean_scores(clean_scores, loaded, batch, targets, maps, batch_masks, passes[loaded.label])
                if grid_row is not None:
                    for method, m in maps.items():
                        grid[f"heatmap/{loaded.label}/{method}/clean/0"] = m[grid_row]
                bar.update()
            for corruption, severity in cells:
                # The robustness tool's seed for this batch: the same corrupted images as its run.
                noisy = corrupt(batch, corruption, severity, "torch", seed=args.seed * 100_003 + index)
                if grid_row is not None:
                    grid[f"image/{key[0]}/{corruption}/{severity}"] = noisy[grid_row].permute(1, 2, 0).numpy()
                for loaded in group:
                    maps = passes[loaded.label].corrupted(loaded, index, corruption, severity, noisy)
                    if grid_row is not None:
                        for method, m in maps.items():
                            grid[f"heatmap/{loaded.label}/{method}/{corruption}/{severity}"] = m[grid_row]
                    bar.update()
    bar.close()
    return _results(models, passes, clean_scores, args, failures), grid, _per_image(models, passes, args)


def _clean_scores(found: dict, loaded, batch, targets, maps, masks, stability_pass: StabilityPass) -> None:
    right = (predict(loaded.model, loaded.normalise(batch)).argmax(1) == torch.tensor(targets)).numpy()
    entry = found.setdefault(loaded.label, {"correct": [], "pointing": {}})
    entry["correct"].append(right)
    if masks is not None:
        for method, m in maps.items():
            hits = pointing_game(m, masks, stability_pass.tolerance_for(loaded))
            entry["pointing"].setdefault(method, []).append(hits)


def _cells(stability_pass: StabilityPass, label: str, method: str, args) -> dict:
    return {(c, s): stability_pass.cell(label, method, c, s) for c in args.corruptions for s in args.severities}


def _results(models, passes, clean_scores, args, failures) -> dict:
    data = {"data": args.data, "split": args.split, "layer": args.layer, "target": "ground truth",
            "methods": args.method, "corruptions": args.corruptions, "severities": args.severities,
            "families": families(args.corruptions), "q": args.q, "seed": args.seed, "resamples": args.resamples,
            "batch_size": args.batch_size, "backend": "torch", "grid_image": args.grid_image, "models": {},
            "pairs": {}, "errors": failures}
    for loaded in models:
        scores = clean_scores[loaded.label]
        entry = {"checkpoint": loaded.spec, "n": int(sum(len(c) for c in scores["correct"])),
                 "tolerance": passes[loaded.label].tolerance_for(loaded),
                 "clean_top1": float(np.concatenate(scores["correct"]).mean()), "methods": {}}
        for method in args.method:
            summary = aggregate(_cells(passes[loaded.label], loaded.label, method, args), args.corruptions,
                                args.severities, args.resamples, args.seed)
            if method in scores["pointing"]:
                summary["clean_pointing_game"] = float(np.concatenate(scores["pointing"][method]).mean())
            entry["methods"][method] = summary
        data["models"][loaded.label] = entry
    same = len({len(passes[m.label].indices(m.label, args.method[0])) for m in models}) == 1
    for method in args.method:  # paired only when every model saw the same images
        data["pairs"][method] = pairs({m.label: _cells(passes[m.label], m.label, method, args) for m in models},
                                      args.corruptions, args.severities, args.resamples, args.seed) if same else []
    return data


def _per_image(models, passes, args) -> dict[str, np.ndarray]:
    found = {}
    for loaded in models:
        for method in args.method:
            for (c, s), measures in _cells(passes[loaded.label], loaded.label, method, args).items():
                for name, values in measures.items():
                    found[f"{loaded.label}/{method}/{c}/{s}/{name}"] = values
    return found


def csv_rows(data: dict) -> list[dict]:
    """One row per model, method, corruption (or family), severity (or "all") and measure."""
    rows = []
    for label, entry in data["models"].items():
        for method, summary in entry["methods"].items():
            units = [("corruption", c, str(s), summary["cells"][c][str(s)]) for c in data["corruptions"]
                     for s in data["severities"]]
            for family, fam in summary["families"].items():
                units.append(("family", family, "all", fam["all"]))
                units += [("family", family, str(s), fam["severities"][str(s)]) for s in data["severities"]]
            for kind, name, severity, measures in units:
                for measure, value in measures.items():
                    rows.append({"model": label, "method": method, "kind": kind, "name": name, "severity": severity,
                                 "measure": measure, **value})
    return rows


MEASURE_TITLES = {"rank_correlation": "Spearman rho", "top_iou": "top-q IoU", "peak_shift": "peak shift (% diag.)",
                  "pointing_retained": "PG retained (%)", "flat": "flat maps (%)"}


def format_value(measure: str, value: dict) -> str:
    if value is None or value.get("mean") is None:
        return "-"
    factor, digits = (100, 1) if measure in ("peak_shift", "pointing_retained", "flat") else (1, 3)
    text = f"{factor * value['mean']:.{digits}f}"
    if value.get("ci_low") is not None:
        text += f" [{factor * value['ci_low']:.{digits}f}, {factor * value['ci_high']:.{digits}f}]"
    return text


def markdown_table(data: dict) -> str:
    """Per model, method and family: each measure's mean over the family's cells [95% CI]."""
    present = [m for m in MEASURE_TITLES if m in MEASURES]
    lines = [f"Heatmap stability under corruption (ground-truth class, {data['data']} {data['split']}; "
             "mean over severities [95% bootstrap CI over images])",
             "| model | method | family | " + " | ".join(MEASURE_TITLES[m] for m in present) + " |",
             "|---|---|---|" + "---:|" * len(present)]
    for label, entry in data["models"].items():
        for method, summary in entry["methods"].items():
            for family, fam in summary["families"].items():
                cells = [format_value(m, fam["all"].get(m)) for m in present]
                lines.append(f"| {label} | {method} | {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
