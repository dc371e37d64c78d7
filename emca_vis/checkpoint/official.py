"""State dicts of the attention papers' official code -> emca-vis models.

One converter per repository turns its key names into emca-vis's and says which model and
options compute what that code computes; :mod:`.formats` registers each as a ``--format``
(detector, converter, model names), its only list of formats.

| format | repository | their model | emca-vis model | options set |
|---|---|---|---|---|
| ``eca-net`` | BangguWu/ECANet (``models/eca_resnet.py``) | ``eca_resnet{d}`` | ``resnet{d}_eca`` | ``eca_kernels`` (its fixed k per stage, ``--ksize``) |
| ``cbam`` | Jongchan/attention-module (``MODELS/model_resnet.py``, ``cbam.py``) | ``ResidualNet(type, d, n, "CBAM")`` | ``resnet{d}_cbam`` | ``cbam_spatial="official"``; ``stem="cifar"`` for its CIFAR networks |
| ``srm`` | hyunjaelee410/style-based-recalibration-module | ``resnet(d, recalibration_type="srm" / "se")`` | ``resnet{d}_srm`` / ``resnet{d}_se`` | ``srm_std="unbiased"`` |
| ``emca-authors`` | eslambakr/EMCA (``Code/eca_resnet_multi_scale.py``) | ``eca_resnet{d}`` (``--arch resnet{d}``) | ``resnet{d}_emca_eca_released`` | ``eca_kernels`` |
| ``fcanet`` | cfzd/FcaNet (``model/fcanet.py``, ``model/layer.py``) | ``fcanet{d}``, ``fca{d}`` (hub) | ``resnet{d}_fca`` | ``fca_bias=False`` |
| ``bam`` | Jongchan/attention-module (``MODELS/model_resnet.py``, ``bam.py``) | ``ResidualNet(type, d, n, "BAM")`` | ``resnet{d}_bam`` | ``stem="cifar"`` for its CIFAR networks |
| ``epsanet`` | murufeng/EPSANet (``models/epsanet.py``) | ``epsanet{d}`` | ``resnet{d}_epsa`` | |
| ``sanet`` | wofmanaf/SA-Net (``models/sa_resnet.py``) | ``sa_resnet{d}`` | ``resnet{d}_sa`` | |

A2-Net has no format: its authors released no code, and no public implementation ships an
A2-ResNet (or weights) whose layout could be mapped.

The converters take the bare state dict (containers such as ``{"state_dict": ...}`` and
``module.`` prefixes already removed) and return a :class:`Converted`; keys they do not
know pass through unchanged, so loading names them. Tensors are not copied. They raise
``ValueError`` for layouts of those repositories that have no emca-vis model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from torch import Tensor

from ..models import DEPTHS


@dataclass
class Converted:
    """An official state dict in emca-vis's key names, and the model that computes the same.

    ``model`` is ``None`` when the blocks do not match a registered depth.
    """

    state_dict: dict[str, Tensor]
    attention: str
    options: dict = field(default_factory=dict)
    model: str | None = None


def infer_depth(keys: Collection[str]) -> int | None:
    """The ResNet depth of emca-vis-named keys (a state dict or its keys), from its blocks per
    stage and block type; ``None`` when they match no registered depth."""
    blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for k in keys if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        blocks.append(len(indices))
    bottleneck = any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in keys)
    for depth, (block, layers) in DEPTHS.items():
        if tuple(blocks) == layers and (block.expansion == 4) == bottleneck:
            return depth
    return None


def resnet_name(keys: Collection[str], attention: str) -> str | None:
    """``resnet{depth}_{attention}`` with the depth the emca-vis-named keys say, else ``None``."""
    depth = infer_depth(keys)
    return None if depth is None else f"resnet{depth}_{attention}"


def _named(state_dict: dict[str, Tensor], attention: str, options: dict) -> Converted:
    return Converted(state_dict, attention, options, resnet_name(state_dict, attention))


def _rename(state_dict: Mapping[str, Tensor], rules: list[tuple[str, str]]) -> dict[str, Tensor]:
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        out[key] = value
    return out


def _stage_kernels(state_dict: Mapping[str, Tensor], pattern: str, repository: str) -> list[int] | None:
    """The ECA kernel of each stage, read from the conv weights' shapes; all blocks of a stage must agree."""
    kernels: dict[int, set[int]] = {}
    for key, value in state_dict.items():
        if m := re.fullmatch(pattern, key):
            kernels.setdefault(int(m.group(1)), set()).add(int(value.shape[-1]))
    if sorted(kernels) != [1, 2, 3, 4]:
        return None
    for stage, sizes in kernels.items():
        if len(sizes) > 1:
            raise ValueError(f"{repository} state dict: stage {stage} mixes ECA kernel sizes {sorted(sizes)}")
    return [kernels[s].pop() for s in (1, 2, 3, 4)]


