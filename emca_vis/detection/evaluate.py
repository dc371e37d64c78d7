"""COCO metrics by pycocotools' ``COCOeval``: box AP, AP50, AP75, APS, APM, APL, and mask AP.

    results = predict(model, dataset)                  # COCO result records
    metrics = coco_metrics(dataset.coco, results, ("bbox", "segm"), image_ids=dataset.ids)

Metrics are fractions in 0..1 as ``COCOeval.stats`` gives them, keyed ``bbox_AP``,
``bbox_AP50``, ..., ``segm_AP``, ...; a size range without ground truth (COCOeval's -1)
is ``None``. Images without detections count as COCOeval counts them (misses).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .data import CocoDetection, collate

STATS = ("AP", "AP50", "AP75", "APS", "APM", "APL")
MASK_THRESHOLD = 0.5  # torchvision's mask probabilities -> binary masks, as its COCO reference does


def to_coco_results(output: dict[str, torch.Tensor], image_id: int, category_ids: list[int]) -> list[dict]:
    """One image's detector output as COCO result records (boxes as x, y, w, h; masks as RLE)."""
    boxes = output["boxes"].detach().float().cpu()
    boxes[:, 2:] -= boxes[:, :2]
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    records = [{"image_id": image_id, "category_id": category_ids[label - 1], "bbox": [round(v, 3) for v in box],
                "score": score} for box, score, label in zip(boxes.tolist(), scores, labels)]
    if "masks" in output:
        masks = (output["masks"][:, 0] > MASK_THRESHOLD).cpu().numpy().astype(np.uint8)
        for record, mask in zip(records, masks):
            rle = mask_utils.encode(np.asfortranarray(mask))
            record["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return records


def coco_metrics(coco: COCO, results: list[dict], iou_types=("bbox",), image_ids=None) -> dict[str, float | None]:
    """``COCOeval`` of ``results`` against ``coco`` for each IoU type (``"bbox"``, ``"segm"``),
    over ``image_ids`` (default: every image of ``coco``)."""
    metrics: dict[str, float | None] = {}
    for iou_type in iou_types:
        if not results:  # loadRes cannot take an empty list; no detection scores 0
            metrics.update({f"{iou_type}_{name}": 0.0 for name in STATS})
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
            detections = coco.loadRes([dict(r) for r in results])
            evaluator = COCOeval(coco, detections, iou_type)
            if image_ids is not None:
                evaluator.params.imgIds = sorted(image_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        for name, value in zip(STATS, evaluator.stats[:6]):
            metrics[f"{iou_type}_{name}"] = None if value < 0 else float(value)
    return metrics


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: CocoDetection, device: torch.device | str = "cpu",
            batch_size: int = 4, workers: int = 0, rank: int = 0, world: int = 1, autocast=None,
            progress: bool = True) -> list[dict]:
    """COCO result records of ``model`` on ``dataset`` (this process's shard when ``world > 1``)."""
    model.eval()
    shard = Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    results: list[dict] = []
    for images, targets in tqdm(loader, desc="eval", leave=False, disable=not progress or rank != 0 or None):
        with autocast or contextlib.nullcontext():
            outputs = model([image.to(device) for image in images])
        for output, target in zip(outputs, targets):
            results.extend(to_coco_results(output, int(target["image_id"]), dataset.category_ids))
    return results


def evaluate_detector(model: torch.nn.Module, dataset: CocoDetection, device: torch.device | str = "cpu",
                      batch_size: int = 4, workers: int = 0, rank: int = 0, world: int = 1, autocast=None,
                      progress: bool = True) -> dict[str, float | None]:
    """Box metrics, and mask metrics for a model that predicts masks; gathered over processes."""
    results = predict(model, dataset, device, batch_size, workers, rank, world, autocast, progress)
    if world > 1 and dist.is_initialized():
        gathered: list = [None] * world
        dist.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    predicts_masks = bool(getattr(getattr(model, "module", model), "roi_heads", None) is not None
                          and getattr(getattr(model, "module", model).roi_heads, "has_mask", lambda: False)())
    return coco_metrics(dataset.coco, results, ("bbox", "segm") if predicts_masks else ("bbox",), dataset.ids)
