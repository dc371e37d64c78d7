"""The app's panels and caches: layout of what :mod:`emca_vis.interactive` computes.

Models load once per process (``st.cache_resource``); explanations, attention statistics and
model facts are cached per (checkpoint, image, settings) with ``st.cache_data``, so going back
to a setting seen before costs nothing.

Text from users and their files (file and folder names, class names, fields of a results
JSON, error messages quoting them) reaches the page only through :func:`esc` or as plain text
(``st.text``, ``st.code``, tables), never as Markdown; each panel runs under :func:`guarded`,
so a failure is one ``st.error`` line and the rest of the page goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from emca_vis import interactive as iv
from emca_vis.errors import UserError
from emca_vis.inputs import LoadedModel
from emca_vis.outputs import json_text
from emca_vis.robustness import CORRUPTIONS, SEVERITIES, markdown_table

ROBUSTNESS_DEFAULTS = ("gaussian_noise", "defocus_blur", "fog", "contrast")
GRID_COLUMNS = 4  # models per row in the Compare panel

esc = iv.escape_markdown
log = logging.getLogger("emca_vis.app")


def failure(error: BaseException) -> str:
    """One escaped line for an error: a :class:`UserError` as it is, anything else with its type."""
    if isinstance(error, UserError):
        return esc(iv.one_line(error))
    return esc(f"{type(error).__name__}: {iv.one_line(error)}")


def guarded(name: str, draw: Callable, *args) -> bool:
    """``draw(*args)``; a failure becomes one ``st.error`` line naming ``name`` (the traceback goes
    to the server log only) and the page goes on. Streamlit's own rerun/stop signals are
    ``BaseException`` and pass through. True when ``draw`` finished."""
    try:
        draw(*args)
    except Exception as error:  # the guard of a whole panel: whatever the cause, one line
        if not isinstance(error, UserError):
            log.exception("%s panel failed", name)
        st.error(f"{name}: {failure(error)}")
        return False
    return True


# ----------------------------------------------------------------------------------------------
# caches


@st.cache_data(show_spinner=False, ttl=10)
def checkpoint_folders(root: str) -> dict[str, Path]:
    """Re-listed every 10 s, so new runs appear without a restart."""
    return iv.checkpoint_folders(root)


@st.cache_data(show_spinner=False, ttl=10)
def checkpoint_options(folder: str, root: str) -> tuple[dict[str, str], list[str]]:
    """The folder's checkpoints (links resolved inside ``root``) and the files not offered, with why."""
    skipped: list[str] = []
    options = iv.checkpoint_options(folder, root, skipped)
    return {label: str(path) for label, path in options.items()}, skipped


@st.cache_data(show_spinner=False, ttl=10)
def folder_images(folder: str) -> tuple[list[Path], list[str]]:
    skipped: list[str] = []
    return iv.folder_images(folder, skipped), skipped


@st.cache_data(show_spinner=False, ttl=10)
def find_results(root: str) -> list[Path]:
    return iv.find_results(root)


@st.cache_data(show_spinner=False)
def sample_names() -> list[str]:
    return iv.sample_names()


@st.cache_resource(show_spinner="Loading {}...", max_entries=64)
def _model(path: str, mtime: float, label: str) -> LoadedModel:
    return iv.load_model(path, label)


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def load_selected(chosen: dict[str, str], root: str | None = None) -> dict[str, LoadedModel | None]:
    """The chosen checkpoints, loaded once per process; a failure is shown and gives None.

    With ``root``, each is checked again to be a regular file inside it (the listing is cached
    for a few seconds, and a file may have been swapped for a link or a FIFO since)."""
    models = {}
    for label, path in chosen.items():
        try:
            if root is not None and (reason := iv.unlisted_reason(path, root)) is not None:
                raise UserError(f"{Path(path).name}: {reason}")
            models[label] = _model(path, _mtime(path), label)
        except Exception as error:  # a bad checkpoint is one line; the other models still load
            if not isinstance(error, UserError):
                log.exception("loading %s failed", path)
            st.error(f"Cannot load {esc(label)}: {failure(error)}")
            models[label] = None
    return models


