"""Real browser: Debian's Chromium driven by Playwright against `streamlit run dashboard/app.py`.

Draws on the canvas with mouse events, runs SDEdit on a sketch and an inpainting on the MNIST
backend, trains a tiny run from the Train page (live, stopped, resumed, then sampled), and saves a
screenshot of each page into $DIFFUSION_LAB_SCREENSHOTS (default test-artifacts/screenshots). The
server lists the tiny fixture runs, or $DIFFUSION_LAB_BROWSER_RUNS when set; `make screenshots`
takes the README's on the bundled runs (into dashboard/screenshots).
"""

from __future__ import annotations

import contextlib
import json
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
import torch
from safetensors.torch import load_file

from training.runs import list_runs

from .conftest import APP, REPO

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
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
    with dashboard_server(browser_runs) as url:
        yield url


@contextlib.contextmanager
def dashboard_server(runs: Path):
    port = free_port()
    env = {
        **os.environ,
        "DIFFUSION_LAB_RUNS": str(runs),
        "DIFFUSION_LAB_BUNDLED_RUNS": "",
        "DIFFUSION_LAB_DEVICE": "cpu",
        "WANDB_MODE": "offline",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            APP,
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).status == 200:
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"streamlit did not start:\n{proc.stdout.read().decode()}"
                    ) from None
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
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll("
        "'[data-testid=stMain], [data-testid=stMainBlockContainer]')]"
        ".map(e => e.scrollHeight), 600)"
    )
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


def grid_captions(page) -> list[str]:
    """The captions of the Runs page's sample grids (one per compared run)."""
    captions = page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r" · epoch \d"))
    return sorted(c.inner_text() for c in captions.all())


def test_pages_in_a_real_browser(server, page, browser_runs):
    open_page(page, server, "Runs")
    landing = page.get_by_text("Diffusion Lab trains DDPM and flow-matching models")
    assert landing.is_visible() and page.get_by_text("Start here:").is_visible()
    assert not page.get_by_text("Deploy", exact=True).count()  # an app's toolbar
    page.locator(".js-plotly-plot").first.wait_for()
    # the grids of the compared runs (the newest few) each at its latest epoch, with its step
    latest = [
        f"{run.name} · epoch {max(run.sample_grids)} (step {run.summary.step:,} of "
        f"{run.config.plan.total_steps:,})"
        for run in list_runs(browser_runs)
        if run.sample_grids
    ]
    shown = grid_captions(page)
    assert shown and set(shown) <= set(latest)
    earlier = page.get_by_role("button", name="epoch 1", exact=True)
    if earlier.count():  # an epoch every compared run has a grid of
        earlier.click()
        settle(page)
        assert all(" · epoch 1 (step " in c for c in grid_captions(page))
        page.get_by_role("button", name="latest of each run").click()
        settle(page)
    screenshot(page, "runs.png")

    open_page(page, f"{server}/studio", "MNIST studio")
    page.get_by_role("button", name="Sample", exact=True).click()
    page.get_by_role("button", name="Download GIF").wait_for()
    screenshot(page, "studio.png")

    open_page(page, f"{server}/sampler_lab", "Sampler lab")
    page.get_by_text("Backend: MNIST model").wait_for()
    choose_tab(page, "Denoising")
    page.get_by_role("button", name="Denoise").click()
    result_image(page, "iterative · one-step · blur").wait_for()
    page.get_by_text("Iterative denoising: the chain, every 5th course step").wait_for()
    screenshot(page, "sampler_lab_denoising.png")
    choose_tab(page, "SDEdit")
    page.get_by_text("Sketch", exact=True).click()
    settle(page)
    draw(page, 0, [[(0.5, 0.15), (0.5, 0.85)], [(0.35, 0.3), (0.5, 0.15)]])  # a "1"
    page.get_by_role("button", name="SDEdit").click()
    result_image(page, "SDEdit: i=1 t=").wait_for()
    screenshot(page, "sampler_lab_sdedit.png")

    choose_tab(page, "Inpainting")
    draw(page, 0, [[(0.3, 0.4), (0.7, 0.4), (0.7, 0.6), (0.3, 0.6)]])
    page.get_by_role("button", name="Inpaint").click()
    result_image(page, "Inpainting: original · mask · kept").wait_for()
    screenshot(page, "sampler_lab_inpainting.png")
    assert not page.locator("[data-testid='stException']").count()


# ----------------------------------------------------------------------------- the Train page
# long enough that the run is still going when Stop is clicked after the screenshot: 80 steps of
# the D=8 model took 7 s in bf16 on a Zen 4, and once finished before the click landed
TRAIN_STEPS = 300


def metric(page, label: str) -> str:
    """The value of the st.metric labelled `label`."""
    box = page.locator("[data-testid='stMetric']").filter(
        has=page.locator("[data-testid='stMetricLabel']", has_text=re.compile(f"^{label}$"))
    )
    return box.locator("[data-testid='stMetricValue']").inner_text().strip()


