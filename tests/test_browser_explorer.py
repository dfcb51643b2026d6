"""The knockout explorer used as a user uses it: JupyterLab in headless Chromium, a mouse click on
a heatmap cell, the readout checked against a fresh KnockoutSession, the mask exported by its
button and read back.

Needs Debian's chromium (/usr/bin/chromium) and the `browser` extra (playwright, jupyterlab); no
browser download. Marked `browser`: `make test` leaves it out, `make test-browser` and .ci/run
run it. SPT_INTERP_SCREENSHOT=path also saves the screenshot after the click there (that is how
figures/knockout_explorer_click.png was made).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_interactive_knockout.ipynb"
CHROMIUM = "/usr/bin/chromium"
# As the machine notes say: without these, Chromium keeps calling home through a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOKEN = "spt-interp-browser-test"
READOUT = re.compile(
    r"(\d+) head\(s\) knocked out .*?: F ([\d.]+) \(baseline ([\d.]+), .*?\); "
    r"log-odds (-?[\d.]+) \(baseline (-?[\d.]+)\)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def jupyter_lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a copy of notebook 02; yields its base URL."""
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}  # fmt: skip
    # A log file, not a pipe: nobody reads the server's chatter while the test runs.
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={tmp_path}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {log_text(tmp_path)}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def log_text(folder: Path) -> str:
    return (folder / "jupyter.log").read_text()[-2000:]


def cell_centre(page, layer: int, head: int) -> tuple[float, float]:
    """Page coordinates of heatmap cell (layer, head), from plotly's own axis mappings."""
    return page.evaluate(
        """([layer, head]) => {
            const plot = document.querySelector('.jp-OutputArea .js-plotly-plot');
            const box = plot.querySelector('.nsewdrag').getBoundingClientRect();
            const x = plot._fullLayout.xaxis, y = plot._fullLayout.yaxis;
            return [box.left + x.d2p(head), box.top + y.d2p(layer)];
        }""",
        [layer, head],
    )


def run_in_new_cell(page, code: str, tag: str, timeout_ms: int) -> str:
    """Add a cell below the current one, run it; return what it printed after ``tag``."""
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type(code)
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output", has_text=tag).first
    output.wait_for(timeout=timeout_ms)
    return output.inner_text().split(tag, 1)[1].strip()


def test_a_click_on_the_heatmap_knocks_the_head_out_and_export_writes_its_mask(
    jupyter_lab, tmp_path
):
    from playwright.sync_api import sync_playwright

    from spt_interp.mask import HeadMask

    url = f"{jupyter_lab}/lab/tree/{NOTEBOOK.name}?token={TOKEN}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
        # The kernel has started when the status bar says so.
        page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=90_000)
        # Run the first four cells as a reader would: Shift+Enter from the top.
        page.locator(".jp-Cell").first.click()
        for _ in range(4):
            page.keyboard.press("Shift+Enter")
        page.wait_for_selector(".jp-OutputArea .js-plotly-plot .nsewdrag", timeout=240_000)
        readout = page.locator(".widget-html-content", has_text="knocked out").first
        readout.wait_for(timeout=60_000)
        start = READOUT.search(readout.inner_text())
        assert start and start.group(1) == "0", readout.inner_text()

        # The top head of the notebook's ranking, as its first cell printed it.
        printed = page.locator(".jp-OutputArea-output", has_text="top 8 heads").first
        layer, head = map(int, re.search(r"L(\d+)\.H(\d+)", printed.inner_text()).groups())
        page.mouse.click(*cell_centre(page, layer, head))
        page.wait_for_function(
            "[...document.querySelectorAll('.widget-html-content')]"
            ".some(e => e.innerText.startsWith('1 head(s) knocked out'))",
            timeout=60_000,
        )
        after = READOUT.search(readout.inner_text())
        screenshot = tmp_path / "explorer_after_click.png"
        page.locator(".jp-OutputArea-output", has=page.locator(".js-plotly-plot")).first\
            .screenshot(path=str(screenshot))  # fmt: skip
        if os.environ.get("SPT_INTERP_SCREENSHOT"):
            shutil.copy(screenshot, os.environ["SPT_INTERP_SCREENSHOT"])

        # The log-odds a fresh session gives for that one head, computed in the same kernel.
        expected = json.loads(run_in_new_cell(
            page,
            "from spt_interp.viz.widgets import KnockoutSession\n"
            "fresh = KnockoutSession.start(hooked, pairs, scores)\n"
            f"r = fresh.toggle({layer}, {head}); b = fresh.baseline\n"
            "print('FRESH', json.dumps([r.apology_share, r.log_odds, b.apology_share, "
            "b.log_odds]))",
            tag="FRESH",
            timeout_ms=120_000,
        ))  # fmt: skip
        shown = [float(after.group(i)) for i in (2, 4, 3, 5)]
        # The readout rounds F to 3 and the log-odds to 2 decimals.
        assert shown == pytest.approx(
            [round(expected[0], 3), round(expected[1], 2), round(expected[2], 3),
             round(expected[3], 2)], abs=1e-9
        )  # fmt: skip

        mask_path = Path(page.locator(".widget-text input").first.input_value())
        page.get_by_role("button", name="Export mask").click()
        page.wait_for_function(
            "[...document.querySelectorAll('.widget-html-content')]"
            ".some(e => e.innerText.startsWith('saved 1 head(s)'))",
            timeout=30_000,
        )
        browser.close()
    try:
        assert HeadMask.load(mask_path).head_set == [(layer, head)]
    finally:
        shutil.rmtree(mask_path.parent, ignore_errors=True)  # the notebook's temp folder
