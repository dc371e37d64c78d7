"""Quality metrics for heatmap explanations: localisation against object masks, and faithfulness.

Localisation (does the heatmap point at the object?):

* **Pointing game** -- Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016.
  A hit when the heatmap's maximum lies less than ``tolerance`` pixels (Euclidean) from the object
  mask, as TorchRay implements it; per image, or per class then averaged (the paper's figure).
* **Energy-based pointing game** -- Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
  Convolutional Neural Networks", CVPR Workshops 2020. Share of the heatmap's total mass that falls
  inside the object mask (no arbitrary tolerance, uses the whole map rather than its peak).

Faithfulness (does the model actually depend on the pixels the heatmap ranks highest?):

* **Deletion / insertion** -- Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for
  Explanation of Black-box Models", BMVC 2018. Remove (deletion) or restore (insertion) pixels in
  order of heatmap value and track the target-class probability; the area under that curve is
  lower (deletion) / higher (insertion) for a more faithful heatmap.
* **ROAD** -- Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods",
  ICML 2022 (RemOve And Debias): pixels are removed by noisy linear imputation from their
  neighbours, so the removal itself leaks less information about *where* the mask was. Computed
  with pytorch-grad-cam's implementation.

Statistics and annotations: :func:`summarize` (mean with a Student-t interval, or a Wilson score
interval -- Wilson, JASA 1927 -- for hit rates) and :func:`read_voc_boxes` (Pascal VOC XML boxes, the
format of the ImageNet validation bounding boxes).

Conventions: heatmaps are float arrays ``[N, H, W]`` (non-negative, any scale) at input resolution;
masks are bool ``[N, H, W]``; boxes are ``(x0, y0, x1, y1)`` pixel coordinates, 0-based, with ``x1``
and ``y1`` exclusive; images are normalised float tensors ``[N, 3, H, W]``; targets are class
indices ``[N]``; the model maps images to logits ``[N, classes]`` (put it in ``eval()`` mode first).
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import stats

from ..validation import read_bytes

Box = tuple[float, float, float, float]

SUBSTRATES = ("blur", "zero")


# ----------------------------------------------------------------------------------------------
# input checks


def _heatmaps(heatmaps, name: str = "heatmaps") -> np.ndarray:
    maps = np.asarray(heatmaps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"{name} must have shape [N, H, W], got {maps.shape}")
    if not np.isfinite(maps).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return maps


def _masks(masks, shape: tuple[int, ...]) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.shape != shape:
        raise ValueError(f"masks must have the heatmaps' shape {shape}, got {masks.shape}")
    return masks.astype(bool, copy=False)


def _targets(targets, n: int) -> list[int]:
    if isinstance(targets, torch.Tensor):
        targets = targets.tolist()
    targets = [int(t) for t in np.asarray(targets).reshape(-1)]
    if len(targets) != n:
        raise ValueError(f"need one target per image: {n} images, {len(targets)} targets")
    return targets


def _images_and_maps(images: torch.Tensor, heatmaps) -> np.ndarray:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor [N, C, H, W], got {getattr(images, 'shape', type(images))}")
    maps = _heatmaps(heatmaps)
    n, _, height, width = images.shape
    if maps.shape != (n, height, width):
        raise ValueError(f"heatmaps must have shape {(n, height, width)} to match the images, got {maps.shape}")
    return maps


# ----------------------------------------------------------------------------------------------
# localisation


def boxes_to_masks(boxes_per_image: Sequence[Sequence[Box]], height: int, width: int) -> np.ndarray:
    """Bool masks ``[N, height, width]``, each the union of one image's boxes ``(x0, y0, x1, y1)``.

    ``x1``/``y1`` are exclusive; fractional coordinates are widened to whole pixels (floor of the
    start, ceiling of the end); boxes are clipped to the image, and one entirely outside it (or empty
    after clipping) adds nothing. An image without boxes gets an all-False mask.
    """
    masks = np.zeros((len(boxes_per_image), int(height), int(width)), dtype=bool)
    for i, boxes in enumerate(boxes_per_image):
        for box in boxes:
            if len(box) != 4:
                raise ValueError(f"image {i}: a box is (x0, y0, x1, y1), got {box!r}")
            x0, y0, x1, y1 = box
            x0, x1 = max(0, math.floor(x0)), min(int(width), math.ceil(x1))
            y0, y1 = max(0, math.floor(y0)), min(int(height), math.ceil(y1))
            if x1 > x0 and y1 > y0:
                masks[i, y0:y1, x0:x1] = True
    return masks


POINTING_TOLERANCE = 15  # pixels at the original resolution (Zhang et al.; TorchRay's default)
POINTING_REFERENCE_SIZE = 224  # the input size that tolerance belongs to


def pointing_tolerance(size: int, tolerance: float = POINTING_TOLERANCE,
                       reference: int = POINTING_REFERENCE_SIZE) -> float:
    """The pointing game's tolerance for ``size``-pixel inputs: ``tolerance`` pixels at ``reference``
    pixels, scaled with the input and not rounded (15 px at 224 px is 4.29 px at 64 px), so a small
    image grants the same share of its width as the original protocol does at 224 px."""
    return tolerance * size / reference


def pointing_game(heatmaps, masks, tolerance: float = POINTING_TOLERANCE) -> np.ndarray:
    """Pointing-game hits ``[N]`` (bool), as TorchRay's ``PointingGame.evaluate`` computes them.

    Zhang et al., "Top-down Neural Attention by Excitation Backprop" (ECCV 2016; IJCV 2018), in
    TorchRay's implementation (``torchray/benchmark/pointing_game.py``): the point is the heatmap's
    maximum, the first in row-major order when several pixels share it (TorchRay's
    ``_saliency_to_point``: ``argmax`` of the flattened map); it is a hit when some mask pixel lies at
    a Euclidean distance *strictly below* ``tolerance`` (``(v - y)^2 + (u - x)^2 < tolerance^2``,
    15 px at the original resolution). ``tolerance`` 1 (and 0, where TorchRay would never hit)
    asks for the peak on the mask itself; scale it for small inputs with :func:`pointing_tolerance`.
    An empty mask raises ``ValueError`` (TorchRay would count a miss, Quantus a hit; its benchmark
    never asks). Per-class averaging, as the paper reports it: :func:`per_class_mean`.
    """
    maps = _heatmaps(heatmaps)
    masks = _masks(masks, maps.shape)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    radius = max(float(tolerance), 1.0)
    hits = np.zeros(len(maps), dtype=bool)
    width = maps.shape[2]
    for i, (heatmap, mask) in enumerate(zip(maps, masks)):
        inside = np.argwhere(mask)
        if len(inside) == 0:
            raise ValueError(f"image {i}: empty mask, the pointing game is undefined")
        row, col = divmod(int(np.argmax(heatmap)), width)
        squared = ((inside[:, 0] - row) ** 2 + (inside[:, 1] - col) ** 2).min()
        hits[i] = squared < radius ** 2
    return hits


def per_class_mean(scores, labels, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The mean of per-class means (Zhang et al. report the pointing game so: each class's hit rate,
    then their mean; TorchRay's ``PointingGame.accuracy``), with a percentile-bootstrap interval over
    images (the same resamples as :mod:`emca_vis.stats`; a class absent from a resample is left out
    of its mean). Only classes with images count (TorchRay averages over all its classes, giving an
    absent one 0; on VOC and COCO every class has images). Returns ``{mean, ci_low, ci_high, classes}``."""
    from ..stats import percentile_intervals, resampled_means

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"need one label per score: got shapes {scores.shape} and {labels.shape}")
    classes = np.unique(labels)
    member = (labels[None] == classes[:, None]).astype(np.float64)  # [C, n]
    point = float(np.mean([scores[labels == c].mean() for c in classes]))
    sampled = resampled_means(np.concatenate([member * scores, member]), resamples, seed)  # [2C, B]
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = sampled[: len(classes)] / sampled[len(classes):]
    low, high = percentile_intervals(np.nanmean(rates, axis=0), level)
    return {"mean": point, "ci_low": float(low), "ci_high": float(high), "classes": int(classes.size)}


