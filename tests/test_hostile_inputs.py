"""Hostile inputs: checkpoints, results files, images and special files that a careless or
malicious user hands to the tools. Each case must end in one ``error:`` line naming the input
(exit code 2) or in a correct result: no traceback, no hang, no huge allocation, and the other
work of the run done. Files are generated here; nothing large is shipped (big files are sparse).

Most cases run in-process; the ones that would hang or allocate gigabytes when broken (FIFOs,
extreme aspect ratios) run in subprocesses with a timeout and a memory limit, all started at
once to keep the suite fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from emca_vis.checkpoint import save_checkpoint
from emca_vis.data.shapes import SHAPE_CLASSES
from emca_vis.demo import demo_checkpoints, demo_dir
from emca_vis.errors import UserError, run_cli
from emca_vis.models import create_model

from .test_models import randomise

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SUBPROCESS_TIMEOUT = 600  # generous: reached only by a hang; seven interpreters start at once on two cores


# ------------------------------------------------------------------------------------------------
# helpers


def errors_of(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def one_error(stderr: str, *fragments: str) -> str:
    """The single ``error:`` line of ``stderr``, which must contain every fragment."""
    lines = errors_of(stderr)
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def cli(main, argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def tiny_state():
    """A tiny model's tensors and a complete metadata record, to write variants of."""
    model = randomise(create_model("resnet18", num_classes=3, width=0.0625, stem="cifar"))
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    meta = {"model": "resnet18", "model_kwargs": {"stem": "cifar", "width": 0.0625}, "num_classes": 3,
            "class_names": ["a", "b", "c"], "input_size": 32, "resize": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
            "dataset": None, "metrics": {"val_top1": 50.0}, "train_args": {}}
    return tensors, meta


