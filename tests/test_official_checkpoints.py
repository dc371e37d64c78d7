"""Checkpoints of the attention papers' official code, end to end: a state dict in the official
repository's key names, saved as its training script saves it, loads through the checkpoint spec
(detected or named format, their model name or emca-vis's) and through the import command, with
the logits of the emca-vis model it came from.

The official layouts are written here from emca-vis models (the inverse of each converter); no
official code is involved.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emca_vis.checkpoint import CheckpointError, load_checkpoint
from emca_vis.checkpoint.formats import FORMATS, detect_format
from emca_vis.models import create_model

from .test_models import randomise

ROOT = Path(__file__).resolve().parents[1]


def _eca_net(sd):
    return {re.sub(r"^(layer\d+\.\d+)\.attn\.conv\.", r"\1.eca.conv.", k): v for k, v in sd.items()}


def _cbam(sd):
    names = {"fc1.": "cbam.ChannelGate.mlp.1.", "fc2.": "cbam.ChannelGate.mlp.3.",
             "spatial_bn.": "cbam.SpatialGate.spatial.bn.", "spatial.": "cbam.SpatialGate.spatial.conv."}
    out = {}
    for key, value in sd.items():
        if m := re.fullmatch(r"(layer\d+\.\d+)\.attn\.(fc1\.|fc2\.|spatial_bn\.|spatial\.)(.+)", key):
            key = f"{m[1]}.{names[m[2]]}{m[3]}"
        out[key] = value
    return out


def _srm(sd):
    out = {}
    for key, value in sd.items():
        key = re.sub(r"^(layer\d+\.\d+)\.attn\.fc1\.", r"\1.rclb.fc.0.", key)
        key = re.sub(r"^(layer\d+\.\d+)\.attn\.fc2\.", r"\1.rclb.fc.2.", key)
        out[re.sub(r"^(layer\d+\.\d+)\.attn\.", r"\1.rclb.", key)] = value
    return out


def _emca_authors(sd):
    """ECAResNet's names: pre / stageS.B.{residual,shortcut} / linear; every block owns all four
    attention weights (those of first blocks are never read), fusion weights [1, 1, R], current last."""
    bottleneck = "layer1.0.conv3.weight" in sd
    residual = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
    g = torch.Generator().manual_seed(3)
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] in ("conv1", "bn1"):
            out[".".join(["pre", "0" if parts[0] == "conv1" else "1", *parts[1:]])] = value
        elif parts[0] == "fc":
            out[".".join(["linear", *parts[1:]])] = value
        elif parts[2] == "downsample":
            out[".".join([f"stage{parts[0][5:]}", parts[1], "shortcut", *parts[3:]])] = value
        elif parts[2] == "attn":
            block = f"stage{parts[0][5:]}.{parts[1]}"
            what = parts[3]
            if what == "conv":
                out[f"{block}.ECA_excitation_local.0.weight"] = value
            elif what == "global_conv":
                out[f"{block}.ECA_excitation_global_stage.0.weight"] = value
            elif what == "scale_weights":
                out[f"{block}.stage_in_fusion.0.weight"] = value.roll(-1).reshape(1, 1, -1)
            elif what == "fusion_weights":
                out[f"{block}.out_fusion.0.weight"] = value.reshape(1, 1, 2)
        else:
            out[".".join([f"stage{parts[0][5:]}", parts[1], "residual", str(residual[parts[2]]), *parts[3:]])] = value
    for stage in range(1, 5):  # the first blocks' unused global kernel and fusions
        k = out[f"stage{stage}.0.ECA_excitation_local.0.weight"].shape[-1]
        out |= {f"stage{stage}.0.ECA_excitation_global_stage.0.weight": torch.randn(1, 1, k, generator=g),
                f"stage{stage}.0.stage_in_fusion.0.weight": torch.randn(1, 1, stage + 1, generator=g),
                f"stage{stage}.0.out_fusion.0.weight": torch.randn(1, 1, 2, generator=g)}
    assert bottleneck == ("stage1.0.residual.6.weight" in out)
    return out


def _prefixed(sd):
    return {f"module.{k}": v for k, v in sd.items()}


_OPTIMISER = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1, 2]}]}
# What each repository's training script passes to torch.save (its model wrapped in DataParallel).
SAVED_AS = {
    "eca-net": lambda sd: {"epoch": 90, "arch": "eca_resnet18", "state_dict": _prefixed(sd), "best_prec1": 70.9,
                           "optimizer": _OPTIMISER},
    "cbam": lambda sd: {"epoch": 90, "arch": "resnet", "state_dict": _prefixed(sd), "best_prec1": 70.7,
                        "optimizer": _OPTIMISER},
    "srm": lambda sd: {"epoch": 90, "state_dict": _prefixed(sd), "acc": 71.0, "best_acc": 71.2,
                       "optimizer": _OPTIMISER},
    "emca-authors": lambda sd: {"epoch": 90, "arch": "resnet18", "state_dict": _prefixed(sd), "best_acc1": 71.1,
                                "optimizer": _OPTIMISER},
}

# (format, emca-vis model, its options, official key names, a name the repository uses, input px)
CASES = {
    "eca-net": ("eca-net", "resnet18_eca", {"eca_kernels": [3, 5, 5, 7]}, _eca_net, "eca_resnet18", 64),
    "cbam": ("cbam", "resnet18_cbam", {"cbam_spatial": "official"}, _cbam, None, 64),
    "cbam-cifar": ("cbam", "resnet18_cbam", {"cbam_spatial": "official", "stem": "cifar"}, _cbam, None, 32),
    "srm": ("srm", "resnet18_srm", {"srm_std": "unbiased"}, _srm, None, 64),
    "srm-se": ("srm", "resnet18_se", {}, _srm, None, 64),
    "emca-authors": ("emca-authors", "resnet18_emca_eca_released", {"eca_kernels": [3, 5, 5, 5]}, _emca_authors,
                     "eca_resnet18", 64),
}


def _saved(tmp_path, case):
    fmt, name, options, to_official, _, size = CASES[case]
    ours = randomise(create_model(name, num_classes=10, **options), seed=7).eval()
    path = tmp_path / "model_best.pth.tar"
    torch.save(SAVED_AS[fmt](_to_official(to_official, ours)), path)
    return ours, path, size


def _to_official(to_official, model):
    return {k: v.clone() for k, v in to_official(model.state_dict()).items()}


def _max_diff(a, b, size, dtype):
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        return (a.to(dtype)(x) - b.to(dtype)(x)).abs().max().item()


@pytest.mark.parametrize("case", CASES)
def test_official_checkpoint_loads_with_equal_logits(tmp_path, case):
    fmt, name, options, _, their_name, size = CASES[case]
    ours, path, size = _saved(tmp_path, case)
    specs = [str(path), f":{fmt}={path}", f"{name}={path}"] + ([f"{their_name}={path}"] if their_name else [])
    for spec in specs:
        loaded, meta = load_checkpoint(spec)
        assert (meta["model"], meta["source"]["format"], meta["num_classes"]) == (name, fmt, 10), spec
        assert all(meta["model_kwargs"][k] == v for k, v in options.items()), spec
    assert _max_diff(ours, loaded, size, torch.float64) <= 1e-5
    assert _max_diff(ours, loaded, size, torch.float32) <= 1e-4


@pytest.mark.parametrize("case", ["eca-net", "cbam", "srm", "emca-authors"])
def test_import_command_writes_the_official_checkpoint(tmp_path, case):
    fmt, name, _, _, their_name, size = CASES[case]
    ours, path, size = _saved(tmp_path, case)
    out = tmp_path / "imported.safetensors"
    result = subprocess.run([sys.executable, "-m", "emca_vis.checkpoint", "import", str(path), "--model",
                             their_name or name, "--format", fmt, "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}: {name} ") and f"({fmt})" in result.stdout
    loaded, meta = load_checkpoint(out)
    assert meta["source"]["format"] == fmt and meta["model"] == name
    assert _max_diff(ours, loaded, size, torch.float64) <= 1e-5


def test_detectors_accept_only_their_own_layout():
    models = {"eca-net": "resnet18_eca", "cbam": "resnet18_cbam", "srm": "resnet18_srm",
              "emca-authors": "resnet18_emca_eca_released"}
    for fmt, name in models.items():
        with torch.device("meta"):
            sd = CASES[fmt][3](create_model(name, num_classes=3).state_dict())
        accepted = [f.name for f in FORMATS.values() if f.detect is not None and f.detect(sd)]
        assert accepted == ([fmt, "torchvision"] if fmt != "emca-authors" else [fmt]), fmt
        assert detect_format(sd).name == fmt


def _one_line_error(spec, match):
    with pytest.raises(CheckpointError, match=match) as error:
        load_checkpoint(spec)
    assert "\n" not in str(error.value)


def test_wrong_model_names_and_unmapped_layouts_are_one_line(tmp_path):
    _, path, _ = _saved(tmp_path, "eca-net")
    _one_line_error(f"resnet18={path}", r"eca-net weights hold resnet18_eca \(from their blocks and modules\), "
                                        r"not resnet18$")
    _one_line_error(f"resnet34_eca={path}", "not resnet34_eca$")
    _one_line_error(f"eca_resnet20={path}", "ECA-Net's eca_resnet20: emca-vis builds ResNet depths 18, 34, 50, 101, 152")
    _one_line_error(f"resnet18_cbam:eca-net={path}", "not resnet18_cbam$")
    sd = {"features.1.conv.0.weight": torch.zeros(1), "features.1.conv.3.conv.weight": torch.zeros(1, 1, 3),
          "classifier.1.weight": torch.zeros(10, 4)}
    torch.save({"state_dict": sd}, tmp_path / "mobilenet.pth")
    _one_line_error(tmp_path / "mobilenet.pth", "eca_mobilenet_v2 weights .*emca-vis builds ResNets only")
    with torch.device("meta"):
        plain = create_model("resnet18", num_classes=3).state_dict()
    bam = {k: torch.zeros(v.shape) for k, v in plain.items()} | {"bam1.channel_att.gate_c.gate_c_fc_0.weight":
                                                                 torch.zeros(4, 64)}
    torch.save(bam, tmp_path / "bam.pth")
    _one_line_error(f":cbam={tmp_path / 'bam.pth'}", r"bam.pth: attention-module state dict holds BAM modules")
    ge = {k: torch.zeros(v.shape) for k, v in plain.items()} | {"layer1.0.rclb.conv.0.weight": torch.zeros(64, 1, 56, 56)}
    torch.save(ge, tmp_path / "ge.pth")
    _one_line_error(tmp_path / "ge.pth", r"GE modules \(recalibration_type='ge'\), which have no emca-vis model")
