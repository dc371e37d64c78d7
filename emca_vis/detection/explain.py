"""Heatmaps of a detector's detections, their scores against ground truth, and its backbone's
attention: what :class:`emca_vis.detection.task.DetectionTask` answers to the analysis tools.

**Target.** A gradient CAM of a detection differentiates pytorch-grad-cam's
``FasterRCNNBoxScoreTarget`` for it: the score of the output box of the same class that overlaps
the detection most (IoU > 0.5), plus that IoU, i.e. the detection's own score + 1 in the pass that
found it. Faster R-CNN, Mask R-CNN and RetinaNet return the same boxes, labels and scores, and
each score is a differentiable function of the features (the box head's softmax for the R-CNNs,
the sigmoid of RetinaNet's classification head picked by its top-k), so one target serves all three.

**Layer** (``--layer``): a module of the backbone ResNet (``model.backbone.body``) as for
classifiers (``layer4``, ``layer3.1``, ``layer4.0.conv2``; a stage means its last block), or an
output of the feature pyramid, ``fpn.<level>`` with torchvision's level names: the R-CNNs have
``fpn.0`` .. ``fpn.3`` (P2 from ``layer1``, stride 4, to P5 from ``layer4``, stride 32) and
``fpn.pool`` (P6); RetinaNet has ``fpn.0`` .. ``fpn.2`` (P3 from ``layer2`` to P5), ``fpn.p6``
and ``fpn.p7``. Gradients reach a pyramid level only through the heads that read it (R-CNN box
heads read the level that fits the box size).

**Pass.** One forward pass of the image records the layer's activations, with the autograd
graph from that layer on only (:func:`~emca_vis.explain.heatmaps.gradients_from`); one backward
pass per kept detection gives its gradients. Every :data:`DETECTION_METHODS` map follows from
them with pytorch-grad-cam's formulas; the map is scaled to the feature map's part that covers
the image (torchvision pads a batch to a multiple of 32) and then to the image's size.
EigenCAM reads activations only, so it has one map per image, shared by its detections.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
from torch import Tensor, nn
from torchvision.ops import box_iou

from ..errors import UserError
from ..explain import metrics
from ..explain.evaluate import ClassMismatch
from ..explain.heatmaps import (GRADIENT_FREE_CAMS, SIGNAL_CAMS, ExplainError, check_feature_map, gradients_from,
                                heatmap_stats, signal_cams)
from .data import build_detection_dataset

DETECTION_METHODS = SIGNAL_CAMS  # the CAMs computed from one pass's activations and gradients
# LayerCAM keeps each detection's gradients where they are, so its map is that detection's;
# Grad-CAM's pooled weights light every object of a kind. The finest pyramid level is what the
# box head reads for small objects. On 50 multishapes scenes (README): pointing game 57% for
# LayerCAM at layer4, 98-100% at layer2, 3-26% for Grad-CAM.
DEFAULT_METHODS = ("layercam", "gradcam", "eigencam")
DEFAULT_LAYER = "fpn.0"
MATCH_IOU = 0.5  # a detection explains a ground-truth object of its class that it overlaps this much


def check_method(loaded, method: str) -> str:
    if method not in DETECTION_METHODS:
        raise ExplainError(f"method {method} does not apply to the detector {loaded.label}; "
                           f"detectors take {', '.join(DETECTION_METHODS)}")
    return method


def pyramid_levels(model: nn.Module) -> list[str]:
    """The feature pyramid's output names, finest first: ``0``, ``1``, ... then the extra levels."""
    backbone = model.backbone
    extra = type(backbone.fpn.extra_blocks).__name__
    names = {"LastLevelMaxPool": ["pool"], "LastLevelP6P7": ["p6", "p7"]}.get(extra, [])
    return [str(i) for i in range(len(backbone.returned_layers))] + names


def resolve_layer(loaded, name: str) -> tuple[nn.Module, str | None]:
    """``(module, key)`` of ``--layer name``: a backbone module (key None), or the pyramid with the
    level's key; an unknown name is a one-line :class:`ExplainError` listing the spellings."""
    model = loaded.model
    levels = [f"fpn.{level}" for level in pyramid_levels(model)]
    body = model.backbone.body
    stages = [n for n, _ in body.named_children() if n.startswith("layer")]
    hint = (f"use a backbone stage ({', '.join(stages)}), a block ({stages[-1]}.0) or a pyramid level "
            f"({', '.join(levels)})")
    if name in levels:
        return model.backbone.fpn, name.removeprefix("fpn.")
    try:
        module = body.get_submodule(name) if name and not name.startswith("fpn") else None
    except AttributeError:
        module = None
    if module is None:
        raise ExplainError(f"--layer {name}: no such layer in the detector {loaded.label}; {hint}")
    return (module[-1] if isinstance(module, nn.Sequential) else module), None


