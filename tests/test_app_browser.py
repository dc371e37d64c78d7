"""The app in a real browser: `streamlit run app/main.py` driven by headless Chromium (Selenium).

Selects a fourth model, uploads a PNG (its name holding an HTML tag) through the page's file
input, waits for the heatmaps and checks they rendered with no error on the page, and that the
name shows as typed with no element made from it. The screenshot goes to
``test-artifacts/app.png`` (also when the test fails, with the server log beside it).
CI installs Chromium and its driver (.ci/run); without them the test is skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from emca_vis.data.shapes import render_sample

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
MODELS = ("resnet18", "resnet18_eca", "resnet18_emca_eca", "resnet18_emca_se")  # the defaults + one picked here
# A file name with HTML in it: the page must show it as typed and create no element from it.
UPLOAD = "upload <img src=x onerror=alert(1)> star.png"
UPLOAD_LIMIT_MB = int(re.search(r"^maxUploadSize\s*=\s*(\d+)", (ROOT / ".streamlit" / "config.toml").read_text(),
                                re.MULTILINE).group(1))
HEATMAPS = 'img[alt^="heatmap "]'
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def _browser() -> tuple[str, str] | None:
    names = ("chromium", "chromium-browser", "google-chrome")
    chromium = next((shutil.which(n) for n in names if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


pytestmark = pytest.mark.skipif(_browser() is None, reason="needs Chromium and chromedriver on PATH "
                                                            "(Debian: apt-get install chromium chromium-driver)")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """``streamlit run app/main.py`` on a free port; always terminated."""
    port = _free_port()
    env = {**os.environ, "EMCA_VIS_CHECKPOINT_ROOT": str(tmp_path / "root"),
           "EMCA_VIS_IMAGE_DIR": str(tmp_path / "images")}
    env.pop("EMCA_VIS_DEMO_DIR", None)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not come up in 120 s:\n{log.read_text()}")
            time.sleep(0.3)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = _browser()
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1600,1200"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _rendered_heatmaps(driver) -> list[str]:
    """Alt texts of heatmap images that are loaded and visible."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 50)"
        ".map(i => i.alt)", HEATMAPS)


def _idle(driver) -> bool:
    """No script run in flight (Streamlit's status widget shows one)."""
    return not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')


def _screenshot(driver, path: Path) -> None:
    """The whole page: the window grown to the height of the scrolled content."""
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, ...Array.from(document.querySelectorAll("
        "'[data-testid=stMain], [data-testid=stAppViewContainer], section')).map(e => e.scrollHeight))")
    driver.set_window_size(1600, min(max(int(height) + 120, 1200), 4000))
    time.sleep(1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


@contextlib.contextmanager
def _recorded(browser, log: Path, name: str):
    """A check in the browser: a timeout fails with the heatmaps and errors on the page; the
    screenshot always goes to ``test-artifacts/<name>.png``, the server log beside it on failure."""
    passed = False
    try:
        yield
        passed = True
    except TimeoutException:
        errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ERRORS)]
        pytest.fail(f"timed out; heatmaps rendered: {_rendered_heatmaps(browser)}; errors on the page: {errors}")
    finally:
        try:
            _screenshot(browser, ARTIFACTS / f"{name}.png")
        except WebDriverException as error:  # keep the test's own failure
            print(f"no screenshot: {error.msg}", file=sys.stderr)
        if not passed:
            shutil.copy(log, ARTIFACTS / f"{name}-server.log")


def test_app_in_chromium(server, browser, tmp_path):
    url, log = server
    image = tmp_path / UPLOAD
    render_sample(0, "val", 5, 96).image.save(image)  # a star at 96 px: resized by the models
    wait = WebDriverWait(browser, 120, poll_frequency=0.25)
    with _recorded(browser, log, "app"):
        browser.get(url)
        # The default view: three demo models, clean and corrupted heatmaps, without any set-up.
        wait.until(lambda d: len(_rendered_heatmaps(d)) >= 6 and _idle(d))

        # Select a fourth model in the multiselect.
        box = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stMultiSelect"] input')
        box.click()
        box.send_keys("resnet18_emca_se")
        box.send_keys(Keys.ENTER)
        box.send_keys(Keys.ESCAPE)
        wait.until(lambda d: len(_rendered_heatmaps(d)) >= 8 and _idle(d))

        # Upload a PNG through the page's file input.
        browser.find_element(By.XPATH, '//*[@data-testid="stSidebar"]//label[.//p[text()="Upload"]]').click()
        file_input = wait.until(lambda d: d.find_element(By.CSS_SELECTOR,
                                                         '[data-testid="stSidebar"] input[type="file"]'))
        sidebar = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').text
        assert f"{UPLOAD_LIMIT_MB}MB per file" in sidebar.replace(" MB", "MB"), sidebar  # .streamlit/config.toml
        file_input.send_keys(str(image))
        main = '[data-testid="stMain"]'
        wait.until(lambda d: UPLOAD in d.find_element(By.CSS_SELECTOR, main).text and _idle(d)
                   and len(_rendered_heatmaps(d)) >= 8)
        time.sleep(1.0)  # let the last images paint before checking and taking the picture

        alts = _rendered_heatmaps(browser)
        for model in MODELS:
            assert f"heatmap {model} clean" in alts and f"heatmap {model} corrupted" in alts, alts
        assert len({alt.split()[1] for alt in alts}) >= 3
        assert "no ground-truth box" in browser.find_element(By.CSS_SELECTOR, main).text
        assert not browser.find_elements(By.CSS_SELECTOR, 'img[src="x"], img[onerror]')  # the name stayed text
        errors = browser.find_elements(By.CSS_SELECTOR, ERRORS)
        assert not errors, [e.text for e in errors]
        alerts = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stAlert"]')
        assert not alerts, [e.text for e in alerts]


def test_app_detectors_in_chromium(server, browser):
    """The demo detectors folder: each model's detections and one heatmap per detection, clean
    and corrupted; the screenshot goes to ``test-artifacts/app-detectors.png``."""
    url, log = server
    wait = WebDriverWait(browser, 180, poll_frequency=0.25)
    with _recorded(browser, log, "app-detectors"):
        browser.get(url)
        wait.until(lambda d: len(_rendered_heatmaps(d)) >= 6 and _idle(d))
        folder = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stSelectbox"] input')
        folder.click()
        folder.send_keys("demo detectors")
        folder.send_keys(Keys.ENTER)
        detections = 'img[alt^="detections "]'
        wait.until(lambda d: _idle(d) and len(d.find_elements(By.CSS_SELECTOR, detections)) >= 4
                   and len([a for a in _rendered_heatmaps(d) if "#" in a]) >= 4)
        time.sleep(1.0)
        alts = _rendered_heatmaps(browser)
        for model in ("fasterrcnn_resnet18_fpn", "fasterrcnn_resnet18_emca_eca_fpn"):
            assert f"heatmap {model} clean #0" in alts and f"heatmap {model} corrupted #0" in alts, alts
        text = browser.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text
        assert "multishapes test #7" in text and "pointing game:" in text, text
        errors = browser.find_elements(By.CSS_SELECTOR, ERRORS)
        assert not errors, [e.text for e in errors]
