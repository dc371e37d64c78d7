"""Detectors in the analysis tools: per-detection heatmaps (gradcam), their scores against matched
objects (gradcam evaluate), the backbone's attention; the trained demo detector and random ones."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

import emca_vis
from emca_vis.attention.__main__ import main as attention_main
from emca_vis.checkpoint import save_checkpoint
from emca_vis.detection import explain
from emca_vis.detection.data import multishapes, render_scene
from emca_vis.detection.models import create_detector
from emca_vis.explain.evaluate import main as evaluate_main
from emca_vis.explain.metrics import pointing_tolerance
from emca_vis.gradcam import main as gradcam_main
from emca_vis.images import load_image
from emca_vis.inputs import load_models

DEMO = Path(emca_vis.__file__).parent / "demo_checkpoints" / "detection" / "fasterrcnn_resnet18_emca_eca_fpn.safetensors"
TINY = {"min_size": 64, "max_size": 64, "width": 0.25, "fpn_channels": 16, "representation_size": 32,
        "mask_channels": 8, "proposals": 50}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A multishapes test scene (128 px) with three objects the demo detector finds."""
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    render_scene(0, "test", 7)[0].save(path)
    return path


@pytest.fixture(scope="module")
def demo():
    return load_models([DEMO], task=None)[0]


def random_detector(tmp_path, family: str):
    """A random-weight detector that keeps every detection (score threshold 0), loaded as the tools load it."""
    torch.manual_seed(0)
    model = create_detector(f"{family}_resnet18_emca_eca_fpn", 2, **TINY).eval()
    loaded = load_models([save_checkpoint(tmp_path / f"{family}.safetensors", model, class_names=["a", "b"])],
                         task=None)[0]
    if family == "retinanet":
        loaded.model.score_thresh = 0.0
    else:
        loaded.model.roi_heads.score_thresh = 0.0
    return loaded


