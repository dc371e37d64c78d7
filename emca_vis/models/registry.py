"""Model names -> ResNets with attention: ``create_model`` and ``list_models``.

Names are ``resnet{depth}`` (plain, torchvision-identical) and ``resnet{depth}_{attn}``
with ``attn`` one of :data:`ATTENTIONS`, ``emca_{base}`` for a base in
:data:`EMCA_BASES`, or one of the paper's other baselines in :data:`BASELINES`
(``fca``, ``bam``, ``epsa``, ``sa``, ``a2``); ``resnet{depth}_emca_eca_released`` is the
model of the EMCA authors' released code (:class:`~.attention.ReleasedEMCA`), which is not the paper's.
"""

from __future__ import annotations

import re
from functools import partial

from torch import nn

from .attention import ATTENTIONS, CBAM_SPATIALS, EMCA_BASES, SRM_STDS, SRM, ChannelAttention, ReleasedEMCA, style_pool
from .baselines import BASELINES
from .resnet import BasicBlock, Bottleneck, ResNet, stage_widths

DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
PLACEMENTS = ("all", "first", "last")
RELEASED_BASES = ("eca",)  # the released code's EMCA bases with a variant here
_NAME = re.compile(r"resnet(\d+)(?:_(emca_)?([a-z0-9]+?)(_released)?)?")
# Options that belong to one attention type: the bases they apply to, and their defaults.
_ATTENTION_OPTIONS = {"eca_kernels": (("eca",), None), "srm_std": (("srm",), "biased"),
                      "cbam_spatial": (("cbam",), "paper"), "se_divisor": (("se",), None),
                      "fca_bias": (("fca",), True)}
LABELS = {None: "none", "se": "SE", "eca": "ECA", "srm": "SRM", "cbam": "CBAM",
          **{name: spec.label for name, spec in BASELINES.items()}}
"""Display names of the attention types (``None``: the plain ResNet)."""


class UnknownModelError(ValueError):
    pass


def list_models() -> list[str]:
    """Every registered model name."""
    suffixes = ([""] + [f"_{a}" for a in ATTENTIONS] + [f"_emca_{b}" for b in EMCA_BASES]
                + [f"_emca_{b}_released" for b in RELEASED_BASES] + [f"_{b}" for b in BASELINES])
    return [f"resnet{depth}{suffix}" for depth in DEPTHS for suffix in suffixes
            if not (suffix[1:] in BASELINES and BASELINES[suffix[1:]].bottleneck_only and DEPTHS[depth][0] is BasicBlock)]


def parse_model_name(name: str) -> tuple[int, str | None, bool]:
    """``"resnet50_emca_eca"`` -> ``(50, "eca", True)``; the released variant parses the same
    (see :func:`is_released`)."""
    match = _NAME.fullmatch(name)
    if not match or int(match.group(1)) not in DEPTHS or (
        match.group(3) and match.group(3) not in (EMCA_BASES if match.group(2) else (*ATTENTIONS, *BASELINES))
    ) or (match.group(4) and not (match.group(2) and match.group(3) in RELEASED_BASES)):
        raise UnknownModelError(f"unknown model {name!r}; see emca_vis.models.list_models()")
    depth, attn = int(match.group(1)), match.group(3)
    if attn in BASELINES and BASELINES[attn].bottleneck_only and DEPTHS[depth][0] is BasicBlock:
        raise UnknownModelError(f"unknown model {name!r}: {BASELINES[attn].label} replaces the 3x3 conv of "
                                f"bottleneck blocks; use depth 50, 101 or 152")
    return depth, attn, bool(match.group(2))


def is_released(name: str) -> bool:
    """Whether ``name`` is a model of the EMCA authors' released code (``*_emca_eca_released``)."""
    parse_model_name(name)
    return name.endswith("_released")


def source_label(key: tuple[int, int]) -> str:
    stage, block = key
    return "stem" if stage == 0 else f"stage {stage} block {block + 1}"


def emca_sources(stage: int, layers: tuple[int, ...], emca_stages, emca_blocks) -> list[tuple[int, int]]:
    """Earlier outputs aggregated by the EMCA module of ``stage`` (the S, N ablation knobs).

    ``(0, 0)`` is the stem, the "stage 0" map; block indices are 0-based.
    """
    if emca_stages == 0:
        return []
    earlier = [stage - 1] if emca_stages == 1 else list(range(stage - 1, -1, -1))
    keys = []
    for j in sorted(earlier):
        blocks = 1 if j == 0 else layers[j - 1]
        chosen = range(blocks) if emca_blocks == "all" else [blocks - 1]
        keys.extend((j, b) for b in chosen)
    return keys