def layers(models: list[LoadedModel]) -> list[str]:
    names: list[str] = []
    for loaded in models:
        names += [name for name in iv.layer_choices(loaded) if name not in names]
    return names


@st.cache_data(show_spinner=False)
def scene_names() -> list[str]:
    return iv.scene_names()


@st.cache_data(show_spinner=False, max_entries=16)
def _sample(index: int, size: int) -> iv.InputImage:
    return iv.sample_image(index, size)


@st.cache_data(show_spinner=False, max_entries=16)
def _scene(index: int) -> iv.InputImage:
    return iv.scene_image(index)


@st.cache_data(show_spinner=False, max_entries=8)
def _upload(name: str, data: bytes) -> iv.InputImage:
    return iv.upload_image(name, data)


@st.cache_data(show_spinner=False, max_entries=16)
def _folder_image(path: str, mtime: float, root: str) -> iv.InputImage:
    return iv.folder_image(path, root=root)


def read_upload(name: str, data: bytes) -> tuple[iv.InputImage | None, str | None]:
    """``(image, None)`` for a readable upload, ``(None, one-line message)`` for a bad one."""
    try:
        return _upload(name, data), None
    except Exception as error:  # whatever an upload does, one line and the previous image
        if not isinstance(error, UserError):
            log.exception("reading the upload %r failed", name)
            return None, f"{name}: cannot be read ({type(error).__name__}: {iv.one_line(error)})"
        return None, iv.one_line(error).rstrip(".")


def current_image(settings: dict, size: int = 64) -> iv.InputImage:
    """The image of the chosen source; a bad upload is reported and the previous image kept.

    Shapes samples are rendered at ``size`` (the largest input size of the chosen models);
    detectors get multishapes scenes instead."""
    fallback = _scene(iv.DEFAULT_SAMPLE) if settings.get("scenes") else _sample(iv.DEFAULT_SAMPLE, size)
    if settings["source"] == "Shapes sample":
        return _scene(settings["sample"]) if settings.get("scenes") else _sample(settings["sample"], size)
    if settings["source"] == "Upload":
        uploaded = settings.get("upload")
        if uploaded is None:
            st.info("Upload an image in the sidebar; meanwhile the default sample is shown.")
            return st.session_state.get("last_upload", fallback)
        if uploaded.size > iv.MAX_UPLOAD_BYTES:  # refused before its bytes are hashed or copied
            image, error = None, (f"{uploaded.name}: {uploaded.size:,} bytes is over the "
                                  f"{iv.MAX_UPLOAD_BYTES:,}-byte upload limit")
        else:
            image, error = read_upload(uploaded.name, uploaded.getvalue())
        if error:
            previous = st.session_state.get("last_upload", fallback)
            st.error(f"Upload refused: {esc(error)}. Showing {esc(previous.name)} instead.")
            return previous
        st.session_state["last_upload"] = image
        return image
    path = settings.get("file")
    if path is None:
        return fallback
    try:
        return _folder_image(str(path), _mtime(str(path)), str(iv.image_dir()))
    except Exception as error:  # whatever the file does, one line and the default sample
        if not isinstance(error, UserError):
            log.exception("reading %s failed", path)
        st.error(f"Image refused: {failure(error).removesuffix(esc('.'))}. Showing {esc(fallback.name)} instead.")
        return fallback


@st.cache_data(show_spinner=False, max_entries=256)
def _view(path: str, label: str, image_key: str, corruption: str | None, severity: int, target: str | None,
          layer: str, _loaded: LoadedModel, _source: iv.InputImage) -> tuple:
    """One view, its class probabilities and the target layer's activations and gradients: the
    model's one pass, shared by every gradient CAM (a method change runs no model)."""
    x = iv.view_input(_loaded, _source, corruption, severity)
    return (x, *iv.view_signals(_loaded, x, target, layer))


