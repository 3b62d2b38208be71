"""Real browser: Debian's Chromium driven by Playwright against `streamlit run dashboard/app.py`.

Draws on the canvas with mouse events, runs SDEdit on a sketch and an inpainting on the MNIST
backend, and saves a screenshot of each page into $DIFFUSION_LAB_SCREENSHOTS (default
test-artifacts/screenshots). The server lists the tiny fixture runs, or $DIFFUSION_LAB_BROWSER_RUNS
when set; README screenshots of trained models, e.g.:
    DIFFUSION_LAB_BROWSER_RUNS=runs DIFFUSION_LAB_SCREENSHOTS=docs/screenshots \
        .venv/bin/pytest -m browser tests/dashboard
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import APP, REPO

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
TIMEOUT_MS = 120_000  # generous: CI machines are small and shared


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_runs(request) -> Path:
    """$DIFFUSION_LAB_BROWSER_RUNS, else the tiny runs trained for the tests."""
    given = os.environ.get("DIFFUSION_LAB_BROWSER_RUNS")
    return Path(given).resolve() if given else request.getfixturevalue("lab_runs")


@pytest.fixture(scope="module")
def server(browser_runs):
    """The dashboard on 127.0.0.1:<free port>, listing browser_runs; killed in teardown."""
    port = free_port()
    env = {**os.environ, "DIFFUSION_LAB_RUNS": str(browser_runs), "DIFFUSION_LAB_BUNDLED_RUNS": "",
           "DIFFUSION_LAB_DEVICE": "cpu", "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP,
                             "--server.headless", "true", "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).status == 200:
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start:\n{proc.stdout.read().decode()}")
                time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(server):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def shots() -> Path:
    out = Path(os.environ.get("DIFFUSION_LAB_SCREENSHOTS", REPO / "test-artifacts" / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def screenshot(page, name: str) -> None:
    """A screenshot of the whole page: the viewport grows to the app's content height."""
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll("
                           "'[data-testid=stMain], [data-testid=stMainBlockContainer]')]"
                           ".map(e => e.scrollHeight), 600)")
    page.set_viewport_size({"width": 1400, "height": min(height + 80, 6000)})
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots() / name), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def settle(page) -> None:
    """Wait until the script run is over (Streamlit shows a status widget while it runs)."""
    page.wait_for_timeout(300)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached")


def open_page(page, url: str, title: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=title).wait_for()
    settle(page)


def draw(page, canvas_index: int, strokes: list[list[tuple[float, float]]]) -> None:
    """Mouse strokes on the canvas_index-th drawing canvas; points are fractions of its size."""
    canvas = page.locator("canvas.upper-canvas:visible").nth(canvas_index)
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(500)  # let the canvas finish its first layout
    box = canvas.bounding_box()
    for stroke in strokes:
        (x0, y0), *rest = stroke
        page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()
    settle(page)


def choose_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    settle(page)


def result_image(page, caption_part: str):
    return page.locator("[data-testid='stImage']").filter(has_text=caption_part).first


def test_pages_in_a_real_browser(server, page):
    open_page(page, server, "Runs")
    page.locator(".js-plotly-plot").first.wait_for()
    screenshot(page, "runs.png")

    open_page(page, f"{server}/studio", "MNIST studio")
    page.get_by_role("button", name="Sample", exact=True).click()
    page.get_by_role("button", name="Download GIF").wait_for()
    screenshot(page, "studio.png")

    open_page(page, f"{server}/sampler_lab", "Sampler lab")
    page.get_by_text("Backend: MNIST model").wait_for()
    choose_tab(page, "SDEdit")
    page.get_by_text("Sketch", exact=True).click()
    settle(page)
    draw(page, 0, [[(0.5, 0.15), (0.5, 0.85)], [(0.35, 0.3), (0.5, 0.15)]])  # a "1"
    page.get_by_role("button", name="SDEdit").click()
    result_image(page, "i_start").wait_for()
    screenshot(page, "sampler_lab_sdedit.png")

    choose_tab(page, "Inpainting")
    draw(page, 0, [[(0.3, 0.4), (0.7, 0.4), (0.7, 0.6), (0.3, 0.6)]])
    page.get_by_role("button", name="Inpaint").click()
    result_image(page, "inpainted").wait_for()
    screenshot(page, "sampler_lab_inpainting.png")
    assert not page.locator("[data-testid='stException']").count()
