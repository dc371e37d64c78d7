import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from emca_vis.data.shapes import render_sample
from emca_vis.demo import demo_checkpoints
from emca_vis.errors import UserError
from emca_vis.explain.heatmaps import (IG_STEPS, METHODS, SIGNAL_CAMS, cam_from_signals, gradients_from,
                                       heatmap_stats, heatmaps, layer_signals, predict, resolve_target, target_layer)
from emca_vis.gradcam import main
from emca_vis.models import create_model

from .test_models import randomise

heatmaps_module = importlib.import_module("emca_vis.explain.heatmaps")  # the package exports a function of that name


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = randomise(create_model("resnet18_emca_eca", num_classes=5, width=0.125, stem="cifar"), seed=1).eval()
    return model, torch.randn(3, 3, 32, 32)


@pytest.mark.parametrize("layer", ["layer4", "layer3.1"])
def test_cams_from_one_pass_equal_pytorch_grad_cams(tiny, layer):
    model, x = tiny
    probs, signals = layer_signals(model, x, layer)
    assert torch.allclose(probs, predict(model, x), atol=1e-6)
    assert list(signals.targets) == predict(model, x).argmax(1).tolist()
    for method in SIGNAL_CAMS:
        assert np.array_equal(cam_from_signals(model, signals, method), heatmaps(model, x, list(signals.targets),
                                                                                 method, layer)), method
    _, fixed = layer_signals(model, x, layer, [4, 4, 0])
    assert fixed.targets == (4, 4, 0)
    assert np.array_equal(cam_from_signals(model, fixed, "gradcam++"), heatmaps(model, x, [4, 4, 0], "gradcam++", layer))
    with pytest.raises(ValueError, match="scorecam needs more"):
        cam_from_signals(model, signals, "scorecam")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_one_unit_range_map_per_image(tiny, method):
    model, x = tiny
    maps = heatmaps(model, x, [0, 3, 4], method)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert np.allclose(maps.reshape(3, -1).max(1), 1, atol=1e-3)  # each map reaches the top of the scale
    assert torch.is_grad_enabled()


def test_integrated_gradients_in_chunks_equal_one_pass(tiny, monkeypatch):
    from captum.attr import IntegratedGradients

    model, x = tiny
    targets = torch.tensor([0, 3, 4])
    whole = IntegratedGradients(model).attribute(x.clone().requires_grad_(), baselines=0.0, target=targets,
                                                 n_steps=IG_STEPS).abs().sum(1).detach().numpy()
    whole = heatmaps_module._percentile_scale(whole)
    monkeypatch.setattr(heatmaps_module, "BACKWARD_PIXELS", 2 * 32 * 32)  # 2 rows: image and step chunks
    chunked = heatmaps(model, x, targets.tolist(), "integrated_gradients")
    assert np.abs(chunked - whole).max() < 1e-5


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "guided_gradcam", "occlusion"])
def test_attribution_passes_hold_a_bounded_number_of_images(tiny, method, monkeypatch):
    model, x = tiny
    sizes = []
    handle = model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    monkeypatch.setattr(heatmaps_module, "BACKWARD_PIXELS", 2 * 32 * 32)
    try:
        heatmaps(model, x, [0, 3, 4], method, batch_size=4)
    finally:
        handle.remove()
    # occlusion runs without gradients: its batch is bounded by max(images, batch_size)
    assert sizes and max(sizes) <= (4 if method == "occlusion" else 2)


@pytest.mark.parametrize("layer", ["layer4", "layer3", "layer4.0", "layer2.1.conv2"])
@pytest.mark.parametrize("cam_class", [GradCAM, LayerCAM])
def test_fast_path_equals_pytorch_grad_cam(tiny, layer, cam_class):
    model, x = tiny
    targets = [1, 2, 0]
    reference = cam_class(model, [target_layer(model, layer)])(x, [ClassifierOutputTarget(t) for t in targets])
    method = "gradcam" if cam_class is GradCAM else "layercam"
    assert np.abs(heatmaps(model, x, targets, method, layer) - reference).max() <= 1e-4


def test_fast_path_differentiates_only_from_the_target_layer_on(tiny):
    model, x = tiny
    model.zero_grad(set_to_none=True)
    heatmaps(model, x, [0, 1, 2], "gradcam", "layer4")
    assert model.fc.weight.grad is not None
    assert all(p.grad is None for p in model.layer3.parameters())
    assert model.conv1.weight.grad is None
    model.zero_grad(set_to_none=True)
    GradCAM(model, [model.layer4[-1]])(x, [ClassifierOutputTarget(0)] * 3)
    assert model.conv1.weight.grad is not None  # the shipped path back-propagates through everything


