"""Channel attention modules (SE, ECA, SRM, CBAM), EMCA's multi-scale aggregation and the
module of the EMCA authors' released code (:class:`ReleasedEMCA`).

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
        gate: ``"mul"`` (``x * z``, the paper) or ``"one_plus"`` (``x * (1 + z)``, the gate
            of the authors' released code; their model differs in more than the gate, see
            :class:`ReleasedEMCA`).
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
        # Set by ResNet when later modules read this block's residual branch (the released
        # EMCA's sources): the last forward's ``pool(x)`` is then left in ``pooled``.
        self.keep_pooled = False
        self.pooled: Tensor | None = None
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
        if self.keep_pooled:
            self.pooled = s
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


def _hidden(channels: int, reduction: int, divisor: int | None = None) -> int:
    """Hidden width of an SE-style MLP: ``C / r``, at least 4; or, with ``divisor``, rounded
    to the nearest multiple of it and at least ``divisor`` (timm's ``make_divisible``, which
    gives its SE-ResNet-18/34 8 hidden units where ``C / 16`` is 4)."""
    if divisor is None:
        return max(channels // reduction, 4)
    return max(divisor, int(channels / reduction + divisor / 2) // divisor * divisor)


class SE(ChannelAttention):
    """Squeeze-and-Excitation: GAP -> FC(C/16) -> ReLU -> FC(C) -> sigmoid.

    ``divisor``: round the hidden width as timm does (8 for timm's ``seresnet*``);
    ``bias``: whether the FC layers have biases.
    """

    def __init__(self, channels: int, reduction: int = 16, divisor: int | None = None, bias: bool = True,
                 **kwargs):
        super().__init__(channels, **kwargs)
        hidden = _hidden(channels, reduction, divisor)
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, channels, bias=bias)

    def excite(self, s: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(s)))


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel ``k = |log2(C)/gamma + b/gamma|``, made odd."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


def _channel_conv(k: int) -> nn.Conv1d:
    if k < 1 or k % 2 == 0:
        raise ValueError(f"ECA kernel size must be a positive odd number, got {k}")
    return nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)


class ECA(ChannelAttention):
    """Efficient Channel Attention: GAP -> conv1d over channels -> sigmoid.

    ``kernel_size``: the conv's k; default the adaptive formula of :func:`eca_kernel_size`.
    (ECA-Net's released ResNets fix k per stage instead, e.g. 3, 5, 5, 7 for ResNet-50.)
    """

    def __init__(self, channels: int, kernel_size: int | None = None, **kwargs):
        super().__init__(channels, **kwargs)
        self.conv = _channel_conv(kernel_size or eca_kernel_size(channels))

    def excite(self, s: Tensor) -> Tensor:
        return self.conv(s[:, None, :])[:, 0, :]


SRM_STDS = ("biased", "unbiased")


def style_pool(x: Tensor, std: str = "biased") -> Tensor:
    """SRM's style pooling ``[N, C, 2]``: per-channel mean and ``sqrt(var + 1e-5)``.

    ``std="biased"`` divides the variance by ``H*W`` (the SRM paper's formula);
    ``"unbiased"`` by ``H*W - 1`` (``Tensor.var``, what the official SRM code computes;
    a 1x1 map, where that is 0/0 there, gets the biased variance here).
    """
    # Moments accumulated in at least float32 (bf16/fp16 variances lose too much precision), by
    # reductions that allocate no copy of x: several times faster than torch.var_mean on CPU.
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # not promote_types: an ATen op
    n = x.shape[2] * x.shape[3]
    if std == "unbiased":
        # Two passes, as Tensor.var in the official code: imported weights then give its outputs
        # to float32 rounding, where the one-pass moments below can differ by cancellation.
        var, mean = torch.var_mean(x.to(dtype), dim=(2, 3), correction=1 if n > 1 else 0)
    else:
        mean = x.mean((2, 3), dtype=dtype)
        mean_square = torch.linalg.vector_norm(x, dim=(2, 3), dtype=dtype).square() / n
        var = (mean_square - mean.square()).clamp_min(0)
    return torch.stack([mean, var.add(1e-5).sqrt()], dim=-1).to(x.dtype)


class SRM(ChannelAttention):
    """Style-based Recalibration: (mean, std) pooling -> channel-wise FC -> BN -> sigmoid.

    ``std``: ``"biased"`` or ``"unbiased"`` variance in the pooling (:func:`style_pool`).
    """

    def __init__(self, channels: int, std: str = "biased", **kwargs):
        super().__init__(channels, **kwargs)
        if std not in SRM_STDS:
            raise ValueError(f"unknown SRM std {std!r}; choose one of {', '.join(SRM_STDS)}")
        self.std = std
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = nn.BatchNorm1d(channels)

    def pool(self, x: Tensor) -> Tensor:
        return style_pool(x, self.std)

    @staticmethod
    def pool_source(x: Tensor, std: str = "biased") -> Tensor:
        # EMCA pools up to 14 preceding maps: one fused moment reduction each, not ten ops
        # (fewer kernel launches; style_pool keeps its CPU-tuned reductions for the gated maps).
        if x.dtype not in (torch.float32, torch.float64):  # half types: float32 moments
            return style_pool(x, std)
        unbiased = std == "unbiased" and x.shape[2] * x.shape[3] > 1
        var, mean = torch.var_mean(x, dim=(2, 3), correction=1 if unbiased else 0)
        return torch.stack([mean, var.add_(1e-5).sqrt_()], dim=-1)

    def excite(self, s: Tensor) -> Tensor:
        return self.bn((s * self.cfc.to(s.dtype)).sum(-1))


CBAM_SPATIALS = ("paper", "official")


class CBAM(ChannelAttention):
    """CBAM: channel gate (avg+max pooled, shared MLP), then a 7x7 spatial gate.

    ``spatial``: ``"paper"`` computes the CBAM paper's ``sigmoid(conv([mean, max]))``;
    ``"official"`` what its authors' code computes, ``sigmoid(BN(conv([max, mean])))``
    (BatchNorm with momentum 0.01, as there). The channel scales ``z`` are what recording
    reports; the spatial gate follows them.
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7, spatial: str = "paper",
                 **kwargs):
        super().__init__(channels, **kwargs)
        if spatial not in CBAM_SPATIALS:
            raise ValueError(f"unknown CBAM spatial branch {spatial!r}; choose one of {', '.join(CBAM_SPATIALS)}")
        self.spatial_branch = spatial
        self.fc1 = nn.Linear(channels, _hidden(channels, reduction))
        self.fc2 = nn.Linear(_hidden(channels, reduction), channels)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        if spatial == "official":
            self.spatial_bn = nn.BatchNorm2d(1, momentum=0.01)

    @staticmethod
    def pool(x: Tensor) -> Tensor:
        return torch.stack([x.mean((2, 3)), x.amax((2, 3))], dim=-1)

    def excite(self, s: Tensor) -> Tensor:
        mlp = self.fc2(F.relu(self.fc1(s.transpose(1, 2))))  # [N, 2, C]
        return mlp.sum(1)

    def spatial_scales(self, x: Tensor) -> Tensor:
        """The spatial gate ``[N, 1, H, W]`` of the channel-gated map ``x``."""
        mean, peak = x.mean(1, keepdim=True), x.amax(1, keepdim=True)
        if self.spatial_branch == "paper":
            return torch.sigmoid(self.spatial(torch.cat([mean, peak], dim=1)))
        return torch.sigmoid(self.spatial_bn(self.spatial(torch.cat([peak, mean], dim=1))))

    def forward(self, x: Tensor, context=(), inplace: bool = False) -> Tensor:
        x = self.apply_gate(x, self.scales(x, context), inplace)
        return multiply(x, self.spatial_scales(x), inplace)


class ReleasedEMCA(ECA):
    """The multi-scale module of the EMCA authors' released code (``eca_resnet_multi_scale.py``).

    It is not the paper's module. With ``s = GAP(x)`` of the current residual branch and
    ``S = [s, align(s_1), ..., align(s_R-1)]`` the descriptors of its sources::

        local  = sigmoid(conv_k(s))                        # the ECA kernel ("conv")
        global = sigmoid(conv'_k(relu(sum_r w_r * S_r)))   # a second ECA kernel ("global_conv")
        z      = sigmoid(a * local + b * global)           # the fusion conv (kernel 2, stride 2)
        out    = x * (1 + z)

    ``scale_weights`` are the ``w_r`` (current map first, as in every EMCA module here;
    the released code stacks it last) and ``fusion_weights`` are ``(a, b)``. The sources
    are the stem output and the residual branches (before gate and addition) of the last
    block of every earlier stage, see ``create_model``'s ``*_emca_eca_released`` models.
    """

    def __init__(self, channels: int, sources: tuple[tuple[str, int], ...], kernel_size: int | None = None):
        if not sources:
            raise ValueError("the released EMCA module aggregates at least one preceding map")
        super().__init__(channels, kernel_size=kernel_size, sources=sources, gate="one_plus")
        self.global_conv = _channel_conv(self.conv.kernel_size[0])
        self.fusion_weights = nn.Parameter(torch.tensor([1.0, 1.0]))

    def scales(self, x: Tensor, context: list[Tensor] | tuple[Tensor, ...] = ()) -> Tensor:
        if len(context) != len(self.source_labels) - 1:
            raise ValueError(
                f"{self.record_name or type(self).__name__} aggregates {len(self.source_labels) - 1} "
                f"preceding maps but got {len(context)}; run it through the full model's forward"
            )
        s = self.pool(x)
        if self.keep_pooled:
            self.pooled = s
        stacked = self.aggregate(s, context)
        local = torch.sigmoid(self.conv(s[:, None, :]))
        aggregated = F.relu(stacked @ self.scale_weights.to(stacked.dtype))
        wide = torch.sigmoid(self.global_conv(aggregated[:, None, :]))
        a, b = self.fusion_weights.to(s.dtype)
        z = torch.sigmoid(a * local + b * wide)[:, 0, :]
        if self.recorder is not None:
            self._record(z, stacked)
        return z


ATTENTIONS: dict[str, type[ChannelAttention]] = {"se": SE, "eca": ECA, "srm": SRM, "cbam": CBAM}
"""Attention types by name. EMCA variants (``emca_<name>``) exist for those in ``EMCA_BASES``."""

EMCA_BASES = ("se", "eca", "srm")
