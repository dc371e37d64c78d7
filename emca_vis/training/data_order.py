"""Data order that does not depend on where a run was interrupted or how many workers load it."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

SEED_RANGE = 1 << 64  # torch.manual_seed takes seeds below 2**64


class SeededSamples(Dataset):
    """Seeds the augmentation of each sample by (seed, epoch, index): independent of
    worker count and of where a run was interrupted."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % SEED_RANGE)
            return self.dataset[index]


class GlobalBatchSampler:
    """Micro-batches of one process for each optimiser step of one epoch.

    Each step's global batch is the next ``global_batch`` indices of a permutation seeded
    by (seed, epoch); it is cut into ``processes x accum`` chunks of ``batch_size``, and
    process ``rank`` takes chunks ``rank * accum ... rank * accum + accum - 1``. So one
    process with ``accum = k`` sees the same chunks as ``k`` processes with ``accum = 1``.
    """

    def __init__(self, size: int, batch_size: int, world: int, rank: int, accum: int, seed: int):
        self.size, self.batch_size, self.world, self.rank, self.accum, self.seed = (
            size, batch_size, world, rank, accum, seed)
        self.global_batch = batch_size * world * accum
        self.steps_per_epoch = size // self.global_batch
        self.epoch, self.start_step = 0, 0

    def __iter__(self):
        seed = (self.seed * 7919 + self.epoch) % SEED_RANGE
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(seed))
        for step in range(self.start_step, self.steps_per_epoch):
            batch = order[step * self.global_batch:(step + 1) * self.global_batch]
            for micro in range(self.accum):
                chunk = self.rank * self.accum + micro
                yield batch[chunk * self.batch_size:(chunk + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum
