"""Hostile inputs to the Streamlit app (app/main.py), through Streamlit's AppTest.

Each case hands the app what a careless or malicious user could: Markdown and HTML in file,
folder, class and field names, broken or oversized results files and uploads, FIFOs and links
out of the listed folders, a panel that raises. It must end in one ``st.error`` line naming the
input (or in a correct page), with no exception element, user text shown literally (escaped,
no link, image or HTML element), and the rest of the page drawn ("Computed in ..." at its end).

One model is compared (``resnet18``, the tiny demo checkpoint) to keep each run short.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emca_vis import interactive as iv
from emca_vis.data.shapes import SHAPE_CLASSES, render_sample

pytest.importorskip("streamlit")
import streamlit as st  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"
TIMEOUT = 60  # a hang (a FIFO opened for reading) fails the run instead of blocking the suite
DEMO = f"models:{iv.DEMO_FOLDER}"

# Names that render as a remote image, a javascript: link or HTML where Markdown is not escaped.
# File and folder names cannot hold "/": their variants use none.
HOSTILE = {
    "image": "![x](http://evil.example/x.png)",
    "link": "[a](javascript:alert(1))",
    "html": "<img src=x onerror=alert(1)>",
}
FILE_HOSTILE = {
    "image": "![x](http:evil.example)",
    "link": "[a](javascript:alert(1))",
    "html": "<img src=x onerror=alert(1)>",
}


# ------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """An empty checkpoint root and image folder; one torch thread, as in the app."""
    monkeypatch.setenv("EMCA_VIS_CHECKPOINT_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("EMCA_VIS_IMAGE_DIR", str(tmp_path / "images"))
    monkeypatch.delenv("EMCA_VIS_DEMO_DIR", raising=False)
    (tmp_path / "root").mkdir()
    (tmp_path / "images").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    release_fifos(tmp_path)


def release_fifos(folder: Path) -> None:
    """Open every FIFO under ``folder`` for writing and close it: a reader blocked on one (a hang
    being tested) gets end-of-file, so no thread stays blocked after the test."""
    for path in folder.rglob("*"):
        if path.is_fifo():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader: nothing blocked
                pass


def run_app(**state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state[DEMO] = ["resnet18"]
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def unescaped(body: str) -> str:
    """A Markdown body with its backslash escapes undone: the text a reader sees."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", body)


MARKUP = re.compile(r"!\[|\]\(|<[A-Za-z/!?]|[A-Za-z]+:/|javascript:|:[a-z]+\[|\$")


def assert_literal(bodies: list[str], text: str) -> None:
    """``text`` appears literally in one of the Markdown ``bodies``, and none of them holds an
    unescaped link, image, HTML tag, autolink, directive or math (only escaped characters)."""
    assert any(text in unescaped(body) for body in bodies), (text, bodies)
    for body in bodies:
        bare = re.sub(r"\\.", "", body)  # what is left once every escaped character is removed
        assert not MARKUP.search(bare), body


def markdown_bodies(at: AppTest) -> list[str]:
    """Every Markdown body on the page and in the sidebar: text, captions, alerts, labels."""
    bodies = [e.value for kind in ("markdown", "caption", "error", "warning", "info") for e in at.get(kind)]
    bodies += [e.value for kind in ("markdown", "caption", "error", "warning", "info") for e in at.sidebar.get(kind)]
    bodies += [e.label for e in at.expander]
    bodies += [w.label for kind in ("selectbox", "multiselect", "radio", "file_uploader")
               for w in [*at.get(kind), *at.sidebar.get(kind)]]
    return bodies


def one_error(at: AppTest, *fragments: str) -> str:
    """The page's single error element (shown text, one line), holding every fragment literally."""
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in [*at.error, *at.sidebar.get("error")]]
    assert len(errors) == 1, errors
    text = unescaped(errors[0])
    assert "\n" not in text and "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def went_on(at: AppTest) -> None:
    """The script ran to its end: the page's last line is the timing caption."""
    assert not at.exception, [e.value for e in at.exception]
    assert at.caption and at.caption[-1].value.startswith("Computed in "), [c.value for c in at.caption]


