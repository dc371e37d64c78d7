"""Corruption robustness: ImageNet-C corruptions, -C datasets, CE / mCE (classifiers), mPC / rPC (detectors).

    from emca_vis.robustness import corrupt, evaluate
    results = evaluate(checkpoint=["a.safetensors"], corruptions=["fog"], n=100, out="r.json")

CLI: ``python -m emca_vis.robustness`` (:mod:`.evaluate`).
"""

from .corruptions import CORRUPTIONS, SEVERITIES, corrupt
from .evaluate import evaluate, markdown_table
from .metrics import IMAGENET_C

__all__ = ["CORRUPTIONS", "IMAGENET_C", "SEVERITIES", "corrupt", "evaluate", "markdown_table"]
