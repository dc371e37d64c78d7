import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emca_vis.checkpoint import load_checkpoint
from emca_vis.data import DatasetError, build_dataset
from emca_vis.data.shapes import render_sample
from emca_vis.demo import DEMO_TRAIN_ARGS
from emca_vis.errors import run_cli
from emca_vis.train import build_parser, main, train
from emca_vis.training.data_order import GlobalBatchSampler
from emca_vis.training.optim import lr_factor

TINY = ["--width", "0.125", "--image-size", "32", "--workers", "0", "--val-size", "64", "--batch-size", "16"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args, check=True, **kwargs):
    result = subprocess.run([sys.executable, "-m", "emca_vis.train", *map(str, args)], capture_output=True,
                            text=True, env=ENV, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def weights(path):
    return load_file(str(path))


def test_training_lowers_loss_and_lifts_accuracy_above_chance(tmp_path):
    args = build_parser().parse_args(["--model", "resnet18_emca_eca", "--epochs", "2", "--train-size", "6400",
                                      "--out", str(tmp_path), *TINY, "--stem", "cifar", "--batch-size", "64",
                                      *DEMO_TRAIN_ARGS[DEMO_TRAIN_ARGS.index("--optimizer"):], "--workers", "0",
                                      "--val-size", "256"])
    train(args)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [100, 200]
    assert rows[1]["train_loss"] < rows[0]["train_loss"] - 0.1
    assert rows[1]["val_top1"] > 2 * 100 / 12  # chance is 8.3%; this run reaches about 25% (32 px)
    model, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert meta["dataset"] == "shapes" and meta["input_size"] == 32 and len(meta["class_names"]) == 12
    assert meta["metrics"]["val_top1"] == pytest.approx(max(r["val_top1"] for r in rows))
    assert meta["model_kwargs"]["stem"] == "cifar" and meta["train_args"]["epochs"] == 2
    assert (tmp_path / "metrics.csv").read_text().startswith("epoch,step,lr,train_loss")


def test_global_batch_sampler_chunks_match_across_process_counts():
    one = list(GlobalBatchSampler(64, 4, world=1, rank=0, accum=2, seed=3))
    two = [list(GlobalBatchSampler(64, 4, world=2, rank=r, accum=1, seed=3)) for r in range(2)]
    assert one[0::2] == two[0] and one[1::2] == two[1]
    assert sorted(i for batch in one for i in batch) == list(range(64))
    resumed = GlobalBatchSampler(64, 4, world=1, rank=0, accum=2, seed=3)
    resumed.start_step = 3
    assert list(resumed) == one[6:]


def test_schedules():
    assert lr_factor(0, 100, 10, "cosine", [], 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine", [], 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine", [], 0.1) == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "step", [30, 60], 0.1) == pytest.approx(0.01)


