"""Detectors over emca-vis backbones, COCO-format data, COCOeval metrics, detector checkpoints."""

import json

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as mask_utils

from emca_vis.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from emca_vis.checkpoint.__main__ import main as checkpoint_main
from emca_vis.data import DatasetError
from emca_vis.detection.models import create_detector
from emca_vis.detection.data import (
    CocoDetection,
    coco_dataset,
    coco_index,
    multishapes,
    read_coco,
    render_scene,
    write_coco,
)
from emca_vis.detection.evaluate import coco_metrics, evaluate_detector, to_coco_results
from emca_vis.detection.models import FrozenBatchNorm1d
from emca_vis.models import UnknownModelError, create_model
from emca_vis.profile import build_for_profile, count_gflops, count_parameters, profile_models
from torchvision.ops import FrozenBatchNorm2d

from .test_models import randomise

TINY = {"min_size": 64, "max_size": 64, "width": 0.125, "fpn_channels": 16, "representation_size": 32}


def _targets(masks: bool):
    target = {"boxes": torch.tensor([[8.0, 10.0, 30.0, 40.0]]), "labels": torch.tensor([2])}
    if masks:
        target["masks"] = torch.zeros(1, 64, 64, dtype=torch.uint8)
        target["masks"][0, 10:40, 8:30] = 1
    return [target]


@pytest.mark.parametrize("family", ["fasterrcnn", "maskrcnn", "retinanet"])
@pytest.mark.parametrize("backbone", ["resnet18", "resnet18_se", "resnet18_emca_eca"])
def test_every_family_builds_and_runs_over_plain_baseline_and_emca(family, backbone):
    torch.manual_seed(0)
    model = create_detector(f"{family}_{backbone}_fpn", num_classes=3, **TINY)
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]
    losses = model.train()(images[:1], _targets(family == "maskrcnn"))
    expected = {"fasterrcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
                "retinanet": {"classification", "bbox_regression"}}
    expected["maskrcnn"] = expected["fasterrcnn"] | {"loss_mask"}
    assert set(losses) == expected[family] and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    outputs = model.eval()(images)
    assert len(outputs) == 2
    for output, image in zip(outputs, images):
        assert output["boxes"].shape[1] == 4 and len(output["scores"]) == len(output["labels"])
        assert ("masks" in output) == (family == "maskrcnn")
        if family == "maskrcnn":
            assert output["masks"].shape[1:] == (1, *image.shape[1:])
    assert model.config["name"] == f"{family}_{backbone}_fpn" and model.metadata["task"] == "detection"


def test_keys_and_parameters_are_torchvisions():
    with torch.device("meta"):
        ours = create_detector("fasterrcnn_resnet50_fpn", 90)
        theirs = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                      num_classes=91)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    # Trainable BatchNorm (from scratch) adds its 53,120 affine parameters to the documented 41,755,286.
    assert count_parameters(ours) == count_parameters(theirs) == 41_755_286 + 53_120
    with torch.device("meta"):
        frozen = create_detector("fasterrcnn_resnet50_fpn", 90, frozen_bn=True)
    assert count_parameters(frozen) == 41_755_286  # torchvision's figure for its (frozen-BN) weights
    with torch.device("meta"):  # the mask head, 256 wide by default, is torchvision's too
        ours = create_detector("maskrcnn_resnet50_fpn", 90)
        theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                    num_classes=91)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert count_parameters(ours) == count_parameters(theirs)
    with torch.device("meta"):
        emca = create_detector("maskrcnn_resnet50_emca_eca_fpn", 80)
    extra = set(emca.state_dict()) - set(create_detector("maskrcnn_resnet50_fpn", 80, min_size=64).state_dict())
    assert extra and all(".attn." in key for key in extra)


