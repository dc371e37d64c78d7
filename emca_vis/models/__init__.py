"""Model zoo: plain ResNets, SE/ECA/SRM/CBAM, FcaNet/BAM/EPSANet/SANet/A2-Net, EMCA and the EMCA
authors' released model, in torchvision's layout."""

from .attention import ATTENTIONS, EMCA_BASES, AttentionRecord, ChannelAttention
from .baselines import BASELINES
from .recording import record_attention
from .registry import (
    DEPTHS,
    LABELS,
    UnknownModelError,
    attention_modules,
    create_model,
    is_released,
    list_models,
    load_backbone,
    parse_model_name,
)
from .resnet import ResNet

__all__ = [
    "ATTENTIONS", "BASELINES", "EMCA_BASES", "DEPTHS", "LABELS", "AttentionRecord", "ChannelAttention", "ResNet",
    "UnknownModelError", "attention_modules", "create_model", "is_released", "list_models", "load_backbone",
    "parse_model_name", "record_attention",
]
