"""Checkpoints of FcaNet, BAM, EPSANet and SA-Net's official code: their computations where
emca-vis had to follow them (FcaNet's bias-free FC layers and its DCT filters), and their key names
end to end: a state dict in the repository's names, saved as its training script saves it, loads
through the checkpoint spec with the logits of the emca-vis model it came from.

The official layouts are written here from emca-vis models (the inverse of each converter); no
official code is involved.
"""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from emca_vis.checkpoint import load_checkpoint
from emca_vis.checkpoint.formats import FORMATS, detect_format
from emca_vis.checkpoint.official import bam, epsanet, fcanet, sanet
from emca_vis.models import create_model
from emca_vis.models.baselines import FCA, dct_filters

from .test_models import randomise
from .test_official_checkpoints import _OPTIMISER, _max_diff, _one_line_error, _prefixed

ROOT = Path(__file__).resolve().parents[1]


# --- computations ---------------------------------------------------------------------------------

def test_fca_without_bias_is_the_released_layer():
    fca = randomise(FCA(32, dct_size=7, bias=False), seed=3).double()
    assert fca.fc1.bias is None and fca.fc2.bias is None
    assert sorted(name for name, _ in fca.named_parameters()) == ["fc1.weight", "fc2.weight"]
    x = torch.randn(2, 32, 7, 7, dtype=torch.float64)
    pooled = (x * fca.dct).sum((2, 3))  # MultiSpectralDCTLayer: x * weight, summed over positions
    z = torch.sigmoid(F.relu(pooled @ fca.fc1.weight.T) @ fca.fc2.weight.T)
    with torch.no_grad():
        torch.testing.assert_close(fca(x.clone()), x * z[:, :, None, None], rtol=0, atol=1e-12)
        y = torch.randn(2, 32, 14, 14, dtype=torch.float64)  # other map sizes: average-pooled to 7x7 first
        torch.testing.assert_close(fca.pool(y), (F.adaptive_avg_pool2d(y, 7) * fca.dct).sum((2, 3)), rtol=0,
                                   atol=1e-12)