def test_backbone_from_a_classification_checkpoint_freezes_bn_everywhere_and_early_stages():
    classifier = randomise(create_model("resnet18_emca_srm", num_classes=5, width=0.125)).eval()
    model = create_detector("fasterrcnn_resnet18_emca_srm_fpn", 2, backbone_weights=classifier.state_dict(),
                            min_size=64, max_size=64, fpn_channels=16, width=0.125)
    body = model.backbone.body
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in body.modules())
    srm_bn = body.layer2[0].attn.bn
    assert isinstance(srm_bn, FrozenBatchNorm1d) and isinstance(body.bn1, FrozenBatchNorm2d)
    descriptor = torch.randn(4, len(srm_bn.weight))
    torch.testing.assert_close(srm_bn(descriptor), classifier.layer2[0].attn.bn(descriptor))
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(body.forward_stages(x)[-1], classifier.forward_features(x))
    trainable = {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # torchvision's default: 3 stages
    assert body.layer2[0].attn.cfc.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    scratch = create_detector("retinanet_resnet18_srm_fpn", 2, **TINY)
    assert isinstance(scratch.backbone.body.layer1[0].attn.bn, torch.nn.BatchNorm1d)
    assert all(p.requires_grad for p in scratch.backbone.body.parameters())


def test_bad_names_and_options_are_one_line():
    with pytest.raises(UnknownModelError, match=r"unknown detector 'fasterrcnn_resnet19_fpn'; names are "):
        create_detector("fasterrcnn_resnet19_fpn", 2)
    with pytest.raises(ValueError, match=r"min_size=900 and max_size=800"):
        create_detector("retinanet_resnet18_fpn", 2, min_size=900, max_size=800)
    with pytest.raises(ValueError, match=r"trainable_layers must be in 0..5, got 6"):
        create_detector("retinanet_resnet18_fpn", 2, trainable_layers=6)


# ---------------------------------------------------------------- data ---------------

def test_multishapes_is_deterministic_with_exact_boxes_and_masks():
    a, b = multishapes("val", 6, 64, seed=3), multishapes("val", 6, 64, seed=3)
    assert a.coco.dataset == b.coco.dataset and a.classes == ["circle", "square", "triangle", "star"]
    image, target = a[2]
    assert torch.equal(image, b[2][0]) and image.shape == (3, 64, 64) and 0 <= image.min() < image.max() <= 1
    assert not torch.equal(image, multishapes("val", 6, 64, seed=4)[2][0])
    counts = [len(a.coco.imgToAnns[i]) for i in a.ids]
    assert all(1 <= n <= 4 for n in counts) and max(counts) > 1
    masks = target["masks"].bool()
    assert masks.shape[0] == len(target["boxes"]) == len(target["labels"])
    assert set(target["labels"].tolist()) <= {1, 2, 3, 4}
    assert not (masks.sum(0) > 1).any()  # objects never overlap
    for mask, box in zip(masks, target["boxes"]):
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        assert box.tolist() == [cols[0].item(), rows[0].item(), cols[-1].item() + 1, rows[-1].item() + 1]
    _, objects = render_scene(3, "val", 2, 64, draw=False)
    assert [label + 1 for label, _ in objects] == target["labels"].tolist()


def test_coco_round_trip_scores_ground_truth_at_ap_one(tmp_path):
    dataset = multishapes("val", 8, 64, seed=1)
    write_coco(dataset, tmp_path, "val")
    read = coco_dataset(tmp_path, "val")
    assert read.coco.dataset == json.loads(json.dumps(dataset.coco.dataset))
    for i in (0, 5):
        (x1, t1), (x2, t2) = dataset[i], read[i]
        assert torch.equal(x1, x2) and all(torch.equal(t1[k], t2[k]) for k in t1)
    results = []
    for index in range(len(read)):
        _, target = read[index]
        output = {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(len(target["labels"])),
                  "masks": target["masks"][:, None].float()}
        results += to_coco_results(output, int(target["image_id"]), read.category_ids)
    metrics = coco_metrics(read.coco, results, ("bbox", "segm"))
    assert metrics["bbox_AP"] == metrics["bbox_AP50"] == metrics["bbox_AP75"] == metrics["segm_AP"] == 1.0
    assert metrics["bbox_APL"] is None  # no object of more than 96^2 px in 64 px images


def _hand_made(anns, images=({"id": 1, "width": 100, "height": 100},)):
    categories = [{"id": 7, "name": "thing"}, {"id": 9, "name": "other"}]
    return coco_index({"images": list(images), "annotations": anns, "categories": categories}, "hand-made")


def test_cocoeval_on_a_hand_made_case_with_known_ap():
    gt = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
          {"id": 2, "image_id": 1, "category_id": 7, "bbox": [55, 55, 40, 40], "area": 1600, "iscrowd": 0}]
    coco = _hand_made(gt)
    detections = [{"image_id": 1, "category_id": 7, "bbox": [10, 10, 40, 40], "score": 0.9},   # hit
                  {"image_id": 1, "category_id": 7, "bbox": [0, 60, 20, 20], "score": 0.8},    # false positive
                  {"image_id": 1, "category_id": 7, "bbox": [55, 55, 40, 40], "score": 0.7}]   # hit
    # Precision 1 up to recall 0.5 (51 of COCO's 101 recall points), then 2/3 up to recall 1 (50 points).
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    metrics = coco_metrics(coco, detections)
    assert metrics["bbox_AP"] == pytest.approx(expected) and metrics["bbox_AP50"] == pytest.approx(expected)
    # The false positive is 20 x 20 (small): in the medium range COCOeval ignores it, and no
    # ground truth is small, so APS is undefined.
    assert metrics["bbox_APM"] == 1.0 and metrics["bbox_APS"] is None
    assert coco_metrics(coco, [])["bbox_AP"] == 0.0


