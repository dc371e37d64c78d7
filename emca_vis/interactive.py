"""What the interactive app (``streamlit run app/main.py``) shows, computed without any UI.

The app only lays out what these functions return: checkpoint folders and model choices,
input images (shapes samples with their ground truth, uploads, a folder of dropped images),
per-model explanations of a clean and a corrupted view, per-image attention statistics and
figures, model facts from checkpoint metadata, and robustness tables and plots.

Every function here is plain Python (no Streamlit) and is tested like the rest of the package.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.transforms import v2 as T  # noqa: E402
from torchvision.transforms.functional import to_pil_image  # noqa: E402

from .attention.analysis import AttentionStats  # noqa: E402
from .attention.plots import OKABE_ITO, STYLE, scale_weights_figure, scaling_figure, source_share_figure  # noqa: E402
from .checkpoint import read_metadata  # noqa: E402
from .data.shapes import SHAPE_CLASSES, render_sample  # noqa: E402
from .detection.data import MULTISHAPES_CLASSES, render_scene  # noqa: E402
from .detection.explain import DETECTION_METHODS  # noqa: E402
from .demo import DEMO_DETECTORS, DEMO_MODELS, demo_detector_dir, demo_dir  # noqa: E402
from .errors import UserError  # noqa: E402
from .explain import heatmaps, predict, resolve_target  # noqa: E402
from .explain.heatmaps import SIGNAL_CAMS, LayerSignals, cam_from_signals, layer_signals  # noqa: E402
from .explain.figures import blend  # noqa: E402
from .explain.stability import stability  # noqa: E402
from .explain.metrics import (boxes_to_masks, energy_pointing_game, pointing_game, pointing_tolerance,  # noqa: E402
                               read_voc_boxes)
from .images import IMAGE_SUFFIXES, ImageError, load_image  # noqa: E402
from .inputs import LoadedModel, load_models  # noqa: E402
from .profile import count_gflops, count_parameters  # noqa: E402
from .data import ResizeCenterCrop  # noqa: E402
from .robustness import CORRUPTIONS, SEVERITIES, corrupt, evaluate  # noqa: E402
from .robustness.results import MAX_RESULTS_BYTES, parse_results  # noqa: E402
from .validation import regular_file  # noqa: E402
from .robustness.results import read_results as read_results_file  # noqa: E402  (a listed results file)

DEMO_FOLDER = "demo checkpoints"
DEMO_DETECTOR_FOLDER = "demo detectors"
DEFAULT_MODELS = ("resnet18", "resnet18_eca", "resnet18_emca_eca")
SAMPLE_SPLIT = "test"
SAMPLE_COUNT = 24
DEFAULT_SAMPLE = 7  # the image `make demo` writes to runs/demo/sample.png
SCENE_SIZE = 128  # px: multishapes scenes, the demo detectors' training size
MAX_PIXELS = 40_000_000  # uploads and dropped images above this are refused before decoding
MAX_UPLOAD_BYTES = 20 << 20  # as streamlit's server.maxUploadSize in .streamlit/config.toml
MAX_RESULTS_UPLOAD_BYTES = 4 << 20  # an uploaded results JSON; a full run of 100 models is under 1 MB
DISPLAY_SIZE = 224
BOX_COLOUR = (0, 230, 118)  # green: stands out on the inferno colour map
SEARCH_DEPTH = 3  # checkpoint folders are looked for this deep under the root
PLAIN_STYLE = {**STYLE, "text.parse_math": False}  # labels from files are text, never $math$ to parse

# The models are shared by every browser session; hooks (CAMs, attention recording) are not
# thread-safe, so one model computation runs at a time (two CPU cores gain nothing from more).
_MODEL_LOCK = threading.RLock()


# ----------------------------------------------------------------------------------------------
# user text on the page

# Every ASCII punctuation character may be backslash-escaped in (GitHub-flavoured) Markdown, and
# every Markdown construct (links, images, HTML, code, emphasis, Streamlit's :directives: and
# $math$, autolinks such as http://... or www.x.y) needs one of them.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def escape_markdown(text: object) -> str:
    """``text`` as one line of literal text for ``st.markdown``, ``st.error``, captions and
    labels: every Markdown or HTML construct in it shows as typed, nothing is rendered."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", " ".join(str(text).split()))


