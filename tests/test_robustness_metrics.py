import json

import pytest

from emca_vis.robustness.metrics import (ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, IMAGENET_C, corruption_error,
                                         relative_corruption_error, summarize)


def test_alexnet_normalisers_are_the_papers():
    means = {c: sum(v) / 5 for c, v in ALEXNET_ERRORS.items()}
    assert means["gaussian_noise"] == pytest.approx(0.886428)
    assert means["glass_blur"] == pytest.approx(0.826268)
    assert means["brightness"] == pytest.approx(0.564592)
    assert means["jpeg_compression"] == pytest.approx(0.6065)
    assert list(ALEXNET_ERRORS) == list(IMAGENET_C)


def test_ce_and_relative_ce_by_hand():
    errors = [0.2, 0.3, 0.4, 0.5, 0.6]
    base = [0.4, 0.5, 0.6, 0.7, 0.8]
    assert corruption_error(errors, base) == pytest.approx(2.0 / 3.0)
    assert corruption_error(errors, [0.0] * 5) is None  # a baseline without errors leaves CE undefined
    # (sum(errors) - 5 * 0.1) / (sum(base) - 5 * 0.3) = 1.5 / 1.5
    assert relative_corruption_error(errors, 0.1, base, 0.3) == pytest.approx(1.0)
    assert relative_corruption_error(errors, 0.1, [0.3] * 5, 0.3) is None
    assert relative_corruption_error(errors, 0.1, [0.0] * 5, 0.05) is None  # baseline better than clean


def test_summary_against_alexnet():
    errors = {c: {s: 0.5 for s in range(1, 6)} for c in IMAGENET_C}
    scores = summarize(0.25, errors)
    assert scores["ce"]["gaussian_noise"] == pytest.approx(2.5 / 4.43214)
    assert scores["mce"] == pytest.approx(sum(2.5 / sum(v) for v in ALEXNET_ERRORS.values()) / 15)
    rel = [(2.5 - 5 * 0.25) / (sum(v) - 5 * ALEXNET_CLEAN_ERROR) for v in ALEXNET_ERRORS.values()]
    assert scores["relative_mce"] == pytest.approx(sum(rel) / 15)
    assert scores["mean_corruption_accuracy"] == pytest.approx(0.5)
    assert scores["mce_over"] == list(IMAGENET_C)
    alexnet_itself = summarize(ALEXNET_CLEAN_ERROR, {c: dict(enumerate(v, 1)) for c, v in ALEXNET_ERRORS.items()})
    assert alexnet_itself["mce"] == pytest.approx(1.0) and alexnet_itself["relative_mce"] == pytest.approx(1.0)
    json.dumps(scores)


def test_summary_on_some_severities_and_a_checkpoint_baseline():
    base = {"fog": {1: 0.4, 3: 0.6}, "snow": {1: 0.5, 3: 0.5}}
    scores = summarize(0.1, {"fog": {1: 0.2, 3: 0.4}, "snow": {1: 0.25, 3: 0.25}, "saturate": {1: 0.3, 3: 0.3}},
                       base, 0.2)
    assert scores["ce"] == pytest.approx({"fog": 0.6, "snow": 0.5})
    assert scores["mce"] == pytest.approx(0.55) and scores["mce_over"] == ["fog", "snow"]
    assert scores["relative_ce"]["fog"] == pytest.approx((0.1 + 0.3) / (0.2 + 0.4))
    assert "saturate" not in scores["ce"]
    assert scores["mean_corruption_accuracy"] == pytest.approx(1 - (0.2 + 0.4 + 0.25 + 0.25 + 0.3 + 0.3) / 6)
