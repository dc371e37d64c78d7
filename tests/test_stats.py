"""Paired statistics: bootstrap coverage, McNemar by hand, CE intervals, per-image bits, the table."""

import json
import math

import numpy as np
import pytest

from emca_vis import stats
from emca_vis.errors import UserError
from emca_vis.robustness.metrics import summarize
from emca_vis.robustness.results import parse_results, read_cells


def _paired(rng, n, p_a, p_b, shared=0.6):
    """Correctness of two models on n images: B reuses A's draw on a share of the images, so
    the two are correlated as models on the same images are; true accuracies p_a and p_b."""
    u = rng.random(n)
    v = np.where(rng.random(n) < shared, u, rng.random(n))
    return u < p_a, v < p_b


def test_bootstrap_interval_covers_the_true_difference_at_the_nominal_rate():
    rng = np.random.default_rng(123)
    covered = 0
    for trial in range(200):
        a, b = _paired(rng, 300, 0.72, 0.65)
        found = stats.difference(a, b, resamples=1000, seed=trial)
        covered += found["low"] <= 0.07 <= found["high"]
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_mce_interval_covers_the_true_difference_at_the_nominal_rate():
    # Two models and the baseline (the first), 2 corruptions x 2 severities; per-cell accuracies
    # known, so the population mCE difference is too.
    accuracy = {"base": [0.9, 0.7, 0.5, 0.6, 0.4], "a": [0.92, 0.8, 0.7, 0.75, 0.6], "b": [0.9, 0.8, 0.6, 0.7, 0.5]}
    error = {k: 1 - np.array(v) for k, v in accuracy.items()}
    mce = {k: np.mean([e[1:3].sum() / error["base"][1:3].sum(), e[3:5].sum() / error["base"][3:5].sum()])
           for k, e in error.items()}
    truth = mce["a"] - mce["b"]
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        u = rng.random((5, 400))
        correct = {k: (np.where(rng.random((5, 400)) < 0.5, u, rng.random((5, 400))) < np.array(p)[:, None])
                   for k, p in accuracy.items()}
        found = stats.robustness_intervals(correct, 2, [0, 1], "base", resamples=1000, seed=trial)
        pair = stats.find_pair(found["pairs"], "a", "b")["mce"]
        covered += pair["low"] <= truth <= pair["high"]
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_mcnemar_exact_by_hand():
    # 8 images only a gets right, 2 only b, 10 both, 5 neither: two-sided exact p
    # = 2 * P(X <= 2), X ~ Binomial(10, 1/2) = 2 * (1 + 10 + 45) / 1024 = 0.109375.
    a = [1] * 8 + [0] * 2 + [1] * 10 + [0] * 5
    b = [0] * 8 + [1] * 2 + [1] * 10 + [0] * 5
    found = stats.mcnemar(a, b)
    assert found["a_only"] == 8 and found["b_only"] == 2
    assert found["p_value"] == pytest.approx(112 / 1024)
    assert found["difference"] == pytest.approx(6 / 25)
    assert stats.mcnemar([1, 0, 1], [1, 0, 1])["p_value"] == 1.0  # nothing discordant
    swapped = stats.mcnemar(b, a)
    assert (swapped["a_only"], swapped["b_only"], swapped["p_value"]) == (2, 8, found["p_value"])
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar([1, 0], [1, 0, 1])


def test_identical_models_give_a_zero_width_ce_interval():
    rng = np.random.default_rng(0)
    base = rng.random((1 + 3 * 2, 120)) < 0.6
    twin = rng.random((1 + 3 * 2, 120)) < 0.7
    found = stats.robustness_intervals({"base": base, "x": twin, "y": twin.copy()}, 2, [0, 1, 2], "base")
    pair = stats.find_pair(found["pairs"], "x", "y")
    for key in ("clean_error", "mce", "mean_corruption_accuracy"):
        assert (pair[key]["difference"], pair[key]["low"], pair[key]["high"]) == (0.0, 0.0, 0.0), key
    assert pair["clean_error"]["p_value"] == 1.0
    # the baseline against itself: CE is 1 on every resample
    assert found["models"]["base"]["mce"] == [1.0, 1.0]


