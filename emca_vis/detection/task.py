"""Detection as a task (the verbs of :mod:`emca_vis.training.tasks`): training, and what the
analysis tools ask of a detector checkpoint.

The loop (data order, optimiser, schedule, AMP, DDP, resume states, metrics files, best/last
checkpoints) is the classification one. ``--init`` initialises the backbone from a
classification checkpoint; validation gives COCO box (and mask) AP by pycocotools;
``best.safetensors`` is the epoch of the highest box AP; the default learning rate is
torchvision's recipe, 0.02 per 16 images. Detection batches are lists of images of any size
with their targets; the loss is the sum of torchvision's losses (RPN and box head, mask head,
or RetinaNet's focal and box losses).

The analysis verbs (heatmaps per kept detection, their scores against matched objects, the
backbone's attention) are implemented in :mod:`emca_vis.detection.explain`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checkpoint import read_state_dict
from . import explain
from .data import build_detection_dataset, collate
from .evaluate import evaluate_detector
from .models import create_detector
from .names import parse_detector_name
from . import robustness


class DetectionTask:
    name = "detection"
    best_metric = "val_bbox_AP"
    default_data = "multishapes"
    collate = staticmethod(collate)
    default_methods = {"gradcam": explain.DEFAULT_METHODS, "evaluate": explain.DEFAULT_METHODS}
    default_layer = explain.DEFAULT_LAYER

    def datasets(self, args) -> tuple:
        masks = parse_detector_name(args.model)[0] == "maskrcnn"
        train_set = build_detection_dataset(args.data, "train", train=True, masks=masks, length=args.train_size,
                                            image_size=args.image_size or 128, seed=args.data_seed)
        val_set, _ = self.val_dataset(args, masks)
        if train_set.classes != val_set.classes:
            raise ValueError(f"{args.data}: the train and val splits have different categories")
        meta = {"dataset": args.data, "class_names": list(train_set.classes)}
        return train_set, val_set, meta, train_set.classes

    @staticmethod
    def val_dataset(args, masks: bool = False) -> tuple:
        """Evaluation reads masks from the annotations; training targets need them only for Mask R-CNN."""
        val_set = build_detection_dataset(args.data, "val", masks=masks, length=args.val_size,
                                          image_size=args.image_size or 128, seed=args.data_seed)
        return val_set, val_set.classes

    def build_model(self, args, num_classes: int, input_size: int | None = None, announce: bool = True) -> nn.Module:
        weights = None
        if args.init and not getattr(args, "resume", False):
            weights = read_state_dict(args.init)
            weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
            if announce:
                print(f"backbone initialised from {args.init}")
        return create_detector(
            args.model, num_classes, min_size=args.min_size or args.image_size or 800,
            max_size=args.max_size or args.min_size or args.image_size or 1333,
            trainable_layers=args.trainable_layers, frozen_bn=args.frozen_bn, fpn_channels=args.fpn_channels,
            representation_size=args.representation_size, box_batch_size_per_image=args.box_batch_size_per_image,
            proposals=args.proposals, mask_channels=args.mask_channels,
            backbone_weights=weights, placement=args.placement, emca_stages=args.emca_stages,
            emca_blocks=args.emca_blocks, stem=args.stem or "imagenet", width=args.width, gate=args.gate)

    @staticmethod
    def default_lr(global_batch: int, optimizer: str) -> float:
        return 0.02 * global_batch / 16 if optimizer == "sgd" else 1e-4 * global_batch / 16

    @staticmethod
    def step(net: nn.Module, batch, device: torch.device, args, autocast) -> tuple[torch.Tensor, list[float]]:
        images, targets = batch
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with autocast:
            losses = net(images, targets)
        loss = sum(v.float() for v in losses.values())
        return loss, [loss.item() * len(images), 0, len(images)]

    @staticmethod
    def epoch_metrics(loss_sum: float, correct: float, seen: float) -> dict[str, float]:
        return {"train_loss": loss_sum / max(seen, 1)}

    @staticmethod
    def evaluate(net: nn.Module, dataset, args, device: torch.device, rank: int, world: int,
                 autocast) -> dict[str, float | None]:
        metrics = evaluate_detector(net, dataset, device, batch_size=args.batch_size, workers=args.workers,
                                    rank=rank, world=world, autocast=autocast)
        return {f"val_{k}": v for k, v in metrics.items()}  # None: no object of that size

    @staticmethod
    @torch.no_grad()
    def predict(loaded, pixels) -> list[dict[str, torch.Tensor]]:
        """One dict per image (``[N, 3, H, W]`` or a list of ``[3, H, W]`` in [0, 1], any sizes):
        ``boxes`` ``[D, 4]`` (x0, y0, x1, y1 in the image's pixels), ``labels`` ``[D]`` (1-based:
        ``loaded.class_names[label - 1]``), ``scores`` ``[D]``, best first, as the detector keeps
        them (its score threshold, NMS and detections per image); Mask R-CNN adds ``masks``
        ``[D, 1, H, W]`` (probabilities)."""
        return loaded.model(list(pixels))

    check_method = staticmethod(explain.check_method)
    check_layer = staticmethod(explain.check_layer)
    explain_image = staticmethod(explain.explain_image)

    @staticmethod
    def check_targets(loaded, args) -> None:
        if getattr(args, "target", None) is not None or getattr(args, "top_k", 1) != 1:
            option = "--target" if getattr(args, "target", None) is not None else "--top-k"
            raise explain.ExplainError(f"{option}: the detector {loaded.label} explains its detections; "
                                       "choose them with --score-threshold and --max-detections")

    @staticmethod
    def score_heatmaps(loaded, methods, args) -> list[dict]:
        from ..explain.metrics import POINTING_TOLERANCE, pointing_tolerance

        tolerance = getattr(args, "tolerance", POINTING_TOLERANCE)
        return explain.score_heatmaps(loaded, args.data, args.split, args.n, methods, args,
                                      lambda size: pointing_tolerance(size, tolerance))

    @staticmethod
    def attention_dataset(loaded, spec: str, args):
        return explain.attention_dataset(loaded, spec, args.split, args.n, args.batch_size)

    @staticmethod
    def attention_images(loaded, images):
        return explain.attention_images(loaded, images)

    @staticmethod
    def summary(row: dict) -> str:
        masks = f", mask AP {row['val_segm_AP']:.3f}" if row.get("val_segm_AP") is not None else ""
        return (f"train loss {row['train_loss']:.4f}, box AP {row['val_bbox_AP']:.3f}, "
                f"AP50 {row['val_bbox_AP50']:.3f}{masks}")

    # Robustness: COCO AP per cell, mPC / rPC (:mod:`.robustness`).
    @staticmethod
    def robustness_data(loaded, spec: str, split: str, n: int) -> tuple:
        return robustness.evaluation_set(loaded, spec, split, n)

    @staticmethod
    def robustness_c_data(spec: str, corruption: str, severity: int, clean, class_names: list[str], split: str):
        return robustness.c_data(spec, corruption, severity, clean, split)

    @staticmethod
    def robustness_cells(models, source, batches, corruption, n: int, world: int, tracker=None) -> list[dict]:
        return robustness.cell_scores(models, source, batches, corruption, n, world)

    @staticmethod
    def robustness_results(models, done: dict, args, baseline) -> dict:
        return robustness.results(models, done, args)

    @staticmethod
    def robustness_table(results: dict) -> str:
        return robustness.markdown_table(results)

    @staticmethod
    def robustness_csv(results: dict, path) -> None:
        robustness.csv_rows(results, path)
