"""The torch backend's CPU worker processes: the output does not depend on how the batch is split."""

import os
import signal

import pytest
import torch

from emca_vis.robustness import workers
from emca_vis.robustness.corruptions import TORCH_CORRUPTIONS, corrupt


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["shot_noise", "fog", "glass_blur", "pixelate", "zoom_blur"])
@pytest.mark.parametrize("shape", [(5, 3, 224, 96), (16, 3, 112, 112)])  # big enough for workers
def test_workers_give_the_single_process_output(name, shape, threads):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(1)
    alone = corrupt(images, name, 3, seed=4)
    torch.set_num_threads(2)  # 2 worker processes, parts of 1 image (224 x 96) or 2 (112 px)
    assert torch.equal(corrupt(images, name, 3, seed=4), alone)
    assert torch.get_num_threads() == 2
    # an image's noise is its own: the first images of a batch as a batch of their own
    assert torch.equal(corrupt(images[:2], name, 3, seed=4), alone[:2])
    assert not torch.equal(corrupt(images, name, 3, seed=5), alone) or name in ("pixelate", "zoom_blur")  # not random


def test_workers_grow_their_shared_buffer(threads):
    torch.set_num_threads(2)
    small = torch.rand(2, 3, 16, 16)
    big = torch.rand(4, 3, 40, 40)
    for images in (small, big, small):
        out = workers.run("contrast", images, 2, [1] * len(images), 2)
        assert torch.allclose(out, corrupt(images, "contrast", 2), atol=0)


def _fails_on_image_7(images, severity, streams):
    if 7 in streams.seeds:
        raise ValueError("no corruption for image 7")
    return images


def _dies_on_image_7(images, severity, streams):
    if 7 in streams.seeds:
        os.kill(os.getpid(), signal.SIGKILL)
    return images


@pytest.mark.parametrize("corruption, error", [(_fails_on_image_7, "ValueError: no corruption for image 7"),
                                               (_dies_on_image_7, "WorkerError: a corruption worker process ended")])
def test_a_failed_worker_is_an_error_and_the_next_batch_runs(monkeypatch, corruption, error):
    workers.close()
    monkeypatch.setitem(TORCH_CORRUPTIONS, "failing", corruption)  # before the workers fork
    images = torch.rand(16, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with pytest.raises(Exception) as caught:
        workers.run("failing", images, 1, list(range(16)), 3)
    assert f"{type(caught.value).__name__}: {caught.value}".startswith(error)
    monkeypatch.setitem(TORCH_CORRUPTIONS, "failing", lambda x, s, st: x)  # fresh workers fork with it
    assert torch.equal(workers.run("failing", images, 1, list(range(16)), 3), images)
    out = workers.run("contrast", images, 2, [1] * 16, 3)  # every part done once
    assert torch.equal(out, TORCH_CORRUPTIONS["contrast"](images, 2, None))
    workers.close()  # no worker keeps this test's corruption
