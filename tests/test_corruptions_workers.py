"""The torch backend's CPU worker processes: the output does not depend on how the batch is split."""

import pytest
import torch

from emca_vis.robustness import workers
from emca_vis.robustness.corruptions import corrupt


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
