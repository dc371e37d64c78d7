"""ResNet backbone with pluggable channel attention, in torchvision's exact layout.

Module names and state-dict keys are torchvision's (``conv1, bn1, relu, maxpool,
layer1..layer4, avgpool, fc``); an attention module, when a block has one, is the
block's ``attn`` child. Blocks return plain tensors. EMCA needs earlier block outputs:
``ResNet.forward`` pools the ones some module asks for as soon as they are produced
(EMCA needs only their descriptors, so no feature map lives longer than in the plain
network) and hands the descriptors to that block as an optional second argument, so
block outputs never become tuples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import ChannelAttention

STAGE_WIDTHS = (64, 128, 256, 512)

# An attention factory: (channels, stage, block, blocks_in_stage) -> module or None.
AttentionFactory = Callable[[int, int, int, int], "ChannelAttention | None"]


def stage_widths(width: float) -> list[int]:
    """Base channels of the four stages for a width multiplier."""
    return [max(1, round(w * width)) for w in STAGE_WIDTHS]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def _attend(attn: ChannelAttention | None, out: Tensor, identity: Tensor, relu: nn.Module, context) -> Tensor:
    """``relu(attn(out) + identity)``, or ``attn(relu(out + identity))`` for modules that
    act on the block's output. Either way the module gates a map the block owns."""
    if attn is not None and not attn.after_residual:
        out = attn(out, context, inplace=True)
    out = relu(out.add_(identity))
    if attn is not None and attn.after_residual:
        out = attn(out, context, inplace=True)
    return out


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attn: ChannelAttention | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.attn = attn

    def forward(self, x: Tensor, context: list[Tensor] | tuple[Tensor, ...] = ()) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return _attend(self.attn, out, identity, self.relu, context)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attn: ChannelAttention | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.attn = attn

    def forward(self, x: Tensor, context: list[Tensor] | tuple[Tensor, ...] = ()) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return _attend(self.attn, out, identity, self.relu, context)


class ResNet(nn.Module):
    """ResNet with optional attention per block.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
        attention: factory deciding the attention module of each block (or none).
        sources: for EMCA, ``{(stage, block): [(stage, block), ...]}``: which earlier
            outputs each module aggregates; ``(0, 0)`` is the stem.
        source_pool: how those outputs are pooled (the attention type's ``pool``).
        residual_sources: read a block's residual branch (before gate and addition, as pooled
            by its attention module) instead of its output; the stem is always its output.
            The EMCA authors' released code aggregates those.
        stem: ``"imagenet"`` (7x7/2 conv + maxpool) or ``"cifar"`` (3x3/1 conv, no pool).
        width: channel multiplier for small demo and test models.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], num_classes: int = 1000,
                 attention: AttentionFactory | None = None, stem: str = "imagenet", width: float = 1.0,
                 sources: dict[tuple[int, int], list[tuple[int, int]]] | None = None,
                 source_pool: Callable[[Tensor], Tensor] | None = None, residual_sources: bool = False):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"unknown stem {stem!r}; choose 'imagenet' or 'cifar'")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        widths = stage_widths(width)
        self.inplanes = widths[0]
        imagenet_stem = stem == "imagenet"
        self.conv1 = (nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False) if imagenet_stem
                      else conv3x3(3, self.inplanes))
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet_stem else nn.Identity()
        attention = attention or (lambda *args: None)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1, attention, stage=1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2, attention, stage=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2, attention, stage=3)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2, attention, stage=4)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

        self.sources = {key: list(value) for key, value in (sources or {}).items()}
        # Outputs some EMCA module reads, kept as pooled descriptors.
        self._kept = frozenset(key for wanted in self.sources.values() for key in wanted)
        self.source_pool = source_pool
        self.residual_sources = residual_sources
        if residual_sources:
            for stage, index in self._kept - {(0, 0)}:
                attn = self.stages[stage - 1][index].attn
                if attn is None:
                    raise ValueError(f"layer{stage}.{index} is an EMCA source but has no attention module "
                                     "to pool its residual branch")
                attn.keep_pooled = True
        self._init_weights()

    def _make_layer(self, block, planes: int, blocks: int, stride: int, attention: AttentionFactory,
                    stage: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        modules = []
        for index in range(blocks):
            attn = attention(planes * block.expansion, stage, index, blocks)
            if attn is not None:
                attn.record_name, attn.stage, attn.block = f"layer{stage}.{index}", stage, index
            modules.append(block(self.inplanes, planes, stride if index == 0 else 1,
                                 downsample if index == 0 else None, attn))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*modules)

    def _init_weights(self) -> None:
        # torchvision's initialisation, so plain models train exactly like torchvision's.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @property
    def stages(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The output of each stage, ``layer1`` to ``layer4`` (a feature pyramid's inputs)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        kept = {(0, 0): self.source_pool(x)} if (0, 0) in self._kept else {}
        outputs = []
        for stage, layer in enumerate(self.stages, start=1):
            for index, block in enumerate(layer):
                wanted = self.sources.get((stage, index))
                x = block(x, [kept[key] for key in wanted]) if wanted else block(x)
                if (stage, index) in self._kept:
                    if self.residual_sources:
                        kept[(stage, index)], block.attn.pooled = block.attn.pooled, None
                    else:
                        kept[(stage, index)] = self.source_pool(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))