# --- ECA-Net: BangguWu/ECANet ----------------------------------------------------------------
# torchvision's ResNet with an ``eca`` child (AdaptiveAvgPool -> Conv1d(k, no bias) -> sigmoid,
# x * y) after the last BN of every block; k fixed per stage by ``--ksize`` (3557 for ResNet-50).

def eca_net(state_dict: Mapping[str, Tensor]) -> Converted:
    """ECA-Net's ``eca_resnet{18..152}``: ``layerS.B.eca.conv.weight`` -> ``layerS.B.attn.conv.weight``."""
    if any(_ECA_MOBILENET.match(k) for k in state_dict):
        raise ValueError("ECA-Net's eca_mobilenet_v2 weights (features.*.conv.*.conv); emca-vis builds ResNets only")
    out = _rename(state_dict, [(r"^(layer\d+\.\d+)\.eca\.conv\.", r"\1.attn.conv.")])
    kernels = _stage_kernels(out, r"layer(\d)\.\d+\.attn\.conv\.weight", "ECA-Net")
    return _named(out, "eca", {"eca_kernels": kernels} if kernels else {})


# --- CBAM: Jongchan/attention-module ---------------------------------------------------------
# ChannelGate: mlp = Sequential(Flatten, Linear(C, C/16), ReLU, Linear(C/16, C)) on the avg- and
# the max-pooled map, summed, sigmoid. SpatialGate: cat([max, mean] over channels) -> Conv2d 7x7
# (no bias) -> BatchNorm2d(1) -> sigmoid. Same place in the block as emca-vis's attention. Its CIFAR
# networks have a 3x3 stride-1 stem without max-pool and average-pool the 4x4 map of 32 px inputs.

def cbam(state_dict: Mapping[str, Tensor]) -> Converted:
    """CBAM's ``ResidualNet(..., att_type='CBAM')``: ``layerS.B.cbam.{ChannelGate,SpatialGate}.*``."""
    if any(re.match(r"bam\d\.", k) for k in state_dict):
        raise ValueError("attention-module state dict holds BAM modules (bam1..bam3), not CBAM")
    out = _rename(state_dict, [
        (r"^(layer\d+\.\d+)\.cbam\.ChannelGate\.mlp\.1\.", r"\1.attn.fc1."),
        (r"^(layer\d+\.\d+)\.cbam\.ChannelGate\.mlp\.3\.", r"\1.attn.fc2."),
        (r"^(layer\d+\.\d+)\.cbam\.SpatialGate\.spatial\.conv\.", r"\1.attn.spatial."),
        (r"^(layer\d+\.\d+)\.cbam\.SpatialGate\.spatial\.bn\.", r"\1.attn.spatial_bn."),
    ])
    cifar = "conv1.weight" in out and out["conv1.weight"].shape[-1] == 3
    return _named(out, "cbam", {"cbam_spatial": "official", **({"stem": "cifar"} if cifar else {})})


# --- SRM: hyunjaelee410/style-based-recalibration-module ------------------------------------------
# ``rclb`` child after the last BN: SRMLayer (mean and sqrt(unbiased var + 1e-5) -> cfc [C, 2] ->
# BatchNorm2d -> sigmoid) or SELayer (fc = Sequential(Linear(C, C/16), ReLU, Linear(C/16, C))).

