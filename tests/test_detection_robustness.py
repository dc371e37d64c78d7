"""Corruption robustness of detectors: mPC / rPC, resumable cells, sharding, COCO-C folders, refusals."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from emca_vis.checkpoint import save_checkpoint
from emca_vis.demo import demo_checkpoints
from emca_vis.detection.data import multishapes
from emca_vis.detection.models import create_detector
from emca_vis.detection.robustness import corrupt_images, performance_under_corruption
from emca_vis.robustness.corruptions import corrupt
from emca_vis.robustness.evaluate import main
from emca_vis.robustness.metrics import IMAGENET_C
from emca_vis.robustness.results import read_results

TINY = {"min_size": 64, "max_size": 64, "width": 0.125, "fpn_channels": 16, "representation_size": 32}
CLASSES = ["circle", "square", "triangle", "star"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    """A random-weight Faster R-CNN and Mask R-CNN at 64 px (Mask R-CNN's random boxes score a
    little AP on multishapes, which varies with the corruption)."""
    folder = tmp_path_factory.mktemp("detectors")
    paths = []
    for seed, name, extra in ((0, "fasterrcnn_resnet18_emca_eca_fpn", {}), (1, "maskrcnn_resnet18_fpn",
                                                                          {"mask_channels": 8})):
        torch.manual_seed(seed)
        model = create_detector(name, len(CLASSES), **TINY, **extra).eval()
        paths.append(save_checkpoint(folder / f"{name}.safetensors", model, class_names=CLASSES, input_size=64,
                                     dataset="multishapes"))
    return paths


def args(detectors, out, *extra):
    return ("--checkpoint", *detectors, "--split", "val", "--num-images", "4", "--batch-size", "2", "--out", out, *extra)


def test_mpc_and_rpc_by_hand():
    scores = performance_under_corruption(0.5, {"fog": {1: 0.4, 3: 0.2}, "snow": {1: 0.3, 3: 0.1}})
    assert scores["mpc"] == pytest.approx((0.4 + 0.2 + 0.3 + 0.1) / 4)  # 0.25
    assert scores["rpc"] == pytest.approx(0.25 / 0.5)
    assert scores["per_corruption"] == pytest.approx({"fog": 0.3, "snow": 0.2})
    assert scores["over"] == ["fog", "snow"]
    # The benchmark's 15 corruptions at 5 severities: the extra ones are reported, not averaged in.
    ap = {c: {s: 0.1 * (i % 3) + 0.01 * s for s in range(1, 6)} for i, c in enumerate(IMAGENET_C)}
    full = performance_under_corruption(0.4, {**ap, "speckle_noise": {s: 0.9 for s in range(1, 6)}})
    expected = sum(0.1 * (i % 3) for i in range(15)) / 15 + 0.03  # mean over severities of 0.01 s is 0.03
    assert full["mpc"] == pytest.approx(expected) and full["rpc"] == pytest.approx(expected / 0.4)
    assert full["over"] == list(IMAGENET_C) and full["per_corruption"]["speckle_noise"] == pytest.approx(0.9)
    nothing = performance_under_corruption(0.0, {"fog": {1: 0.0}})
    assert nothing["mpc"] == 0.0 and nothing["rpc"] is None  # rPC is undefined without clean AP


def test_corruption_of_images_of_several_sizes_groups_them_by_size():
    images = [torch.rand(3, 40, 64), torch.rand(3, 64, 48), torch.rand(3, 40, 64)]
    out = corrupt_images(images, ("gaussian_noise", 3, "torch", 0), index=5)
    assert [o.shape for o in out] == [i.shape for i in images]
    together = corrupt(torch.stack([images[0], images[2]]), "gaussian_noise", 3, seed=5 * 65_536)
    assert torch.equal(out[0], together[0]) and torch.equal(out[2], together[1])
    assert torch.equal(out[1], corrupt(images[1][None], "gaussian_noise", 3, seed=5 * 65_536 + 1)[0])


def test_a_run_killed_after_a_cell_resumes_with_the_numbers_of_an_uninterrupted_run(tmp_path, detectors, cli):
    corruptions = ("--corruptions", "fog", "contrast", "--severities", "1", "5")
    out = tmp_path / "r.json"
    killed = subprocess.run([sys.executable, "-m", "emca_vis.robustness", *map(str, args(detectors, out,
                                                                                          *corruptions))],
                            capture_output=True, text=True, env={**ENV, "EMCA_VIS_FAULT": "cell:3"})
    assert killed.returncode == -9 and not out.exists()
    cells = out.with_suffix(".cells.jsonl").read_text().splitlines()
    assert len(cells) == 3 and all('"metrics"' in line for line in cells)
    resumed = cli(main, *args(detectors, out, *corruptions))
    assert resumed.returncode == 0, resumed.stderr
    lines = out.with_suffix(".cells.jsonl").read_text().splitlines()
    assert lines[:3] == cells and len(lines) == 2 * 5  # only the cells not yet done were computed
    table = resumed.stdout.splitlines()
    assert table[1] == "| model | clean AP | AP50 | mPC | rPC (%) | fog | contrast |"
    assert "Mask AP [0.5:0.95] in %" in resumed.stdout
    whole = cli(main, *args(detectors, tmp_path / "whole.json", *corruptions))
    assert whole.returncode == 0, whole.stderr
    results, reference = read_results(out), read_results(tmp_path / "whole.json")
    assert results["models"] == reference["models"]
    # The summary is the cells' AP, averaged by hand.
    mask = results["models"]["maskrcnn_resnet18_fpn"]
    by_cell = {(c["corruption"], c["severity"]): c["metrics"] for c in map(json.loads, lines)
               if c["model"] == "maskrcnn_resnet18_fpn"}
    ap = [by_cell[(c, s)]["bbox_AP"] for c in ("fog", "contrast") for s in (1, 5)]
    assert mask["clean_ap"] == by_cell[("clean", 0)]["bbox_AP"] > 0
    assert mask["mpc"] == pytest.approx(sum(ap) / 4) and mask["rpc"] == pytest.approx(sum(ap) / 4 / mask["clean_ap"])
    assert mask["mean_ap"]["fog"] == pytest.approx((ap[0] + ap[1]) / 2)
    segm = [by_cell[(c, s)]["segm_AP"] for c in ("fog", "contrast") for s in (1, 5)]
    assert mask["summary"]["segm_AP"]["mpc"] == pytest.approx(sum(segm) / 4)
    assert "segm_AP" not in results["models"]["fasterrcnn_resnet18_emca_eca_fpn"]["summary"]
    csv = out.with_suffix(".csv").read_text().splitlines()
    assert csv[0].startswith("model,corruption,severity,bbox_AP,") and len(csv) == 1 + 2 * 5
    refused = cli(main, *args(detectors, out, "--corruptions", "fog", "--severities", "1", "--seed", "1"))
    assert refused.returncode == 2 and "holds results with seed 0, this run has 1" in refused.stderr


def test_two_processes_give_the_numbers_of_one(tmp_path, detectors, cli):
    corruptions = ("--corruptions", "gaussian_noise", "--severities", "3")
    torch.set_num_threads(1)  # as each torchrun process
    one = cli(main, *args(detectors[1:], tmp_path / "one.json", *corruptions))
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "emca_vis.robustness", *map(str, args(detectors[1:], tmp_path / "two.json",
                                                                      *corruptions))],
                         capture_output=True, text=True, env=ENV)
    assert two.returncode == 0, two.stderr
    single, split = (read_results(tmp_path / f"{n}.json")["models"] for n in ("one", "two"))
    assert single == split and single["maskrcnn_resnet18_fpn"]["clean_ap"] > 0


def test_pre_generated_coco_c_folders(tmp_path, detectors, cli):
    """The layout of Michaelis et al.'s tooling, with the split folder: clean images saved there
    score the clean AP exactly; a corrupted copy scores what it scores."""
    dataset = multishapes("val", length=4, image_size=64)
    for info in dataset.coco.dataset["images"]:
        image = dataset.load(info)
        folder = tmp_path / "coco-c" / "brightness" / "1" / "val"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / info["file_name"])
    result = cli(main, *args(detectors[1:], tmp_path / "c.json", "--corruptions", "brightness", "--severities", "1",
                             "--c-data", f"coco-c:{tmp_path / 'coco-c'}"))
    assert result.returncode == 0, result.stderr
    model = read_results(tmp_path / "c.json")["models"]["maskrcnn_resnet18_fpn"]
    assert model["ap"]["brightness"]["1"] == model["clean_ap"] > 0 and model["rpc"] == pytest.approx(1.0)


@pytest.mark.parametrize("extra, message", [
    (["--baseline", "alexnet"], "error: --baseline: detectors have no CE baseline"),
    (["--c-data", "imagenet-c:/nowhere"], "error: --c-data imagenet-c:/nowhere: detectors read pre-generated "
                                          "corruptions as coco-c:/path"),
    (["--c-data", "coco-c:/nowhere"], "error: --c-data coco-c:/nowhere: no folder /nowhere/fog/1; expected "
                                      "/nowhere/<corruption>/<severity>/[<split folder>/]<image file>"),
    (["--data", "shapes"], "error: unknown detection dataset 'shapes'"),
])
def test_bad_options_are_one_line(tmp_path, detectors, extra, message, cli):
    result = cli(main, *args(detectors[:1], tmp_path / "r.json", "--corruptions", "fog", "--severities", "1", *extra))
    assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.cells.jsonl").exists()


def test_classifiers_and_detectors_in_one_run_are_refused(tmp_path, detectors, cli):
    result = cli(main, "--checkpoint", demo_checkpoints()[0], detectors[0], "--out", tmp_path / "r.json")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: --checkpoint: mixes classification (resnet18) and detection "
                                    "(fasterrcnn_resnet18_emca_eca_fpn) checkpoints; score each task in its own run")


def test_report_with_detector_checkpoints(tmp_path, detectors, cli):
    from emca_vis.report.__main__ import main as report_main

    out = tmp_path / "report"
    result = cli(report_main, "--checkpoint", *detectors, "--split", "val", "--n", "4", "--corruptions", "fog",
                 "contrast", "--severities", "1", "3", "--samples", "1", "--grid-corruptions", "fog",
                 "--grid-severities", "3", "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["models"] == [] and "robustness" not in report
    detection = report["detection"]
    assert [row["family"] for row in detection["models"]] == ["Faster R-CNN", "Mask R-CNN"]
    assert detection["robustness"] == read_results(out / "detection_robustness.json")
    grid = detection["grid"]
    assert (grid["method"], grid["layer"]) == ("layercam", "fpn.0")  # the detectors' default, not --layer's
    assert grid["samples"][0]["conditions"] == ["clean", "fog 3"]
    for label, found in grid["samples"][0]["models"].items():  # the best detection per condition, or none
        assert len(found) == 2 and all(f is None or 0.5 <= f["score"] <= 1 for f in found)
    with np.load(out / "detection_grid.npz") as arrays:
        assert arrays["image1/inputs"].shape == (2, 64, 64, 3)
        assert arrays["image1/maskrcnn_resnet18_fpn/heatmaps"].shape == (2, 64, 64)
    for figure in [*detection["figures"].values(), grid["samples"][0]["figure"]]:
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    mask = detection["robustness"]["models"]["maskrcnn_resnet18_fpn"]
    row = next(line for line in markdown.splitlines() if line.startswith("| `maskrcnn_resnet18_fpn` | **"))
    assert f"{100 * mask['mpc']:.1f}" in row and f"{100 * mask['rpc']:.1f}" in row
    assert "## 2. Detection" in markdown and "| model | clean | fog | contrast |" in markdown
    assert "Box AP against severity for each corruption" in markdown
    assert "### Detections and their heatmaps, clean and corrupted" in markdown
    again = cli(report_main, "--from", out, "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "report.md").read_text().replace("../report/", "") == markdown


def test_the_trained_demo_detector_loses_ap_under_strong_noise(tmp_path):
    from emca_vis.robustness import evaluate

    checkpoint = demo_checkpoints()[0].parent / "detection" / "fasterrcnn_resnet18_emca_eca_fpn.safetensors"
    results = evaluate(checkpoint=[str(checkpoint)], split="val", n=8, batch_size=4, corruptions=["gaussian_noise"],
                       severities=[5], out=str(tmp_path / "r.json"))
    model = results["models"]["fasterrcnn_resnet18_emca_eca_fpn"]
    assert results["data"] == "multishapes" and model["n"] == 8  # the detectors' default data
    assert model["clean_ap"] > 0.3 and model["mpc"] < 0.8 * model["clean_ap"]
    assert model["rpc"] == pytest.approx(model["mpc"] / model["clean_ap"])
