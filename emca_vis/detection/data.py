"""Detection data in COCO format, read with pycocotools, and ``multishapes``, its synthetic twin.

    coco:/path      /path/annotations/instances_{split}2017.json (or instances_{split}.json)
                    with images under /path/{split}2017 (or /path/{split})
    multishapes     several shapes per image, boxes and instance masks, rendered on the fly

A dataset item is ``(image [3, H, W] float in 0..1, target)`` with torchvision's target
keys: ``boxes`` (x0, y0, x1, y1), ``labels`` (1..K: the categories sorted by id), ``masks``
``[N, H, W]`` (polygons and RLE both decoded by pycocotools), ``image_id``. As in COCO
training, crowd regions are left out of the targets (COCOeval ignores detections on them),
images without objects stay in as negatives, and boxes of zero width or height are dropped.
Every dataset keeps its ``coco`` index (``pycocotools.coco.COCO``), which evaluation scores against.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ..data import DatasetError
from ..data import shapes as S
from ..errors import UserError
from ..images import load_image
from ..outputs import write_json
from ..validation import parse_json, read_bytes

MAX_ANNOTATION_BYTES = 2 << 30
MULTISHAPES_CLASSES = ("circle", "square", "triangle", "star")
MULTISHAPES_SPLITS = {"train": 2000, "val": 200, "test": 200}
_OBJECT_DIAMETER = (0.15, 0.4)  # of the image side
_OBJECTS = (1, 4)  # inclusive range per image


def coco_index(data: dict, name: str) -> COCO:
    """A ``COCO`` index over an instances dict; a structure pycocotools cannot index is one line."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("categories"), list):
        raise DatasetError(f"{name}: not a COCO instances file (needs 'images' and 'categories' lists)")
    data.setdefault("annotations", [])
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
            coco.createIndex()
        for ann in data["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann["image_id"] not in coco.imgs or ann["category_id"] not in coco.cats:
                raise ValueError(f"annotation {ann['id']} refers to an unknown image or category")
            if not all(map(math.isfinite, (x, y, w, h))):
                raise ValueError(f"annotation {ann['id']} has a non-finite bbox")
        for image in data["images"]:
            if int(image["width"]) < 1 or int(image["height"]) < 1:
                raise ValueError(f"image {image['id']} has no pixels")
    except (KeyError, TypeError, ValueError) as error:
        what = f"missing field {error}" if isinstance(error, KeyError) else str(error).splitlines()[0][:160]
        raise DatasetError(f"{name}: not a usable COCO instances file ({what})") from None
    return coco


def read_coco(path: str | Path) -> COCO:
    """A COCO instances JSON file, checked: missing, malformed or mis-shaped is one line."""
    try:
        raw = parse_json(read_bytes(path, "annotation file", MAX_ANNOTATION_BYTES), str(path), MAX_ANNOTATION_BYTES)
    except UserError as error:
        raise DatasetError(str(error)) from None
    return coco_index(raw, str(path))


class CocoDetection(Dataset):
    """Images + a COCO index as torchvision detection targets (see the module docstring).

    ``load`` returns the PIL image of an image record; ``train`` adds horizontal flips,
    seeded by torch's generator (the training module seeds it per sample).
    """

    def __init__(self, coco: COCO, load, train: bool = False, masks: bool = True):
        self.coco, self.load, self.train, self.masks = coco, load, train, masks
        self.ids = sorted(coco.imgs)
        self.category_ids = sorted(coco.cats)
        self.classes = [coco.cats[c]["name"] for c in self.category_ids]
        self.label_of = {c: i + 1 for i, c in enumerate(self.category_ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, image_id: int) -> dict[str, torch.Tensor]:
        info = self.coco.imgs[image_id]
        height, width = int(info["height"]), int(info["width"])
        anns = [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {"boxes": boxes[keep],
                  "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)[keep],
                  "image_id": torch.tensor(image_id)}
        if self.masks:
            masks = [self.coco.annToMask(a) for a, k in zip(anns, keep.tolist()) if k]
            target["masks"] = (torch.from_numpy(np.stack(masks)) if masks
                               else torch.zeros(0, height, width, dtype=torch.uint8))
        return target

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = TF.to_dtype(TF.pil_to_tensor(self.load(self.coco.imgs[image_id])), torch.float32, scale=True)
        target = self.target(image_id)
        if image.shape[-2:] != (self.coco.imgs[image_id]["height"], self.coco.imgs[image_id]["width"]):
            raise DatasetError(f"image {self.coco.imgs[image_id].get('file_name')}: its size differs from "
                               "the annotation file's width and height")
        if self.train and torch.rand(()) < 0.5:
            width = image.shape[-1]
            image = image.flip(-1)
            target["boxes"][:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def coco_dataset(root: str | Path, split: str, train: bool = False, masks: bool = True) -> CocoDetection:
    """The ``split`` of a COCO-layout folder (see the module docstring)."""
    root = Path(root)
    candidates = [(root / "annotations" / f"instances_{split}2017.json", root / f"{split}2017"),
                  (root / "annotations" / f"instances_{split}.json", root / split)]
    for annotations, images in candidates:
        if annotations.exists():
            break
    else:
        raise DatasetError(f"{root}: no COCO annotations for split {split!r} (expected "
                           f"{candidates[0][0]} or {candidates[1][0]})")
    coco = read_coco(annotations)

    def load(info: dict) -> Image.Image:
        name = Path(str(info.get("file_name", "")))
        if name.is_absolute() or ".." in name.parts or not name.name:
            raise DatasetError(f"{annotations}: image {info['id']} has file_name {str(name)!r} outside {images}")
        return load_image(images / name)

    return CocoDetection(coco, load, train=train, masks=masks)


# ---------------------------------------------------------------- multishapes -------

def render_scene(seed: int, split: str, index: int, image_size: int = 128,
                 classes: tuple[str, ...] = MULTISHAPES_CLASSES, draw: bool = True):
    """Scene ``index`` of ``split``: ``(image or None, [(label 0..K-1, bool mask [H, W]), ...])``.

    Bitwise deterministic in its arguments. Objects do not overlap (their circumscribed
    circles are kept apart), so every mask is the whole object. The geometry comes first
    from the generator, so ``draw=False`` gives the same objects without painting.
    """
    if split not in MULTISHAPES_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(MULTISHAPES_SPLITS)}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    rng = np.random.default_rng([seed, list(MULTISHAPES_SPLITS).index(split), index, 17])
    ss = S._supersampling(image_size)
    placed: list[tuple[np.ndarray, float]] = []
    objects = []
    for _ in range(rng.integers(_OBJECTS[0], _OBJECTS[1] + 1)):
        label = int(rng.integers(len(classes)))
        radius = rng.uniform(*_OBJECT_DIAMETER) * image_size / 2
        rotation = S._rotation(rng.uniform(0, 2 * math.pi))
        for _attempt in range(20):
            centre = rng.uniform(radius + 1, image_size - radius - 1, size=2)
            if all(np.linalg.norm(centre - c) > radius + r + 1 for c, r in placed):
                break
        else:
            continue
        placed.append((centre, radius))
        parts = [(poly @ rotation * radius + centre, fill) for poly, fill in S._SHAPES[classes[label]]]
        coverage = S._polygons_coverage(parts, image_size, ss)
        objects.append((label, coverage))
    result = [(label, np.asarray(coverage) >= 128) for label, coverage in objects]
    if not draw:
        return None, result
    image = S._background(rng, image_size)
    S._draw_distractors(rng, image, ss)
    for (label, coverage), (_, mask) in zip(objects, result):
        image.paste(S._contrasting_colour(rng, image, S._mask_box(mask)), mask=coverage)
    return S._add_pixel_noise(rng, image), result


def multishapes_coco(split: str, length: int | None = None, image_size: int = 128, seed: int = 0,
                     classes: tuple[str, ...] = MULTISHAPES_CLASSES) -> dict:
    """The instances dict of a multishapes split: RLE masks, boxes of the masks, areas in pixels."""
    for name in classes:
        if name not in S.SHAPE_CLASSES:
            raise ValueError(f"unknown shape {name!r}; choose from {', '.join(S.SHAPE_CLASSES)}")
    length = MULTISHAPES_SPLITS.get(split, 0) if length is None else length
    images, annotations = [], []
    for index in range(length):
        images.append({"id": index + 1, "file_name": f"{index:06d}.png", "width": image_size, "height": image_size})
        for label, mask in render_scene(seed, split, index, image_size, classes, draw=False)[1]:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            x0, y0, x1, y1 = S._mask_box(mask)
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(mask.sum()), "iscrowd": 0,
                                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(classes)]
    return {"info": {"description": f"multishapes {split}, seed {seed}, {image_size} px"},
            "images": images, "annotations": annotations, "categories": categories}


def multishapes(split: str, length: int | None = None, image_size: int = 128, seed: int = 0,
                train: bool = False, masks: bool = True,
                classes: tuple[str, ...] = MULTISHAPES_CLASSES) -> CocoDetection:
    """A multishapes split served in COCO form (images rendered on access)."""
    coco = coco_index(multishapes_coco(split, length, image_size, seed, classes), f"multishapes {split}")

    def load(info: dict) -> Image.Image:
        return render_scene(seed, split, info["id"] - 1, image_size, classes)[0]

    return CocoDetection(coco, load, train=train, masks=masks)


def write_coco(dataset: CocoDetection, root: str | Path, split: str) -> Path:
    """Write a dataset in COCO layout: ``root/{split}/<file_name>`` and
    ``root/annotations/instances_{split}.json`` (readable by ``coco:root``); returns the JSON's path."""
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    for info in dataset.coco.dataset["images"]:
        dataset.load(info).save(root / split / info["file_name"])
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, dataset.coco.dataset, indent=None)
    return path


def build_detection_dataset(spec: str, split: str, train: bool = False, masks: bool = True,
                            length: int | None = None, image_size: int = 128, seed: int = 0) -> CocoDetection:
    """``multishapes`` or ``coco:/path`` (see the module docstring)."""
    if spec == "multishapes":
        return multishapes(split, length, image_size, seed, train=train, masks=masks)
    if spec.startswith("coco:"):
        dataset = coco_dataset(spec.removeprefix("coco:"), split, train=train, masks=masks)
        if length is not None and length < len(dataset):
            dataset.ids = dataset.ids[:length]
        return dataset
    raise DatasetError(f"unknown detection dataset {spec!r}; use multishapes or coco:/path")


def collate(batch):
    """Detection batches are lists: images differ in size and targets in length."""
    return tuple(zip(*batch))
