"""Datasets by spec string, one factory for every tool.

    shapes                 the embedded synthetic dataset (no files; default 64 px)
    folder:/path           class-per-subfolder images under /path/train and /path/val
    imagenet:/path         ImageNet: /path/train/<wnid>/*.JPEG and /path/val (class folders,
                           or flat with LOC_val_solution.csv)
    cifar10:/path          torchvision's on-disk CIFAR-10 (cifar-10-batches-py under /path)
    cifar100:/path         torchvision's on-disk CIFAR-100 (cifar-100-python under /path)

Nothing is downloaded: a missing dataset is a :class:`DatasetError` saying what is
expected where. :func:`build_dataset` returns the dataset and a :class:`DataInfo` whose
fields (classes, input size, resize, mean/std) go into checkpoint metadata, so every
downstream tool preprocesses exactly as training did (:func:`eval_transform`).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2 as T

from ..errors import UserError
from ..validation import regular_file
from .shapes import SHAPE_CLASSES, ShapesDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
SPLITS = ("train", "val", "test")
KINDS = ("shapes", "folder", "imagenet", "cifar10", "cifar100")


class DatasetError(UserError):
    pass


@dataclass(frozen=True)
class DataInfo:
    """How a dataset's images are to be preprocessed; stored in checkpoint metadata."""

    spec: str
    kind: str
    class_names: tuple[str, ...]
    input_size: int
    resize: int  # evaluation: resize the shorter side to this, then centre-crop input_size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def metadata(self) -> dict:
        meta = asdict(self)
        meta["class_names"] = list(self.class_names)
        meta["dataset"] = meta.pop("spec")
        return meta


def parse_spec(spec: str) -> tuple[str, Path | None]:
    kind, _, path = spec.partition(":")
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset {spec!r}; use one of: shapes, folder:/path, imagenet:/path, "
                           "cifar10:/path, cifar100:/path")
    if kind == "shapes":
        if path:
            raise DatasetError("the shapes dataset takes no path")
        return kind, None
    if not path:
        raise DatasetError(f"dataset {spec!r} needs a path: {kind}:/path/to/data")
    return kind, Path(path).expanduser()


MAX_ASPECT = 4  # longer side over shorter side up to which the whole image is resized before the crop


class ResizeCenterCrop:
    """Resize the shorter side to ``resize``, then centre-crop ``size``: ``T.Resize`` + ``T.CenterCrop``,
    with bounded work for any aspect ratio.

    Resizing a 1 x 1,000,000 image's shorter side to 256 px would make a 256 x 256,000,000 image
    for a 224 x 224 crop. Images up to :data:`MAX_ASPECT` : 1 take torchvision's path (the
    same pixels as ever); longer ones have only the crop's source region resampled, with PIL's
    ``resize(box=...)`` at the same scale and position, so the cost follows ``size``.
    """

    def __init__(self, resize: int, size: int, interpolation=T.InterpolationMode.BILINEAR, tensor: bool = True):
        self.resize, self.size, self.tensor = resize, size, tensor
        self.resample = {T.InterpolationMode.BILINEAR: Image.BILINEAR, T.InterpolationMode.NEAREST: Image.NEAREST,
                         T.InterpolationMode.BICUBIC: Image.BICUBIC}[interpolation]
        steps = [T.Resize(resize, interpolation, antialias=True), T.CenterCrop(size)]
        self.standard = T.Compose([T.ToImage(), *steps] if tensor else steps)

    def __call__(self, image):
        if not isinstance(image, Image.Image) or self.resize < self.size:
            return self.standard(image)
        width, height = image.size
        short, long = min(width, height), max(width, height)
        if long <= MAX_ASPECT * short:
            return self.standard(image)
        # torchvision's geometry: shorter side -> resize, longer side truncated; crop offsets rounded.
        new_long = int(self.resize * long / short)
        new_width, new_height = (self.resize, new_long) if width <= height else (new_long, self.resize)
        left, top = int(round((new_width - self.size) / 2)), int(round((new_height - self.size) / 2))
        sx, sy = width / new_width, height / new_height
        box = (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)
        crop = image.resize((self.size, self.size), self.resample, box=box)
        return T.ToImage()(crop) if self.tensor else crop


def eval_pixels(input_size: int, resize: int) -> T.Compose:
    """A PIL image resized (shorter side) and centre-cropped as in evaluation: float ``[3, S, S]`` in [0, 1]."""
    return T.Compose([ResizeCenterCrop(resize, input_size), T.ToDtype(torch.float32, scale=True)])


def eval_transform(input_size: int, resize: int, mean, std) -> T.Compose:
    """Evaluation preprocessing for a PIL image: resize shorter side, centre crop, normalise."""
    return T.Compose([eval_pixels(input_size, resize), T.Normalize(mean, std)])