def check_layer(loaded, name: str) -> tuple[nn.Module, str | None]:
    """:func:`resolve_layer`, checked with a blank image (a 4-D feature map, not changed in place)."""
    module, key = resolve_layer(loaded, name)
    size = loaded.input_size
    check_feature_map(loaded.model, module, torch.zeros(1, 3, size, size), name,
                      "use a backbone stage, a block or a pyramid level (see --help)", key)
    return module, key


@dataclass
class Explained:
    """One image through one detector: its kept detections (CPU tensors ``boxes`` ``[D, 4]``,
    ``labels`` ``[D]`` 1-based, ``scores`` ``[D]``, Mask R-CNN's ``masks`` ``[D, H, W]`` bool) and
    per method the maps ``[D, H, W]`` in [0, 1] (``[1, H, W]`` for EigenCAM: one per image)."""

    detections: dict[str, Tensor]
    maps: dict[str, np.ndarray]


def kept(output: dict[str, Tensor], score_threshold: float, max_detections: int) -> Tensor:
    """Indices of the detections scoring at least ``score_threshold``, best first, at most ``max_detections``."""
    order = torch.argsort(output["scores"], descending=True, stable=True)
    return order[output["scores"][order] >= score_threshold][:max_detections]


def explain_detections(loaded, pixels: Tensor, methods, layer: str, score_threshold: float = 0.5,
                       max_detections: int = 5) -> Explained:
    """The kept detections of ``pixels`` (``[3, H, W]`` in [0, 1]) and their heatmaps (module docstring)."""
    model = loaded.model.eval()
    module, key = resolve_layer(loaded, layer)
    with torch.no_grad():
        batch, _ = model.transform([pixels])
    resized, padded = batch.image_sizes[0], batch.tensors.shape[-2:]
    recorded = {}

    def record(_module, _args, output):
        recorded["output"] = output[key] if key is not None else output

    with gradients_from(model, module, key):
        handle = module.register_forward_hook(record)
        try:
            output = model([pixels])[0]
        finally:
            handle.remove()
        chosen = kept(output, score_threshold, max_detections)
        leaf = recorded["output"]
        gradients = []
        for index in chosen.tolist():
            target = FasterRCNNBoxScoreTarget([int(output["labels"][index])], [output["boxes"][index].detach()])
            score = target(output)
            gradient = (torch.autograd.grad(score, leaf, retain_graph=True, allow_unused=True)[0]
                        if score.requires_grad else None)
            gradients.append(torch.zeros_like(leaf) if gradient is None else gradient)
    activations = leaf.detach().cpu().numpy()
    grads = torch.cat(gradients).cpu().numpy() if gradients else np.zeros((0, *activations.shape[1:]), np.float32)
    height, width = pixels.shape[-2:]
    maps = {}
    for method in methods:
        if method in GRADIENT_FREE_CAMS:
            raw = signal_cams(model, module, method, activations, np.zeros_like(activations))
        elif len(chosen):
            raw = signal_cams(model, module, method, np.repeat(activations, len(chosen), 0), grads)
        else:
            raw = np.zeros((0, *activations.shape[-2:]), np.float32)
        maps[method] = _to_image(raw, padded, resized, (height, width))
    detections = {name: value[chosen].detach().cpu() for name, value in output.items()}
    if "masks" in detections:
        detections["masks"] = detections["masks"][:, 0] >= 0.5  # torchvision's threshold for a mask
    return Explained(detections, maps)


def _to_image(maps: np.ndarray, padded, resized, size) -> np.ndarray:
    """Feature-map CAMs ``[N, h, w]`` -> ``[N, H, W]`` in [0, 1] over the image: scaled to the padded
    batch, cropped to the resized image, scaled to the original size (pytorch-grad-cam's scaling)."""
    if not len(maps):
        return np.zeros((0, *size), np.float32)
    maps = scale_cam_image(maps, (int(padded[1]), int(padded[0])))[:, :resized[0], :resized[1]]
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = np.stack([cv2.resize(m, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR) for m in maps])
    return scale_cam_image(maps).astype(np.float32)


def map_of(explained: Explained, method: str, detection: int) -> np.ndarray:
    """The ``[H, W]`` map of ``method`` for kept detection ``detection`` (EigenCAM: the image's)."""
    maps = explained.maps[method]
    return maps[0] if method in GRADIENT_FREE_CAMS else maps[detection]


