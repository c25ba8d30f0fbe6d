"""A new user's tree of real calculations, the seed project's layout ``<compound>/spin_so/CHGCAR``,
through collect, split, scrape with the bulk config and train, from the command line, then
notebooks 03 and 05 on it (the issue's "done when")."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO_ROOT

#: six calculations as a user's tree holds them (real VASP files, see ../shared/data/vasp/SOURCES.md):
#: compound -> (fixture, the moment it integrates to in muB; None: not spin-polarized)
SEED_TREE = {
    "Fe": ("fe_bcc/CHGCAR_spin", 2.2725),  # bcc Fe, magnetic
    "NiO": ("nio_soc/CHGCAR.gz", 0.0),  # non-collinear (SOC), locally antiferromagnetic
    "Si": ("si_static/CHGCAR.gz", 0.0),  # ISPIN=2 converged to zero moment
    "Li": ("li_spin/CHGCAR.gz", -0.0203),  # nearly non-magnetic
    "NO": ("nitric_oxide/polarized/CHGCAR", 1.0),  # a molecule in a box, with its OUTCAR
    "Fe_nm": ("fe_bcc/CHGCAR_no_spin", None),  # ISPIN=1: no magnetization
}


def magnb(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "magnb.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, f"magnb {' '.join(args)}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done


def make_seed_tree(root: Path, vasp: Path) -> Path:
    for compound, (fixture, _) in SEED_TREE.items():
        run = root / compound / "spin_so"
        run.mkdir(parents=True)
        src = vasp / fixture
        if src.suffix == ".gz":  # the seed's tree holds plain CHGCARs
            (run / "CHGCAR").write_bytes(gzip.decompress(src.read_bytes()))
        else:
            shutil.copyfile(src, run / "CHGCAR")
        for companion in ("OUTCAR", "OSZICAR"):
            if (src.parent / companion).is_file():
                shutil.copyfile(src.parent / companion, run / companion)
    return root


@pytest.mark.slow
def test_a_seed_style_tree_of_real_crystals_trains_end_to_end(tmp_path, vasp_dir):
    tree = make_seed_tree(tmp_path / "tree", vasp_dir)
    data = tmp_path / "data"

    out = magnb(
        "collect", str(tree), str(data), "--layout", "{compound}/spin_so/CHGCAR", cwd=tmp_path
    )
    assert "6 found, 6 new" in out.stdout and "0 failed" in out.stdout
    out = magnb("split", str(data), "--workers", "1", cwd=tmp_path)
    assert "6 written" in out.stdout and "0 failed" in out.stdout
    index = pd.read_parquet(data / "split/index.parquet").set_index("calc_id")
    for compound, (_, moment) in SEED_TREE.items():
        row = index.loc[f"{compound}__spin_so"]
        if moment is None:
            assert row["spin_kind"] == "none"
        else:
            assert row["moment_integral"] == pytest.approx(moment, abs=1e-4), compound
    assert index.loc["NiO__spin_so", "spin_kind"] == "noncollinear"

    out = magnb("scrape", str(data), "--config", str(REPO_ROOT / "configs/scrape_bulk.yaml"),
                "--workers", "1", cwd=tmp_path)  # fmt: skip
    assert "5 samples of shape (48, 48, 48, 2), 1 skipped" in out.stdout
    assert "SKIPPED Fe_nm__spin_so: not spin-polarized" in out.stdout
    geometry = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1]
        for line in out.stdout.splitlines()
        if "A/voxel" in line
    }
    assert len(geometry) == 5
    assert all(
        g.strip().startswith("cube 12 A at 0.250 A/voxel (48^3): tiled") for g in geometry.values()
    )
    assert "28x28x28" in geometry["Fe__spin_so"] and "32x48x64" in geometry["NO__spin_so"]
    table = pd.read_parquet(data / "table.parquet")
    ok = table[table["status"] == "ok"]
    assert sorted(ok["moment_class"]) == [0, 0, 0, 1, 1]  # |m| > 0.5 muB: Fe and NO

    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {"dataset_dir": str(data), "runs_dir": str(tmp_path / "runs"), "name": "seed-tree",
             "label": "moment_class", "filters": [4], "kernel_size": [5], "pool": [4],
             "dense": [8], "epochs": 2, "batch_size": 2}
        )
    )  # fmt: skip
    out = magnb("train", str(config), cwd=tmp_path)
    metrics_path = next((tmp_path / "runs").glob("seed-tree-*/metrics.json"))
    metrics = json.loads(metrics_path.read_text())
    assert metrics["sizes"] == {"train": 3, "val": 1, "test": 1}
    assert {"model", "majority", "physics", "descriptor"} <= set(metrics["test"])
    assert "| model |" in out.stdout
    # a test split of one sample is said to be one, in the summary and in metrics.json
    assert any("small test split: n = 1" in w for w in metrics["warnings"]), metrics["warnings"]
    small = [line for line in out.stdout.splitlines() if "small test split: n = 1" in line]
    assert small, out.stdout
    # and every metric carries its interval and n
    assert all("ci95" in m and "n" in m for m in metrics["test"].values() if isinstance(m, dict))

    # notebooks 03 and 05 on the same data, as papermill runs them
    from magnb.cli import run_notebook

    executed = tmp_path / "executed"
    run_notebook("03_scrape.ipynb", executed, {
        "data_dir": str(data), "config_file": str(REPO_ROOT / "configs/scrape_bulk.yaml"),
        "workers": 1,
    })  # fmt: skip
    text03 = (executed / "03_scrape.ipynb").read_text()
    assert "dataset unchanged, not rebuilt" in text03  # the CLI's build, found by its hash
    assert "t = 0.5 muB" in text03  # the histogram at the config's threshold
    run_notebook("05_visualize.ipynb", executed, {"runs_dir": str(tmp_path / "runs")})
    text05 = (executed / "05_visualize.ipynb").read_text()
    assert "t = 0.5 muB" in text05 and "t = 4 muB" not in text05
    errors = [
        o
        for c in json.loads(text05)["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "error" or o.get("name") == "stderr"
    ]
    assert not errors, errors  # no traceback, and no red stderr box (TensorFlow's log lines)
