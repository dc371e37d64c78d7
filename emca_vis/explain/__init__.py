"""Explanations: CAM heatmaps and attributions for any checkpoint, and their quality metrics.

    from emca_vis.explain import heatmaps
    maps = heatmaps(model, images, targets, method="gradcam", layer="layer4")  # [N, H, W] in [0, 1]

CLI: ``python -m emca_vis.gradcam`` (figures) and ``python -m emca_vis.gradcam evaluate``
(localisation and faithfulness scores, :mod:`emca_vis.explain.metrics`).
"""

from .heatmaps import (ATTRIBUTION_METHODS, CAM_METHODS, METHODS, ExplainError, gradients_from, heatmap_stats,
                       heatmaps, predict, resolve_target, target_layer)

__all__ = ["ATTRIBUTION_METHODS", "CAM_METHODS", "METHODS", "ExplainError", "gradients_from", "heatmap_stats",
           "heatmaps", "predict", "resolve_target", "target_layer"]