def box_stats(heatmap: np.ndarray, box) -> dict:
    """:func:`heatmap_stats` plus ``peak_in_box`` (the maximum inside the box) and ``energy_in_box``
    (the map's share inside it), by the pointing-game functions of :mod:`emca_vis.explain.metrics`."""
    mask = metrics.boxes_to_masks([[tuple(float(v) for v in box)]], *heatmap.shape)
    stats = heatmap_stats(heatmap)
    stats["peak_in_box"] = bool(metrics.pointing_game(heatmap[None], mask, 0)[0]) if mask.any() else False
    stats["energy_in_box"] = round(float(metrics.energy_pointing_game(heatmap[None], mask)[0]), 4)
    return stats


# ------------------------------------------------------------------ gradcam figure -------

def explain_image(loaded, image: Image.Image, methods, args) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """One detector on one image: the figure row, the JSON entry and the heatmaps by key
    ``<detection>/<method>`` (``all/eigencam`` for the image's EigenCAM)."""
    pixels = loaded.pixels(image)
    explained = explain_detections(loaded, pixels, methods, args.layer, args.score_threshold, args.max_detections)
    found = explained.detections
    names = loaded.class_names
    columns, arrays, entries, drawn = [], {}, [], []
    for method in methods:
        if method in GRADIENT_FREE_CAMS:
            heatmap = explained.maps[method][0]
            arrays[f"all/{method}"] = heatmap
            columns.append((f"{method} (image)", heatmap, found["boxes"].tolist()))
    for d, (box, label, score) in enumerate(zip(found["boxes"].tolist(), found["labels"].tolist(),
                                                found["scores"].tolist())):
        name = names[label - 1]
        explanations = []
        for method in methods:
            heatmap = map_of(explained, method, d)
            explanations.append({"method": method, "heatmap": box_stats(heatmap, box)})
            if method not in GRADIENT_FREE_CAMS:
                arrays[f"{d}/{method}"] = heatmap
                columns.append((f"#{d} {name} {score:.2f}\n{method}", heatmap, [box]))
        entries.append({"index": d, "box": [round(v, 2) for v in box], "label": label, "class": name,
                        "score": round(score, 4), "explanations": explanations})
        drawn.append({"box": box, "text": f"#{d} {name} {score:.2f}",
                      "mask": found["masks"][d].numpy() if "masks" in found else None})
    entry = {"model": loaded.label, "layer": args.layer, "score_threshold": args.score_threshold,
             "detections": entries}
    caption = (f"{len(entries)} detection{'s' * (len(entries) != 1)} >= {args.score_threshold:g}" if entries
               else f"no detection >= {args.score_threshold:g}")
    row = {"label": loaded.label, "image": pixels.permute(1, 2, 0).numpy(), "caption": caption, "maps": columns,
           "detections": drawn}
    return row, entry, arrays


# ------------------------------------------------------------------ gradcam evaluate -------

