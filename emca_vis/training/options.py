"""Options of ``python -m emca_vis.train``, each checked as it is parsed: a bad value is one
``error: argument --option: problem`` line before anything is built or read."""

from __future__ import annotations

import argparse
import math
import os

from ..checkpoint.metadata import MAX_INPUT_SIZE, MAX_WIDTH, MIN_INPUT_SIZE
from ..options import Parser, finite_float, int_range, nonnegative_int, positive_int, probability, seed


def number(low: float, high: float = math.inf, low_open: bool = False):
    """An argparse type: a finite number in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    def parse(text: str) -> float:
        value = finite_float(text)
        if value < low or (low_open and value == low) or value > high:
            bounds = f"{'above' if low_open else 'at least'} {low:g}" + (f" and at most {high:g}" if high < math.inf
                                                                          else "")
            raise argparse.ArgumentTypeError(f"must be {bounds} (got {text[:40]})")
        return value

    return parse


def int_or_all(allowed: tuple):
    """An argparse type: one of ``allowed`` (integers and ``"all"``)."""
    def parse(text: str):
        value = text if text == "all" else int(text) if text.lstrip("-").isdigit() else None
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"must be {' or '.join(map(str, allowed))} (got {text[:40]!r})")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m emca_vis.train", description="Train an EMCA or baseline ResNet, or a detector.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", choices=["classification", "detection"], default="classification")
    p.add_argument("--model", help="model name, e.g. resnet50_emca_eca or fasterrcnn_resnet50_emca_eca_fpn "
                                   "(required unless --eval-only)")
    p.add_argument("--data", help="dataset spec: shapes (default), folder:/p, imagenet:/p, cifar10:/p, ...; "
                                  "for detection multishapes (default) or coco:/p")
    p.add_argument("--eval-only", metavar="CHECKPOINT",
                   help="only evaluate this checkpoint on the validation split and print the metrics as JSON")
    p.add_argument("--out", default="runs/train", help="output folder")
    p.add_argument("--epochs", type=int_range(1, 1_000_000), default=90)
    p.add_argument("--batch-size", type=int_range(1, 1 << 24), default=64, help="per process (per GPU)")
    p.add_argument("--accum-steps", type=int_range(1, 1 << 20), default=1, help="micro-batches per optimiser step")
    p.add_argument("--lr", type=number(0, low_open=True),
                   help="learning rate of the global batch (default: linear scaling rule)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--momentum", type=probability, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=number(0), default=1e-4)
    p.add_argument("--no-decay-norm-bias", action="store_true", help="no weight decay on norms, biases, w_r")
    p.add_argument("--schedule", choices=["cosine", "step"], default="cosine")
    p.add_argument("--warmup-epochs", type=number(0), default=0.0, help="linear warm-up (fractions allowed)")
    p.add_argument("--milestones", type=number(0), nargs="*", default=[30, 60, 80], help="step schedule epochs")
    p.add_argument("--gamma", type=number(0, low_open=True), default=0.1, help="step schedule factor")
    p.add_argument("--label-smoothing", type=probability, default=0.0)
    p.add_argument("--clip-grad", type=number(0), default=0.0, help="max gradient norm (0: off)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="mixed precision")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--workers", type=int_range(0, 1024), default=min(8, os.cpu_count() or 1),
                   help="data loader processes")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bitwise resumable)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--checkpoint-every", type=nonnegative_int, default=0,
                   help="also save a resume state every N optimiser steps (0: only at epoch ends)")
    p.add_argument("--init", help="initial weights: torchvision .pth or emca-vis checkpoint (head replaced "
                                  "when the class count differs)")
    p.add_argument("--image-size", type=int_range(MIN_INPUT_SIZE, MAX_INPUT_SIZE),
                   help="input size (default: 64 shapes, 32 CIFAR, 224 otherwise)")
    p.add_argument("--train-size", type=positive_int, help="use only the first N training images")
    p.add_argument("--val-size", type=positive_int, help="synthetic dataset: validation images")
    p.add_argument("--data-seed", type=seed, default=0, help="synthetic dataset seed")
    g = p.add_argument_group("model options")
    g.add_argument("--placement", choices=["all", "first", "last"])
    g.add_argument("--emca-stages", type=int_or_all((0, 1, "all")), default=1)
    g.add_argument("--emca-blocks", type=int_or_all((1, "all")), default="all")
    g.add_argument("--stem", choices=["imagenet", "cifar"], help="default: cifar below 64 px, imagenet from 64 px")
    g.add_argument("--width", type=number(0, MAX_WIDTH, low_open=True), default=1.0)
    g.add_argument("--gate", choices=["mul", "one_plus"], default="mul")
    d = p.add_argument_group("detection options (--task detection)")
    d.add_argument("--min-size", type=int_range(8, 4096), help="shorter image side (default: --image-size, else 800)")
    d.add_argument("--max-size", type=int_range(8, 4096), help="longer side at most (default: --min-size, else 1333)")
    d.add_argument("--trainable-layers", type=int_range(0, 5),
                   help="backbone stages trained, from layer4 down (default: 3 with --init, else 5)")
    d.add_argument("--frozen-bn", action=argparse.BooleanOptionalAction,
                   help="freeze the backbone's BatchNorm, attention modules' included (default: with --init)")
    d.add_argument("--fpn-channels", type=int_range(1, 4096), default=256, help="channels of the pyramid and heads")
    d.add_argument("--representation-size", type=int_range(1, 1 << 16), default=1024, help="R-CNN box head width")
    d.add_argument("--box-batch-size-per-image", type=int_range(1, 1 << 16), default=512,
                   help="R-CNN proposals sampled per training image")
    d.add_argument("--proposals", type=int_range(1, 1 << 20), default=1000,
                   help="R-CNN proposals kept after NMS at test time (twice as many in training)")
    d.add_argument("--mask-channels", type=int_range(1, 4096), default=256, help="Mask R-CNN mask head width")
    return p
