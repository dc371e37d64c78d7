import json
import os
import subprocess
import sys

import pytest
import torch

from emca_vis.demo import demo_checkpoints
from emca_vis.robustness.evaluate import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args, module="emca_vis.robustness", prefix=()):
    return subprocess.run([sys.executable, *prefix, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=ENV)


def small(out, *extra):
    checkpoints = demo_checkpoints()
    return ("--checkpoint", checkpoints[0], checkpoints[5], "--num-images", "24", "--batch-size", "8", "--out", out, *extra)


def test_scores_resume_and_only_new_cells_are_computed(tmp_path, cli):
    out = tmp_path / "r.json"
    first = cli(main, *small(out, "--corruptions", "brightness", "gaussian_noise", "--severities", "1", "5"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[1].startswith("| model | clean err | mCE | rel. mCE | mCA | brightness | gaussian |")
    results = json.loads(out.read_text())
    base, emca = results["models"]["resnet18"], results["models"]["resnet18_emca_eca"]
    assert results["baseline"] == "resnet18" and base["mce"] == pytest.approx(1.0)
    assert base["n"] == 24 and set(base["errors"]) == {"brightness", "gaussian_noise"}
    errors = emca["errors"]["gaussian_noise"]
    assert emca["ce"]["gaussian_noise"] == pytest.approx(
        (errors["1"] + errors["5"]) / (base["errors"]["gaussian_noise"]["1"] + base["errors"]["gaussian_noise"]["5"]))
    cells = out.with_suffix(".cells.jsonl").read_text().splitlines()
    assert len(cells) == 2 * 5  # clean + 2 corruptions x 2 severities, for 2 models
    # a kill mid-write leaves a cut line: that cell is redone, the others are kept
    out.with_suffix(".cells.jsonl").write_text("\n".join(cells) + '\n{"model": "resn')
    again = cli(main, *small(out, "--corruptions", "brightness", "gaussian_noise", "contrast", "--severities", "1",
                             "5"))
    assert again.returncode == 0, again.stderr
    lines = out.with_suffix(".cells.jsonl").read_text().splitlines()
    assert len([line for line in lines if '"contrast"' in line]) == 4 and len(lines) == 10 + 4
    assert json.loads(out.read_text())["models"]["resnet18_emca_eca"]["errors"]["gaussian_noise"] == errors
    refused = run(*small(out, "--corruptions", "contrast", "--severities", "1", "--seed", "1"))  # as a process
    assert refused.returncode == 2 and "r.json: holds results with seed 0, this run has 1" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    other_seed = cli(main, *small(out, "--corruptions", "contrast", "--severities", "1", "--seed", "1", "--overwrite"))
    assert other_seed.returncode == 0, other_seed.stderr
    assert len(out.with_suffix(".cells.jsonl").read_text().splitlines()) == 14 + 2 * 2  # clean and contrast redone


def test_two_processes_give_the_numbers_of_one(tmp_path, cli):
    args = ("--corruptions", "shot_noise", "--severities", "2")
    torch.set_num_threads(1)  # as each torchrun process
    one = cli(main, *small(tmp_path / "one.json", *args))
    assert one.returncode == 0, one.stderr
    two = run(*small(tmp_path / "two.json", *args), prefix=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
    assert two.returncode == 0, two.stderr
    single, split = (json.loads((tmp_path / f"{n}.json").read_text())["models"] for n in ("one", "two"))
    assert single == {label: {**m, "checkpoint": m["checkpoint"]} for label, m in split.items()}


@pytest.mark.parametrize("args, message", [
    (["--corruptions", "fogg"], "unknown corruption 'fogg'"),
    (["--severities", "6"], "unknown severity 6"),
    (["--c-data", "imagenet-c:/nowhere", "--corruptions", "fog", "--severities", "1"], "no folder /nowhere/fog/1"),
])
def test_bad_options_are_one_line(tmp_path, args, message, cli):
    result = cli(main, *small(tmp_path / "r.json", *args))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
