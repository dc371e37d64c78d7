"""emca-vis: compare how EMCA and its baselines see an image, clean and corrupted.

    streamlit run app/main.py          # or `make demo`

The sidebar picks checkpoints, an image, the explanation and a corruption; four panels show
the result (Compare, Attention, Robustness, Models). Everything shown is computed by
:mod:`emca_vis.interactive`; this file and :mod:`panels` only lay it out and cache it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import streamlit as st
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the panels module beside this script
    sys.path.insert(0, _HERE)

import panels  # noqa: E402
from emca_vis import interactive as iv  # noqa: E402
from emca_vis.detection.explain import DEFAULT_LAYER as DETECTOR_LAYER  # noqa: E402  (why: in that module)
from emca_vis.detection.explain import DEFAULT_METHODS as DETECTOR_METHODS  # noqa: E402
from emca_vis.explain import METHODS  # noqa: E402

esc = iv.escape_markdown

SOURCES = ("Shapes sample", "Upload", "Image folder")
SLOW_METHODS = ("scorecam", "ablationcam", "integrated_gradients", "occlusion")
DEFAULT_CORRUPTION = "gaussian_noise"
NO_CORRUPTION = "none"
PANELS = ("Compare", "Attention", "Robustness", "Models")


def sidebar() -> tuple[dict, dict]:
    """Every control of the sidebar; returns the settings and the chosen checkpoints."""
    bar = st.sidebar
    bar.title("emca-vis")
    root = iv.checkpoint_root()
    folders = panels.checkpoint_folders(str(root))
    folder = bar.selectbox("Checkpoint folder", list(folders), key="folder",
                           help="The demo checkpoints and every folder with checkpoints (`*.safetensors`, `*.pth`, "
                                f"`*.pt`) under {esc(root)} (set `EMCA_VIS_CHECKPOINT_ROOT` to list another root).")
    # file links may point anywhere inside the folder's root, never out of it
    listing_root = folders[folder] if folder in (iv.DEMO_FOLDER, iv.DEMO_DETECTOR_FOLDER) else root
    options, skipped = panels.checkpoint_options(str(folders[folder]), str(listing_root))
    if skipped:
        bar.warning(f"Not offered: {esc('; '.join(skipped))}")
    if not options:
        bar.warning(f"{esc(folder)}: no checkpoints")
    chosen = bar.multiselect("Models to compare", list(options), default=iv.default_models(list(options)),
                             key=f"models:{folder}", help="EMCA models and their baselines; the order is kept.")

    models = panels.load_selected({label: options[label] for label in chosen}, str(listing_root))
    detectors = bool(models) and all(m is not None and iv.is_detector(m) for m in models.values())

    bar.subheader("Image")
    source = bar.radio("Image source", SOURCES, key="source", horizontal=True, label_visibility="collapsed")
    settings = {"source": source, "folder": folder, "models": {label: options[label] for label in chosen},
                "scenes": detectors}
    if source == "Shapes sample" and detectors:
        names = panels.scene_names()
        settings["sample"] = bar.selectbox("Scene (multishapes test split)", range(len(names)), index=iv.DEFAULT_SAMPLE,
                                           format_func=names.__getitem__, key="scene",
                                           help="Synthetic scenes with known objects (boxes and masks).")
    elif source == "Shapes sample":
        names = panels.sample_names()
        settings["sample"] = bar.selectbox("Sample (shapes test split)", range(len(names)), index=iv.DEFAULT_SAMPLE,
                                           format_func=names.__getitem__, key="sample",
                                           help="Synthetic images with a known object box.")
    elif source == "Upload":
        limit = st.get_option("server.maxUploadSize")
        settings["upload"] = bar.file_uploader(
            "Image file", type=[s.lstrip(".") for s in iv.IMAGE_SUFFIXES], key="upload",
            help=f"JPEG, PNG, WebP, BMP or TIFF; up to {limit} MB and {iv.MAX_PIXELS // 1_000_000} megapixels.")
    else:
        folder_path = iv.image_dir()
        files, skipped = panels.folder_images(str(folder_path))
        if files:
            settings["file"] = bar.selectbox(f"Image in {esc(folder_path)}", files, format_func=lambda p: p.name,
                                             key="folder_image")
        else:
            bar.info(f"Drop images into {esc(folder_path)} (`EMCA_VIS_IMAGE_DIR`) to pick them here; a "
                     "Pascal VOC `<name>.xml` beside an image gives its ground-truth box.")
        if skipped:
            bar.warning(f"Not offered: {esc('; '.join(skipped))}")

    bar.subheader("Explanation")
    methods = list(iv.DETECTION_METHODS) if detectors else list(METHODS)
    settings["method"] = bar.selectbox(
        "Method", methods, index=methods.index(DETECTOR_METHODS[0] if detectors else "gradcam"),
        key="detector_method" if detectors else "method",
        help=(f"CAMs from pytorch-grad-cam, attributions from Captum. {', '.join(SLOW_METHODS)} take "
              "seconds per model on a CPU." if not detectors else
              "CAMs of each detection's box score (pytorch-grad-cam's FasterRCNNBoxScoreTarget); EigenCAM "
              "needs no gradient and gives one map per image."))
    if detectors:
        settings["target"] = "detections"
        settings["score_threshold"] = bar.slider("Score threshold", min_value=0.05, max_value=0.95, value=0.5,
                                                 step=0.05, key="score_threshold",
                                                 help="Detections scoring at least this are drawn and explained.")
        settings["max_detections"] = bar.slider("Detections to explain", min_value=1, max_value=8, value=3,
                                                key="max_detections", help="The best-scoring ones, per view.")
    else:
        classes = iv.class_choices([m for m in models.values() if m is not None]) if models else []
        settings["target"] = bar.selectbox("Target class", ["predicted class", *classes], key="target",
                                           help="Explain each view's predicted class, or one class by name.")
    layers = panels.layers([m for m in models.values() if m is not None]) or ["layer4"]
    settings["layer"] = bar.selectbox("Layer", layers, key="detector_layer" if detectors else "layer",
                                      index=layers.index(DETECTOR_LAYER) if detectors and DETECTOR_LAYER in layers else 0,
                                      help="CAM target layer: a stage's output or one block"
                                           + ("; or a feature-pyramid level (fpn.0 is the finest)." if detectors
                                              else "."))

    bar.subheader("Corruption")
    corruptions = [NO_CORRUPTION, *iv.CORRUPTIONS]
    corruption = bar.selectbox("Corruption", corruptions, index=corruptions.index(DEFAULT_CORRUPTION),
                               key="corruption", format_func=lambda c: c.replace("_", " "),
                               help="ImageNet-C corruptions (torch backend, seeded), applied after the "
                                    "model's resize and crop as in the robustness evaluation.")
    settings["corruption"] = None if corruption == NO_CORRUPTION else corruption
    settings["severity"] = bar.slider("Severity", min_value=1, max_value=5, value=3, key="severity",
                                      disabled=settings["corruption"] is None)
    return settings, models


def main() -> None:
    st.set_page_config(page_title="emca-vis: compare models", page_icon=":material/visibility:", layout="wide")
    started = time.perf_counter()
    st.title("How EMCA and its baselines see an image")
    try:
        settings, models = sidebar()
    except Exception as error:  # nothing to compare without the sidebar's choices: one line
        panels.log.exception("sidebar failed")
        st.error(f"Sidebar: {panels.failure(error)}")
        return
    for label, loaded in list(models.items()):
        if loaded is None:  # panels.load_selected showed the error
            del models[label]
    threads = iv.torch_threads(list(models.values()))  # one for the demo models, every core at ImageNet size
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    source = panels.current_image(settings, max([m.input_size for m in models.values()] or [64]))
    if not models:
        st.info("Choose at least one model in the sidebar.")
        return
    chosen = list(models.values())
    draw = {"Compare": (panels.compare_panel, chosen, source, settings),
            "Attention": (panels.attention_panel, chosen, source, settings),
            "Robustness": (panels.robustness_panel, settings),
            "Models": (panels.models_panel, chosen)}
    for name, tab in zip(PANELS, st.tabs(PANELS, key="panel", on_change="rerun")):
        if tab.open:  # only the open panel computes
            with tab:
                panels.guarded(f"{name} panel", *draw[name])
    st.caption(f"Computed in {time.perf_counter() - started:.2f} s on the server.")


main()