def test_crowd_regions_empty_images_polygons_and_rle():
    polygon = [[10, 10, 50, 10, 50, 30, 10, 30]]  # a 40 x 20 rectangle
    crowd = mask_utils.encode(np.asfortranarray(np.pad(np.ones((20, 20), np.uint8), ((60, 20), (60, 20)))))
    anns = [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [10, 10, 40, 20], "area": 800, "iscrowd": 0,
             "segmentation": polygon},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [60, 60, 20, 20], "area": 400, "iscrowd": 1,
             "segmentation": {"size": crowd["size"], "counts": crowd["counts"].decode()}}]
    coco = _hand_made(anns, [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}])
    from PIL import Image

    dataset = CocoDetection(coco, lambda info: Image.new("RGB", (100, 100)))
    _, target = dataset[0]
    assert target["boxes"].tolist() == [[10, 10, 50, 30]] and target["labels"].tolist() == [2]  # crowd left out
    assert target["masks"].shape == (1, 100, 100) and target["masks"][0, 10:30, 10:50].all()
    _, empty = dataset[1]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 100, 100)
    hit = {"image_id": 1, "category_id": 9, "bbox": [10, 10, 40, 20], "score": 0.5}
    on_crowd = {"image_id": 1, "category_id": 7, "bbox": [60, 60, 20, 20], "score": 0.9}
    on_empty = {"image_id": 2, "category_id": 9, "bbox": [0, 0, 30, 30], "score": 0.99}
    assert coco_metrics(coco, [hit, on_crowd])["bbox_AP"] == pytest.approx(1.0)  # detections on crowds: ignored
    assert coco_metrics(coco, [hit, on_empty])["bbox_AP"] < 0.99  # on an empty image: false positives


def test_missing_and_malformed_annotation_files_are_one_line(tmp_path):
    with pytest.raises(DatasetError, match=r"instances_val.json: no such annotation file$"):
        read_coco(tmp_path / "instances_val.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"bad.json: not valid JSON \(Expecting value at line 1, column 13\)$"):
        read_coco(bad)
    bad.write_text('{"images": []}')
    with pytest.raises(DatasetError, match=r"not a COCO instances file \(needs 'images' and 'categories' lists\)$"):
        read_coco(bad)
    bad.write_text(json.dumps({"images": [{"id": 1, "width": 9, "height": 9}], "categories": [{"id": 1, "name": "a"}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 1}]}))
    with pytest.raises(DatasetError, match=r"not a usable COCO instances file \(missing field 'bbox'\)$"):
        read_coco(bad)
    with pytest.raises(DatasetError, match=r"no COCO annotations for split 'train'"):
        coco_dataset(tmp_path, "train")


# ---------------------------------------------------------------- checkpoints --------

