"""How every tool names a checkpoint: ``PATH`` or ``[MODEL][:ema][:FORMAT]=PATH``.

    runs/emca.safetensors                  an emca-vis checkpoint (it describes itself)
    r50.pth                                a foreign file whose key names say its model (plain, timm SE,
                                           the official ECA-Net/CBAM/SRM/FcaNet/BAM/EPSANet/
                                           SA-Net/EMCA code)
    resnet50=r50.pth                       a foreign file holding a torchvision/timm ResNet-50
    resnet50_se:timm=seresnet50.pth        the format named instead of detected from key names
    resnet50:ema=train/last.pth            the EMA weights of a training checkpoint
    seresnet50:ema:timm=model_best.pth.tar a peer's model name, where its format maps it
    eca_resnet50:eca-net=eca_r50.pth.tar   the same for ECA-Net's official code
    :ema=train/last.pth                    the EMA weights, the model read from the key names

The part before the first ``=`` is a spec head only when it reads as one (a name of letters,
digits and ``_``, then ``:ema`` and/or ``:FORMAT``); anything else is a plain path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

_HEAD = re.compile(r"(?P<model>[a-z][a-z0-9_]*)?(?P<tags>(?::[a-z][a-z0-9_-]*)*)", re.IGNORECASE)


@dataclass(frozen=True)
class CheckpointSpec:
    """A checkpoint file and, for a foreign one, what it holds."""

    path: Path
    model: str | None = None  # the architecture (an emca-vis name, or a peer's name its format maps)
    ema: bool = False  # the EMA weights of a container that holds both
    format: str = "auto"  # a name in emca_vis.checkpoint.formats.FORMATS

    def __str__(self) -> str:
        if self.model is None and not self.ema and self.format == "auto":
            return str(self.path)
        tags = (":ema" if self.ema else "") + ("" if self.format == "auto" else f":{self.format}")
        return f"{self.model or ''}{tags}={self.path}"


def parse_spec(text: str | os.PathLike | CheckpointSpec) -> CheckpointSpec:
    """``"resnet50:ema=x.pth"`` -> ``CheckpointSpec(Path("x.pth"), "resnet50", ema=True)``;
    a ``Path`` is always a plain path. An unknown ``:tag`` is one line naming the formats."""
    if isinstance(text, CheckpointSpec):
        return text
    if not isinstance(text, str):
        return CheckpointSpec(Path(text))
    head, sep, path = text.partition("=")
    match = _HEAD.fullmatch(head) if sep else None
    if match is None or not head:
        return CheckpointSpec(Path(text))
    if not path:
        raise UserError(f"{text}: no file after '='")
    from .formats import FORMATS  # formats import the model registry; keep this module light

    ema, fmt = False, "auto"
    for tag in filter(None, match["tags"].split(":")):
        if tag == "ema" and not ema:
            ema = True
        elif tag in FORMATS and fmt == "auto":
            fmt = tag
        else:
            raise UserError(f"{text}: unknown or repeated tag {tag!r}; after MODEL come ':ema' and one "
                            f"format of {', '.join(['auto', *FORMATS])}")
    return CheckpointSpec(Path(path), match["model"] or None, ema, fmt)
