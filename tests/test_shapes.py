import numpy as np
import pytest
from PIL import Image

from emca_vis.data.shapes import (
    SHAPE_CLASSES,
    SPLIT_SIZES,
    ShapesDataset,
    ShapeSample,
    render_sample,
)


def pixels(sample: ShapeSample) -> np.ndarray:
    return np.asarray(sample.image)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_class_list():
    assert len(SHAPE_CLASSES) >= 10
    assert len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES)
    assert ShapesDataset("val").classes == list(SHAPE_CLASSES)


def test_same_arguments_give_identical_samples():
    for index in (0, 7, 123):
        a = render_sample(3, "train", index)
        b = render_sample(3, "train", index)
        assert np.array_equal(pixels(a), pixels(b))
        assert a.label == b.label and a.box == b.box
        assert np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("other", [(4, "train"), (3, "val"), (3, "test")])
def test_other_seed_or_split_gives_other_images(other):
    seed, split = other
    for index in range(5):
        reference = pixels(render_sample(3, "train", index))
        assert not np.array_equal(reference, pixels(render_sample(seed, split, index)))


@pytest.mark.parametrize("index", range(24))
def test_mask_matches_drawn_shape(index):
    cluttered = render_sample(1, "test", index)
    flat = render_sample(1, "test", index, clutter=False)
    assert np.array_equal(cluttered.mask, flat.mask)
    assert cluttered.box == flat.box

    # On the flat background, a pixel is object where it is closer to the
    # object colour than to the background, i.e. coverage above one half.
    image = pixels(flat).astype(int)
    difference = np.abs(image - image[0, 0]).sum(axis=2)  # corner is background
    drawn = difference > difference.max() / 2
    iou = (drawn & flat.mask).sum() / (drawn | flat.mask).sum()
    assert iou > 0.9

    assert cluttered.box == mask_box(cluttered.mask)
    assert 0.03 <= cluttered.mask.mean() <= 0.6


def test_object_keeps_contrast_in_clutter():
    for index in range(24):
        sample = render_sample(2, "val", index)
        image = pixels(sample).astype(float)
        inside = image[sample.mask].mean(axis=0)
        x0, y0, x1, y1 = sample.box
        ring = np.zeros_like(sample.mask)
        ring[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = True
        around = image[ring & ~sample.mask].mean(axis=0)
        assert np.linalg.norm(inside - around) > 20


def test_labels_balanced_and_all_classes_present():
    dataset = ShapesDataset("val", length=240)
    labels = [dataset[i][1] for i in range(len(dataset))]
    counts = np.bincount(labels, minlength=len(SHAPE_CLASSES))
    assert len(counts) == len(SHAPE_CLASSES)
    assert (counts == len(dataset) // len(SHAPE_CLASSES)).all()


@pytest.mark.parametrize("size", [32, 64, 224])
def test_images_are_rgb_of_requested_size(size):
    dataset = ShapesDataset("train", image_size=size, length=3)
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert isinstance(image, Image.Image)
        assert image.mode == "RGB" and image.size == (size, size)
        sample = dataset.sample(i)
        assert sample.label == label
        assert sample.mask.shape == (size, size) and sample.mask.dtype == bool
        assert sample.box == mask_box(sample.mask)


def test_dataset_defaults_and_transform():
    assert len(ShapesDataset("train")) == SPLIT_SIZES["train"]
    assert len(ShapesDataset("test")) == SPLIT_SIZES["test"]
    dataset = ShapesDataset("test", length=4, transform=lambda im: np.asarray(im).shape)
    assert dataset[2] == ((64, 64, 3), 2)
    assert np.array_equal(np.asarray(dataset.sample(2).image), pixels(render_sample(0, "test", 2)))
    with pytest.raises(IndexError):
        dataset[4]


def test_unknown_split_names_valid_ones():
    for make in (lambda: ShapesDataset("validation"), lambda: render_sample(0, "dev", 0)):
        with pytest.raises(ValueError) as error:
            make()
        for split in SPLIT_SIZES:
            assert split in str(error.value)
