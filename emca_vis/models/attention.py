"""Channel attention modules (SE, ECA, SRM, CBAM) and EMCA's multi-scale aggregation.

Every module follows the same recipe, written once in :class:`ChannelAttention`::

    s = pool(x)                          # SDA: per-channel descriptor, [N, C] or [N, C, K]
    s = relu(sum_r w_r * S[..., r])      # EMCA only: aggregate the descriptors of preceding maps
    z = sigmoid(excite(s))               # the base attention's cross-channel operator, [N, C]
    out = gate(x, z)

A new attention type is a subclass that defines ``pool`` and ``excite``; EMCA over it
comes for free by passing ``sources``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GATES = ("mul", "one_plus")


@dataclass
class AttentionRecord:
    """What one attention module computed in the last recorded forward pass.

    ``scales`` are the channel scales ``z`` ``[N, C]``. EMCA modules also fill
    ``scale_weights`` (the per-scale weights ``w_r`` ``[R]``), ``sources`` (one label per
    scale, ``"current"`` first) and ``contributions`` (``w_r * s_r``, source on the last
    axis: ``[N, C, R]``, or ``[N, C, 2, R]`` for SRM's two style statistics).
    """

    name: str
    stage: int
    block: int
    scales: Tensor
    sources: list[str]
    scale_weights: Tensor | None = None
    contributions: Tensor | None = None


class ChannelAttention(nn.Module):
    """Base class: ``z = sigmoid(excite(pool(x)))``, optionally multi-scale (EMCA).

    Args:
        channels: channels ``C0`` of the map the module gates.
        sources: ``(label, channels)`` of each preceding map EMCA aggregates; empty for
            plain attention (R = 1, no aggregation at all).
        gate: ``"mul"`` (``x * z``, the paper) or ``"one_plus"`` (``x * (1 + z)``, the
            authors' released code).
    """

    # True for modules applied to a block's output after the residual sum (BAM, A2-Net).
    after_residual = False

    def __init__(self, channels: int, sources: tuple[tuple[str, int], ...] = (), gate: str = "mul"):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"unknown gate {gate!r}; choose one of {', '.join(GATES)}")
        for label, source_channels in sources:
            if channels % source_channels:
                raise ValueError(
                    f"EMCA source {label!r} has {source_channels} channels, which do not "
                    f"divide the {channels} channels of the current map"
                )
        self.channels = channels
        self.gate = gate
        self.source_labels = ["current"] + [label for label, _ in sources]
        if sources:
            # Start as the plain base attention: w_0 = 1, the preceding maps nearly silent.
            others = [0.1 / len(sources)] * len(sources)
            self.scale_weights = nn.Parameter(torch.tensor([1.0] + others))
        else:
            self.register_parameter("scale_weights", None)
        # Set by record_attention(); None means recording is off and costs nothing.
        self.recorder: dict[str, AttentionRecord] | None = None
        self.record_name = ""
        self.stage = 0
        self.block = 0

    @staticmethod
    def pool(x: Tensor) -> Tensor:
        """Spatial descriptor (SDA), parameter-free. Default: global average pooling, ``[N, C]``."""
        return x.mean((2, 3))

    def excite(self, s: Tensor) -> Tensor:
        """Cross-channel operator ``W_m2``: descriptor -> logits ``[N, C]``."""
        raise NotImplementedError

    @classmethod
    def pool_source(cls, x: Tensor) -> Tensor:
        """``pool`` of a preceding map, as EMCA aggregates it (same values; subclasses may
        compute it with fewer operations)."""
        return cls.pool(x)

    def aggregate(self, s: Tensor, context: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
        """EMCA's descriptors of all scales, source on the last axis: ``[N, C, (2,) R]``.

        CDA tiles a preceding map's channels up to ``C0``; tiling and pooling commute, so
        only descriptors are tiled. Consecutive sources of equal width are stacked first
        and tiled together: one repeat per width, not one per source.
        """
        parts, run = [s.unsqueeze(-1)], [context[0]]
        for m in list(context[1:]) + [None]:
            if m is not None and m.shape[1] == run[0].shape[1]:
                run.append(m)
                continue
            stacked = torch.stack(run, dim=-1)
            repeats = [1] * stacked.dim()
            repeats[1] = self.channels // stacked.shape[1]
            parts.append(stacked.repeat(repeats))
            run = [m]
        return torch.cat(parts, dim=-1)

    def scales(self, x: Tensor, context: list[Tensor] | tuple[Tensor, ...] = ()) -> Tensor:
        """Channel scales ``z`` ``[N, C]`` for the map ``x``.

        ``context`` holds ``pool(m)`` of each preceding map ``m`` (EMCA), in source order.
        """
        s = self.pool(x)
        stacked = None
        if self.scale_weights is not None:
            if len(context) != len(self.source_labels) - 1:
                raise ValueError(
                    f"{self.record_name or type(self).__name__} aggregates "
                    f"{len(self.source_labels) - 1} preceding maps but got {len(context)}; "
                    "run it through the full model's forward"
                )
            stacked = self.aggregate(s, context)
            # conv1d(kernel=R, stride=R, no bias) over the stacked scales == weighted sum.
            s = F.relu((stacked * self.scale_weights.to(stacked.dtype)).sum(-1))
        z = torch.sigmoid(self.excite(s))
        if self.recorder is not None:
            self._record(z, stacked)
        return z

    def apply_gate(self, x: Tensor, z: Tensor, inplace: bool = False) -> Tensor:
        z = z[:, :, None, None].to(x.dtype)
        return multiply(x, 1 + z if self.gate == "one_plus" else z, inplace)

    def forward(self, x: Tensor, context: list[Tensor] | tuple[Tensor, ...] = (), inplace: bool = False) -> Tensor:
        """Gate ``x``. ``inplace=True`` lets the module overwrite ``x`` when autograd allows."""
        return self.apply_gate(x, self.scales(x, context), inplace)

    def _record(self, z: Tensor, stacked: Tensor | None) -> None:
        record = AttentionRecord(
            name=self.record_name,
            stage=self.stage,
            block=self.block,
            scales=z.detach().float(),
            sources=list(self.source_labels),
        )
        if stacked is not None:
            weights = self.scale_weights.detach().float()
            record.scale_weights = weights
            record.contributions = stacked.detach().float() * weights
        self.recorder[self.record_name] = record


def multiply(x: Tensor, z: Tensor, inplace: bool) -> Tensor:
    """``x * z``, written into ``x`` when allowed and no gradient needs the original ``x``.

    On CPU a fresh output map costs several times the multiply itself (page faults of
    the new allocation), so inference gates in place.
    """
    if inplace and not (torch.is_grad_enabled() and (x.requires_grad or z.requires_grad)):
        return x.mul_(z)
    return x * z


def _hidden(channels: int, reduction: int) -> int:
    return max(channels // reduction, 4)


class SE(ChannelAttention):
    """Squeeze-and-Excitation: GAP -> FC(C/16) -> ReLU -> FC(C) -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16, **kwargs):
        super().__init__(channels, **kwargs)
        self.fc1 = nn.Linear(channels, _hidden(channels, reduction))
        self.fc2 = nn.Linear(_hidden(channels, reduction), channels)

    def excite(self, s: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(s)))


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel ``k = |log2(C)/gamma + b/gamma|``, made odd."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


