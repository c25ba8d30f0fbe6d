"""The notebooks are thin, committed without outputs, and run end to end under papermill."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys

import pytest

from magnb.config import TrainConfig
from tests.conftest import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_collect.ipynb", "02_split.ipynb", "03_scrape.ipynb", "04_train.ipynb",
        "05_visualize.ipynb",
    ]  # fmt: skip


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_thin(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and not c.get("execution_count") for c in code)
    tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, "exactly one papermill 'parameters' cell"
    for cell in code:
        source = "".join(cell["source"])
        ast.parse(source)
        tree = ast.parse(source)
        defs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        assert not defs, f"{path.name}: logic belongs in magnb, not in a notebook cell"
        assert len(source.splitlines()) <= 40


def test_train_notebook_parameters_are_the_config_fields():
    nb = json.loads((REPO_ROOT / "notebooks/04_train.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    names = {
        t.id
        for node in ast.parse("".join(cell["source"])).body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    assert names - {"_names_before_injection"} == {f.name for f in dataclasses.fields(TrainConfig)}


def _parameters(name: str) -> dict:
    """The values of a notebook's parameters cell, as the cell itself sets them."""
    nb = json.loads((REPO_ROOT / "notebooks" / name).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)  # plain assignments (checked above: no defs)
    return {k: v for k, v in namespace.items() if not k.startswith("_")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_is_its_paired_script(path):
    """One source per notebook: the jupytext percent script, paired with the .ipynb."""
    import jupytext

    script = path.with_suffix(".py")
    assert script.is_file(), f"{script.name} is missing: the notebook's source"
    paired = jupytext.read(script)
    committed = jupytext.read(path)

    def cells(nb):
        return [
            (c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells
        ]

    assert cells(paired) == cells(committed), (
        f"{path.name} and {script.name} differ: run .venv/bin/jupytext --sync notebooks/0*.py"
    )
    assert "ipynb,py:percent" in (REPO_ROOT / "notebooks/jupytext.toml").read_text()
    assert not (REPO_ROOT / "tools/make_notebooks.py").exists()


def test_notebook_defaults_are_the_shipped_configs():
    """The notebooks run from notebooks/, the CLI from the checkout: their default paths are the
    same folders, and 04's other defaults are TrainConfig's."""
    from magnb.config import load_train_config, to_mapping

    here = REPO_ROOT / "notebooks"
    default = load_train_config(REPO_ROOT / "configs/default.yaml")
    train = _parameters("04_train.ipynb")
    assert (here / train["dataset_dir"]).resolve() == (REPO_ROOT / default.dataset_dir).resolve()
    assert (here / train["runs_dir"]).resolve() == (REPO_ROOT / default.runs_dir).resolve()
    defaults = to_mapping(TrainConfig())
    for key in set(defaults) - {"dataset_dir", "runs_dir"}:
        assert train[key] == defaults[key], key
    visualize = _parameters("05_visualize.ipynb")
    assert (here / visualize["runs_dir"]).resolve() == (REPO_ROOT / default.runs_dir).resolve()
    # 03 reads a config file instead of repeating ScrapeConfig's fields
    from magnb.dataset import ScrapeConfig

    scrape = _parameters("03_scrape.ipynb")
    assert (here / scrape["config_file"]).resolve() == REPO_ROOT / "configs/scrape.yaml"
    fields = {f.name for f in dataclasses.fields(ScrapeConfig)}
    assert set(scrape) & fields <= {"data_dir", "workers"}


def test_notebook_05_draws_the_threshold_the_dataset_was_built_with():
    nb = json.loads((REPO_ROOT / "notebooks/05_visualize.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    calls = [line for line in code.splitlines() if "moment_histogram(" in line]
    assert calls and all("dataset_threshold(run.dataset_dir)" in line for line in calls)


@pytest.mark.slow
def test_demo_runs_every_notebook(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "magnb.cli", "demo", "--out", str(out), "--compounds", "8"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for name in ("01_collect", "02_split", "03_scrape", "04_train", "05_visualize"):
        executed = json.loads((out / "notebooks" / f"{name}.ipynb").read_text())
        errors = [
            o
            for c in executed["cells"]
            if c["cell_type"] == "code"
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, name
    assert (out / "data/manifest.parquet").is_file()
    assert (out / "data/dataset.h5").is_file()
    runs = list((out / "runs").glob("*/metrics.json"))
    assert len(runs) == 1
    assert (runs[0].parent / "04_train.ipynb").is_file()
    pictures = list((runs[0].parent / "figures").iterdir())
    assert len(pictures) >= 9 and all(p.stat().st_size > 1000 for p in pictures)
    metrics = json.loads(runs[0].read_text())
    assert {"model", "majority", "physics", "descriptor"} <= set(metrics["test"])
    assert "| majority |" in done.stdout
    # the demo's task: the spin pattern (FM, Neel, zigzag, stripe) of compositions the model has
    # not seen. An integral or density statistics cannot tell Neel from zigzag from stripe; the
    # model with 15-voxel periodic kernels sees where the up and down moments sit.
    assert metrics["label"] == "order_pattern"
    test = metrics["test"]
    assert len(test["model"]["confusion_matrix"]) == 4
    model = test["model"]["balanced_accuracy"]
    assert model > test["descriptor"]["balanced_accuracy"]
    assert model > test["physics"]["balanced_accuracy"]
    assert model > test["majority"]["balanced_accuracy"]
