"""Pre-generated corruption datasets, read from local files (nothing is downloaded).

    imagenet-c:/path     ImageNet-C or Tiny-ImageNet-C: /path/<corruption>/<severity>/<class>/<image>
    cifar10-c:/path      CIFAR-10-C: /path/<corruption>.npy (5 severities x 10,000 images, in
    cifar100-c:/path     severity order, uint8 [50000, 32, 32, 3]) and /path/labels.npy

Images come back as float tensors in [0, 1] after the model's resize and centre crop; class
order is checked against the checkpoint's class names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets

from ..data import image_file
from ..errors import UserError

KINDS = ("imagenet-c", "cifar10-c", "cifar100-c")
CIFAR_C_IMAGES = 10_000


class CDataError(UserError):
    pass


def parse(spec: str) -> tuple[str, Path]:
    kind, _, path = spec.partition(":")
    if kind not in KINDS or not path:
        raise CDataError(f"unknown corrupted dataset {spec!r}; use imagenet-c:/path, cifar10-c:/path or "
                         "cifar100-c:/path")
    return kind, Path(path).expanduser()


def load(spec: str, corruption: str, severity: int, transform, class_names: list[str]) -> Dataset:
    """The images of ``corruption`` at ``severity``, labelled in the model's class order."""
    kind, root = parse(spec)
    if kind == "imagenet-c":
        folder = root / corruption / str(severity)
        if not folder.is_dir():
            raise CDataError(f"{spec}: no folder {folder}; expected {root}/<corruption>/<severity>/<class>/<image>")
        dataset = datasets.ImageFolder(folder, transform=transform, is_valid_file=image_file)
        if dataset.classes != sorted(class_names) or len(dataset.classes) != len(class_names):
            raise CDataError(f"{folder}: its {len(dataset.classes)} class folders are not the model's "
                             f"{len(class_names)} classes")
        order = {name: i for i, name in enumerate(class_names)}  # folder index -> model index
        dataset.target_transform = lambda target, names=dataset.classes: order[names[target]]
        return dataset
    return _cifar_c(root, spec, corruption, severity, transform, class_names)


class _ArrayImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1)  # a copy: the array is memory-mapped
        return self.transform(image), int(self.labels[i])


def _cifar_c(root: Path, spec: str, corruption: str, severity: int, transform, class_names) -> Dataset:
    images_path, labels_path = root / f"{corruption}.npy", root / "labels.npy"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise CDataError(f"{spec}: no file {path}; expected {root}/<corruption>.npy and {root}/labels.npy")
    images = np.load(images_path, mmap_mode="r")
    labels = np.load(labels_path, mmap_mode="r")
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8 or len(images) % 5:
        raise CDataError(f"{images_path}: expected uint8 images [5 x N, 32, 32, 3], found {images.dtype} "
                         f"{list(images.shape)}")
    if labels.shape != (len(images),):
        raise CDataError(f"{labels_path}: expected {len(images)} labels, found shape {list(labels.shape)}")
    classes = 10 if spec.startswith("cifar10-") else 100
    if len(class_names) != classes or int(labels.max()) >= classes:
        raise CDataError(f"{spec}: has {classes} classes but the model has {len(class_names)}")
    per_severity = len(images) // 5
    part = slice((severity - 1) * per_severity, severity * per_severity)
    return _ArrayImages(images[part], labels[part], transform)