def alts(at: AppTest, prefix: str = "") -> list[str]:
    return [img.alt for image in at.get("image") for img in image.proto.imgs if img.alt.startswith(prefix)]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def checkpoint(path: Path, source: str = "resnet18", nan: bool = False, **changes) -> Path:
    """A copy of a demo checkpoint at ``path``, its metadata fields replaced by ``changes``."""
    with safe_open(str(iv.demo_dir() / f"{source}.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["emca_vis"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes)
    if nan:
        name = next(k for k, v in tensors.items() if v.is_floating_point())
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"emca_vis": json.dumps(meta)})
    return path


def results(models: int = 2, corruptions=("fog", "snow")) -> dict:
    severities = [1, 3]
    return {"data": "shapes", "split": "test", "backend": "torch", "baseline": "m0",
            "corruptions": list(corruptions), "severities": severities,
            "models": {f"m{i}": {"checkpoint": f"m{i}.safetensors", "n": 10, "clean_error": 0.1,
                                 "errors": {c: {str(s): 0.2 + 0.1 * s / 3 for s in severities} for c in corruptions},
                                 "ce": {c: 1.0 for c in corruptions}, "relative_ce": {c: 1.0 for c in corruptions},
                                 "mce": 1.0, "relative_mce": 1.0, "mce_over": list(corruptions),
                                 "mean_corruption_accuracy": 0.7} for i in range(models)}}


def edited(change) -> str:
    data = results()
    change(data)
    return json.dumps(data)


def upload_results(name: str, data: bytes | str) -> AppTest:
    at = run_app(panel="Robustness")
    body = data.encode() if isinstance(data, str) else data
    at.get("file_uploader")[0].set_value((name, body, "application/json"))
    return at.run()


# ------------------------------------------------------------------------------------------------
# user text shown as text


@pytest.mark.parametrize("text", [*HOSTILE.values(), "a *b* _c_ `d` # e", ":red[x] :material/home: $x^2$",
                                  "www.evil.example a@b.example <https://x>", "1. item\n> quote\r\n- list"])
def test_escape_markdown_leaves_no_construct(text):
    escaped = iv.escape_markdown(text)
    assert unescaped(escaped) == " ".join(text.split())  # one line, shown as typed
    assert re.fullmatch(r"(?:\\[!-/:-@\[-`{-~]|[^!-/:-@\[-`{-~])*", escaped)  # every punctuation mark escaped


def test_unlisted_reason_names_each_kind_of_file(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "file").write_bytes(b"x")
    (tmp_path / "outside").write_bytes(b"x")
    os.mkfifo(root / "pipe")
    links = {"in": root / "file", "out": tmp_path / "outside", "broken": root / "missing", "dir": root / "sub"}
    for name, target in links.items():
        (root / name).symlink_to(target)
    (root / "loop").symlink_to(root / "loop")
    reasons = {p.name: iv.unlisted_reason(p, root) for p in sorted(root.iterdir())}
    assert reasons == {"broken": "a broken link", "dir": "is a directory, not a regular file", "file": None,
                       "in": None, "loop": reasons["loop"], "out": "a link to outside the listed folder",
                       "pipe": "is a FIFO (named pipe), not a regular file", "sub": "is a directory, not a regular file"}
    assert reasons["loop"].startswith("cannot be read (")


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_upload_name_is_shown_literally(kind):
    name = HOSTILE[kind] + ".png"
    at = run_app(source="Upload")
    at.sidebar.get("file_uploader")[0].set_value((name, png_bytes(render_sample(0, "val", 5, 64).image), "image/png"))
    at.run()
    went_on(at)
    assert not at.error
    assert_literal(markdown_bodies(at), f"**{name}**")
    assert alts(at, "heatmap") == ["heatmap resnet18 clean", "heatmap resnet18 corrupted"]


def test_bad_upload_with_a_hostile_name_is_one_literal_line():
    name = HOSTILE["image"] + HOSTILE["html"] + ".png"
    at = run_app(source="Upload")
    at.sidebar.get("file_uploader")[0].set_value((name, b"not a picture", "image/png"))
    at.run()
    went_on(at)
    one_error(at, f"Upload refused: {name}: not an image file")
    assert_literal(markdown_bodies(at), name)


