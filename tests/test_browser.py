"""Notebook 05 in a real JupyterLab, driven by Debian's Chromium through Playwright: run all
cells; switch the filter explorer's layer, filter, axis and slice and the density explorer's
slice; restart the kernel and run all again; run the explorer cell once more. After every step
each plotly figure must hold data traces whose x range spans the data, each explorer slice shown
must be the one its controls select, and the browser console must stay free of errors.

Set ``MAGNB_SCREENSHOTS=<folder>`` to keep the two explorer screenshots there (docs/ holds the
ones taken so)."""

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
N_PLOTS = 7  # filters: slice, projections, isosurface; density; histogram, balance, curves


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    """A folder with a trained tiny two-layer run (7^3 then 5^3 kernels) and a copy of notebook
    05 pointing at it."""
    root = tmp_path_factory.mktemp("lab")
    data = build_demo_data(root, 6)
    train(
        TrainConfig(
            dataset_dir=data,
            runs_dir=root / "runs",
            filters=(3, 2),
            kernel_size=(7, 5),
            pool=(2, 2),
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
    # every cell stays in the page (no windowing), so every figure can be inspected
    # and no news pop-up over the screenshots
    settings = root / ".jupyter/lab/user-settings/@jupyterlab"
    for name, value in (("notebook-extension/tracker", {"windowingMode": "none"}),
                        ("apputils-extension/notification", {"fetchNews": "false"})):  # fmt: skip
        (settings / name).parent.mkdir(parents=True)
        (settings / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
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


# what every plotly figure in the page shows: its meta, its traces (as plotly.js decoded them)
# and how many hold data, and for a heatmap its columns, x values and the x range drawn
PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const traces = gd._fullData || [];
  const has = t => ['x', 'y', 'z', 'value'].some(k => t[k] && t[k].length > 0);
  const h = traces.find(t => t.type === 'heatmap');
  const xs = h && h.x ? Array.from(h.x) : [];
  const range = gd._fullLayout && gd._fullLayout.xaxis ? gd._fullLayout.xaxis.range : null;
  return {meta: (gd.layout && gd.layout.meta) || null, traces: traces.length,
          filled: traces.filter(has).length,
          cols: h && h.z && h.z[0] ? h.z[0].length : null, xs: xs.length,
          span: xs.length ? [Math.min(...xs), Math.max(...xs)] : null, range: range};
})"""


def _problems(plots: list[dict], n: int = N_PLOTS) -> list[str]:
    bad = [] if len(plots) >= n else [f"{len(plots)} figures in the page, expected {n}"]
    for k, p in enumerate(plots):
        name = (p["meta"] or {}).get("view", f"figure {k}")
        if not p["filled"]:
            bad.append(f"{name}: no data traces ({p['traces']} traces)")
        if p["cols"] is not None and p["cols"] != p["xs"]:
            bad.append(f"{name}: {p['xs']} x values for {p['cols']} columns")
        if p["span"] and p["range"]:
            lo, hi = p["span"]
            if min(p["range"]) > lo + 1e-6 or max(p["range"]) < hi - 1e-6:
                bad.append(f"{name}: x range {p['range']} does not hold the data {p['span']}")
    return bad


def _view(plots: list[dict], view: str) -> dict:
    found = [
        p["meta"] for p in plots if isinstance(p["meta"], dict) and p["meta"].get("view") == view
    ]
    assert len(found) == 1, f"{len(found)} {view} figures"
    return found[0]


class Page:
    """The notebook page and the controls of its two explorers (0: filters, 1: density)."""

    def __init__(self, page) -> None:
        self.page = page

    def control(self, kind: str, label: str, which: int):
        lab = self.page.locator("label.widget-label", has_text=label)
        return self.page.locator(kind).filter(has=lab).nth(which)

    def slider_value(self, label: str, which: int) -> int:
        return int(
            self.control(".widget-slider", label, which).locator(".widget-readout").inner_text()
        )

    def step_slider(self, label: str, which: int, key: str, times: int) -> None:
        handle = self.control(".widget-slider", label, which).locator(".noUi-handle").first
        handle.focus()
        for _ in range(times):
            handle.press(key)

    def state(self, which: int) -> dict:
        """What explorer ``which``'s controls select."""
        axis = self.control(".widget-toggle-buttons", "slice across", which)
        active = axis.locator("button.mod-active").inner_text().strip()
        layer = self.control(".widget-dropdown", "layer", which).locator("select").input_value()
        state = {"axis": "abc".index(active), "index": self.slider_value("slice", which),
                 "layer": layer, "channel": self.slider_value("channel", which)}  # fmt: skip
        if which == 0:
            state["filter"] = self.slider_value("filter", 0)
        return state

    def settled(self, timeout: float = 60.0) -> list[dict]:
        """Wait until every figure holds data and each explorer shows what its controls say;
        fail with what is wrong when that does not happen."""
        deadline = time.time() + timeout
        while True:
            plots = self.page.evaluate(PLOTS)
            bad = _problems(plots)
            if not bad:
                for which, view in ((0, "filters-slice"), (1, "density")):
                    metas = [p["meta"] for p in plots if (p["meta"] or {}).get("view") == view]
                    if len(metas) != 1:
                        bad.append(f"{len(metas)} {view} figures in the page")
                        continue
                    meta, want = metas[0], self.state(which)
                    bad += [f"{view}: shows {k} {meta.get(k)!r}, selected {v!r}"
                            for k, v in want.items() if meta.get(k) != v]  # fmt: skip
            if not bad:
                return plots
            if time.time() > deadline:
                raise AssertionError("; ".join(bad))
            time.sleep(0.5)

    def run_all(self, restart: bool) -> None:
        p = self.page
        if restart:
            p.get_by_role("menuitem", name="Kernel", exact=True).click()
            p.locator(".lm-Menu-item", has_text="Restart Kernel and Run All Cells").first.click()
            p.locator(".jp-Dialog .jp-mod-accept").click()
        else:
            p.get_by_role("menuitem", name="Run", exact=True).click()
            p.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        # the last code cell is queued ([*]), then has run when its prompt shows a number again
        # (after a restart the old outputs and numbers stay in the page until then)
        last = p.locator(".jp-CodeCell .jp-InputPrompt").last.element_handle()
        p.wait_for_function("el => el.textContent.includes('*')", arg=last, timeout=60_000)
        p.wait_for_function("el => /\\[\\d+\\]/.test(el.textContent)", arg=last, timeout=240_000)


def test_explorers_show_the_selected_slices_through_restarts(lab_root, lab_url, tmp_path):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
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
        nb = Page(page)
        try:
            nb.run_all(restart=False)
            plots = nb.settled(120)
            assert _view(plots, "filters-slice")["index"] == 3  # a 7^3 kernel's centre
            # the deeper layer: its own 5^3 axes, at its centre
            nb.control(".widget-dropdown", "layer", 0).locator("select").select_option(
                "periodic_conv_2"
            )
            plots = nb.settled()
            assert _view(plots, "filters-slice")["index"] == 2
            nb.step_slider("filter", 0, "ArrowRight", 1)
            nb.settled()
            nb.control(".widget-toggle-buttons", "slice across", 0).get_by_role(
                "button", name="a", exact=True
            ).click()
            nb.settled()
            nb.step_slider("slice", 0, "ArrowLeft", 2)
            plots = nb.settled()
            assert _view(plots, "filters-slice")["index"] == 0
            nb.step_slider("slice", 1, "ArrowRight", 2)
            nb.settled()
            nb.step_slider("slice", 1, "ArrowLeft", 2)  # back to the plane of the atoms
            nb.settled()
            out = Path(os.environ.get("MAGNB_SCREENSHOTS") or tmp_path)
            out.mkdir(parents=True, exist_ok=True)
            panels = page.locator(".jp-OutputArea-output .widget-hbox").filter(
                has=page.locator(".js-plotly-plot")
            )
            assert panels.count() == 2  # controls and slice of each explorer
            for k, name in enumerate(("filter_explorer.png", "density_explorer.png")):
                panels.nth(k).screenshot(path=str(out / name), scale="css")
            # restart the kernel and run everything again: fresh figures, all drawn
            nb.run_all(restart=True)
            plots = nb.settled(120)
            assert _view(plots, "filters-slice")["layer"] == "periodic_conv_1"
            nb.step_slider("slice", 0, "ArrowRight", 1)
            nb.settled()
            # run the filter explorer's cell once more: its new panel draws and answers
            cell = page.locator(".jp-CodeCell").filter(has_text="FilterExplorer(run.model").first
            prompt = cell.locator(".jp-InputPrompt")
            before = prompt.inner_text()
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Control+Enter")
            page.wait_for_function(  # a new execution count: the cell has run again
                "([el, old]) => /\\[\\d+\\]/.test(el.textContent) && el.textContent !== old",
                arg=[prompt.element_handle(), before],
                timeout=60_000,
            )
            nb.settled()
            nb.step_slider("slice", 0, "ArrowLeft", 1)
            plots = nb.settled()
            assert _view(plots, "filters-slice")["index"] == 2
        except Exception:
            page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
            raise
        stderr = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
        assert not [t for t in stderr.all_text_contents() if "Traceback" in t]
        browser.close()
    assert not errors, errors
    for name in ("filter_explorer.png", "density_explorer.png"):
        assert (out / name).stat().st_size > 10_000
