"""Class names for checkpoints that do not carry them: ImageNet's, or a file of names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

from ..errors import UserError
from ..validation import parse_json, read_bytes

IMAGENET_CLASSES = 1000
MAX_CLASS_FILE_BYTES = 16 << 20


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """ImageNet-1k's 1000 class names in index order (torchvision ships them; nothing is downloaded)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def read_classes(path: str | os.PathLike) -> list[str]:
    """Class names from a file: a JSON list of strings, or one name per line (blank lines skipped)."""
    data = read_bytes(path, "classes file", MAX_CLASS_FILE_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    if text.lstrip().startswith("["):
        names = parse_json(text, f"{path}", MAX_CLASS_FILE_BYTES)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{path}: a JSON classes file must be a list of strings")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise UserError(f"{path}: holds no class names")
    return names


def _imagenet_synsets(names: Sequence[str]) -> bool:
    return (len(names) == IMAGENET_CLASSES and list(names) == sorted(names)
            and all(len(n) == 9 and n[0] == "n" and n[1:].isdigit() for n in names))


def same_classes(data_names: Sequence[str], model_names: Sequence[str]) -> bool:
    """Whether a dataset's classes are a model's, index for index: equal names, or ImageNet's 1000
    synset folders (``n01440764``, ... sorted: ImageNet's class order) for a model with ImageNet's
    names (an imported checkpoint's default, in that same order)."""
    if list(data_names) == list(model_names):
        return True
    return _imagenet_synsets(data_names) and tuple(model_names) == imagenet_classes()
