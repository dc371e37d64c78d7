"""Detectors through the training module: a run, its checkpoints, --eval-only and --resume."""

import json
import subprocess
import sys

import torch

from emca_vis.checkpoint import load_checkpoint, read_state_dict
from emca_vis.train import main

TINY_RUN = ["--task", "detection", "--model", "fasterrcnn_resnet18_emca_eca_fpn", "--image-size", "64",
            "--width", "0.125", "--fpn-channels", "16", "--representation-size", "32", "--proposals", "50",
            "--box-batch-size-per-image", "32", "--train-size", "8", "--val-size", "4", "--batch-size", "4",
            "--workers", "0", "--schedule", "step", "--milestones", "1", "--warmup-epochs", "0.5"]


def test_detection_run_writes_coco_metrics_checkpoints_and_resumes_exactly(tmp_path, cli):
    def train(*args):
        return cli(main, *TINY_RUN, *args)

    whole = train("--epochs", "2", "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert {"train_loss", "val_bbox_AP", "val_bbox_AP50", "val_bbox_AP75", "val_bbox_APS", "best_val_bbox_AP"} \
        <= set(rows[0])
    assert rows[1]["best_val_bbox_AP"] == max(row["val_bbox_AP"] for row in rows)
    assert "box AP" in whole.stdout and "lr 0.005" in whole.stdout  # torchvision's 0.02 per 16 images
    model, meta = load_checkpoint(tmp_path / "whole" / "last.safetensors", task="detection")
    assert meta["model"] == "fasterrcnn_resnet18_emca_eca_fpn" and meta["class_names"] == [
        "circle", "square", "triangle", "star"]
    assert meta["detector"]["min_size"] == 64 and meta["metrics"]["epoch"] == 2

    # The same run stopped after one epoch and resumed: the same weights and metrics.
    first = train("--epochs", "1", "--out", tmp_path / "split")
    assert first.returncode == 0, first.stderr
    resumed = train("--epochs", "2", "--resume", "--out", tmp_path / "split")
    assert resumed.returncode == 0, resumed.stderr
    a = read_state_dict(tmp_path / "whole" / "last.safetensors")
    b = read_state_dict(tmp_path / "split" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "split" / "metrics.csv").read_text().splitlines()[0] == \
        (tmp_path / "whole" / "metrics.csv").read_text().splitlines()[0]

    evaluated = cli(main, "--eval-only", tmp_path / "whole" / "last.safetensors", "--workers", "0")
    assert evaluated.returncode == 0, evaluated.stderr
    printed = json.loads(evaluated.stdout)
    assert printed["data"] == "multishapes" and printed["images"] == 4
    assert all(printed[k] == rows[1][k] for k in rows[1] if k.startswith("val_bbox"))


def test_detection_options_are_checked_before_anything_runs(tmp_path, cli):
    bad = cli(main, *TINY_RUN, "--trainable-layers", "7", "--out", tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("--trainable-layers: must be at most 5 (got 7)")
    wrong_task = cli(main, "--task", "detection", "--model", "resnet18", "--out", tmp_path)
    assert wrong_task.returncode == 2
    assert wrong_task.stderr.strip().startswith("error: unknown detector 'resnet18'; names are ")
    missing = subprocess.run([sys.executable, "-m", "emca_vis.train", "--task", "detection"],  # as a process
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: --model: required (unless --eval-only)"