def _check_choice(option: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{option}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")


def _attention_options(name: str, attn: str | None, **options) -> list[int] | None:
    """Check the attention-specific options of ``create_model``; returns ``eca_kernels`` as a list."""
    for option, (bases, default) in _ATTENTION_OPTIONS.items():
        if attn not in bases and options[option] != default:
            raise ValueError(f"{option} applies to {'/'.join(b.upper() for b in bases)} models, not {name}")
    _check_choice("srm_std", options["srm_std"], SRM_STDS)
    _check_choice("cbam_spatial", options["cbam_spatial"], CBAM_SPATIALS)
    if not isinstance(options["fca_bias"], bool):
        raise ValueError(f"fca_bias={options['fca_bias']!r} is not valid; give True or False")
    divisor = options["se_divisor"]
    if divisor is not None and (isinstance(divisor, bool) or not isinstance(divisor, int) or not 1 <= divisor <= 64):
        raise ValueError(f"se_divisor={divisor!r} is not valid; give an integer from 1 to 64")
    kernels = options["eca_kernels"]
    if kernels is None:
        return None
    kernels = list(kernels)
    if len(kernels) != 4 or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2
                                    for k in kernels):
        raise ValueError(f"eca_kernels={kernels!r} is not valid; give four positive odd integers, one per stage")
    return kernels


