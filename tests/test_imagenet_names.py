"""1000-class checkpoints are labelled with ImageNet's class names in the gradcam figure and the app."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from emca_vis import gradcam
from emca_vis import interactive as iv
from emca_vis.checkpoint import save_checkpoint
from emca_vis.checkpoint.classes import imagenet_classes
from emca_vis.inputs import LoadedModel
from emca_vis.models import create_model

from .test_app import APP, TIMEOUT, _isolated, assert_fine  # noqa: F401  (the app test's isolation fixture)

TABBY = 281  # ImageNet's "tabby" (torchvision's metadata)


@pytest.fixture
def tiny_imagenet(tmp_path):
    """A tiny 1000-class model at 32 px, saved without class names (so ImageNet's by default), whose
    top class is always "tabby"."""
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=1000, width=0.125, stem="cifar").eval()
    with torch.no_grad():
        model.fc.bias[TABBY] = 50.0
    path = save_checkpoint(tmp_path / "root" / "imagenet" / "tiny1000.safetensors", model, input_size=32, resize=32)
    image = tmp_path / "images" / "photo.png"
    image.parent.mkdir(parents=True)
    Image.new("RGB", (48, 40), (120, 90, 60)).save(image)
    return path, image


def test_gradcam_figure_and_json_name_imagenet_classes(tiny_imagenet, tmp_path, monkeypatch):
    path, image = tiny_imagenet
    assert imagenet_classes()[TABBY] == "tabby"
    captured = []
    monkeypatch.setattr(gradcam, "comparison_figure", lambda rows, out, title: captured.extend(rows))
    out = tmp_path / "out" / "g.png"
    assert gradcam.main(["--image", str(image), "--checkpoint", str(path), "--method", "gradcam", "--out", str(out)]) == 0
    assert captured[0]["caption"].startswith("tabby (")
    report = json.loads(out.with_suffix(".json").read_text())
    entry = report["images"][0]["models"][0]
    assert entry["prediction"]["class"] == "tabby"
    assert entry["explanations"][0]["target_name"] == "tabby"
    assert all(row["class"] in imagenet_classes() for row in entry["top5"])


def test_app_shows_imagenet_class_names(tiny_imagenet):
    from streamlit.testing.v1 import AppTest

    path, image = tiny_imagenet
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["folder"] = "root/imagenet"
    at.session_state["models:root/imagenet"] = ["resnet18"]
    at.session_state["source"] = "Image folder"
    at.run()
    assert_fine(at)
    captions = [c.value for c in at.caption]
    assert sum(c.startswith("top-5:  \n**tabby ") for c in captions) == 2  # clean and corrupted
    assert sum("explains **tabby**" in c for c in captions) == 2
    names = set(imagenet_classes())
    shown = [re.sub(r"\\(.)", r"\1", line).strip("*").rsplit(" ", 1)[0]
             for c in captions if c.startswith("top-5:") for line in c.split("  \n")[1:]]
    assert len(shown) == 10 and all(name in names for name in shown)
    assert "tabby" in at.sidebar.selectbox(key="target").options


def test_torch_threads_in_the_app(monkeypatch):
    small = LoadedModel("s", None, None, {"input_size": 64})
    large = LoadedModel("l", None, None, {"input_size": 224})
    monkeypatch.setattr(iv.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert iv.torch_threads([small], "auto") == 1  # the demo models: one thread
    assert iv.torch_threads([small, large], "auto") == 3  # ImageNet size: every core
    assert iv.torch_threads([small], "2") == 2 and iv.torch_threads([large], "1") == 1
    assert iv.torch_threads([large], "many") == 3