def test_scores_on_resamples_follow_the_metrics_module():
    """The vectorised formulas give, on the full sample, the scores of robustness.metrics.summarize."""
    rng = np.random.default_rng(3)
    correct = {k: rng.random((1 + 2 * 3, 50)) < p for k, p in (("base", 0.6), ("m", 0.8))}
    errors = {k: 1 - v.mean(1) for k, v in correct.items()}
    table = {k: {c: {s + 1: e[1 + 3 * i + s] for s in range(3)} for i, c in enumerate(("fog", "snow"))}
             for k, e in errors.items()}
    expected = summarize(errors["m"][0], table["m"], table["base"], errors["base"][0])
    points = stats._scores((1 - np.stack([correct["base"], correct["m"]]).mean(-1))[..., None],
                           errors["base"][:, None], 2, 3, [0, 1])
    assert points["mce"][1, 0] == pytest.approx(expected["mce"])
    assert points["ce"][1, :, 0] == pytest.approx([expected["ce"]["fog"], expected["ce"]["snow"]])
    assert points["mean_corruption_accuracy"][1, 0] == pytest.approx(expected["mean_corruption_accuracy"])
    if expected["relative_mce"] is not None:
        assert points["relative_mce"][1, 0] == pytest.approx(expected["relative_mce"])


def test_resampled_means_pair_rows_and_repeat_with_the_seed():
    """One matrix product serves every row with the same resamples: row by row gives the same."""
    values = np.random.default_rng(1).random((3, 4, 60))
    together = stats.resampled_means(values, 200, seed=5)
    assert together.shape == (3, 4, 200)
    for i in range(3):
        assert stats.resampled_means(values[i, 1], 200, seed=5) == pytest.approx(together[i, 1], abs=1e-12)
    assert not np.array_equal(stats.resampled_means(values, 200, seed=6), together)
    # a mean of resampled means is close to the sample mean (each resample weighs n images)
    assert together.mean(-1) == pytest.approx(values.mean(-1), abs=0.02)
    # blocks of resamples (bounded memory for large image sets) change nothing
    small = stats._BLOCK
    try:
        stats._BLOCK = 60 * 7
        assert stats.resampled_means(values, 200, seed=5) == pytest.approx(together, abs=1e-12)
    finally:
        stats._BLOCK = small


def test_undefined_resamples_leave_no_interval():
    assert stats.interval([1.0] * 98 + [np.nan] * 2) is None  # 2% undefined
    low, high = stats.interval(list(range(1000)) + [np.nan] * 5)
    assert (low, high) == pytest.approx((24.975, 974.025))


def test_hits_round_trip_and_refuse_wrong_sizes():
    correct = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 1], dtype=bool)
    hits = stats.pack_hits(correct)
    assert hits == "b1c0"
    assert np.array_equal(stats.unpack_hits(hits, 10), correct)
    with pytest.raises(ValueError, match="not 20 images packed"):
        stats.unpack_hits(hits, 20)
    with pytest.raises(ValueError, match="bits set past the last image"):
        stats.unpack_hits("b1ff", 10)


# --- files and the table -------------------------------------------------------------------------

def _results(resamples=200):
    from emca_vis.robustness.evaluate import intervals

    rng = np.random.default_rng(11)
    n, severities, corruptions = 40, [1, 2], ["fog", "snow"]
    models = {}
    for label, p in (("base", 0.55), ("good", 0.8), ("same", 0.55)):
        correct = rng.random((1 + 4, n)) < p
        if label == "same":
            correct = models["base"]["_correct"]
        models[label] = {"_correct": correct}
    base_errors = None
    results = {"data": "shapes", "split": "test", "backend": "torch", "baseline": "base", "corruptions": corruptions,
               "severities": severities, "models": {}}
    for label, entry in models.items():
        correct = entry["_correct"]
        errors = 1 - correct.mean(1)
        table = {c: {s: float(errors[1 + 2 * i + j]) for j, s in enumerate(severities)}
                 for i, c in enumerate(corruptions)}
        base_errors = base_errors or (table, float(errors[0]))
        results["models"][label] = {
            "n": n, "errors": {c: {str(s): e for s, e in v.items()} for c, v in table.items()},
            **summarize(float(errors[0]), table, base_errors[0], base_errors[1]),
            "correct_clean": stats.pack_hits(correct[0]),
            "correct": {c: {str(s): stats.pack_hits(correct[1 + 2 * i + j]) for j, s in enumerate(severities)}
                        for i, c in enumerate(corruptions)}}
    results["intervals"] = intervals(results, resamples, seed=0)
    return results


def test_results_with_intervals_pass_the_schema_and_print_them():
    from emca_vis.robustness.evaluate import markdown_table

    results = json.loads(json.dumps(_results()))
    checked = parse_results(json.dumps(results), "r.json")
    assert checked["intervals"]["pairs"][0]["a"] == "base"
    table = markdown_table(checked)
    assert "paired bootstrap over the 40 images (200 resamples)" in table
    good = checked["models"]["good"]
    low, high = checked["intervals"]["models"]["good"]["mce"]
    assert f"| good | {100 * good['clean_error']:.1f} [" in table and f"{100 * good['mce']:.1f} [{100 * low:.1f}, " \
                                                                       f"{100 * high:.1f}]" in table
    assert "Paired differences from good (model minus good" in table
    assert "| same | " in table.split("Paired differences")[1]
    pair = stats.find_pair(checked["intervals"]["pairs"], "same", "base")
    assert pair["mce"] == {"difference": 0.0, "low": 0.0, "high": 0.0}