def test_gradients_from_restores_grad_mode(tiny):
    model, x = tiny
    with torch.no_grad():
        with gradients_from(model, model.layer4[-1]):
            out = model(x)
        assert out.requires_grad and not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_target_layer_names(tiny):
    model, _ = tiny
    assert target_layer(model, "layer4") is model.layer4[-1]
    assert target_layer(model, "layer3.0") is model.layer3[0]
    with pytest.raises(UserError, match="no layer 'layer9' in the model; use a stage"):
        target_layer(model, "layer9")


def test_targets_by_index_or_name():
    names = ["circle", "square", "star"]
    assert resolve_target(None, names) is None
    assert resolve_target("2", names) == 2 and resolve_target("square", names) == 1
    with pytest.raises(UserError, match="target class 3 is out of range: the model has 3 classes"):
        resolve_target("3", names)
    with pytest.raises(UserError, match="unknown target class 'owl'"):
        resolve_target("owl", names)


def test_heatmap_stats_on_a_known_map():
    heatmap = np.zeros((4, 8), dtype=np.float32)
    heatmap[1, 6] = 1.0
    heatmap[1, 5] = 0.6
    stats = heatmap_stats(heatmap)
    assert stats["peak_xy"] == [0.8125, 0.375]
    assert stats["area_above_half"] == 0.0625 and stats["mean"] == 0.05


def test_heatmaps_of_trained_demo_models_find_the_shape():
    """Grad-CAM of a trained demo model peaks on the object for most test images."""
    from emca_vis.explain.metrics import pointing_game
    from emca_vis.inputs import load_models

    loaded = load_models([demo_checkpoints()[5]])[0]  # resnet18_emca_eca
    samples = [render_sample(0, "test", i, 64) for i in range(24)]
    x = torch.stack([loaded.preprocess(s.image) for s in samples])
    maps = heatmaps(loaded.model, x, [s.label for s in samples], "gradcam")
    hits = pointing_game(maps, np.stack([s.mask for s in samples]), tolerance=4)
    assert hits.mean() >= 0.7