def test_detector_checkpoint_round_trip(tmp_path, cli):
    torch.manual_seed(0)
    model = create_detector("maskrcnn_resnet18_emca_srm_fpn", 2, frozen_bn=True, mask_channels=24, **TINY).eval()
    randomise(model.backbone.body)  # statistics and EMCA weights away from their initial values
    path = save_checkpoint(tmp_path / "det.safetensors", model, class_names=["circle", "star"],
                           metrics={"bbox_AP": 0.5})
    meta = read_metadata(path)
    assert meta["task"] == "detection" and meta["num_classes"] == 2
    assert meta["detector"] == {"min_size": 64, "max_size": 64, "trainable_layers": 5, "frozen_bn": True,
                                "fpn_channels": 16, "representation_size": 32, "box_batch_size_per_image": 512,
                                "proposals": 1000, "mask_channels": 24}
    loaded, meta = load_checkpoint(path, task="detection")
    assert [layer[0].out_channels for layer in loaded.roi_heads.mask_head] == [24] * 4
    assert loaded.roi_heads.mask_predictor.mask_fcn_logits.in_channels == 24
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    images = [torch.rand(3, 64, 64)]
    model.roi_heads.score_thresh = loaded.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        a, b = model(images)[0], loaded(images)[0]
    assert len(a["scores"]) > 0 and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match=r"a detection checkpoint \(maskrcnn_resnet18_emca_srm_fpn\); "
                                              r"this takes classification checkpoints$"):
        load_checkpoint(path)
    result = cli(checkpoint_main, path)
    assert result.returncode == 0 and "maskrcnn_resnet18_emca_srm_fpn" in result.stdout


def test_detector_metadata_is_checked(tmp_path):
    from emca_vis.checkpoint.metadata import check_metadata

    with pytest.raises(ValueError, match=r"model: unknown detector 'resnet18'"):
        check_metadata({"task": "detection", "model": "resnet18", "num_classes": 2})
    with pytest.raises(ValueError, match=r"detector.max_size: Input should be less than or equal to 4096"):
        check_metadata({"task": "detection", "model": "retinanet_resnet18_fpn", "num_classes": 2,
                        "detector": {"max_size": 5000}})
    with pytest.raises(ValueError, match=r"detector options in a classification checkpoint"):
        check_metadata({"model": "resnet18", "num_classes": 2, "detector": {}})
    assert check_metadata({"model": "resnet18", "num_classes": 2})["task"] == "classification"


def test_evaluate_detector_on_multishapes_gives_every_metric():
    dataset = multishapes("val", 3, 64)
    model = create_detector("maskrcnn_resnet18_fpn", len(dataset.classes), **TINY)
    metrics = evaluate_detector(model, dataset, progress=False)
    assert set(metrics) == {f"{t}_{s}" for t in ("bbox", "segm") for s in ("AP", "AP50", "AP75", "APS", "APM", "APL")}
    assert all(v is None or 0 <= v <= 1 for v in metrics.values())


# ---------------------------------------------------------------- profile ------------

def test_profile_takes_detectors_and_compares_with_the_plain_detector():
    result = profile_models(["retinanet_resnet18_emca_eca_fpn"], batch_sizes=(1,), repeats=1, warmup=0,
                            progress=False, detection_size=(64, 96))
    rows = {row["model"]: row for row in result["models"]}
    assert list(rows) == ["retinanet_resnet18_emca_eca_fpn", "retinanet_resnet18_fpn"]
    assert rows["retinanet_resnet18_fpn"]["relative"] == {"1": 1.0}
    assert 0 < rows["retinanet_resnet18_fpn"]["gflops"] < rows["retinanet_resnet18_emca_eca_fpn"]["gflops"]
    assert result["settings"]["detection_size"] == [64, 96]
    with pytest.raises(ValueError, match=r"--train times classifiers only"):
        profile_models(["retinanet_resnet18_fpn"], training=True)


def test_profiled_rcnn_work_does_not_depend_on_the_weights():
    """1,000 proposals reach the box head and 100 detections the mask head, whatever NMS would keep."""
    rois = []
    gflops = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_for_profile("maskrcnn_resnet18_fpn", detection_size=(64, 96))
        model.roi_heads.box_head.register_forward_hook(lambda m, i, o: rois.append(("box", i[0].shape[0])))
        model.roi_heads.mask_head.register_forward_hook(lambda m, i, o: rois.append(("mask", i[0].shape[0])))
        gflops.append(count_gflops(model, (64, 96)))
    assert rois == [("box", 1000), ("mask", 100)] * 2
    assert gflops[0] == gflops[1]


def test_faster_rcnn_with_emca_backbone_learns_on_multishapes():
    torch.manual_seed(0)
    dataset = multishapes("train", 2, 64)
    images, targets = zip(*(dataset[i] for i in range(2)))
    targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    model = create_detector("fasterrcnn_resnet18_emca_eca_fpn", len(dataset.classes), box_batch_size_per_image=64,
                            proposals=100, **TINY).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    losses = []
    for _ in range(12):
        loss = sum(model(list(images), targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
    assert model.backbone.body.layer2[0].attn.scale_weights.grad is not None  # EMCA's weights are trained