def write(path: Path, tensors: dict, meta: dict | str) -> Path:
    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(tensors, str(path), metadata={"emca_vis": text})
    return path


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Fail instead of blocking forever (a FIFO opened for reading): Python's ``open`` is interrupted
    by the alarm. Only for in-process cases whose reads go through Python."""
    def expire(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------------------------
# checkpoint metadata: `python -m emca_vis.checkpoint good bad good2` checks both good files


def _drop(key):
    return lambda meta: json.dumps({k: v for k, v in meta.items() if k != key})


def _set(**changes):
    return lambda meta: json.dumps({**meta, **changes})


def _raw(old: str, new: str):
    return lambda meta: json.dumps(meta).replace(old, new)


METADATA_CASES = {
    "missing model": (_drop("model"), "model: Field required"),
    "missing num_classes": (_drop("num_classes"), "num_classes: Field required"),
    "100k-deep nesting": (lambda meta: json.dumps(meta)[:-1] + ', "extra": ' + deep(100_000) + "}",
                          "nested too deeply"),
    "width Infinity": (_raw('"width": 0.0625', '"width": Infinity'), "model_kwargs.width: Input should be a finite"),
    "num_classes -1": (_set(num_classes=-1), "num_classes: Input should be greater than or equal to 1"),
    "num_classes 1e12": (_set(num_classes=10**12), "num_classes: Input should be less than or equal to 100000"),
    "num_classes 1e12 as float": (_set(num_classes=1e12), "num_classes: Input should be a valid integer"),
    "input_size 0": (_set(input_size=0), "input_size: Input should be greater than or equal to 8"),
    "input_size 100000": (_set(input_size=100_000), "input_size: Input should be less than or equal to 2048"),
    "1-element mean": (_set(mean=[0.5]), "mean: List should have at least 3 items"),
    "std of zero": (_set(std=[0.25, 0, 0.25]), "std.1: Input should be greater than or equal to 0.000001"),
    "fewer class names than classes": (_set(class_names=["a", "b"]), "2 class_names for num_classes=3"),
    "metrics as a list": (_set(metrics=[1, 2]), "metrics: Input should be a valid dictionary"),
    "metric of the wrong type": (_set(metrics={"val_top1": "high"}), "metrics: val_top1: Input should be a valid"),
    "resize below the crop": (_set(resize=16), "resize=16 is smaller than input_size=32"),
    "unknown model": (_set(model="vgg16"), "unknown model 'vgg16'"),
    "unknown model option": (_set(model_kwargs={"stem": "cifar", "width": 0.0625, "depth": 9}),
                             "unknown model option 'depth'"),
    "bad option value": (_set(model_kwargs={"stem": "tiny"}), "model_kwargs.stem: Input should be 'imagenet' or"),
    "10,000-character class name": (_set(class_names=["a", "b", "c" * 10_000]),
                                    "class_names.2: String should have at most 256 characters"),
    "metadata not an object": (lambda meta: "[1, 2]", "metadata: is not a JSON object"),
    "metadata not JSON": (lambda meta: "{model: resnet18", "not valid JSON"),
    "weights of another architecture": (_set(model="resnet34"), "weights do not match the metadata's architecture"),
    "class count the weights do not have": (_set(num_classes=4, class_names=list("abcd")),
                                            "shape mismatches (e.g. fc.weight"),
}


@pytest.mark.parametrize("case", list(METADATA_CASES))
def test_bad_metadata_is_one_line_and_the_next_file_is_checked(case, tiny_state, tmp_path, capsys):
    from emca_vis.checkpoint.__main__ import main

    tensors, meta = tiny_state
    mutate, expected = METADATA_CASES[case]
    good = write(tmp_path / "good.safetensors", tensors, meta)
    bad = write(tmp_path / "bad.safetensors", tensors, mutate(meta))
    good2 = write(tmp_path / "good2.safetensors", tensors, meta)
    rc, out, err = cli(main, [good, bad, good2], capsys)
    assert rc == 2
    one_error(err, f"{bad}:", expected)
    described = out.splitlines()
    assert len(described) == 2 and described[0].startswith(f"{good}: resnet18") and described[1].startswith(
        f"{good2}: resnet18")


def test_huge_header_is_refused_before_reading_it(tiny_state, tmp_path, capsys):
    from emca_vis.checkpoint.__main__ import main

    tensors, meta = tiny_state
    good = write(tmp_path / "good.safetensors", tensors, meta)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((1000).to_bytes(8, "little") + b"{}")
    rc, out, err = cli(main, [bad, truncated, good], capsys)
    assert rc == 2 and out.startswith(f"{good}: resnet18")
    lines = errors_of(err)
    assert len(lines) == 2
    assert f"{bad}: safetensors header of 1,099,511,627,776 bytes is over the" in lines[0]
    assert f"{truncated}: truncated" in lines[1]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_weights_are_refused_or_loaded_with_a_warning(value, tiny_state, tmp_path, capsys):
    from emca_vis.checkpoint import load_checkpoint
    from emca_vis.checkpoint.__main__ import main

    tensors, meta = tiny_state
    poisoned = dict(tensors)
    poisoned["layer2.0.conv1.weight"] = tensors["layer2.0.conv1.weight"].clone()
    poisoned["layer2.0.conv1.weight"][0, 0, 0, 0] = value
    bad = write(tmp_path / "bad.safetensors", poisoned, meta)
    good = write(tmp_path / "good.safetensors", tensors, meta)
    rc, out, err = cli(main, [bad, good], capsys)
    assert rc == 2 and out.startswith(f"{good}: resnet18")
    one_error(err, f"{bad}: 1 tensor with NaN or infinite values (first: layer2.0.conv1.weight)", "--allow-nonfinite")
    rc, out, err = cli(main, ["--allow-nonfinite", bad], capsys)
    assert rc == 0 and out.startswith(f"{bad}: resnet18")
    assert f"warning: {bad}: 1 tensor with NaN or infinite values" in err
    model, _ = load_checkpoint(bad, allow_nonfinite=True)
    assert not torch.isfinite(model.layer2[0].conv1.weight).all()


def test_gradcam_goes_on_without_the_bad_checkpoint_and_writes_strict_json(tiny_state, tmp_path, capsys):
    from emca_vis.gradcam import main

    tensors, meta = tiny_state
    poisoned = {**tensors, "fc.bias": torch.tensor([float("nan"), 0.0, 0.0])}
    bad = write(tmp_path / "nan.safetensors", poisoned, meta)
    good = write(tmp_path / "good.safetensors", tensors, meta)
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "g" / "g.png"
    argv = ["--image", image, "--checkpoint", good, bad, "--method", "gradcam", "--out", out]
    rc, stdout, err = cli(main, argv, capsys)
    assert rc == 2
    one_error(err, f"{bad}: 1 tensor with NaN or infinite values (first: fc.bias)")
    report = json.loads(out.with_suffix(".json").read_text())
    assert [m["label"] for m in report["models"]] == ["resnet18"] and out.exists()
    # with the option the poisoned model runs; its NaN probabilities are written as null, never bare NaN
    rc, stdout, err = cli(main, [*argv, "--allow-nonfinite"], capsys)
    assert rc == 0 and "warning:" in err
    text = out.with_suffix(".json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in the JSON"))


def test_attention_and_robustness_go_on_with_the_good_checkpoints(tiny_state, tmp_path, capsys):
    from emca_vis.attention.__main__ import main as attention
    from emca_vis.robustness.evaluate import main as robustness

    tensors, meta = tiny_state
    bad = write(tmp_path / "bad.safetensors", tensors, json.dumps({**meta, "metrics": [1]}))
    good = demo_dir() / "resnet18_eca.safetensors"
    image = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(image)
    rc, _, err = cli(attention, ["--checkpoint", bad, good, "--image", image, "--out", tmp_path / "att"], capsys)
    assert rc == 2
    one_error(err, f"{bad}: metadata: metrics: Input should be a valid dictionary")
    assert list(json.loads((tmp_path / "att" / "attention.json").read_text())["models"]) == ["resnet18_eca"]
    out = tmp_path / "r.json"
    rc, _, err = cli(robustness, ["--checkpoint", good, bad, "--corruptions", "fog", "--severities", "1", "--n", "4",
                                  "--batch-size", "4", "--out", out], capsys)
    assert rc == 2
    one_error(err, f"{bad}: metadata: metrics")
    assert list(json.loads(out.read_text())["models"]) == ["resnet18_eca"]


def test_readme_minimal_checkpoint_goes_through_every_tool(tmp_path, capsys):
    """``save_checkpoint(path, model, class_names=names, input_size=224)``: no resize, mean, std,
    dataset or metrics in the file; every tool uses the schema's defaults."""
    from emca_vis.attention.__main__ import main as attention
    from emca_vis.checkpoint import load_checkpoint, read_metadata
    from emca_vis.checkpoint.__main__ import main as check
    from emca_vis.gradcam import main as gradcam
    from emca_vis.robustness.evaluate import main as robustness

    model = randomise(create_model("resnet18_emca_eca", num_classes=len(SHAPE_CLASSES), width=0.0625))
    path = save_checkpoint(tmp_path / "minimal.safetensors", model, class_names=list(SHAPE_CLASSES), input_size=224)
    # also a file written by hand with only the two required fields
    bare = write(tmp_path / "bare.safetensors", model.state_dict(), {"model": "resnet18_emca_eca", "num_classes": 12,
                                                                      "model_kwargs": {"width": 0.0625}})
    _, meta = load_checkpoint(bare)
    assert (meta["input_size"], meta["resize"], meta["class_names"][:2]) == (224, 256, ["0", "1"])
    assert (meta["mean"], meta["std"]) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert (meta["dataset"], meta["metrics"], meta["train_args"]) == (None, {}, {})
    assert read_metadata(path)["resize"] == 256
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(image)
    assert cli(check, [path, bare], capsys)[0] == 0
    rc, _, err = cli(gradcam, ["--image", image, "--checkpoint", path, bare, "--method", "gradcam",
                               "--out", tmp_path / "g.png"], capsys)
    assert rc == 0, err
    rc, _, err = cli(attention, ["--checkpoint", path, "--image", image, "--out", tmp_path / "att"], capsys)
    assert rc == 0, err
    rc, _, err = cli(robustness, ["--checkpoint", path, "--corruptions", "fog", "--severities", "1", "--n", "2",
                                  "--batch-size", "2", "--out", tmp_path / "r.json"], capsys)
    assert rc == 0, err


