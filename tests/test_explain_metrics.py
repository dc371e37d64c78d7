"""Known-answer tests for emca_vis.explain.metrics (tiny inputs: 8-16 px images, toy models)."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from emca_vis.explain.metrics import (boxes_to_masks, deletion_insertion, energy_pointing_game, pointing_game,
                                      read_voc_boxes, road, summarize)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------------------------------------
# boxes_to_masks


def test_boxes_to_masks_union_and_clipping():
    masks = boxes_to_masks([[(0, 0, 4, 2), (2, 0, 6, 3)],   # overlapping: 8 + 12 - 4 (overlap x 2..4, y 0..2)
                            [(-3, -3, 2, 2), (6, 7, 20, 20)],  # clipped: 2x2 corner + 2x1 strip
                            [(10, 10, 12, 12), (3, 3, 3, 5)],  # outside the image / empty
                            []], height=8, width=8)
    assert masks.shape == (4, 8, 8) and masks.dtype == bool
    assert masks.sum(axis=(1, 2)).tolist() == [16, 6, 0, 0]
    assert masks[0, 2, 2:6].all() and not masks[0, 2, :2].any() and not masks[0, 3].any()
    assert masks[1, :2, :2].all() and masks[1, 7, 6:].all()


# ---------------------------------------------------------------------------------------------
# pointing game


def _peak(row: int, col: int, size: int = 16) -> np.ndarray:
    heatmap = np.full((size, size), 0.1)
    heatmap[row, col] = 1.0
    return heatmap


def test_pointing_game_hit_miss_and_tolerance():
    mask = boxes_to_masks([[(0, 2, 5, 8)]], 16, 16)[0]        # columns 0..4, rows 2..7
    inside, outside = _peak(5, 3), _peak(5, 7)                 # 'outside' is 3 px right of column 4
    maps, masks = np.stack([inside, outside]), np.stack([mask, mask])
    assert pointing_game(maps, masks, tolerance=0).tolist() == [True, False]   # 0 and 1: on the mask itself
    assert pointing_game(maps, masks, tolerance=1).tolist() == [True, False]
    assert pointing_game(maps, masks, tolerance=3).tolist() == [True, False]   # TorchRay: distance < tolerance
    assert pointing_game(maps, masks, tolerance=3.01).tolist() == [True, True]
    assert pointing_game(maps, masks, tolerance=5).tolist() == [True, True]


def test_pointing_game_tolerance_is_a_disc_not_a_square():
    mask = boxes_to_masks([[(0, 0, 4, 4)]], 16, 16)             # corner pixel (3, 3)
    diagonal = _peak(6, 6)[None]                                # 3 px right, 3 px down: distance 4.24
    assert not pointing_game(diagonal, mask, tolerance=4)[0]
    assert pointing_game(diagonal, mask, tolerance=4.25)[0]     # a square of half-side 4 would hit at 4 already


def test_pointing_game_ties_use_the_first_maximum_in_row_major_order():
    heatmap = np.zeros((1, 8, 8))
    heatmap[0, 1, 6] = heatmap[0, 6, 1] = 1.0                   # (1, 6) comes first
    top_right = boxes_to_masks([[(5, 0, 8, 3)]], 8, 8)
    bottom_left = boxes_to_masks([[(0, 5, 3, 8)]], 8, 8)
    assert pointing_game(heatmap, top_right, tolerance=0)[0]
    assert not pointing_game(heatmap, bottom_left, tolerance=0)[0]


def test_pointing_game_rejects_empty_masks_and_bad_shapes():
    maps = np.stack([_peak(1, 1), _peak(2, 2)])
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 1, 1] = True
    with pytest.raises(ValueError, match="image 1: empty mask"):
        pointing_game(maps, masks)
    with pytest.raises(ValueError, match="shape"):
        pointing_game(maps, masks[:1])


# ---------------------------------------------------------------------------------------------
# energy-based pointing game


def test_energy_pointing_game_known_values():
    mask = boxes_to_masks([[(2, 3, 6, 5)]], 8, 8)[0]            # 4 wide x 2 high = 8 pixels
    uniform = np.full((8, 8), 0.7)
    concentrated = np.where(mask, 0.3, 0.0)
    zero = np.zeros((8, 8))
    scores = energy_pointing_game(np.stack([uniform, concentrated, zero]), np.stack([mask] * 3))
    assert scores.dtype == np.float64 and scores.shape == (3,)
    assert scores[0] == pytest.approx(8 / 64, abs=1e-12)
    assert scores[1] == pytest.approx(1.0, abs=1e-12)
    assert scores[2] == 0.0


# ---------------------------------------------------------------------------------------------
# deletion / insertion


class RegionModel(torch.nn.Module):
    """Two classes; class-1 logit = ``scale *`` (channel-mean of the image summed over ``region``) ``+ bias``."""

    def __init__(self, region: tuple[slice, slice], scale: float = 1.0, bias: float = 0.0):
        super().__init__()
        self.region, self.scale, self.bias = region, scale, bias

    def forward(self, x):
        rows, cols = self.region
        logit = self.scale * x[:, :, rows, cols].mean(dim=1).sum(dim=(1, 2)) + self.bias
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def test_deletion_insertion_known_curve_with_zero_substrate():
    # 4x4 ones image; class-1 logit = number of region pixels still present (region = top-left 2x2)
    model = RegionModel((slice(0, 2), slice(0, 2)))
    images = torch.ones(2, 3, 4, 4)
    good = np.zeros((4, 4))
    good[:2, :2] = 1.0                                      # ranks the region first
    bad = 1.0 - good                                         # ranks the region last
    out = deletion_insertion(model, images, np.stack([good, bad]), [1, 1], steps=2, substrate="zero")
    s4, half = sigmoid(4.0), 0.5
    # steps=2 on 16 pixels: 0, 8, 16 pixels taken
    np.testing.assert_allclose(out["deletion_curve"], [[s4, half, half], [s4, s4, half]], atol=1e-6)
    np.testing.assert_allclose(out["insertion_curve"], [[half, s4, s4], [half, half, s4]], atol=1e-6)
    np.testing.assert_allclose(out["deletion_auc"], [(s4 + half) / 4 + half / 2, s4 / 2 + (s4 + half) / 4],
                               atol=1e-6)
    np.testing.assert_allclose(out["insertion_auc"], [(half + s4) / 4 + s4 / 2, half / 2 + (half + s4) / 4],
                               atol=1e-6)


def test_deletion_insertion_prefers_the_heatmap_that_ranks_the_evidence_first():
    torch.manual_seed(0)
    region = (slice(4, 8), slice(4, 8))
    model = RegionModel(region, scale=0.25, bias=-8.0)  # clean logit ~ 4
    images = 0.1 * torch.randn(2, 3, 16, 16)
    images[:, :, region[0], region[1]] += 3.0                # bright evidence in a 4x4 block
    good = np.random.default_rng(0).uniform(0, 0.5, (16, 16))
    good[region] += 1.0
    bad = good.max() - good
    maps = np.stack([good, bad])
    out = deletion_insertion(model, images, maps, torch.tensor([1, 1]), steps=8, batch_size=64)
    assert out["deletion_curve"].shape == out["insertion_curve"].shape == (2, 9)
    assert out["deletion_auc"].shape == out["insertion_auc"].shape == (2,)
    assert out["deletion_auc"][0] < out["deletion_auc"][1] - 0.05
    assert out["insertion_auc"][0] > out["insertion_auc"][1] + 0.05

    with torch.no_grad():
        clean = torch.softmax(model(images), dim=1)[:, 1].double().numpy()
    np.testing.assert_allclose(out["deletion_curve"][:, 0], clean, rtol=1e-6)
    np.testing.assert_allclose(out["insertion_curve"][:, -1], clean, rtol=1e-6)
    # both curves end/start at the same fully blurred substrate
    np.testing.assert_allclose(out["deletion_curve"][:, -1], out["insertion_curve"][:, 0], rtol=1e-6)
    # chunking does not change the answer
    chunked = deletion_insertion(model, images, maps, [1, 1], steps=8, batch_size=5)
    for key in out:
        np.testing.assert_allclose(chunked[key], out[key], rtol=1e-6)


def test_deletion_insertion_ties_break_in_row_major_order():
    # a constant heatmap removes pixels row by row from the top, so the top-left region goes first
    model = RegionModel((slice(0, 2), slice(0, 4)))
    out = deletion_insertion(model, torch.ones(1, 3, 4, 4), np.ones((1, 4, 4)), [1], steps=2, substrate="zero")
    np.testing.assert_allclose(out["deletion_curve"][0], [sigmoid(8.0), 0.5, 0.5], atol=1e-6)


def test_deletion_insertion_rejects_bad_arguments():
    model = RegionModel((slice(0, 2), slice(0, 2)))
    images, maps = torch.ones(1, 3, 4, 4), np.ones((1, 4, 4))
    with pytest.raises(ValueError, match="substrate"):
        deletion_insertion(model, images, maps, [1], substrate="noise")
    with pytest.raises(ValueError, match="shape"):
        deletion_insertion(model, images, np.ones((1, 5, 4)), [1])
    with pytest.raises(ValueError, match="target"):
        deletion_insertion(model, images, maps, [1, 0])


# ---------------------------------------------------------------------------------------------
# ROAD


def test_road_gives_finite_per_image_scores():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    images = torch.randn(2, 3, 16, 16)
    maps = np.random.default_rng(0).uniform(0, 1, (2, 16, 16))
    scores = road(model, images, maps, [0, 2], percentiles=(20, 50, 80))
    assert set(scores) == {"road_morf", "road_lerf"}
    for value in scores.values():
        assert value.shape == (2,) and np.isfinite(value).all()
        assert (np.abs(value) <= 1).all()                     # differences of probabilities


# ---------------------------------------------------------------------------------------------
# summarize


def test_summarize_wilson_interval_for_hits():
    result = summarize(np.array([True] * 8 + [False] * 2), proportion=True)
    z, n, p = stats.norm.ppf(0.975), 10, 0.8
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert result["n"] == 10 and result["mean"] == pytest.approx(0.8)
    assert result["ci_low"] == pytest.approx(centre - half) and result["ci_high"] == pytest.approx(centre + half)
    assert result["ci_low"] == pytest.approx(0.490, abs=1e-3) and result["ci_high"] == pytest.approx(0.943, abs=1e-3)
    assert summarize([1, 1, 1], proportion=True)["ci_high"] == 1.0


def test_summarize_t_interval_and_json():
    result = summarize([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)        # sample sd of [1, 2, 3] is 1
    assert result == pytest.approx({"n": 3, "mean": 2.0, "ci_low": 2 - half, "ci_high": 2 + half})
    assert json.loads(json.dumps(result)) == result
    assert all(type(result[k]) is float for k in ("mean", "ci_low", "ci_high")) and type(result["n"]) is int
    assert summarize(np.array([0.25])) == {"n": 1, "mean": 0.25, "ci_low": 0.25, "ci_high": 0.25}
    with pytest.raises(ValueError):
        summarize([])


# ---------------------------------------------------------------------------------------------
# Pascal VOC boxes


VOC = """<annotation>
  <folder>val</folder><filename>ILSVRC2012_val_00000001</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>n01440764</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>500</xmax><ymax>375</ymax></bndbox></object>
  <object><name>n02102040</name>
    <bndbox><xmin>111</xmin><ymin>42</ymin><xmax>230</xmax><ymax>160</ymax></bndbox></object>