def test_heatmaps_have_the_image_size_and_peak_inside_their_box(cli, demo, scene, tmp_path):
    out = tmp_path / "g.png"
    result = cli(gradcam_main, "--image", scene, "--checkpoint", DEMO, "--method", "layercam", "eigencam",
                 "--layer", "fpn.0", "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    entry = report["images"][0]["models"][0]
    detections = entry["detections"]
    assert entry["layer"] == "fpn.0" and len(detections) >= 2
    arrays = np.load(out.with_suffix(".npz"))
    label = demo.label
    assert sorted(arrays) == sorted([f"000/{label}/all/eigencam"] + [f"000/{label}/{d}/layercam"
                                                                     for d in range(len(detections))])
    for d, detection in enumerate(detections):
        heatmap = arrays[f"000/{label}/{d}/layercam"]
        assert heatmap.shape == (128, 128) and heatmap.max() == pytest.approx(1, abs=1e-6)
        y, x = np.unravel_index(heatmap.argmax(), heatmap.shape)
        x0, y0, x1, y1 = detection["box"]
        # pixel (x, y) covers [x, x + 1) x [y, y + 1); the gradients live in the proposal the box was
        # regressed from, read by RoIAlign from P2's 4-pixel cells: inside the box, give or take a cell
        assert x0 - 5 < x < x1 + 4 and y0 - 5 < y < y1 + 4, (d, (x, y), detection["box"])
        stats = {e["method"]: e["heatmap"] for e in detection["explanations"]}
        assert stats["layercam"]["energy_in_box"] > 0.5
        assert set(stats) == {"layercam", "eigencam"} and detection["class"] in demo.class_names
        assert detection["score"] >= 0.5
    assert arrays[f"000/{label}/all/eigencam"].shape == (128, 128)


def test_score_threshold_and_max_detections_are_honoured(cli, demo, scene, tmp_path):
    pixels = demo.pixels(load_image(scene))
    scores = demo.task.predict(demo, pixels[None])[0]["scores"]
    for threshold, most in ((0.0, 2), (float(scores[0]) - 1e-4, 5)):
        out = tmp_path / f"g{most}.png"
        assert cli(gradcam_main, "--image", scene, "--checkpoint", DEMO, "--method", "gradcam", "--score-threshold",
                   threshold, "--max-detections", most, "--out", out).returncode == 0
        found = json.loads(out.with_suffix(".json").read_text())["images"][0]["models"][0]["detections"]
        expected = min(most, int((scores >= threshold).sum()))
        assert [d["score"] for d in found] == [round(float(s), 4) for s in scores[:expected]]
    assert expected == 1  # only the best detection clears a threshold just under its score


def test_grad_cam_of_a_detection_equals_pytorch_grad_cams_with_its_box_score_target(tmp_path):
    loaded = random_detector(tmp_path, "fasterrcnn")
    pixels = torch.rand(3, 64, 64)  # the detector's own size: no resize, no padding
    explained = explain.explain_detections(loaded, pixels, ["gradcam"], "layer3", 0.0, 3)
    assert len(explained.detections["scores"]) == 3
    reference = GradCAM(loaded.model, [loaded.model.backbone.body.layer3[-1]])
    for d in range(3):
        target = FasterRCNNBoxScoreTarget([int(explained.detections["labels"][d])],
                                          [explained.detections["boxes"][d]])
        expected = reference(pixels[None], [target])[0]
        assert np.allclose(explained.maps["gradcam"][d], expected, atol=1e-5)
    reference.activations_and_grads.release()


@pytest.mark.parametrize("family", ["maskrcnn", "retinanet"])
def test_box_score_targets_give_finite_nonzero_gradients(tmp_path, family):
    loaded = random_detector(tmp_path, family)
    explained = explain.explain_detections(loaded, torch.rand(3, 64, 80), ["layercam", "eigencam"], "layer2", 0.0, 3)
    maps = explained.maps["layercam"]
    assert maps.shape == (3, 64, 80) and explained.maps["eigencam"].shape == (1, 64, 80)
    # LayerCAM is ReLU(gradient) x activation: a map above zero needs a gradient above zero
    assert np.isfinite(maps).all() and (maps.reshape(3, -1).max(1) > 0.99).all()
    if family == "maskrcnn":
        assert explained.detections["masks"].shape == (3, 64, 80) and explained.detections["masks"].dtype == torch.bool


def test_pyramid_levels_choose_the_layer_and_bad_names_are_one_line(cli, tmp_path, scene):
    rcnn, retina = random_detector(tmp_path, "fasterrcnn"), random_detector(tmp_path, "retinanet")
    assert explain.pyramid_levels(rcnn.model) == ["0", "1", "2", "3", "pool"]
    assert explain.pyramid_levels(retina.model) == ["0", "1", "2", "p6", "p7"]
    assert explain.resolve_layer(rcnn, "fpn.pool") == (rcnn.model.backbone.fpn, "pool")
    assert explain.resolve_layer(rcnn, "layer3") == (rcnn.model.backbone.body.layer3[-1], None)
    pixels = torch.rand(3, 64, 64)
    fine = explain.explain_detections(rcnn, pixels, ["layercam"], "fpn.0", 0.0, 2)
    coarse = explain.explain_detections(rcnn, pixels, ["layercam"], "fpn.1", 0.0, 2)
    # 64-px boxes are read from P2 only (torchvision's level mapper): its level has the gradients
    assert fine.maps["layercam"].max() > 0.99 and coarse.maps["layercam"].max() == 0
    result = cli(gradcam_main, "--image", scene, "--checkpoint", tmp_path / "retinanet.safetensors", "--layer",
                 "fpn.pool", "--out", tmp_path / "x.png")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr == ("error: --layer fpn.pool: no such layer in the detector retinanet_resnet18_emca_eca_fpn; "
                             "use a backbone stage (layer1, layer2, layer3, layer4), a block (layer4.0) or a pyramid "
                             "level (fpn.0, fpn.1, fpn.2, fpn.p6, fpn.p7)\n")


@pytest.mark.parametrize("argv, message", [
    (["--method", "integrated_gradients"], "error: method integrated_gradients does not apply to the detector "
     "fasterrcnn_resnet18_emca_eca_fpn; detectors take gradcam, gradcam++, hirescam, xgradcam, layercam, eigencam"),
    (["--target", "circle"], "error: --target: the detector fasterrcnn_resnet18_emca_eca_fpn explains its detections;"
     " choose them with --score-threshold and --max-detections"),
    (["--score-threshold", "1.5"], "must be between 0 and 1"),
])
def test_options_detectors_lack_are_one_line_errors(cli, scene, tmp_path, argv, message):
    result = cli(gradcam_main, "--image", scene, "--checkpoint", DEMO, *argv, "--out", tmp_path / "x.png")
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_evaluate_scores_matched_detections_by_hand(monkeypatch):
    """Two scenes with hand-placed detections and maps: the matches, hits and energies are known."""
    dataset = multishapes("test", 2, 128, masks=True)
    truths = [dataset[i][1] for i in range(2)]
    maps_of, detections_of = [], []
    for target in truths:
        boxes, labels = target["boxes"].clone(), target["labels"].clone()
        detections = {"boxes": boxes, "labels": labels, "scores": torch.linspace(0.9, 0.6, len(boxes))}
        maps = np.zeros((len(boxes), 128, 128), np.float32)
        for d, box in enumerate(boxes.tolist()):
            ys, xs = np.nonzero(target["masks"][d].numpy())
            maps[d, ys[len(ys) // 2], xs[len(xs) // 2]] = 1  # the peak on the object: a hit, all energy inside
        detections_of.append(detections)
        maps_of.append(maps)
    # scene 0: the first detection's map points to a corner (a miss, no energy inside); the last
    # detection of scene 1 has the wrong class (unmatched, so not scored)
    maps_of[0][0] = 0
    maps_of[0][0, 0, 0] = 1
    detections_of[1]["labels"][-1] = detections_of[1]["labels"][-1] % 4 + 1
    calls = iter(range(2))

    def fake(loaded, pixels, methods, layer, score_threshold, max_detections):
        i = next(calls)
        return explain.Explained(detections_of[i], {"hirescam": maps_of[i]})

    monkeypatch.setattr(explain, "explain_detections", fake)
    loaded = type("Loaded", (), {"label": "det", "path": Path("det.safetensors"), "input_size": 128,
                                 "class_names": list(dataset.classes)})()
    args = type("Args", (), {"layer": "layer4", "score_threshold": 0.5, "max_detections": 5})()
    [row] = explain.score_heatmaps(loaded, "multishapes", "test", 2, ["hirescam"], args, pointing_tolerance)
    objects = len(truths[0]["labels"]) + len(truths[1]["labels"])
    matched = objects - 1
    assert (row["n"], row["objects"]) == (matched, objects)
    assert row["recall"] == round(100 * matched / objects, 2)
    assert row["pointing_game_mean"] == pytest.approx((matched - 1) / matched)
    assert row["energy_pointing_game_mean"] == pytest.approx((matched - 1) / matched)
    assert row["pointing_game_ci_low"] < row["pointing_game_mean"] < row["pointing_game_ci_high"] <= 1
    # per class: the missed object's class has one hit in two or fewer tries, every other class all hits
    labels = [int(t) for truth in truths for t in truth["labels"]][:-1]  # the unmatched object is last
    missed = int(truths[0]["labels"][0])
    rates = [1 - (1 if c == missed else 0) / labels.count(c) for c in sorted(set(labels))]
    assert row["pointing_game_per_class_mean"] == pytest.approx(np.mean(rates))
    assert row["pointing_game_classes"] == len(set(labels))


def test_match_is_greedy_by_score_with_class_and_iou():
    truth = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 26, 30], [20, 20, 30, 30]], dtype=torch.float)
    # detection 1 finds object 0 taken; detection 2 overlaps object 1 by IoU 0.6 but has the other class
    assert explain.match(boxes, torch.tensor([1, 1, 1, 2]), truth, torch.tensor([1, 2])) == [(0, 0), (3, 1)]
    assert explain.match(boxes[2:3], torch.tensor([2]), truth, torch.tensor([1, 2])) == [(0, 1)]
    assert explain.match(boxes[2:3], torch.tensor([2]), truth, torch.tensor([1, 2]), iou=0.7) == []