# ------------------------------------------------------------------------------------------------
# robustness results JSON (the app's Robustness panel, analyses, ablations)


def _results(models: int = 2, corruptions=("fog", "snow")) -> dict:
    severities = [1, 3]
    return {"data": "shapes", "split": "test", "backend": "torch", "baseline": "m0",
            "corruptions": list(corruptions), "severities": severities,
            "models": {f"m{i}": {"checkpoint": f"m{i}.safetensors", "n": 10, "clean_error": 0.1,
                                 "errors": {c: {str(s): 0.2 + 0.1 * s / 3 for s in severities} for c in corruptions},
                                 "ce": {c: 1.0 for c in corruptions}, "relative_ce": {c: 1.0 for c in corruptions},
                                 "mce": 1.0, "relative_mce": 1.0, "mce_over": list(corruptions),
                                 "mean_corruption_accuracy": 0.7} for i in range(models)}}


def _edit(change):
    results = _results()
    change(results)
    return json.dumps(results)


RESULTS_CASES = {
    "errors as a list": (_edit(lambda r: r["models"]["m1"].update(errors=[0.1, 0.2])),
                         "models.m1.errors: Input should be a valid dictionary"),
    "string error value": (_edit(lambda r: r["models"]["m1"]["errors"]["fog"].update({"1": "high"})),
                           "models.m1.errors.fog.1: Input should be a valid number"),
    "error above 1": (_edit(lambda r: r["models"]["m1"]["errors"]["fog"].update({"1": 3})),
                      "models.m1.errors.fog.1: Input should be less than or equal to 1"),
    "bare NaN": (_edit(lambda r: r["models"]["m1"].update(clean_error=float("nan"))),
                 "models.m1.clean_error: Input should be a finite number"),
    "5000-digit integer": (_edit(lambda r: None).replace('"clean_error": 0.1', '"clean_error": ' + "9" * 5000, 1),
                           "not usable JSON (an integer too long to read)"),
    "4000-digit integer": (_edit(lambda r: None).replace('"clean_error": 0.1', '"clean_error": ' + "9" * 4000, 1),
                           "models.m0.clean_error: Input should be"),
    "deep nesting": ('{"models": ' + deep(100_000) + "}", "JSON nested too deeply"),
    "missing clean_error": (_edit(lambda r: r["models"]["m0"].pop("clean_error")),
                            "models.m0.clean_error: Field required"),
    "missing severity": (_edit(lambda r: r["models"]["m0"]["errors"]["snow"].pop("3")),
                         "models.m0.errors.snow: its severities are not those listed"),
    "unlisted corruption": (_edit(lambda r: r["models"]["m0"]["errors"].update(frost={"1": 0.1, "3": 0.1})),
                            "models.m0.errors: its corruptions are not those listed"),
    "severity 7": (_edit(lambda r: r.update(severities=[1, 7])), "severities.1: Input should be less than or equal"),
    "200,000 corruptions in 2 MB": (json.dumps({**_results(1, ()), "corruptions": [f"c{i}" for i in range(200_000)]}),
                                    "corruptions: List should have at most 50 items"),
    "5,000 models in 400 KB": (json.dumps({"corruptions": [], "severities": [1], "models": {
        f"m{i}": {"clean_error": 0.1, "errors": {}} for i in range(5000)}}),
        "models: Dictionary should have at most 100"),
    "no models": (json.dumps({"corruptions": [], "severities": [], "models": {}}),
                  "models: Dictionary should have at least 1 item"),
    "not an object": ("[1, 2, 3]", "Input should be a valid dictionary (got [1, 2, 3])"),
    "partial file": (_edit(lambda r: None)[:500], "not valid JSON"),
}