def srm(state_dict: Mapping[str, Tensor]) -> Converted:
    """The SRM repository's ``resnet(depth, recalibration_type='srm' | 'se')``: ``layerS.B.rclb.*``."""
    if any(re.search(r"\.rclb\.conv\.", k) for k in state_dict):
        raise ValueError("SRM repository state dict holds GE modules (recalibration_type='ge'), "
                         "which have no emca-vis model")
    out = _rename(state_dict, [
        (r"^(layer\d+\.\d+)\.rclb\.cfc$", r"\1.attn.cfc"),
        (r"^(layer\d+\.\d+)\.rclb\.bn\.", r"\1.attn.bn."),
        (r"^(layer\d+\.\d+)\.rclb\.fc\.0\.", r"\1.attn.fc1."),
        (r"^(layer\d+\.\d+)\.rclb\.fc\.2\.", r"\1.attn.fc2."),
    ])
    attention = srm_attention(out)
    return _named(out, attention, {"srm_std": "unbiased"} if attention == "srm" else {})


def srm_attention(keys: Collection[str]) -> str:
    """``"se"`` or ``"srm"``: which of its modules a converted SRM-repository state dict holds."""
    return "se" if any(k.endswith(".attn.fc1.weight") for k in keys) else "srm"


# --- EMCA authors: eslambakr/EMCA ------------------------------------------------------------
# ``ECAResNet``: ``pre`` (stem), ``stage1..4`` of ``BasicResidualECABlock`` (``residual`` and
# ``shortcut`` Sequentials), ``linear``. Every block owns ECA_excitation_local, ..._global_stage,
# stage_in_fusion [1, 1, R] and out_fusion [1, 1, 2]; the first block of a stage uses only the
# local kernel (its other weights are never read by the forward, so they are dropped here).

_BASIC_RESIDUAL = {0: "conv1", 1: "bn1", 3: "conv2", 4: "bn2"}
_BOTTLENECK_RESIDUAL = {0: "conv1", 1: "bn1", 3: "conv2", 4: "bn2", 6: "conv3", 7: "bn3"}
_UNUSED_IN_FIRST_BLOCKS = ("ECA_excitation_global_stage.", "stage_in_fusion.", "out_fusion.")


def emca_authors(state_dict: Mapping[str, Tensor]) -> Converted:
    """The EMCA authors' ``eca_resnet{18..152}`` in its released configuration
    (ECA, stage attention over the last blocks of all earlier stages, "ms" fusions, 1-D)."""
    other = sorted(k for k in state_dict if re.search(
        r"\.(block_in_fusion|ECA_excitation_global_block|ECA_excitation_global|learnable_upsample_ms)\.", k))
    if other:
        raise ValueError(f"EMCA authors' state dict from a configuration other than the released one "
                         f"(has {other[0]}); only stage attention with 'ms' fusion has an emca-vis model")
    residual = _BOTTLENECK_RESIDUAL if any(".residual.6." in k for k in state_dict) else _BASIC_RESIDUAL
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"stage(\d)\.(\d+)\.(.+)", key)
        if not m:
            key = re.sub(r"^pre\.0\.", "conv1.", re.sub(r"^pre\.1\.", "bn1.", re.sub(r"^linear\.", "fc.", key)))
            out[key] = value
            continue
        stage, index, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        block = f"layer{stage}.{index}"
        if index == 0 and rest.startswith(_UNUSED_IN_FIRST_BLOCKS):
            continue
        if r := re.fullmatch(r"residual\.(\d+)\.(.+)", rest):
            name = residual.get(int(r.group(1)))
            out[f"{block}.{name}.{r.group(2)}" if name else key] = value
        elif r := re.fullmatch(r"shortcut\.([01])\.(.+)", rest):
            out[f"{block}.downsample.{r.group(1)}.{r.group(2)}"] = value
        elif rest == "ECA_excitation_local.0.weight":
            out[f"{block}.attn.conv.weight"] = value
        elif rest == "ECA_excitation_global_stage.0.weight":
            out[f"{block}.attn.global_conv.weight"] = value
        elif rest == "stage_in_fusion.0.weight":
            # [1, 1, R] over [stem, earlier stages..., current]; emca-vis puts the current map first.
            out[f"{block}.attn.scale_weights"] = value.reshape(-1).roll(1)
        elif rest == "out_fusion.0.weight":
            out[f"{block}.attn.fusion_weights"] = value.reshape(-1)  # (local, global)
        else:
            out[key] = value
    kernels = _stage_kernels(out, r"layer(\d)\.0\.attn\.conv\.weight", "EMCA authors'")
    return _named(out, "emca_eca_released", {"eca_kernels": kernels} if kernels else {})