def wait_metric(page, label: str, predicate, timeout_s: float = 240) -> str:
    """Poll the page (no clicks, no reloads) until the metric's value satisfies predicate."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = metric(page, label)
            if predicate(value):
                return value
        page.wait_for_timeout(250)
    raise AssertionError(f"metric {label!r} stayed {value!r}")


def step_of(value: str) -> int:
    return int(value.split("/")[0])


def main_button(page, name: str):
    """A button of the page itself (Streamlit's status widget has a "Stop" button too)."""
    return page.get_by_test_id("stMainBlockContainer").get_by_role("button", name=name, exact=True)


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    settle(page)


def test_train_stop_resume_and_sample_from_the_browser(page, tmp_path):
    """Start a tiny run from the Train page, see its step count advance without a click, stop it,
    resume it to the end, find it on the Runs page, sample it in the studio; its weights equal the
    same command run from the CLI."""
    runs = tmp_path / "runs"
    with dashboard_server(runs) as url:
        open_page(page, f"{url}/train", "Train")
        fill(page, "Steps", str(TRAIN_STEPS))
        fill(page, "Width (--hidden)", "8")
        fill(page, "Log every (steps)", "1")
        fill(page, "Run name", "web")
        from playwright.sync_api import expect

        chosen = page.get_by_text(re.compile("the fast recipe's defaults for flow-class, with"))
        for part in ("name='web'", f"steps={TRAIN_STEPS}", "hidden=8", "log_every=1"):
            expect(chosen).to_contain_text(part)  # the options follow the widgets
        expect(chosen).to_contain_text("dataset='mnist-5k'")
        expect(chosen).to_contain_text("wandb_mode='offline'")
        command = page.locator("[data-testid='stCode']").first.inner_text()
        assert f"--runs-dir={runs}" in command  # the server's runs folder
        assert f"--config={runs / 'web' / 'options.json'}" in command
        main_button(page, "Start training").click()
        wait_metric(page, "Status", lambda v: v == "running")  # its options file written
        # the same command (and options file) from the CLI, in one go, beside it (compared at
        # the end)
        cli = [
            a if not a.startswith("--runs-dir=") else f"--runs-dir={tmp_path / 'cli'}"
            for a in command.replace("python -m training ", "").split()
        ]
        reference = subprocess.Popen(
            [sys.executable, "-m", "training", *cli],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = step_of(wait_metric(page, "Step", lambda v: step_of(v) >= 1))
        later = step_of(wait_metric(page, "Step", lambda v: step_of(v) >= first + 3))
        assert first < later < TRAIN_STEPS  # advanced with no click
        page.locator(".js-plotly-plot").nth(1).wait_for()  # loss and learning rate drawn
        screenshot(page, "train.png")

        main_button(page, "Stop").click()
        # at once, while the run winds down (W&B closes for seconds), not once it has closed
        page.get_by_text("Stopping web: it finishes its step").wait_for(timeout=30_000)
        assert metric(page, "Status") != "stopped"
        wait_metric(page, "Status", lambda v: v == "stopped")
        page.get_by_text(re.compile(r"^Stopped web at epoch \d+ \(step \d+ of 300\)")).wait_for()
        record = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
        assert (runs / "web" / "summary.json").exists(), f"the page says stopped; files: {record}"
        stopped_at = read_json(runs / "web" / "summary.json")["step"]
        assert later <= stopped_at < TRAIN_STEPS
        main_button(page, "Resume").click()
        wait_metric(page, "Status", lambda v: v == "finished", timeout_s=400)
        assert metric(page, "Step") == f"{TRAIN_STEPS} / {TRAIN_STEPS}"

        open_page(page, url, "Runs")
        page.locator("[data-testid='stMultiSelect']").get_by_text("web", exact=True).wait_for()
        open_page(page, f"{url}/studio", "MNIST studio")
        page.get_by_role("button", name="Sample", exact=True).click()
        page.get_by_role("button", name="Download GIF").wait_for()
        assert not page.locator("[data-testid='stException']").count()

    argv = read_json(runs / "web" / "job.json")["argv"]
    assert argv[-1] == "--resume"  # the job file now records the resume
    _, err = reference.communicate(timeout=400)
    assert reference.returncode == 0, err[-2000:]
    ours = load_file(runs / "web/checkpoints/epoch-0001/model.safetensors")
    theirs = load_file(tmp_path / "cli/web/checkpoints/epoch-0001/model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_evaluate_from_the_train_page_says_done(page, lab_runs, tmp_path):
    """Evaluate a finished run from the Train page: a progress bar while the real evaluation
    runs (its classifier is trained on the way: minutes), then a done notice whose link opens
    the Runs page with the result."""
    runs = tmp_path / "runs"
    shutil.copytree(lab_runs / "ddpm-class", runs / "ddpm-class")
    with dashboard_server(runs) as url:
        open_page(page, f"{url}/train", "Train")
        page.get_by_text("Evaluate ddpm-class").click()
        fill(page, "Samples per class", "1")
        fill(page, "Sampler steps", "1")
        main_button(page, "Evaluate").click()
        page.get_by_text(re.compile("^Evaluating ddpm-class")).first.wait_for(timeout=30_000)
        done = page.get_by_text(re.compile(r"^Evaluation of ddpm-class done: 5 results\."))
        done.wait_for(timeout=900_000)
        page.get_by_role("link", name="See every result on the Runs page").click()
        page.get_by_role("heading", name="Runs").wait_for()
        settle(page)
        page.get_by_text("Quality against compute").wait_for()
        assert not page.locator("[data-testid='stException']").count()
