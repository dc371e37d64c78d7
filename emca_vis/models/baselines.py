"""The rest of the paper's comparison: FcaNet, BAM, EPSANet, SANet and A2-Net.

Each follows its paper and its authors' released code (module layout and parameter
names too, so their checkpoints map onto these modules key for key):

* FcaNet (cfzd/FcaNet): SE whose squeeze is multi-spectral DCT pooling, the top-16
  frequencies of a 7x7 grid, fixed DCT filters as buffers;
* BAM (Jongchan/attention-module): ``x * (1 + sigmoid(channel * spatial))`` with a
  dilated-conv spatial branch, after the last block of stages 1-3;
* EPSANet (murufeng/EPSANet): the bottleneck's 3x3 conv becomes the PSA module
  (grouped convs with kernels 3, 5, 7, 9, one SE shared by the scales, softmax across them);
* SANet (wofmanaf/SA-Net): shuffle attention, half of each channel group gated by its
  mean, half by its group-normalised map, then a channel shuffle;
* A2-Net (Chen et al., NeurIPS 2018, no released ImageNet code): double attention,
  gather with a spatial softmax, distribute with a softmax over the gathered descriptors,
  added to the block output.

All are :class:`ChannelAttention` subclasses so that the registry, recording and
checkpoint code handle them like SE; those with per-channel scales record them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import SE, AttentionRecord, ChannelAttention, _hidden, multiply
from .resnet import Bottleneck

# FcaNet's top-16 frequencies on a 7x7 grid (its ablation's ranking), as (u, v) pairs.
FCA_TOP16 = ((0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
             (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2))
# The DCT grid of each stage is the map size at 224 px (FcaNet's c2wh).
FCA_SIZES = {1: 56, 2: 28, 3: 14, 4: 7}


def _dct_basis(position: int, frequency: int, size: int) -> float:
    value = math.cos(math.pi * frequency * (position + 0.5) / size) / math.sqrt(size)
    return value if frequency == 0 else value * math.sqrt(2)


def dct_filters(channels: int, size: int, frequencies=FCA_TOP16) -> Tensor:
    """``[C, size, size]``: channel group ``i`` (``C / len(frequencies)`` channels) gets the
    2D DCT basis of frequency ``i``, scaled from the 7x7 grid to ``size``. Maps of fewer
    channels than frequencies (narrow test models) keep the top ``gcd(16, C)``."""
    frequencies = frequencies[:math.gcd(len(frequencies), channels)]
    step = size // 7
    filters = torch.zeros(channels, size, size)
    part = channels // len(frequencies)
    for i, (u, v) in enumerate(frequencies):
        # Products in float64, rounded once to float32: the released code's filters bit for bit.
        row = torch.tensor([_dct_basis(t, u * step, size) for t in range(size)], dtype=torch.float64)
        col = torch.tensor([_dct_basis(t, v * step, size) for t in range(size)], dtype=torch.float64)
        filters[i * part:(i + 1) * part] = row[:, None] * col[None, :]
    return filters


class FCA(SE):
    """FcaNet's multi-spectral channel attention: SE's excitation on DCT-pooled descriptors.

    The FC layers are SE's own, so the parameters are exactly SE's; the DCT filters are a
    buffer. Maps of another size than the DCT grid are average-pooled to it first, as the
    released code does for detection inputs. ``bias=False`` drops the FC biases as the
    released code (``nn.Linear(..., bias=False)``) does; its checkpoints need that.
    """

    def __init__(self, channels: int, dct_size: int = 7, reduction: int = 16, bias: bool = True, **kwargs):
        super().__init__(channels, reduction=reduction, bias=bias, **kwargs)
        self.dct_size = dct_size
        self.register_buffer("dct", dct_filters(channels, dct_size))

    def pool(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.dct_size, self.dct_size):
            x = F.adaptive_avg_pool2d(x, self.dct_size)
        return torch.einsum("nchw,chw->nc", x, self.dct.to(x.dtype))


class BAM(ChannelAttention):
    """Bottleneck Attention Module, applied to a stage's output (after the residual sum).

    ``out = x * (1 + sigmoid(channel(x) * spatial(x)))``: the channel branch is an MLP with
    batch norm on the pooled map, the spatial branch a 1x1 reduction, two 3x3 convs with
    dilation 4 and a 1x1 conv to one map. Recorded scales are each channel's mean of
    ``sigmoid(...)`` over positions (the gate is ``1 +`` that).
    """

    after_residual = True

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, **kwargs):
        super().__init__(channels, **kwargs)
        hidden = _hidden(channels, reduction)
        self.channel_att = nn.Module()
        self.channel_att.gate_c = nn.Sequential()
        gate_c = self.channel_att.gate_c
        gate_c.add_module("gate_c_fc_0", nn.Linear(channels, hidden))
        gate_c.add_module("gate_c_bn_1", nn.BatchNorm1d(hidden))
        gate_c.add_module("gate_c_relu_1", nn.ReLU())
        gate_c.add_module("gate_c_fc_final", nn.Linear(hidden, channels))
        self.spatial_att = nn.Module()
        self.spatial_att.gate_s = nn.Sequential()
        gate_s = self.spatial_att.gate_s
        gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(channels, hidden, 1))
        gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(hidden))
        gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(2):
            gate_s.add_module(f"gate_s_conv_di_{i}", nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation))
            gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden))
            gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        gate_s.add_module("gate_s_conv_final", nn.Conv2d(hidden, 1, 1))

    def forward(self, x: Tensor, context=(), inplace: bool = False) -> Tensor:
        channel = self.channel_att.gate_c(x.mean((2, 3)))[:, :, None, None]
        attention = torch.sigmoid(channel * self.spatial_att.gate_s(x))
        if self.recorder is not None:
            _store(self, attention.mean((2, 3)))
        # The sigmoid's output is its own backward's input: add 1 in place only without autograd.
        return multiply(x, attention + 1 if torch.is_grad_enabled() else attention.add_(1), inplace)


def _store(module: ChannelAttention, scales: Tensor, record_type=AttentionRecord, **extra) -> None:
    """Record what ``module`` computed (only called while recording is on)."""
    module.recorder[module.record_name] = record_type(
        name=module.record_name, stage=module.stage, block=module.block, scales=scales.detach().float(),
        sources=list(module.source_labels), **extra)


@dataclass
class ScaleSoftmaxRecord(AttentionRecord):
    """EPSANet's record: ``scales`` are the softmax weights in output channel order
    ``[N, C]``; ``scale_softmax`` the same weights per scale, ``[N, C / 4, 4]`` (kernels
    in ``kernels`` order, summing to 1 over the last axis)."""

    scale_softmax: Tensor | None = None
    kernels: tuple[int, ...] = ()


class PSA(ChannelAttention):
    """EPSANet's pyramid split attention, in place of the bottleneck's 3x3 conv.

    Four grouped convs (kernels 3, 5, 7, 9; groups 1, 4, 8, 16) each give ``C / 4``
    channels; one SE module (shared by the four scales) weighs each, the weights are
    softmax-normalised across the scales, and the weighted maps are concatenated in the
    released code's order (largest kernel first). Groups that do not divide the channels
    of a narrow test model shrink to their greatest common divisor.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, kernels=(3, 5, 7, 9), groups=(1, 4, 8, 16)):
        if planes % len(kernels):
            raise ValueError(f"PSA splits {planes} channels into {len(kernels)} scales; they do not divide")
        super().__init__(planes)
        split = planes // len(kernels)
        self.kernels = tuple(kernels)
        for i, (k, g) in enumerate(zip(kernels, groups), start=1):
            g = math.gcd(g, split, inplanes)
            self.add_module(f"conv_{i}", nn.Conv2d(inplanes, split, k, stride, padding=k // 2, groups=g, bias=False))
        hidden = max(split // 16, 1)
        self.se = nn.Module()
        self.se.fc1 = nn.Conv2d(split, hidden, 1)
        self.se.fc2 = nn.Conv2d(hidden, split, 1)

    def forward(self, x: Tensor, context=(), inplace: bool = False) -> Tensor:
        feats = [getattr(self, f"conv_{i}")(x) for i in range(1, len(self.kernels) + 1)]
        pooled = torch.stack([f.mean((2, 3)) for f in feats], dim=1)[..., None, None]  # [N, 4, C/4, 1, 1]
        weights = torch.sigmoid(self.se.fc2(F.relu(self.se.fc1(pooled.flatten(0, 1))))).view_as(pooled)
        weights = weights.softmax(dim=1)
        if self.recorder is not None:
            per_scale = weights[..., 0, 0].detach().float()  # [N, 4, C/4]
            _store(self, per_scale.flip(1).flatten(1), record_type=ScaleSoftmaxRecord,
                       scale_softmax=per_scale.transpose(1, 2), kernels=self.kernels)
        return torch.cat([feats[i] * weights[:, i] for i in reversed(range(len(feats)))], dim=1)


class PSABottleneck(Bottleneck):
    """EPSANet's block: torchvision's bottleneck with PSA as ``conv2``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attn: ChannelAttention | None = None):
        super().__init__(inplanes, planes, stride, downsample, attn)
        self.conv2 = PSA(planes, planes, stride)


class ShuffleAttention(ChannelAttention):
    """SANet's shuffle attention on a block's residual branch.

    The channels fall into ``G`` groups; in each, the first half is gated by
    ``sigmoid(cweight * mean + cbias)`` (per channel), the second by
    ``sigmoid(sweight * groupnorm(x) + sbias)`` (per position), and a channel shuffle of
    2 interleaves the halves. ``G`` is 64, reduced to a divisor of ``C / 2`` for narrow
    maps (64 channels: 32). Recorded scales are each input channel's gate, averaged over
    positions for the spatial half, in input channel order.
    """

    def __init__(self, channels: int, groups: int = 64, **kwargs):
        super().__init__(channels, **kwargs)
        if channels % 2:
            raise ValueError(f"shuffle attention needs an even number of channels, got {channels}")
        self.groups = math.gcd(groups, channels // 2)
        half = channels // (2 * self.groups)
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.gn = nn.GroupNorm(half, half)

    def forward(self, x: Tensor, context=(), inplace: bool = False) -> Tensor:
        n, c, h, w = x.shape
        grouped = x.reshape(n * self.groups, c // self.groups, h, w)
        x_channel, x_spatial = grouped.chunk(2, dim=1)
        channel_gate = torch.sigmoid(self.cweight * x_channel.mean((2, 3), keepdim=True) + self.cbias)
        spatial_gate = torch.sigmoid(self.sweight * self.gn(x_spatial) + self.sbias)
        if self.recorder is not None:
            scales = torch.cat([channel_gate.flatten(1), spatial_gate.mean((2, 3))], dim=1).reshape(n, c)
            _store(self, scales)
        out = torch.cat([x_channel * channel_gate, x_spatial * spatial_gate], dim=1).reshape(n, 2, c // 2, h, w)
        return out.transpose(1, 2).reshape(n, c, h, w)  # channel shuffle with 2 groups


class DoubleAttention(ChannelAttention):
    """A2-Net's double-attention block, added to a block's output: ``x + conv(Z)``.

    Gather: ``c_n`` attention maps (softmax over positions) pool ``c_m`` feature maps into
    ``c_n`` global descriptors; distribute: at each position a softmax over the ``c_n``
    descriptors mixes them back. ``c_m = c_n = C / 2`` (the paper's ImageNet parameter and
    GFLOP counts). There are no per-channel scales, so nothing is recorded.
    """

    after_residual = True

    def __init__(self, channels: int, reduction: int = 2, **kwargs):
        super().__init__(channels, **kwargs)
        inner = max(channels // reduction, 1)
        self.convA = nn.Conv2d(channels, inner, 1)
        self.convB = nn.Conv2d(channels, inner, 1)
        self.convV = nn.Conv2d(channels, inner, 1)
        self.conv_reconstruct = nn.Conv2d(inner, channels, 1)

    def forward(self, x: Tensor, context=(), inplace: bool = False) -> Tensor:
        features = self.convA(x).flatten(2)  # [N, c_m, HW]
        gather = self.convB(x).flatten(2).softmax(dim=-1)  # [N, c_n, HW]
        distribute = self.convV(x).flatten(2).softmax(dim=1)  # [N, c_n, HW]
        descriptors = features @ gather.transpose(1, 2)  # [N, c_m, c_n]
        z = (descriptors @ distribute).view(x.shape[0], -1, *x.shape[2:])
        update = self.conv_reconstruct(z)
        if inplace and not (torch.is_grad_enabled() and (x.requires_grad or update.requires_grad)):
            return x.add_(update)
        return x + update


@dataclass(frozen=True)
class Baseline:
    """How the registry builds one of these models.

    ``placement`` is where its paper puts the modules when it is fixed (``None``: the
    ``placement`` option applies as for SE); ``bottleneck_only`` refuses basic-block depths.
    """

    label: str
    module: type[ChannelAttention] | None
    placement: str | None = None
    bottleneck_only: bool = False
    block: type[Bottleneck] | None = None

    def wants(self, stage: int, index: int, blocks: int, placement: str) -> bool:
        if self.placement == "stage_ends":  # BAM: after stages 1-3
            return stage <= 3 and index == blocks - 1
        if self.placement == "alternate_2_3":  # A2-Net: every other block of stages 2 and 3
            return stage in (2, 3) and index % 2 == 0
        return placement == "all" or (placement == "first" and index == 0) or (
            placement == "last" and index == blocks - 1)

    def build(self, channels: int, stage: int, fca_bias: bool = True, **kwargs) -> ChannelAttention:
        if self.module is FCA:
            return FCA(channels, dct_size=FCA_SIZES[stage], bias=fca_bias, **kwargs)
        return self.module(channels, **kwargs)


BASELINES: dict[str, Baseline] = {
    "fca": Baseline("FcaNet", FCA),
    "bam": Baseline("BAM", BAM, placement="stage_ends"),
    "epsa": Baseline("EPSANet", None, placement="all", bottleneck_only=True, block=PSABottleneck),
    "sa": Baseline("SANet", ShuffleAttention),
    "a2": Baseline("A2-Net", DoubleAttention, placement="alternate_2_3"),
}
"""The paper's other baselines by name suffix (``resnet50_fca``)."""
