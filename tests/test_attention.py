import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from emca_vis.attention import AttentionStats, all_figures, class_selectivity, histogram_entropy
from emca_vis.attention.__main__ import main
from emca_vis.data.shapes import render_sample
from emca_vis.demo import demo_checkpoints
from emca_vis.models import create_model, record_attention

from .test_models import randomise

CLASSES = ["a", "b", "c"]


def tiny(name="resnet18_emca_eca", **kwargs):
    return randomise(create_model(name, num_classes=3, width=0.125, stem="cifar", **kwargs), seed=2).eval()


def batches(seed=0, sizes=(5, 3)):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def test_zero_excitation_gives_half_everywhere():
    model = tiny()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "conv") and isinstance(module.conv, torch.nn.Conv1d):
                module.conv.weight.zero_()  # z = sigmoid(0) = 0.5 for every channel and image
        model.layer2[0].attn.scale_weights.copy_(torch.tensor([1.0, 0.25, -0.5]))
    stats = AttentionStats(model, CLASSES)
    for x, y in batches():
        stats.update(x, y)
    result = stats.result()
    module = next(m for m in result["modules"] if m["name"] == "layer2.0")
    assert module["images"] == 8 and module["mean"] == 0.5 and module["std"] == 0
    assert module["entropy"] == 0 and module["frac_below_0.1"] == 0 and module["frac_above_0.9"] == 0
    assert module["channel_mean"] == [0.5] * 16 and module["class_selectivity"] == [0.0] * 16
    assert module["sources"] == ["current", "stage 1 block 1", "stage 1 block 2"]
    assert module["scale_weights"] == [1.0, 0.25, -0.5]


def test_streamed_statistics_equal_a_direct_computation():
    model = tiny()
    data = batches(seed=1)
    stats = AttentionStats(model, CLASSES)
    z, parts, labels = [], [], []
    for x, y in data:
        stats.update(x, y)
        with torch.no_grad(), record_attention(model) as records:
            model(x)
        z.append(records["layer3.0"].scales.double().numpy())
        parts.append(records["layer3.0"].contributions.double().numpy())
        labels.append(y.numpy())
    z, parts, labels = np.concatenate(z), np.concatenate(parts), np.concatenate(labels)
    module = next(m for m in stats.result()["modules"] if m["name"] == "layer3.0")
    assert module["mean"] == pytest.approx(z.mean()) and module["std"] == pytest.approx(z.std())
    assert module["channel_mean"] == pytest.approx(z.mean(0).tolist())
    assert module["channel_std"] == pytest.approx(z.std(0).tolist(), abs=1e-9)
    assert module["frac_below_0.1"] == pytest.approx((z < 0.1).mean())
    assert module["frac_above_0.9"] == pytest.approx((z > 0.9).mean())
    counts = np.histogram(z, bins=20, range=(0, 1))[0]
    p = counts[counts > 0] / counts.sum()
    assert module["entropy"] == pytest.approx(-(p * np.log2(p)).sum())
    for k in range(3):
        if (labels == k).any():
            assert module["class_mean"][k] == pytest.approx(z[labels == k].mean(0).tolist())
    share = np.abs(parts).sum((0, 1))
    assert module["source_share"] == pytest.approx((share / share.sum()).tolist())
    assert sum(module["source_share"]) == pytest.approx(1.0)


def test_selectivity_and_entropy_formulas():
    means = np.array([[0.2, 0.5], [0.6, 0.5], [0.4, 0.5]])
    assert class_selectivity(means) == pytest.approx([1 / 3, 0.0])
    assert histogram_entropy([5, 5, 0, 5, 5]) == pytest.approx(2.0)
    assert histogram_entropy([0, 7, 0]) == 0.0


def test_emca_without_sources_reports_a_single_source():
    stats = AttentionStats(tiny(emca_stages=0), CLASSES)
    for x, y in batches():
        stats.update(x, y)
    modules = stats.result()["modules"]
    assert [m["name"] for m in modules] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert all(m["sources"] == ["current"] and "scale_weights" not in m for m in modules)


def analysed(names=("resnet18_eca", "resnet18_emca_eca", "resnet18_emca_srm")):
    models = {}
    for name in names:
        stats = AttentionStats(tiny(name), CLASSES)
        for x, y in batches():
            stats.update(x, y)
        models[name] = {**stats.result()}
    return {"models": models}


def test_every_figure_is_written_and_json_round_trips(tmp_path):
    data = analysed()
    first = all_figures(data, tmp_path / "a", stage=3)
    assert sorted(p.name for p in first) == sorted(f"{n}.{ext}" for n in (
        "scaling", "scale_weights", "source_share", "scale_distribution", "class_channel_stage3")
        for ext in ("png", "svg"))
    assert all(p.stat().st_size > 5000 for p in first)
    again = all_figures(json.loads(json.dumps(data)), tmp_path / "b", stage=3)
    for a, b in zip(first, again):
        if a.suffix == ".png":
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), a.name
        else:
            assert a.read_text() == b.read_text(), a.name


def run_attention(*args):
    return subprocess.run([sys.executable, "-m", "emca_vis.attention", *map(str, args)], capture_output=True,
                          text=True)


def test_cli_on_images_and_redraw_from_json(tmp_path, cli):
    render_sample(0, "test", 1, 64).image.save(tmp_path / "a.png")
    (tmp_path / "bad.jpg").write_text("no")
    checkpoints = demo_checkpoints()[4:6]
    result = cli(main, "--checkpoint", *checkpoints, "--image", tmp_path / "a.png", "--image", tmp_path / "bad.jpg",
                 "--out", tmp_path / "out")
    assert result.returncode == 2 and "bad.jpg: not an image" in result.stderr and "Traceback" not in result.stderr
    data = json.loads((tmp_path / "out" / "attention.json").read_text())
    assert list(data["models"]) == ["resnet18_emca_se", "resnet18_emca_eca"]
    module = data["models"]["resnet18_emca_eca"]["modules"][1]
    assert module["images"] == 1 and len(module["scale_weights"]) == len(module["sources"]) == 3
    assert math.isclose(sum(module["source_share"]), 1.0)
    before = (tmp_path / "out" / "scaling.svg").read_text()
    (tmp_path / "out" / "scaling.svg").unlink()
    redraw = cli(main, "--from", tmp_path / "out" / "attention.json", "--out", tmp_path / "out")
    assert redraw.returncode == 0, redraw.stderr
    assert (tmp_path / "out" / "scaling.svg").read_text() == before
    missing = run_attention("--from", tmp_path / "nothing.json")  # a real process: what a shell sees
    assert "Traceback" not in missing.stderr
    assert missing.returncode == 2 and "nothing.json: no such file" in missing.stderr