def energy_pointing_game(heatmaps, masks) -> np.ndarray:
    """Energy-based pointing game ``[N]`` (float in [0, 1]): heatmap mass inside the mask / total mass.

    Wang et al., "Score-CAM" (CVPR Workshops 2020), section 5.2: the saliency map is multiplied by the
    binarised target region and summed, ``sum_in / (sum_in + sum_out)``; Score-CAM's region is the
    bounding box, here the object mask where the data has one (a box mask otherwise). Negative
    heatmap values count as zero energy (CAMs are non-negative; Quantus' RelevanceMassAccuracy,
    the same ratio, does not clip); an all-zero heatmap scores 0.
    """
    maps = np.clip(_heatmaps(heatmaps), 0.0, None)
    masks = _masks(masks, maps.shape)
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


# ----------------------------------------------------------------------------------------------
# faithfulness


def blur_substrate(images: torch.Tensor) -> torch.Tensor:
    """The ``"blur"`` substrate of :func:`deletion_insertion`: each channel Gaussian-blurred with
    sigma = min(H, W) / 16 (14 px at 224 px; at least 0.5) and a kernel of 2 * ceil(3 sigma) + 1 taps,
    reflecting at the border (``cv2.GaussianBlur``). Strong enough to wipe out object detail while
    keeping the image's colours and low frequencies, so the substrate is not far out of distribution.
    """
    _, _, height, width = images.shape
    sigma = max(0.5, min(height, width) / 16)
    size = 2 * math.ceil(3 * sigma) + 1
    array = images.detach().to("cpu", torch.float32).numpy()
    blurred = np.stack([np.stack([cv2.GaussianBlur(channel, (size, size), sigma, sigmaY=sigma,
                                                   borderType=cv2.BORDER_REFLECT_101) for channel in image])
                        for image in array])
    return torch.from_numpy(blurred).to(images.device, images.dtype)


