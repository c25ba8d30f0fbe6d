"""A stage that leaves nothing usable exits non-zero with the count and the commonest reason;
config and dataset errors come before TensorFlow is imported; TensorFlow's log lines are off
unless asked for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from magnb.collect import CollectConfig, collect
from magnb.dataset import ScrapeConfig, describe_geometry, scrape
from magnb.errors import EXIT_NOTHING_USABLE, NothingUsableError, nothing_usable
from magnb.split import SplitConfig, split_all
from tests.conftest import REPO_ROOT, make_fixture_tree


def magnb(
    *args: str, env: dict | None = None, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "magnb.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bulk_data(tmp_path_factory, vasp_dir) -> Path:
    """Stages 01-02 on the real fixtures: bulk cells (Fe, Li, Si, NiO) and a molecule in a box."""
    root = tmp_path_factory.mktemp("bulk")
    tree = make_fixture_tree(root / "calcs", vasp_dir)
    collect(CollectConfig(source=tree, data_dir=root / "data", progress=False))
    split_all(SplitConfig(data_dir=root / "data", progress=False, workers=1))
    return root / "data"


def test_the_slab_config_on_bulk_crystals_fails_with_the_count_and_the_reason(bulk_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bulk_data, data)
    done = magnb("scrape", str(data), "--config", "configs/scrape.yaml", "--workers", "1")
    assert done.returncode == EXIT_NOTHING_USABLE, done.stdout + done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert "8 of 8 calculations skipped" in message  # the 8 rows of the fixture tree
    assert "slab_window 12.0 A is longer than the cell's c" in message
    assert "commonest reason (5 of 8)" in message  # 3 more: not spin-polarized
    assert "slab_window: null" in message and "scrape_bulk.yaml" in message  # what to do
    # the library says so too, and a rerun of the unchanged build again
    for _ in range(2):
        with pytest.raises(NothingUsableError) as err:
            scrape(
                ScrapeConfig(data_dir=data, slab_window=12.0, workers=1, kfold=0, progress=False)
            )
        assert err.value.count == 8 and err.value.commonest_count == 5


def test_empty_shards_are_allowed_but_an_empty_merge_is_not(bulk_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bulk_data, data)
    for i in range(2):
        done = magnb("scrape", str(data), "--config", "configs/scrape.yaml", "--shard", f"{i}/2",
                     "--workers", "1")  # fmt: skip
        assert done.returncode == 0, done.stderr  # one shard of many may hold nothing
    done = magnb("merge", str(data), "--shards", "2")
    assert done.returncode == EXIT_NOTHING_USABLE, done.stdout + done.stderr
    assert "merge produced nothing usable: 8 of 8 calculations skipped" in done.stderr


def test_one_usable_sample_is_success(bulk_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bulk_data, data)
    # a 3 A window skips the cells shorter than 3 A along c, and keeps the others: no error
    result = scrape(
        ScrapeConfig(data_dir=data, slab_window=3.0, slab_margin=0.0, grid=(8, 8, 8),
                     workers=1, kfold=0, progress=False)
    )  # fmt: skip
    ok = result.table["status"] == "ok"
    assert 0 < ok.sum() < 5


def test_collect_and_split_that_leave_nothing_exit_non_zero(tmp_path, vasp_dir):
    tree = tmp_path / "tree"
    (tree / "Fe" / "crashed").mkdir(parents=True)
    shutil.copyfile(vasp_dir / "fe_bcc/CHGCAR_empty", tree / "Fe/crashed/CHGCAR")
    done = magnb("collect", str(tree), str(tmp_path / "a"))
    assert done.returncode == EXIT_NOTHING_USABLE
    assert "collect produced nothing usable: 1 of 1 calculations failed" in done.stderr
    assert "0 bytes" in done.stderr
    done = magnb("collect", str(tree), str(tmp_path / "b"), "--layout", "{formula}/x/CHGCAR")
    assert done.returncode == EXIT_NOTHING_USABLE
    assert "no calculation matching --layout '{formula}/x/CHGCAR'" in done.stderr
    # a tree one folder deeper than the layout: the message names the layout that matches
    deep = tmp_path / "deep"
    (deep / "batch-1" / "Fe" / "crashed").mkdir(parents=True)
    shutil.copyfile(vasp_dir / "fe_bcc/CHGCAR_empty", deep / "batch-1/Fe/crashed/CHGCAR")
    done = magnb("collect", str(deep), str(tmp_path / "c"))
    assert done.returncode == EXIT_NOTHING_USABLE
    assert "CHGCARs lie elsewhere: try --layout '*/{formula}/{run}/CHGCAR*'" in done.stderr
    done = magnb("collect", str(deep), str(tmp_path / "d"), "--layout", "*/{formula}/{run}/CHGCAR*")
    assert "1 of 1 calculations failed" in done.stderr  # matched (and failed: it is empty)
    # a CHGCAR whose header reads but whose data is cut: collect takes it, split fails it
    cut = tmp_path / "cut"
    (cut / "NO" / "polarized").mkdir(parents=True)
    text = (vasp_dir / "nitric_oxide/polarized/CHGCAR").read_bytes()
    (cut / "NO/polarized/CHGCAR").write_bytes(text[: len(text) // 2])
    assert magnb("collect", str(cut), str(tmp_path / "c")).returncode == 0
    done = magnb("split", str(tmp_path / "c"), "--workers", "1")
    assert done.returncode == EXIT_NOTHING_USABLE, done.stderr
    assert "split produced nothing usable: 1 of 1" in done.stderr
    assert "truncated" in done.stderr


def test_the_commonest_reason_counts_reasons_of_one_kind_together():
    reasons = [
        "a/x.h5: slab_window 12.0 A is longer than the cell's c = 6.03 A",
        "a/y.h5: slab_window 12.0 A is longer than the cell's c = 2.49 A",
        "not spin-polarized, but channels ['m+', 'm-'] need a magnetization",
    ]
    err = nothing_usable("scrape", "calculations", reasons, verb="skipped")
    assert (err.count, err.commonest_count) == (3, 2)
    assert err.commonest == reasons[0]
    assert "3 of 3 calculations skipped" in str(err)


def test_describe_geometry_says_tiled_cropped_and_the_voxel_size():
    cube = ScrapeConfig(data_dir=".", representation="cube", cube_side=12.0, cube_points=48)
    text = describe_geometry(np.eye(3) * 3.0, (30, 30, 30), cube)
    assert "0.250 A/voxel" in text and "tiled 4.0 x 4.0 x 4.0 cell widths" in text
    assert "0.100 A/voxel" in text
    assert "cropped 0.5 x 0.5 x 0.5" in describe_geometry(np.eye(3) * 24.0, (240,) * 3, cube)
    # a hexagonal slab cell: the width across the a faces is a sin 60, not a
    hexagonal = np.array([[6.9, 0, 0], [-3.45, 3.45 * 3**0.5, 0], [0, 0, 39.5]])
    text = describe_geometry(hexagonal, (60, 60, 336), cube)
    assert "cropped and tiled 2.0 x 2.0 x 0.3" in text
    slab = ScrapeConfig(data_dir=".", grid=(60, 60, 120), slab_window=14.0, supercell=(2, 2, 1))
    text = describe_geometry(hexagonal, (60, 60, 336), slab, crop_planes=120)
    assert text.startswith("c cropped to 14.11 A (120 of 336 planes)")
    assert "0.115, 0.115, 0.118 A/voxel" in text and text.endswith("tiled 2x2x1")


def test_scrape_prints_what_it_did_with_each_cell(bulk_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bulk_data, data)
    done = magnb("scrape", str(data), "--config", "configs/scrape_bulk.yaml", "--workers", "1")
    assert done.returncode == 0, done.stderr
    ok = [line for line in done.stdout.splitlines() if "A/voxel" in line]
    assert len(ok) == 5  # the 5 spin-polarized fixtures
    assert all("cube 12 A at 0.250 A/voxel (48^3): tiled" in line for line in ok)
    fe = next(line for line in ok if "Fe__spin" in line)
    assert "5.9 x 5.9 x 5.9 cell widths" in fe and "28x28x28" in fe  # bcc Fe, a = 2.87 A
    import pandas as pd

    table = pd.read_parquet(data / "table.parquet")
    assert (table.loc[table["status"] == "ok", "geometry"].str.len() > 0).all()


# --------------------------------------------------------------------------------------------
# fast failure, before TensorFlow


CHECK = """
import sys, time
start = time.perf_counter()
if sys.argv[1] == "cli":
    from magnb.cli import main
    rc = main(sys.argv[2:])