def run_gradcam(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "emca_vis.gradcam", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


@pytest.fixture(scope="module")
def shape_image(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    sample = render_sample(0, "test", 3, 96)
    sample.image.save(folder / "star.png")
    return folder / "star.png", sample


def test_cli_writes_figure_json_and_heatmaps(shape_image, tmp_path, cli):
    image, sample = shape_image
    checkpoints = demo_checkpoints()[:2]
    out = tmp_path / "fig.png"
    result = cli(main, "--image", image, "--checkpoint", *checkpoints, "--method", "gradcam", "saliency",
                 "--top-k", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wrote", str(out), "wrote", str(out.with_suffix(".json")), "wrote",
                                     str(out.with_suffix(".npz"))]
    with Image.open(out) as figure:
        assert figure.width > 1000 and figure.height > 500
    report = json.loads(out.with_suffix(".json").read_text())
    assert [m["label"] for m in report["models"]] == ["resnet18", "resnet18_se"]
    entry = report["images"][0]["models"][0]
    assert 0 < entry["prediction"]["probability"] <= 1
    assert entry["prediction"]["class"] == entry["top5"][0]["class"]
    assert [(e["method"], e["target_name"]) for e in entry["explanations"]][:2] == [
        ("gradcam", entry["top5"][0]["class"]), ("gradcam", entry["top5"][1]["class"])]
    assert len(entry["explanations"]) == 4
    arrays = np.load(out.with_suffix(".npz"))
    assert len(arrays.files) == 8 and arrays[arrays.files[0]].shape == (64, 64)


def test_cli_reports_bad_images_and_processes_the_rest(shape_image, tmp_path):
    image, _ = shape_image
    (tmp_path / "notes.jpg").write_text("not a picture")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(image.read_bytes()[:300])
    Image.new("1", (4000, 4000)).save(tmp_path / "bomb.png")
    out = tmp_path / "fig.png"
    # a real process: the exit status and the lines a shell sees
    result = run_gradcam("--image", tmp_path / "notes.jpg", "--image", image, "--image", truncated,
                         "--image", tmp_path / "missing.png", "--checkpoint", demo_checkpoints()[0],
                         "--method", "gradcam", "--out", out, cwd=tmp_path)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and "Traceback" not in result.stderr
    assert errors[0].startswith("error: ") and "notes.jpg" in errors[0]
    assert "cut.png" in errors[1] and "missing.png" in errors[2]
    report = json.loads(out.with_suffix(".json").read_text())
    assert [entry["path"] for entry in report["images"]] == [str(image)]
    assert len(report["errors"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--method", "gradcamx"], "unknown method 'gradcamx'"),
    (["--target", "owl"], "unknown target class 'owl'"),
    (["--layer", "layer7"], "no layer 'layer7'"),
    (["--checkpoint", "nothing.safetensors"], "nothing.safetensors: no such checkpoint file"),
])
def test_cli_option_errors_are_one_line(shape_image, tmp_path, args, message, cli):
    image, _ = shape_image
    result = cli(main, "--image", image, "--out", tmp_path / "f.png",
                 *(args if "--checkpoint" in args else ["--checkpoint", demo_checkpoints()[0], *args]))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_evaluate_prints_pointing_game_table(tmp_path, cli):
    checkpoints = demo_checkpoints()
    result = cli(main, "evaluate", "--checkpoint", checkpoints[0], checkpoints[5], "--n", "40", "--method",
                 "gradcam", "eigencam", "--faithfulness", "--steps", "4", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| model | method | n | top-1 (%) | pointing game (%) | PG per class (%) | energy PG (%) | "
                               "deletion AUC")
    assert len([line for line in lines if line.startswith("| resnet18")]) == 4
    rows = json.loads((tmp_path / "scores.json").read_text())["rows"]
    assert [(r["model"], r["method"], r["n"]) for r in rows] == [
        ("resnet18", "gradcam", 40), ("resnet18", "eigencam", 40),
        ("resnet18_emca_eca", "gradcam", 40), ("resnet18_emca_eca", "eigencam", 40)]
    for row in rows:
        assert 0 <= row["pointing_game_ci_low"] <= row["pointing_game_mean"] <= row["pointing_game_ci_high"] <= 1
        assert 0 < row["energy_pointing_game_mean"] < 1 and 0 <= row["deletion_auc_mean"] <= 1
    assert rows[2]["pointing_game_mean"] >= 0.6
    assert rows[0]["pointing_tolerance"] == pytest.approx(15 * 64 / 224, abs=1e-4) and rows[0]["pointing_game_classes"] == 12
    for row in rows:  # the paper's per-class figure: each class's hit rate, then their mean
        assert 0 <= row["pointing_game_per_class_ci_low"] <= row["pointing_game_per_class_mean"] <= 1
    header = (tmp_path / "scores.csv").read_text().splitlines()[0]
    assert header.startswith("model,method,n,top1,pointing_game_mean,pointing_game_ci_low")


def test_evaluate_needs_masks_for_image_folders(tmp_path, cli):
    from emca_vis.data.shapes import SHAPE_CLASSES

    for name in SHAPE_CLASSES:
        (tmp_path / "val" / name).mkdir(parents=True)
        render_sample(0, "val", 0, 64).image.save(tmp_path / "val" / name / "a.png")
    result = cli(main, "evaluate", "--checkpoint", demo_checkpoints()[0], "--data", f"folder:{tmp_path}",
                 "--split", "val", "--n", "2", "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no object masks: give --boxes" in result.stderr


def test_voc_boxes_follow_the_resize_and_centre_crop(tmp_path):
    from emca_vis.explain.evaluate import _box_mask

    Image.new("RGB", (128, 96)).save(tmp_path / "a.jpg")
    (tmp_path / "a.xml").write_text("<annotation><size><width>128</width><height>96</height></size><object>"
                                    "<name>n01</name><bndbox><xmin>31</xmin><ymin>1</ymin><xmax>60</xmax>"
                                    "<ymax>48</ymax></bndbox></object></annotation>")
    mask = _box_mask(tmp_path / "a.xml", str(tmp_path / "a.jpg"), {"resize": 64, "input_size": 64})
    # shorter side 96 -> 64 (x 2/3): width 85, centre crop drops 10 columns on the left.
    expected = np.zeros((64, 64), dtype=bool)
    expected[0:32, 10:30] = True
    assert np.array_equal(mask, expected)
