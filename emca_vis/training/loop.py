"""The training run: epochs of optimiser steps, validation, and the writes that make it resumable.

The order at the end of an epoch is what makes a kill at any point recoverable: evaluate, save
the epoch's resume state (with its metrics row and best top-1), then write the metrics files,
``last`` and ``best`` from that state (:mod:`.artefacts`). ``--resume`` starts from the newest
state: it rewrites the metrics files from the record, re-does the epoch-end writes when that
state closes an epoch, evaluates when it holds a trained but unevaluated epoch, and otherwise
continues the epoch with its running sums.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..checkpoint import load_checkpoint, model_options, read_metadata
from ..checkpoint.metadata import check_metadata
from ..errors import UserError
from ..outputs import json_text
from .artefacts import TensorBoard, publish_epoch, remove_leftovers, write_metrics
from .data_order import GlobalBatchSampler, SeededSamples
from .distributed import all_reduce_sum, setup_distributed
from .faults import fault_point
from .optim import build_optimizer, lr_factor
from .state import ResumeRecord, check_settings, load_state, save_state
from .tasks import get_task


def _set_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu_rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def train(args) -> dict:
    """Run training as ``args`` says; returns the final metrics."""
    if not (args.model or args.eval_only):
        raise UserError("--model: required (unless --eval-only)")
    rank, world, _, device = setup_distributed(args.device)
    try:
        if args.eval_only:
            return evaluate_checkpoint(args, rank, world, device)
        run = _build(args, rank, world, device)
        record, rng = _resume(run) if args.resume else (
            ResumeRecord(step=0, epoch=1, phase="training", world=world, settings=dict(vars(args))), None)
        return run.fit(record, rng)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class Run:
    """Everything one training run works with, built by :func:`_build`."""

    args: object
    task: object  # the task's verbs (emca_vis.training.tasks)
    rank: int
    world: int
    device: torch.device
    out: Path
    model: nn.Module
    net: nn.Module  # the model as trained: DDP and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    autocast: object
    samples: SeededSamples
    sampler: GlobalBatchSampler
    val_set: Dataset
    meta: dict  # the checkpoints' metadata (dataset, training arguments)

    def save(self, record: ResumeRecord, meta: dict) -> None:
        save_state(self.out, self.model, self.optimizer, self.scheduler, self.scaler, record, meta)

    def fit(self, record: ResumeRecord, rng: dict | None) -> dict:
        """Train from ``record`` to the last epoch; ``rng``: the RNG state to set once the
        resumed epoch's loader has drawn its seed. Returns the last epoch's metrics."""
        args, rank = self.args, self.rank
        tensorboard = TensorBoard(self.out) if rank == 0 else None
        try:
            while not (record.phase == "evaluated" and record.epoch >= args.epochs):
                if record.phase == "evaluated":
                    record = record.next_epoch()
                # This process's share of the epoch's sums; rank 0 carries what the state had summed.
                sums = [record.loss_sum, record.correct, record.seen] if rank == 0 else [0.0, 0, 0]
                started = time.perf_counter() - record.seconds
                if record.phase == "training":
                    self.train_epoch(record, sums, started, rng)
                    rng = None
                record = self.evaluate_epoch(record, sums, time.perf_counter() - started)
                if rank == 0:
                    self.save(record, {**self.meta, "metrics": record.rows[-1]})
                    fault_point("saved")
                    publish_epoch(self.out, self.model, self.meta, record)
                    tensorboard.add(record.rows[-1])
                    row = record.rows[-1]
                    print(f"epoch {record.epoch}/{args.epochs}: {self.task.summary(row)} "
                          f"({row['train_images_per_second']:.0f} img/s)", flush=True)
        finally:
            if tensorboard is not None:
                tensorboard.close()
        if rank == 0:
            print(f"wrote {self.out / 'best.safetensors'} and {self.out / 'last.safetensors'}")
        return record.rows[-1]

    def train_epoch(self, record: ResumeRecord, sums: list, started: float, rng: dict | None) -> None:
        """The remaining optimiser steps of ``record.epoch``; updates ``record`` and ``sums`` in
        place and saves a state every ``--checkpoint-every`` steps."""
        args, sampler, optimizer, scheduler, scaler = self.args, self.sampler, self.optimizer, self.scheduler, \
            self.scaler
        steps = sampler.steps_per_epoch
        start = record.step - (record.epoch - 1) * steps
        self.samples.epoch = sampler.epoch = record.epoch - 1
        sampler.start_step = start
        loader = DataLoader(self.samples, batch_sampler=sampler, num_workers=args.workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=False,
                            collate_fn=self.task.collate)
        batches = iter(loader)  # draws the loader's seed from the global RNG, as the uninterrupted epoch did
        if rng is not None:
            _set_rng(rng, self.device)
        self.net.train()
        bar = tqdm(total=steps, initial=start, desc=f"epoch {record.epoch}/{args.epochs}",
                   disable=self.rank != 0 or None, leave=False)
        for micro, batch in enumerate(batches):
            last_micro = (micro + 1) % args.accum_steps == 0
            sync = nullcontext() if last_micro or self.world == 1 else self.net.no_sync()
            with sync:
                loss, counts = self.task.step(self.net, batch, self.device, args, self.autocast)
                scaled = loss / args.accum_steps
                (scaler.scale(scaled) if scaler else scaled).backward()
            for i, count in enumerate(counts):
                sums[i] += count
            if not last_micro:
                continue
            if args.clip_grad:
                if scaler:
                    scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), args.clip_grad)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            record.step += 1
            if record.step == record.epoch * steps:
                record.phase = "trained"
            bar.update()
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
            if args.checkpoint_every and record.step % args.checkpoint_every == 0:
                loss_sum, correct, seen = all_reduce_sum(sums, self.device)  # every process takes part
                if self.rank == 0:
                    self.save(record.model_copy(update={
                        "loss_sum": loss_sum, "correct": round(correct), "seen": round(seen),
                        "seconds": time.perf_counter() - started}), self.meta)
            fault_point("step")
        bar.close()
        record.phase = "trained"

    def evaluate_epoch(self, record: ResumeRecord, sums: list, elapsed: float) -> ResumeRecord:
        """``record`` with the trained epoch evaluated: its metrics row, the best top-1."""
        loss_sum, correct, seen = all_reduce_sum(sums, self.device)
        task = self.task
        row = {"epoch": record.epoch, "step": record.step, "lr": self.scheduler.get_last_lr()[0],
               **task.epoch_metrics(loss_sum, correct, seen),
               **task.evaluate(self.net, self.val_set, self.args, self.device, self.rank, self.world, self.autocast),
               "epoch_seconds": elapsed, "train_images_per_second": seen / max(elapsed, 1e-9)}
        best_score, best_epoch = record.best_score, record.best_epoch
        if row[task.best_metric] > best_score:
            best_score, best_epoch = row[task.best_metric], record.epoch
        row[f"best_{task.best_metric}"] = best_score
        return record.model_copy(update={
            "phase": "evaluated", "loss_sum": loss_sum, "correct": round(correct), "seen": round(seen),
            "seconds": elapsed, "best_score": best_score, "best_epoch": best_epoch, "rows": [*record.rows, row]})


def _build(args, rank: int, world: int, device: torch.device) -> Run:
    """Data, model, optimiser and schedule of a fresh run (``--resume`` then loads their state)."""
    out = Path(args.out)
    if not args.resume and any((out / "resume").glob("step-*")):
        raise UserError(f"--out {out}: holds the states of an earlier run; continue it with --resume, or train "
                        "into another --out")
    torch.manual_seed(args.seed)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    task = get_task(args.task)
    args.data = args.data or task.default_data
    train_set, val_set, data_meta, class_names = task.datasets(args)
    num_classes = len(class_names)
    model = task.build_model(args, num_classes, data_meta.get("input_size"), announce=rank == 0)
    model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)

    global_batch = args.batch_size * world * args.accum_steps
    if args.lr is None:
        args.lr = task.default_lr(global_batch, args.optimizer)
    samples = SeededSamples(train_set, args.seed)
    sampler = GlobalBatchSampler(len(samples), args.batch_size, world, rank, args.accum_steps, args.seed)
    steps = sampler.steps_per_epoch
    if steps == 0:
        raise UserError(f"the training set ({len(samples)} images) is smaller than one global batch ({global_batch})")
    optimizer = build_optimizer(model, args)
    milestones = [round(e * steps) for e in args.milestones]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, args.epochs * steps, round(args.warmup_epochs * steps), args.schedule, milestones, args.gamma))
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" and device.type == "cuda" else None
    autocast = (torch.autocast(device.type, dtype=torch.float16 if args.amp == "fp16" else torch.bfloat16)
                if args.amp != "none" else nullcontext())
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    if args.compile:
        net = torch.compile(net)
    meta = {**data_meta, "train_args": dict(vars(args))}
    try:  # the checkpoints' metadata, checked now rather than when the first epoch is saved
        check_metadata({"model": args.model, "num_classes": num_classes, "model_kwargs": model_options(model.config),
                        **getattr(model, "metadata", {}), **meta})
    except ValueError as error:
        raise UserError(f"this run's checkpoints would have invalid metadata: {error}") from None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        print(f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M parameters, "
              f"{len(samples)} training images, {num_classes} classes, global batch {global_batch}, "
              f"lr {args.lr:g}, {world} process(es) on {device.type}")
    return Run(args, task, rank, world, device, out, model, net, optimizer, scheduler, scaler, autocast, samples,
               sampler, val_set, meta)


def evaluate_checkpoint(args, rank: int, world: int, device: torch.device) -> dict:
    """``--eval-only CHECKPOINT``: the validation metrics of a checkpoint of either task, printed as
    JSON. Data spec, image size and data seed default to those the checkpoint was trained with."""
    args.task = read_metadata(args.eval_only)["task"]
    task = get_task(args.task)
    model, meta = load_checkpoint(args.eval_only, device, task=args.task)
    saved = meta["train_args"]
    args.data = args.data or meta["dataset"] or task.default_data
    for option in ("image_size", "data_seed", "val_size"):
        if getattr(args, option) in (None, 0) and saved.get(option) is not None:
            setattr(args, option, saved[option])
    val_set, class_names = task.val_dataset(args)
    if list(class_names) != meta["class_names"]:
        raise UserError(f"--eval-only: {args.eval_only} was trained on classes {', '.join(meta['class_names'][:5])}"
                        f"...; {args.data} has {', '.join(list(class_names)[:5])}...")
    autocast = (torch.autocast(device.type, dtype=torch.float16 if args.amp == "fp16" else torch.bfloat16)
                if args.amp != "none" else nullcontext())
    metrics = task.evaluate(model, val_set, args, device, rank, world, autocast)
    if rank == 0:
        print(json_text({"checkpoint": str(args.eval_only), "data": args.data, "images": len(val_set), **metrics}))
    return metrics


def _resume(run: Run) -> tuple[ResumeRecord, dict | None]:
    """Load the newest state into ``run`` and rewrite the visible files as it knows them (a kill
    may have cut them short). Returns its record, and the RNG state still to be set when it
    stopped mid-epoch (see :meth:`Run.fit`)."""
    args, out, steps = run.args, run.out, run.sampler.steps_per_epoch
    weights, state, record, folder = load_state(out, remove_unusable=run.rank == 0)
    check_settings(record, args, run.world, folder)
    first = (record.epoch - 1) * steps  # the steps before this epoch
    if not (first <= record.step < first + steps if record.phase == "training" else record.step == first + steps):
        raise UserError(f"--resume: {folder}: step {record.step} does not fall in epoch {record.epoch} of "
                        f"{steps} steps")
    try:
        run.model.load_state_dict(weights)
    except RuntimeError as error:
        detail = [line.strip() for line in str(error).splitlines() if line.strip()][-1][:160]
        raise UserError(f"--resume: {folder}: the saved weights do not fit --model {args.model} ({detail})") from None
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state["scaler"]:
        run.scaler.load_state_dict(state["scaler"])
    if run.rank == 0:
        print(f"resumed from {folder} (epoch {record.epoch}, step {record.step}, {record.phase})")
        remove_leftovers(out)
        if record.phase == "evaluated":
            publish_epoch(out, run.model, run.meta, record)
        else:
            write_metrics(out, record.rows)
    if record.phase == "training":
        return record, state
    _set_rng(state, run.device)
    return record, None
