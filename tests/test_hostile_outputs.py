"""Hostile outputs and options: ``--out`` in impossible places, out-of-range options, layers that
cannot carry a CAM, a full disk while writing, two robustness runs on one ``--out``.

Each case ends in one ``error:`` line naming the option or file (exit code 2), no traceback,
and nothing computed or written; or, where the run goes on, the other work done and the
previous results intact. Where a check must come before loading anything, the run names a
checkpoint that does not exist: an error about it would mean the check came too late.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from emca_vis.data.shapes import render_sample
from emca_vis.demo import demo_checkpoints
from emca_vis.errors import UserError, run_cli
from emca_vis.models import create_model

from .test_hostile_inputs import cli, errors_of, one_error
from .test_models import randomise

MISSING = "missing.safetensors"  # named where the --out check must come first


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders): "nothing written" is equality.
    Lock files are left out: taking the lock comes before reading what is at ``--out``."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))
            if p.suffix != ".lock"}


def _main(name: str):
    if name == "gradcam":
        from emca_vis.gradcam import main
    elif name == "gradcam evaluate":
        from emca_vis.explain.evaluate import main
    elif name == "robustness":
        from emca_vis.robustness.evaluate import main
    elif name == "attention":
        from emca_vis.attention.__main__ import main
    elif name == "report":
        from emca_vis.report.__main__ import main
    elif name == "profile":
        from emca_vis.profile import main
    else:
        from emca_vis.checkpoint.__main__ import main
    return main


@pytest.fixture()
def place(tmp_path):
    """A folder holding a file ``afile``, a folder ``adir`` and an image ``x.png``."""
    (tmp_path / "afile").write_text("keep me\n")
    (tmp_path / "adir").mkdir()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(tmp_path / "x.png")
    return tmp_path


def _readonly_folder(tmp_path: Path) -> Path | None:
    """A folder no file can be created in: a chmod 555 folder, or (as root, who ignores modes) /sys."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / ".probe").touch()
        except OSError:
            return candidate
        (candidate / ".probe").unlink()
    return None


# ------------------------------------------------------------------------------------------------
# --out checked before anything is loaded or computed

def _out_cases() -> dict[str, tuple[str, list[str], str]]:
    """case -> (tool, argv with {p} for the test folder, expected fragment of the line)."""
    ckpt = ["--checkpoint", "{p}/" + MISSING]
    return {
        "robustness: a folder": ("robustness", [*ckpt, "--out", "{p}/adir"],
                                 "--out {p}/adir: is a folder; give a file"),
        "robustness: under a file": ("robustness", [*ckpt, "--out", "{p}/afile/r.json"],
                                     "--out {p}/afile/r.json: {p}/afile is a file, not a folder"),
        "robustness: under a file, deeper": ("robustness", [*ckpt, "--out", "{p}/afile/a/b/r.json"],
                                             "{p}/afile is a file, not a folder"),
        "robustness: a FIFO": ("robustness", [*ckpt, "--out", "{p}/pipe.json"],
                               "--out {p}/pipe.json: is a FIFO (named pipe)"),
        "robustness: its csv is a folder": ("robustness", [*ckpt, "--out", "{p}/rc.json"],
                                            "--out {p}/rc.json: {p}/rc.csv is a folder"),
        "gradcam: a folder": ("gradcam", ["--image", "{p}/x.png", *ckpt, "--out", "{p}/adir"],
                              "--out {p}/adir: is a folder; give a file"),
        "gradcam: its json is a folder": ("gradcam", ["--image", "{p}/x.png", *ckpt, "--out", "{p}/gj.png"],
                                          "--out {p}/gj.png: {p}/gj.json is a folder"),
        "gradcam: under a file": ("gradcam", ["--image", "{p}/x.png", *ckpt, "--out", "{p}/afile/g.png"],
                                  "{p}/afile is a file, not a folder"),
        "gradcam: unknown figure format": ("gradcam", ["--image", "{p}/x.png", *ckpt, "--out", "{p}/g.pngg"],
                                           "--out {p}/g.pngg: unknown figure format 'pngg'; use one of"),
        "gradcam evaluate: a file": ("gradcam evaluate", [*ckpt, "--out", "{p}/afile"],
                                     "--out {p}/afile: is a file, not a folder"),
        "gradcam evaluate: scores.json a folder": ("gradcam evaluate", [*ckpt, "--out", "{p}/ev"],
                                                   "--out {p}/ev: {p}/ev/scores.json is a folder"),
        "attention: a file": ("attention", [*ckpt, "--out", "{p}/afile"], "--out {p}/afile: is a file, not a folder"),
        "attention --from: under a file": ("attention", ["--from", "{p}/missing.json", "--out", "{p}/afile/att"],
                                           "{p}/afile is a file, not a folder"),
        "report: a file": ("report", [*ckpt, "--out", "{p}/afile"], "--out {p}/afile: is a file, not a folder"),
        "report: figures is a file": ("report", [*ckpt, "--out", "{p}/rep"], "--out {p}/rep/figures: is a file"),
        "report --from: a file": ("report", ["--from", "{p}/adir", "--out", "{p}/afile"],
                                  "--out {p}/afile: is a file, not a folder"),
        "profile --json: a folder": ("profile", ["--models", "no_such_model", "--json", "{p}/adir"],
                                     "--json {p}/adir: is a folder; give a file"),
        "profile --json: under a file": ("profile", ["--models", "no_such_model", "--json", "{p}/afile/p.json"],
                                         "{p}/afile is a file, not a folder"),
    }


