"""The dashboard in a real headless Chromium: every page draws charts, tables and images.

LAB_SCREENSHOTS=figures saves the screenshots there (for the README); LAB_SCREENSHOT_RUNS=PATH
serves that runs root instead of the test's own short runs.
"""

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
# url path, the element that must be drawn, what inside it shows it is drawn, screenshot name
PAGES = (
    ("", "stDataFrame", "canvas", "overview"),
    ("curves", "stPlotlyChart", ".main-svg", "curves"),
    ("classes", "stPlotlyChart", ".main-svg", "classes"),
    ("saliency", "stImage", "img", "saliency"),
    ("data", "stImage", "img", "data"),
)

# grey skeletons or an empty frame are nearly one colour; a chart, table or image is not
DRAWN = 0.02  # the least share of pixels off the background colour

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium"),
]


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """`streamlit run dashboard/app.py` on 127.0.0.1, stopped by its PID afterwards."""
    root = os.environ.get("LAB_SCREENSHOT_RUNS") or request.getfixturevalue("dashboard_runs")
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true", "--server.address", "127.0.0.1",
        "--server.port", str(port), "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
        "--", "--runs-root", str(root),
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read().decode() == "ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not come up:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's Chromium driven by Playwright (no `playwright install`)."""
    from playwright.sync_api import sync_playwright

    flags = (
        "--no-sandbox --disable-gpu --disable-background-networking --disable-component-update "
        "--disable-sync --no-first-run"
    )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=flags.split(),
            viewport={"width": 1400, "height": 1600},
        )
        yield context
        context.close()


def drawn_share(png: bytes) -> float:
    """Share of pixels that differ clearly from the page's most common colour."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return float((np.abs(pixels - background).sum(1) > 30).mean())


def drawn_screenshot(element, timeout: float = 30) -> bytes:
    """The element's screenshot once it is drawn (plotly and the data grid draw after the
    script ends), or the last one at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        shot = element.screenshot()
        if drawn_share(shot) > DRAWN or time.monotonic() > deadline:
            return shot
        element.page.wait_for_timeout(100)


@pytest.mark.parametrize(("path", "testid", "inner", "name"), PAGES, ids=[p[3] for p in PAGES])
def test_page_draws_content(server, browser, path, testid, inner, name, tmp_path):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/{path}", timeout=60_000)
    element = page.locator(f'[data-testid="{testid}"]').first
    failure = page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
    element.locator(inner).first.or_(failure.first).wait_for(state="visible", timeout=120_000)
    # the script has finished once the "running" indicator is gone
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=120_000)
    assert not failure.count(), f"{name}: {failure.first.inner_text()}"
    assert not errors, errors
    shot = drawn_screenshot(element)
    out = Path(os.environ.get("LAB_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"dashboard_{name}.png").write_bytes(page.screenshot())
    (out / f"dashboard_{name}_{testid}.png").write_bytes(shot)
    assert drawn_share(shot) > DRAWN, f"{name}: {testid} is drawn blank"
    page.close()


def test_your_image_page_explains_an_upload(server, browser, tmp_path):
    # the upload widget itself, in a browser: a picture of another size and mode
    picture = tmp_path / "my picture.png"
    Image.new("L", (200, 150), 90).save(picture)
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/image", timeout=60_000)
    uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
    uploader.wait_for(state="attached", timeout=120_000)
    uploader.set_input_files(str(picture))
    failure = page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
    maps = page.locator('[data-testid="stImage"] img')
    maps.nth(3).or_(failure.first).wait_for(state="visible", timeout=120_000)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=120_000)
    assert not failure.count(), failure.first.inner_text()
    assert not errors, errors
    assert maps.count() == 4  # the picture at 64x64 and the three default maps
    assert "my picture.png" in page.inner_text("body")
    page.close()
