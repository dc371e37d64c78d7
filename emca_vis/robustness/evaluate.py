"""Corruption errors, CE / mCE of several checkpoints.

    python -m emca_vis.robustness --out r.json                      # demo checkpoints on shapes
    python -m emca_vis.robustness --checkpoint a b --data imagenet:/data/imagenet --split val \\
        [--corruptions fog snow] [--severities 1 3 5] [--backend torch|reference] [--baseline alexnet|<ckpt>]
    python -m emca_vis.robustness --checkpoint c10.safetensors --data cifar10:/data --c-data cifar10-c:/data/CIFAR-10-C
    torchrun --nproc_per_node 4 -m emca_vis.robustness ...          # each rank a shard of the images

Images are corrupted on the fly after the checkpoint's resize and centre crop, then
normalised; ``--c-data`` reads pre-generated ImageNet-C / CIFAR-C files instead
(:mod:`.cdata`). Every finished (corruption, severity) is appended to ``<out>.cells.jsonl``; a
re-run with the same ``--out`` and settings skips those, and may add corruptions, severities or
models. A run that would replace the results at ``--out`` with ones of other settings (dataset,
split, ``--n``, backend, seed, ``--c-data``, baseline, a checkpoint behind a label) or drop some
of its corruptions, severities or models is refused up front unless ``--overwrite`` is given;
a second run on the same ``--out`` while one is going is refused too (``<out>.lock``).
Writes ``<out>`` (JSON: every error and score) and ``<out>.csv``, prints the table. Baseline
for CE: the published AlexNet errors on ImageNet, otherwise the first checkpoint (``--baseline`` picks another).

Detectors (``--data multishapes`` by default, or ``coco:/path``; ``--c-data coco-c:/path``) are
scored by COCO box AP per cell, mPC and rPC (:mod:`emca_vis.detection.robustness`); the cells,
backends, settings checks and sharding are the same. What differs per task is asked of the
checkpoints' task object (:mod:`emca_vis.training.tasks`); one run takes one task.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint.classes import same_classes
from ..errors import UserError
from ..inputs import CHECKPOINT_HELP, LoadedModel, add_nonfinite_option, load_models
from ..options import Parser, nonnegative_int, positive_int
from ..outputs import append_line, check_out, json_text, locked, write_csv as write_rows, write_json
from ..training.faults import fault_point
from ..training.tasks import get_task
from .corruptions import BACKENDS, CORRUPTIONS, SEVERITIES, check, corrupt
from .metrics import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, IMAGENET_C, summarize
from ..stats import RESAMPLES, find_pair, pack_hits, robustness_intervals, unpack_hits
from .results import read_cells, read_results
from .stability import add_option as add_stability_option, needs as stability_needs, results as stability_results
from .stability import markdown as stability_markdown, start as start_stability

SETTINGS = ("data", "split", "n", "backend", "seed", "c_data")  # what a cell's numbers depend on


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m emca_vis.robustness", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help=CHECKPOINT_HELP)
    parser.add_argument("--data", help="dataset spec (default: shapes; multishapes for detectors)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--corruptions", nargs="+", default=list(IMAGENET_C), help=f"any of: {', '.join(CORRUPTIONS)}")
    parser.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    parser.add_argument("--backend", default="torch", choices=BACKENDS)
    parser.add_argument("--c-data", help="pre-generated corruptions instead of on-the-fly: imagenet-c:/p, cifar10-c:/p, "
                        "coco-c:/p (detectors)")
    parser.add_argument("--baseline", help="'alexnet' or a checkpoint (default: alexnet on ImageNet, else the "
                        "first); classifiers only")
    # --num-images is --n under torchrun, whose own parser takes "--n" for an abbreviation of its options.
    parser.add_argument("--n", "--num-images", dest="n", type=positive_int, default=500,
                        help="images (the first n of the split)")
    parser.add_argument("--batch-size", type=positive_int, default=100)
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="corruption noise and bootstrap resamples")
    parser.add_argument("--resamples", type=nonnegative_int, default=RESAMPLES,
                        help="bootstrap resamples for the paired 95%% intervals (0: none)")
    add_stability_option(parser)
    add_nonfinite_option(parser)
    parser.add_argument("--out", default="runs/robustness/results.json")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results at --out that were computed with other settings (refused otherwise)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    failures: list[str] = []
    results = run(args, failures)
    if results is not None:
        print(markdown_table(results))
        if results.get("stability"):
            print("\n" + stability_markdown(results))
        print(f"wrote {args.out}\nwrote {Path(args.out).with_suffix('.csv')}")
    return 2 if failures else 0


def evaluate(progress: Callable[[int, int], None] | None = None, **options) -> dict:
    """The CLI as a function: ``evaluate(checkpoint=[...], corruptions=["fog"], n=50, out="r.json")``.

    Options are the CLI's (``--c-data`` is ``c_data``); ``progress(done, total)`` is called after
    every cell. Returns the results JSON as a dict.
    """
    args = build_parser().parse_args([])
    unknown = set(options) - set(vars(args))
    if unknown:
        raise UserError(f"unknown robustness option(s): {', '.join(sorted(unknown))}")
    vars(args).update(options)
    return run(args, progress=progress)


def run(args: argparse.Namespace, failures: list[str] | None = None,
        progress: Callable[[int, int], None] | None = None) -> dict | None:
    """Evaluate, save JSON/CSV at ``args.out``; the results on rank 0, ``None`` on other ranks."""
    for name in args.corruptions:
        for severity in args.severities:
            check(name, severity, args.backend)
    for option in ("n", "batch_size"):  # evaluate() callers bypass the parser's types
        if getattr(args, option) < 1:
            raise UserError(f"--{option.replace('_', '-')} must be at least 1 (got {getattr(args, option)})")
    if args.resamples < 0:
        raise UserError(f"--resamples must be at least 0 (got {args.resamples})")
    out = Path(args.out)
    cells_path = out.with_suffix(".cells.jsonl")
    check_out(out, files=[out.with_suffix(".csv"), cells_path])
    # The lock is rank 0's: under torchrun the other ranks write nothing and follow rank 0.
    with locked(out) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext():
        rank, world = _init_distributed()
        models = load_models(args.checkpoint, failures, args.allow_nonfinite, task=None)
        task = one_task(models)
        args.data = args.data or task.default_data
        baseline = None
        if task.name == "detection":
            if args.baseline:
                raise UserError("--baseline: detectors have no CE baseline (they are scored by mPC and rPC)")
            if getattr(args, "stability", None):
                raise UserError("--stability: heatmap stability under corruption is measured for classifiers; "
                                "for detectors use python -m emca_vis.gradcam on clean and corrupted images")
        else:
            baseline = args.baseline or ("alexnet" if args.data.startswith("imagenet") else models[0].label)
        if baseline not in (None, "alexnet") and baseline not in [m.label for m in models]:
            models += load_models([baseline], failures, args.allow_nonfinite)
            baseline = models[-1].label
        if not getattr(args, "overwrite", False):
            check_existing(out, cells_path, args, models, baseline)
        done = _read_cells(cells_path, rank, _setting(args))
        groups = _by_preprocessing(models)
        total = len(groups) * (1 + len(args.corruptions) * len(args.severities))
        scored = []
        for i, group in enumerate(groups):
            step = None if progress is None else (lambda k, i=i: progress(i * total // len(groups) + k, total))
            scored += evaluate_group(group, args, done, cells_path, rank, world, step, failures)
        if not scored:
            raise UserError(f"none of the checkpoints could be scored on {args.data}")
        if baseline not in (None, "alexnet") and baseline not in [m.label for m in scored]:
            raise UserError(f"the CE baseline {baseline} could not be scored; choose another with --baseline")
        results = None
        if rank == 0:
            results = task.robustness_results(scored, done, args, baseline)
            write_json(out, results)
            task.robustness_csv(results, out.with_suffix(".csv"))
        if world > 1:
            dist.destroy_process_group()
    return results


def one_task(models: list[LoadedModel]):
    """The task of every checkpoint: a run scores classifiers or detectors, not both."""
    tasks = {m.task.name: m for m in models}
    if len(tasks) > 1:
        labels = {name: ", ".join(m.label for m in models if m.task.name == name) for name in tasks}
        raise UserError("--checkpoint: mixes " + " and ".join(f"{name} ({labels[name]})" for name in sorted(tasks))
                        + " checkpoints; score each task in its own run")
    return models[0].task


def settings_of(args) -> dict:
    """The settings a cell's numbers depend on, as saved in the results JSON."""
    return {key: getattr(args, key) for key in SETTINGS}