def test_results_fields_are_shown_literally():
    data = results(1, ())
    data.update(data=HOSTILE["image"], split=HOSTILE["html"], backend=HOSTILE["link"], baseline=HOSTILE["link"])
    data["models"] = {HOSTILE["html"]: data["models"]["m0"]}
    name = HOSTILE["link"] + ".json"
    at = upload_results(name, json.dumps(data))
    went_on(at)
    assert not at.error
    bodies = markdown_bodies(at)
    for text in (name, HOSTILE["image"], HOSTILE["html"], HOSTILE["link"]):
        assert_literal(bodies, text)
    assert list(at.dataframe[0].value["model"]) == [HOSTILE["html"]]  # a table cell: plain text
    assert alts(at, "robustness") == ["robustness figure"]


def test_math_in_results_labels_is_text_in_the_figure():
    data = results(1, ())
    data["models"] = {r"$\undefined{x$": data["models"]["m0"]}
    at = upload_results("math.json", json.dumps(data))
    went_on(at)
    assert not at.error
    assert alts(at, "robustness") == ["robustness figure"]


def test_refused_results_with_a_hostile_name_is_one_literal_line():
    name = HOSTILE["html"] + HOSTILE["link"] + ".json"
    at = upload_results(name, b'{"models": 3}')
    went_on(at)
    one_error(at, f"Results refused: {name}: models: Input should be a valid dictionary")
    assert_literal(markdown_bodies(at), name)


def test_hostile_class_names_are_shown_literally(tmp_path):
    names = [f"{FILE_HOSTILE['image']}{i}" if i % 2 else f"{HOSTILE['html']}{i}" for i in range(len(SHAPE_CLASSES))]
    checkpoint(tmp_path / "root" / "exp" / "m.safetensors", class_names=names)
    at = run_app(folder="root/exp", **{"models:root/exp": ["resnet18"], "target": names[7]})
    went_on(at)
    assert not at.error
    bodies = markdown_bodies(at)
    assert_literal(bodies, f"target: {names[7]}")
    assert_literal(bodies, f"explains **{names[7]}**")
    assert sum(name in unescaped(body) for body in bodies for name in names) >= 10  # top-5 lines, both views


