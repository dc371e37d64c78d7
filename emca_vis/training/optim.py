"""Optimiser and learning-rate schedule (stepped per optimiser step)."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # Norm weights, biases and EMCA's per-scale weights are 1-d: exempt when asked.
        (no_decay if args.no_decay_norm_bias and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    return torch.optim.AdamW(groups, lr=args.lr)


def lr_factor(step: int, total: int, warmup: int, schedule: str, milestones: list[int], gamma: float) -> float:
    """Multiplier of the base learning rate at optimiser step ``step``."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return gamma ** sum(step >= m for m in milestones)
