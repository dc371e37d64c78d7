"""Train EMCA and baseline ResNets; writes self-describing checkpoints.

    python -m emca_vis.train --model resnet50_emca_eca --data imagenet:/data/imagenet --epochs 100 \\
        --batch-size 64 --amp bf16 --channels-last --out runs/emca_eca
    torchrun --nproc_per_node 8 -m emca_vis.train ...          # many GPUs (DDP over NCCL)
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST ...   # many machines

Batch size and learning rate: ``--batch-size`` is per process (per GPU). The global
batch is ``batch-size x processes x --accum-steps``, and ``--lr`` is the learning rate
of that global batch; left out, it follows the linear scaling rule (0.1 per 256 images
for SGD, 1e-3 per 512 for AdamW). The schedule runs per optimiser step.

Outputs in ``--out``: ``last.safetensors`` and ``best.safetensors`` (load with
``load_checkpoint``), ``metrics.csv`` / ``metrics.jsonl`` (TensorBoard too when it is
installed), and ``resume/step-*/`` states for ``--resume`` (the two newest are kept; a
corrupt newest one is reported and the previous one used).

Determinism: every sample's augmentation is seeded by (seed, epoch, index) and the data
order by (seed, epoch), so a run resumed mid-epoch sees exactly the batches it would
have seen; with ``--deterministic`` on the CPU the result is bitwise identical.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from .checkpoint import model_options, read_metadata, read_state_dict, save_checkpoint
from .checkpoint.metadata import check_metadata
from .data import build_dataset
from .errors import UserError, run_cli
from .models import create_model, load_backbone
from .outputs import json_text

KEEP_RESUME_STATES = 2


# ---------------------------------------------------------------- data order ---------

class SeededSamples(Dataset):
    """Seeds the augmentation of each sample by (seed, epoch, index): independent of
    worker count and of where a run was interrupted."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
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
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))
        for step in range(self.start_step, self.steps_per_epoch):
            batch = order[step * self.global_batch:(step + 1) * self.global_batch]
            for micro in range(self.accum):
                chunk = self.rank * self.accum + micro
                yield batch[chunk * self.batch_size:(chunk + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum


# ---------------------------------------------------------------- optimisation -------

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


# ---------------------------------------------------------------- distributed --------

def setup_distributed(device_arg: str) -> tuple[int, int, int, torch.device]:
    """(rank, world size, local rank, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, local, device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------- evaluation ---------

@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, args, device: torch.device, rank: int, world: int,
             autocast) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and loss over the whole dataset, sharded over processes."""
    model.eval()
    shard = Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(shard, batch_size=args.batch_size, num_workers=args.workers,
                        pin_memory=device.type == "cuda")
    loss = top1 = top5 = 0.0
    for images, labels in tqdm(loader, desc="val", leave=False, disable=rank != 0 or None):
        images, labels = _to_device(images, labels, device, args.channels_last)
        with autocast:
            logits = model(images).float()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (best[:, 0] == labels).sum().item()
        top5 += (best == labels[:, None]).any(1).sum().item()
    loss, top1, top5, n = all_reduce_sum([loss, top1, top5, len(shard)], device)
    return {"val_loss": loss / n, "val_top1": 100 * top1 / n, "val_top5": 100 * top5 / n}


def _to_device(images, labels, device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


# ---------------------------------------------------------------- resume states ------

def save_resume_state(out: Path, model: nn.Module, optimizer, scheduler, scaler, progress: dict, meta: dict) -> None:
    """Write ``resume/step-N/`` atomically (temp folder + rename); keep the newest two."""
    root = out / "resume"
    final = root / f"step-{progress['step']:09d}"
    if final.exists():
        return
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_checkpoint(tmp / "model.safetensors", model, **meta)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else {}, "progress": progress,
             "cpu_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(state, tmp / "state.pt")
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-KEEP_RESUME_STATES]:
        shutil.rmtree(old, ignore_errors=True)


def load_resume_state(out: Path, model_name: str) -> tuple[dict, dict, Path]:
    """Newest readable resume state: (weights, training state, folder). A corrupt newest
    state is reported and the previous one used; none usable is an error."""
    states = sorted((out / "resume").glob("step-*"), reverse=True)
    if not states:
        raise UserError(f"--resume: no saved state in {out / 'resume'}; start without --resume")
    for folder in states:
        try:
            meta = read_metadata(folder / "model.safetensors")
            weights = read_state_dict(folder / "model.safetensors")
            state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - whatever is wrong with it, the state is unusable
            print(f"warning: resume state {folder} is unusable ({str(error).splitlines()[0][:160]}); "
                  "trying the previous one", file=sys.stderr)
            continue
        if meta["model"] != model_name:
            raise UserError(f"--resume: {folder} holds {meta['model']}, not --model {model_name}")
        return weights, state, folder
    raise UserError(f"--resume: every saved state in {out / 'resume'} is corrupt; not starting over silently")


# ---------------------------------------------------------------- the run ------------

class MetricsLog:
    """metrics.csv + metrics.jsonl (+ TensorBoard when installed), rank 0 only."""

    def __init__(self, out: Path):
        self.csv, self.jsonl = out / "metrics.csv", out / "metrics.jsonl"
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tensorboard = None

    def write(self, row: dict) -> None:
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        with open(self.jsonl, "a") as f:
            f.write(json_text(row, indent=None) + "\n")
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, row["epoch"])


def train(args) -> dict:
    """Run training as ``args`` says; returns the final metrics."""
    rank, world, _, device = setup_distributed(args.device)
    try:
        return _train(args, rank, world, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(args, rank: int, world: int, device: torch.device) -> dict:
    torch.manual_seed(args.seed)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    out = Path(args.out)
    train_set, info = build_dataset(args.data, "train", image_size=args.image_size, length=args.train_size,
                                    seed=args.data_seed)
    val_set, _ = build_dataset(args.data, "val", image_size=args.image_size, length=args.val_size,
                               seed=args.data_seed)
    if args.train_size and len(train_set) > args.train_size:
        train_set = Subset(train_set, range(args.train_size))
    num_classes = len(info.class_names)
    # CIFAR-sized inputs need the 3x3 stem; from 64 px on the ImageNet stem keeps full-width
    # models trainable on a CPU (the 3x3 stem costs 16x the compute at 64 px).
    stem = args.stem or ("cifar" if info.input_size < 64 else "imagenet")
    model = create_model(args.model, num_classes, placement=args.placement, emca_stages=args.emca_stages,
                         emca_blocks=args.emca_blocks, stem=stem, width=args.width, gate=args.gate)
    if args.init:
        state = read_state_dict(args.init)
        new = load_backbone(model, state, skip_head=state.get("fc.weight", model.fc.weight).shape
                            != model.fc.weight.shape)
        if rank == 0:
            print(f"initialised from {args.init}; new (not in the file): {len(new)} tensors")
    model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)

    global_batch = args.batch_size * world * args.accum_steps
    if args.lr is None:
        args.lr = 0.1 * global_batch / 256 if args.optimizer == "sgd" else 1e-3 * global_batch / 512
    samples = SeededSamples(train_set, args.seed)
    sampler = GlobalBatchSampler(len(samples), args.batch_size, world, rank, args.accum_steps, args.seed)
    if sampler.steps_per_epoch == 0:
        raise UserError(f"the training set ({len(samples)} images) is smaller than one global batch ({global_batch})")
    total_steps = args.epochs * sampler.steps_per_epoch
    optimizer = build_optimizer(model, args)
    milestones = [round(e * sampler.steps_per_epoch) for e in args.milestones]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, total_steps, round(args.warmup_epochs * sampler.steps_per_epoch), args.schedule, milestones, args.gamma))
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" and device.type == "cuda" else None
    autocast = (torch.autocast(device.type, dtype=torch.float16 if args.amp == "fp16" else torch.bfloat16)
                if args.amp != "none" else nullcontext())

    progress = {"step": 0, "epoch": 0, "best_top1": -1.0}
    if args.resume:
        weights, state, folder = load_resume_state(out, args.model)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        progress = dict(state["progress"])
        torch.set_rng_state(state["cpu_rng"])
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if rank == 0:
            print(f"resumed from {folder} (epoch {progress['epoch'] + 1}, step {progress['step']})")

    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    if args.compile:
        net = torch.compile(net)
    meta = {**info.metadata(), "train_args": dict(vars(args))}
    try:  # the checkpoints' metadata, checked now rather than when the first epoch is saved
        check_metadata({"model": args.model, "num_classes": num_classes, "model_kwargs": model_options(model.config),
                        **meta})
    except ValueError as error:
        raise UserError(f"this run's checkpoints would have invalid metadata: {error}") from None
    log = MetricsLog(out) if rank == 0 else None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        print(f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M parameters, "
              f"{len(samples)} training images, {num_classes} classes, global batch {global_batch}, "
              f"lr {args.lr:g}, {world} process(es) on {device.type}")

    metrics: dict = {}
    while progress["step"] < total_steps:
        epoch, start = divmod(progress["step"], sampler.steps_per_epoch)
        samples.epoch = sampler.epoch = epoch
        sampler.start_step = start
        loader = DataLoader(samples, batch_sampler=sampler, num_workers=args.workers,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        net.train()
        seen = correct = 0
        loss_sum = 0.0
        started = time.perf_counter()
        bar = tqdm(total=sampler.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=rank != 0 or None, leave=False)
        for micro, (images, labels) in enumerate(loader):
            images, labels = _to_device(images, labels, device, args.channels_last)
            last_micro = (micro + 1) % args.accum_steps == 0
            sync = nullcontext() if last_micro or world == 1 else net.no_sync()
            with sync:
                with autocast:
                    logits = net(images)
                    loss = F.cross_entropy(logits.float(), labels, label_smoothing=args.label_smoothing)
                scaled = loss / args.accum_steps
                (scaler.scale(scaled) if scaler else scaled).backward()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
            if not last_micro:
                continue
            if args.clip_grad:
                if scaler:
                    scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            progress["step"] += 1
            bar.update()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
            if args.checkpoint_every and progress["step"] % args.checkpoint_every == 0 and rank == 0:
                save_resume_state(out, model, optimizer, scheduler, scaler, progress, meta)
        bar.close()
        elapsed = time.perf_counter() - started
        loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], device)
        metrics = {"epoch": epoch + 1, "step": progress["step"], "lr": scheduler.get_last_lr()[0],
                   "train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1),
                   **evaluate(net, val_set, args, device, rank, world, autocast),
                   "epoch_seconds": elapsed, "train_images_per_second": seen / elapsed}
        progress["epoch"] = epoch + 1
        if rank == 0:
            improved = metrics["val_top1"] > progress["best_top1"]
            progress["best_top1"] = max(progress["best_top1"], metrics["val_top1"])
            metrics["best_val_top1"] = progress["best_top1"]
            log.write(metrics)
            checkpoint_meta = {**meta, "metrics": metrics}
            save_checkpoint(out / "last.safetensors", model, **checkpoint_meta)
            if improved:
                save_checkpoint(out / "best.safetensors", model, **checkpoint_meta)
            save_resume_state(out, model, optimizer, scheduler, scaler, progress, checkpoint_meta)
            print(f"epoch {epoch + 1}/{args.epochs}: train loss {metrics['train_loss']:.4f}, "
                  f"val top-1 {metrics['val_top1']:.2f}%, top-5 {metrics['val_top5']:.2f}% "
                  f"({metrics['train_images_per_second']:.0f} img/s)", flush=True)
    if rank == 0 and metrics:
        print(f"wrote {out / 'best.safetensors'} and {out / 'last.safetensors'}")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emca_vis.train", description="Train an EMCA or baseline ResNet.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model name, e.g. resnet50_emca_eca")
    p.add_argument("--data", default="shapes", help="dataset spec: shapes, folder:/p, imagenet:/p, cifar10:/p, ...")
    p.add_argument("--out", default="runs/train", help="output folder")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--batch-size", type=int, default=64, help="per process (per GPU)")
    p.add_argument("--accum-steps", type=int, default=1, help="micro-batches per optimiser step")
    p.add_argument("--lr", type=float, help="learning rate of the global batch (default: linear scaling rule)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--no-decay-norm-bias", action="store_true", help="no weight decay on norms, biases, w_r")
    p.add_argument("--schedule", choices=["cosine", "step"], default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up (fractions allowed)")
    p.add_argument("--milestones", type=float, nargs="*", default=[30, 60, 80], help="step schedule epochs")
    p.add_argument("--gamma", type=float, default=0.1, help="step schedule factor")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--clip-grad", type=float, default=0.0, help="max gradient norm (0: off)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="mixed precision")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loader processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bitwise resumable)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also save a resume state every N steps")
    p.add_argument("--init", help="initial weights: torchvision .pth or emca-vis checkpoint (head replaced "
                                  "when the class count differs)")
    p.add_argument("--image-size", type=int, help="input size (default: 64 shapes, 32 CIFAR, 224 otherwise)")
    p.add_argument("--train-size", type=int, help="use only the first N training images")
    p.add_argument("--val-size", type=int, help="synthetic dataset: validation images")
    p.add_argument("--data-seed", type=int, default=0, help="synthetic dataset seed")
    g = p.add_argument_group("model options")
    g.add_argument("--placement", choices=["all", "first", "last"])
    g.add_argument("--emca-stages", type=_int_or_all, default=1)
    g.add_argument("--emca-blocks", type=_int_or_all, default="all")
    g.add_argument("--stem", choices=["imagenet", "cifar"], help="default: cifar below 64 px, imagenet from 64 px")
    g.add_argument("--width", type=float, default=1.0)
    g.add_argument("--gate", choices=["mul", "one_plus"], default="mul")
    return p


def _int_or_all(value: str):
    return value if value == "all" else int(value)


def main(argv: list[str] | None = None) -> int:
    train(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
