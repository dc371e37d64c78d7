"""The report: one small report is computed once for the module and checked as a document.

HTML parses (as XML too), every image is embedded, every number shown equals report.json,
re-rendering gives the same bytes, and a real browser (headless Chromium) renders it without
errors. The summary sentences are checked on a hand-built results dict.
"""

import base64
import copy
import json
import re
import shutil
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from emca_vis.demo import demo_checkpoints
from emca_vis.report import Settings, compute_report, render, summarize
from emca_vis.report.__main__ import main as report_main
from emca_vis.report.tables import resolve

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
XHTML = "{http://www.w3.org/1999/xhtml}"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """Two demo models (plain and EMCA-ECA), 2 corruptions x 2 severities, 32 images, 2 grid images,
    heatmap stability in the robustness pass."""
    out = tmp_path_factory.mktemp("report")
    checkpoints = demo_checkpoints()
    settings = Settings(checkpoints=[str(checkpoints[0]), str(checkpoints[5])], n_clean=32, n_robustness=32,
                        corruptions=["gaussian_noise", "contrast"], severities=[2, 5], n_explain=16, steps=4,
                        n_attention=16, samples=2, grid_corruptions=["contrast"], grid_severities=[3],
                        batch_size=32, throughput_batch=4, repeats=1, stability="gradcam")
    compute_report(settings, out, "test")
    render(out)
    return out


