import json
import subprocess
import sys

import pytest
import torch

from emca_vis.models import create_model
from emca_vis.profile import count_gflops, count_parameters, main, markdown_table, profile_models


def test_gflops_match_the_published_resnet_figures():
    with torch.device("meta"):
        r50, r18 = create_model("resnet50"), create_model("resnet18")
    assert count_parameters(r50) == 25_557_032
    assert count_gflops(create_model("resnet50"), 224) == pytest.approx(4.09, abs=0.01)
    assert count_gflops(create_model("resnet18"), 224) == pytest.approx(1.82, abs=0.01)
    assert count_parameters(r18) == 11_689_512


def test_profile_adds_the_plain_resnet_and_reports_ratios():
    result = profile_models(["resnet18_eca"], image_size=32, batch_sizes=(1, 2), repeats=2, warmup=1,
                            progress=False)
    rows = {row["model"]: row for row in result["models"]}
    assert list(rows) == ["resnet18_eca", "resnet18"]
    assert rows["resnet18"]["relative"] == {"1": 1.0, "2": 1.0}
    eca = rows["resnet18_eca"]
    assert eca["relative"]["2"] == pytest.approx(eca["throughput"]["2"] / rows["resnet18"]["throughput"]["2"])
    assert eca["params_m"] == pytest.approx(11.689512 + (2 * 3 + 6 * 5) / 1e6, abs=1e-9)  # ECA kernels: k=3 at 64 ch, else 5
    table = markdown_table(result).splitlines()
    assert table[0].startswith("| model | params (M) | GFLOPs | ops @1 | added ops | img/s @1 | img/s @2 |")
    assert table[3].startswith("| resnet18 | 11.690 |") and table[3].endswith("1.000x | 1.000x |")
    assert "| +0 |" in table[3] and rows["resnet18_eca"]["added_ops"] > 0


def test_cli_json_and_bad_model(tmp_path, cli):
    out = tmp_path / "eff.json"
    cmd = [sys.executable, "-m", "emca_vis.profile", "--models", "resnet18", "--image-size", "32",
           "--batch-sizes", "1", "--repeats", "1", "--warmup", "0", "--json", str(out)]
    result = cli(main, *cmd[3:])
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["models"][0]["model"] == "resnet18"
    assert "| resnet18 |" in result.stdout
    bad = subprocess.run(cmd[:4] + ["resnet19_eca"], capture_output=True, text=True)  # a real process
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: unknown model 'resnet19_eca'; see emca_vis.models.list_models()"


def test_training_throughput_mode_updates_the_models():
    model = create_model("resnet18_emca_eca", num_classes=4, width=0.125, stem="cifar")
    before = model.layer2[0].attn.scale_weights.detach().clone()
    from emca_vis.profile import measure_throughput

    speed = measure_throughput({"m": model}, 4, 32, "cpu", repeats=1, warmup=1, progress=False, training=True)
    assert speed["m"] > 0 and model.training
    assert not torch.equal(before, model.layer2[0].attn.scale_weights)  # two SGD steps were taken


def test_table_shows_cuda_latencies_and_op_ratios():
    row = {"params_m": 25.557, "gflops": 4.089, "throughput": {"1": 120.0}, "relative": {"1": 1.0}}
    result = {"settings": {"batch_sizes": [1]}, "models": [
        {**row, "model": "resnet50", "ops": 229, "added_ops": 0, "latency_ms": {"eager": 8.0, "cuda_graph": 2.5}},
        {**row, "model": "resnet50_eca", "ops": 357, "added_ops": 128, "latency_ms": {"eager": 11.0, "cuda_graph": 2.6}},
        {**row, "model": "resnet50_emca_eca", "ops": 303, "added_ops": 74, "latency_ms": {"eager": 9.5, "cuda_graph": 2.55}}]}
    from emca_vis.profile import op_ratios

    result["op_ratios"] = op_ratios({r["model"]: r for r in result["models"]})
    lines = markdown_table(result).splitlines()
    assert lines[0].endswith("| ms @1 eager | ms @1 CUDA graph |")
    assert lines[3] == "| resnet50_eca | 25.557 | 4.089 | 357 | +128 | 120.0 | 1.000x | 11.00 | 2.60 |"
    assert lines[-1] == "resnet50_emca_eca adds 74 ops, 0.58x the 128 of resnet50_eca"
