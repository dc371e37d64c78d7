"""Write corrupted datasets to disk in the standard -C layouts (what :mod:`.cdata` reads back).

    python -m emca_vis.robustness generate --data imagenet:/data/imagenet --split val --out /data/my-imagenet-c \\
        [--corruptions fog snow] [--severities 1 3 5] [--backend torch|reference] [--n 5000]
    python -m emca_vis.robustness generate --data cifar10:/data --split test --out /data/my-cifar10-c --format cifar-c
    torchrun --nproc_per_node 4 -m emca_vis.robustness generate ...     # each rank a share of the batches

``imagenet-c``: ``<out>/<corruption>/<severity>/<class>/<image>.JPEG`` at JPEG quality 85, as
Hendrycks & Dietterich's ``make_imagenet_c.py`` saved ImageNet-C; images are resized and
centre-cropped first (``--image-size``, default 224 on ImageNet: resize 256, crop 224).
``cifar-c``: ``<out>/<corruption>.npy``, uint8 ``[5 x N, 32, 32, 3]`` with severities 1-5 in
order, and ``<out>/labels.npy`` (``[5 x N]``), as CIFAR-10-C.

Batches of ``--batch-size`` images get the corruption seed evaluation uses on the fly
(``--seed`` x 100003 + batch index), so with the same ``--batch-size`` and ``--seed`` the files
hold the noise ``python -m emca_vis.robustness`` draws, and the two differ by the JPEG round trip
only. A re-run skips the files already written; each file appears complete or not at all
(written to a temporary name, then renamed), so a killed run loses at most the batch in flight,
and the re-run deletes the temporary file the killed run was writing.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from tqdm import tqdm

from ..data import build_dataset, eval_pixels
from ..errors import UserError
from ..options import Parser, nonnegative_int, positive_int
from .corruptions import BACKENDS, CORRUPTIONS, SEVERITIES, check, corrupt
from .metrics import IMAGENET_C

FORMATS = ("imagenet-c", "cifar-c")
JPEG_QUALITY = 85  # make_imagenet_c.py: Image.save(..., quality=85, optimize=True)
CIFAR_SIZE = 32


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m emca_vis.robustness generate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="shapes", help="dataset spec (default: shapes)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", required=True, help="root folder of the corrupted dataset")
    parser.add_argument("--corruptions", nargs="+", default=list(IMAGENET_C), help=f"any of: {', '.join(CORRUPTIONS)}")
    parser.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    parser.add_argument("--backend", default="torch", choices=BACKENDS)
    parser.add_argument("--format", default="imagenet-c", choices=FORMATS)
    parser.add_argument("--n", "--num-images", dest="n", type=positive_int,
                        help="the first N images of the split (default: all)")
    parser.add_argument("--image-size", type=positive_int,
                        help="crop size (default: the dataset's: 224 ImageNet, 64 shapes, 32 CIFAR)")
    parser.add_argument("--batch-size", type=positive_int, default=100,
                        help="images corrupted at once; with --seed, fixes the noise (default 100, as evaluation)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    generate(args)
    return 0


def generate(args: argparse.Namespace) -> dict:
    """Write every missing file; returns counts and timing (``written``, ``skipped``, ``seconds``)."""
    for name in args.corruptions:
        for severity in args.severities:
            check(name, severity, args.backend)
    if args.format == "cifar-c":
        if sorted(set(args.severities)) != list(SEVERITIES):
            raise UserError("--format cifar-c: needs all five severities (the file stacks severities 1-5)")
        if (args.image_size or CIFAR_SIZE) != CIFAR_SIZE:
            raise UserError(f"--format cifar-c: images are {CIFAR_SIZE} px (got --image-size {args.image_size})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    dataset, info = build_dataset(args.data, args.split, image_size=args.image_size, train=False)
    if args.format == "cifar-c" and info.input_size != CIFAR_SIZE:
        raise UserError(f"--format cifar-c: {args.data} gives {info.input_size} px images, not {CIFAR_SIZE}; "
                        f"pass --image-size {CIFAR_SIZE}")
    dataset.transform = eval_pixels(info.input_size, info.resize)
    n = len(dataset) if args.n is None else min(args.n, len(dataset))
    rank, world = _distributed()
    if rank == 0 and out.is_dir():
        for stale in out.rglob(".*.tmp"):  # what a killed run was writing
            stale.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()  # no rank writes before the stale files are gone
    writer = (_Folders if args.format == "imagenet-c" else _Arrays)(out, dataset, list(info.class_names), n, args)
    starts = list(range(0, n, args.batch_size))
    mine = [(start // args.batch_size, range(start, min(start + args.batch_size, n))) for start in starts][rank::world]
    cells = [(c, s) for c in args.corruptions for s in args.severities]
    begin, written, skipped = time.perf_counter(), 0, 0
    with tqdm(total=len(mine) * len(cells), desc="batches x cells", disable=rank != 0 or None) as bar:
        for index, indices in mine:
            todo = [(c, s) for c, s in cells if not writer.done(c, s, index, indices)]
            if todo:
                batch = [dataset[i] for i in indices]
                images = torch.stack([image for image, _ in batch])
                labels = [int(label) for _, label in batch]
                writer.learn(indices, labels)  # a rendered dataset's labels are known once loaded
                todo = [(c, s) for c, s in cells if not writer.done(c, s, index, indices)]
                for corruption, severity in todo:
                    pixels = corrupt(images, corruption, severity, args.backend, seed=args.seed * 100_003 + index)
                    writer.write(corruption, severity, index, indices, _to_uint8(pixels), labels)
                    written += len(indices)
                    bar.update()
            skipped += (len(cells) - len(todo)) * len(indices)
            bar.update(len(cells) - len(todo))
    if world > 1:
        dist.barrier()
    if rank == 0:
        writer.finish(args.corruptions, len(starts))
    seconds = time.perf_counter() - begin
    if world > 1:
        counts = torch.tensor([written, skipped], dtype=torch.float64)
        dist.all_reduce(counts)
        written, skipped = (int(x) for x in counts.tolist())
        dist.destroy_process_group()
    if rank == 0:
        rate = written / seconds if seconds > 0 else 0.0
        print(f"wrote {written} corrupted images ({skipped} already there) to {out} in {seconds:.1f} s: "
              f"{rate:.1f} images/s")
    return {"written": written, "skipped": skipped, "seconds": seconds}


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float [N, 3, H, W] in [0, 1] to uint8 [N, H, W, 3] (rounded)."""
    return images.detach().cpu().clamp(0, 1).mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _replace(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before, never a part: a temporary file renamed over
    it (no fsync: this guards against a killed process, not a power cut, at tens of files per second)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Folders:
    """``<out>/<corruption>/<severity>/<class>/<image>.JPEG``."""

    def __init__(self, out: Path, dataset, class_names: list[str], n: int, args):
        self.out = out
        samples = getattr(dataset, "samples", None)  # an image folder: keep its file names
        self.names = []
        for i in range(n):
            if samples is not None:
                path, label = samples[i]
                stem = Path(path).stem
            else:
                label, stem = None, f"{args.split}_{i:08d}"
            self.names.append((label, stem))
        self.class_names = class_names
        self._labels: dict[int, int] = {}

    def _path(self, corruption: str, severity: int, i: int, label: int) -> Path:
        folder = _safe(self.class_names[label])
        return self.out / corruption / str(severity) / folder / f"{self.names[i][1]}.JPEG"

    def learn(self, indices: range, labels: list[int]) -> None:
        self._labels.update(zip(indices, labels))

    def done(self, corruption: str, severity: int, index: int, indices: range) -> bool:
        labels = [self.names[i][0] if self.names[i][0] is not None else self._labels.get(i) for i in indices]
        if any(label is None for label in labels):
            return False
        return all(self._path(corruption, severity, i, label).is_file() for i, label in zip(indices, labels))

    def write(self, corruption: str, severity: int, index: int, indices: range, pixels: np.ndarray,
              labels: list[int]) -> None:
        for i, image, label in zip(indices, pixels, labels):
            path = self._path(corruption, severity, i, label)
            if path.is_file():
                continue
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
            _replace(path, buffer.getvalue())

    def finish(self, corruptions: list[str], batches: int) -> None:
        pass


class _Arrays:
    """CIFAR-10-C: ``<out>/<corruption>.npy`` and ``<out>/labels.npy``; batches go to
    ``<out>/.parts/<corruption>/<severity>/<batch>.npy`` until a corruption is complete."""

    def __init__(self, out: Path, dataset, class_names: list[str], n: int, args):
        self.out, self.parts = out, out / ".parts"

    def learn(self, indices: range, labels: list[int]) -> None:
        pass

    def _part(self, corruption: str, severity: int, index: int) -> Path:
        return self.parts / corruption / str(severity) / f"{index:08d}.npy"

    def done(self, corruption: str, severity: int, index: int, indices: range) -> bool:
        return (self.out / f"{corruption}.npy").is_file() or self._part(corruption, severity, index).is_file()

    def write(self, corruption: str, severity: int, index: int, indices: range, pixels: np.ndarray,
              labels: list[int]) -> None:
        _replace(self._part(corruption, severity, index), _npy(pixels))
        label_part = self.parts / "labels" / f"{index:08d}.npy"
        if not label_part.is_file():
            _replace(label_part, _npy(np.asarray(labels, dtype=np.int64)))

    def finish(self, corruptions: list[str], batches: int) -> None:
        """Stack the parts of every complete corruption into its file, severities 1-5 in order."""
        labels_path = self.out / "labels.npy"
        for corruption in corruptions:
            path = self.out / f"{corruption}.npy"
            if path.is_file():
                continue
            stacked = [np.load(self._part(corruption, s, b)) for s in SEVERITIES for b in range(batches)]
            _replace(path, _npy(np.concatenate(stacked)))
        if not labels_path.is_file():
            labels = np.concatenate([np.load(self.parts / "labels" / f"{b:08d}.npy") for b in range(batches)])
            _replace(labels_path, _npy(np.tile(labels, len(SEVERITIES))))
        for part in sorted(self.parts.rglob("*"), reverse=True):  # every corruption is in its file now
            part.unlink() if part.is_file() else part.rmdir()
        self.parts.rmdir()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _safe(name: str) -> str:
    """A class name as a folder name (ImageNet's are wnids already; others may hold a slash)."""
    if not name or name in (".", "..") or re.search(r"[/\x00]", name):
        raise UserError(f"class name {name!r} cannot be a folder name")
    return name
