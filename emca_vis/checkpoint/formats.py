"""Foreign state-dict formats: one :class:`Format` entry per project whose ResNets emca-vis loads.

An entry says how to recognise the project's key names, how to turn them into emca-vis's
(renames, reshapes), which ``create_model`` options reproduce its computation, which of its model
names map to which emca-vis names, and which key names say the model without one being named
(plain and timm-SE ResNets: the depth shows in the blocks per stage). ``auto`` picks the first
entry (in :data:`FORMATS` order) whose detector accepts the key names; a new format is one more
:func:`register` call.

    torchvision  resnet18..152: emca-vis's own layout (also timm's plain resnet*, and state
                 dicts saved from emca-vis models); keys are used as they are
    timm         resnet{18,34,50,101,152} and seresnet{18,...,152}; SE's 1x1 convs become linears
    eca-net      ECA-Net's eca_resnet{d} (BangguWu/ECANet)                  -> resnet{d}_eca
    cbam         CBAM's ResidualNet(..., "CBAM") (Jongchan/attention-module) -> resnet{d}_cbam
    srm          SRM's resnet(d, "srm" / "se") (hyunjaelee410/...)         -> resnet{d}_srm / _se
    emca-authors the EMCA authors' eca_resnet{d} (eslambakr/EMCA)          -> resnet{d}_emca_eca_released
    fcanet       FcaNet's fcanet{d} (cfzd/FcaNet)                            -> resnet{d}_fca (fca_bias=False)
    bam          BAM's ResidualNet(..., "BAM") (Jongchan/attention-module)   -> resnet{d}_bam
    epsanet      EPSANet's epsanet{d} (murufeng/EPSANet)                     -> resnet{d}_epsa
    sanet        SA-Net's sa_resnet{d} (wofmanaf/SA-Net)                     -> resnet{d}_sa

The official repositories' converters live in :mod:`.official`; their entries are registered
here, after timm's and before torchvision's (whose detector accepts any torchvision-named ResNet);
EPSANet's before timm's.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..models.registry import DEPTHS, create_model
from . import official
from .official import infer_depth

StateDict = dict[str, torch.Tensor]


class FormatError(UserError):
    """Weights or a model name a format cannot map; the message says why, on one line."""


@dataclass(frozen=True)
class Format:
    """One foreign project's layout.

    Args:
        name: the ``--format`` word.
        summary: what it covers, one line (``--help``, README).
        detect: ``True`` when a state dict (as read; key names, shapes) is unmistakably this
            format's; ``None``: chosen only when named.
        convert: ``(state_dict, emca-vis model name) -> (state dict in emca-vis keys, create_model
            options it needs)``; raises :class:`FormatError` saying why it cannot.
        model_name: the project's model name -> emca-vis's (``"seresnet50"`` -> ``"resnet50_se"``);
            :class:`FormatError` for names it refuses; names it does not know pass through.
        infer_model: the emca-vis model name of a converted state dict when it leaves no doubt
            (then a file needs no MODEL), else ``None``.
    """

    name: str
    summary: str
    detect: Callable[[StateDict], bool] | None
    convert: Callable[[StateDict, str | None], tuple[StateDict, dict]]
    model_name: Callable[[str], str] = field(default=lambda name: name)
    infer_model: Callable[[StateDict], str | None] = field(default=lambda state_dict: None)


FORMATS: dict[str, Format] = {}


def register(fmt: Format, before: str | None = None) -> Format:
    """Add ``fmt`` (detected before the entry ``before``, default: last)."""
    if fmt.name == "auto" or fmt.name in FORMATS:
        raise ValueError(f"format name {fmt.name!r} is reserved or taken")
    items = list(FORMATS.items())
    at = [k for k, _ in items].index(before) if before in FORMATS else len(items)
    items.insert(at, (fmt.name, fmt))
    FORMATS.clear()
    FORMATS.update(items)
    return fmt


def detect_format(state_dict: StateDict) -> Format:
    """The first format whose detector accepts this state dict."""
    for fmt in FORMATS.values():
        if fmt.detect is not None and fmt.detect(state_dict):
            return fmt
    sample = ", ".join(sorted(state_dict)[:3])
    raise FormatError(f"key names of no known format (first: {sample}); name one of {', '.join(FORMATS)} "
                      "with MODEL:FORMAT=PATH (--format)")


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise FormatError(f"unknown format {name!r}; choose auto or one of {', '.join(FORMATS)}")
    return FORMATS[name]


def rename(state_dict: StateDict, table: list[tuple[str, str]]) -> StateDict:
    """Apply ``(regex, replacement)`` renames to every key, in table order."""
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in table:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def _is_resnet(keys: Collection[str]) -> bool:
    return "conv1.weight" in keys and "layer1.0.conv1.weight" in keys


def _plain_or_se(keys: Collection[str]) -> str | None:
    """``resnet{d}`` without attention keys; ``resnet{d}_se`` with SE in every block (timm's layout)."""
    depth = infer_depth(keys)
    attention = {k.split(".attn.")[1] for k in keys if ".attn." in k}
    if depth is None or (attention and attention != {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}):
        return None
    blocks = {k.split(".attn.")[0] for k in keys if ".attn." in k}
    every = {k.rsplit(".", 2)[0] for k in keys if re.match(r"layer\d+\.\d+\.conv1\.weight$", k)}
    if attention and blocks != every:
        return None
    return f"resnet{depth}_se" if attention else f"resnet{depth}"


# --- torchvision (and emca-vis's own layout) -------------------------------------------------

def _same(state_dict: StateDict, model: str | None) -> tuple[StateDict, dict]:
    return dict(state_dict), {}


register(Format("torchvision", "torchvision resnet18..152 (emca-vis's own key names; timm's plain resnet* too)",
                detect=_is_resnet, convert=_same,
                infer_model=lambda keys: None if any(".attn." in k for k in keys) else _plain_or_se(keys)))


# --- timm ------------------------------------------------------------------------------------

TIMM_DEPTHS = tuple(DEPTHS)  # timm's resnet{d} / seresnet{d} with a torchvision stem
_TIMM_NAME = re.compile(r"(se)?resnet(\d+)([a-z]*)")
_TIMM_SUFFIX_WHY = {
    "c": "a deep stem (three 3x3 convs, conv1.0/.3/.6)",
    "s": "a deep stem (three 3x3 convs, conv1.0/.3/.6)",
    "d": "a deep stem (three 3x3 convs) and average-pool shortcuts",
    "t": "a tiered deep stem (three 3x3 convs) and average-pool shortcuts",
}
_NO_STEM = "emca-vis ResNets have torchvision's single 7x7 stem conv and 1x1-conv shortcuts"


def timm_model_name(name: str) -> str:
    """timm's ``resnet{d}`` / ``seresnet{d}`` -> ``resnet{d}`` / ``resnet{d}_se``; other timm ResNet
    names refused with the reason; emca-vis names pass through."""
    match = _TIMM_NAME.fullmatch(name)
    if match is None:
        return name
    se, depth, suffix = match.group(1), int(match.group(2)), match.group(3)
    if suffix:
        why = _TIMM_SUFFIX_WHY.get(suffix[-1], f"a variant ({suffix!r}) emca-vis does not build")
        raise FormatError(f"timm's {name} has {why}; {_NO_STEM}. Mapped timm names: resnet{{d}} and "
                          f"seresnet{{d}} for d in {', '.join(map(str, TIMM_DEPTHS))}")
    if depth not in TIMM_DEPTHS:
        raise FormatError(f"timm's {name}: emca-vis builds ResNet depths {', '.join(map(str, TIMM_DEPTHS))} only")
    return f"resnet{depth}_se" if se else f"resnet{depth}"


def _timm_refusal(keys: Collection[str]) -> str | None:
    if "conv1.0.weight" in keys:
        return f"a deep stem (conv1.0/.3/.6: timm's *c/*d/*s/*t ResNets); {_NO_STEM}"
    if any(re.fullmatch(r"layer\d+\.0\.downsample\.2\.weight", k) for k in keys):
        return f"average-pool shortcuts (downsample.1 is a conv: timm's avg_down, *d/*t ResNets); {_NO_STEM}"
    other = sorted(k for k in keys if ".se." in k and not re.search(r"\.se\.fc[12]\.(weight|bias)$", k))
    if other:
        return (f"an attention module other than SE ({other[0]}: e.g. timm's ECA or CBAM ResNets, which all "
                "have deep stems); only seresnet*'s SE maps, to resnet{d}_se")
    return None


def _timm_convert(state_dict: StateDict, model: str | None) -> tuple[StateDict, dict]:
    why = _timm_refusal(state_dict.keys())
    if why:
        raise FormatError(f"timm weights with {why}")
    out = {}
    for key, value in state_dict.items():
        if ".se.fc" in key:
            key = key.replace(".se.", ".attn.")
            if value.dim() == 4:  # SE's 1x1 convs on pooled maps are emca-vis's linears
                value = value.flatten(1)
        out[key] = value
    return out, _timm_se_options(out)


def _timm_se_options(state_dict: StateDict) -> dict:
    """timm rounds SE widths to a multiple of 8 (``make_divisible(C / 16, 8)``), emca-vis's SE by
    default not (``max(C // 16, 4)``); they differ only at 64 channels (seresnet18/34's first
    stage). The ``se_divisor`` model option reproduces timm's rounding where this version has it."""
    if not any(k.endswith(".attn.fc1.weight") for k in state_dict):
        return {}
    if "se_divisor" in inspect.signature(create_model).parameters:
        return {"se_divisor": 8}
    for key, value in state_dict.items():
        if key.endswith(".attn.fc1.weight"):
            hidden, channels = value.shape
            if hidden != max(channels // 16, 4):
                raise FormatError(f"timm SE width {hidden} for {channels} channels ({key}) is timm's rounding "
                                  "to a multiple of 8 (seresnet18/34), which this emca-vis version does not "
                                  "build; seresnet50 and deeper map exactly")
    return {}


def _timm_detect(keys: Collection[str]) -> bool:
    """timm's own marks on a ResNet: SE modules named ``se``, or a deep stem (refused, with the reason)."""
    return "layer1.0.conv1.weight" in keys and ("conv1.0.weight" in keys or any(".se." in k for k in keys))


register(Format("timm", "timm resnet{18,...,152} and seresnet{18,...,152} (deep-stem *c/*d/*s/*t refused)",
                detect=_timm_detect, convert=_timm_convert, model_name=timm_model_name, infer_model=_plain_or_se),
         before="torchvision")


# --- the attention papers' official code (converters in .official) ---------------------------

def _official(name: str, summary: str, convert: Callable[[StateDict], official.Converted],
              detect: Callable[[StateDict], bool], attention: Callable[[Collection[str]], str],
              model_name: Callable[[str], str] = lambda name: name, before: str = "torchvision") -> Format:
    """A :class:`Format` over an :mod:`.official` converter. ``attention``: the emca-vis attention
    suffix of a converted state dict, so the blocks per stage name the model; ``before``: the entry
    it is detected before."""

    def checked_convert(state_dict: StateDict, model: str | None) -> tuple[StateDict, dict]:
        try:
            converted = convert(state_dict)
        except ValueError as error:
            raise FormatError(str(error)) from None
        expected = converted.model or f"resnet{{d}}_{converted.attention}"
        if model is not None and (model != converted.model if converted.model else
                                  not re.fullmatch(rf"resnet\d+_{converted.attention}", model)):
            raise FormatError(f"{name} weights hold {expected} (from their blocks and modules), not {model}")
        return converted.state_dict, converted.options

    def checked_name(model: str) -> str:
        try:
            return model_name(model)
        except ValueError as error:
            raise FormatError(str(error)) from None

    return register(Format(name, summary, detect=detect, convert=checked_convert, model_name=checked_name,
                           infer_model=lambda keys: official.resnet_name(keys, attention(keys))),
                    before=before)


_official("eca-net", "ECA-Net's eca_resnet{18,...,152} (BangguWu/ECANet) -> resnet{d}_eca, its kernel per stage "
          "read from the weights", official.eca_net, official.is_eca_net, lambda keys: "eca",
          official.eca_net_model_name)
_official("cbam", "CBAM's ResidualNet(ImageNet or CIFAR, d, n, 'CBAM') (Jongchan/attention-module) -> "
          "resnet{d}_cbam with its spatial branch (cbam_spatial='official')", official.cbam, official.is_cbam,
          lambda keys: "cbam")
_official("srm", "SRM's resnet(d, 'srm' or 'se') (hyunjaelee410/style-based-recalibration-module) -> "
          "resnet{d}_srm (srm_std='unbiased') or resnet{d}_se", official.srm, official.is_srm,
          official.srm_attention)
_official("emca-authors", "the EMCA authors' eca_resnet{18,...,152} (eslambakr/EMCA, its released "
          "configuration) -> resnet{d}_emca_eca_released", official.emca_authors, official.is_emca_authors,
          lambda keys: "emca_eca_released", official.emca_authors_model_name)
_official("fcanet", "FcaNet's fcanet{34,50,101,152} / fca{d} (cfzd/FcaNet) -> resnet{d}_fca with its bias-free FC layers "
          "(fca_bias=False) and its DCT filters", official.fcanet, official.is_fcanet, lambda keys: "fca",
          official.fcanet_model_name)
_official("bam", "BAM's ResidualNet(ImageNet or CIFAR, d, n, 'BAM') (Jongchan/attention-module) -> resnet{d}_bam",
          official.bam, official.is_bam, lambda keys: "bam")
# EPSANet's SE modules are named ``se`` (conv2.se.fc1), which timm's detector takes for its own.
_official("epsanet", "EPSANet's epsanet{50,101} (murufeng/EPSANet) -> resnet{d}_epsa, key for key",
          official.epsanet, official.is_epsanet, lambda keys: "epsa", official.epsanet_model_name, before="timm")
_official("sanet", "SA-Net's sa_resnet{50,101,152} (wofmanaf/SA-Net) -> resnet{d}_sa", official.sanet,
          official.is_sanet, lambda keys: "sa", official.sanet_model_name)
