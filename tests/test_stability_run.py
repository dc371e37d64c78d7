"""`python -m emca_vis.gradcam stability`: its numbers against the library's, its files and errors."""

import json
import warnings

import numpy as np
import pytest

from emca_vis.demo import demo_checkpoints
from emca_vis.explain import heatmaps, stability
from emca_vis.explain.stability_run import evaluation_data
from emca_vis.gradcam import main
from emca_vis.inputs import load_models
from emca_vis.robustness.corruptions import corrupt


def small(out, *extra):
    checkpoints = demo_checkpoints()
    return ("stability", "--checkpoint", checkpoints[0], checkpoints[5], "--n", "6", "--batch-size", "4",
            "--corruptions", "gaussian_noise", "fog", "--severities", "1", "4", "--resamples", "50", "--out", out,
            *extra)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("stability")
    from emca_vis.errors import run_cli

    assert run_cli(main, list(map(str, small(out, "--per-image")))) == 0
    return out


def test_numbers_are_the_librarys_on_the_same_corrupted_images(finished):
    data = json.loads((finished / "stability.json").read_text())
    assert data["target"] == "ground truth" and list(data["models"]) == ["resnet18", "resnet18_emca_eca"]
    assert data["families"] == {"noise": ["gaussian_noise"], "weather": ["fog"]}
    loaded = load_models([demo_checkpoints()[5]])[0]
    pixels, labels, masks = evaluation_data(loaded, "shapes", "test", 6)
    # Second batch (images 4-5, batch index 1) under fog 4: the seed the robustness tool gives it.
    noisy = corrupt(pixels[4:6], "fog", 4, "torch", seed=1)
    clean = heatmaps(loaded.model, loaded.normalise(pixels[4:6]), labels[4:6], "gradcam")
    maps = heatmaps(loaded.model, loaded.normalise(noisy), labels[4:6], "gradcam")
    expected = stability.stability(clean, maps, masks=masks[4:6], tolerance=15 * 64 / 224)
    with np.load(finished / "per_image.npz") as saved:
        for name, values in expected.items():
            np.testing.assert_allclose(saved[f"resnet18_emca_eca/gradcam/fog/4/{name}"][4:6], values, atol=1e-6)
        rho = saved["resnet18_emca_eca/gradcam/fog/4/rank_correlation"]
        cell = data["models"]["resnet18_emca_eca"]["methods"]["gradcam"]["cells"]["fog"]["4"]["rank_correlation"]
        assert cell["mean"] == pytest.approx(np.nanmean(rho)) and cell["n"] == np.isfinite(rho).sum()
        assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
        # a family's value per image is its mean over the family's cells, then averaged over images
        iou = np.stack([saved[f"resnet18/gradcam/fog/{s}/top_iou"] for s in (1, 4)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_image = np.nanmean(iou, 0)
        family = data["models"]["resnet18"]["methods"]["gradcam"]["families"]["weather"]["all"]["top_iou"]
        assert family["mean"] == pytest.approx(np.nanmean(per_image))
    assert data["models"]["resnet18"]["tolerance"] == pytest.approx(15 * 64 / 224)  # 15 px at 224 px, at 64 px


def test_pairs_files_and_redraw(finished, cli, tmp_path):
    data = json.loads((finished / "stability.json").read_text())
    pair = next(p for p in data["pairs"]["gradcam"] if p["family"] == "noise" and p["measure"] == "top_iou")
    assert (pair["a"], pair["b"]) == ("resnet18", "resnet18_emca_eca") and pair["low"] <= pair["difference"] <= pair["high"]
    noise = {label: m["methods"]["gradcam"]["families"]["noise"]["all"]["top_iou"]["mean"]
             for label, m in data["models"].items()}
    if pair["n"] == 6:  # every image defined for both: the difference of the family means
        assert pair["difference"] == pytest.approx(noise["resnet18"] - noise["resnet18_emca_eca"])
    rows = (finished / "stability.csv").read_text().splitlines()
    assert rows[0].startswith("model,method,kind,name,severity,measure,mean,ci_low,ci_high,n")
    assert len(rows) == 1 + 2 * (2 * 2 + 2 * 3) * 6  # models x (cells + families x (all + 2 severities)) x measures
    names = {p.name for p in finished.iterdir()}
    assert {"stability_gradcam.png", "grid_gradcam_fog.png", "grid_gradcam_gaussian_noise.png", "grid.npz"} <= names
    with np.load(finished / "grid.npz") as grid:
        assert grid["heatmap/resnet18/gradcam/fog/4"].shape == (64, 64) and grid["image/64/fog/4"].shape == (64, 64, 3)
    redrawn = cli(main, "stability", "--from", finished / "stability.json", "--out", tmp_path / "again")
    assert redrawn.returncode == 0, redrawn.stderr
    assert (tmp_path / "again" / "stability_gradcam.png").stat().st_size > 10_000
    assert (tmp_path / "again" / "grid_gradcam_fog.png").exists()


def test_user_errors_are_one_line(cli, tmp_path):
    for argv, message in [
        (("--corruptions", "smog"), "error: unknown corruption 'smog'"),
        (("--grid-image", "6"), "error: --grid-image 6: only 6 images (--n)"),
        (("--method", "magic"), "error: unknown method 'magic'"),
        (("--q", "0"), "error: --q 0: the top region needs a share of pixels above 0"),
        (("--tolerance", "-1"), "error: argument --tolerance: must be at least 0 (got -1)"),
        (("--severities", "6"), "error: "),
    ]:
        result = cli(main, *small(tmp_path / "x", *argv))
        assert result.returncode == 2 and result.stderr.strip().startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"methods": ["gradcam"], "corruptions": ["fog"], "severities": [1], "models": {}}))
    result = cli(main, "stability", "--from", bad, "--out", tmp_path / "y")
    assert result.returncode == 2 and "bad.json: models:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_flat_corrupted_maps_are_counted_not_scored():
    clean = np.zeros((2, 8, 8))
    clean[:, 2, 3] = 1.0
    corrupted = clean.copy()
    corrupted[1] = 0.0  # the evidence vanished
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[:, 1:4, 2:5] = True
    found = stability.stability(clean, corrupted, masks=masks, tolerance=0)
    assert found["flat"].tolist() == [0.0, 1.0]
    assert np.isnan(found["top_iou"][1]) and np.isnan(found["peak_shift"][1]) and np.isnan(found["rank_correlation"][1])
    assert found["top_iou"][0] == 1.0 and found["pointing_retained"].tolist() == [1.0, 0.0]