OUT_CASES = _out_cases()


@pytest.mark.parametrize("case", list(OUT_CASES))
def test_bad_out_is_one_line_before_anything_runs(case, place, capsys):
    tool, argv, expected = OUT_CASES[case]
    os.mkfifo(place / "pipe.json")
    (place / "rc.csv").mkdir()
    (place / "gj.json").mkdir()
    (place / "ev" / "scores.json").mkdir(parents=True)
    (place / "rep").mkdir()
    (place / "rep" / "figures").write_text("not a folder")
    before = tree(place)
    rc, out, err = cli(_main(tool), [a.format(p=place) for a in argv], capsys)
    assert rc == 2
    one_error(err, expected.format(p=place))
    assert MISSING not in err and "no_such_model" not in err  # nothing was loaded before the check
    assert tree(place) == before


@pytest.mark.parametrize("tool", ["robustness", "gradcam", "attention", "gradcam evaluate"])
def test_out_in_a_read_only_folder(tool, place, capsys):
    folder = _readonly_folder(place)
    if folder is None:
        pytest.skip("no read-only folder available")
    try:
        name = {"robustness": "r.json", "gradcam": "g.png"}.get(tool, "sub")
        argv = {"gradcam": ["--image", place / "x.png"]}.get(tool, [])
        rc, _, err = cli(_main(tool), [*argv, "--checkpoint", place / MISSING, "--out", folder / name], capsys)
        assert rc == 2
        one_error(err, f"--out {folder / name}: folder {folder} is not writable")
        assert not (folder / name).exists()
    finally:
        (place / "ro").chmod(0o755)


# ------------------------------------------------------------------------------------------------
# options checked while parsing

