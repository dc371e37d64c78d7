import json
import subprocess
import sys

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from emca_vis.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from emca_vis.checkpoint.__main__ import main
from emca_vis.models import create_model

from .test_models import randomise


@pytest.fixture
def tiny(tmp_path):
    model = randomise(create_model("resnet18_emca_srm", num_classes=3, width=0.125, stem="cifar", gate="one_plus"))
    path = save_checkpoint(tmp_path / "tiny.safetensors", model, class_names=["cat", "dog", "owl"], input_size=64,
                           mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), dataset="shapes",
                           metrics={"val_top1": 93.5}, train_args={"epochs": 3})
    return model, path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "emca_vis.checkpoint", *map(str, args)],
                          capture_output=True, text=True)


def test_round_trip_is_bitwise_with_all_metadata(tiny):
    model, path = tiny
    loaded, meta = load_checkpoint(path)
    original = model.state_dict()
    assert list(loaded.state_dict()) == list(original)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert not loaded.training
    assert meta["model"] == "resnet18_emca_srm"
    assert meta["model_kwargs"] == {"placement": "first", "emca_stages": 1, "emca_blocks": "all", "stem": "cifar",
                                    "width": 0.125, "gate": "one_plus", "srm_std": "biased"}
    assert meta["class_names"] == ["cat", "dog", "owl"] and meta["num_classes"] == 3
    assert (meta["input_size"], meta["mean"], meta["std"]) == (64, [0.5] * 3, [0.25] * 3)
    assert (meta["dataset"], meta["metrics"], meta["train_args"]) == ("shapes", {"val_top1": 93.5}, {"epochs": 3})
    assert meta["version"] and meta["created"].endswith("+00:00")
    assert read_metadata(path) == meta
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_write_is_atomic(tiny, tmp_path, monkeypatch):
    model, path = tiny
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("emca_vis.checkpoint.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, create_model("resnet18", num_classes=3, width=0.125))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]  # no temp file left


def test_bad_files_give_one_clear_line(tiny, tmp_path, cli):
    model, path = tiny
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    mismatch = tmp_path / "mismatch.safetensors"  # metadata says resnet18_emca_srm, weights are a plain resnet18
    save_file(create_model("resnet18", num_classes=3, width=0.125, stem="cifar").state_dict(), str(mismatch),
              metadata={"emca_vis": json.dumps(read_metadata(path))})
    not_image = tmp_path / "notes.safetensors"
    not_image.write_text("hello")
    cases = {
        tmp_path / "missing.safetensors": "no such checkpoint file",
        truncated: "not a readable safetensors file",
        mismatch: "weights do not match the metadata's architecture: 28 missing tensors",
        not_image: "not a readable safetensors file",
        tmp_path: "is a directory",
    }
    for bad, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as error:
            load_checkpoint(bad)
        assert str(bad) in str(error.value)
        result = cli(main, bad)
        assert result.returncode == 2
        assert result.stderr.strip() == f"error: {error.value}"
        assert "Traceback" not in result.stderr
    with pytest.raises(CheckpointError, match="has 3 classes, expected 10"):
        load_checkpoint(path, num_classes=10)


def test_cli_reports_good_and_bad_files_in_one_run(tiny, tmp_path):
    _, path = tiny  # a real process: the exit status and the one line a shell sees
    result = run_cli(tmp_path / "missing.safetensors", path)
    assert result.returncode == 2
    assert "resnet18_emca_srm" in result.stdout and "val_top1=93.5" in result.stdout
    assert result.stderr.count("\n") == 1


def test_foreign_torchvision_weights_load_weights_only(tmp_path):
    reference = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match="weights do not match the metadata's architecture"):
        load_checkpoint(path, model="resnet34")
    model, meta = load_checkpoint(path)  # the key names say resnet18
    assert meta["num_classes"] == 1000 and meta["model"] == "resnet18"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


class CreatesFile:
    """A pickle payload: unpickling it would create a file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_crafted_pickle_is_refused_and_never_runs(tmp_path, cli):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": CreatesFile(target)}, path)
    assert not target.exists()
    with pytest.raises(CheckpointError, match="refused: it pickles objects other than tensors"):
        load_checkpoint(path, model="resnet18")
    result = cli(main, path, "--model", "resnet18")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not target.exists()
