import pytest

from emca_vis.checkpoint import save_checkpoint
from emca_vis.demo import DEMO_DETECTORS, DEMO_MODELS, demo_checkpoints, demo_table
from emca_vis.errors import UserError
from emca_vis.models import create_model


def test_committed_demo_checkpoints_reach_ninety_percent(monkeypatch):
    monkeypatch.delenv("EMCA_VIS_DEMO_DIR", raising=False)
    classifiers, detectors = demo_table().split("\n\n")
    rows = classifiers.splitlines()[2:]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == list(DEMO_MODELS)
    for row in rows:
        assert float(row.split(" | ")[2]) >= 90.0, row
    # the demo detectors: box AP over 0.6 and AP50 over 0.85 on the first 100 val scenes
    rows = detectors.splitlines()[2:]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == list(DEMO_DETECTORS)
    for row in rows:
        assert float(row.split(" | ")[2]) > 0.6 and float(row.split(" | ")[3]) > 0.85, row


def test_demo_dir_override_and_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("EMCA_VIS_DEMO_DIR", str(tmp_path))
    with pytest.raises(UserError, match=f"demo checkpoints missing in {tmp_path}: resnet18.safetensors"):
        demo_checkpoints()
    for name in DEMO_MODELS:
        model = create_model(name, num_classes=12, width=0.125, stem="cifar")
        save_checkpoint(tmp_path / f"{name}.safetensors", model, metrics={"val_top1": 91.0, "val_top5": 99.5,
                                                                          "epoch": 6})
    assert demo_checkpoints()[0] == tmp_path / "resnet18.safetensors"
    table = demo_table().splitlines()
    assert table[2] == "| resnet18 | 176,532 | 91.00 | 99.50 | 6 |"