@pytest.mark.parametrize("case", list(RESULTS_CASES))
def test_bad_results_json_is_one_line(case):
    from emca_vis import interactive as iv

    text, expected = RESULTS_CASES[case]
    with pytest.raises(UserError) as caught:
        iv.read_results(text.encode(), "upload.json")
    message = str(caught.value)
    assert message.startswith("upload.json: ") and expected in message and "\n" not in message, message


def test_results_without_optional_fields_are_shown_with_defaults():
    from emca_vis import interactive as iv

    results = _results()
    for key in ("data", "split", "backend", "baseline"):
        del results[key]
    for model in results["models"].values():
        for key in ("ce", "relative_ce", "mce", "relative_mce", "mce_over", "mean_corruption_accuracy", "n"):
            del model[key]
    checked = iv.read_results(json.dumps(results), "partial.json")
    assert checked["baseline"] is None and checked["models"]["m0"]["ce"] == {}
    assert iv.summary_rows(checked)[0] == {"model": "m0", "images": None, "clean error (%)": 10.0, "mCE (%)": None,
                                           "relative mCE (%)": None, "mean corruption accuracy (%)": None}
    assert iv.ce_rows(checked)[0] == {"model": "m0", "fog": None, "snow": None}
    assert iv.error_rows(checked)[0]["s3"] == 30.0
    assert iv.robustness_figure(checked)[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_files_are_bounded_and_regular(tmp_path):
    from emca_vis import interactive as iv

    big = tmp_path / "big.json"
    with open(big, "wb") as handle:  # sparse: 65 MB on paper, nothing on disk
        handle.truncate(65 << 20)
    with pytest.raises(UserError, match=r"big.json: 68,157,440 bytes is over the 67,108,864-byte limit"):
        iv.read_results_file(big)
    with no_hang(), pytest.raises(UserError, match=r"pipe.json: is a FIFO \(named pipe\), not a regular file"):
        iv.read_results_file(fifo(tmp_path / "pipe.json"))
    with pytest.raises(UserError, match="upload.json: 68,157,440 bytes is over the 67,108,864-byte limit"):
        iv.read_results(b" " * (65 << 20), "upload.json")


# ------------------------------------------------------------------------------------------------
# .cells.jsonl lines


CELL = {"model": "resnet18", "corruption": "clean", "severity": 0, "correct": 5, "total": 8, "setting": "x"}
CELLS_CASES = {
    "[] line": ("[]", "Input should be a valid dictionary (got [])"),
    "missing keys": (json.dumps({"model": "resnet18"}), "corruption: Field required"),
    "total 0": (json.dumps({**CELL, "correct": 0, "total": 0}), "total: Input should be greater than or equal to 1"),
    "correct > total": (json.dumps({**CELL, "correct": 11}), "correct=11 is more than total=8"),
    "garbage line": ("#!%garbage", "not valid JSON (Expecting value at line 1, column 1)"),
    "severity for the clean cell": (json.dumps({**CELL, "severity": 3}), "severity 0 is for the clean cell only"),
}


@pytest.mark.parametrize("case", list(CELLS_CASES))
def test_bad_cells_line_names_file_and_line(case, tmp_path, capsys):
    from emca_vis.robustness.evaluate import main

    line, expected = CELLS_CASES[case]
    out = tmp_path / "r.json"
    cells = out.with_suffix(".cells.jsonl")
    cells.write_text(json.dumps(CELL) + "\n" + line + "\n")
    rc, _, err = cli(main, ["--checkpoint", demo_checkpoints()[0], "--corruptions", "fog", "--severities", "1",
                            "--n", "4", "--batch-size", "4", "--out", out], capsys)
    assert rc == 2 and not out.exists()
    one_error(err, f"{cells}, line 2: {expected}", "delete that line (or the file)")


def test_cut_last_cell_is_redone(tmp_path, capsys):
    from emca_vis.robustness.evaluate import main

    out = tmp_path / "r.json"
    argv = ["--checkpoint", demo_checkpoints()[0], "--corruptions", "fog", "--severities", "1", "--n", "4",
            "--batch-size", "4", "--out", out]
    assert cli(main, argv, capsys)[0] == 0
    cells = out.with_suffix(".cells.jsonl")
    lines = cells.read_text().splitlines()
    cells.write_text(lines[0] + "\n" + lines[1][:20])  # killed while writing the second cell
    rc, _, err = cli(main, argv, capsys)
    assert rc == 0 and not errors_of(err)
    assert cells.read_text().splitlines() == lines


# ------------------------------------------------------------------------------------------------
# attention --from and report --from


def _attention_json(tmp_path) -> Path:
    from emca_vis.attention.analysis import BINS

    module = {"name": "layer1.0", "stage": 1, "block": 0, "channels": 2, "images": 1, "mean": 0.5, "std": 0.1,
              "entropy": 1.0, "frac_below_0.1": 0.0, "frac_above_0.9": 0.0, "histogram": [0] * (BINS - 1) + [2],
              "channel_mean": [0.4, 0.6], "channel_std": [0.0, 0.0], "class_mean": [[0.4, 0.6], None],
              "class_selectivity": [0.0, 0.0], "sources": ["current"]}
    data = {"inputs": ["x.png"], "models": {"m": {"class_names": ["a", "b"], "modules": [module]}}, "errors": []}
    path = tmp_path / "attention.json"
    path.write_text(json.dumps(data))
    return path


ATTENTION_CASES = {
    "partial JSON": (lambda text: text[: len(text) // 2], "not valid JSON"),
    "nested JSON": (lambda text: '{"models": {"m": ' + deep(100_000) + "}}", "JSON nested too deeply"),
    "no models key": (lambda text: '{"inputs": "x"}', "models: Field required"),
    "models nested wrongly": (lambda text: '{"models": {"m": [[[]]]}}', "models.m: Input should be a valid dictionary"),
    "one mean per channel": (lambda text: text.replace('"channel_mean": [0.4, 0.6]', '"channel_mean": [0.4]'),
                             "models.m.modules.0: 1 values in channel_mean for 2 channels"),
    "scale out of range": (lambda text: text.replace('"mean": 0.5', '"mean": 7'),
                           "models.m.modules.0.mean: Input should be less than or equal to 1"),
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_from_bad_json_is_one_line(case, tmp_path, capsys):
    from emca_vis.attention.__main__ import main

    path = _attention_json(tmp_path)
    change, expected = ATTENTION_CASES[case]
    path.write_text(change(path.read_text()))
    rc, out, err = cli(main, ["--from", path, "--out", tmp_path / "figs"], capsys)
    assert rc == 2 and not out
    one_error(err, f"{path}: {expected}")


def test_attention_from_good_json_draws_and_special_files_are_refused(tmp_path, capsys):
    from emca_vis.attention.__main__ import main

    path = _attention_json(tmp_path)
    rc, out, err = cli(main, ["--from", path, "--out", tmp_path / "figs"], capsys)
    assert rc == 0 and "scaling.png" in out, err
    with no_hang():
        rc, _, err = cli(main, ["--from", fifo(tmp_path / "pipe.json"), "--out", tmp_path / "figs"], capsys)
    assert rc == 2
    one_error(err, "pipe.json: is a FIFO (named pipe), not a regular file")
    big = tmp_path / "big.json"
    with open(big, "wb") as handle:
        handle.truncate(300 << 20)
    rc, _, err = cli(main, ["--from", big, "--out", tmp_path / "figs"], capsys)
    assert rc == 2
    one_error(err, "big.json: 314,572,800 bytes is over the 268,435,456-byte limit")


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory):
    """A small report computed once (one model, one corruption, few images)."""
    from emca_vis.report.__main__ import main

    out = tmp_path_factory.mktemp("report")
    argv = ["--checkpoint", str(demo_dir() / "resnet18_eca.safetensors"), "--out", str(out), "--n-clean", "8",
            "--n", "8", "--corruptions", "fog", "--severities", "1", "--n-explain", "4", "--no-faithfulness",
            "--samples", "1", "--grid-corruptions", "fog", "--grid-severities", "1", "--n-attention", "8",
            "--repeats", "1", "--throughput-batch", "2", "--batch-size", "8"]
    assert run_cli(main, argv) == 0
    return out


REPORT_CASES = {
    "partial JSON": (lambda text: text[: len(text) // 2], "not valid JSON"),
    "nested JSON": (lambda text: '{"title": "t", "models": ' + deep(100_000) + "}", "JSON nested too deeply"),
    "sections missing": (lambda text: '{"title": "t", "models": []}', "created: Field required"),
    "robustness of the wrong shape": (
        lambda text: json.dumps({**json.loads(text), "robustness": {"models": {"x": 1}}}),
        "robustness.models.x: Input should be a valid dictionary"),
    "figure outside the folder": (
        lambda text: json.dumps({**json.loads(text), "figures": {"mce": "../../../etc/passwd"}}),
        "figures.mce: Value error, figure path '../../../etc/passwd' is not a relative path inside"),
    "model row of the wrong type": (
        lambda text: json.dumps({**json.loads(text), "models": [{"label": ["x"]}]}),
        "models.0.label: Input should be a valid string"),
}


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_report_from_bad_json_is_one_line(case, report_folder, tmp_path, capsys):
    from emca_vis.report.__main__ import main

    folder = tmp_path / "copy"
    folder.mkdir()
    change, expected = REPORT_CASES[case]
    (folder / "report.json").write_text(change((report_folder / "report.json").read_text()))
    rc, out, err = cli(main, ["--from", folder], capsys)
    assert rc == 2 and not out
    one_error(err, f"{folder / 'report.json'}: {expected.replace('Value error, ', '')}")


def test_report_from_special_files(report_folder, tmp_path, capsys):
    from emca_vis.report.__main__ import main

    rc, out, err = cli(main, ["--from", report_folder, "--out", tmp_path / "again"], capsys)
    assert rc == 0 and (tmp_path / "again" / "report.html").exists(), err
    folder = tmp_path / "fifo-figures"
    shutil.copytree(report_folder, folder)
    for png in (folder / "figures").glob("*.png"):  # every figure a FIFO: the first one read is refused
        png.unlink()
        fifo(png)
    with no_hang():
        rc, out, err = cli(main, ["--from", folder], capsys)
    assert rc == 2
    one_error(err, f"{folder / 'figures'}/", ".png: is a FIFO (named pipe), not a regular file")
    pipe = tmp_path / "pipe-json"
    pipe.mkdir()
    fifo(pipe / "report.json")
    with no_hang():
        rc, out, err = cli(main, ["--from", pipe], capsys)
    assert rc == 2
    one_error(err, f"{pipe / 'report.json'}: is a FIFO (named pipe), not a regular file")


# ------------------------------------------------------------------------------------------------
# images: the same pixels as ever for ordinary shapes, bounded work for extreme ones


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (300, 300), (1000, 250), (250, 1000), (100, 37)])
def test_preprocessing_of_ordinary_images_is_unchanged(size):
    from torchvision.transforms import v2 as T

    from emca_vis.data import eval_transform

    image = Image.fromarray(np.random.default_rng(sum(size)).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    # the transform emca-vis used before bounding the work, written out in full
    reference = T.Compose([T.ToImage(), T.Resize(256, antialias=True), T.CenterCrop(224),
                           T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    assert torch.equal(eval_transform(224, 256, mean, std)(image), reference(image))


@pytest.mark.parametrize("size", [(2000, 100), (100, 2000), (1300, 300), (5000, 60)])
def test_preprocessing_of_long_images_matches_to_one_grey_level(size):
    from torchvision.transforms import v2 as T

    from emca_vis.data import eval_pixels

    image = Image.fromarray(np.random.default_rng(sum(size)).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))
    reference = T.Compose([T.ToImage(), T.Resize(256, antialias=True), T.CenterCrop(224),
                           T.ToDtype(torch.float32, scale=True)])(image)
    bounded = eval_pixels(224, 256)(image)
    assert bounded.shape == reference.shape == (3, 224, 224)
    assert (bounded - reference).abs().max() <= 1 / 255 + 1e-6  # PIL and torch round differently
    assert (bounded - reference).abs().mean() < 0.5 / 255


def test_uploads_over_the_byte_limit_are_refused():
    from emca_vis import interactive as iv

    with pytest.raises(UserError, match=r"big.png: 20,971,521 bytes is over the 20,971,520-byte upload limit"):
        iv.upload_image("big.png", b"\x89PNG" + b"\0" * (20 * 2**20 - 3))


# ------------------------------------------------------------------------------------------------
# cases that hang or exhaust memory when broken: subprocesses, all started at once

LONG_IMAGES = """
import resource, sys, json
from pathlib import Path
from PIL import Image
import emca_vis.gradcam, emca_vis.attention.__main__, emca_vis.interactive as iv
from emca_vis.errors import run_cli
folder = Path(sys.argv[1])
Image.new("RGB", (1, 1_000_000), (200, 30, 30)).save(folder / "tall.png")
Image.new("RGB", (2_000_000, 1), (30, 30, 200)).save(folder / "wide.png")
with open("/proc/self/statm") as f:
    virtual = int(f.read().split()[0]) * resource.getpagesize()
limit = virtual + (3 << 30)  # a 12 GB allocation fails here instead of taking the machine
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rc = [run_cli(emca_vis.gradcam.main, ["--image", str(folder / "tall.png"), "--image", str(folder / "wide.png"),
                                      "--method", "gradcam", "--out", str(folder / "g" / "g.png")]),
      run_cli(emca_vis.attention.__main__.main, ["--image", str(folder / "tall.png"), "--image",
                                                 str(folder / "wide.png"), "--out", str(folder / "att")])]
upload = iv.upload_image("strip.png", (folder / "tall.png").read_bytes())
loaded = iv.load_model(iv.demo_dir() / "resnet18.safetensors")
views = iv.explain(loaded, upload)["views"]
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"rc": rc, "grown_mb": grown, "views": len(views)}))
"""


def _fifo_cases(folder: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (command, fragments the one error line must hold); FIFOs named like real inputs."""
    good = str(demo_checkpoints()[0])
    fifo(folder / "x.safetensors")
    fifo(folder / "x.png")
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(folder / "ok.png")
    data = folder / "data"  # an image-folder dataset whose classes are the model's, one image a FIFO
    two = save_checkpoint(folder / "ab.safetensors", create_model("resnet18", num_classes=2, width=0.0625,
                          stem="cifar"), class_names=["a", "b"], input_size=32, resize=32)
    for name in ("a", "b"):
        (data / "val" / name).mkdir(parents=True)
        Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(data / "val" / name / "1.png")
    fifo(data / "val" / "b" / "2.png")
    app = folder / "app"
    app.mkdir()
    fifo(app / "hang.safetensors")
    (app / "ok.safetensors").write_bytes(Path(good).read_bytes())
    python = [sys.executable, "-m"]
    x, png = str(folder / "x.safetensors"), str(folder / "x.png")
    return {
        "checkpoint": (python + ["emca_vis.checkpoint", good, x], [f"{x}: is a FIFO (named pipe)"]),
        "gradcam": (python + ["emca_vis.gradcam", "--image", png, "--image", str(folder / "ok.png"), "--method",
                              "gradcam", "--checkpoint", good, "--out", str(folder / "g" / "g.png")],
                    [f"{png}: is a FIFO (named pipe)"]),
        "robustness": (python + ["emca_vis.robustness", "--checkpoint", x, good, "--corruptions", "fog",
                                 "--severities", "1", "--n", "4", "--batch-size", "4", "--out",
                                 str(folder / "r" / "r.json")], [f"{x}: is a FIFO (named pipe)"]),
        "attention": (python + ["emca_vis.attention", "--checkpoint", good, "--image", png, "--image",
                                str(folder / "ok.png"), "--out", str(folder / "att")], [f"{png}: is a FIFO"]),
        "dataset file": (python + ["emca_vis.robustness", "--checkpoint", str(two), "--data", f"folder:{data}",
                                   "--split", "val", "--corruptions", "fog", "--severities", "1", "--n", "4",
                                   "--out", str(folder / "rd" / "r.json")],
                         [f"{data / 'val' / 'b' / '2.png'}: is a FIFO (named pipe)"]),
        "app folder": ([sys.executable, "-c", "import sys, emca_vis.interactive as iv; "
                        "print(sorted(iv.checkpoint_options(sys.argv[1])))", str(app)], []),
    }


@pytest.fixture(scope="module")
def slow_cases(tmp_path_factory):
    """Start every subprocess case at once; ``result(name)`` waits for one."""
    folder = tmp_path_factory.mktemp("special")
    cases = _fifo_cases(folder)
    cases["long images"] = ([sys.executable, "-c", textwrap.dedent(LONG_IMAGES), str(folder)], [])
    running = {name: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
               for name, (command, _) in cases.items()}
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT  # one deadline for all: they run side by side
    finished = {}

    def result(name: str):
        if name not in finished:
            process = running[name]
            try:
                out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
                err += "\n(hung: killed after the timeout)"
            finished[name] = (process.returncode, out, err, cases[name][1])
        return finished[name]

    yield result
    for process in running.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("name", ["checkpoint", "gradcam", "robustness", "attention", "dataset file"])
def test_fifo_named_as_an_input_is_refused(name, slow_cases):
    rc, out, err, fragments = slow_cases(name)
    assert rc == 2, err
    one_error(err, *fragments)
    if name in ("checkpoint", "robustness"):  # the good checkpoint was still checked / scored
        assert "resnet18" in out
    if name in ("gradcam", "attention"):
        assert "wrote" in out


def test_fifo_in_a_checkpoint_folder_does_not_hang_the_app(slow_cases):
    rc, out, err, _ = slow_cases("app folder")
    assert rc == 0 and out.strip() == "['resnet18']", err


def test_extreme_aspect_ratios_cost_what_the_model_input_costs(slow_cases):
    rc, out, err, _ = slow_cases("long images")
    assert rc == 0, err[-2000:]
    result = json.loads(out.splitlines()[-1])
    assert result["rc"] == [0, 0] and result["views"] == 1
    assert result["grown_mb"] < 1000, result
