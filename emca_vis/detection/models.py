"""Detectors by name: torchvision's Faster R-CNN, Mask R-CNN and RetinaNet over any emca-vis ResNet.

    model = create_detector("fasterrcnn_resnet50_emca_eca_fpn", num_classes=80)

Names are ``{family}_{backbone}_fpn``: ``family`` one of :data:`FAMILIES`, ``backbone`` any
registered model name (``resnet50``, ``resnet50_se``, ``resnet18_emca_eca``, ...). The
detectors are torchvision's own classes; only the backbone is ours, so the recipe is
torchvision's ``*_resnet50_fpn`` (v1) one:

- **FPN**: R-CNNs take ``layer1..layer4`` plus a max-pooled level (P2-P6), RetinaNet takes
  ``layer2..layer4`` plus P6/P7 computed from P5. State-dict keys are torchvision's
  (``backbone.body.layer1.0.conv1.weight``, ``backbone.fpn...``), with the attention
  modules as ``...attn`` children of their blocks.
- **Frozen BatchNorm** (``frozen_bn``, default on when the backbone starts from a
  classification checkpoint, as torchvision does with pretrained weights): every
  BatchNorm of the backbone becomes a fixed affine map with the checkpoint's statistics,
  *including those inside attention modules* (SRM's ``BatchNorm1d`` over its style
  descriptor): a detection batch of 2-8 images per GPU gives noisier statistics than the
  classification run did, and the attention was trained against the checkpoint's. From
  scratch (no checkpoint) the backbone keeps trainable BatchNorm, as torchvision does.
- **Trainable stages** (``trainable_layers`` 0-5, default 3 with a checkpoint and 5
  without, as torchvision): the stem and the first stages are frozen, counting from
  ``layer4`` down; an attention module (EMCA's per-scale weights included) follows the
  stage of its block.
- Labels are ``1..num_classes`` for every family, 0 being the background.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from ..data import IMAGENET_MEAN, IMAGENET_STD
from ..models import create_model, load_backbone
from ..models.resnet import ResNet, stage_widths
from .names import parse_detector_name

FAMILIES = {"fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN, "retinanet": RetinaNet}
_TRAINABLE = ("layer4", "layer3", "layer2", "layer1", "conv1")


class FrozenBatchNorm1d(FrozenBatchNorm2d):
    """torchvision's frozen BatchNorm for ``[N, C]`` and ``[N, C, L]`` inputs (SRM's descriptor BN)."""

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.reshape(shape) + bias.reshape(shape)


def freeze_batchnorm(module: nn.Module) -> int:
    """Replace every BatchNorm in ``module`` by a frozen copy (same statistics); returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            frozen = (FrozenBatchNorm2d if isinstance(child, nn.BatchNorm2d) else FrozenBatchNorm1d)(
                child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
            count += 1
        else:
            count += freeze_batchnorm(child)
    return count


class ResNetFPN(nn.Module):
    """An emca-vis ResNet's stage outputs through a feature pyramid (torchvision's
    ``BackboneWithFPN``, whose layer getter cannot pass EMCA's earlier descriptors)."""

    def __init__(self, body: ResNet, returned_layers: list[int], out_channels: int, extra_blocks: nn.Module):
        super().__init__()
        expansion = type(body.layer1[0]).expansion
        widths = [w * expansion for w in stage_widths(body.config["width"])]
        body.fc, body.avgpool = nn.Identity(), nn.Identity()  # the classifier is not part of a detector
        self.body = body
        self.returned_layers = returned_layers
        self.fpn = FeaturePyramidNetwork([widths[i - 1] for i in returned_layers], out_channels, extra_blocks)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        stages = self.body.forward_stages(x)
        return self.fpn(OrderedDict((str(i), stages[layer - 1]) for i, layer in enumerate(self.returned_layers)))


def create_detector(name: str, num_classes: int, *, min_size: int = 800, max_size: int = 1333,
                    trainable_layers: int | None = None, frozen_bn: bool | None = None, fpn_channels: int = 256,
                    representation_size: int = 1024, box_batch_size_per_image: int = 512,
                    proposals: int = 1000, mask_channels: int = 256, backbone_weights: dict[str, Tensor] | None = None,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, **model_kwargs) -> nn.Module:
    """Build a detector (see the module docstring for names and the recipe).

    Args:
        num_classes: object classes, background not counted (labels ``1..num_classes``).
        min_size, max_size: torchvision's resize: shorter side to ``min_size`` unless the
            longer one would pass ``max_size``.
        trainable_layers: backbone stages trained, counting from ``layer4`` (5: all and the stem).
        frozen_bn: BatchNorm of the backbone frozen (attention modules' too).
        fpn_channels: channels of the pyramid and the heads (256 in torchvision).
        representation_size: R-CNN box head's hidden width (torchvision: 1024).
        box_batch_size_per_image: R-CNN proposals sampled per training image (torchvision: 512).
        proposals: R-CNN proposals kept after NMS at test time, twice as many in training
            (torchvision: 1000 and 2000).
        mask_channels: width of Mask R-CNN's mask head, its four convolutions and the
            up-sampling (torchvision: 256). With ``representation_size``,
            ``box_batch_size_per_image`` and ``proposals`` what makes small detectors cheap on
            a CPU: at 256 the mask head costs some 0.4 GMACs per positive RoI, far more than a
            narrow backbone at 128 px.
        backbone_weights: a classification state dict (emca-vis or torchvision keys) for the backbone.
        model_kwargs: ``create_model`` options of the backbone (``width``, ``placement``, ...).
    """
    family, backbone_name = parse_detector_name(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if not 8 <= min_size <= max_size:
        raise ValueError(f"min_size={min_size} and max_size={max_size}: need 8 <= min_size <= max_size")
    pretrained = backbone_weights is not None
    trainable_layers = (3 if pretrained else 5) if trainable_layers is None else trainable_layers
    frozen_bn = pretrained if frozen_bn is None else frozen_bn
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    for option, value in (("fpn_channels", fpn_channels), ("representation_size", representation_size),
                          ("box_batch_size_per_image", box_batch_size_per_image), ("proposals", proposals),
                          ("mask_channels", mask_channels)):
        if value < 1:
            raise ValueError(f"{option} must be positive, got {value}")

    body = create_model(backbone_name, **model_kwargs)
    if pretrained:
        load_backbone(body, backbone_weights, skip_head=True)
    if frozen_bn:
        freeze_batchnorm(body)
    trained = list(_TRAINABLE[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for param_name, parameter in body.named_parameters():
        if not param_name.startswith(tuple(trained)):
            parameter.requires_grad_(False)

    if family == "retinanet":
        backbone = ResNetFPN(body, [2, 3, 4], fpn_channels, LastLevelP6P7(fpn_channels, fpn_channels))
    else:
        backbone = ResNetFPN(body, [1, 2, 3, 4], fpn_channels, LastLevelMaxPool())
    common = {"min_size": min_size, "max_size": max_size, "image_mean": list(mean), "image_std": list(std)}
    if family == "retinanet":
        model = RetinaNet(backbone, num_classes=num_classes + 1, **common)
    else:
        resolution = 7  # torchvision's RoIAlign output for the box head
        heads = {"box_head": TwoMLPHead(fpn_channels * resolution ** 2, representation_size),
                 "box_predictor": FastRCNNPredictor(representation_size, num_classes + 1)}
        if family == "maskrcnn":  # torchvision's layout: four 3x3 convolutions, then up-sampling
            heads["mask_head"] = MaskRCNNHeads(fpn_channels, [mask_channels] * 4, 1)
            heads["mask_predictor"] = MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1)
        model = FAMILIES[family](
            backbone, num_classes=None, **heads,
            box_batch_size_per_image=box_batch_size_per_image, rpn_pre_nms_top_n_train=2 * proposals,
            rpn_post_nms_top_n_train=2 * proposals, rpn_pre_nms_top_n_test=proposals,
            rpn_post_nms_top_n_test=proposals, **common)
    options = {k: v for k, v in body.config.items() if k not in ("name", "num_classes")}
    model.config = {"name": name, "num_classes": num_classes, **options}
    # What a checkpoint of this model records besides config (see emca_vis.checkpoint).
    model.metadata = {"task": "detection", "mean": list(mean), "std": list(std), "input_size": min(min_size, 2048),
                      "detector": {"min_size": min_size, "max_size": max_size, "trainable_layers": trainable_layers,
                                   "frozen_bn": frozen_bn, "fpn_channels": fpn_channels,
                                   "representation_size": representation_size,
                                   "box_batch_size_per_image": box_batch_size_per_image, "proposals": proposals,
                                   "mask_channels": mask_channels}}
    return model