def test_robustness_stability_gives_the_stability_tools_numbers_and_resumes(finished, cli, tmp_path):
    from emca_vis.robustness.evaluate import main as robustness

    checkpoints = demo_checkpoints()
    out = tmp_path / "r.json"
    argv = ("--checkpoint", checkpoints[0], checkpoints[5], "--n", "6", "--batch-size", "4", "--corruptions",
            "gaussian_noise", "fog", "--severities", "1", "4", "--resamples", "50", "--out", out)
    plain = cli(robustness, *argv)
    assert plain.returncode == 0, plain.stderr
    assert "stability" not in json.loads(out.read_text())
    # the finished cells lack stability: the corrupted ones are redone, the clean heatmaps computed anew
    result = cli(robustness, *argv, "--stability")
    assert result.returncode == 0, result.stderr
    assert "| resnet18_emca_eca | gradcam | weather |" in result.stdout
    found = json.loads(out.read_text())
    expected = json.loads((finished / "stability.json").read_text())
    for label in ("resnet18", "resnet18_emca_eca"):
        saved = dict(_flat(expected["models"][label]["methods"]["gradcam"]))
        saved.pop("clean_pointing_game")
        assert dict(_flat(found["stability"]["models"][label])) == pytest.approx(saved, abs=1e-5)
    assert len(found["stability_pairs"]) == len(expected["pairs"]["gradcam"])
    lines = out.with_suffix(".cells.jsonl").read_text().splitlines()
    again = cli(robustness, *argv, "--stability")  # nothing left to compute
    assert again.returncode == 0 and out.with_suffix(".cells.jsonl").read_text().splitlines() == lines
    refused = cli(robustness, *argv, "--stability", "magic")
    assert refused.returncode == 2 and refused.stderr.startswith("error: unknown method 'magic'")


def _flat(tree, prefix=""):
    """(path, leaf) pairs of a nested dict, lists kept whole."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flat(value, f"{prefix}/{key}" if prefix else key)
    elif not isinstance(tree, list):  # the families' corruption lists are compared elsewhere
        yield prefix, tree