else:  # the library, as notebook 04 calls it
    from magnb.config import load_train_config
    from magnb.errors import MagnbError
    from magnb.train import train
    try:
        train(load_train_config(sys.argv[3]))
        rc = 0
    except MagnbError as exc:
        print(exc, file=sys.stderr)
        rc = 2
print("seconds", time.perf_counter() - start)
print("imported", sorted(m for m in ("tensorflow", "keras", "jax") if m in sys.modules))
sys.exit(rc)
"""


@pytest.mark.parametrize("entry", ["cli", "library"])
@pytest.mark.parametrize("case", ["typo", "no_dataset", "wrong_channels", "label_without_rows"])
def test_train_errors_come_before_tensorflow_is_imported(case, entry, bulk_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bulk_data, data)
    scrape(ScrapeConfig(data_dir=data, grid=(8, 8, 8), workers=1, kfold=0, progress=False))
    settings = {
        "typo": f"dataset_dir: {data}\nepochz: 3\n",
        "no_dataset": f"dataset_dir: {tmp_path / 'nothing'}\n",
        "wrong_channels": f"dataset_dir: {data}\nchannels: [total]\n",
        # the run tags of the fixtures (polarized, spin, soc...) name no spin pattern
        "label_without_rows": f"dataset_dir: {data}\nlabel: order_pattern\n",
    }[case]
    config = tmp_path / "config.yaml"
    config.write_text(settings + f"runs_dir: {tmp_path / 'runs'}\n")
    done = subprocess.run(
        [sys.executable, "-c", CHECK, entry, "train", str(config)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "imported []" in done.stdout, done.stdout
    expected = {
        "typo": "unknown key(s) epochz",
        "no_dataset": "no dataset: run stage 03",
        "wrong_channels": "config asks for channels ['total']",
        "label_without_rows": "no samples in split 'train' with a 'order_pattern' label",
    }[case]
    assert expected in done.stderr
    seconds = float(done.stdout.split("seconds", 1)[1].split()[0])
    print(
        f"{entry} {case}: error after {seconds:.2f} s"
    )  # measured, not asserted (a shared machine)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MAGNB_TF_LOG")}
    return env | extra


def test_tensorflow_log_level_follows_the_option():
    code = "import os, magnb; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    run = lambda env: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    assert run(_clean_env()) == "2"
    assert run(_clean_env(MAGNB_TF_LOG="1")) == "0"
    assert run(_clean_env(MAGNB_TF_LOG="0")) == "2"
    assert run(_clean_env(TF_CPP_MIN_LOG_LEVEL="1")) == "1"  # the user's own setting stays
    code = "import os, sys; from magnb.cli import main; main(sys.argv[1:]); print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    done = subprocess.run(
        [sys.executable, "-c", code, "--tf-log", "runs", "nowhere"],
        capture_output=True, text=True, env=_clean_env(), check=True,
    )  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "0"


@pytest.mark.slow
def test_tensorflow_says_nothing_at_import_unless_asked():
    code = "import magnb, tensorflow"
    quiet = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(), timeout=300
    )
    loud = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env=_clean_env(MAGNB_TF_LOG="1"),
    )  # fmt: skip
    assert quiet.returncode == loud.returncode == 0
    assert loud.stderr.strip(), "TensorFlow printed nothing at level 0: this test shows nothing"
    assert quiet.stderr.strip() == ""
    _ = time  # (timings are printed by the tests above, never asserted)
