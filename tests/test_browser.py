"""Notebook 05 in a real JupyterLab, driven by Debian's Chromium through Playwright: run all
cells, move the filter explorer's slice slider, and see the plotly figure change."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from magnb.config import TrainConfig
from magnb.train import train
from tests.conftest import REPO_ROOT, build_demo_data

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    """A folder with a trained tiny run and a copy of notebook 05 pointing at it."""
    root = tmp_path_factory.mktemp("lab")
    data = build_demo_data(root, 6)
    train(
        TrainConfig(
            dataset_dir=data,
            runs_dir=root / "runs",
            filters=(3,),
            kernel_size=(7,),
            pool=(2,),
            dense=(4,),
            epochs=1,
            batch_size=4,
        ),  # fmt: skip
        progress=False,
    )
    nb = json.loads((REPO_ROOT / "notebooks/05_visualize.ipynb").read_text())
    for cell in nb["cells"]:
        if "parameters" in cell["metadata"].get("tags", []):
            source = "".join(cell["source"]).replace(
                '"../demo/runs"', json.dumps(str(root / "runs"))
            )
            cell["source"] = source
    (root / "notebooks").mkdir()
    (root / "notebooks/05_visualize.ipynb").write_text(json.dumps(nb))
    return root


@pytest.fixture(scope="module")
def lab_url(lab_root):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it)")
    port = _free_port()
    log = open(lab_root / "lab.log", "w")  # noqa: SIM115 (closed below)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(lab_root / ".jupyter")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.token=",
         "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         f"--ServerApp.root_dir={lab_root}", "--LabApp.news_url=None",
         "--LabServerApp.extension_manager=readonly"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not start:\n" + (lab_root / "lab.log").read_text()[-3000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


# the first plotly figure's heatmap values; null while the figure is being redrawn
FIRST_SLICE = """() => {
  const plots = document.querySelectorAll('.js-plotly-plot');
  const data = plots.length ? plots[0].data : null;
  return data && data.length && data[0].z ? JSON.stringify(data[0].z) : null;
}"""


def test_slider_moves_the_filter_slice(lab_root, lab_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab_url}/lab/tree/notebooks/05_visualize.ipynb")
        page.wait_for_selector(".jp-Notebook", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=120_000)  # fmt: skip
        # a fresh Jupyter config may ask which kernel to start: take the notebook's own (magnb)
        dialog = page.get_by_role("button", name="Select", exact=True)
        try:
            dialog.wait_for(timeout=5_000)
            dialog.click()
        except Exception:
            pass  # no dialog: the kernel started by itself
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=240_000
            )
        except Exception:
            page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
            raise
        before = page.evaluate(FIRST_SLICE)
        assert before is not None
        # the filter explorer's "slice" slider: focus its handle, step it with the keyboard
        label = page.locator("label.widget-label", has_text="slice")
        slider = page.locator(".widget-slider").filter(has=label).first
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        for _ in range(2):
            handle.press("ArrowRight")
        page.wait_for_function(
            f"() => {{ const z = ({FIRST_SLICE})(); return z !== null && z !== {json.dumps(before)}; }}",
                               timeout=60_000)  # fmt: skip
        after = page.evaluate(FIRST_SLICE)
        assert after != before
        page.screenshot(path=str(tmp_path / "filter_explorer.png"), full_page=False)
        stderr = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
        assert not [t for t in stderr.all_text_contents() if "Traceback" in t]
        browser.close()
    assert (tmp_path / "filter_explorer.png").stat().st_size > 10_000