def match(boxes: Tensor, labels: Tensor, truth_boxes: Tensor, truth_labels: Tensor,
          iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """``(detection, object)`` pairs: detections in the given order (best first) each take the
    unmatched object of their label that they overlap most, if by at least ``iou`` (COCO's greedy rule)."""
    if not len(boxes) or not len(truth_boxes):
        return []
    overlaps = box_iou(boxes.float(), truth_boxes.float())
    taken: set[int] = set()
    pairs = []
    for d in range(len(boxes)):
        candidates = [(float(overlaps[d, g]), g) for g in range(len(truth_boxes))
                      if g not in taken and int(truth_labels[g]) == int(labels[d]) and overlaps[d, g] >= iou]
        if candidates:
            g = max(candidates)[1]
            taken.add(g)
            pairs.append((d, g))
    return pairs


def score_heatmaps(loaded, spec: str, split: str, n: int, methods, args, tolerance_of) -> list[dict]:
    """One row per method: the heatmaps of the kept detections that match a ground-truth object
    (:func:`match`) scored by the pointing game (the peak less than ``tolerance_of(min(H, W))``
    pixels from the object's mask, its box where the data have no masks; per detection, and per
    class then averaged) and the energy inside the object's box; ``recall`` is the share of
    objects matched (%)."""
    dataset = build_detection_dataset(spec, split, masks=True, length=n, image_size=loaded.input_size)
    unknown = [name for name in dataset.classes if name not in loaded.class_names]
    if unknown:
        raise ClassMismatch(f"{loaded.path}: the detector has no class {unknown[0]!r} of {spec} "
                            f"({len(unknown)} of its {len(dataset.classes)} classes are unknown to it)")
    to_model = torch.tensor([0] + [loaded.class_names.index(name) + 1 for name in dataset.classes])
    scores = {method: {"pointing_game": [], "energy_pointing_game": []} for method in methods}
    classes = []  # the class of each matched object, for the per-class pointing game
    objects = matched = 0
    for index in range(min(n, len(dataset))):
        pixels, target = dataset[index]
        explained = explain_detections(loaded, pixels, methods, args.layer, args.score_threshold,
                                       args.max_detections)
        found = explained.detections
        truth_labels = to_model[target["labels"]]
        pairs = match(found["boxes"], found["labels"], target["boxes"], truth_labels)
        objects += len(truth_labels)
        matched += len(pairs)
        height, width = pixels.shape[-2:]
        tolerance = tolerance_of(min(height, width))
        for d, g in pairs:
            classes.append(int(truth_labels[g]))
            box = metrics.boxes_to_masks([[tuple(target["boxes"][g].tolist())]], height, width)
            mask = target["masks"][g].numpy().astype(bool)[None] if "masks" in target else box
            mask = mask if mask.any() else box
            for method in methods:
                heatmap = map_of(explained, method, d)[None]
                scores[method]["pointing_game"].append(bool(metrics.pointing_game(heatmap, mask, tolerance)[0]))
                scores[method]["energy_pointing_game"].append(float(metrics.energy_pointing_game(heatmap, box)[0]))
    if not matched:
        raise ClassMismatch(f"{loaded.path}: none of its detections (score >= {args.score_threshold:g}) matches "
                            f"an object of {spec} (same class, IoU >= {MATCH_IOU}); lower --score-threshold")
    rows = []
    for method in methods:
        row = {"model": loaded.label, "method": method, "n": matched, "objects": objects,
               "recall": round(100 * matched / max(objects, 1), 2)}
        for key, values in scores[method].items():
            summary = metrics.summarize(values, proportion=key == "pointing_game", limits=metrics.LIMITS.get(key))
            row.update({f"{key}_{stat}": summary[stat] for stat in ("mean", "ci_low", "ci_high")})
        per_class = metrics.per_class_mean(scores[method]["pointing_game"], classes)
        row.update({f"pointing_game_per_class_{stat}": per_class[stat] for stat in ("mean", "ci_low", "ci_high")},
                   pointing_game_classes=per_class["classes"])
        rows.append(row)
    return rows


# ------------------------------------------------------------------ attention -------

class BackboneView(nn.Module):
    """A detector's backbone ResNet on a list of images ``[3, H, W]`` in [0, 1], resized and
    normalised by the detector's own transform: what the attention statistics run."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images) -> Tensor:
        batch, _ = self.detector.transform(list(images))
        return self.detector.backbone.body.forward_stages(batch.tensors)[-1]


def largest_object(labels: Tensor, boxes: Tensor, masks: Tensor | None = None) -> int | None:
    """The 0-based class of the largest object (by mask area, else box area); None without objects."""
    if not len(labels):
        return None
    area = masks.flatten(1).sum(1) if masks is not None and len(masks) else (
        (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return int(labels[int(torch.argmax(area.float()))]) - 1


def attention_dataset(loaded, spec: str, split: str, n: int, batch_size: int):
    """``(model, batches, total)`` for :func:`emca_vis.attention.analyse`: the first ``n`` images of
    the split, each labelled with its largest object's class (images without objects left out)."""
    dataset = build_detection_dataset(spec, split, masks=True, length=n, image_size=loaded.input_size)
    if list(dataset.classes) != loaded.class_names:
        raise UserError(f"{loaded.path}: its classes differ from those of {spec}")
    items = []
    for index in range(min(n, len(dataset))):
        pixels, target = dataset[index]
        label = largest_object(target["labels"], target["boxes"], target.get("masks"))
        if label is not None:
            items.append((pixels, label))
    if not items:
        raise UserError(f"{spec} {split}: none of the first {n} images has an object")
    batches = [([p for p, _ in items[i:i + batch_size]], torch.tensor([l for _, l in items[i:i + batch_size]]))
               for i in range(0, len(items), batch_size)]
    return BackboneView(loaded.model), batches, len(batches)


def attention_images(loaded, images: list[Image.Image], score_threshold: float = 0.5):
    """``(model, batches)`` for single images: each labelled with the class of its largest detection
    scoring at least ``score_threshold`` (else its best detection); images without one are left out,
    and their names returned."""
    pixels = [loaded.pixels(image) for image in images]
    labels, chosen, skipped = [], [], []
    for index, output in enumerate(loaded.task.predict(loaded, pixels)):
        sure = output["scores"] >= score_threshold
        picked = sure if sure.any() else torch.arange(len(output["scores"])) == 0
        label = largest_object(output["labels"][picked], output["boxes"][picked])
        if label is None:
            skipped.append(index)
        else:
            labels.append(label)
            chosen.append(pixels[index])
    batches = [(chosen, torch.tensor(labels))] if chosen else []
    return BackboneView(loaded.model), batches, skipped