</annotation>
"""


def test_read_voc_boxes_converts_to_zero_based_exclusive(tmp_path):
    path = tmp_path / "ILSVRC2012_val_00000001.xml"
    path.write_text(VOC)
    boxes = read_voc_boxes(path)
    assert boxes == [("n01440764", (0, 0, 500, 375)), ("n02102040", (110, 41, 230, 160))]
    mask = boxes_to_masks([[box for _, box in boxes[1:]]], 375, 500)[0]
    assert mask.sum() == 120 * 119                             # VOC's inclusive width 230 - 111 + 1


@pytest.mark.parametrize("text", ["<annotation><object><name>x</name>",            # truncated XML
                                  "<notvoc/>",
                                  "<annotation><object><name>x</name><bndbox><xmin>1</xmin></bndbox></object>"
                                  "</annotation>"])
def test_read_voc_boxes_malformed_raises_naming_the_file(tmp_path, text):
    path = tmp_path / "broken.xml"
    path.write_text(text)
    with pytest.raises(ValueError, match="broken.xml"):
        read_voc_boxes(path)


def test_summarize_cuts_the_t_interval_to_the_measures_range():
    values = [0.0, 0.0, 0.9, 0.0]  # mean 0.225, t interval about [-0.49, 0.94]
    open_ = summarize(values)
    assert open_["ci_low"] < 0
    cut = summarize(values, limits=(0.0, 1.0))
    assert cut["ci_low"] == 0.0 and cut["ci_high"] == pytest.approx(open_["ci_high"]) and cut["mean"] == 0.225