@st.cache_data(show_spinner=False, max_entries=512)
def _explain_view(path: str, label: str, image_key: str, method: str, target: str | None, layer: str,
                  corruption: str | None, severity: int, _loaded: LoadedModel, _source: iv.InputImage) -> dict:
    x, probs, signals = _view(path, label, image_key, corruption, severity, target, layer, _loaded=_loaded,
                              _source=_source)
    return iv.explain_view(_loaded, _source, x, probs, "corrupted" if corruption else "clean", method, target, layer,
                           signals=signals)


def _explain(path: str, label: str, image_key: str, method: str, target: str | None, layer: str,
             corruption: str | None, severity: int, _loaded: LoadedModel, _source: iv.InputImage) -> dict:
    """:func:`iv.explain`, cached per view: the clean view does not depend on the corruption or
    its severity, so changing them recomputes only the corrupted view."""
    keys = [(None, 0)] + ([(corruption, severity)] if corruption else [])
    found = {"label": label, "method": method, "layer": layer,
             "views": [_explain_view(path, label, image_key, method, target, layer, c, s, _loaded=_loaded,
                                     _source=_source) for c, s in keys]}
    if corruption:
        found["stability"] = _stability(path, label, image_key, method, target, layer, corruption, severity,
                                        _loaded=_loaded, _source=_source, _views=found["views"])
    return found


@st.cache_data(show_spinner=False, max_entries=512)
def _stability(path: str, label: str, image_key: str, method: str, target: str | None, layer: str,
               corruption: str, severity: int, _loaded: LoadedModel, _source: iv.InputImage,
               _views: list[dict]) -> dict:
    """The library's stability of the corrupted view's heatmap against the clean one's (:func:`iv.view_stability`)."""
    x = iv.view_input(_loaded, _source, corruption, severity)
    return iv.view_stability(_loaded, _source, _views[0], _views[1], x, method, layer)


@st.cache_data(show_spinner=False, max_entries=256)
def _detection_signals(path: str, label: str, image_key: str, layer: str, score_threshold: float, max_detections: int,
                       corruption: str | None, severity: int, _loaded: LoadedModel, _source: iv.InputImage) -> tuple:
    """One view through a detector with every detection CAM (a method change runs no model)."""
    x = iv.view_input(_loaded, _source, corruption, severity)
    return x, iv.detection_signals(_loaded, x, layer, score_threshold, max_detections)


def _detect(path: str, label: str, image_key: str, method: str, layer: str, score_threshold: float,
            max_detections: int, corruption: str | None, severity: int, _loaded: LoadedModel,
            _source: iv.InputImage) -> dict:
    """:func:`iv.detection_view` of the clean and the corrupted view, each view cached on its own."""
    views = []
    for c, s in [(None, 0)] + ([(corruption, severity)] if corruption else []):
        x, explained = _detection_signals(path, label, image_key, layer, score_threshold, max_detections, c, s,
                                          _loaded=_loaded, _source=_source)
        views.append(iv.detection_view(_loaded, _source, x, explained, "corrupted" if c else "clean", method))
    return {"label": label, "method": method, "layer": layer, "views": views}


@st.cache_data(show_spinner=False, max_entries=64)
def _inputs(path: str, label: str, image_key: str, corruption: str | None, severity: int, _loaded: LoadedModel,
            _source: iv.InputImage) -> dict:
    return iv.input_views(_loaded, _source, corruption, severity)


@st.cache_data(show_spinner=False, max_entries=64)
def _attention(paths: tuple[str, ...], image_key: str, corruption: str | None, severity: int,
               _models: list[LoadedModel], _source: iv.InputImage) -> tuple[list[dict], dict[str, bytes]]:
    results = iv.attention_results(_models, _source, corruption, severity)
    return iv.attention_rows(results), iv.attention_figures(results)


