"""Detection as a training task: what the training loop asks of a task, for detectors.

The loop (data order, optimiser, schedule, AMP, DDP, resume states, metrics files, best/last
checkpoints) is the classification one; a task supplies the few verbs that differ:

``datasets(args)``            training and validation sets, checkpoint metadata, class names
``build_model(args, n)``      the network (``--init``: backbone from a classification checkpoint)
``collate``                   how samples become a batch
``step(net, batch, ...)``     the loss of a batch and its share of the epoch's sums
``evaluate(net, data, ...)``  validation metrics (COCO box and mask AP here)
``best_metric``               the metric that picks ``best.safetensors``

Detection batches are lists of images of any size with their targets; the loss is the sum
of torchvision's losses (RPN and box head, mask head, or RetinaNet's focal and box losses).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ..checkpoint import read_state_dict
from .data import build_detection_dataset, collate
from .evaluate import evaluate_detector
from .models import create_detector
from .names import parse_detector_name


class DetectionTask:
    name = "detection"
    best_metric = "bbox_AP"
    collate = staticmethod(collate)
    sums = ("loss_sum", "seen")  # what an epoch adds up over its batches

    def datasets(self, args) -> tuple:
        family, _ = parse_detector_name(args.model)
        masks = family == "maskrcnn"
        size = args.image_size or 128
        train_set = build_detection_dataset(args.data, "train", train=True, masks=masks, length=args.train_size,
                                            image_size=size, seed=args.data_seed)
        val_set = build_detection_dataset(args.data, "val", masks=masks, length=args.val_size, image_size=size,
                                          seed=args.data_seed)
        if train_set.classes != val_set.classes:
            raise ValueError(f"{args.data}: the train and val splits have different categories")
        meta = {"dataset": args.data, "class_names": list(train_set.classes)}
        return train_set, val_set, meta, train_set.classes

    def build_model(self, args, num_classes: int, announce: bool = True) -> nn.Module:
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
            proposals=args.proposals,
            backbone_weights=weights, placement=args.placement, emca_stages=args.emca_stages,
            emca_blocks=args.emca_blocks, stem=args.stem or "imagenet", width=args.width, gate=args.gate)

    @staticmethod
    def step(net: nn.Module, batch, device: torch.device, args, autocast) -> tuple[torch.Tensor, list[float]]:
        images, targets = batch
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with autocast:
            losses = net(images, targets)
        loss = sum(v.float() for v in losses.values())
        return loss, [loss.item() * len(images), len(images)]

    @staticmethod
    def epoch_metrics(sums: list[float]) -> dict[str, float]:
        loss_sum, seen = sums
        return {"train_loss": loss_sum / max(seen, 1)}

    @staticmethod
    def evaluate(net: nn.Module, dataset, args, device: torch.device, rank: int, world: int,
                 autocast) -> dict[str, float | None]:
        metrics = evaluate_detector(net, dataset, device, batch_size=args.batch_size, workers=args.workers,
                                    rank=rank, world=world, autocast=autocast)
        return {f"val_{k}": v for k, v in metrics.items()}

    @staticmethod
    def summary(row: dict) -> str:
        masks = f", mask AP {row['val_segm_AP']:.3f}" if row.get("val_segm_AP") is not None else ""
        return (f"train loss {row['train_loss']:.4f}, box AP {row['val_bbox_AP']:.3f}, "
                f"AP50 {row['val_bbox_AP50']:.3f}{masks}")


def add_detection_options(parser: argparse.ArgumentParser) -> None:
    """The detector options of ``python -m emca_vis.train --task detection``."""
    g = parser.add_argument_group("detection options (--task detection)")
    g.add_argument("--min-size", type=int, help="shorter image side (default: --image-size, else 800)")
    g.add_argument("--max-size", type=int, help="longer side at most (default: --min-size, else 1333)")
    g.add_argument("--trainable-layers", type=int, choices=range(6), metavar="0-5",
                   help="backbone stages trained (default: 3 with --init, else 5)")
    g.add_argument("--frozen-bn", action=argparse.BooleanOptionalAction,
                   help="freeze the backbone's BatchNorm (default: with --init)")
    g.add_argument("--fpn-channels", type=int, default=256, help="channels of the pyramid and heads")
    g.add_argument("--representation-size", type=int, default=1024, help="R-CNN box head width")
    g.add_argument("--box-batch-size-per-image", type=int, default=512, help="R-CNN proposals sampled per image")
    g.add_argument("--proposals", type=int, default=1000, help="R-CNN proposals after NMS (twice in training)")