def create_model(name: str, num_classes: int = 1000, *, placement: str | None = None, emca_stages=1,
                 emca_blocks="all", stem: str = "imagenet", width: float = 1.0, gate: str = "mul",
                 eca_kernels=None, srm_std: str = "biased", cbam_spatial: str = "paper",
                 se_divisor: int | None = None, fca_bias: bool = True) -> ResNet:
    """Build a registered model.

    Args:
        placement: blocks with attention in each stage, ``"all" | "first" | "last"``;
            default ``"all"`` for the baselines and ``"first"`` for EMCA.
        emca_stages: EMCA's S knob, ``0 | 1 | "all"`` earlier stages (the stem is stage 0).
        emca_blocks: EMCA's N knob, ``1 | "all"`` blocks of each of those stages.
        stem: ``"imagenet"`` or ``"cifar"`` (3x3 stem without max-pool, for 32-64 px inputs).
        width: channel multiplier (1.0 = the standard ResNet).
        gate: ``"mul"`` (``x * z``) or ``"one_plus"`` (``x * (1 + z)``).
        eca_kernels: ECA models: the conv kernel of each of the four stages (ECA-Net's
            released ResNets fix them, e.g. ``(3, 5, 5, 7)``); default the adaptive formula.
        srm_std: SRM models: ``"biased"`` (the paper) or ``"unbiased"`` (the official code) variance.
        cbam_spatial: CBAM: ``"paper"`` or ``"official"`` spatial branch (see ``CBAM``).
        se_divisor: SE models: round the hidden width to a multiple of this (8: timm's ``seresnet*``).
        fca_bias: FcaNet models: FC layers with biases (SE's, the default) or without (FcaNet's
            released code, whose checkpoints need ``False``).

    The ``*_emca_eca_released`` models fix their structure (the first block of each stage
    has ECA, every other block the released multi-scale module, sources the stem and the
    last residual branch of every earlier stage, gate ``1 + z``); of the options above
    they take ``stem``, ``width`` and ``eca_kernels``.
    """
    depth, attn, is_emca = parse_model_name(name)
    released = is_released(name)
    block, layers = DEPTHS[depth]
    eca_kernels = _attention_options(name, attn, eca_kernels=eca_kernels, srm_std=srm_std,
                                     cbam_spatial=cbam_spatial, se_divisor=se_divisor, fca_bias=fca_bias)
    if released and (placement is not None or emca_stages != 1 or emca_blocks != "all" or gate != "mul"):
        raise ValueError(f"{name} has the released code's fixed structure; placement, emca_stages, "
                         "emca_blocks and gate do not apply")
    baseline = BASELINES.get(attn)
    if baseline and baseline.placement and placement not in (None, baseline.placement):
        raise ValueError(f"placement={placement!r} does not apply to {name}: {baseline.label} "
                         f"places its modules as its paper does ({baseline.placement})")
    placement = placement or (baseline.placement if baseline and baseline.placement else "first" if is_emca else "all")
    block = baseline.block if baseline and baseline.block else block
    _check_choice("placement", placement, PLACEMENTS if not (baseline and baseline.placement) else (baseline.placement,))
    _check_choice("emca_stages", emca_stages, (0, 1, "all"))
    _check_choice("emca_blocks", emca_blocks, (1, "all"))
    widths = stage_widths(width)

    def channels_of(key: tuple[int, int]) -> int:
        return widths[0] if key[0] == 0 else widths[key[0] - 1] * block.expansion

    sources = {}
    module_options = {"srm": {"std": srm_std}, "cbam": {"spatial": cbam_spatial},
                      "se": {"divisor": se_divisor}}.get(attn, {})

    def attention(channels: int, stage: int, index: int, blocks: int) -> ChannelAttention | None:
        kernel = {"kernel_size": eca_kernels[stage - 1]} if eca_kernels and attn == "eca" else {}
        if released:
            if index == 0:
                return ATTENTIONS["eca"](channels, gate="one_plus", **kernel)
            keys = emca_sources(stage, layers, "all", 1)
            sources[(stage, index)] = keys
            labels = [source_label(k) + ("" if k == (0, 0) else " residual") for k in keys]
            return ReleasedEMCA(channels, tuple(zip(labels, map(channels_of, keys))), **kernel)
        if baseline:
            return baseline.build(channels, stage, gate=gate, fca_bias=fca_bias) if baseline.module and baseline.wants(
                stage, index, blocks, placement) else None
        if attn is None or not (placement == "all" or (placement == "first" and index == 0)
                                or (placement == "last" and index == blocks - 1)):
            return None
        keys = emca_sources(stage, layers, emca_stages, emca_blocks) if is_emca else []
        if keys:
            sources[(stage, index)] = keys
        return ATTENTIONS[attn](channels, sources=tuple((source_label(k), channels_of(k)) for k in keys), gate=gate,
                                **kernel, **module_options)

    if attn == "srm":  # EMCA-SRM sources pooled with the module's std (the released model is ECA)
        source_pool = partial(SRM.pool_source, std=srm_std)
    else:
        source_pool = ATTENTIONS[attn].pool_source if is_emca else None
    model = ResNet(block, layers, num_classes, attention=attention, stem=stem, width=width, sources=sources,
                   source_pool=source_pool, residual_sources=released)
    for module_name, module in model.named_modules():
        if isinstance(module, ChannelAttention) and not module.record_name:  # EPSANet's conv2
            stage, index = module_name.split(".")[:2]
            module.record_name, module.stage, module.block = f"{stage}.{index}", int(stage[5:]), int(index)
    config = {"name": name, "num_classes": num_classes}
    if not released:
        # Placements only their paper defines (BAM, A2-Net) are implied by the name: None.
        config |= {"placement": None if placement not in PLACEMENTS else placement,
                   "emca_stages": emca_stages, "emca_blocks": emca_blocks}
    config |= {"stem": stem, "width": width}
    if not released:
        config["gate"] = gate
    # The options of this model's attention type, so metadata records what was built.
    options = {"eca_kernels": eca_kernels, "srm_std": srm_std, "cbam_spatial": cbam_spatial, "se_divisor": se_divisor,
               "fca_bias": fca_bias}
    config |= {option: options[option] for option, (bases, _) in _ATTENTION_OPTIONS.items() if attn in bases}
    model.config = config
    return model


def attention_modules(model: nn.Module) -> dict[str, ChannelAttention]:
    """The model's attention modules by block name (``"layer2.0"``), in forward order."""
    return {m.record_name: m for m in model.modules() if isinstance(m, ChannelAttention)}


def load_backbone(model: ResNet, state_dict: dict, skip_head: bool = False) -> list[str]:
    """Initialise a model from a torchvision ResNet state dict.

    Every backbone key must match; the keys the state dict lacks must all belong to
    attention modules. Returns those new keys. ``skip_head`` leaves ``fc`` as it is
    (fine-tuning to another number of classes).
    """
    if skip_head:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    own = model.state_dict()
    wrong_shape = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    if wrong_shape:
        raise ValueError(f"backbone weights do not fit this model: shape mismatch for {', '.join(wrong_shape[:5])}")
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if unexpected:
        raise ValueError(f"backbone weights do not fit this model: unexpected keys {', '.join(unexpected[:5])}")
    not_attention = [k for k in missing if ".attn." not in k and not (skip_head and k.startswith("fc."))]
    if not_attention:
        raise ValueError(f"backbone weights do not fit this model: missing keys {', '.join(not_attention[:5])}")
    return [k for k in missing if ".attn." in k]
