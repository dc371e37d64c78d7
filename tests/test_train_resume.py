"""Training killed (SIGKILL) at each point of a run, then resumed, ends exactly as a run never
stopped: final and best weights bitwise equal, the same metrics rows. And the training options
are checked when parsed, ``--resume`` against the saved run's, each failure one line.

The kills use the fault hook of ``emca_vis.training.faults``: ``EMCA_VIS_FAULT=<point>:<n>``
makes the process SIGKILL itself the n-th time it passes the point; ``write:<file>`` kills it
halfway through writing that file (written, not yet renamed into place). The killed runs are forked
from this process (no second torch import, which costs more than the tiny runs themselves);
each resume runs here, like the uninterrupted reference, on one thread so all are bitwise
comparable.
"""

import csv
import json
import os
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file

from emca_vis.checkpoint import read_metadata
from emca_vis.errors import run_cli
from emca_vis.train import main

# 2 epochs of 4 steps, a resume state every 2 steps: mid-epoch states (steps 2, 6), trained but
# unevaluated ones (4, 8) and evaluated ones (4, 8); validation in two batches.
RUN = ["--model", "resnet18_emca_eca", "--width", "0.125", "--image-size", "16", "--epochs", "2", "--train-size",
       "32", "--val-size", "16", "--batch-size", "8", "--workers", "0", "--seed", "5", "--deterministic"]
WALL_CLOCK = ("epoch_seconds", "train_images_per_second")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread (bitwise equal runs; forking is safe with no thread pool) and the global torch
    settings the runs change, restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def train(out, *extra):
    assert run_cli(main, [*RUN, "--out", str(out), *extra]) == 0


def kill_on_rename_to(name: str) -> None:
    """SIGKILL this process when a file is about to be renamed to ``name`` (atomic writes rename last)."""
    rename = os.replace

    def replace(source, target, *args, **kwargs):
        if os.path.basename(target) == name:
            os.kill(os.getpid(), signal.SIGKILL)
        return rename(source, target, *args, **kwargs)

    os.replace = replace