def test_fca_bias_option():
    def count(**options):
        with torch.device("meta"):
            return sum(p.numel() for p in create_model("resnet50_fca", **options).parameters())

    biases = sum(c + c // 16 for c, n in ((256, 3), (512, 4), (1024, 6), (2048, 3)) for _ in range(n))
    assert count() - count(fca_bias=False) == biases == 16_048
    model = create_model("resnet18_fca", num_classes=3, width=0.25, fca_bias=False)
    assert model.config["fca_bias"] is False and model.layer3[1].attn.fc2.bias is None
    assert "fca_bias" not in create_model("resnet18_se", num_classes=3, width=0.25).config
    with pytest.raises(ValueError, match="fca_bias applies to FCA models, not resnet18_se"):
        create_model("resnet18_se", fca_bias=False)
    with pytest.raises(ValueError, match="fca_bias='no' is not valid; give True or False"):
        create_model("resnet18_fca", fca_bias="no")


def test_dct_filters_are_the_released_float64_products_rounded_once():
    filters = dct_filters(32, 14)  # 16 frequencies, 2 channels each; a 14x14 grid doubles them

    def basis(frequency, size=14):
        t = torch.arange(size, dtype=torch.float64)
        return torch.cos(math.pi * frequency * (t + 0.5) / size) / math.sqrt(size) * (1 if frequency == 0 else
                                                                                      math.sqrt(2))

    # The second top-16 frequency is (0, 1) on the 7x7 grid: (0, 2) on 14x14, channels 2 and 3.
    expected = (basis(0)[:, None] * basis(2)[None, :]).float()
    assert torch.equal(filters[2], expected) and torch.equal(filters[3], expected)
    assert torch.equal(filters[30], (basis(4)[:, None] * basis(4)[None, :]).float())  # (2, 2) -> (4, 4)
    torch.testing.assert_close(filters[0], torch.full((14, 14), 1 / 14), rtol=0, atol=1e-7)  # the mean, x 14


# --- official layouts, written from emca-vis models ----------------------------------------------

def _fcanet(sd):
    out = {}
    for key, value in sd.items():
        key = re.sub(r"^(layer\d+\.\d+)\.attn\.fc1\.", r"\1.att.fc.0.", key)
        key = re.sub(r"^(layer\d+\.\d+)\.attn\.fc2\.", r"\1.att.fc.2.", key)
        out[re.sub(r"^(layer\d+\.\d+)\.attn\.dct$", r"\1.att.dct_layer.weight", key)] = value
    return out


def _bam(sd):
    return {re.sub(r"^layer([123])\.\d+\.attn\.", r"bam\1.", k): v for k, v in sd.items()}


def _epsanet(sd):
    return dict(sd)  # PSAModule's names are emca-vis's: conv2.conv_1..4, conv2.se.fc1/fc2


def _sanet(sd):
    return {re.sub(r"^(layer\d+\.\d+)\.attn\.", r"\1.sa.", k): v for k, v in sd.items()}


def _training_checkpoint(sd, arch):
    """What these repositories' training scripts pass to torch.save (model in DataParallel)."""
    return {"epoch": 90, "arch": arch, "state_dict": _prefixed(sd), "best_prec1": 77.1, "optimizer": _OPTIMISER}


# (format, emca-vis model, its options, official key names, a name the repository uses, input px)
CASES = {
    "fcanet": ("fcanet", "resnet18_fca", {"fca_bias": False}, _fcanet, "fcanet18", 64),
    "bam": ("bam", "resnet18_bam", {}, _bam, None, 64),
    "bam-cifar": ("bam", "resnet18_bam", {"stem": "cifar"}, _bam, None, 32),
    "epsanet": ("epsanet", "resnet50_epsa", {}, _epsanet, "epsanet50", 64),
    "sanet": ("sanet", "resnet50_sa", {}, _sanet, "sa_resnet50", 64),
}


def _saved(tmp_path, case):
    fmt, name, options, to_official, their_name, _ = CASES[case]
    ours = randomise(create_model(name, num_classes=10, **options), seed=11).eval()
    path = tmp_path / "checkpoint.pth.tar"
    official = {k: v.clone() for k, v in to_official(ours.state_dict()).items()}
    torch.save(_training_checkpoint(official, their_name or "resnet"), path)
    return ours, path, official


@pytest.mark.parametrize("case", CASES)
def test_official_checkpoint_loads_with_equal_logits(tmp_path, case):
    fmt, name, options, _, their_name, size = CASES[case]
    ours, path, official = _saved(tmp_path, case)
    assert not [k for k in official if ".attn." in k]  # nothing left in emca-vis's names
    specs = [str(path), f":{fmt}={path}", f"{name}={path}"] + ([f"{their_name}={path}"] if their_name else [])
    for spec in specs:
        loaded, meta = load_checkpoint(spec)
        assert (meta["model"], meta["source"]["format"], meta["num_classes"]) == (name, fmt, 10), spec
        assert all(meta["model_kwargs"][k] == v for k, v in options.items()), spec
    assert _max_diff(ours, loaded, size, torch.float64) <= 1e-5
    assert _max_diff(ours, loaded, size, torch.float32) <= 1e-4


def test_import_command_writes_the_official_checkpoint(tmp_path):
    ours, path, _ = _saved(tmp_path, "fcanet")
    out = tmp_path / "imported.safetensors"
    result = subprocess.run([sys.executable, "-m", "emca_vis.checkpoint", "import", str(path), "--model", "fcanet18",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}: resnet18_fca ") and "(fcanet)" in result.stdout
    loaded, meta = load_checkpoint(out)
    assert meta["model_kwargs"]["fca_bias"] is False and meta["source"]["format"] == "fcanet"
    assert _max_diff(ours, loaded, 64, torch.float64) <= 1e-5


def test_converters_key_for_key():
    with torch.device("meta"):
        fca = create_model("resnet50_fca", num_classes=5, fca_bias=False).state_dict()
        bam18 = create_model("resnet18_bam", num_classes=5).state_dict()
        sa = create_model("resnet50_sa", num_classes=5).state_dict()
    official = _fcanet(fca)
    assert official["layer4.2.att.dct_layer.weight"].shape == (2048, 7, 7)
    assert official["layer1.0.att.fc.0.weight"].shape == (16, 256) and "layer1.0.att.fc.0.bias" not in official
    converted = fcanet(official)
    assert (converted.model, converted.options) == ("resnet50_fca", {"fca_bias": False})
    assert sorted(converted.state_dict) == sorted(fca)
    # A layer trained with biases (not the released code) keeps SE's biased FC layers.
    assert fcanet({**official, "layer1.0.att.fc.0.bias": torch.zeros(16)}).options == {}
    official = _bam(bam18)
    assert "bam3.spatial_att.gate_s.gate_s_conv_di_1.weight" in official  # bam1..3 after layer1..3
    assert "bam1.channel_att.gate_c.gate_c_bn_1.running_var" in official
    converted = bam(official)
    assert converted.model == "resnet18_bam" and sorted(converted.state_dict) == sorted(bam18)
    assert converted.state_dict["layer2.1.attn.channel_att.gate_c.gate_c_fc_final.bias"] is official[
        "bam2.channel_att.gate_c.gate_c_fc_final.bias"]
    converted = sanet(_sanet(sa))
    assert converted.model == "resnet50_sa" and sorted(converted.state_dict) == sorted(sa)
    assert _sanet(sa)["layer4.2.sa.cweight"].shape == (1, 16, 1, 1)  # 2048 / (2 * 64 groups)


def test_detectors_accept_only_their_own_layout():
    for fmt, name, to_official in (("fcanet", "resnet18_fca", _fcanet), ("bam", "resnet18_bam", _bam),
                                   ("epsanet", "resnet50_epsa", _epsanet), ("sanet", "resnet50_sa", _sanet)):
        with torch.device("meta"):
            sd = to_official(create_model(name, num_classes=3).state_dict())
        accepted = [f.name for f in FORMATS.values() if f.detect is not None and f.detect(sd)]
        # EPSANet's SE modules are named "se", as timm's: its entry is detected first.
        assert accepted == [fmt, "timm", "torchvision"] if fmt == "epsanet" else [fmt, "torchvision"], fmt
        assert detect_format(sd).name == fmt


def test_other_layouts_of_these_repositories_are_refused_in_one_line(tmp_path):
    with torch.device("meta"):
        epsa = create_model("resnet50_epsa", num_classes=3).state_dict()
        sa = create_model("resnet50_sa", num_classes=3).state_dict()
        bam18 = create_model("resnet18_bam", num_classes=3).state_dict()
    large = {k: torch.zeros(v.shape) for k, v in epsa.items()}
    large["layer1.0.conv2.conv_1.weight"] = torch.zeros(16, 2, 3, 3)  # EPSANet large: 32 groups
    torch.save({"state_dict": large}, tmp_path / "large.pth")
    _one_line_error(tmp_path / "large.pth", r"EPSANet state dict with 32 groups in layer1\.0\.conv2\.conv_1\.weight")
    groups = {k: torch.zeros(v.shape) for k, v in _sanet(sa).items()}
    groups["layer2.0.sa.cweight"] = torch.zeros(1, 8, 1, 1)
    torch.save(groups, tmp_path / "groups.pth")
    _one_line_error(tmp_path / "groups.pth", r"SA-Net state dict with 32 groups in layer2\.0\.attn\.cweight")
    bam_file = tmp_path / "bam.pth"
    torch.save({k: torch.zeros(v.shape) for k, v in _bam(bam18).items()}, bam_file)
    _one_line_error(f":cbam={bam_file}", r"attention-module state dict holds BAM modules \(bam1\.\.bam3\), not CBAM")
    _one_line_error(f"resnet18_cbam={bam_file}", r"bam weights hold resnet18_bam .*, not resnet18_cbam$")
    _one_line_error(f"fcanet20:fcanet={bam_file}", "FcaNet's fcanet20: emca-vis builds ResNet depths")
    _one_line_error(f"fca20:fcanet={bam_file}", "FcaNet's fca20: emca-vis builds ResNet depths")
