"""``python -m emca_vis.robustness generate``: the -C layouts read back, resuming after a kill, bad options."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emca_vis.data import SHAPE_CLASSES, build_dataset, eval_pixels
from emca_vis.errors import run_cli
from emca_vis.robustness import cdata
from emca_vis.robustness.corruptions import corrupt
from emca_vis.robustness.generate import main

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--data", "shapes", "--split", "val", "--image-size", "32", "--n", "12", "--batch-size", "5"]  # all 12 classes


def shapes(n: int = 12):
    dataset, info = build_dataset("shapes", "val", image_size=32, train=False)
    dataset.transform = eval_pixels(info.input_size, info.resize)
    images, labels = zip(*[dataset[i] for i in range(n)])
    return torch.stack(images), list(labels)


def test_imagenet_c_layout_reads_back_as_corrupted_on_the_fly(tmp_path, capsys):
    assert main([*BASE, "--out", str(tmp_path), "--corruptions", "contrast", "gaussian_noise",
                 "--severities", "1", "3"]) == 0
    assert "wrote 48 corrupted images (0 already there)" in capsys.readouterr().out
    images, labels = shapes()
    for name in ("contrast", "gaussian_noise"):
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["1", "3"]
        read = cdata.load(f"imagenet-c:{tmp_path}", name, 3, eval_pixels(32, 32), list(SHAPE_CLASSES))
        assert len(read) == 12
        by_name = {Path(path).name: i for i, (path, _) in enumerate(read.samples)}
        # batches of 5 with the seed of evaluation's batch index: the same noise, then JPEG at quality 85
        expected = torch.cat([corrupt(images[a:a + 5], name, 3, seed=a // 5) for a in range(0, 12, 5)])
        other = corrupt(images, name, 3, seed=99)  # other noise
        for i in range(12):
            image, label = read[by_name[f"val_{i:08d}.JPEG"]]
            assert label == labels[i]
            error = float((image - expected[i]).abs().mean())
            if name == "contrast":
                assert error < 0.03, (name, i, error)  # the JPEG round trip only
            else:  # JPEG smooths much of the noise away, but it is this noise and not another draw
                assert error < 0.75 * float((image - other[i]).abs().mean()), (name, i, error)
    # a re-run writes nothing
    assert main([*BASE, "--out", str(tmp_path), "--corruptions", "contrast", "gaussian_noise",
                 "--severities", "1", "3"]) == 0
    assert "wrote 0 corrupted images (48 already there)" in capsys.readouterr().out


def test_cifar_c_layout(tmp_path):
    assert main([*BASE, "--out", str(tmp_path), "--corruptions", "fog", "--format", "cifar-c"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fog.npy", "labels.npy"]  # the parts are gone
    images, labels = shapes()
    stacked = np.load(tmp_path / "fog.npy")
    assert stacked.shape == (60, 32, 32, 3) and stacked.dtype == np.uint8
    assert np.load(tmp_path / "labels.npy").tolist() == labels * 5
    for severity in (1, 5):
        expected = torch.cat([corrupt(images[a:a + 5], "fog", severity, seed=a // 5) for a in range(0, 12, 5)])
        block = torch.from_numpy(stacked[(severity - 1) * 12:severity * 12]).permute(0, 3, 1, 2).float() / 255
        assert (block - expected).abs().max() <= 0.5 / 255 + 1e-6  # no JPEG here: rounding only
    # CIFAR-100-C's reader (100 classes; the 12 shapes fit) reads severity 5 back
    read = cdata.load(f"cifar100-c:{tmp_path}", "fog", 5, lambda x: x.float() / 255, [f"c{i}" for i in range(100)])
    assert len(read) == 12 and read[3][1] == labels[3]


@pytest.mark.parametrize("options, message", [
    (["--corruptions", "rain"], "unknown corruption 'rain'"),
    (["--severities", "6"], "unknown severity 6"),
    (["--format", "cifar-c", "--severities", "1", "2"], "--format cifar-c: needs all five severities"),
    (["--format", "cifar-c", "--image-size", "64"], "--format cifar-c: images are 32 px (got --image-size 64)"),
    (["--format", "tiff"], "argument --format: invalid choice: 'tiff'"),
    (["--n", "0"], "argument --n/--num-images"),
])
def test_bad_options_are_one_line(tmp_path, capsys, options, message):
    argv = ["--data", "shapes", "--split", "val", "--out", str(tmp_path / "c"), *options]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert run_cli(main, [*BASE, "--out", str(tmp_path / "f")]) == 2
    assert f"--out {tmp_path / 'f'}: is a file, not a folder" in capsys.readouterr().err


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# The generating process, SIGKILLed while it writes its 11th file (half of it in the temporary file):
# a fixed point, where a timed kill depended on the machine's speed.
_KILLED_MID_WRITE = """
import os, signal, sys, tempfile
from emca_vis.robustness import generate
writes = []
real = generate._replace
def replace(path, data):
    writes.append(path)
    if len(writes) == 11:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.write(fd, data[:len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
generate._replace = replace
sys.exit(generate.main(sys.argv[1:]))
"""


def test_killed_run_resumes_to_the_same_files(tmp_path):
    options = ["--data", "shapes", "--split", "val", "--image-size", "32", "--n", "24", "--batch-size", "2",
               "--corruptions", "shot_noise", "glass_blur", "--severities", "2", "5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    process = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, *options, "--out", str(killed)], env=env,
                             capture_output=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert len(list(killed.rglob("*.JPEG"))) == 10 and len(list(killed.rglob(".*.tmp"))) == 1
    resumed = subprocess.run([sys.executable, "-m", "emca_vis.robustness", "generate", *options, "--out", str(killed)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "wrote 86 corrupted images (10 already there)" in resumed.stdout, resumed.stdout
    whole = tmp_path / "whole"
    assert main([*options, "--out", str(whole)]) == 0
    files = _files(killed)
    assert not [name for name in files if name.endswith(".tmp")]
    assert len(files) == 96 and files == _files(whole)


class _NoProcessGroup:
    """torch.distributed as generate uses it, for ranks run one after the other in this process."""

    @staticmethod
    def barrier():
        pass

    @staticmethod
    def all_reduce(tensor):
        pass

    @staticmethod
    def destroy_process_group():
        pass


@pytest.mark.parametrize("layout", ["imagenet-c", "cifar-c"])
def test_ranks_write_their_shares_of_the_single_process_files(tmp_path, monkeypatch, layout):
    from emca_vis.robustness import generate

    argv = [*BASE, "--corruptions", "impulse_noise", "--format", layout]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    monkeypatch.setattr(generate, "dist", _NoProcessGroup)
    for rank in (1, 0):  # rank 0 last: it stacks the CIFAR-C parts after the barrier
        monkeypatch.setattr(generate, "_distributed", lambda rank=rank: (rank, 2))
        assert main([*argv, "--out", str(tmp_path / "two")]) == 0
        if rank == 1 and layout == "imagenet-c":  # batches 1 of 0, 1, 2: images 5-9
            written = sorted(p.name for p in (tmp_path / "two").rglob("*.JPEG"))
            assert written == sorted(f"val_{i:08d}.JPEG" for i in range(5, 10) for _ in range(5))  # x 5 severities
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