def train_transform(info: DataInfo) -> T.Compose:
    """Standard training augmentation for the dataset kind."""
    if info.kind == "shapes":
        crop = [T.Resize(info.input_size, antialias=True), T.RandomHorizontalFlip()]
    elif info.kind.startswith("cifar"):
        crop = [T.RandomCrop(info.input_size, padding=info.input_size // 8), T.RandomHorizontalFlip()]
    else:
        crop = [T.RandomResizedCrop(info.input_size, antialias=True), T.RandomHorizontalFlip()]
    return T.Compose([T.ToImage(), *crop, T.ToDtype(torch.float32, scale=True), T.Normalize(info.mean, info.std)])


def build_dataset(spec: str, split: str = "train", *, image_size: int | None = None, train: bool | None = None,
                  length: int | None = None, seed: int = 0) -> tuple[Dataset, DataInfo]:
    """The dataset of ``spec`` for ``split`` with standard transforms.

    Args:
        image_size: network input size; default 64 for shapes, 32 for CIFAR, 224 otherwise.
        train: training augmentation (default: only for the train split).
        length, seed: size and generator seed of the synthetic dataset.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    kind, root = parse_spec(spec)
    train = split == "train" if train is None else train
    if kind == "shapes":
        size = image_size or 64
        info = DataInfo(spec, kind, SHAPE_CLASSES, size, size, IMAGENET_MEAN, IMAGENET_STD)
        dataset = ShapesDataset(split, image_size=size, seed=seed, length=length)
    elif kind.startswith("cifar"):
        size = image_size or 32
        dataset = _cifar(kind, root, split)
        info = DataInfo(spec, kind, tuple(dataset.classes), size, size, CIFAR_MEAN, CIFAR_STD)
    else:
        size = image_size or 224
        dataset = _image_folder(kind, root, split)
        info = DataInfo(spec, kind, tuple(dataset.classes), size, round(size * 256 / 224), IMAGENET_MEAN,
                        IMAGENET_STD)
    dataset.transform = train_transform(info) if train else eval_transform(info.input_size, info.resize, info.mean,
                                                                            info.std)
    return dataset, info


def _cifar(kind: str, root: Path, split: str) -> Dataset:
    cls, folder = (datasets.CIFAR10, "cifar-10-batches-py") if kind == "cifar10" else (
        datasets.CIFAR100, "cifar-100-python")
    if root.name == folder:  # accept the extracted folder itself
        root = root.parent
    if not (root / folder).is_dir():
        raise DatasetError(f"{kind}: expected {root / folder} (torchvision's format: extract the python "
                           f"version of the archive into {root}); nothing is downloaded")
    for path in (root / folder).iterdir():  # torchvision reads the files: a FIFO among them would block
        if not path.is_dir():
            regular_dataset_file(path)
    try:
        return cls(str(root), train=split == "train", download=False)
    except RuntimeError as error:
        raise DatasetError(f"{kind}: {root / folder} is incomplete or corrupt ({error})") from None


def _image_folder(kind: str, root: Path, split: str) -> Dataset:
    folder = root / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise DatasetError(f"{kind}: expected class-per-subfolder images in {folder} (layout: {root}/train/<class>/"
                           f"*.jpg and {root}/val/<class>/*.jpg); nothing is downloaded")
    has_class_dirs = any(p.is_dir() for p in folder.iterdir())
    if kind == "imagenet" and not has_class_dirs:
        return _flat_imagenet_val(root, folder)
    try:
        return datasets.ImageFolder(str(folder), is_valid_file=image_file)
    except (FileNotFoundError, RuntimeError) as error:
        raise DatasetError(f"{kind}: {folder}: {error}") from None


def regular_dataset_file(path: Path) -> Path:
    """``path`` if it is a regular file; a FIFO, device or socket (which would block the loader) is refused."""
    try:
        regular_file(path)
    except UserError as error:
        raise DatasetError(str(error)) from None
    return path


def image_file(path: str) -> bool:
    """ImageFolder's test of a file: an image suffix, and a regular file (refused otherwise)."""
    if not datasets.folder.has_file_allowed_extension(path, datasets.folder.IMG_EXTENSIONS):
        return False
    regular_dataset_file(Path(path))
    return True


def _flat_imagenet_val(root: Path, folder: Path) -> Dataset:
    """ImageNet's val/ as distributed: flat JPEGs, labels in LOC_val_solution.csv."""
    solution = next((regular_dataset_file(p) for p in (root / "LOC_val_solution.csv", folder / "LOC_val_solution.csv")
                     if p.exists()), None)
    if solution is None:
        raise DatasetError(f"imagenet: {folder} has no class folders and no LOC_val_solution.csv beside it; "
                           "put val images in <wnid>/ folders or add the labels file")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()) if (root / "train").is_dir() else None
    with open(solution, newline="") as f:
        rows = [(row["ImageId"], row["PredictionString"].split()[0]) for row in csv.DictReader(f)]
    classes = classes or sorted({wnid for _, wnid in rows})
    index = {c: i for i, c in enumerate(classes)}
    return LabelledFiles([(folder / f"{image}.JPEG", index[wnid]) for image, wnid in sorted(rows)], classes)


class LabelledFiles(Dataset):
    """Image files with known labels, read like ``ImageFolder`` reads them."""

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], transform=None):
        self.samples, self.classes, self.transform = samples, classes, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = datasets.folder.default_loader(str(path))
        return (self.transform(image) if self.transform else image), label