@st.cache_data(show_spinner=False, max_entries=64)
def _facts(path: str, label: str, _loaded: LoadedModel) -> dict:
    return iv.model_facts(_loaded)


# ----------------------------------------------------------------------------------------------
# panels


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%"


def compare_panel(models: list[LoadedModel], source: iv.InputImage, settings: dict) -> None:
    """Per model: heatmap overlays and top-5, clean next to corrupted, with localisation scores."""
    method, layer = settings["method"], settings["layer"]
    corruption, severity = settings["corruption"], settings["severity"]
    target = None if settings["target"] == "predicted class" else settings["target"]
    view_names = {"clean": "clean", "corrupted": f"{(corruption or '').replace('_', ' ')}, severity {severity}"}
    truth = f" · ground truth: **{esc(source.label)}**" if source.label else ""
    box = " (green box)" if source.mask is not None else " · no ground-truth box for this image"
    if source.objects:
        truth = " · ground truth: " + ", ".join(f"**{esc(name)}**" for name, _ in source.objects)
        box = " (green boxes)"
    st.markdown(f"**{esc(source.name)}**{truth}{box} · {method} on `{layer}` · "
                f"target: {esc(settings['target'])}")
    results = {}
    for loaded in models:
        try:
            with st.spinner(f"{method} for {esc(loaded.label)}..."):
                if iv.is_detector(loaded):
                    results[loaded.label] = _detect(str(loaded.path), loaded.label, source.key, method, layer,
                                                    settings["score_threshold"], settings["max_detections"],
                                                    corruption, severity, _loaded=loaded, _source=source)
                else:
                    results[loaded.label] = _explain(str(loaded.path), loaded.label, source.key, method, target,
                                                     layer, corruption, severity, _loaded=loaded, _source=source)
        except Exception as error:  # one model's failure is shown in its cell; the others go on
            if not isinstance(error, UserError):
                log.exception("%s of %s failed", method, loaded.path)
            results[loaded.label] = failure(error)
    first = models[0]
    inputs = _inputs(str(first.path), first.label, source.key, corruption, severity, _loaded=first, _source=source)
    for column, (view, pixels) in zip(st.columns(6), inputs.items()):
        column.image(pixels, caption=f"input: {view_names[view]}", width="stretch", alt=f"input {view}")
    for start in range(0, len(models), GRID_COLUMNS):
        row = models[start:start + GRID_COLUMNS]
        for column, loaded in zip(st.columns(min(GRID_COLUMNS, len(models))), row):
            with column.container(border=True):
                cell = _detection_cell if iv.is_detector(loaded) else _model_cell
                cell(loaded, results[loaded.label], view_names)


def _model_cell(loaded: LoadedModel, result: dict | str, view_names: dict) -> None:
    st.markdown(f"#### {esc(loaded.label)}")
    if isinstance(result, str):  # an escaped error line
        st.warning(result)
        return
    columns = st.columns(len(result["views"]))
    for column, view in zip(columns, result["views"]):
        with column:
            st.image(view["overlay"], width="stretch", alt=f"heatmap {loaded.label} {view['view']}",
                     caption=view_names[view["view"]])
            lines = [f"explains **{esc(view['target'])}** ({_percent(view['target_probability'])})"]
            if view["pointing"] is not None:
                lines.append(f"pointing game: {'hit' if view['pointing'] else 'miss'} · energy {view['energy']:.2f}")
            if view["view"] == "corrupted" and result.get("stability"):
                lines.append(esc(iv.stability_text(result["stability"])))
            st.caption("  \n".join(lines))
            st.caption(top5_text(view["top5"]))


