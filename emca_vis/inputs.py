"""What the analysis tools read: checkpoints (the demo ones by default), preprocessed as trained."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .checkpoint import load_checkpoint
from .checkpoint.spec import parse_spec
from .data import eval_pixels
from .demo import demo_checkpoints
from .errors import UserError
from .training.tasks import get_task


@dataclass
class LoadedModel:
    """A checkpoint ready for analysis: eval-mode model, metadata and a display label."""

    label: str
    path: Path
    model: nn.Module
    meta: dict
    spec: str = ""  # what loads it again: the path, or MODEL[:ema][:FORMAT]=PATH for a foreign file

    def __post_init__(self):
        self.spec = self.spec or str(self.path)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def task(self):
        """The checkpoint's task (:func:`emca_vis.training.tasks.get_task`): what each tool asks
        to predict, explain and score, the same for classifiers and detectors."""
        return get_task(self.meta["task"])

    @property
    def input_size(self) -> int:
        return self.meta["input_size"]

    @property
    def resize(self) -> int:
        return self.meta["resize"]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model input ``[3, H, W]`` for an RGB image, exactly as in evaluation during training."""
        return self.normalise(self.pixels(image)[None])[0]

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """What the model sees before normalisation: ``[3, H, W]`` in [0, 1]; a classifier's image
        after its resize and centre crop, a detector's whole image (the detector resizes it)."""
        if self.meta["task"] == "detection":
            return TF.to_dtype(TF.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True)
        return eval_pixels(self.input_size, self.resize)(image)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """RGB ``[N, 3, H, W]`` in ``[0, 1]`` to model inputs: the checkpoint's mean and std for a
        classifier; a detector takes pixels and normalises them itself (torchvision's transform)."""
        if self.meta["task"] == "detection":
            return images
        mean = torch.tensor(self.meta["mean"], device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.meta["std"], device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def unnormalise(self, images: torch.Tensor) -> torch.Tensor:
        """Model inputs ``[N, 3, H, W]`` back to displayable RGB in ``[0, 1]``."""
        if self.meta["task"] == "detection":
            return images.cpu().clamp(0, 1)
        mean = torch.tensor(self.meta["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(self.meta["std"]).view(1, 3, 1, 1)
        return (images.cpu() * std + mean).clamp(0, 1)


def add_nonfinite_option(parser: argparse.ArgumentParser) -> None:
    """``--allow-nonfinite``, the same in every tool that loads checkpoints."""
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="load checkpoints whose weights hold NaN or infinities (refused otherwise), warning")


CHECKPOINT_HELP = ("checkpoints: emca-vis files, or foreign ones as MODEL[:ema][:FORMAT]=PATH, e.g. "
                   "resnet50=r50.pth (default: the demo checkpoints)")


def load_models(paths: Sequence[str | Path] | None = None, errors: list[str] | None = None,
                allow_nonfinite: bool = False, task: str | None = "classification") -> list[LoadedModel]:
    """Load ``paths`` (default: the demo checkpoints) on the CPU; each a path or a checkpoint spec
    ``MODEL[:ema][:FORMAT]=PATH`` (:mod:`emca_vis.checkpoint.spec`).

    A checkpoint that fails is reported as ``error: ...`` on stderr and appended to
    ``errors``; the others still load. Labels are the model names, or file names where two
    checkpoints share a model name. ``allow_nonfinite``, ``task`` (``None``: classifiers and
    detectors): see :func:`load_checkpoint`.
    """
    loaded = []
    for checkpoint in paths or demo_checkpoints():
        try:
            spec = parse_spec(checkpoint)
            model, meta = load_checkpoint(spec, allow_nonfinite=allow_nonfinite, task=task)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            if errors is not None:
                errors.append(str(error))
            continue
        loaded.append(LoadedModel(meta["model"], spec.path, model, meta, str(spec)))
    counts = Counter(m.label for m in loaded)
    for m in loaded:
        if counts[m.label] > 1:
            m.label = m.path.stem
    if not loaded:
        raise UserError("no checkpoint could be loaded")
    return loaded