def test_evaluate_cli_on_multishapes(cli, tmp_path):
    result = cli(evaluate_main, "--checkpoint", DEMO, "--data", "multishapes", "--n", "3", "--method", "layercam",
                 "--layer", "fpn.0", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    [row] = json.loads((tmp_path / "scores.json").read_text())["rows"]
    assert row["method"] == "layercam" and 1 <= row["n"] <= row["objects"] and row["recall"] > 50
    assert row["pointing_game_mean"] > 0.5
    assert ("| model | method | n | recall (%) | pointing game (%) | PG per class (%) | energy PG (%) |"
            in result.stdout)
    refused = cli(evaluate_main, "--checkpoint", DEMO, "--data", "multishapes", "--faithfulness", "--out",
                  tmp_path / "f")
    assert refused.returncode == 2 and refused.stderr == (
        "error: --faithfulness: not available for the detection model fasterrcnn_resnet18_emca_eca_fpn\n")


def test_attention_on_a_detector_labels_images_by_their_largest_object(cli, tmp_path, scene):
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 30, 5], [0, 0, 4, 4]], dtype=torch.float)
    assert explain.largest_object(torch.tensor([1, 3, 2]), boxes) == 2  # area 150 beats 100
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[2, :4, :4] = True
    assert explain.largest_object(torch.tensor([1, 3, 2]), boxes, masks) == 1  # the largest mask wins
    assert explain.largest_object(torch.tensor([], dtype=torch.long), boxes[:0]) is None
    result = cli(attention_main, "--checkpoint", DEMO, "--data", "multishapes", "--n", "6", "--out", tmp_path / "a")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "a" / "attention.json").read_text())
    [model] = data["models"].values()
    dataset = multishapes("val", 6, 128)
    expected = np.bincount([explain.largest_object(t["labels"], t["boxes"], t["masks"])
                            for t in (dataset[i][1] for i in range(6))], minlength=4)
    assert model["class_names"] == ["circle", "square", "triangle", "star"]
    assert [m["images"] for m in model["modules"]] == [6] * len(model["modules"]) and len(model["modules"]) >= 4
    seen = [row is not None for row in model["modules"][0]["class_mean"]]
    assert seen == [bool(c) for c in expected]
    assert any("scale_weights" in m for m in model["modules"]) and (tmp_path / "a" / "scale_weights.png").exists()
    single = cli(attention_main, "--checkpoint", DEMO, "--image", scene, "--out", tmp_path / "b")
    assert single.returncode == 0, single.stderr
