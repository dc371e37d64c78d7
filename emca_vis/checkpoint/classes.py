"""Class names for checkpoints that do not carry them: ImageNet's, or a file of names."""

from __future__ import annotations

import os
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
