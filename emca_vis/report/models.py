"""Facts about each checkpoint: architecture, cost, speed, clean accuracy and how it was trained.

Shared by the report and the ``analyses/`` scripts (efficiency table, ablations), so every
table of the same number is computed the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..checkpoint.classes import same_classes
from ..data import build_dataset
from ..errors import UserError
from ..inputs import LoadedModel
from ..models import LABELS, UnknownModelError, parse_model_name
from ..profile import count_gflops, count_parameters, measure_throughput
from ..stats import pack_hits


def architecture(meta: dict) -> dict:
    """Depth, attention type, EMCA or not, and the ablation knobs, from checkpoint metadata."""
    try:
        depth, attention, emca = parse_model_name(meta["model"])
    except UnknownModelError:
        depth, attention, emca = None, None, False
    kwargs = meta["model_kwargs"]
    name = LABELS.get(attention, str(attention))
    released = emca and meta["model"].endswith("_released")
    return {"depth": depth, "attention": attention, "emca": emca,
            "kind": (f"EMCA-{name} (released code)" if released else f"EMCA-{name}") if emca else name,
            "placement": kwargs.get("placement"),
            "emca_stages": kwargs.get("emca_stages") if emca else None,
            "emca_blocks": kwargs.get("emca_blocks") if emca else None}


def plain_name(meta: dict) -> str | None:
    """The plain ResNet of the same depth, e.g. ``resnet18`` for ``resnet18_emca_eca``."""
    depth = architecture(meta)["depth"]
    return None if depth is None else f"resnet{depth}"


def counterpart_name(meta: dict) -> str | None:
    """The non-EMCA model an EMCA model extends (``resnet18_emca_eca`` -> ``resnet18_eca``)."""
    arch = architecture(meta)
    return f"resnet{arch['depth']}_{arch['attention']}" if arch["emca"] else None


def training_summary(meta: dict) -> dict:
    """What the checkpoint says about its training (missing fields stay None)."""
    metrics, args = meta["metrics"], meta["train_args"]
    return {"dataset": meta["dataset"], "input_size": meta["input_size"],
            "epoch": metrics.get("epoch"), "epochs": args.get("epochs"),
            "val_top1": _fraction(metrics.get("val_top1")), "val_top5": _fraction(metrics.get("val_top5")),
            "optimizer": args.get("optimizer"), "lr": args.get("lr"), "batch_size": args.get("batch_size"),
            "created": meta["created"]}


def _fraction(percent) -> float | None:
    return None if percent is None else float(percent) / 100


def _groups(models: Sequence[LoadedModel], key) -> dict[tuple, list[LoadedModel]]:
    groups: dict[tuple, list[LoadedModel]] = {}
    for m in models:
        groups.setdefault(key(m), []).append(m)
    return groups


def clean_accuracy(models: Sequence[LoadedModel], spec: str, split: str, n: int, batch_size: int = 100,
                   progress: bool = True) -> dict[str, dict]:
    """Top-1 and top-5 accuracy (fractions) on the first ``n`` images of ``split``, and which
    images each model gets right (top-1, ``correct``: :func:`emca_vis.stats.pack_hits`).

    Models with the same preprocessing share each batch, so the images are read once.
    """
    results = {}
    preprocessing = _groups(models, lambda m: (m.input_size, m.resize, tuple(m.meta["mean"]),
                                               tuple(m.meta["std"])))
    for group in preprocessing.values():
        dataset, info = build_dataset(spec, split, image_size=group[0].input_size, train=False)
        for m in group:
            if not same_classes(info.class_names, m.class_names):
                raise UserError(f"{m.path}: its classes are not those of {spec} (in order)")
        subset = Subset(dataset, range(min(n, len(dataset))))
        counts = {m.label: [0, 0] for m in group}
        hits: dict[str, list[torch.Tensor]] = {m.label: [] for m in group}  # per image, for paired tests
        total = 0
        loader = DataLoader(subset, batch_size=batch_size)
        for images, labels in tqdm(loader, desc="clean accuracy", leave=False, disable=not progress):
            with torch.no_grad():
                for m in group:
                    top = m.model(images).topk(min(5, len(m.class_names)), dim=1).indices
                    top_hits = top == labels[:, None]
                    counts[m.label][0] += int(top_hits[:, 0].sum())
                    counts[m.label][1] += int(top_hits.any(1).sum())
                    hits[m.label].append(top_hits[:, 0])
            total += len(labels)
        for label, (top1, top5) in counts.items():
            results[label] = {"top1": top1 / total, "top5": top5 / total, "n": total,
                              "correct": pack_hits(torch.cat(hits[label]).numpy())}
    return results


def efficiency(models: Sequence[LoadedModel], batch_size: int = 16, repeats: int = 5, warmup: int = 1,
               progress: bool = True) -> dict[str, dict]:
    """Parameters, GFLOPs and CPU throughput of each model at its own input size.

    Throughput is also given relative to the plain ResNet of the same depth among ``models``
    (timed in turns in the same run); ``None`` where there is none.
    """
    rows = {m.label: {"params": count_parameters(m.model), "gflops": count_gflops(m.model, m.input_size)}
            for m in models}
    for (size,), group in _groups(models, lambda m: (m.input_size,)).items():
        speed = measure_throughput({m.label: m.model for m in group}, batch_size, size, "cpu", repeats, warmup,
                                   progress=progress)
        plain = {m.meta["model"]: m.label for m in group if architecture(m.meta)["attention"] is None}
        for m in group:
            base = plain.get(plain_name(m.meta))
            rows[m.label]["throughput"] = speed[m.label]
            rows[m.label]["relative_throughput"] = speed[m.label] / speed[base] if base else None
            rows[m.label]["throughput_baseline"] = base
    return rows


def model_rows(models: Sequence[LoadedModel], spec: str, split: str, n_clean: int, batch_size: int = 100,
               throughput_batch: int = 16, repeats: int = 5, progress: bool = True) -> list[dict]:
    """One JSON-ready row per model: everything of the report's models table."""
    cost = efficiency(models, throughput_batch, repeats, progress=progress)
    try:
        accuracy = clean_accuracy(models, spec, split, n_clean, batch_size, progress)
    except UserError as error:  # a foreign dataset: the table still shows cost and training metadata
        print(f"warning: no clean accuracy: {error}", file=sys.stderr)
        accuracy = {}
    return [{"label": m.label, "checkpoint": m.spec, "model": m.meta["model"],
             "model_kwargs": m.meta["model_kwargs"], **architecture(m.meta), **cost[m.label],
             "clean": accuracy.get(m.label), "training": training_summary(m.meta)} for m in models]