def _detection_cell(loaded: LoadedModel, result: dict | str, view_names: dict) -> None:
    """A detector's views side by side: its detections, then one heatmap per detection."""
    st.markdown(f"#### {esc(loaded.label)}")
    if isinstance(result, str):
        st.warning(result)
        return
    for column, view in zip(st.columns(len(result["views"])), result["views"]):
        with column:
            found = view["detections"]
            st.image(view["overlay"], width="stretch", alt=f"detections {loaded.label} {view['view']}",
                     caption=f"{view_names[view['view']]}: {len(found)} detection{'s' * (len(found) != 1)}")
            for detection in found:
                st.image(detection["overlay"], width="stretch",
                         alt=f"heatmap {loaded.label} {view['view']} #{detection['index']}")
                lines = [f"#{detection['index']} **{esc(detection['class'])}** {_percent(detection['score'])}"]
                if detection["pointing"] is not None:
                    lines.append(f"pointing game: {'hit' if detection['pointing'] else 'miss'} · energy "
                                 f"{detection['energy']:.2f}")
                elif detection["matched"] is None and view.get("has_truth"):
                    lines.append("matches no ground-truth object")
                st.caption("  \n".join(lines))


def top5_text(top5: list[tuple[str, float]]) -> str:
    """Markdown lines ``top-5:``, then ``class probability``, the first in bold (names escaped)."""
    rows = [f"{'**' if i == 0 else ''}{esc(name)} {_percent(p)}{'**' if i == 0 else ''}"
            for i, (name, p) in enumerate(top5)]
    return "  \n".join(["top-5:", *rows])


def attention_panel(models: list[LoadedModel], source: iv.InputImage, settings: dict) -> None:
    """Channel scales and EMCA's per-scale weights of the chosen models for this image."""
    corruption = settings["corruption"]
    options = ["clean"] + ([f"corrupted ({corruption.replace('_', ' ')}, severity {settings['severity']})"]
                           if corruption else [])
    view = st.radio("Image", options, horizontal=True, key="attention_view")
    use = corruption if view != "clean" else None
    paths = tuple(str(m.path) + "|" + m.label for m in models)
    with st.spinner("Recording attention..."):
        rows, figures = _attention(paths, source.key, use, settings["severity"], _models=models, _source=source)
    plain = [m.label for m in models if not any(r["model"] == m.label for r in rows)]
    if plain:
        st.caption(f"No attention modules in {', '.join(esc(label) for label in plain)} (plain ResNet).")
    if not figures:
        st.info("None of the chosen models has attention modules.")
        return
    st.markdown("**Channel scales z** of the first attention module of each stage, for this image "
                "(one line per model)")
    st.image(figures["scaling"], width="stretch", alt="attention scaling figure")
    if "scale_weights" in figures:
        left, right = st.columns(2)
        left.markdown("**EMCA per-scale weights w_r** (r = 0: the current map)")
        left.image(figures["scale_weights"], width="stretch", alt="attention scale weights figure")
        right.markdown("**Each source's share** of EMCA's aggregated descriptor, this image")
        right.image(figures["source_share"], width="stretch", alt="attention source share figure")
    else:
        st.caption("No EMCA model chosen: no per-scale weights to show.")
    with st.expander("Every attention module", expanded=False):
        st.dataframe(rows, hide_index=True, width="stretch")


def robustness_panel(settings: dict) -> None:
    """Corruption robustness: a saved results JSON, or a small evaluation run here."""
    mode = st.radio("Results", ["Load a results JSON", "Run a small evaluation"], horizontal=True,
                    key="robustness_mode")
    results, name = None, None
    if mode == "Load a results JSON":
        found = find_results(str(iv.checkpoint_root()))
        left, right = st.columns(2)
        pick = left.selectbox(f"Results under {esc(iv.checkpoint_root())}", [*found, "(none)"], key="robustness_file",
                              format_func=str, help="Results JSONs of python -m emca_vis.robustness under the "
                                                    "checkpoint root (EMCA_VIS_CHECKPOINT_ROOT).")
        upload = right.file_uploader("or upload one (python -m emca_vis.robustness --out ...)", type=["json"],
                                     key="robustness_upload")
        try:
            if upload is not None:
                name = upload.name
                if upload.size > iv.MAX_RESULTS_UPLOAD_BYTES:  # refused before its bytes are read
                    raise UserError(f"{name}: {upload.size:,} bytes is over the "
                                    f"{iv.MAX_RESULTS_UPLOAD_BYTES:,}-byte limit of a results upload")
                results = iv.read_results(upload.getvalue(), name, iv.MAX_RESULTS_UPLOAD_BYTES)
            elif pick != "(none)":
                name = str(pick)
                results = iv.read_results_file(pick)
        except UserError as error:
            st.error(f"Results refused: {failure(error)}")
            results = None
        if results is None and upload is None and pick == "(none)":
            st.info("Pick or upload a results JSON written by `python -m emca_vis.robustness`, or run a small "
                    "evaluation.")
    else:
        results, name = _run_evaluation(settings)
    if results is not None:
        _show_results(results, name)


