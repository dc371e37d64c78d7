"""Heatmaps for a batch of images: CAM methods from pytorch-grad-cam, attributions from Captum.

Every method returns ``[N, H, W]`` float32 maps in ``[0, 1]`` at the input resolution, one
per image, for one target class per image. CAM maps are scaled the way pytorch-grad-cam
scales them (per image, min to max); attribution maps are reduced over colour channels and
scaled by their 99.5th percentile, because a few extreme gradient pixels would otherwise
leave the rest of the map black.

Gradient CAMs need gradients only from the head down to the target layer, so
:func:`gradients_from` runs everything before that layer without autograd: a Grad-CAM batch
then costs about one inference forward pass instead of a forward plus a full backward.

One forward and backward pass gives a target layer's activations and gradients
(:func:`layer_signals`), from which every gradient CAM of that image and target class follows
without another pass (:func:`cam_from_signals`): what the app reuses when only the method changes.

The attribution methods differentiate down to the input, which stores every activation of the
model for each image (and, for integrated gradients, each of its steps) in a backward pass.
They run in chunks of at most :data:`BACKWARD_PIXELS` input pixels per backward pass, so
their memory is bounded whatever the batch, step count or model: about 0.6 GB for a
ResNet-50 at 224 px. Chunking changes only the order of floating-point sums.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import GuidedGradCam, IntegratedGradients, Occlusion, Saliency
from pytorch_grad_cam import (AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM,
                              XGradCAM)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from ..errors import UserError

CAM_METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
}
ATTRIBUTION_METHODS = ("integrated_gradients", "saliency", "guided_gradcam", "occlusion")
METHODS = (*CAM_METHODS, *ATTRIBUTION_METHODS)
GRADIENT_FREE_CAMS = ("eigencam", "scorecam", "ablationcam")
# CAMs computed from one pass's target-layer activations and gradients alone
SIGNAL_CAMS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam")
IG_STEPS = 32
BACKWARD_PIXELS = 4 * 224 * 224  # input pixels per backward pass of the attribution methods


def backward_rows(images: Tensor, batch_size: int) -> int:
    """How many images (or integrated-gradient steps) one backward pass may hold."""
    return max(1, min(batch_size, BACKWARD_PIXELS // (images.shape[-2] * images.shape[-1])))


class ExplainError(UserError):
    pass


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return method


def target_layer(model: nn.Module, name: str = "layer4") -> nn.Module:
    """The module called ``name`` (``layer4``, ``layer3``, ``layer4.1``, ``layer4.1.conv2`` ...).

    A stage name means the stage's output, which is its last block's output; the block is
    returned so that methods that swap the layer out (Ablation-CAM) keep the stage intact.
    """
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        stages = [n for n, _ in model.named_children() if n.startswith("layer")]
        raise ExplainError(f"no layer {name!r} in the model; use a stage ({', '.join(stages)}) "
                           f"or a block such as {stages[-1]}.0") from None
    return layer[-1] if isinstance(layer, nn.Sequential) else layer


LAYER_METHODS = (*CAM_METHODS, "guided_gradcam")  # the methods that read a target layer


def check_layer(model: nn.Module, name: str, input_size: int) -> nn.Module:
    """The target layer ``name`` after checking that it can carry a CAM: its output must be a
    4-D feature map ``[N, C, H, W]`` that the rest of the forward pass leaves unchanged (an
    in-place ReLU or addition after it would alter the recorded activations, and breaks the
    gradient methods). Checked with one forward pass of a blank image; :class:`ExplainError`
    names the layer, the problem and a few layers that work."""
    layer = target_layer(model, name)
    stages = [n for n, _ in model.named_children() if n.startswith("layer")]
    check_feature_map(model, layer, torch.zeros(1, 3, input_size, input_size), name,
                      f"use a stage ({', '.join(stages)}), a block ({stages[-1]}.0) or a convolution "
                      f"({stages[-1]}.0.conv1)")
    return layer


def check_feature_map(model: nn.Module, layer: nn.Module, blank: Tensor, name: str, hint: str,
                      key: str | None = None) -> None:
    """Raise :class:`ExplainError` (``--layer NAME: the layer PROBLEM; HINT``) unless ``layer``'s
    output (its entry ``key`` when it returns a dict) on ``model(blank)`` is a 4-D feature map
    that no later in-place operation changes."""
    seen: dict = {}

    def record(module, args, output):
        output = output.get(key) if key is not None and isinstance(output, dict) else output
        seen["output"] = output
        seen["version"] = output._version if isinstance(output, torch.Tensor) else None

    handle = layer.register_forward_hook(record)
    try:
        with torch.no_grad():
            model.eval()(blank.to(next(model.parameters()).device))
    finally:
        handle.remove()
    output = seen.get("output")
    if not isinstance(output, torch.Tensor):
        problem = "is not used by the forward pass" if not seen else "has no tensor output"
    elif output.dim() != 4:
        problem = f"gives a {output.dim()}-D output {list(output.shape)}, not a feature map [N, C, H, W]"
    elif output._version != seen["version"]:
        problem = "has its output changed in place later in the forward pass (an in-place ReLU or addition)"
    else:
        return
    raise ExplainError(f"--layer {name}: the layer {problem}; {hint}")


def resolve_target(target: str | int | None, class_names: Sequence[str]) -> int | None:
    """A class given by index or name; None means "the predicted class"."""
    if target is None:
        return None
    text = str(target)
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(class_names):
            raise ExplainError(f"target class {index} is out of range: the model has {len(class_names)} classes")
        return index
    if text not in class_names:
        shown = ", ".join(class_names[:12]) + (", ..." if len(class_names) > 12 else "")
        raise ExplainError(f"unknown target class {text!r}; the model's classes are {shown}")
    return list(class_names).index(text)


@contextmanager
def gradients_from(model: nn.Module, layer: nn.Module, key: str | None = None) -> Iterator[None]:
    """Forward passes of ``model`` build the autograd graph only from ``layer``'s output on.

    The output of ``layer`` (its entry ``key`` when it returns a dict, as a feature pyramid
    does) becomes a leaf that requires grad, so a backward pass from the logits stops there:
    exactly the gradients Grad-CAM needs, and nothing upstream is stored or differentiated.
    """
    def before_model(module, args):
        torch.set_grad_enabled(False)

    def after_layer(module, args, output):
        torch.set_grad_enabled(True)
        if key is None:
            return output.detach().requires_grad_()
        output = type(output)(output)
        output[key] = output[key].detach().requires_grad_()
        return output

    previous = torch.is_grad_enabled()
    handles = [model.register_forward_pre_hook(before_model),
               layer.register_forward_hook(after_layer, prepend=True)]  # before pytorch-grad-cam's hooks
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        torch.set_grad_enabled(previous)


def cam(model: nn.Module, images: Tensor, targets: Sequence[int], method: str = "gradcam", layer: str = "layer4",
        aug_smooth: bool = False, eigen_smooth: bool = False, batch_size: int = 32) -> np.ndarray:
    """A pytorch-grad-cam method's heatmaps ``[N, H, W]`` in ``[0, 1]`` for ``targets``."""
    module = target_layer(model, layer)
    explainer = CAM_METHODS[method](model=model, target_layers=[module])
    explainer.batch_size = batch_size  # perturbed copies per forward pass (Score-CAM, Ablation-CAM)
    class_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    try:
        if method in GRADIENT_FREE_CAMS:
            with torch.no_grad():
                return explainer(images, class_targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
        with gradients_from(model, module):
            return explainer(images, class_targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
    finally:
        explainer.activations_and_grads.release()


@dataclass(frozen=True)
class LayerSignals:
    """A target layer's activations and gradients ``[N, C, h, w]`` for one class per image, and
    the input's ``(width, height)``: everything the :data:`SIGNAL_CAMS` read."""

    layer: str
    targets: tuple[int, ...]
    activations: np.ndarray
    gradients: np.ndarray
    input_size: tuple[int, int]


def layer_signals(model: nn.Module, images: Tensor, layer: str = "layer4",
                  targets: Sequence[int] | None = None) -> tuple[Tensor, LayerSignals]:
    """Class probabilities ``[N, classes]`` and the :class:`LayerSignals` of one pass.

    ``targets``: one class per image, or None for each image's predicted class. The gradients
    are those of the target logits, as pytorch-grad-cam's ``ClassifierOutputTarget`` gives them.
    """
    model.eval()
    module = target_layer(model, layer)
    kept = {}
    with gradients_from(model, module):
        handle = module.register_forward_hook(lambda m, args, output: kept.update(output=output))
        try:
            logits = model(images)
        finally:
            handle.remove()
        chosen = logits.argmax(1).tolist() if targets is None else [int(t) for t in targets]
        logits[torch.arange(len(chosen)), chosen].sum().backward()
    model.zero_grad(set_to_none=True)
    output = kept["output"]
    signals = LayerSignals(layer, tuple(chosen), output.detach().numpy(), output.grad.numpy(),
                           (images.shape[-1], images.shape[-2]))
    return logits.detach().softmax(1), signals


def cam_from_signals(model: nn.Module, signals: LayerSignals, method: str = "gradcam") -> np.ndarray:
    """The heatmaps ``[N, H, W]`` that :func:`heatmaps` gives for ``method`` (one of
    :data:`SIGNAL_CAMS`), computed from ``signals`` without running the model; the steps are
    pytorch-grad-cam's (its method's ``get_cam_image``, clipping, scaling to the input size)."""
    maps = signal_cams(model, target_layer(model, signals.layer), method, signals.activations, signals.gradients)
    maps = scale_cam_image(maps, signals.input_size)
    return scale_cam_image(maps)  # pytorch-grad-cam's aggregation over its one target layer


def signal_cams(model: nn.Module, module: nn.Module, method: str, activations: np.ndarray,
                gradients: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's ``method`` (one of :data:`SIGNAL_CAMS`) from a layer's activations and
    gradients ``[N, C, h, w]``, clipped at 0, at the layer's resolution ``[N, h, w]``. Scaling
    to an image's size is the caller's (a detector's feature map also covers its batch's padding)."""
    if method not in SIGNAL_CAMS:
        raise ValueError(f"{method} needs more than one pass's activations and gradients")
    explainer = CAM_METHODS[method](model=model, target_layers=[module])
    try:
        # the weights of these methods read activations and gradients only, not the targets
        shape = (len(activations), 3, *activations.shape[-2:])
        maps = explainer.get_cam_image(torch.empty(shape), module, [None] * len(activations), activations,
                                       gradients, False)
    finally:
        explainer.activations_and_grads.release()
    return np.maximum(maps, 0)


def attribution(model: nn.Module, images: Tensor, targets: Sequence[int], method: str = "integrated_gradients",
                layer: str = "layer4", batch_size: int = 32) -> np.ndarray:
    """A Captum attribution reduced to heatmaps ``[N, H, W]`` in ``[0, 1]``.

    The gradient methods run on chunks of :func:`backward_rows` images; the maps are scaled
    per image, so chunking does not change them beyond float rounding.
    """
    if method not in ATTRIBUTION_METHODS:
        raise ExplainError(f"unknown attribution method {method!r}; choose from {', '.join(ATTRIBUTION_METHODS)}")
    rows = backward_rows(images, batch_size) if method != "occlusion" else len(images)
    targets = torch.as_tensor(list(targets), device=images.device)
    return np.concatenate([_attribution(model, chunk, chunk_targets, method, layer, batch_size, rows)
                           for chunk, chunk_targets in zip(images.split(rows), targets.split(rows))])


def _attribution(model: nn.Module, images: Tensor, target: Tensor, method: str, layer: str, batch_size: int,
                 rows: int) -> np.ndarray:
    images = images.detach().requires_grad_(method != "occlusion")
    if method == "integrated_gradients":
        # Captum runs max(1, rows // len(images)) steps of every image per backward pass.
        attr = IntegratedGradients(model).attribute(images, baselines=0.0, target=target, n_steps=IG_STEPS,
                                                    internal_batch_size=rows).abs().sum(1)
    elif method == "saliency":
        attr = Saliency(model).attribute(images, target=target, abs=True).amax(1)
    elif method == "guided_gradcam":
        with _relus_out_of_place(model), warnings.catch_warnings():
            # Guided backprop hooks every ReLU (and says so); in-place ReLUs would break the hooks.
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            attr = GuidedGradCam(model, target_layer(model, layer)).attribute(images, target=target).abs().sum(1)
    elif method == "occlusion":
        size = images.shape[-1]
        window = max(size // 8, 2)
        attr = Occlusion(model).attribute(images, sliding_window_shapes=(3, window, window),
                                          strides=(3, max(window // 2, 1), max(window // 2, 1)), baselines=0.0,
                                          target=target,
                                          # at most max(N, batch_size) images per forward pass
                                          perturbations_per_eval=max(1, batch_size // len(images)))
        attr = attr.sum(1).clamp_min(0)  # positive = the class score dropped when the patch was hidden
    return _percentile_scale(attr.detach().float().cpu().numpy())


@contextmanager
def _relus_out_of_place(model: nn.Module) -> Iterator[None]:
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    for relu in relus:
        relu.inplace = False
    try:
        yield
    finally:
        for relu in relus:
            relu.inplace = True


def _percentile_scale(maps: np.ndarray, q: float = 99.5) -> np.ndarray:
    top = np.percentile(maps.reshape(len(maps), -1), q, axis=1)[:, None, None]
    return np.clip(maps / np.maximum(top, 1e-12), 0, 1).astype(np.float32)


def heatmaps(model: nn.Module, images: Tensor, targets: Sequence[int], method: str = "gradcam",
             layer: str = "layer4", aug_smooth: bool = False, eigen_smooth: bool = False,
             batch_size: int = 32) -> np.ndarray:
    """Heatmaps ``[N, H, W]`` in ``[0, 1]`` of ``method`` for ``images`` (normalised ``[N, 3, H, W]``).

    ``targets`` holds one class index per image. ``aug_smooth`` and ``eigen_smooth`` apply
    to the CAM methods (pytorch-grad-cam's test-time augmentation and first-principal-
    component smoothing).
    """
    check_method(method)
    model.eval()
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    if method in CAM_METHODS:
        return cam(model, images, targets, method, layer, aug_smooth, eigen_smooth, batch_size)
    return attribution(model, images, targets, method, layer, batch_size)


def predict(model: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """Class probabilities ``[N, classes]``."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(chunk).float().softmax(1) for chunk in images.split(batch_size)])


def heatmap_stats(heatmap: np.ndarray) -> dict:
    """Summary numbers of one ``[H, W]`` heatmap in ``[0, 1]`` (saved beside the figures)."""
    peak_y, peak_x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    height, width = heatmap.shape
    return {
        "mean": round(float(heatmap.mean()), 4),
        "std": round(float(heatmap.std()), 4),
        "area_above_half": round(float((heatmap > 0.5).mean()), 4),
        "peak_xy": [round((peak_x + 0.5) / width, 4), round((peak_y + 0.5) / height, 4)],
    }
