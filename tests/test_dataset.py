"""Stage 03: samples that belong to their labels, grouped splits, resumable and sharded builds,
and the streaming loader."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from magnb import labels as labels_module
from magnb import store as store_module
from magnb.collect import CollectConfig, collect
from magnb.dataset import (
    DensityDataset,
    ScrapeConfig,
    assign_splits,
    make_sample,
    merge_shards,
    order_from_run,
    prepared_table,
    scrape,
)
from magnb.errors import MagnbError
from magnb.split import SplitConfig, load_split, split_all
from tests.conftest import REPO_ROOT, make_fixture_tree


@pytest.fixture(scope="module")
def split_data(tmp_path_factory, vasp_dir) -> Path:
    """A data folder with stages 01-02 done on the real fixtures (shared, copied per test)."""
    root = tmp_path_factory.mktemp("fixture_data")
    tree = make_fixture_tree(root / "calcs", vasp_dir)
    collect(CollectConfig(source=tree, data_dir=root / "data", progress=False))
    split_all(SplitConfig(data_dir=root / "data", progress=False, workers=1))
    return root / "data"


@pytest.fixture
def data(split_data, tmp_path) -> Path:
    dest = tmp_path / "data"
    shutil.copytree(split_data, dest)
    return dest


def config(data: Path, **kw) -> ScrapeConfig:
    base = dict(grid=(12, 12, 12), channels=("m", "total"), kfold=0, progress=False, workers=1)
    return ScrapeConfig(data_dir=data, **(base | kw))


def _content(path: Path) -> tuple[bytes, dict]:
    with h5py.File(path) as f:
        # every attribute but the build id, which is new for each build (and shared with its table)
        attrs = {k: str(v) for k, v in f.attrs.items() if k != "build_id"}
        return f["samples"][()].tobytes(), attrs


def test_each_label_belongs_to_its_density(data):
    """Shuffle the input order; every sample must still match its own calculation's density,
    and the moment label must equal the integral of that very sample."""
    index_path = data / "split/index.parquet"
    index = pd.read_parquet(index_path)
    index.sample(frac=1.0, random_state=3).to_parquet(index_path, index=False)
    cfg = config(data)
    result = scrape(cfg)
    table = result.table
    ok = table[table["status"] == "ok"]
    assert len(ok) == 5, result.summary()  # the 5 spin-polarized fixtures
    assert list(table["calc_id"]) == sorted(table["calc_id"])
    with h5py.File(data / "dataset.h5") as f:
        samples = f["samples"][()]
    assert samples.shape == (5, 12, 12, 12, 2)
    for row in ok.itertuples():
        x = samples[row.sample]
        expected, _ = make_sample(data / row.split_file, cfg)
        np.testing.assert_array_equal(x, expected)
        split = load_split(data / row.split_file)
        assert split["attrs"]["calc_id"] == row.calc_id
        volume = float(split["attrs"]["volume"])
        integral = x[..., 0].astype(np.float64).mean() * volume
        assert integral == pytest.approx(row.moment_integral, abs=1e-4 + 1e-3 * abs(row.moment))
        assert x[..., 1].astype(np.float64).mean() * volume == pytest.approx(
            split["attrs"]["electrons"], rel=1e-3
        )


def test_a_run_stage_02_could_not_split_keeps_a_row_without_labels(tmp_path, vasp_dir):
    tree = make_fixture_tree(tmp_path / "calcs", vasp_dir)
    cut = tree / "NOcut" / "polarized"
    shutil.copytree(vasp_dir / "nitric_oxide/polarized", cut)
    chgcar = (cut / "CHGCAR").read_bytes()
    (cut / "CHGCAR").write_bytes(chgcar[: len(chgcar) // 2])
    data = tmp_path / "data"
    collect(CollectConfig(source=tree, data_dir=data, progress=False))
    split_all(SplitConfig(data_dir=data, progress=False, workers=1))
    index = pd.read_parquet(data / "split/index.parquet").set_index("calc_id")
    table = scrape(config(data)).table.set_index("calc_id")
    row = table.loc["NOcut__polarized"]
    assert index.loc["NOcut__polarized", "status"] != "ok"
    assert row["status"] == "skipped" and row["sample"] == -1
    assert row["reason"] == f"split: {index.loc['NOcut__polarized', 'error']}"
    assert "truncated" in row["reason"]
    for label in ("moment", "moment_integral", "moment_per_magnetic_atom", "n_magnetic"):
        assert np.isnan(row[label]), label
    assert row["spin_kind"] == "" and row["source_path"] == ""
    assert row["formula"] == index.loc["NOcut__polarized", "formula"]
    assert row["split_file"] == index.loc["NOcut__polarized", "path"]
    good = table.loc["NO__polarized"]
    assert good["status"] == "ok" and good["sample"] >= 0
    assert good["moment"] == index.loc["NO__polarized", "moment"]
    assert good["n_magnetic"] == index.loc["NO__polarized", "n_magnetic"]
    assert good["moment_class"] == int(abs(good["moment"]) > config(data).threshold)


def test_non_spin_runs_are_skipped_with_a_reason(data):
    table = scrape(config(data)).table.set_index("calc_id")
    assert table.loc["NO__unpolarized", "status"] == "skipped"
    assert "not spin-polarized" in table.loc["NO__unpolarized", "reason"]
    total_only = scrape(config(data, channels=("total",))).table.set_index("calc_id")
    assert total_only.loc["NO__unpolarized", "status"] == "ok"


def test_bad_settings_are_clear_errors(data):
    with pytest.raises(MagnbError, match="unknown channel"):
        config(data, channels=("m", "spin"))
    with pytest.raises(MagnbError, match="supercell"):
        config(data, supercell=(2, 0, 1))
    with pytest.raises(MagnbError, match="fractions"):
        config(data, fractions=(0.5, 0.5, 0.5))


def test_window_that_cannot_hold_the_cell_is_skipped(data):
    # NO's atoms sit at c = 0.26 and 0.57 of 4 A: a 1 A window cannot hold them
    table = scrape(config(data, slab_window=1.0, slab_margin=0.0)).table.set_index("calc_id")
    assert table.loc["NO__polarized", "status"] == "skipped"
    assert "NO__polarized.h5" in table.loc["NO__polarized", "reason"]


def test_grouped_splits_share_no_formula():
    rng = np.random.default_rng(0)
    formulas = [f"Cr{i}Te3" for i in range(40)]
    rows = [
        {"calc_id": f"{f}__{o}", "formula": f, "order": o, "status": "ok"}
        for f in formulas
        for o in ("FM", "AFM")
        if rng.random() > 0.1
    ]
    table = assign_splits(pd.DataFrame(rows), (0.7, 0.15, 0.15), "order", 5, seed=1)
    by_split = table.groupby("split")["formula"].apply(set)
    assert set(by_split.index) == {"train", "val", "test"}
    assert not by_split["train"] & by_split["val"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["val"] & by_split["test"]
    assert 0.08 < (table["split"] == "test").mean() < 0.25
    assert table.groupby("formula")["fold"].nunique().max() == 1
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]
    again = assign_splits(pd.DataFrame(rows), (0.7, 0.15, 0.15), "order", 5, seed=1)
    pd.testing.assert_frame_equal(table, again)


def test_order_from_run_tag():
    assert [order_from_run(r) for r in ("FM", "afm", "AFM_neel", "ferro", "nm", "")] == [
        "FM", "AFM", "AFM", "FM", "", "",
    ]  # fmt: skip


def test_sharded_build_equals_single_build(data, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(data, other)
    scrape(config(data, normalization="standard"))
    for i in range(3):
        scrape(config(other, normalization="standard", shard=(i, 3)))
    merge_shards(other, 3)
    a, b = _content(data / "dataset.h5"), _content(other / "dataset.h5")
    assert a[0] == b[0]
    assert a[1] == b[1]
    pd.testing.assert_frame_equal(
        pd.read_parquet(data / "table.parquet"), pd.read_parquet(other / "table.parquet")
    )


def test_rerun_skips_an_unchanged_build(data):
    first = scrape(config(data))
    mtime = (data / "dataset.h5").stat().st_mtime_ns
    second = scrape(config(data))
    assert second.skipped_build and (data / "dataset.h5").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(first.table, second.table)
    third = scrape(config(data, grid=(10, 10, 10)))
    assert not third.skipped_build


@pytest.mark.slow
def test_kill_9_mid_scrape_then_rerun_equals_uninterrupted(tmp_path, vasp_dir):
    src = tmp_path / "calcs"
    for i in range(12):
        shutil.copytree(vasp_dir / "si_static", src / f"Si{i}" / "static")
        shutil.copytree(vasp_dir / "nitric_oxide/polarized", src / f"NO{i}" / "polarized")
    data = tmp_path / "data"
    collect(CollectConfig(source=src, data_dir=data, progress=False))
    split_all(SplitConfig(data_dir=data, progress=False, workers=2))
    clean = tmp_path / "clean"
    shutil.copytree(data, clean)
    code = (
        "from magnb.dataset import ScrapeConfig, scrape; import sys;"
        "scrape(ScrapeConfig(data_dir=sys.argv[1], grid=(96, 96, 96), workers=1, kfold=0))"
    )
    scrape(ScrapeConfig(data_dir=clean, grid=(96, 96, 96), workers=1, kfold=0, progress=False))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(data)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(data.glob(".dataset.h5.tmp-*")):
        time.sleep(0.01)
    time.sleep(0.5)
    assert proc.poll() is None, "the scrape finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (data / "dataset.h5").exists()
    subprocess.run([sys.executable, "-c", code, str(data)], cwd=REPO_ROOT, check=True)
    assert _content(clean / "dataset.h5") == _content(data / "dataset.h5")
    assert not list(data.glob(".dataset.h5.tmp-*"))


def test_loader_batches_labels_normalization_and_rolls(data):
    scrape(config(data, normalization="standard", fractions=(1.0, 0.0, 0.0)))
    table = pd.read_parquet(data / "table.parquet")
    plain = DensityDataset(data, split="train", label="moment", batch_size=4, shuffle=False)
    assert len(plain) == 2  # 5 samples in batches of 4
    x, y = plain[0]
    assert x.shape == (4, 12, 12, 12, 2) and y.dtype == np.float32
    ok = table[table["status"] == "ok"].reset_index(drop=True)
    np.testing.assert_allclose(y, ok["moment"].to_numpy()[:4].astype(np.float32))
    # standard normalization from the training rows: mean 0, std 1 over the whole split
    everything = np.concatenate([plain[i][0] for i in range(len(plain))])
    np.testing.assert_allclose(everything.reshape(-1, 2).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(everything.reshape(-1, 2).std(axis=0), 1.0, rtol=1e-3)

    rolled = DensityDataset(data, label="moment", batch_size=5, shuffle=True, augment=True, seed=5)
    xa, ya = rolled[0]
    order = rolled._order[:5]
    base = plain.read(order)
    for k in range(5):
        matches = [
            np.array_equal(np.roll(base[k], (i, j, h), axis=(0, 1, 2)), xa[k])
            for i in range(12)
            for j in range(12)
            for h in range(12)
        ]
        assert sum(matches) >= 1, "an augmented sample must be a whole-voxel roll of its original"
    np.testing.assert_allclose(ya, plain.labels[order])
    first = rolled._order.copy()
    rolled.on_epoch_end()
    assert not np.array_equal(first, rolled._order)
    with pytest.raises(MagnbError, match="unknown label"):
        DensityDataset(data, label="colour")


def test_derived_channels_are_exact_on_the_new_grid(data):
    """m+ and m- are taken after resampling: non-negative, and m+ - m- is the resampled m."""
    parts, _ = make_sample(data / "split/NO__polarized.h5", config(data, channels=("m+", "m-")))
    whole, _ = make_sample(data / "split/NO__polarized.h5", config(data, channels=("m",)))
    assert parts.min() >= 0.0
    np.testing.assert_allclose(parts[..., 0] - parts[..., 1], whole[..., 0], atol=1e-7)


@pytest.mark.parametrize("codec", ["none", "gzip"])
def test_chunks_are_what_the_hdf5_filters_make(tmp_path, codec):
    """scrape encodes samples itself (raw, or shuffle + deflate; written with write_direct_chunk):
    the chunk must hold what h5py's own filter pipeline makes of the sample, and read back
    through plain h5py as the very array."""
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((6, 5, 7, 2)) * np.exp(rng.uniform(-30, 5, (6, 5, 7, 2)))
    sample = sample.astype(np.float32)
    kw = dict(dtype=np.float32, chunks=(1, *sample.shape), **store_module.CODECS[codec])
    with h5py.File(tmp_path / "t.h5", "w") as f:
        by_h5py = f.create_dataset("a", shape=(1, *sample.shape), **kw)
        by_h5py[0] = sample
        direct = f.create_dataset("b", shape=(1, *sample.shape), **kw)
        assert store_module._filters(direct) == store_module._PIPELINES[codec]
        direct.id.write_direct_chunk((0, 0, 0, 0, 0), store_module._chunk_bytes(sample, codec))
    with h5py.File(tmp_path / "t.h5", "r") as f:
        np.testing.assert_array_equal(f["b"][0], sample)
        mask_a, chunk_a = f["a"].id.read_direct_chunk((0, 0, 0, 0, 0))
        mask_b, chunk_b = f["b"].id.read_direct_chunk((0, 0, 0, 0, 0))
    assert mask_a == mask_b == 0
    if codec == "none":
        assert chunk_a == chunk_b == sample.tobytes()
    else:  # the same shuffled bytes inside both deflate streams (ISA-L's differs from zlib's)
        assert zlib.decompress(chunk_a) == zlib.decompress(chunk_b)


def test_workers_1_and_2_build_the_same_dataset(data, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(data, other)
    one = scrape(config(data, normalization="standard"))
    two = scrape(config(other, normalization="standard", workers=2))
    assert _content(data / "dataset.h5") == _content(other / "dataset.h5")
    pd.testing.assert_frame_equal(one.table, two.table)
    with h5py.File(data / "dataset.h5") as a, h5py.File(other / "dataset.h5") as b:
        for row in range(a["samples"].shape[0]):
            at = (row, 0, 0, 0, 0)
            assert a["samples"].id.read_direct_chunk(at) == b["samples"].id.read_direct_chunk(at)


def test_scrape_splits_equal_prepared_table(data):
    """scrape assigns the same splits as prepared_table (in a process of its own)."""
    code = (
        "import sys; from magnb.store import ScrapeConfig, scrape;"
        "scrape(ScrapeConfig(data_dir=sys.argv[1], grid=(12, 12, 12), kfold=2, workers=1,"
        " progress=False))"
    )
    subprocess.run([sys.executable, "-c", code, str(data)], cwd=REPO_ROOT, check=True)
    table = pd.read_parquet(data / "table.parquet")
    expected = prepared_table(ScrapeConfig(data_dir=data, grid=(12, 12, 12), kfold=2))
    for column in ("calc_id", "split", "fold"):
        assert table[column].tolist() == expected[column].tolist()
    assert (table.loc[table["status"] == "ok", "split"] != "").all()
    assert set(table.loc[table["status"] == "ok", "fold"]) == {0, 1}


def test_grouped_stratified_folds_keep_groups_whole_and_balance_strata():
    groups = np.repeat([f"F{i}" for i in range(60)], 4)
    strata = np.tile(["FM", "Neel", "zigzag", "stripe"], 60)
    strata[:40] = "FM"  # ten compounds with all four runs FM
    folds = labels_module.grouped_stratified_folds(strata, groups, 5, seed=3)
    assert set(folds) == set(range(5))
    assert pd.Series(folds).groupby(groups).nunique().max() == 1
    fm_share = pd.Series(strata == "FM").groupby(folds).mean()
    assert fm_share.max() - fm_share.min() < 0.1
    again = labels_module.grouped_stratified_folds(strata, groups, 5, seed=3)
    other = labels_module.grouped_stratified_folds(strata, groups, 5, seed=4)
    np.testing.assert_array_equal(folds, again)
    assert not np.array_equal(folds, other)


def test_samples_that_cannot_be_made_leave_no_row(data):
    """The dataset is sized for every file up front and cut to the samples written."""
    table = scrape(config(data, slab_window=1.0, slab_margin=0.0)).table
    written = table.loc[table["sample"] >= 0, "sample"].tolist()
    assert (table["reason"].str.contains("NO__polarized.h5")).any()
    assert written == list(range(len(written)))
    with h5py.File(data / "dataset.h5") as f:
        assert f["samples"].shape[0] == len(written)
        for row in table[table["sample"] >= 0].itertuples():
            expected, _ = make_sample(
                data / row.split_file, config(data, slab_window=1.0, slab_margin=0.0)
            )
            np.testing.assert_array_equal(f["samples"][row.sample], expected)


def test_merged_shards_copy_the_stored_chunks(data, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(data, other)
    scrape(config(data))
    for i in range(2):
        scrape(config(other, shard=(i, 2)))
    merge_shards(other, 2)
    with h5py.File(data / "dataset.h5") as a, h5py.File(other / "dataset.h5") as b:
        assert a["samples"].shape == b["samples"].shape
        for row in range(a["samples"].shape[0]):
            at = (row, 0, 0, 0, 0)
            assert a["samples"].id.read_direct_chunk(at) == b["samples"].id.read_direct_chunk(at)