def _run_evaluation(settings: dict) -> tuple[dict | None, str | None]:
    with st.form("robustness_form"):
        corruptions = st.multiselect("Corruptions", CORRUPTIONS, default=list(ROBUSTNESS_DEFAULTS),
                                     key="robustness_corruptions")
        left, right = st.columns(2)
        severities = left.multiselect("Severities", SEVERITIES, default=[1, 3, 5], key="robustness_severities")
        n = right.number_input("Images (shapes test split)", min_value=8, max_value=2000, value=32, step=8,
                               key="robustness_n")
        submitted = st.form_submit_button(f"Evaluate {len(settings['models'])} model(s)", type="primary")
    if submitted:
        bar = st.progress(0.0, text="starting...")

        def progress(done: int, total: int) -> None:
            bar.progress(min(done / max(total, 1), 1.0), text=f"{done} of {total} cells")

        try:
            results = iv.run_robustness(list(settings["models"].values()), corruptions, severities, n,
                                        progress=progress)
        except UserError as error:
            bar.empty()
            st.error(f"Evaluation failed: {failure(error)}")
            return None, None
        bar.progress(1.0, text="done")
        st.session_state["robustness_run"] = (results, f"this session's evaluation ({n} images)")
    return st.session_state.get("robustness_run", (None, None))


def _show_results(results: dict, name: str) -> None:
    st.markdown(f"**{esc(name)}** · {esc(results['data'] or '?')} {esc(results['split'] or '')} · "
                f"{esc(results['backend'] or '?')} backend · CE relative to **{esc(results['baseline'] or '?')}**")
    st.dataframe(iv.summary_rows(results), hide_index=True, width="stretch")
    st.image(iv.robustness_figure(results), width="stretch", alt="robustness figure")
    st.markdown("**CE per corruption** (% of the baseline's errors)")
    st.dataframe(iv.ce_rows(results), hide_index=True, width="stretch")
    with st.expander("Error per corruption and severity (%)"):
        st.dataframe(iv.error_rows(results), hide_index=True, width="stretch")
    with st.expander("Markdown table"):
        st.code(markdown_table(results), language="markdown")
    st.download_button("Download results JSON", json_text(results), file_name="results.json",
                       mime="application/json")


def models_panel(models: list[LoadedModel]) -> None:
    """Architecture, parameters, GFLOPs and training metrics from each checkpoint's metadata."""
    rows = [_facts(str(m.path), m.label, _loaded=m) for m in models]
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"parameters": st.column_config.NumberColumn(format="localized")})
    st.caption("GFLOPs: multiply-accumulates of one forward pass at the input size, in billions.")
    for loaded in models:
        with st.expander(f"{esc(loaded.label)}: checkpoint metadata"):
            meta = loaded.meta
            st.text(str(loaded.path))
            left, right = st.columns(2)
            left.markdown("**Training metrics**")
            left.json(meta["metrics"], expanded=True)
            right.markdown("**Model and training arguments**")
            right.json({"model": meta["model"], "model_kwargs": meta["model_kwargs"],
                        "train_args": meta["train_args"]}, expanded=False)