def killed(out, fault: str, *extra):
    """Train in a forked child that SIGKILLs itself at ``fault``; fails if it ends any other way."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            if fault.startswith("write:"):
                kill_on_rename_to(fault.removeprefix("write:"))
            else:
                os.environ["EMCA_VIS_FAULT"] = fault
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            run_cli(main, [*RUN, "--out", str(out), *extra])
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{fault}: never reached ({status})"


def changed(option: str, value: str) -> list[str]:
    args = list(RUN)
    args[args.index(option) + 1] = value
    return args


def timeless(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in WALL_CLOCK}


def rows(out):
    return [timeless(json.loads(line)) for line in (out / "metrics.jsonl").read_text().splitlines()]


def csv_rows(out):
    with open(out / "metrics.csv", newline="") as f:
        return [timeless(row) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    train(out, "--checkpoint-every", "2")
    assert [r["epoch"] for r in rows(out)] == [1, 2]
    # best must be another epoch than last, or the test could not tell them apart (hence seed 5)
    assert read_metadata(out / "best.safetensors")["metrics"]["epoch"] == 1
    return out


def assert_same_run(out, reference):
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(str(reference / name)), load_file(str(out / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs"
        assert timeless(read_metadata(out / name)["metrics"]) == timeless(read_metadata(reference / name)["metrics"])
    assert rows(out) == rows(reference)
    assert csv_rows(out) == csv_rows(reference) and len(csv_rows(out)) == 2
    assert not list(out.glob(".*.tmp")) and not list((out / "resume").glob(".tmp-*"))


# Each case is a chain: the first run is killed at the first point, each resume at the next, and
# a last resume finishes. Comments: where each kill lands.
KILLS = {
    "mid-epoch, validation, last epoch's validation": (
        ["step:3",  # after step 3: resumes from the mid-epoch state of step 2 with its running sums
         "val:1",  # during epoch 1's validation: resumes from step 4, trained but not evaluated
         "val:3"],  # evaluates epoch 1 again, trains epoch 2, killed during its (the last) validation
        ["--checkpoint-every", "2"]),
    "during state saves, between state and metrics": (
        ["state:2",  # halfway through saving step 4's state (written, not yet renamed into place)
         "state:2",  # from step 2: halfway through saving the evaluated state of epoch 1
         "saved:1"],  # from step 4: epoch 1's evaluated state saved, its metrics row not yet written
        ["--checkpoint-every", "2"]),
    "between last and best, between metrics and last": (
        ["last:1",  # epoch 1 (the best): last written, best not yet
         "metrics:2"],  # rewrites epoch 1's files, then after epoch 2's metrics, before its last
        ["--checkpoint-every", "2"]),
    "halfway through writing last, then best": (
        ["write:last.safetensors",  # epoch 1's last written to its temporary file, not renamed
         "write:best.safetensors"],  # rewrites epoch 1's files: best written, not renamed
        []),
    "only epoch-end states: last epoch's validation, mid-epoch": (
        ["val:3",  # during epoch 2's validation; the newest state is epoch 1's
         "step:2"],  # epoch 2 again from its start, killed after its second step
        []),
}


@pytest.mark.parametrize("case", list(KILLS))
def test_killed_anywhere_then_resumed_equals_uninterrupted_run(case, reference, tmp_path, capsys):
    faults, extra = KILLS[case]
    out = tmp_path / "run"
    for i, fault in enumerate(faults):
        killed(out, fault, *extra, *(["--resume"] if i else []))
    train(out, *extra, "--resume")
    assert "resumed from" in capsys.readouterr().out
    assert_same_run(out, reference)


def one_line_error(capsys, *argv) -> str:
    assert run_cli(main, list(map(str, argv))) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "must be at least 1 (got 0)"),
    ("--accum-steps", "0", "must be at least 1 (got 0)"),
    ("--val-size", "0", "must be at least 1 (got 0)"),
    ("--train-size", "-5", "must be at least 1 (got -5)"),
    ("--epochs", "1e3", "not an integer: '1e3'"),
    ("--epochs", "10000000", "must be at most 1,000,000 (got 10,000,000)"),
    ("--checkpoint-every", "-1", "must be at least 0 (got -1)"),
    ("--workers", "-2", "must be at least 0 (got -2)"),
    ("--image-size", "4", "must be at least 8 (got 4)"),
    ("--lr", "nan", "must be a finite number (got nan)"),
    ("--lr", "0", "must be above 0 (got 0)"),
    ("--width", "5", "must be above 0 and at most 4 (got 5)"),
    ("--label-smoothing", "1.5", "must be between 0 and 1 (got 1.5)"),
    ("--emca-stages", "2", "must be 0 or 1 or all (got '2')"),
])
def test_options_are_checked_when_parsed(option, value, message, capsys):
    assert one_line_error(capsys, "--model", "resnet18", option, value) == f"error: argument {option}: {message}"



def test_missing_model_is_one_line(capsys):
    assert one_line_error(capsys, "--epochs", "2") == "error: --model: required (unless --eval-only)"


def test_resume_refuses_other_settings_and_fresh_runs_refuse_a_used_out(reference, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    folder = out / "resume" / "step-000000008-evaluated"
    for option, value, saved in [("--width", "0.25", "0.125"), ("--model", "resnet18_eca", "resnet18_emca_eca"),
                                 ("--batch-size", "4", "8"), ("--seed", "1", "5")]:
        args = changed(option, value) if option in RUN else [*RUN, option, value]
        error = one_line_error(capsys, *args, "--out", out, "--resume")
        assert error == (f"error: --resume: {option} {value} does not match the saved run's {saved} ({folder}); "
                         "resume with the saved settings or train into another --out")
    assert one_line_error(capsys, *changed("--epochs", "1"), "--out", out, "--resume") == (
        f"error: --resume: --epochs 1 is fewer than the 2 the saved run has reached ({folder})")
    assert one_line_error(capsys, *RUN, "--out", out) == (
        f"error: --out {out}: holds the states of an earlier run; continue it with --resume, or train into "
        "another --out")
    train(out, "--resume")  # a finished run resumed: its files rewritten from the last state, unchanged
    assert_same_run(out, reference)