OPTION_CASES = {
    "robustness --n 0": ("robustness", ["--n", "0"], "argument --n/--num-images: must be at least 1 (got 0)"),
    "robustness --num-images -5": ("robustness", ["--num-images", "-5"], "must be at least 1 (got -5)"),
    "robustness --batch-size -1": ("robustness", ["--batch-size", "-1"], "argument --batch-size: must be at least 1"),
    "robustness --batch-size x": ("robustness", ["--batch-size", "x"], "argument --batch-size: not an integer: 'x'"),
    "robustness --seed -1": ("robustness", ["--seed", "-1"], "argument --seed: must be at least 0"),
    "robustness --resamples -1": ("robustness", ["--resamples", "-1"], "argument --resamples: must be at least 0"),
    "robustness --severities 0": ("robustness", ["--severities", "0"], "unknown severity 0"),
    "profile --batch-sizes 0": ("profile", ["--batch-sizes", "4", "0"], "argument --batch-sizes: must be at least 1"),
    "profile --repeats 0": ("profile", ["--repeats", "0"], "argument --repeats: must be at least 1 (got 0)"),
    "profile --warmup -1": ("profile", ["--warmup", "-1"], "argument --warmup: must be at least 0"),
    "profile --image-size 100000": ("profile", ["--image-size", "100000"],
                                    "argument --image-size: must be at most 2,048"),
    "gradcam --top-k 0": ("gradcam", ["--image", "x.png", "--top-k", "0"], "argument --top-k: must be at least 1"),
    "gradcam evaluate --n 0": ("gradcam evaluate", ["--n", "0"], "argument --n: must be at least 1"),
    "gradcam evaluate --batch-size 0": ("gradcam evaluate", ["--batch-size", "0"], "argument --batch-size: must be"),
    "gradcam evaluate --steps 0": ("gradcam evaluate", ["--steps", "0"], "argument --steps: must be at least 1"),
    "attention --n 0": ("attention", ["--n", "0"], "argument --n: must be at least 1"),
    "attention --batch-size 0": ("attention", ["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    "attention --stage 0": ("attention", ["--stage", "0"], "argument --stage: must be at least 1"),
    "report --n 0": ("report", ["--n", "0"], "argument --n: must be at least 1"),
    "report --repeats 0": ("report", ["--repeats", "0"], "argument --repeats: must be at least 1"),
    "report --resamples 0": ("report", ["--resamples", "0"], "argument --resamples: must be at least 1"),
    "report --samples -1": ("report", ["--samples", "-1"], "argument --samples: must be at least 0"),
    "report --batch-size 1.5": ("report", ["--batch-size", "1.5"], "argument --batch-size: not an integer: '1.5'"),
    "checkpoint without files": ("checkpoint", [], "the following arguments are required: paths"),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_option_is_one_line_at_parse_time(case, tmp_path, capsys):
    tool, argv, expected = OPTION_CASES[case]
    if tool in ("robustness", "gradcam", "gradcam evaluate", "attention", "report"):
        argv = [*argv, "--checkpoint", str(tmp_path / MISSING), "--out", str(tmp_path / "out" / "o.png")]
    elif tool == "profile":
        argv = [*argv, "--models", "no_such_model", "--json", str(tmp_path / "p.json")]
    rc, out, err = cli(_main(tool), argv, capsys)
    assert rc == 2 and out == ""
    one_error(err, expected)
    assert MISSING not in err and "usage:" not in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# --layer must carry a CAM

LAYER_CASES = {
    "fc: a 2-D output": ("fc", "--layer fc: the layer gives a 2-D output [1, "),
    "bn1: changed in place by the ReLU": ("bn1", "--layer bn1: the layer has its output changed in place"),
    "a block's bn2: changed in place by the addition": ("layer4.1.bn2", "--layer layer4.1.bn2: the layer has its"),
    "empty: the whole model": ("", "--layer : the layer gives a 2-D output"),
    "unknown": ("layer9", "no layer 'layer9' in the model"),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
@pytest.mark.parametrize("method", ["gradcam", "eigencam", "layercam"])
def test_layer_that_cannot_carry_a_cam_is_one_line_before_any_heatmap(case, method, place, capsys):
    from emca_vis.gradcam import main

    layer, expected = LAYER_CASES[case]
    out = place / "g" / "g.png"
    rc, _, err = cli(main, ["--image", place / "x.png", "--checkpoint", demo_checkpoints()[0], "--method", method,
                            "--layer", layer, "--out", out], capsys)
    assert rc == 2
    line = one_error(err, expected)
    if case != "unknown":
        assert "use a stage (layer1, layer2, layer3, layer4)" in line
    assert not out.parent.exists()


def test_layer_is_checked_in_gradcam_evaluate_too(tmp_path, capsys):
    from emca_vis.explain.evaluate import main

    rc, _, err = cli(main, ["--checkpoint", demo_checkpoints()[0], "--layer", "fc", "--n", "4", "--method", "gradcam",
                            "--out", tmp_path / "ev"], capsys)
    assert rc == 2
    one_error(err, "--layer fc: the layer gives a 2-D output")
    assert not (tmp_path / "ev").exists()


def test_layer_that_works_gives_maps(place, capsys):
    """relu (the output bn1 feeds in place) and a block's conv carry a CAM."""
    from emca_vis.gradcam import main

    for layer in ("relu", "layer4.1.conv2"):
        out = place / layer / "g.png"
        rc, _, err = cli(main, ["--image", place / "x.png", "--checkpoint", demo_checkpoints()[0], "--method",
                                "gradcam", "--layer", layer, "--out", out], capsys)
        assert rc == 0, err
        maps = np.load(out.with_suffix(".npz"))
        assert len(maps.files) == 1 and 0 <= maps[maps.files[0]].min() <= maps[maps.files[0]].max() <= 1


# ------------------------------------------------------------------------------------------------
# gradcam evaluate: a checkpoint of other classes is one line, the others are scored

def test_evaluate_scores_the_other_checkpoints_when_one_has_other_classes(tmp_path, capsys):
    from emca_vis.checkpoint import save_checkpoint
    from emca_vis.explain.evaluate import main

    model = randomise(create_model("resnet18", num_classes=3, width=0.0625, stem="cifar"))
    other = tmp_path / "abc.safetensors"
    save_checkpoint(other, model, class_names=["a", "b", "c"], input_size=32)
    good = demo_checkpoints()[0]
    out = tmp_path / "ev"
    rc, stdout, err = cli(main, ["--checkpoint", other, good, "--n", "8", "--method", "gradcam", "--out", out], capsys)
    assert rc == 2
    one_error(err, f"{other}: the model has no class")
    scores = json.loads((out / "scores.json").read_text())
    assert [(row["model"], row["n"]) for row in scores["rows"]] == [("resnet18", 8)]
    assert len(scores["errors"]) == 1 and str(other) in scores["errors"][0]
    assert (out / "scores.csv").read_text().splitlines()[1].startswith("resnet18,gradcam,8,")
    rc, _, err = cli(main, ["--checkpoint", other, "--n", "8", "--method", "gradcam", "--out", tmp_path / "e2"],
                     capsys)
    assert rc == 2 and len(errors_of(err)) == 2 and "none of the checkpoints could be scored" in err
    assert not (tmp_path / "e2").exists()


# ------------------------------------------------------------------------------------------------
# atomic writes: a failing write leaves the previous file

@pytest.fixture()
def full_disk(monkeypatch):
    """Make every fsync of a file being written atomically fail with ENOSPC, as on a full disk."""
    real = os.fsync

    def fsync(fd):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("writer", ["json", "text", "csv", "npz", "figure"])
def test_a_full_disk_leaves_the_previous_file(writer, tmp_path, full_disk):
    import matplotlib.pyplot as plt

    from emca_vis import outputs

    path = tmp_path / {"json": "r.json", "text": "r.md", "csv": "r.csv", "npz": "r.npz", "figure": "r.png"}[writer]
    path.write_bytes(b"previous, valid contents\n")
    fig = plt.figure()
    write = {"json": lambda: outputs.write_json(path, {"a": 1}), "text": lambda: outputs.write_text(path, "x"),
             "csv": lambda: outputs.write_csv(path, [[1, 2]]),
             "npz": lambda: outputs.write_npz(path, {"a": np.zeros(3)}),
             "figure": lambda: outputs.save_figure(fig, path)}[writer]
    with pytest.raises(UserError) as error:
        write()
    plt.close(fig)
    assert str(error.value) == f"{path}: could not be written (No space left on device); any previous file is unchanged"
    assert path.read_bytes() == b"previous, valid contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_a_failing_figure_leaves_the_previous_one_and_no_temporary_file(tmp_path):
    import matplotlib.pyplot as plt

    from emca_vis.outputs import save_figure

    path = tmp_path / "f.png"
    path.write_bytes(b"old figure")
    fig = plt.figure()
    with pytest.raises(TypeError):
        save_figure(fig, path, no_such_option=1)
    plt.close(fig)
    assert path.read_bytes() == b"old figure" and [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_atomic_outputs_have_ordinary_permissions(tmp_path):
    from emca_vis.outputs import write_json

    plain = tmp_path / "plain"
    plain.write_text("")
    assert (write_json(tmp_path / "a.json", [1]).stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


ROBUSTNESS = ["--corruptions", "fog", "--severities", "1", "--n", "4", "--batch-size", "4"]


def test_robustness_on_a_full_disk_keeps_the_previous_results(tmp_path, capsys, monkeypatch):
    from emca_vis.robustness.evaluate import main

    out = tmp_path / "r.json"
    argv = ["--checkpoint", demo_checkpoints()[0], *ROBUSTNESS, "--out", out]
    assert cli(main, argv, capsys)[0] == 0
    before = out.read_bytes()
    json.loads(before)
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rc, _, err = cli(main, [*argv[:2], "--corruptions", "fog", "contrast", *ROBUSTNESS[2:], "--out", out], capsys)
    assert rc == 2
    one_error(err, f"{out}: could not be written (No space left on device); any previous file is unchanged")
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------
# robustness: one run at a time on an --out, and no silent replacement of other settings

def test_a_second_robustness_run_on_the_same_out_is_refused(tmp_path, capsys):
    from emca_vis.robustness.evaluate import main

    out = tmp_path / "r.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                               "print('locked', flush=True); time.sleep(120)", f"{out}.lock"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, _, err = cli(main, ["--checkpoint", tmp_path / MISSING, *ROBUSTNESS, "--out", out], capsys)
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2
    one_error(err, f"--out {out}: another run is writing it (its lock {out}.lock is held)")
    assert MISSING not in err and sorted(p.name for p in tmp_path.iterdir()) == ["r.json.lock"]
    # the lock dies with its holder: the next run goes
    rc, _, err = cli(main, ["--checkpoint", demo_checkpoints()[0], *ROBUSTNESS, "--out", out], capsys)
    assert rc == 0, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished robustness run (resnet18, fog 1, 4 images): its folder, to copy per case."""
    from emca_vis.robustness.evaluate import main

    folder = tmp_path_factory.mktemp("finished")
    assert run_cli(main, ["--checkpoint", str(demo_checkpoints()[0]), *ROBUSTNESS, "--out",
                          str(folder / "r.json")]) == 0
    return folder


def _copy_run(source: Path, target: Path) -> Path:
    for name in ("r.json", "r.csv", "r.cells.jsonl"):
        (target / name).write_bytes((source / name).read_bytes())
    return target / "r.json"


SETTING_CASES = {
    "another seed": (["--seed", "1"], "holds results with seed 0, this run has 1"),
    "another n": (["--n", "8"], "holds results with n 4, this run has 8"),
    "another backend": (["--backend", "reference"], "holds results with backend torch, this run has reference"),
    "another split": (["--split", "val"], "holds results with split test, this run has val"),
    "a corruption left out": (["--corruptions", "contrast"],
                              "holds results for corruption fog, which this run leaves out"),
    "a severity left out": (["--severities", "2"], "holds results for severity 1, which this run leaves out"),
    "a model left out": (["--checkpoint", "{other}"], "holds results for model resnet18, which this run leaves out"),
    "another file behind the label": (["--checkpoint", "{copy}"], "holds results of resnet18 from "),
}


@pytest.mark.parametrize("case", list(SETTING_CASES))
def test_results_of_other_settings_are_not_replaced_silently(case, finished_run, tmp_path, capsys):
    from emca_vis.robustness.evaluate import main

    out = _copy_run(finished_run, tmp_path)
    copy = tmp_path / "copy" / "resnet18.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(Path(demo_checkpoints()[0]).read_bytes())
    (option, value), expected = SETTING_CASES[case]
    options = {"--checkpoint": demo_checkpoints()[0], "--corruptions": "fog", "--severities": "1", "--n": "4",
               "--batch-size": "4", "--out": out, option: value.format(other=demo_checkpoints()[1], copy=copy)}
    argv = [item for pair in options.items() for item in pair]
    before = tree(tmp_path)
    rc, _, err = cli(main, argv, capsys)
    assert rc == 2
    one_error(err, f"--out {out}: {expected}", "give --overwrite to replace them")
    assert tree(tmp_path) == before
    rc, _, err = cli(main, [*argv, "--overwrite"], capsys)
    assert rc == 0, err
    assert json.loads(out.read_text()) != json.loads((finished_run / "r.json").read_text())


def test_same_settings_resume_and_more_corruptions_extend(finished_run, tmp_path, capsys):
    from emca_vis.robustness.evaluate import main

    out = _copy_run(finished_run, tmp_path)
    cells = out.with_suffix(".cells.jsonl")
    lines = cells.read_text().splitlines()
    argv = ["--checkpoint", demo_checkpoints()[0], *ROBUSTNESS, "--out", out]
    rc, _, err = cli(main, argv, capsys)
    assert rc == 0 and not errors_of(err)
    assert cells.read_text().splitlines() == lines  # nothing recomputed
    assert json.loads(out.read_text()) == json.loads((finished_run / "r.json").read_text())
    rc, _, err = cli(main, [*argv, "--corruptions", "fog", "contrast"], capsys)
    assert rc == 0, err
    assert cells.read_text().splitlines()[:2] == lines and len(cells.read_text().splitlines()) == 3
    assert list(json.loads(out.read_text())["models"]["resnet18"]["errors"]) == ["fog", "contrast"]


def test_unfinished_run_of_other_settings_is_not_mixed_in(finished_run, tmp_path, capsys):
    from emca_vis.robustness.evaluate import main

    out = _copy_run(finished_run, tmp_path)
    out.unlink()  # killed before its results were written: the cells tell its settings
    out.with_suffix(".csv").unlink()
    before = tree(tmp_path)
    argv = ["--checkpoint", demo_checkpoints()[0], *ROBUSTNESS, "--out", out]
    rc, _, err = cli(main, [*argv, "--seed", "7"], capsys)
    assert rc == 2
    one_error(err, f"--out {out}: its unfinished run in r.cells.jsonl has seed 0, this run has 7",
              "give --overwrite to replace its cells")
    assert tree(tmp_path) == before
    rc, _, err = cli(main, argv, capsys)  # the same settings: resumed from its cells
    assert rc == 0 and out.exists()


def test_out_that_is_not_robustness_results_is_not_replaced(tmp_path, capsys):
    from emca_vis.robustness.evaluate import main

    out = tmp_path / "notes.json"
    out.write_text('{"my": "notes"}\n')
    rc, _, err = cli(main, ["--checkpoint", demo_checkpoints()[0], *ROBUSTNESS, "--out", out], capsys)
    assert rc == 2
    one_error(err, f"--out {out}: exists and is not usable robustness results", "give --overwrite")
    assert out.read_text() == '{"my": "notes"}\n'
