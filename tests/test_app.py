"""The Streamlit app (app/main.py) through Streamlit's AppTest: each panel, uploads good and bad.

The real browser (upload through the page, screenshot) is tests/test_app_browser.py.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emca_vis import interactive as iv
from emca_vis.data.shapes import render_sample
from emca_vis.errors import UserError
from emca_vis.explain import heatmaps, stability
from emca_vis.images import ImageError
from emca_vis.robustness import evaluate

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"
DEFAULT = ("resnet18", "resnet18_eca", "resnet18_emca_eca")
TIMEOUT = 120  # the first run imports torch and friends


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """An empty checkpoint root and image folder; one torch thread, as in the app (restored afterwards)."""
    monkeypatch.setenv("EMCA_VIS_CHECKPOINT_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("EMCA_VIS_IMAGE_DIR", str(tmp_path / "images"))
    monkeypatch.delenv("EMCA_VIS_DEMO_DIR", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_app(**state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def assert_fine(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def shown(elements) -> str:
    """The Markdown bodies of ``elements``, joined, with backslash escapes undone: the text a reader sees."""
    return " ".join(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", element.value) for element in elements)


def alts(at: AppTest, prefix: str = "") -> list[str]:
    return [img.alt for image in at.get("image") for img in image.proto.imgs if img.alt.startswith(prefix)]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png(width: int = 8000, height: int = 8000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    data = bytearray(png_bytes(Image.new("RGB", (8, 8))))
    ihdr = bytearray(data[12:29])  # chunk type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


# ----------------------------------------------------------------------------------------------
# Compare


def test_compare_panel_default_view_and_interaction():
    at = run_app()
    assert_fine(at)
    assert at.session_state["panel"] == "Compare"
    assert alts(at, "heatmap") == [f"heatmap {m} {v}" for m in DEFAULT for v in ("clean", "corrupted")]
    assert alts(at, "input") == ["input clean", "input corrupted"]
    text = shown(at.markdown)
    assert "shapes test #7 (diamond)" in text and "ground truth: **diamond**" in text
    captions = [c.value for c in at.caption]
    assert sum(c.startswith("top-5:  \n**") and c.count("%") == 5 for c in captions) == 6  # per model and view
    assert sum(c.startswith("top-5:  \n**diamond") for c in captions) >= 3  # every model gets the clean one right
    assert sum("pointing game:" in c for c in captions) == 6  # localisation score, clean and corrupted
    # next to the corrupted view's pointing game: the library's stability numbers, clean against corrupted
    unescaped = [re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", c) for c in captions]
    source = iv.sample_image(iv.DEFAULT_SAMPLE, 64)
    for label in DEFAULT:
        loaded = iv.load_model(iv.demo_dir() / f"{label}.safetensors")
        clean, noisy = iv.view_input(loaded, source), iv.view_input(loaded, source, "gaussian_noise", 3)
        target = int(iv.view_probabilities(loaded, clean).argmax())
        maps = [heatmaps(loaded.model, loaded.normalise(x), [target], "gradcam") for x in (clean, noisy)]
        expected = stability.stability(*maps, masks=iv.model_mask(loaded, source.mask)[None], tolerance=15 * 64 / 224)
        line = next(c for c in unescaped if "vs clean (" in c and f"{expected['rank_correlation'][0]:.2f}" in c)
        assert f"top-15% IoU {expected['top_iou'][0]:.2f}" in line
        assert f"peak shift {100 * expected['peak_shift'][0]:.1f}%" in line
        retained = expected["pointing_retained"][0]
        assert ("clean pointing missed" if np.isnan(retained) else
                f"pointing hit {'kept' if retained else 'lost'}") in line
    assert sum("vs clean (" in c for c in unescaped) == 3

    at.sidebar.selectbox(key="method").set_value("layercam")
    at.sidebar.slider(key="severity").set_value(5)
    at.sidebar.selectbox(key="target").set_value("star")
    at.run()
    assert_fine(at)
    assert len(alts(at, "heatmap")) == 6
    assert sum("explains **star**" in c.value for c in at.caption) == 6
    captions = [img.caption for image in at.get("image") for img in image.proto.imgs]
    assert captions.count("gaussian noise, severity 5") == 3 and "input: gaussian noise, severity 5" in captions

    at.sidebar.selectbox(key="corruption").set_value("none")
    at.sidebar.selectbox(key="sample").set_value(3)
    at.run()
    assert_fine(at)
    assert alts(at, "heatmap") == [f"heatmap {m} clean" for m in DEFAULT]
    assert "pentagon" in shown(at.markdown)


def test_checkpoint_folders_come_only_from_the_root(tmp_path):
    runs = tmp_path / "root" / "exp1"
    runs.mkdir(parents=True)
    for name in ("resnet18", "resnet18_emca_se"):
        shutil.copy(iv.demo_dir() / f"{name}.safetensors", runs / f"{name}.safetensors")
    (tmp_path / "root" / "empty").mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(iv.demo_dir() / "resnet18.safetensors", outside / "a.safetensors")
    (tmp_path / "root" / "link").symlink_to(outside)  # a link out of the root is not followed
    assert list(iv.checkpoint_folders()) == [iv.DEMO_FOLDER, iv.DEMO_DETECTOR_FOLDER, "root/exp1"]

    at = run_app()
    assert at.sidebar.selectbox(key="folder").options == [iv.DEMO_FOLDER, iv.DEMO_DETECTOR_FOLDER, "root/exp1"]
    at.sidebar.selectbox(key="folder").set_value("root/exp1").run()
    assert_fine(at)
    assert at.sidebar.multiselect(key="models:root/exp1").value == ["resnet18", "resnet18_emca_se"]
    assert alts(at, "heatmap") == [f"heatmap {m} {v}" for m in ("resnet18", "resnet18_emca_se")
                                   for v in ("clean", "corrupted")]
    assert not any(w.type == "text_input" for w in at.sidebar)  # no free path typing


# ----------------------------------------------------------------------------------------------
# uploads


def test_upload_shows_the_uploaded_image():
    at = run_app(source="Upload")
    assert not at.exception
    assert any("Upload an image" in i.value for i in at.info)
    image = render_sample(0, "val", 5, 96).image
    at.sidebar.get("file_uploader")[0].set_value(("my star.png", png_bytes(image), "image/png"))
    at.run()
    assert_fine(at)
    assert "**my star.png**" in shown(at.markdown)
    assert "no ground-truth box" in shown(at.markdown)
    assert len(alts(at, "heatmap")) == 6
    assert not any("pointing game" in c.value for c in at.caption)  # no box, no localisation score


@pytest.mark.parametrize("name, data, problem", [
    ("notes.png", b"these are my notes, not a picture", "not an image file"),
    ("cut.png", png_bytes(Image.new("RGB", (64, 64), "red"))[:60], "truncated or corrupt"),
    ("bomb.png", huge_png(8000, 8000), "64000000 pixels is over the 40000000-pixel limit"),
    ("giant.png", huge_png(20_000, 20_000), "too many pixels"),
], ids=["non-image", "truncated", "over-pixel-limit", "decompression-bomb"])
def test_bad_upload_is_reported_and_the_app_keeps_working(name, data, problem):
    at = run_app(source="Upload")
    good = png_bytes(render_sample(0, "val", 2, 64).image)
    uploader = at.sidebar.get("file_uploader")[0]
    uploader.set_value(("good.png", good, "image/png"))
    at.run()
    assert_fine(at)
    at.sidebar.get("file_uploader")[0].set_value((name, data, "image/png"))
    at.run()
    assert not at.exception
    assert len(at.error) == 1
    message = shown(at.error)
    assert message.startswith(f"Upload refused: {name}: ") and problem in message, message
    assert "\n" not in message and "/tmp" not in message and ".." not in message
    assert "Showing good.png instead" in message
    assert len(alts(at, "heatmap")) == 6  # the previous image is still compared
    at.sidebar.radio(key="source").set_value("Shapes sample").run()
    assert_fine(at)


def test_streamlit_config_limits_uploads_and_sends_no_usage_stats():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((APP.parents[1] / ".streamlit" / "config.toml").read_text())
    assert 0 < config["server"]["maxUploadSize"] <= 50 and config["server"]["headless"] is True
    assert config["browser"]["gatherUsageStats"] is False


def test_upload_image_helper():
    image = iv.upload_image("a.png", png_bytes(Image.new("RGBA", (10, 6), (0, 0, 0, 0))))
    assert image.image.mode == "RGB" and image.image.size == (10, 6) and image.mask is None
    assert image.key == iv.upload_image("b.png", png_bytes(Image.new("RGBA", (10, 6), (0, 0, 0, 0)))).key
    for data, problem in [(b"", "empty file"), (b"GIF89a junk", "not an image"), (huge_png(), "pixel limit")]:
        with pytest.raises(ImageError, match=problem) as error:
            iv.upload_image("../../etc/x.png", data)
        assert str(error.value).startswith("../../etc/x.png: ")


def test_folder_images_with_voc_box(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    render_sample(0, "val", 1, 80).image.save(folder / "b.png")
    render_sample(0, "val", 0, 80).image.save(folder / "a.jpg")
    (folder / "a.xml").write_text("<annotation><object><name>circle</name><bndbox><xmin>11</xmin><ymin>21</ymin>"
                                  "<xmax>40</xmax><ymax>50</ymax></bndbox></object></annotation>")
    assert [p.name for p in iv.folder_images()] == ["a.jpg", "b.png"]
    source = iv.folder_image(folder / "a.jpg")
    assert source.label == "circle" and source.mask[20:50, 10:40].all() and source.mask.sum() == 900
    assert iv.folder_image(folder / "b.png").mask is None

    at = run_app(source="Image folder")
    assert_fine(at)
    assert "**a.jpg**" in shown(at.markdown)
    assert sum("pointing game:" in c.value for c in at.caption) == 6


# ----------------------------------------------------------------------------------------------
# Attention, Robustness, Models


def test_attention_panel():
    at = run_app(panel="Attention")
    assert_fine(at)
    assert alts(at, "heatmap") == []  # only the open panel computes
    assert alts(at, "attention") == ["attention scaling figure", "attention scale weights figure",
                                     "attention source share figure"]
    assert any("No attention modules in resnet18" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert set(table["model"]) == {"resnet18_eca", "resnet18_emca_eca"}
    assert table["w_r (sources)"].str.contains("current").sum() == 4  # one EMCA module per stage
    at.radio(key="attention_view").set_value(at.radio(key="attention_view").options[1]).run()
    assert_fine(at)
    assert len(alts(at, "attention")) == 3


def test_robustness_panel_loads_results_json(tmp_path):
    out = tmp_path / "root" / "robustness" / "results.json"
    paths = [iv.demo_dir() / f"{name}.safetensors" for name in DEFAULT[:2]]
    evaluate(checkpoint=[str(p) for p in paths], corruptions=["gaussian_noise"], severities=[5], n=8, batch_size=8,
             out=str(out))
    at = run_app(panel="Robustness")
    assert_fine(at)
    assert at.selectbox(key="robustness_file").value == out
    assert alts(at, "robustness") == ["robustness figure"]
    summary = at.dataframe[0].value
    assert list(summary["model"]) == list(DEFAULT[:2]) and (summary["images"] == 8).all()
    assert "gaussian_noise" in at.dataframe[1].value.columns

    at.get("file_uploader")[0].set_value(("broken.json", b"{\"models\": 3}", "application/json")).run()
    assert not at.exception
    assert [shown([e]) for e in at.error] == ["Results refused: broken.json: models: Input should be a valid "
                                           "dictionary (got 3)"]
    with pytest.raises(UserError, match="x.json: not valid JSON"):
        iv.read_results(b"\x00", "x.json")


def test_robustness_panel_runs_a_small_evaluation():
    at = run_app(panel="Robustness", robustness_mode="Run a small evaluation")
    assert_fine(at)
    assert alts(at, "robustness") == []
    at.multiselect(key="robustness_corruptions").set_value(["contrast"])
    at.multiselect(key="robustness_severities").set_value([5])
    at.number_input(key="robustness_n").set_value(8)
    at.button[0].click().run()
    assert_fine(at)
    assert alts(at, "robustness") == ["robustness figure"]
    results, _ = at.session_state["robustness_run"]
    assert list(results["models"]) == list(DEFAULT) and results["corruptions"] == ["contrast"]
    assert all(m["n"] == 8 for m in results["models"].values())


def test_models_panel():
    at = run_app(panel="Models")
    assert_fine(at)
    table = at.dataframe[0].value
    assert list(table["model"]) == list(DEFAULT)
    assert (table["parameters"] > 100_000).all() and (table["GFLOPs"] > 0).all()
    assert (table["val top-1 (%)"] > 90).all() and list(table["dataset"]) == ["shapes"] * 3
    assert len(at.expander) == 3 and len(at.json) == 6


def test_explain_is_deterministic_and_scores_localisation():
    loaded = iv.load_model(iv.demo_dir() / "resnet18_eca.safetensors")
    source = iv.sample_image(7, 64)
    a = iv.explain(loaded, source, "gradcam", None, "layer4", "fog", 2)
    b = iv.explain(loaded, source, "gradcam", None, "layer4", "fog", 2)
    assert [v["view"] for v in a["views"]] == ["clean", "corrupted"]
    for x, y in zip(a["views"], b["views"]):
        np.testing.assert_array_equal(x["overlay"], y["overlay"])
        assert x["overlay"].shape == (iv.DISPLAY_SIZE, iv.DISPLAY_SIZE, 3) and x["overlay"].dtype == np.uint8
        assert len(x["top5"]) == 5 and abs(sum(p for _, p in x["top5"]) - 1) < 0.2
        assert isinstance(x["pointing"], bool) and 0 <= x["energy"] <= 1
    assert a["views"][0]["predicted"] == "diamond"
    assert a["stability"] == b["stability"] and a["stability"]["target"] == "diamond"
    assert -1 <= a["stability"]["rank_correlation"] <= 1 and 0 <= a["stability"]["top_iou"] <= 1


# ----------------------------------------------------------------------------------------------
# Detectors


def test_compare_panel_on_the_demo_detectors():
    """The demo detectors on a multishapes scene: each view's detections, one heatmap per
    detection, and the pointing game of each matched detection, equal to the library's."""
    from emca_vis.detection.explain import explain_detections, map_of, match
    from emca_vis.explain.metrics import energy_pointing_game, pointing_game, pointing_tolerance

    at = run_app(folder=iv.DEMO_DETECTOR_FOLDER)
    assert_fine(at)
    labels = list(iv.DEMO_DETECTORS)
    assert at.sidebar.multiselect(key=f"models:{iv.DEMO_DETECTOR_FOLDER}").value == labels
    assert at.sidebar.selectbox(key="detector_method").value == "layercam"
    assert at.sidebar.selectbox(key="detector_layer").value == "fpn.0"
    assert {"fpn.0", "fpn.1", "fpn.2", "fpn.3", "fpn.pool", "layer4", "layer1.0"} <= set(
        at.sidebar.selectbox(key="detector_layer").options)
    assert alts(at, "detections") == [f"detections {m} {v}" for m in labels for v in ("clean", "corrupted")]
    source = iv.scene_image(iv.DEFAULT_SAMPLE)
    assert "ground truth: " + ", ".join(f"**{name}**" for name, _ in source.objects) in shown(at.markdown)
    captions = shown(at.caption)
    for label in labels:
        loaded = iv.load_model(iv.demo_detector_dir() / f"{label}.safetensors")
        x = iv.view_input(loaded, source)
        explained = explain_detections(loaded, x[0], ["layercam"], "fpn.0", 0.5, 3)
        found = explained.detections
        assert 1 <= len(found["boxes"]) <= 3
        assert [a for a in alts(at, f"heatmap {label} clean")] == [
            f"heatmap {label} clean #{d}" for d in range(len(found["boxes"]))]
        truth = torch.tensor([iv._mask_box(mask) for _, mask in source.objects])
        truth_labels = torch.tensor([loaded.class_names.index(name) + 1 for name, _ in source.objects])
        pairs = dict(match(found["boxes"], found["labels"], truth, truth_labels))
        assert pairs, "the trained demo detector finds the scene's objects"
        for d, g in pairs.items():
            heatmap = map_of(explained, "layercam", d)
            mask = source.objects[g][1][None]
            hit = bool(pointing_game(heatmap[None], mask, pointing_tolerance(128))[0])
            energy = float(energy_pointing_game(heatmap[None], mask)[0])
            name, score = loaded.class_names[int(found["labels"][d]) - 1], float(found["scores"][d])
            assert (f"#{d} {name} {100 * score:.1f}%  \npointing game: {'hit' if hit else 'miss'} · "
                    f"energy {energy:.2f}") in captions.replace("**", "")

    at.sidebar.selectbox(key="detector_method").set_value("eigencam")
    at.sidebar.slider(key="max_detections").set_value(1)
    at.sidebar.selectbox(key="corruption").set_value("none")
    at.run()
    assert_fine(at)
    assert alts(at, "detections") == [f"detections {m} clean" for m in labels]
    assert alts(at, "heatmap") == [f"heatmap {m} clean #0" for m in labels]