class ECA(ChannelAttention):
    """Efficient Channel Attention: GAP -> conv1d over channels (adaptive k) -> sigmoid."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(channels, **kwargs)
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def excite(self, s: Tensor) -> Tensor:
        return self.conv(s[:, None, :])[:, 0, :]


class SRM(ChannelAttention):
    """Style-based Recalibration: (mean, std) pooling -> channel-wise FC -> BN -> sigmoid."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(channels, **kwargs)
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = nn.BatchNorm1d(channels)

    @staticmethod
    def pool(x: Tensor) -> Tensor:
        # Moments accumulated in float32 (bf16/fp16 variances lose too much precision), by
        # reductions that allocate no copy of x: several times faster than torch.var_mean on CPU.
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        mean = x.mean((2, 3), dtype=acc)
        mean_square = torch.linalg.vector_norm(x, dim=(2, 3), dtype=acc).square() / (x.shape[2] * x.shape[3])
        std = (mean_square - mean.square()).clamp_min(0).add(1e-5).sqrt()
        return torch.stack([mean, std], dim=-1).to(x.dtype)

    @classmethod
    def pool_source(cls, x: Tensor) -> Tensor:
        # EMCA pools up to 14 preceding maps: one fused moment reduction each, not ten ops
        # (fewer kernel launches; pool keeps its CPU-tuned reductions for the gated maps).
        if x.dtype not in (torch.float32, torch.float64):  # half types: float32 moments
            return cls.pool(x)
        var, mean = torch.var_mean(x, dim=(2, 3), correction=0)
        return torch.stack([mean, var.add_(1e-5).sqrt_()], dim=-1)

    def excite(self, s: Tensor) -> Tensor:
        return self.bn((s * self.cfc.to(s.dtype)).sum(-1))


class CBAM(ChannelAttention):
    """CBAM: channel gate (avg+max pooled, shared MLP), then a 7x7 spatial gate.

    The channel scales ``z`` are what recording reports; the spatial gate follows them.
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7, **kwargs):
        super().__init__(channels, **kwargs)
        self.fc1 = nn.Linear(channels, _hidden(channels, reduction))
        self.fc2 = nn.Linear(_hidden(channels, reduction), channels)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)

    @staticmethod
    def pool(x: Tensor) -> Tensor:
        return torch.stack([x.mean((2, 3)), x.amax((2, 3))], dim=-1)

    def excite(self, s: Tensor) -> Tensor:
        mlp = self.fc2(F.relu(self.fc1(s.transpose(1, 2))))  # [N, 2, C]
        return mlp.sum(1)

    def forward(self, x: Tensor, context=(), inplace: bool = False) -> Tensor:
        x = self.apply_gate(x, self.scales(x, context), inplace)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return multiply(x, torch.sigmoid(self.spatial(pooled)), inplace)


ATTENTIONS: dict[str, type[ChannelAttention]] = {"se": SE, "eca": ECA, "srm": SRM, "cbam": CBAM}
"""Attention types by name. EMCA variants (``emca_<name>``) exist for those in ``EMCA_BASES``."""

EMCA_BASES = ("se", "eca", "srm")