def check_existing(out: Path, cells_path: Path, args, models: list[LoadedModel], baseline: str) -> None:
    """Refuse (one line) a run whose results would silently replace those at ``out``: results of
    other settings, or ones this run would drop (a corruption, severity or model it leaves out).
    Without a results file, the last cell written tells the settings of the run it came from."""
    refuse = "; give --overwrite to replace them, or choose another --out"
    if out.exists():
        try:
            old = read_results(out)
        except UserError as error:
            raise UserError(f"--out {out}: exists and is not usable robustness results ({error}); give --overwrite "
                            "to replace it, or choose another --out") from None
        saved = dict(old.get("settings") or {})
        if not saved:  # written before settings were saved: what it has
            saved = {key: old[key] for key in ("data", "split", "backend") if old.get(key) is not None}
        now = settings_of(args)
        for key, value in saved.items():
            if key in now and value != now[key]:
                raise UserError(f"--out {out}: holds results with {key} {value}, this run has {now[key]}{refuse}")
        paths = {m.label: m.path for m in models}
        for label, model in old["models"].items():
            if label not in paths:
                raise UserError(f"--out {out}: holds results for model {label}, which this run leaves out{refuse}")
            if model.get("checkpoint") and Path(model["checkpoint"]).resolve() != paths[label].resolve():
                raise UserError(f"--out {out}: holds results of {label} from {model['checkpoint']}, this run "
                                f"reads {paths[label]}{refuse}")
        for corruption in old["corruptions"]:
            if corruption not in args.corruptions:
                raise UserError(f"--out {out}: holds results for corruption {corruption}, which this run leaves "
                                f"out{refuse}")
        for severity in old["severities"]:
            if severity not in args.severities:
                raise UserError(f"--out {out}: holds results for severity {severity}, which this run leaves out"
                                f"{refuse}")
        if old.get("baseline") not in (None, baseline):
            raise UserError(f"--out {out}: holds results with baseline {old['baseline']}, this run has {baseline}"
                            f"{refuse}")
        return
    cells = read_cells(cells_path)
    if cells and cells[-1]["setting"] != _setting(args):
        before = dict(zip(SETTINGS, cells[-1]["setting"].split("|")))
        now = dict(zip(SETTINGS, _setting(args).split("|")))
        key = next((k for k in SETTINGS if before.get(k) != now[k]), "settings")
        raise UserError(f"--out {out}: its unfinished run in {cells_path.name} has {key} {before.get(key, '?')}, "
                        f"this run has {now.get(key, '?')}{refuse.replace('them', 'its cells')}")


