"""Attention recording: what every attention module computed in a forward pass.

    with record_attention(model) as records:
        model(images)
    records["layer2.0"].scales          # [N, C] channel scales z
    records["layer2.0"].scale_weights   # EMCA's per-scale weights w_r
    records["layer2.0"].sources         # ["current", "stage 1 block 1", ...]

Records are keyed by block name (``"layer{stage}.{block}"``, block 0-based, the same
names as the state dict) and hold the last forward pass made inside the ``with``.
Outside it the modules record nothing and pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from .attention import AttentionRecord
from .registry import attention_modules


@contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, AttentionRecord]]:
    records: dict[str, AttentionRecord] = {}
    modules = list(attention_modules(model).values())
    for module in modules:
        module.recorder = records
    try:
        yield records
    finally:
        for module in modules:
            module.recorder = None