# --- FcaNet: cfzd/FcaNet ----------------------------------------------------------------------
# torchvision's ResNet with FcaBottleneck / FcaBasicBlock: an ``att`` MultiSpectralAttentionLayer
# after the last BN (dct_layer.weight: a [C, h, w] DCT buffer, h = w = 56/28/14/7 by stage;
# fc = Sequential(Linear(C, C/16, bias=False), ReLU, Linear(C/16, C, bias=False), Sigmoid)).

def fcanet(state_dict: Mapping[str, Tensor]) -> Converted:
    """FcaNet's ``fcanet{34,50,101,152}``: ``layerS.B.att.{dct_layer.weight, fc.0, fc.2}``.

    The checkpoint's DCT filters are loaded as they are (a ``freq_sel_method`` other than
    top16 then still computes what it computed)."""
    out = _rename(state_dict, [
        (r"^(layer\d+\.\d+)\.att\.dct_layer\.weight$", r"\1.attn.dct"),
        (r"^(layer\d+\.\d+)\.att\.fc\.0\.", r"\1.attn.fc1."),
        (r"^(layer\d+\.\d+)\.att\.fc\.2\.", r"\1.attn.fc2."),
    ])
    biased = any(re.search(r"\.attn\.fc[12]\.bias$", k) for k in out)
    return _named(out, "fca", {} if biased else {"fca_bias": False})


# --- BAM: Jongchan/attention-module ----------------------------------------------------------
# ``ResidualNet(network_type, depth, num_classes, 'BAM')``: plain blocks, ``bam1..bam3`` applied to
# the outputs of layer1..layer3 (channel_att.gate_c: Linear, BatchNorm1d, ReLU, Linear on the
# average-pooled map; spatial_att.gate_s: 1x1 reduce, two dilated 3x3, 1x1 to one map, with BN;
# out = x * (1 + sigmoid(channel * spatial))). emca-vis holds them in the stage's last block.

def bam(state_dict: Mapping[str, Tensor]) -> Converted:
    """attention-module's ``att_type='BAM'`` nets: ``bam{1,2,3}.{channel_att,spatial_att}.*``."""
    if any(".cbam." in k for k in state_dict):
        raise ValueError("attention-module state dict holds CBAM modules (layerS.B.cbam), not BAM")
    last = {}
    for key in state_dict:
        if m := re.match(r"layer(\d+)\.(\d+)\.", key):
            last[m.group(1)] = max(last.get(m.group(1), 0), int(m.group(2)))
    out = {}
    for key, value in state_dict.items():
        if (m := re.match(r"bam([123])\.(.+)", key)) and m.group(1) in last:
            key = f"layer{m.group(1)}.{last[m.group(1)]}.attn.{m.group(2)}"
        out[key] = value
    conv1 = state_dict.get("conv1.weight")
    # network_type CIFAR10/100: a 3x3 stride-1 stem without max-pool, emca-vis's "cifar" stem.
    options = {"stem": "cifar"} if conv1 is not None and conv1.shape[-1] == 3 else {}
    return _named(out, "bam", options)


# --- EPSANet: murufeng/EPSANet ---------------------------------------------------------------
# EPSABlock: torchvision's bottleneck whose conv2 is a PSAModule (conv_1..conv_4: kernels 3, 5, 7,
# 9, groups 1, 4, 8, 16, C/4 channels each; se = SEWeightModule with 1x1 convs fc1, fc2 shared by
# the four; softmax over the scales; concatenated largest kernel first). emca-vis's PSA has the
# same names as conv2's children.

EPSA_GROUPS = (1, 4, 8, 16)


def epsanet(state_dict: Mapping[str, Tensor]) -> Converted:
    """EPSANet's ``epsanet{50,101}``: ``layerS.B.conv2.{conv_1..conv_4, se.fc1, se.fc2}``, key for key."""
    for key, value in state_dict.items():
        m = re.fullmatch(r"(layer\d+\.\d+)\.conv2\.conv_([1-4])\.weight", key)
        conv1 = state_dict.get(f"{m.group(1)}.conv1.weight") if m else None
        if conv1 is not None:  # the PSA convs' groups: their input channels over those per group
            groups = conv1.shape[0] // value.shape[1]
            if groups != EPSA_GROUPS[int(m.group(2)) - 1]:
                raise ValueError(f"EPSANet state dict with {groups} groups in {key} (emca-vis builds "
                                 f"EPSANet-50/101 small: groups {', '.join(map(str, EPSA_GROUPS))})")
    return _named(dict(state_dict), "epsa", {})