def test_two_process_ddp_equals_one_process_with_same_global_batch(tmp_path, cli):
    common = ["--model", "resnet18_emca_se", "--epochs", "1", "--train-size", "128", "--deterministic", *TINY,
              "--batch-size", "8"]
    assert cli(main, *common, "--accum-steps", "2", "--out", tmp_path / "one").returncode == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "emca_vis.train", *common, "--out", str(tmp_path / "two")]
    result = subprocess.run(torchrun, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = weights(tmp_path / "one" / "last.safetensors"), weights(tmp_path / "two" / "last.safetensors")
    params = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for key in params:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    start = load_checkpoint(tmp_path / "one" / "resume" / "step-000000008-evaluated" / "model.safetensors")[0].state_dict()
    assert torch.equal(start["fc.weight"], a["fc.weight"])  # the last state is the final one


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, cli):
    # All three runs on one thread, so that they are bitwise comparable; the killed one is forked
    # from this process (a second torch import costs more than the run) and killed from outside.
    torch.set_num_threads(1)
    common = ["--model", "resnet18_emca_eca", "--epochs", "2", "--train-size", "512", "--deterministic", *TINY,
              "--image-size", "16"]
    assert cli(main, *common, "--out", tmp_path / "straight").returncode == 0
    out = tmp_path / "killed"
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            run_cli(main, [*map(str, common), "--out", str(out), "--checkpoint-every", "5"])
        finally:
            os._exit(3)
    deadline = time.time() + 120
    while not (out / "resume" / "step-000000010").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    states = sorted(p.name for p in (out / "resume").glob("step-*"))
    assert states and states[-1] < "step-000000032"  # killed before the end of the first epoch
    result = cli(main, *common, "--out", out, "--checkpoint-every", "5", "--resume")
    assert result.returncode == 0 and "resumed from" in result.stdout
    a, b = weights(tmp_path / "straight" / "last.safetensors"), weights(out / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_corrupt_last_state_falls_back_then_refuses(tmp_path, cli):
    common = ["--model", "resnet18_eca", "--epochs", "1", "--train-size", "96", *TINY, "--image-size", "16"]
    assert cli(main, *common, "--out", tmp_path, "--checkpoint-every", "2").returncode == 0
    states = sorted((tmp_path / "resume").glob("step-*"))
    assert [s.name for s in states] == ["step-000000006", "step-000000006-evaluated"]
    newest = states[-1] / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    result = cli(main, *common[:3], "2", *common[4:], "--out", tmp_path, "--resume")
    assert result.returncode == 0, result.stderr
    assert "resume state" in result.stderr and "step-000000006-evaluated is unusable" in result.stderr
    assert "resumed from" in result.stdout and "step-000000006 (epoch 1, step 6, trained)" in result.stdout
    for state in sorted((tmp_path / "resume").glob("step-*")):
        (state / "state.pt").write_bytes(b"garbage")
    result = cli(main, *common, "--out", tmp_path, "--resume")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --resume: every saved state")
    assert len(list((tmp_path / "resume").glob("step-*"))) == 2  # none usable: none removed
    empty = cli(main, *common, "--out", tmp_path / "none", "--resume")
    assert empty.returncode == 2 and "no saved state" in empty.stderr


def test_dataset_errors_are_clear(tmp_path, cli):
    cases = {
        "imagenet:/no/such": "imagenet: expected class-per-subfolder images in /no/such/train",
        "cifar10:/no/such": "cifar10: expected /no/such/cifar-10-batches-py",
        "cifar100:/no/such": "cifar100: expected /no/such/cifar-100-python",
        "mnist:/x": "unknown dataset 'mnist:/x'",
        "folder:": "needs a path",
    }
    errors = {}
    for spec, message in cases.items():
        with pytest.raises(DatasetError, match=message) as error:
            build_dataset(spec)
        errors[spec] = f"error: {error.value}"
        result = cli(main, "--model", "resnet18", "--data", spec, "--out", tmp_path)
        assert result.returncode == 2 and result.stderr.strip() == errors[spec]
        assert "Traceback" not in result.stderr
    # once more as a process: the exit status and the one line a shell sees
    result = run("--model", "resnet18", "--data", "mnist:/x", "--out", tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.strip() == errors["mnist:/x"]


def write_images(folder: Path, n: int, split: str, flat_names: bool = False):
    rows = []
    for i in range(n):
        sample = render_sample(0, split, i, 32)
        name = f"img{i:03d}"
        target = folder if flat_names else folder / f"c{sample.label:02d}"
        target.mkdir(parents=True, exist_ok=True)
        sample.image.save(target / (f"{name}.JPEG" if flat_names else f"{name}.png"))
        rows.append((name, f"c{sample.label:02d}"))
    return rows


def test_folder_and_flat_imagenet_val_layouts(tmp_path, cli):
    write_images(tmp_path / "train", 48, "train")
    write_images(tmp_path / "val", 24, "val")
    dataset, info = build_dataset(f"folder:{tmp_path}", "val", image_size=48)
    image, label = dataset[0]
    assert image.shape == (3, 48, 48) and info.resize == 55 and info.class_names[0] == "c00"
    assert cli(main, "--model", "resnet18", "--data", f"folder:{tmp_path}", "--epochs", "1", "--out", tmp_path / "run",
               *TINY).returncode == 0
    _, meta = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert meta["dataset"] == f"folder:{tmp_path}" and meta["class_names"] == list(info.class_names)

    flat = tmp_path / "inet"
    write_images(flat / "train", 24, "train")
    rows = write_images(flat / "val", 10, "val", flat_names=True)
    (flat / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(
        f"{name},{wnid} 1 2 3 4\n" for name, wnid in rows))
    val, info = build_dataset(f"imagenet:{flat}", "val", image_size=32)
    assert len(val) == 10 and [info.class_names[label] for _, label in val.samples] == [w for _, w in rows]
    assert val[3][0].shape == (3, 32, 32)