def deletion_insertion(model: torch.nn.Module, images: torch.Tensor, heatmaps, targets, steps: int = 20,
                       batch_size: int = 64, substrate: str = "blur") -> dict[str, np.ndarray]:
    """Deletion and insertion curves and their areas (Petsiuk et al. 2018).

    Pixels are ranked by heatmap value, most salient first (a stable sort: ties keep row-major order).
    At step ``k = 0 .. steps`` the top ``floor(k * H * W / steps)`` pixels (all channels) are taken:
    *deletion* replaces them in the image with the substrate, *insertion* puts them back into the
    substrate. Each point is the softmax probability of the target class; the area under the curve
    uses the trapezoidal rule over x in [0, 1]. Lower deletion AUC and higher insertion AUC mean a
    more faithful heatmap. ``substrate``: ``"blur"`` (:func:`blur_substrate`) or ``"zero"`` (zeros,
    i.e. the dataset mean of normalised images). The ``2 * N * (steps + 1)`` perturbed images go
    through the model under ``torch.no_grad()`` in chunks of ``batch_size``.

    Returns ``deletion_auc`` and ``insertion_auc`` ``[N]``, ``deletion_curve`` and ``insertion_curve``
    ``[N, steps + 1]`` (point 0 of the deletion curve is the unperturbed image's probability).
    """
    maps = _images_and_maps(images, heatmaps)
    n, _, height, width = images.shape
    labels = _targets(targets, n)
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if substrate not in SUBSTRATES:
        raise ValueError(f"substrate must be one of {', '.join(SUBSTRATES)}, got {substrate!r}")
    steps, batch_size, pixels = int(steps), int(batch_size), height * width
    device = images.device

    base = blur_substrate(images) if substrate == "blur" else torch.zeros_like(images)
    # rank[i, p]: position of pixel p in image i's most-salient-first order
    order = np.argsort(-maps.reshape(n, pixels), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(pixels)[None, :].repeat(n, axis=0), axis=1)
    rank = torch.from_numpy(rank).to(device)
    counts = torch.tensor([k * pixels // steps for k in range(steps + 1)], device=device)

    # one job per (curve, image, step): curve 0 = deletion, 1 = insertion
    curve_of = torch.arange(2, device=device).repeat_interleave(n * (steps + 1))
    image_of = torch.arange(n, device=device).repeat_interleave(steps + 1).repeat(2)
    step_of = torch.arange(steps + 1, device=device).repeat(2 * n)
    label_of = torch.tensor(labels, device=device)[image_of]
    probabilities = torch.empty(len(curve_of), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(curve_of), batch_size):
            jobs = slice(start, start + batch_size)
            image, step, curve = image_of[jobs], step_of[jobs], curve_of[jobs]
            taken = rank[image] < counts[step][:, None]                    # [B, H*W]: the top-k pixels
            original = (taken == (curve == 1)[:, None]).view(-1, 1, height, width)
            batch = torch.where(original, images[image], base[image])
            logits = model(batch)
            chosen = torch.softmax(logits.float(), dim=1).gather(1, label_of[jobs][:, None])[:, 0]
            probabilities[jobs] = chosen.double().cpu()
    curves = probabilities.numpy().reshape(2, n, steps + 1)

    def area(curve: np.ndarray) -> np.ndarray:
        return (curve[:, 1:] + curve[:, :-1]).sum(axis=1) / (2 * steps)

    return {"deletion_auc": area(curves[0]), "insertion_auc": area(curves[1]),
            "deletion_curve": curves[0], "insertion_curve": curves[1]}


def road(model: torch.nn.Module, images: torch.Tensor, heatmaps, targets,
         percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90)) -> dict[str, np.ndarray]:
    """ROAD scores ``[N]`` (Rong et al. 2022) via ``pytorch_grad_cam.metrics.road``.

    For each percentile ``p`` the library imputes the pixels at or above the heatmap's ``p``-th
    percentile (``road_morf``, most relevant first) or at or below the ``(100 - p)``-th
    (``road_lerf``, least relevant first) -- so ``100 - p`` percent of the image -- and measures
    ``softmax probability of the target after imputation - before``; the scores are the mean over
    ``percentiles``. Both are usually <= 0. A faithful heatmap gives a strongly negative
    ``road_morf`` (removing what it highlights hurts) and a ``road_lerf`` near 0 (removing what it
    ignores does not); the library's combined score is ``(road_lerf - road_morf) / 2``, higher better.

    Imputation solves a sparse linear system per image and percentile on the CPU (cheap at small
    sizes, seconds per image at 224 px) and adds Gaussian noise (std 0.01) from torch's global RNG,
    so seed it (``torch.manual_seed``) for repeatable numbers. All ``N`` images go through the model
    in one batch per percentile: chunk large sets before calling.
    """
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    maps = _images_and_maps(images, heatmaps).astype(np.float32)
    labels = _targets(targets, len(maps))
    if len(percentiles) == 0 or not all(0 < p < 100 for p in percentiles):
        raise ValueError(f"percentiles must be a non-empty list of values in (0, 100), got {percentiles!r}")
    wanted = [ClassifierOutputSoftmaxTarget(label) for label in labels]
    percentiles = list(percentiles)
    with warnings.catch_warnings():
        # the library hands torch tensors to np.argwhere, which NumPy 2 flags as deprecated
        warnings.filterwarnings("ignore", message="__array_wrap__ must accept context", category=DeprecationWarning)
        morf = ROADMostRelevantFirstAverage(percentiles)(images, maps, wanted, model)
        lerf = ROADLeastRelevantFirstAverage(percentiles)(images, maps, wanted, model)
    return {"road_morf": np.asarray(morf, dtype=np.float64).reshape(-1),
            "road_lerf": np.asarray(lerf, dtype=np.float64).reshape(-1)}


# ----------------------------------------------------------------------------------------------
# statistics and annotations


LIMITS = {"energy_pointing_game": (0.0, 1.0), "deletion_auc": (0.0, 1.0), "insertion_auc": (0.0, 1.0)}  # ranges


def summarize(values, proportion: bool = False, confidence: float = 0.95,
              limits: tuple[float, float] | None = None) -> dict[str, float | int]:
    """``{"n", "mean", "ci_low", "ci_high"}`` as plain Python numbers (JSON-serialisable).

    ``proportion=True`` (0/1 values such as pointing-game hits): Wilson score interval, which stays
    inside [0, 1] and behaves at rates near 0 or 1. Otherwise: mean +- t_{(1+confidence)/2, n-1} *
    sd / sqrt(n) (Student t, sample standard deviation); with one value the interval is the mean.
    ``limits``: the range the measure cannot leave (energy shares: (0, 1)); the t interval is cut
    to it (with few images it can reach past it).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = int(values.size)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    if not np.isfinite(values).all():
        raise ValueError("summarize got NaN or infinite values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(values.mean())
    if proportion:
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError("proportion=True needs values that are 0/1 (or False/True)")
        z = float(stats.norm.ppf(0.5 + confidence / 2))
        denominator = 1 + z * z / n
        centre = (mean + z * z / (2 * n)) / denominator
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denominator
        low, high = max(0.0, centre - half), min(1.0, centre + half)
    elif n == 1:
        low = high = mean
    else:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(values.std(ddof=1)) / math.sqrt(n)
        low, high = mean - half, mean + half
        if limits is not None:
            low, high = max(limits[0], low), min(limits[1], high)
    return {"n": n, "mean": mean, "ci_low": float(low), "ci_high": float(high)}


def read_voc_boxes(path) -> list[tuple[str, tuple[int, int, int, int]]]:
    """``[(name, (x0, y0, x1, y1)), ...]`` for each ``<object>`` of a Pascal VOC XML annotation.

    VOC (and the ImageNet validation boxes that use its format) numbers pixels from 1 and includes
    ``xmax``/``ymax``; the boxes returned follow this module's convention, 0-based with exclusive
    ends: ``(xmin - 1, ymin - 1, xmax, ymax)``. Non-integer coordinates are rounded. A file that is
    not well-formed XML, is not an ``<annotation>``, or has an object without a name or a complete,
    numeric, non-inverted ``<bndbox>`` raises ``ValueError`` naming the file. A file without objects
    gives ``[]``; a missing file raises ``FileNotFoundError``; anything but a regular file of at most
    16 MB is a ``UserError``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    data = read_bytes(path, "file", 16 << 20)  # a FIFO named like the file would block the parser
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise ValueError(f"{path}: not a valid Pascal VOC XML file ({error})") from None
    if root.tag != "annotation":
        raise ValueError(f"{path}: not a Pascal VOC annotation (root element <{root.tag}>)")
    boxes = []
    for number, item in enumerate(root.iter("object"), 1):
        name = (item.findtext("name") or "").strip()
        box = item.find("bndbox")
        if not name or box is None:
            raise ValueError(f"{path}: object {number} has no <name> or no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (int(round(float(box.findtext(tag)))) for tag in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{path}: object {number} ({name}) needs numeric xmin, ymin, xmax, ymax") from None
        if xmax < xmin or ymax < ymin:
            raise ValueError(f"{path}: object {number} ({name}) has an inverted box "
                             f"({xmin}, {ymin}, {xmax}, {ymax})")
        boxes.append((name, (xmin - 1, ymin - 1, xmax, ymax)))
    return boxes