# --- SANet: wofmanaf/SA-Net ------------------------------------------------------------------
# SABottleneck: torchvision's bottleneck with ``sa`` = sa_layer(C, groups=64) after bn3 (cweight,
# cbias, sweight, sbias [1, C/128, 1, 1]; gn = GroupNorm(C/128, C/128)).

SA_GROUPS = 64


def sanet(state_dict: Mapping[str, Tensor]) -> Converted:
    """SA-Net's ``sa_resnet{50,101,152}``: ``layerS.B.sa.*`` -> ``layerS.B.attn.*``."""
    out = _rename(state_dict, [(r"^(layer\d+\.\d+)\.sa\.", r"\1.attn.")])
    for key, value in out.items():
        if m := re.fullmatch(r"(layer\d+\.\d+)\.attn\.cweight", key):
            channels = out[f"{m.group(1)}.bn3.weight"].shape[0] if f"{m.group(1)}.bn3.weight" in out else None
            if channels is not None and value.shape[1] * 2 * SA_GROUPS != channels:
                raise ValueError(f"SA-Net state dict with {channels // (2 * value.shape[1])} groups in {key}; "
                                 f"emca-vis builds sa_layer's default of {SA_GROUPS}")
    return _named(out, "sa", {})


# --- detection and model names ----------------------------------------------------------------

_ECA_MOBILENET = re.compile(r"features\.\d+\.conv\.\d+\.conv\.weight$")


def _has(pattern: str) -> Callable[[Mapping[str, Tensor]], bool]:
    compiled = re.compile(pattern)
    return lambda state_dict: any(compiled.search(k) for k in state_dict)


# Each is true only for its repository's module names; GE and MobileNet layouts are detected
# too, so that their converter's refusal says why.
is_eca_net = _has(r"^layer\d+\.\d+\.eca\.conv\.weight$|^features\.\d+\.conv\.\d+\.conv\.weight$")
is_cbam = _has(r"^layer\d+\.\d+\.cbam\.ChannelGate\.mlp\.1\.weight$")
is_srm = _has(r"^layer\d+\.\d+\.rclb\.")
is_emca_authors = _has(r"^stage\d\.\d+\.ECA_excitation_local\.0\.weight$")
is_fcanet = _has(r"^layer\d+\.\d+\.att\.dct_layer\.weight$")
is_bam = _has(r"^bam[123]\.channel_att\.gate_c\.")
is_epsanet = _has(r"^layer\d+\.\d+\.conv2\.conv_1\.weight$")
is_sanet = _has(r"^layer\d+\.\d+\.sa\.cweight$")


def _depth_name(pattern: str, suffix: str, repository: str) -> Callable[[str], str]:
    """A repository's model names (``pattern`` with the depth as its last group) -> emca-vis's."""
    compiled = re.compile(pattern)

    def model_name(name: str) -> str:
        match = compiled.fullmatch(name)
        if match is None:
            return name
        depth = int(match.groups()[-1])
        if depth not in DEPTHS:
            raise ValueError(f"{repository}'s {name}: emca-vis builds ResNet depths {', '.join(map(str, DEPTHS))}")
        return f"resnet{depth}_{suffix}"

    return model_name


eca_net_model_name = _depth_name(r"eca_resnet(\d+)", "eca", "ECA-Net")
"""``eca_resnet50`` -> ``resnet50_eca``; other names pass through."""
emca_authors_model_name = _depth_name(r"(eca_)?resnet(\d+)", "emca_eca_released", "the EMCA authors' code")
"""``eca_resnet50`` (their function) or ``resnet50`` (their ``--arch``) -> ``resnet50_emca_eca_released``."""
fcanet_model_name = _depth_name(r"(fca|fcanet)(\d+)", "fca", "FcaNet")
"""``fcanet50`` (its function) or ``fca50`` (its torch.hub entry) -> ``resnet50_fca``; other names pass through."""
epsanet_model_name = _depth_name(r"epsanet(\d+)", "epsa", "EPSANet")
"""``epsanet50`` -> ``resnet50_epsa``; other names pass through."""
sanet_model_name = _depth_name(r"sa_resnet(\d+)", "sa", "SA-Net")
"""``sa_resnet50`` -> ``resnet50_sa``; other names pass through."""
