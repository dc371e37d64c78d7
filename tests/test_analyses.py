"""Each analyses/ script runs on the demo checkpoints and writes what its README says.

The scripts are loaded from their files and their ``main`` called in-process with small
settings (one of them also as a real script), so the whole module stays fast.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emca_vis.demo import demo_checkpoints
from emca_vis.errors import run_cli

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
SCRIPTS = ("gradcam_figure", "scaling_figure", "training_curves", "efficiency_table", "placement_ablation",
           "source_ablation", "robustness_table")


def script(name):
    spec = importlib.util.spec_from_file_location(f"analyses_{name}", ANALYSES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def two():
    paths = demo_checkpoints()
    return [str(paths[2]), str(paths[5])]  # resnet18_eca, resnet18_emca_eca


def test_readme_describes_every_script():
    readme = (ANALYSES / "README.md").read_text()
    for name in SCRIPTS:
        assert (ANALYSES / f"{name}.py").is_file()
        assert f"{name}.py" in readme


def test_gradcam_figure(tmp_path):
    assert script("gradcam_figure").main(["--checkpoint", *two(), "--samples", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "gradcam_comparison.json").read_text())
    assert len(record["conditions"]) == 2 and set(record["models"]) == {"resnet18_eca", "resnet18_emca_eca"}
    assert (tmp_path / "gradcam_comparison.png").stat().st_size > 10_000


def test_scaling_figure(tmp_path):
    assert script("scaling_figure").main(["--checkpoint", *two(), "--n", "8", "--out", str(tmp_path)]) == 0
    for name in ("scaling.png", "scaling.svg", "scale_weights.png", "attention.json"):
        assert (tmp_path / name).is_file()


def test_training_curves_from_logs_and_metadata(tmp_path, capsys):
    log = tmp_path / "run_a" / "metrics.csv"
    log.parent.mkdir()
    log.write_text("epoch,train_top1,val_top1,val_top5\n1,50,40,90\n2,80,70,99\n")
    assert script("training_curves").main(["--checkpoint", two()[1], "--log", str(log.parent),
                                           "--out", str(tmp_path)]) == 0
    rows = (tmp_path / "training_curves.csv").read_text().splitlines()
    assert rows[0] == "run,epoch,train_top1,val_top1,val_top5,log" and rows[1].startswith("run_a,1.0,50.0,40.0,90.0")
    assert (tmp_path / "training_curves.png").is_file()
    out = capsys.readouterr().out
    assert "run_a:" in out


def test_training_curves_on_the_demo_checkpoints(tmp_path, capsys):
    assert script("training_curves").main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "training_curves.png").is_file()
    out = capsys.readouterr().out
    assert "wrote" in out


def test_efficiency_table(tmp_path):
    paths = demo_checkpoints()
    argv = ["--checkpoint", str(paths[0]), str(paths[5]), "--batch-size", "2", "--repeats", "1", "--out", str(tmp_path)]
    assert script("efficiency_table").main(argv) == 0
    table = json.loads((tmp_path / "efficiency.json").read_text())["models"]
    assert [row["model"] for row in table] == ["resnet18", "resnet18_emca_eca"]
    assert table[0]["relative_throughput"] == 1 and table[1]["params"] > table[0]["params"]
    assert "| resnet18_emca_eca | 64 |" in (tmp_path / "efficiency.md").read_text()


def test_placement_ablation_groups_by_metadata_and_adds_mce(tmp_path, capsys):
    robustness = tmp_path / "r.json"
    scores = {"clean_error": 0.1, "errors": {}}  # what a results JSON must hold besides the mCE used here
    robustness.write_text(json.dumps({"corruptions": [], "severities": [], "models": {
        "resnet18_eca": {**scores, "mce": 0.9}, "resnet18_emca_eca": {**scores, "mce": 0.8}}}))
    argv = ["--checkpoint", *two(), "--n", "16", "--robustness", str(robustness), "--out", str(tmp_path)]
    assert script("placement_ablation").main(argv) == 0
    table = json.loads((tmp_path / "placement_ablation.json").read_text())
    assert table["present"] == ["all", "first"] and table["missing"] == ["last"]
    cells = {c["label"]: c for c in table["cells"]}
    assert cells["resnet18_eca"]["setting"] == "all" and cells["resnet18_emca_eca"]["setting"] == "first"
    assert cells["resnet18_emca_eca"]["mce"] == 0.8 and 0 <= cells["resnet18_eca"]["top1"] <= 1
    out = capsys.readouterr().out
    assert "| type | all | first |" in out and "/ 80.0" in out
    assert "placement settings present: all; first; missing: last" in out


def test_source_ablation_on_all_demo_checkpoints(tmp_path, capsys):
    assert script("source_ablation").main(["--metadata", "--out", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "sources_ablation.json").read_text())
    assert table["present"] == ["S=1, N=all"] and "S=0, N=1" in table["missing"]
    assert {c["kind"] for c in table["cells"]} == {"EMCA-SE", "EMCA-ECA", "EMCA-SRM"}
    assert "| EMCA-ECA | 99.2 |" in capsys.readouterr().out  # the checkpoint's recorded validation top-1


def test_ablation_without_any_member_is_a_one_line_error(tmp_path):
    plain = str(demo_checkpoints()[0])
    assert run_cli(script("source_ablation").main, ["--checkpoint", plain, "--metadata", "--out", str(tmp_path)]) == 2


def test_robustness_table_computes_and_rereads(tmp_path, capsys):
    paths = demo_checkpoints()
    argv = ["--checkpoint", str(paths[0]), str(paths[5]), "--n", "16", "--corruptions", "gaussian_noise",
            "--severities", "5", "--out", str(tmp_path)]
    assert script("robustness_table").main(argv) == 0
    results = json.loads((tmp_path / "robustness.json").read_text())
    assert results["baseline"] == "resnet18" and set(results["models"]) == {"resnet18", "resnet18_emca_eca"}
    assert "| resnet18_emca_eca |" in (tmp_path / "robustness.md").read_text()
    again = tmp_path / "again"
    assert script("robustness_table").main(["--from", str(tmp_path / "robustness.json"), "--out", str(again)]) == 0
    assert (again / "robustness.md").read_text() == (tmp_path / "robustness.md").read_text()
    assert (again / "robustness_families.png").is_file()


def test_a_script_runs_from_the_command_line(tmp_path):
    command = [sys.executable, str(ANALYSES / "source_ablation.py"), "--metadata", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "sources settings present: S=1, N=all" in result.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name, capsys):
    with pytest.raises(SystemExit) as stop:
        script(name).main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "--checkpoint" in out and "--out" in out