@pytest.fixture(scope="module")
def data(report_dir):
    return json.loads((report_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def page(report_dir):
    return (report_dir / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tree(page):
    return ET.fromstring(page.split("\n", 1)[1])  # well-formed XML after the doctype line


class _Balance(HTMLParser):
    """Every non-void element closed, in order (what a browser would otherwise repair silently)."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def test_html_parses_as_html_and_as_xml(page, tree):
    assert page.startswith("<!DOCTYPE html>\n")
    parser = _Balance()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert tree.tag == f"{XHTML}html"
    titles = [h.text for h in tree.iter(f"{XHTML}h2")]
    assert titles == ["1. Summary", "2. Models", "3. Corruption robustness", "4. Heatmap stability under corruption",
                      "5. Explanations", "6. Attention", "7. Settings and files"]
    assert "@media print" in page
    anchors = {a.get("href")[1:] for a in tree.iter(f"{XHTML}a") if a.get("href", "").startswith("#")}
    ids = {e.get("id") for e in tree.iter() if e.get("id")}
    assert anchors and anchors <= ids


def test_every_image_is_embedded_png_and_nothing_is_fetched(report_dir, data, page, tree):
    images = list(tree.iter(f"{XHTML}img"))
    figures = [data["figures"][k] for k in data["figures"]] + list(data["attention"]["figures"].values())
    figures += [s["figure"] for s in data["grad_cam_grid"]["samples"]]
    assert len(images) == len(figures) >= 9
    for img in images:
        src = img.get("src")
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and img.get("alt")
    embedded = {base64.b64decode(img.get("src").split(",", 1)[1]) for img in images}
    assert embedded == {(report_dir / f).read_bytes() for f in figures}
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no external or relative resource
    assert "<script" not in page and "@import" not in page and "url(" not in page


def test_numbers_shown_equal_the_json(data, tree):
    shown = [e for e in tree.iter() if e.get("data-json")]
    assert len(shown) > 60
    pointers = {e.get("data-json") for e in shown}
    for required in ("/robustness/models/resnet18_emca_eca/mce", "/robustness/models/resnet18/ce/contrast",
                     "/models/1/params", "/models/0/clean/top1", "/explanations/rows/1/pointing_game_mean",
                     "/attention/scale_weights/0/scale_weights/0"):
        assert required in pointers
    for element in shown:
        value = resolve(data, element.get("data-json"))
        text = "".join(element.itertext()).replace(",", "")
        decimals = len(text.split(".")[1]) if "." in text else 0
        expected = value * float(element.get("data-scale", 1))
        assert float(text) == pytest.approx(expected, abs=0.5 * 10 ** -decimals + 1e-9), element.get("data-json")


def test_best_value_per_column_is_marked(data, tree):
    table = next(t for t in tree.iter(f"{XHTML}table") if "mCE (%)" in "".join(t.find(f"{XHTML}thead").itertext()))
    header = [("".join(th.itertext())) for th in table.find(f"{XHTML}thead").iter(f"{XHTML}th")]
    column = header.index("mCE (%)")
    rows = list(table.find(f"{XHTML}tbody"))
    values = {("".join(r[0].itertext())): r[column] for r in rows}
    models = data["robustness"]["models"]
    best = min(models, key=lambda label: models[label]["mce"])
    assert values[best].get("class") == "num best" and values[best].find(f"{XHTML}strong") is not None
    assert all(cell.find(f"{XHTML}strong") is None for label, cell in values.items()
               if f"{100 * models[label]['mce']:.1f}" != f"{100 * models[best]['mce']:.1f}")


def test_markdown_has_the_same_tables_and_links_the_figures(report_dir, data):
    md = (report_dir / "report.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (report_dir / link).is_file()
    mce = 100 * data["robustness"]["models"]["resnet18_emca_eca"]["mce"]
    assert f"{mce:.1f}" in md and "| model | clean error (%) | mCE (%) |" in md
    for sentence in summarize(data):
        assert sentence in md


def test_stability_section_shows_the_robustness_runs_stability(data, page, report_dir):
    found = data["robustness"]["stability"]
    assert found["method"] == "gradcam" and set(found["families"]) == {"noise", "digital"}
    assert 'id="stability"' in page and "Heatmap stability under corruption" in page
    iou = found["models"]["resnet18_emca_eca"]["families"]["digital"]["all"]["top_iou"]
    assert f"{iou['mean']:.3f}" in page and iou["ci_low"] <= iou["mean"] <= iou["ci_high"]
    assert (report_dir / data["figures"]["stability"]).stat().st_size > 10_000


def test_rerendering_reproduces_the_document_quickly(report_dir, tmp_path, capsys):
    first = (report_dir / "report.html").read_bytes()
    start = time.perf_counter()
    assert report_main(["--from", str(report_dir), "--out", str(tmp_path)]) == 0
    assert time.perf_counter() - start < 5
    assert (tmp_path / "report.html").read_bytes() == first
    assert report_main(["--from", str(report_dir)]) == 0
    assert (report_dir / "report.html").read_bytes() == first
    assert "wrote" in capsys.readouterr().out


def test_missing_results_and_figures_are_one_line_errors(report_dir, tmp_path):
    from emca_vis.errors import run_cli

    assert run_cli(report_main, ["--from", str(tmp_path)]) == 2
    broken = tmp_path / "broken"
    shutil.copytree(report_dir, broken)
    (broken / "figures" / "mce.png").unlink()
    assert run_cli(report_main, ["--from", str(broken)]) == 2
    assert run_cli(report_main, ["--corruptions", "fogg", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # options are checked before anything runs


def test_report_files_are_written(report_dir, data):
    for name in ("report.json", "report.html", "report.md", "models.csv", "robustness.json", "robustness.csv",
                 "explanations.csv", "attention.json", "grad_cam_grid.npz"):
        assert (report_dir / name).is_file(), name
    assert [row["label"] for row in data["models"]] == ["resnet18", "resnet18_emca_eca"]
    assert data["robustness"]["baseline"] == "resnet18"
    assert data["models"][1]["relative_throughput"] > 0 and data["models"][0]["relative_throughput"] == 1
    grid = data["grad_cam_grid"]["samples"]
    assert len(grid) == 2 and grid[0]["conditions"] == ["clean", "contrast 3"]


# --- summary -----------------------------------------------------------------------------------

def _model(label, model, attention, emca, params, top1):
    return {"label": label, "model": model, "depth": 18, "attention": attention, "emca": emca, "params": params,
            "clean": {"top1": top1, "top5": 1.0, "n": 500}, "kind": label,
            "throughput_baseline": "resnet18", "relative_throughput": None if attention is None else 0.98}


def _results():
    def robust(mce, relative, errors):
        return {"n": 100, "mce": mce, "relative_mce": relative, "clean_error": 0.02,
                "errors": {"fog": {"1": errors[0], "5": errors[1]}, "contrast": {"1": errors[2], "5": errors[3]}}}

    return {
        "settings": {"data": "shapes", "split": "test"},
        "models": [_model("resnet18", "resnet18", None, False, 1000, 0.95),
                   _model("resnet18_eca", "resnet18_eca", "eca", False, 1010, 0.96),
                   _model("resnet18_emca_eca", "resnet18_emca_eca", "eca", True, 1011, 0.97)],
        "robustness": {"baseline": "resnet18", "corruptions": ["fog", "contrast"], "models": {
            "resnet18": robust(1.0, 1.0, [0.1, 0.5, 0.05, 0.2]),
            "resnet18_eca": robust(0.92, 0.8, [0.1, 0.4, 0.05, 0.2]),
            "resnet18_emca_eca": robust(0.889, 0.85, [0.1, 0.4, 0.04, 0.2])}},
        "explanations": {"rows": [
            {"model": "resnet18", "method": "gradcam", "n": 100, "pointing_game_mean": 0.90,
             "pointing_game_ci_low": 0.83, "pointing_game_ci_high": 0.95},
            {"model": "resnet18_eca", "method": "gradcam", "n": 100, "pointing_game_mean": 0.70,
             "pointing_game_ci_low": 0.60, "pointing_game_ci_high": 0.78},
            {"model": "resnet18_emca_eca", "method": "gradcam", "n": 100, "pointing_game_mean": 0.88,
             "pointing_game_ci_low": 0.80, "pointing_game_ci_high": 0.93}]},
        "attention": {"scale_weights": [{"model": "resnet18_emca_eca", "earlier_share": 0.3},
                                        {"model": "resnet18_emca_eca", "earlier_share": 0.5}]},
    }


def test_summary_sentences_follow_the_numbers():
    sentences = summarize(_results())
    text = "\n".join(sentences)
    assert sentences[0] == ("resnet18_emca_eca has the lowest mCE, 88.9 (resnet18 = 100), 3.1 below its non-EMCA "
                            "counterpart resnet18_eca (92.0).")
    assert "The smallest degradation from clean accuracy (relative mCE) is resnet18_eca's, 80.0." in text
    assert "The hardest corruption is fog (mean error 26.7% over models and severities), the easiest contrast" in text
    assert ("resnet18_emca_eca has the best clean top-1, 97.0% on 500 images, 1.0 points above the next best "
            "(96.0%).") in text
    assert ("resnet18_emca_eca vs resnet18_eca: mCE 88.9 vs 92.0 (\u22123.1), clean top-1 97.0% vs 96.0% (+1.0), "
            "pointing game 88.0% vs 70.0% (+18.0), 1,011 vs 1,010 parameters (+1, +0.10%).") in text
    assert "resnet18 localises the object best: pointing game 90.0% [83.0, 95.0] on 100 images; its 95% interval " \
           "overlaps that of the runner-up resnet18_emca_eca (88.0%)" in text
    assert "run at 0.98x its CPU throughput and have +10 to +11 parameters (at most 1.10% of 1,000)" in text
    assert "resnet18_emca_eca 40.0%" in text
    assert "one image = 1.0 points" in text


def test_summary_changes_with_the_numbers_and_never_invents():
    results = _results()
    results["robustness"]["models"]["resnet18_eca"]["mce"] = 0.85  # now ECA is best, no EMCA counterpart claim
    first = summarize(results)[0]
    assert first == "resnet18_eca has the lowest mCE, 85.0 (resnet18 = 100), 3.9 below the next best, " \
                    "resnet18_emca_eca (88.9)."
    alone = copy.deepcopy(results)
    alone["models"] = alone["models"][:1]
    alone["robustness"]["models"] = {"resnet18": alone["robustness"]["models"]["resnet18"]}
    alone["explanations"]["rows"] = alone["explanations"]["rows"][:1]
    alone["attention"] = {}
    assert all("lowest" not in s and "best" not in s for s in summarize(alone))
    assert summarize({"models": []}) == []


def test_summary_says_tied_when_the_shown_values_are_equal():
    results = _results()
    results["explanations"]["rows"][2]["pointing_game_mean"] = 0.9004
    assert ("With gradcam, resnet18 and resnet18_emca_eca share the best pointing game, 90.0% on 100 images."
            in summarize(results))


def test_summary_when_the_baseline_itself_is_most_robust():
    results = _results()
    results["robustness"]["models"]["resnet18_eca"]["mce"] = 2.5
    results["robustness"]["models"]["resnet18_emca_eca"]["mce"] = 2.2
    assert summarize(results)[0] == ("resnet18, the CE baseline (= 100), has the lowest mCE: every other model has "
                                     "larger corruption errors, the closest being resnet18_emca_eca (220.0).")


def _paired(results, low, high):
    """Paired mCE interval of resnet18_emca_eca minus resnet18_eca (stored the other way round,
    as the robustness run lists the pair), in fractions."""
    results["robustness"]["intervals"] = {"level": 0.95, "resamples": 1000, "seed": 0, "n": 100, "models": {},
                                          "pairs": [{"a": "resnet18_eca", "b": "resnet18_emca_eca",
                                                     "clean_error": {"difference": 0.0, "low": -0.02, "high": 0.02,
                                                                     "a_only": 1, "b_only": 1, "p_value": 1.0},
                                                     "mce": {"difference": 0.031, "low": -high, "high": -low}}]}
    return results


def test_summary_says_lower_mce_with_the_paired_interval():
    first = summarize(_paired(_results(), -0.050, -0.012))[0]
    assert first == ("resnet18_emca_eca has the lowest mCE, 88.9 (resnet18 = 100), lower mCE than its non-EMCA "
                     "counterpart resnet18_eca (92.0; difference \u22123.1, 95% CI [\u22125.0, \u22121.2]).")


def test_summary_words_a_tie_when_the_interval_holds_zero():
    results = _paired(_results(), -0.060, 0.004)
    first = summarize(results)[0]
    assert first == ("resnet18_emca_eca has the lowest mCE, 88.9 (resnet18 = 100), tied with its non-EMCA "
                     "counterpart resnet18_eca (92.0; difference \u22123.1, 95% CI [\u22126.0, 0.4], which holds 0).")
    assert "lower mCE" not in first
    pair = next(s for s in summarize(results) if s.startswith("resnet18_emca_eca vs resnet18_eca"))
    assert "mCE 88.9 vs 92.0 (difference \u22123.1, 95% CI [\u22126.0, 0.4], a tie)" in pair


def test_summary_tests_clean_top1_with_mcnemar():
    from emca_vis.stats import pack_hits

    results = _results()
    # resnet18_emca_eca 97.0% and resnet18_eca 96.0% on 500 images: 8 images only the first gets
    # right, 3 only the second -> two-sided exact p = 2 * P(X <= 3 | Bin(11, 1/2)) = 0.2266
    best = [1] * 485 + [0] * 15
    runner_up = [1] * 477 + [0] * 8 + [1] * 3 + [0] * 12
    for row, hits in ((results["models"][2], best), (results["models"][1], runner_up)):
        row["clean"]["correct"] = pack_hits(hits)
    sentence = next(s for s in summarize(results) if "best clean top-1" in s)
    assert sentence.endswith("McNemar's exact test over the 11 images only one of resnet18_emca_eca and "
                             "resnet18_eca gets right (8 vs 3): p = 0.23, within sampling noise, a tie.")
    pair = next(s for s in summarize(results) if s.startswith("resnet18_emca_eca vs resnet18_eca"))
    assert "clean top-1 97.0% vs 96.0% (+1.0, McNemar p = 0.23)" in pair


def test_summary_compares_pointing_game_per_image():
    results = _results()
    rows = results["explanations"]["rows"]
    # 100 images: resnet18 hits 90, resnet18_emca_eca 88, hitting the same images but two
    rows[0]["per_image"] = {"pointing_game": [1.0] * 90 + [0.0] * 10}
    rows[2]["per_image"] = {"pointing_game": [1.0] * 88 + [0.0] * 12}
    text = "\n".join(summarize(results))
    assert ("resnet18 localises the object best: pointing game 90.0% [83.0, 95.0] on 100 images, tied with the "
            "runner-up resnet18_emca_eca (88.0%; difference 2.0, 95% CI [0.0, 5.0], which holds 0).") in text
    rows[2]["per_image"] = {"pointing_game": [1.0] * 70 + [0.0] * 30}
    rows[2]["pointing_game_mean"] = 0.7
    rows[1]["pointing_game_mean"] = 0.6
    assert "ahead of the runner-up resnet18_emca_eca (70.0%; difference 20.0, 95% CI [" in "\n".join(
        summarize(results))


# --- a real browser ----------------------------------------------------------------------------

@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
def test_report_renders_in_headless_chromium(report_dir):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get((report_dir / "report.html").as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.clientWidth])")
        assert len(images) >= 9 and all(done and natural > 0 and shown > 0 for done, natural, shown in images)
        assert driver.title == "Robustness and interpretability report"
        # nothing wider than the page: tables and figures fit or scroll in their own box
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []
        height = driver.execute_script("return document.documentElement.scrollHeight")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}})
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / "report.png").write_bytes(base64.b64decode(shot["data"]))
        pdf = driver.execute_cdp_cmd("Page.printToPDF", {"preferCSSPageSize": True})
        assert base64.b64decode(pdf["data"])[:5] == b"%PDF-"
    finally:
        driver.quit()
    assert (ROOT / "test-artifacts" / "report.png").stat().st_size > 10_000