@pytest.mark.parametrize("change, message", [
    (lambda r: r["models"]["good"].update(correct_clean="00"), "correct_clean: holds 8 bits, not 40 images"),
    (lambda r: r["models"]["good"].update(clean_error=0.5), "images right does not give the error 0.5"),
    (lambda r: r["models"]["good"]["correct"].pop("snow"), "correct: its corruptions are not those of errors"),
    (lambda r: r["intervals"]["pairs"][0].update(a="ghost"), "intervals: model 'ghost' is not among the models"),
    (lambda r: r["intervals"]["pairs"][0]["mce"].update(low=9.0), "low=9.0 is above high="),
])
def test_results_schema_refuses_inconsistent_per_image_data(change, message):
    results = json.loads(json.dumps(_results(50)))
    change(results)
    with pytest.raises(UserError, match=message):
        parse_results(json.dumps(results), "r.json")


def test_cells_check_their_per_image_bits(tmp_path):
    cell = {"model": "m", "corruption": "clean", "severity": 0, "correct": 3, "total": 10,
            "hits": stats.pack_hits([1, 1, 1] + [0] * 7), "setting": "x"}
    path = tmp_path / "r.cells.jsonl"
    path.write_text(json.dumps(cell) + "\n")
    assert read_cells(path)[0]["hits"] == "e000"
    path.write_text(json.dumps({**cell, "correct": 4}) + "\n")
    with pytest.raises(UserError, match="line 1: hits: 3 images right, not correct=4"):
        read_cells(path)


def test_no_intervals_without_per_image_results():
    from emca_vis.robustness.evaluate import intervals, markdown_table

    results = _results()
    for model in results["models"].values():
        del model["correct_clean"], model["correct"]
    results["intervals"] = intervals(results)
    assert results["intervals"] is None
    table = markdown_table(results)
    assert "[" not in table and "Paired differences" not in table
    assert math.isclose(parse_results(json.dumps(results), "r.json")["models"]["good"]["n"], 40)


def test_a_whole_table_is_one_resampling(monkeypatch):
    """Every model and cell goes through one resampled_means call (one matrix product), so the
    default 7-model, 15 x 5, 500-image table takes about a second (benchmarks/paired_stats_speed.py)."""
    calls = []
    original = stats.resampled_means

    def counted(values, *args, **kwargs):
        calls.append(np.shape(values))
        return original(values, *args, **kwargs)

    monkeypatch.setattr(stats, "resampled_means", counted)
    rng = np.random.default_rng(2)
    correct = {f"m{i}": rng.random((1 + 4 * 5, 30)) < 0.5 + 0.05 * i for i in range(4)}
    found = stats.robustness_intervals(correct, 5, [0, 1, 2, 3], "m0", resamples=100)
    assert calls == [(4, 21, 30)]
    assert len(found["pairs"]) == 6 and set(found["models"]) == set(correct)


def test_robustness_run_keeps_per_image_results_and_redoes_cells_without_them(tmp_path, capsys):
    from emca_vis.demo import demo_checkpoints
    from emca_vis.errors import run_cli
    from emca_vis.robustness.evaluate import main

    out = tmp_path / "r.json"
    argv = ["--checkpoint", str(demo_checkpoints()[0]), str(demo_checkpoints()[5]), "--corruptions", "contrast",
            "--severities", "5", "--n", "12", "--batch-size", "12", "--resamples", "200", "--out", str(out)]
    assert run_cli(main, argv) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["intervals"]["resamples"] == 200 and results["intervals"]["n"] == 12
    model = results["models"]["resnet18_emca_eca"]
    hits = stats.unpack_hits(model["correct"]["contrast"]["5"], 12)
    assert 1 - hits.mean() == pytest.approx(model["errors"]["contrast"]["5"])
    assert "Paired differences from " in printed and "McNemar" in printed
    # cells of an older run, without per-image results, are redone rather than trusted
    cells = out.with_suffix(".cells.jsonl")
    lines = [json.loads(line) for line in cells.read_text().splitlines()]
    cells.write_text("".join(json.dumps({k: v for k, v in c.items() if k != "hits"}) + "\n" for c in lines))
    out.unlink()
    assert run_cli(main, argv) == 0
    capsys.readouterr()
    redone = [json.loads(line) for line in cells.read_text().splitlines()]
    assert len(redone) == 2 * len(lines) and all("hits" in c for c in redone[len(lines):])
    assert json.loads(out.read_text())["intervals"] == results["intervals"]