@pytest.mark.parametrize("kind", list(FILE_HOSTILE))
def test_hostile_checkpoint_and_folder_names_are_shown_literally(tmp_path, kind):
    folder = FILE_HOSTILE[kind]
    stem = FILE_HOSTILE[kind] + " model"
    exp = tmp_path / "root" / folder
    checkpoint(exp / "plain.safetensors")
    (exp / f"{stem}.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"junk")
    at = run_app(folder=f"root/{folder}", panel="Models",
                 **{f"models:root/{folder}": ["resnet18", stem]})
    went_on(at)
    one_error(at, f"Cannot load {stem}: ", f"{stem}.safetensors: ")
    bodies = markdown_bodies(at)
    assert_literal(bodies, f"Cannot load {stem}")
    assert [e.label for e in at.expander] == ["resnet18: checkpoint metadata"]
    assert list(at.dataframe[0].value["model"]) == ["resnet18"]


def test_duplicate_models_labelled_by_hostile_file_names(tmp_path):
    stems = [FILE_HOSTILE["html"], FILE_HOSTILE["link"]]
    for stem in stems:
        checkpoint(tmp_path / "root" / "exp" / f"{stem}.safetensors")
    at = run_app(folder="root/exp", panel="Models", **{"models:root/exp": stems})
    went_on(at)
    assert not at.error
    assert sorted(unescaped(e.label) for e in at.expander) == sorted(f"{s}: checkpoint metadata" for s in stems)
    assert_literal(markdown_bodies(at), stems[0])
    assert [t.value for t in at.text] == [str(tmp_path / "root" / "exp" / f"{s}.safetensors") for s in sorted(stems)]


def test_hostile_image_and_voc_names_are_shown_literally(tmp_path):
    stem = FILE_HOSTILE["image"] + FILE_HOSTILE["html"]
    folder = tmp_path / "images"
    render_sample(0, "val", 0, 80).image.save(folder / f"{stem}.png")
    (folder / f"{stem}.xml").write_text(
        f"<annotation><object><name>{HOSTILE['link'].replace('<', '&lt;')}</name><bndbox><xmin>11</xmin>"
        "<ymin>21</ymin><xmax>40</xmax><ymax>50</ymax></bndbox></object></annotation>")
    at = run_app(source="Image folder")
    went_on(at)
    assert not at.error
    bodies = markdown_bodies(at)
    assert_literal(bodies, f"**{stem}.png** · ground truth: **{HOSTILE['link']}**")


# ------------------------------------------------------------------------------------------------
# results files: one line, quickly


RESULTS_CASES = {
    "errors as a list": (edited(lambda r: r["models"]["m1"].update(errors=[0.1, 0.2])),
                         "models.m1.errors: Input should be a valid dictionary"),
    "string error value": (edited(lambda r: r["models"]["m1"]["errors"]["fog"].update({"1": "high"})),
                           "models.m1.errors.fog.1: Input should be a valid number"),
    "5000-digit integer": (edited(lambda r: None).replace('"clean_error": 0.1', '"clean_error": ' + "9" * 5000, 1),
                           "not usable JSON (an integer too long to read)"),
    "deep nesting": ('{"models": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
    "200,000 corruptions in 2 MB": (json.dumps({**results(1, ()), "corruptions": [f"c{i}" for i in range(200_000)]}),
                                    "corruptions: List should have at most 50 items"),
    "5,000 models in 400 KB": (json.dumps({"corruptions": [], "severities": [1], "models": {
        f"m{i}": {"clean_error": 0.1, "errors": {}} for i in range(5000)}}),
        "models: Dictionary should have at most 100"),
    "NaN": (edited(lambda r: r["models"]["m1"].update(clean_error=float("nan"))),
            "models.m1.clean_error: Input should be a finite number"),
    "not UTF-8": (b"\xff\xfe{}", "not valid JSON"),
    "over the upload limit": (b" " * (iv.MAX_RESULTS_UPLOAD_BYTES + 1), "-byte limit of a results upload"),
}


@pytest.mark.parametrize("case", list(RESULTS_CASES))
def test_bad_results_upload_is_one_line(case):
    data, problem = RESULTS_CASES[case]
    started = time.perf_counter()
    at = upload_results("upload.json", data)
    went_on(at)
    one_error(at, "Results refused: upload.json: ", problem)
    assert time.perf_counter() - started < 20, "a bounded file must be refused quickly"
    assert alts(at, "robustness") == []


def test_results_without_ce_are_shown():
    data = results()
    for model in data["models"].values():
        del model["ce"], model["relative_ce"], model["mce"]
    at = upload_results("no-ce.json", json.dumps(data))
    went_on(at)
    assert not at.error
    assert alts(at, "robustness") == ["robustness figure"]
    assert at.dataframe[1].value["fog"].isna().all()  # CE unknown: shown empty


def test_listed_bad_results_file_is_one_line_and_links_out_are_not_listed(tmp_path):
    folder = tmp_path / "root" / "robustness"
    folder.mkdir()
    (folder / "bad.json").write_text(edited(lambda r: r["models"]["m0"].update(errors="x")))
    (folder / "bad.cells.jsonl").write_text("")
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(results()))
    (folder / "out.json").symlink_to(outside)  # a file link out of the root
    (folder / "out.cells.jsonl").write_text("")
    os.mkfifo(folder / "pipe.json")
    (folder / "pipe.cells.jsonl").write_text("")
    at = run_app(panel="Robustness")
    went_on(at)
    assert at.selectbox(key="robustness_file").options == [str(folder / "bad.json"), "(none)"]
    one_error(at, f"Results refused: {folder / 'bad.json'}: models.m0.errors: Input should be a valid dictionary")


# ------------------------------------------------------------------------------------------------
# special files and links in the listed folders


def test_fifo_checkpoint_is_not_opened(tmp_path):
    exp = tmp_path / "root" / "exp"
    checkpoint(exp / "good.safetensors")
    os.mkfifo(exp / "x.safetensors")
    at = run_app(folder="root/exp")
    went_on(at)
    assert at.sidebar.multiselect(key="models:root/exp").options == ["resnet18"]
    warnings = [unescaped(w.value) for w in at.sidebar.warning]
    assert warnings == ["Not offered: x.safetensors: is a FIFO (named pipe), not a regular file"]
    assert not at.error
    assert alts(at, "heatmap") == ["heatmap resnet18 clean", "heatmap resnet18 corrupted"]


def test_fifo_image_is_not_opened(tmp_path):
    folder = tmp_path / "images"
    render_sample(0, "val", 0, 64).image.save(folder / "b.png")
    os.mkfifo(folder / "a.png")
    os.mkfifo(folder / "b.xml")  # a VOC file that is a FIFO is not read either
    at = run_app(source="Image folder")
    went_on(at)
    assert at.sidebar.selectbox(key="folder_image").options == ["b.png"]
    assert [unescaped(w.value) for w in at.sidebar.warning] == [
        "Not offered: a.png: is a FIFO (named pipe), not a regular file"]
    assert not at.error
    assert "**b.png** · no ground-truth box" in unescaped(at.markdown[0].value)


def test_checkpoint_links_are_kept_inside_the_root(tmp_path):
    outside = checkpoint(tmp_path / "elsewhere" / "secret.safetensors", "resnet18_eca")
    inside = checkpoint(tmp_path / "root" / "other" / "mine.safetensors", "resnet18_se")
    exp = tmp_path / "root" / "exp"
    checkpoint(exp / "plain.safetensors")
    (exp / "out.safetensors").symlink_to(outside)
    (exp / "in.safetensors").symlink_to(inside)
    (exp / "loop.safetensors").symlink_to(exp / "loop.safetensors")
    at = run_app(folder="root/exp")
    went_on(at)
    assert at.sidebar.multiselect(key="models:root/exp").options == ["resnet18", "resnet18_se"]
    warning = unescaped(at.sidebar.warning[0].value)
    assert warning.startswith("Not offered: loop.safetensors: cannot be read") and \
        warning.endswith("; out.safetensors: a link to outside the listed folder"), warning
    assert not at.error


def test_image_links_are_kept_inside_the_folder(tmp_path):
    folder = tmp_path / "images"
    render_sample(0, "val", 0, 64).image.save(tmp_path / "secret.png")
    render_sample(0, "val", 1, 64).image.save(folder / "b.png")
    (folder / "a.png").symlink_to(tmp_path / "secret.png")
    (folder / "c.png").symlink_to(folder / "b.png")
    at = run_app(source="Image folder")
    went_on(at)
    assert at.sidebar.selectbox(key="folder_image").options == ["b.png", "c.png"]
    assert [unescaped(w.value) for w in at.sidebar.warning] == [
        "Not offered: a.png: a link to outside the listed folder"]
    with pytest.raises(iv.ImageError, match="a.png: a link to outside the listed folder"):
        iv.folder_image(folder / "a.png", root=folder)


@pytest.mark.parametrize("case, make, problem", [
    ("metadata", lambda p: checkpoint(p, num_classes=-1), "metadata: num_classes"),
    ("NaN weights", lambda p: checkpoint(p, nan=True), "NaN or infinite values"),
    ("truncated", lambda p: p.write_bytes(checkpoint(p).read_bytes()[:5000]), "truncated"),
], ids=["bad-metadata", "nan-weights", "truncated"])
def test_bad_checkpoint_is_one_line_and_the_others_are_compared(tmp_path, case, make, problem):
    exp = tmp_path / "root" / "exp"
    checkpoint(exp / "good.safetensors", "resnet18_eca")
    make(exp / "bad.safetensors")
    label = "resnet18" if case == "NaN weights" else "bad"  # the file name where the metadata is unreadable
    at = run_app(folder="root/exp", **{"models:root/exp": ["resnet18_eca", label]})
    went_on(at)
    one_error(at, f"Cannot load {label}: ", "bad.safetensors: ", problem)
    assert alts(at, "heatmap") == ["heatmap resnet18_eca clean", "heatmap resnet18_eca corrupted"]


# ------------------------------------------------------------------------------------------------
# uploads: bounded work


def test_extreme_aspect_ratio_upload_costs_what_the_model_input_costs():
    pixels = np.zeros((1, 300_000, 3), np.uint8)
    pixels[0, 150_000 - 20:150_000 + 20] = 255
    data = png_bytes(Image.fromarray(pixels))
    at = run_app(source="Upload")
    at.sidebar.get("file_uploader")[0].set_value(("long.png", data, "image/png"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    at.run()
    went_on(at)
    assert not at.error
    assert time.perf_counter() - started < 20  # resizing the shorter side first took 66 s and 4.6 GB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 500 << 10
    assert alts(at, "heatmap") == ["heatmap resnet18 clean", "heatmap resnet18 corrupted"]
    loaded = iv.load_model(iv.demo_dir() / "resnet18.safetensors")
    x = iv.model_inputs(loaded, iv.upload_image("long.png", data).image)
    assert x.shape == (1, 3, loaded.input_size, loaded.input_size)


def test_upload_over_the_byte_limit_is_one_line():
    at = run_app(source="Upload")
    good = png_bytes(render_sample(0, "val", 2, 64).image)
    at.sidebar.get("file_uploader")[0].set_value(("good.png", good, "image/png"))
    at.run()
    at.sidebar.get("file_uploader")[0].set_value(("big.png", b"\0" * (iv.MAX_UPLOAD_BYTES + 1), "image/png"))
    at.run()
    went_on(at)
    one_error(at, f"Upload refused: big.png: {iv.MAX_UPLOAD_BYTES + 1:,} bytes is over the",
              "Showing good.png instead")
    assert alts(at, "heatmap") == ["heatmap resnet18 clean", "heatmap resnet18 corrupted"]


# ------------------------------------------------------------------------------------------------
# a panel that fails


@pytest.mark.parametrize("panel, function", [("Models", "model_facts"), ("Attention", "attention_results"),
                                             ("Compare", "input_views")])
def test_a_failing_panel_is_one_line_and_the_page_goes_on(monkeypatch, panel, function):
    def broken(*args, **kwargs):
        raise ZeroDivisionError(f"boom {HOSTILE['image']}\nsecond line")

    st.cache_data.clear()  # the panel's cached results would hide the failure
    monkeypatch.setattr(iv, function, broken)
    at = run_app(panel=panel)
    went_on(at)
    one_error(at, f"{panel} panel: ZeroDivisionError: boom {HOSTILE['image']} second line")
    assert_literal(markdown_bodies(at), HOSTILE["image"])
    assert at.sidebar.selectbox(key="method").value == "gradcam"  # the sidebar is intact
    monkeypatch.undo()
    at.session_state["panel"] = "Robustness"  # the page still answers: another panel renders
    at.run()
    went_on(at)
    assert not at.error


def test_checkpoint_swapped_for_a_link_out_after_listing_is_refused(tmp_path):
    exp = tmp_path / "root" / "exp"
    checkpoint(exp / "a.safetensors", "resnet18_eca")
    swapped = checkpoint(exp / "b.safetensors")
    at = run_app(folder="root/exp", **{"models:root/exp": ["resnet18_eca", "resnet18"]})
    went_on(at)
    assert not at.error
    swapped.unlink()  # the listing is cached for seconds: the file becomes a link out of the root
    swapped.symlink_to(checkpoint(tmp_path / "elsewhere" / "b.safetensors", "resnet18_se"))
    at.run()
    went_on(at)
    one_error(at, "Cannot load resnet18: b.safetensors: a link to outside the listed folder")
    assert alts(at, "heatmap") == ["heatmap resnet18_eca clean", "heatmap resnet18_eca corrupted"]


def test_image_swapped_for_a_fifo_after_listing_is_one_line(tmp_path):
    folder = tmp_path / "images"
    render_sample(0, "val", 0, 64).image.save(folder / "a.png")
    at = run_app(source="Image folder")
    went_on(at)
    (folder / "a.png").unlink()  # the listing is cached for seconds: the image becomes a FIFO
    os.mkfifo(folder / "a.png")
    at.run()
    went_on(at)
    text = one_error(at, "Image refused: ", "a.png: is a FIFO (named pipe), not a regular file. Showing shapes test")
    assert ".. Showing" not in text
    assert alts(at, "heatmap") == ["heatmap resnet18 clean", "heatmap resnet18 corrupted"]