def one_line(error: BaseException, limit: int = 500) -> str:
    """An exception as one line of at most ``limit`` characters (not yet escaped)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------
# where checkpoints and images come from


def offered(paths, root: Path, skipped: list[str] | None = None) -> list[Path]:
    """The ``paths`` the app may open (see :func:`unlisted_reason`); the others, with their
    reason, go to ``skipped``."""
    kept = []
    for path in paths:
        reason = unlisted_reason(path, root)
        if reason is None:
            kept.append(path)
        elif skipped is not None:
            skipped.append(f"{path.name}: {reason}")
    return kept


def unlisted_reason(path: str | Path, root: str | Path) -> str | None:
    """Why ``path`` is not offered: None for a regular file that is, links resolved, inside
    ``root``; otherwise a short reason. Nothing is opened, so a FIFO or device cannot block."""
    try:
        resolved = Path(path).resolve(strict=True)
        inside = resolved.is_relative_to(Path(root).resolve())
    except FileNotFoundError:
        return "a broken link"
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
        return f"cannot be read ({getattr(error, 'strerror', None) or one_line(error)})"
    if not inside:
        return "a link to outside the listed folder"
    try:
        regular_file(resolved)
    except UserError as error:
        return str(error).removeprefix(f"{resolved}: ")
    return None


def checkpoint_root() -> Path:
    """The only place the app lists checkpoint folders from: ``$EMCA_VIS_CHECKPOINT_ROOT`` or ``runs/``."""
    return Path(os.environ.get("EMCA_VIS_CHECKPOINT_ROOT", "runs")).expanduser()


def image_dir() -> Path:
    """The folder whose images the app offers: ``$EMCA_VIS_IMAGE_DIR`` or ``runs/images``."""
    return Path(os.environ.get("EMCA_VIS_IMAGE_DIR", "runs/images")).expanduser()


# emca-vis checkpoints, plain safetensors and torch.save files; a foreign file loads when its key
# names say its model (plain and timm-SE ResNets), else the app shows the loader's line.
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".pth.tar")


def checkpoint_folders(root: str | Path | None = None) -> dict[str, Path]:
    """``{name: folder}``: the demo checkpoints and demo detectors, then every folder under ``root``
    (up to :data:`SEARCH_DEPTH` levels) that holds checkpoint files (:data:`CHECKPOINT_SUFFIXES`).
    Names are paths relative to the root; folders reached through links that leave the root are not listed."""
    folders = {DEMO_FOLDER: demo_dir()}
    if demo_detector_dir().is_dir():
        folders[DEMO_DETECTOR_FOLDER] = demo_detector_dir()
    root = Path(root) if root is not None else checkpoint_root()
    if not root.is_dir():
        return folders
    resolved_root = root.resolve()
    found = []
    for current, dirs, files in os.walk(root, followlinks=False):
        depth = len(Path(current).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < SEARCH_DEPTH else []
        if any(f.endswith(CHECKPOINT_SUFFIXES) for f in files):
            path = Path(current)
            if path.resolve().is_relative_to(resolved_root):
                found.append(path)
    for path in sorted(found):
        relative = path.relative_to(root).as_posix()
        folders[f"{root.name}/{relative}" if relative != "." else root.name] = path
    return folders


def checkpoint_options(folder: str | Path, root: str | Path | None = None,
                       skipped: list[str] | None = None) -> dict[str, Path]:
    """``{label: checkpoint}`` of a folder's checkpoint files, demo models in their usual
    order. The label is the model name from the metadata, or the file name where that is not
    unique or not readable. Only regular files whose links resolve inside ``root`` (default: the
    folder) are offered; the others are appended to ``skipped`` as ``"name: reason"``."""
    folder = Path(folder)
    root = Path(root) if root is not None else folder
    listed = sorted(p for p in folder.iterdir() if p.name.endswith(CHECKPOINT_SUFFIXES)) if folder.is_dir() else []
    paths = offered(listed, root, skipped)
    names = {}
    for path in paths:
        try:
            names[path] = read_metadata(path)["model"]
        except UserError:
            names[path] = path.stem
    counts = Counter(names.values())
    options = {(name if counts[name] == 1 else path.stem): path for path, name in names.items()}
    order = {name: i for i, name in enumerate(DEMO_MODELS + DEMO_DETECTORS)}
    return dict(sorted(options.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def default_models(labels: Sequence[str]) -> list[str]:
    """Plain, ECA and EMCA-ECA when offered (the demo detectors when they are), otherwise the first three."""
    for defaults in (DEFAULT_MODELS, DEMO_DETECTORS):
        chosen = [label for label in defaults if label in labels]
        if len(chosen) == len(defaults):
            return chosen
    return list(labels[:3])


def load_model(path: str | Path, label: str | None = None) -> LoadedModel:
    """One checkpoint, labelled ``label`` (default: its model name); an error names the file."""
    errors: list[str] = []
    try:
        loaded = load_models([path], errors, task=None)[0]
    except UserError:
        raise UserError(errors[0] if errors else f"{path}: cannot be loaded") from None
    if label:
        loaded.label = label
    return loaded


# ----------------------------------------------------------------------------------------------
# input images


@dataclass
class InputImage:
    """The image every panel looks at, with its object mask (pixels of ``image``) when known."""

    name: str
    image: Image.Image
    mask: np.ndarray | None = None
    label: str | None = None  # ground-truth class name, when known
    objects: tuple[tuple[str, np.ndarray], ...] = ()  # a scene's objects: (class name, bool mask [H, W])

    @cached_property
    def key(self) -> str:
        """A content hash: the cache key of everything computed from this image (hashed once)."""
        digest = hashlib.sha1(f"{self.image.size}{self.image.mode}".encode())
        digest.update(self.image.tobytes())
        if self.mask is not None:
            digest.update(np.packbits(self.mask).tobytes())
        for name, mask in self.objects:
            digest.update(name.encode())
            digest.update(np.packbits(mask).tobytes())
        return digest.hexdigest()[:16]


def sample_names(count: int = SAMPLE_COUNT) -> list[str]:
    """Display names of the shapes samples offered, ``"#7 star"``."""
    return [f"#{i} {SHAPE_CLASSES[render_sample(0, SAMPLE_SPLIT, i, 16).label]}" for i in range(count)]


def sample_image(index: int, size: int = 64) -> InputImage:
    """Sample ``index`` of the shapes test split at ``size`` px, with its mask and class."""
    sample = render_sample(0, SAMPLE_SPLIT, index, size)
    label = SHAPE_CLASSES[sample.label]
    return InputImage(f"shapes {SAMPLE_SPLIT} #{index} ({label})", sample.image, sample.mask, label)


def scene_names(count: int = SAMPLE_COUNT) -> list[str]:
    """Display names of the multishapes scenes offered to detectors, ``"#2 square, circle"``."""
    return [f"#{i} " + ", ".join(MULTISHAPES_CLASSES[label] for label, _ in
                                 render_scene(0, SAMPLE_SPLIT, i, SCENE_SIZE, draw=False)[1]) for i in range(count)]


def scene_image(index: int, size: int = SCENE_SIZE) -> InputImage:
    """Scene ``index`` of the multishapes test split with its objects (the detectors' samples)."""
    image, objects = render_scene(0, SAMPLE_SPLIT, index, size)
    return InputImage(f"multishapes {SAMPLE_SPLIT} #{index}", image,
                      objects=tuple((MULTISHAPES_CLASSES[label], mask) for label, mask in objects))


def upload_image(name: str, data: bytes, max_pixels: int = MAX_PIXELS) -> InputImage:
    """An uploaded file as an image; :class:`ImageError` with one line naming ``name`` otherwise.

    The bytes go through :func:`emca_vis.images.load_image` (every format and mode it reads,
    the same pixel limit checked before decoding)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[:100] or "upload"
    if not data:
        raise ImageError(f"{name}: empty file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(f"{name}: {len(data):,} bytes is over the {MAX_UPLOAD_BYTES:,}-byte upload limit")
    with tempfile.TemporaryDirectory(prefix="emca-vis-upload-") as folder:
        path = Path(folder) / safe
        path.write_bytes(data)
        try:
            image = load_image(path, max_pixels=max_pixels)
        except ImageError as error:
            raise ImageError(str(error).replace(str(path), name)) from None
    return InputImage(name, image)


def folder_images(folder: str | Path | None = None, skipped: list[str] | None = None) -> list[Path]:
    """Images dropped into :func:`image_dir` (or ``folder``), sorted; empty when there are none.

    Only regular files whose links resolve inside the folder are offered (as folder links are
    not followed); the others are appended to ``skipped`` as ``"name: reason"``."""
    folder = Path(folder) if folder is not None else image_dir()
    try:
        entries = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError:
        return []
    return offered(entries, folder, skipped)


def folder_image(path: str | Path, max_pixels: int = MAX_PIXELS, root: str | Path | None = None) -> InputImage:
    """A dropped image; a Pascal VOC file beside it (``<stem>.xml``) gives its ground-truth boxes.

    With ``root``, the image (and the VOC file) must be regular files inside it, links resolved."""
    path = Path(path)
    if root is not None and (reason := unlisted_reason(path, root)) is not None:
        raise ImageError(f"{path.name}: {reason}")
    image = load_image(path, max_pixels=max_pixels)
    xml = path.with_suffix(".xml")
    mask, label = None, None
    if xml.exists() and unlisted_reason(xml, root if root is not None else path.parent) is None:
        try:
            boxes = read_voc_boxes(xml)
        except (ValueError, UserError):
            boxes = []
        if boxes:
            mask = boxes_to_masks([[box for _, box in boxes]], image.height, image.width)[0]
            label = boxes[0][0]
    return InputImage(path.name, image, mask, label)


# ----------------------------------------------------------------------------------------------
# explanations: one model, clean and corrupted


LARGE_INPUT = 128  # px: at and above this, a forward pass is long enough to use every core


def torch_threads(models: Sequence[LoadedModel], setting: str | None = None) -> int:
    """Threads for torch in the app: ``setting`` (``EMCA_VIS_APP_THREADS`` by default) when it is a
    positive integer; otherwise ("auto") one for small models, whose passes are too short to
    split (and whose OpenMP threads would spin-wait when other work shares the cores), and every
    core this process may use for ImageNet-size inputs."""
    setting = os.environ.get("EMCA_VIS_APP_THREADS", "auto") if setting is None else setting
    if setting.strip().isdigit() and int(setting) > 0:
        return int(setting)
    if not any(loaded.input_size >= LARGE_INPUT for loaded in models):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def layer_choices(loaded: LoadedModel) -> list[str]:
    """Target layers for CAMs: the stages, deepest first, then their blocks; for a detector, those
    of its backbone and then its feature pyramid's levels, coarsest first."""
    model = loaded.model.backbone.body if is_detector(loaded) else loaded.model
    stages = [name for name, _ in model.named_children() if name.startswith("layer")][::-1]
    blocks = [f"{stage}.{i}" for stage in stages for i in range(len(model.get_submodule(stage)))]
    if is_detector(loaded):
        from .detection.explain import pyramid_levels

        return stages + [f"fpn.{level}" for level in pyramid_levels(loaded.model)][::-1] + blocks
    return stages + blocks


def class_choices(models: Sequence[LoadedModel]) -> list[str]:
    """Class names of the models, in the first model's order."""
    names: list[str] = []
    for loaded in models:
        names += [name for name in loaded.class_names if name not in names]
    return names


def model_inputs(loaded: LoadedModel, image: Image.Image) -> torch.Tensor:
    """``[1, 3, S, S]`` in [0, 1]: the image after the model's resize and centre crop."""
    return loaded.unnormalise(loaded.preprocess(image)[None])


def model_mask(loaded: LoadedModel, mask: np.ndarray | None) -> np.ndarray | None:
    """An object mask of the original image mapped through the model's resize and centre crop."""
    if mask is None:
        return None
    if is_detector(loaded):  # a detector sees the whole image
        return mask if mask.any() else None
    transform = ResizeCenterCrop(loaded.resize, loaded.input_size, T.InterpolationMode.NEAREST, tensor=False)
    mapped = np.asarray(transform(Image.fromarray(mask.astype(np.uint8) * 255))) >= 128
    return mapped if mapped.any() else None


def views(loaded: LoadedModel, image: Image.Image, corruption: str | None, severity: int,
          seed: int = 0) -> dict[str, torch.Tensor]:
    """``{"clean": x}`` and, with a corruption, ``"corrupted"``: ``[1, 3, S, S]`` in [0, 1].

    Corrupted as the robustness evaluation corrupts (after resize and crop, before
    normalisation), seeded, so a view is the same on every rerun."""
    x = model_inputs(loaded, image)
    out = {"clean": x}
    if corruption:
        out["corrupted"] = corrupt(x, corruption, severity, seed=seed).clamp(0, 1)
    return out


def explain(loaded: LoadedModel, source: InputImage, method: str = "gradcam", target: str | None = None,
            layer: str = "layer4", corruption: str | None = None, severity: int = 3,
            size: int = DISPLAY_SIZE) -> dict:
    """One model on the clean (and corrupted) image: overlays, top-5 and localisation scores.

    ``target``: a class name or index, or None for each view's predicted class. Returns
    ``{"label", "method", "layer", "views": [...]}``, one :func:`explain_view` entry per view.
    """
    out, inputs = [], views(loaded, source.image, corruption, severity)
    for view, x in inputs.items():
        out.append(explain_view(loaded, source, x, view_probabilities(loaded, x), view, method, target, layer, size))
    found = {"label": loaded.label, "method": method, "layer": layer, "views": out}
    if corruption:
        found["stability"] = view_stability(loaded, source, out[0], out[1], inputs["corrupted"], method, layer)
    return found


def view_stability(loaded: LoadedModel, source: InputImage, clean: dict, corrupted: dict, x: torch.Tensor,
                   method: str = "gradcam", layer: str = "layer4") -> dict:
    """The corrupted view's heatmap against the clean one's, for the class the clean view explains
    (:func:`emca_vis.explain.stability.stability` on one image, the library's numbers): ``{"target",
    "rank_correlation", "top_iou", "peak_shift_px", "peak_shift", "flat"[, "pointing_retained"]}``,
    None where a measure is undefined. ``clean``/``corrupted``: :func:`explain_view` entries; ``x``
    the corrupted view. When the corrupted view explains another class (its own prediction), the
    heatmap of the clean view's class is computed for it."""
    heatmap = corrupted["heatmap"]
    if corrupted["target"] != clean["target"]:
        with _MODEL_LOCK:
            heatmap = heatmaps(loaded.model, loaded.normalise(x), [loaded.class_names.index(clean["target"])],
                               method, layer)[0]
    mask = model_mask(loaded, source.mask)
    found = stability(clean["heatmap"][None], heatmap[None], masks=None if mask is None else mask[None],
                      tolerance=pointing_tolerance(loaded.input_size))
    return {"target": clean["target"],
            **{name: float(values[0]) if np.isfinite(values[0]) else None for name, values in found.items()}}


def stability_text(found: dict) -> str:
    """One line of :func:`view_stability`'s numbers, as the app shows them."""
    if found.get("flat"):
        return f"vs clean ({found['target']}): the heatmap is flat (no evidence left)"
    parts = [f"\u03c1 {found['rank_correlation']:.2f}" if found["rank_correlation"] is not None else "\u03c1 -",
             f"top-15% IoU {found['top_iou']:.2f}", f"peak shift {100 * found['peak_shift']:.1f}%"]
    if "pointing_retained" in found:
        retained = found["pointing_retained"]
        parts.append("clean pointing missed" if retained is None else
                     f"pointing hit {'kept' if retained else 'lost'}")
    return f"vs clean ({found['target']}): " + " · ".join(parts)


def view_input(loaded: LoadedModel, source: InputImage, corruption: str | None = None,
               severity: int = 3) -> torch.Tensor:
    """One view ``[1, 3, S, S]`` in [0, 1]: the clean image, or corrupted as in :func:`views`."""
    return views(loaded, source.image, corruption, severity)["corrupted" if corruption else "clean"]


def view_probabilities(loaded: LoadedModel, x: torch.Tensor) -> np.ndarray:
    """Class probabilities ``[classes]`` of one view ``x`` (``[1, 3, S, S]`` in [0, 1])."""
    with _MODEL_LOCK:
        return predict(loaded.model, loaded.normalise(x))[0].numpy()


def view_signals(loaded: LoadedModel, x: torch.Tensor, target: str | None = None,
                 layer: str = "layer4") -> tuple[np.ndarray, LayerSignals]:
    """One pass over view ``x``: its class probabilities ``[classes]`` and the target layer's
    activations and gradients for ``target`` (None: the predicted class), from which
    :func:`explain_view` draws any of the gradient CAMs without running the model again."""
    fixed = resolve_target(target, loaded.class_names)
    with _MODEL_LOCK:
        probs, signals = layer_signals(loaded.model, loaded.normalise(x), layer, None if fixed is None else [fixed])
    return probs[0].numpy(), signals


def explain_view(loaded: LoadedModel, source: InputImage, x: torch.Tensor, probs: np.ndarray, view: str,
                 method: str = "gradcam", target: str | None = None, layer: str = "layer4",
                 size: int = DISPLAY_SIZE, signals: LayerSignals | None = None) -> dict:
    """One view ``x`` (``[1, 3, S, S]`` in [0, 1]) with its probabilities ``probs``: ``{"view",
    "overlay" (uint8 [size, size, 3]), "heatmap", "top5": [(class, probability)], "target",
    "target_probability", "predicted", "pointing", "energy"}``. ``pointing`` (hit or not) and
    ``energy`` (share of the heatmap in the object) are None without a ground-truth mask.

    Views are explained one at a time so that the app recomputes only the view that changed
    (a new severity leaves the clean view as it was); the maps are scaled per image, so they
    equal those of a batch of views. With ``signals`` (:func:`view_signals` of this view, target
    and layer) the gradient CAMs are drawn from them, the same maps without another pass.
    """
    names = loaded.class_names
    fixed = resolve_target(target, names)
    predicted = int(probs.argmax())
    chosen = fixed if fixed is not None else predicted
    with _MODEL_LOCK:
        if signals is not None and method in SIGNAL_CAMS and signals.targets == (chosen,) and signals.layer == layer:
            heatmap = cam_from_signals(loaded.model, signals, method)[0]
        else:
            heatmap = heatmaps(loaded.model, loaded.normalise(x), [chosen], method, layer)[0]
    mask = model_mask(loaded, source.mask)
    top = torch.from_numpy(probs).topk(min(5, len(names))).indices.tolist()
    entry = {
        "view": view,
        "overlay": overlay(x[0].permute(1, 2, 0).numpy(), heatmap, mask, size),
        "heatmap": heatmap,
        "top5": [(names[k], float(probs[k])) for k in top],
        "predicted": names[predicted],
        "target": names[chosen],
        "target_probability": float(probs[chosen]),
        "pointing": None,
        "energy": None,
    }
    if mask is not None:
        tolerance = pointing_tolerance(loaded.input_size)
        entry["pointing"] = bool(pointing_game(heatmap[None], mask[None], tolerance)[0])
        entry["energy"] = float(energy_pointing_game(heatmap[None], mask[None])[0])
    return entry


# ----------------------------------------------------------------------------------------------
# detectors: detections and one heatmap per detection, clean and corrupted

DETECTION_COLOUR = (255, 176, 0)  # amber boxes for detections; ground truth stays green


def is_detector(loaded: LoadedModel) -> bool:
    return loaded.task.name == "detection"


def detection_signals(loaded: LoadedModel, x: torch.Tensor, layer: str, score_threshold: float,
                      max_detections: int):
    """One view ``x`` (``[1, 3, H, W]`` in [0, 1]) through a detector: its kept detections and every
    detection CAM of each (one forward pass, one backward pass per detection), so a method change
    only picks other maps (:func:`emca_vis.detection.explain.explain_detections`)."""
    from .detection.explain import DETECTION_METHODS, explain_detections

    with _MODEL_LOCK:
        return explain_detections(loaded, x[0], DETECTION_METHODS, layer, score_threshold, max_detections)


def detection_view(loaded: LoadedModel, source: InputImage, x: torch.Tensor, explained, view: str,
                   method: str = "gradcam", size: int = DISPLAY_SIZE) -> dict:
    """One view of a detector: ``{"view", "overlay"`` (the image with its detections and the
    ground-truth boxes, uint8 ``[size, size, 3]``), ``"detections": [{"index", "class", "score",
    "box", "overlay"`` (the detection's heatmap with its box), ``"heatmap", "matched"`` (the
    ground-truth object it matches, same class and IoU >= 0.5, or None), ``"pointing", "energy"``
    (of the heatmap against that object; None without one)}]}``."""
    from .detection.explain import map_of, match

    found = explained.detections
    names = loaded.class_names
    image = x[0].permute(1, 2, 0).numpy()
    truth = [(name, _mask_box(mask)) for name, mask in source.objects]
    pairs = {}
    if truth:
        truth_labels = torch.tensor([names.index(n) + 1 if n in names else 0 for n, _ in truth])
        pairs = dict(match(found["boxes"], found["labels"], torch.tensor([b for _, b in truth], dtype=torch.float32),
                           truth_labels))
    height, width = image.shape[:2]
    tolerance = pointing_tolerance(min(height, width))
    detections = []
    for d, (box, label, score) in enumerate(zip(found["boxes"].tolist(), found["labels"].tolist(),
                                                found["scores"].tolist())):
        heatmap = map_of(explained, method, d)
        entry = {"index": d, "class": names[label - 1], "score": float(score), "box": box, "heatmap": heatmap,
                 "matched": None, "pointing": None, "energy": None,
                 "overlay": draw_boxes(overlay(image, heatmap, None, size), [(box, None)], size / max(height, width),
                                       DETECTION_COLOUR)}
        if d in pairs:
            name, mask = source.objects[pairs[d]]
            entry["matched"] = name
            entry["pointing"] = bool(pointing_game(heatmap[None], mask[None], tolerance)[0])
            entry["energy"] = float(energy_pointing_game(heatmap[None], mask[None])[0])
        detections.append(entry)
    scale = size / max(height, width)
    picture = draw_boxes(overlay(image, None, None, size), [(b, None) for _, b in truth], scale, BOX_COLOUR)
    picture = draw_boxes(picture, [(d["box"], f"#{d['index']} {d['class']} {d['score']:.2f}") for d in detections],
                         scale, DETECTION_COLOUR)
    return {"view": view, "overlay": picture, "detections": detections, "has_truth": bool(truth)}


def _mask_box(mask: np.ndarray) -> list[float]:
    """``[x0, y0, x1, y1]`` (exclusive ends) of a non-empty bool mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def draw_boxes(picture: np.ndarray, boxes: Sequence[tuple[Sequence[float], str | None]], scale: float,
               colour: tuple[int, int, int]) -> np.ndarray:
    """``picture`` (uint8 ``[h, w, 3]``) with each ``(box, text)`` drawn, boxes in the original
    image's pixels scaled by ``scale``; the text above the box, or inside it at the top edge."""
    result = Image.fromarray(picture)
    draw = ImageDraw.Draw(result)
    line = max(1, picture.shape[1] // 112)
    for box, text in boxes:
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=line)
        if text:
            left, top, right, bottom = draw.textbbox((0, 0), text)
            y = y0 - (bottom - top) - 3 if y0 >= bottom - top + 3 else y0 + line
            draw.rectangle((x0, y, x0 + right - left + 3, y + bottom - top + 2), fill=colour)
            draw.text((x0 + 2 - left, y + 1 - top), text, fill=(0, 0, 0))
    return np.asarray(result)


def input_views(loaded: LoadedModel, source: InputImage, corruption: str | None = None, severity: int = 3,
                size: int = DISPLAY_SIZE) -> dict[str, np.ndarray]:
    """``{"clean": uint8 [size, size, 3], "corrupted": ...}``: what ``loaded`` sees, with the box."""
    mask = model_mask(loaded, source.mask)
    return {view: overlay(x[0].permute(1, 2, 0).numpy(), None, mask, size)
            for view, x in views(loaded, source.image, corruption, severity).items()}


def overlay(image: np.ndarray, heatmap: np.ndarray | None = None, mask: np.ndarray | None = None,
            size: int = DISPLAY_SIZE) -> np.ndarray:
    """uint8 ``[size, size, 3]``: ``image`` (``[H, W, 3]`` in [0, 1]) with the heatmap blended
    over it as in the explanation figures, and the bounding box of ``mask`` in green."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    pixels = Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)).resize(shape, Image.BILINEAR)
    out = np.asarray(pixels, dtype=np.float32) / 255
    if heatmap is not None:
        smooth = np.asarray(Image.fromarray(np.asarray(heatmap, np.float32), "F").resize(shape, Image.BILINEAR))
        out = blend(out, smooth)
    result = Image.fromarray(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8))
    if mask is not None and mask.any():
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = (cols[0] * scale, rows[0] * scale, (cols[-1] + 1) * scale - 1, (rows[-1] + 1) * scale - 1)
        ImageDraw.Draw(result).rectangle(box, outline=BOX_COLOUR, width=max(1, size // 112))
    return np.asarray(result)


# ----------------------------------------------------------------------------------------------
# attention inside each model, for this image


def attention_results(models: Sequence[LoadedModel], source: InputImage, corruption: str | None = None,
                      severity: int = 3) -> dict[str, dict]:
    """``{label: result}`` as in ``attention.json``: every attention module's channel scales for
    this one image (clean, or corrupted when ``corruption`` is given), grouped by the predicted class
    (a detector: its backbone, by the class of its largest detection)."""
    results = {}
    for loaded in models:
        x = views(loaded, source.image, corruption, severity)["corrupted" if corruption else "clean"]
        with _MODEL_LOCK, torch.no_grad():
            if is_detector(loaded):  # the backbone, grouped by the largest detection's class
                model, batches, _ = loaded.task.attention_images(loaded, [to_pil_image(x[0])])
            else:
                model, batches = loaded.model, [(loaded.normalise(x), loaded.model(loaded.normalise(x)).argmax(1))]
            stats = AttentionStats(model, loaded.class_names)
            for images, labels in batches:
                stats.update(images, labels)
        results[loaded.label] = stats.result()
    return results


def attention_figures(results: dict[str, dict]) -> dict[str, bytes]:
    """PNG bytes of the attention figures (:mod:`emca_vis.attention.plots`) for these results:
    ``scaling`` always, ``scale_weights`` and ``source_share`` when an EMCA model is among them."""
    models = {label: result for label, result in results.items() if result["modules"]}
    if not models:
        return {}
    figures = {}
    with tempfile.TemporaryDirectory(prefix="emca-vis-attention-") as folder, plt.rc_context(PLAIN_STYLE):
        out = Path(folder)
        for draw in (scaling_figure, scale_weights_figure, source_share_figure):
            for path in draw(models, out):
                if path.suffix == ".png":
                    figures[path.stem] = path.read_bytes()
    return figures


def attention_rows(results: dict[str, dict]) -> list[dict]:
    """One table row per attention module: scale statistics and EMCA's weights."""
    rows = []
    for label, result in results.items():
        for module in result["modules"]:
            weights = module.get("scale_weights")
            rows.append({
                "model": label, "module": module["name"], "channels": module["channels"],
                "mean z": round(module["mean"], 3), "std z": round(module["std"], 3),
                "entropy (bits)": round(module["entropy"], 2),
                "z < 0.1": round(module["frac_below_0.1"], 3), "z > 0.9": round(module["frac_above_0.9"], 3),
                "w_r (sources)": "" if weights is None else ", ".join(
                    f"{w:.2f} ({s})" for w, s in zip(weights, module["sources"])),
            })
    return rows


# ----------------------------------------------------------------------------------------------
# models


def model_facts(loaded: LoadedModel) -> dict:
    """Architecture, size, cost and training metrics of a checkpoint, from its metadata."""
    meta = loaded.meta
    metrics, train = meta["metrics"], meta["train_args"]
    with _MODEL_LOCK:
        gflops = count_gflops(loaded.model, loaded.input_size)
    if is_detector(loaded):
        scores = {"val box AP": _maybe_round(metrics.get("val_bbox_AP"), 3),
                  "val AP50": _maybe_round(metrics.get("val_bbox_AP50"), 3)}
    else:
        scores = {"val top-1 (%)": _maybe_round(metrics.get("val_top1"), 2),
                  "val top-5 (%)": _maybe_round(metrics.get("val_top5"), 2)}
    return {
        "model": loaded.label,
        "architecture": meta["model"],
        "parameters": count_parameters(loaded.model),
        "GFLOPs": round(gflops, 4),
        **scores,
        "best epoch": metrics.get("epoch"),
        "epochs": train.get("epochs"),
        "optimizer": train.get("optimizer"),
        "input px": loaded.input_size,
        "classes": meta["num_classes"],
        "dataset": meta["dataset"],
        "options": ", ".join(f"{k}={v}" for k, v in meta["model_kwargs"].items()),
        "checkpoint": loaded.path.name,
        "created": meta["created"],
    }


def _maybe_round(value, digits: int):
    return round(value, digits) if isinstance(value, (int, float)) else value


# ----------------------------------------------------------------------------------------------
# robustness


def read_results(data: bytes | str, name: str = "results", max_bytes: int = MAX_RESULTS_BYTES) -> dict:
    """A results JSON of ``python -m emca_vis.robustness``, checked against its schema
    (:mod:`emca_vis.robustness.results`: size, types, ranges, consistency); one-line
    :class:`UserError` otherwise. ``max_bytes``: a lower size limit (uploads)."""
    if len(data) > max_bytes:
        raise UserError(f"{name}: {len(data):,} bytes is over the {max_bytes:,}-byte limit")
    return parse_results(data, name)


def find_results(root: str | Path | None = None, limit: int = 50) -> list[Path]:
    """Robustness results JSONs under the checkpoint root (``*.json`` beside a ``.cells.jsonl``),
    up to :data:`SEARCH_DEPTH` levels deep, folder links not followed; a results file that is not
    a regular file inside the root (links resolved) is not listed."""
    root = Path(root) if root is not None else checkpoint_root()
    if not root.is_dir():
        return []
    found = []
    for current, dirs, files in os.walk(root, followlinks=False):
        depth = len(Path(current).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < SEARCH_DEPTH else []
        for name in sorted(files):
            if name.endswith(".cells.jsonl"):
                path = Path(current) / (name.removesuffix(".cells.jsonl") + ".json")
                if unlisted_reason(path, root) is None:
                    found.append(path)
    return sorted(found)[:limit]


def run_robustness(paths: Sequence[str | Path], corruptions: Sequence[str], severities: Sequence[int],
                   n: int = 64, batch_size: int = 64, progress: Callable[[int, int], None] | None = None) -> dict:
    """A small evaluation (``emca_vis.robustness.evaluate``) of these checkpoints on shapes, in a
    temporary folder; returns the results dict."""
    if not paths:
        raise UserError("choose at least one model")
    if not corruptions or not severities:
        raise UserError("choose at least one corruption and one severity")
    with tempfile.TemporaryDirectory(prefix="emca-vis-robustness-") as folder, _MODEL_LOCK:
        return evaluate(progress=progress, checkpoint=[str(p) for p in paths], corruptions=list(corruptions),
                        severities=[int(s) for s in severities], n=int(n), batch_size=int(batch_size),
                        out=str(Path(folder) / "results.json"))


def summary_rows(results: dict) -> list[dict]:
    """Per model: clean error, mCE, relative mCE, mean corruption accuracy (all in %)."""
    rows = []
    for label, m in results["models"].items():
        rows.append({"model": label, "images": m["n"], "clean error (%)": _pct(m["clean_error"]),
                     "mCE (%)": _pct(m["mce"]), "relative mCE (%)": _pct(m["relative_mce"]),
                     "mean corruption accuracy (%)": _pct(m["mean_corruption_accuracy"])})
    return rows


def ce_rows(results: dict) -> list[dict]:
    """Per model: CE of every corruption (in % of the baseline's errors)."""
    return [{"model": label, **{c: _pct(m["ce"].get(c)) for c in results["corruptions"]}}
            for label, m in results["models"].items()]


def error_rows(results: dict) -> list[dict]:
    """Per model and corruption: the error at every severity (%)."""
    rows = []
    for label, m in results["models"].items():
        for corruption, by_severity in m["errors"].items():
            rows.append({"model": label, "corruption": corruption,
                         **{f"s{s}": _pct(e) for s, e in sorted(by_severity.items(), key=lambda kv: int(kv[0]))}})
    return rows


def _pct(value):
    return None if value is None else round(100 * float(value), 2)


def robustness_figure(results: dict) -> bytes:
    """PNG: error vs severity averaged over the corruptions (clean at 0), and CE per corruption."""
    models = results["models"]
    colours = {label: OKABE_ITO[i % len(OKABE_ITO)] for i, label in enumerate(models)}
    corruptions = list(results["corruptions"])
    with plt.rc_context(PLAIN_STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), width_ratios=(1, 2.2), layout="constrained")
        for label, m in models.items():
            severities = sorted({int(s) for by in m["errors"].values() for s in by})
            mean = [np.mean([by[str(s)] for by in m["errors"].values() if str(s) in by]) for s in severities]
            left.plot([0, *severities], [100 * m["clean_error"], *(100 * v for v in mean)], marker="o",
                      color=colours[label], label=label)
        left.set(xlabel="severity (0 = clean)", ylabel="top-1 error (%)", title="error vs severity")
        left.set_xticks(range(0, max(SEVERITIES) + 1))
        width = 0.8 / max(len(models), 1)
        for i, (label, m) in enumerate(models.items()):
            values = [np.nan if m["ce"].get(c) is None else 100 * m["ce"][c] for c in corruptions]
            right.bar(np.arange(len(corruptions)) - 0.4 + width * (i + 0.5), values, width=width,
                      color=colours[label], label=label)
        right.axhline(100, color="black", lw=0.6, ls="--")
        right.set_xticks(range(len(corruptions)), [c.replace("_", " ") for c in corruptions], rotation=30,
                         ha="right")
        right.set(ylabel=f"CE (% of {results['baseline'] or 'the baseline'})", title="corruption error (CE)")
        fig.legend(*left.get_legend_handles_labels(), loc="outside right center")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
    return buffer.getvalue()


__all__ = ["CORRUPTIONS", "DEFAULT_MODELS", "DEMO_FOLDER", "IMAGE_SUFFIXES", "InputImage", "MAX_PIXELS", "SEVERITIES",
           "attention_figures", "attention_results", "attention_rows", "ce_rows", "checkpoint_folders",
           "checkpoint_options", "checkpoint_root", "class_choices", "default_models", "error_rows", "escape_markdown",
           "explain", "find_results", "folder_image", "folder_images", "image_dir", "input_views", "layer_choices",
           "load_model", "model_facts", "one_line", "overlay", "read_results", "read_results_file",
           "robustness_figure", "run_robustness", "sample_image", "sample_names", "summary_rows", "unlisted_reason",
           "upload_image"]