def _init_distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _by_preprocessing(models: list[LoadedModel]) -> list[list[LoadedModel]]:
    """Models that see the same pixels (input size and resize) share each corrupted batch."""
    groups: dict[tuple, list[LoadedModel]] = {}
    for m in models:
        groups.setdefault((m.input_size, m.resize), []).append(m)
    return list(groups.values())


def evaluate_group(models: list[LoadedModel], args, done: dict, cells_path: Path, rank: int, world: int,
                   progress: Callable[[int], None] | None = None,
                   failures: list[str] | None = None) -> list[LoadedModel]:
    """Score ``models`` (one preprocessing) on every cell not in ``done``; returns the models scored
    (a model whose classes are not the dataset's is reported and left out)."""
    task = models[0].task
    dataset, info = task.robustness_data(models[0], args.data, args.split, args.n)
    class_names = list(info.class_names)
    for m in [m for m in models if not same_classes(class_names, m.class_names)]:
        message = f"{m.path}: its classes are not those of {args.data} (in order); refusing to score it"
        print(f"error: {message}", file=sys.stderr)
        if failures is not None:
            failures.append(message)
    models = [m for m in models if same_classes(class_names, m.class_names)]
    if not models:
        return []
    tracker = start_stability(args, models, dataset, info)  # --stability (classifiers)
    cells = [("clean", 0)] + [(c, s) for c in args.corruptions for s in args.severities]
    if args.c_data and len(cells) > 1:  # a wrong --c-data is refused before the clean cell's minutes
        task.robustness_c_data(args.c_data, *cells[1], dataset, class_names, args.split)
    for k, (corruption, severity) in enumerate(tqdm(cells, desc="cells", disable=rank != 0 or None)):
        if progress is not None:
            progress(k)
        wanted = [m for m in models if (m.label, corruption, severity) not in done
                  or stability_needs(args, done[(m.label, corruption, severity)], corruption)]
        if not wanted:
            continue
        source = dataset
        if args.c_data and corruption != "clean":
            source = task.robustness_c_data(args.c_data, corruption, severity, dataset, class_names, args.split)
        # Whole batches go to ranks in turn and keep their global index (the corruption seed),
        # so any number of processes sees exactly the images and noise of a single process.
        n = min(args.n, len(source))
        starts = list(range(0, n, args.batch_size))[rank::world]
        batches = [(start // args.batch_size, list(range(start, min(start + args.batch_size, n)))) for start in starts]
        on_the_fly = corruption != "clean" and not args.c_data
        scores = task.robustness_cells(wanted, source, batches,
                                       (corruption, severity, args.backend, args.seed) if on_the_fly else None, n, world,
                                       tracker)
        for m, score in zip(wanted, scores):
            cell = {"model": m.label, "corruption": corruption, "severity": severity, **score,
                    "setting": _setting(args)}
            if tracker is not None and corruption != "clean":
                cell["stability"] = tracker.cell_data(m.label, corruption, severity)
            done[(m.label, corruption, severity)] = cell
            if rank == 0:
                append_line(cells_path, json_text(cell, indent=None))
                fault_point("cell")
    if progress is not None:
        progress(len(cells))
    return models


def classification_cells(models: list[LoadedModel], source, batches: list[tuple[int, list[int]]],
                         corruption: tuple | None, n: int, world: int, tracker=None) -> list[dict]:
    """Each classifier's cell: its right images among the first ``n`` of ``source``, summed over processes."""
    correct = _per_image_correct(models, source, batches, corruption, n, tracker)
    if world > 1:
        dist.all_reduce(correct)
    return [{"correct": int(row.sum()), "total": n, "hits": pack_hits(row.numpy() > 0)} for row in correct]


def _per_image_correct(models: list[LoadedModel], source, batches: list[tuple[int, list[int]]],
                       corruption: tuple | None, n: int, tracker=None) -> torch.Tensor:
    """Per image, 1 where a model is right: float64 ``[len(models), n]``, 0 on the images of other
    ranks' shards (so a sum over ranks fills every row). ``tracker`` (``--stability``) gets
    every batch as well: the clean one's heatmaps, or the corrupted one's against them."""
    correct = torch.zeros(len(models), n, dtype=torch.float64)
    loader = DataLoader(source, batch_sampler=[indices for _, indices in batches])
    for (index, indices), (images, labels) in zip(batches, loader):
        if corruption:
            name, severity, backend, seed = corruption
            images = corrupt(images, name, severity, backend, seed=seed * 100_003 + index)
        if tracker is not None:
            if corruption:
                tracker.corrupted(models, index, indices, name, severity, images, labels)
            else:
                tracker.clean(models, index, indices, images, labels)
        for i, m in enumerate(models):
            with torch.no_grad():
                correct[i, indices] = (m.model(m.normalise(images)).argmax(1) == labels).double()
    return correct


def _setting(args) -> str:
    """What a cell's numbers depend on besides model and corruption: cells of other settings are redone."""
    return f"{args.data}|{args.split}|{args.n}|{args.backend}|{args.seed}|{args.c_data or ''}"


def _read_cells(path: Path, rank: int, setting: str) -> dict:
    """Finished cells of this setting, checked (:func:`.results.read_cells`); a last line cut
    short by a kill is dropped (that cell is redone)."""
    done = {}
    for cell in read_cells(path, repair=rank == 0):
        # Classifier cells without per-image results (written before they were kept) are redone.
        if cell["setting"] == setting and (cell.get("hits") is not None or cell.get("metrics") is not None):
            done[(cell["model"], cell["corruption"], cell["severity"])] = cell
    return done


def build_results(models: list[LoadedModel], done: dict, args, baseline: str) -> dict:
    def errors_of(label):
        table = {}
        for c in args.corruptions:
            table[c] = {s: 1 - done[(label, c, s)]["correct"] / done[(label, c, s)]["total"] for s in args.severities}
        clean = done[(label, "clean", 0)]
        return 1 - clean["correct"] / clean["total"], table

    if baseline == "alexnet":
        base_clean, base_errors = ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS
    else:
        base_clean, base_errors = errors_of(baseline)
    results = {"data": args.data, "split": args.split, "backend": args.backend, "baseline": baseline,
               "corruptions": args.corruptions, "severities": args.severities, "settings": settings_of(args),
               "models": {}}
    for m in models:
        clean, errors = errors_of(m.label)
        scores = summarize(clean, errors, base_errors, base_clean)
        n = done[(m.label, "clean", 0)]["total"]
        results["models"][m.label] = {"checkpoint": m.spec, "n": n,
                                      "errors": {c: {str(s): e for s, e in v.items()} for c, v in errors.items()},
                                      **scores}
        # Per image only when every cell holds the same images (--c-data files may hold fewer).
        if all(done[(m.label, c, s)]["total"] == n for c in args.corruptions for s in args.severities):
            results["models"][m.label].update(
                correct_clean=done[(m.label, "clean", 0)]["hits"],
                correct={c: {str(s): done[(m.label, c, s)]["hits"] for s in args.severities} for c in args.corruptions})
    results["intervals"] = intervals(results, getattr(args, "resamples", RESAMPLES), args.seed)
    if getattr(args, "stability", None):
        results.update(stability_results(done, [m.label for m in models], args))
    return results


def intervals(results: dict, resamples: int = RESAMPLES, seed: int = 0) -> dict | None:
    """Paired bootstrap intervals and McNemar tests of a results dict (:func:`emca_vis.stats.robustness_intervals`),
    keyed like the scores; None without resamples or per-image results, or when cells hold
    different images (pre-generated corruption files of other lengths): nothing to pair."""
    models = results["models"]
    corruptions, severities = results["corruptions"], results["severities"]
    if not resamples or len({m["n"] for m in models.values()}) != 1 or any(not m.get("correct_clean")
                                                                            for m in models.values()):
        return None
    n = next(iter(models.values()))["n"]
    correct = {label: np.stack([unpack_hits(m["correct_clean"], n)]
                               + [unpack_hits(m["correct"][c][str(s)], n) for c in corruptions for s in severities])
               for label, m in models.items()}
    baseline = results["baseline"]
    if baseline == "alexnet":
        baseline = np.array([ALEXNET_CLEAN_ERROR] + [ALEXNET_ERRORS[c][s - 1] if c in ALEXNET_ERRORS else np.nan
                                                     for c in corruptions for s in severities])
    over = [corruptions.index(c) for c in next(iter(models.values())).get("mce_over", [])]
    found = robustness_intervals(correct, len(severities), over, baseline, resamples, seed)
    for entry in found["models"].values():
        entry["ce"] = {c: entry["ce"][i] for i, c in enumerate(corruptions)}
    return found


def write_csv(results: dict, path: Path) -> None:
    bounds = {label: entry["ce"] for label, entry in ((results.get("intervals") or {}).get("models") or {}).items()}
    rows = []
    for label, model in results["models"].items():
        rows.append([label, "clean", 0, model["clean_error"], "", "", ""])
        for c, by_severity in model["errors"].items():
            low, high = (bounds.get(label, {}).get(c) or ["", ""])
            for s, e in by_severity.items():
                rows.append([label, c, s, e, model["ce"].get(c, ""), low, high])
    write_rows(path, rows, header=["model", "corruption", "severity", "error", "ce", "ce_ci_low", "ce_ci_high"])


def markdown_table(results: dict) -> str:
    """The printed table of a results JSON, classifiers' or detectors' (its task's)."""
    return get_task(results.get("task") or "classification").robustness_table(results)


def classification_table(results: dict) -> str:
    """The scores (with 95% bootstrap intervals where the results have them), then each model's
    paired differences from the one with the lowest mCE."""
    corruptions = results["corruptions"]
    found = results.get("intervals") or {}
    bounds = found.get("models") or {}
    short = [c.replace("_noise", "").replace("_blur", "").replace("_transform", "").replace("_compression", "")
             for c in corruptions]
    lines = [f"CE and mCE in % of {results['baseline']}'s errors; {results['data']} {results['split']}, "
             f"{results['backend']} backend" + (f"; [95% CI], paired bootstrap over the {found['n']} images "
                                                 f"({found['resamples']} resamples)" if found else ""),
             "| model | clean err | mCE | rel. mCE | mCA | " + " | ".join(short) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(corruptions)]
    for label, m in results["models"].items():
        ce = [_pct(m["ce"].get(c)) for c in corruptions]
        shown = [_with_interval(m[key], bounds.get(label, {}).get(key))
                 for key in ("clean_error", "mce", "relative_mce", "mean_corruption_accuracy")]
        lines.append(f"| {label} | " + " | ".join(shown + ce) + " |")
    return "\n".join(lines + _differences(results))


def _differences(results: dict) -> list[str]:
    pairs = (results.get("intervals") or {}).get("pairs") or []
    models = results["models"]
    if not pairs:
        return []
    scored = [label for label, m in models.items() if m["mce"] is not None]
    reference = min(scored, key=lambda label: models[label]["mce"]) if scored else next(iter(models))
    lines = ["", f"Paired differences from {reference} (model minus {reference}, points; [95% CI]; McNemar's exact "
                 "p on the clean images)",
             "| model | clean err | McNemar p | mCE | rel. mCE | mCA |", "|---|---:|---:|---:|---:|---:|"]
    for label in models:
        if label == reference:
            continue
        pair = find_pair(pairs, label, reference)
        cells = [_difference(pair.get(key)) for key in ("clean_error", "mce", "relative_mce",
                                                         "mean_corruption_accuracy")]
        cells.insert(1, f"{pair['clean_error']['p_value']:.3g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + ["A dash: undefined on more than 1% of the resamples (the baseline makes no error under a "
                    "corruption, or does not degrade, in too many of them)."]


def _with_interval(value, bounds) -> str:
    return _pct(value) if value is None or bounds is None else f"{_pct(value)} [{_pct(bounds[0])}, {_pct(bounds[1])}]"


def _difference(comparison: dict | None) -> str:
    if comparison is None:
        return "-"
    return f"{_points(comparison['difference'])} [{_points(comparison['low'])}, {_points(comparison['high'])}]"


def _points(fraction: float) -> str:
    """Signed percentage points; plain ``0.0`` when it rounds to zero (no ``-0.0``)."""
    text = f"{100 * fraction:+.1f}"
    return "0.0" if float(text) == 0 else text


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