def test_detection_view_draws_each_detection_with_its_own_heatmap():
    """On the trained demo detector, LayerCAM at the finest pyramid level peaks inside each
    detection's box; the overlay is the display size; ground truth and detections are drawn."""
    loaded = iv.load_model(iv.demo_detector_dir() / "fasterrcnn_resnet18_emca_eca_fpn.safetensors")
    source = iv.scene_image(iv.DEFAULT_SAMPLE)
    x = iv.view_input(loaded, source)
    view = iv.detection_view(loaded, source, x, iv.detection_signals(loaded, x, "fpn.0", 0.5, 3), "clean", "layercam")
    assert view["overlay"].shape == (iv.DISPLAY_SIZE, iv.DISPLAY_SIZE, 3) and view["has_truth"]
    assert view["detections"]
    for detection in view["detections"]:
        heatmap = detection["heatmap"]
        assert heatmap.shape == (128, 128)
        row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        x0, y0, x1, y1 = detection["box"]
        assert x0 - 2 <= col <= x1 + 2 and y0 - 2 <= row <= y1 + 2, (detection["class"], detection["box"], row, col)
        assert detection["overlay"].shape == view["overlay"].shape
    amber = np.all(view["overlay"] == iv.DETECTION_COLOUR, axis=-1).sum()
    green = np.all(view["overlay"] == iv.BOX_COLOUR, axis=-1).sum()
    assert amber > 100 and green > 100
