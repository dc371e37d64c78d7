import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from emca_vis.robustness.cdata import CDataError, load

TO_TENSOR = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])


def test_imagenet_c_layout_is_read_in_the_models_class_order(tmp_path):
    shades = {"n02": 50, "n01": 100, "n03": 200}
    for wnid, shade in shades.items():
        folder = tmp_path / "fog" / "3" / wnid
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (shade,) * 3).save(folder / "x.png")
    model_classes = ["n02", "n01", "n03"]  # not the sorted folder order
    dataset = load(f"imagenet-c:{tmp_path}", "fog", 3, TO_TENSOR, model_classes)
    seen = {label: round(float(image[0, 0, 0]) * 255) for image, label in dataset}
    assert seen == {0: 50, 1: 100, 2: 200}
    with pytest.raises(CDataError, match=r"no folder .*fog/4; expected .*/<corruption>/<severity>/<class>/<image>"):
        load(f"imagenet-c:{tmp_path}", "fog", 4, TO_TENSOR, model_classes)
    with pytest.raises(CDataError, match="3 class folders are not the model's 2 classes"):
        load(f"imagenet-c:{tmp_path}", "fog", 3, TO_TENSOR, ["n01", "n02"])


def test_cifar_c_arrays_are_sliced_by_severity(tmp_path):
    images = np.zeros((5 * 4, 32, 32, 3), np.uint8)
    for severity in range(5):
        images[severity * 4:(severity + 1) * 4] = 10 * (severity + 1)
    np.save(tmp_path / "snow.npy", images)
    np.save(tmp_path / "labels.npy", np.tile(np.arange(4), 5))
    classes = [str(i) for i in range(10)]
    dataset = load(f"cifar10-c:{tmp_path}", "snow", 3, TO_TENSOR, classes)
    assert len(dataset) == 4
    image, label = dataset[2]
    assert image.shape == (3, 32, 32) and round(float(image.max()) * 255) == 30 and label == 2
    with pytest.raises(CDataError, match="has 10 classes but the model has 100"):
        load(f"cifar10-c:{tmp_path}", "snow", 1, TO_TENSOR, [str(i) for i in range(100)])
    with pytest.raises(CDataError, match=r"no file .*fog.npy"):
        load(f"cifar10-c:{tmp_path}", "fog", 1, TO_TENSOR, classes)
    np.save(tmp_path / "fog.npy", np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(CDataError, match=r"expected uint8 images \[5 x N, 32, 32, 3\], found uint8 \[20, 32, 32\]"):
        load(f"cifar10-c:{tmp_path}", "fog", 1, TO_TENSOR, classes)
    with pytest.raises(CDataError, match="unknown corrupted dataset 'cifar-c:x'"):
        load("cifar-c:x", "fog", 1, TO_TENSOR, classes)
