"""The loader (magnb.loader): every storage path gives what the loader it replaced gave (h5py
read, un-normalize, np.roll), rolls are exact, and threads do not change a batch."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from magnb.loader import DensityDataset, roll_into
from magnb.store import replace_table
from tests.conftest import h5_storage_options

SHAPE = (6, 5, 7, 2)
N = 9


def write_dataset(
    root: Path,
    storage: str,
    offset=(0.5, -1.0),
    scale=(2.0, 3.0),
    periodic=(True, True, True),
) -> tuple[Path, np.ndarray]:
    """dataset.h5 + table.parquet as stage 03 writes them (the columns the loader reads), with
    ``samples`` stored ``none``/``gzip`` (scrape's codecs), ``lzf`` (a filter magnb does not
    write) or ``contiguous`` (no chunks); returns the folder and the stored samples."""
    rng = np.random.default_rng(1)
    samples = (rng.standard_normal((N, *SHAPE)) * 3).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "dataset.h5", "w") as f:
        options = h5_storage_options(storage, SHAPE)
        f.create_dataset("samples", data=samples, **options)
        f.attrs["norm_offset"] = json.dumps(list(offset))
        f.attrs["norm_scale"] = json.dumps(list(scale))
        f.attrs["periodic_axes"] = json.dumps(list(periodic))
        f.attrs["build_id"] = "hand-made"
    # rows out of sample order, and one skipped, as a real table has
    order = rng.permutation(N)
    table = pd.DataFrame(
        {
            "calc_id": [f"c{i}" for i in range(N + 1)],
            "sample": [*order.tolist(), -1],
            "status": ["ok"] * N + ["skipped"],
            "split": ["train"] * (N + 1),
            "order": ["FM", "AFM"] * ((N + 1) // 2),
            "moment": rng.uniform(0, 5, N + 1),
        }
    )
    replace_table(root, table)  # the table of that build
    return root, samples


def reference_batch(data: DensityDataset, samples: np.ndarray, i: int) -> np.ndarray:
    """Batch ``i`` as the loader before magnb.loader made it: read, -= offset, /= scale, then
    np.roll per sample with the same seeded shifts."""
    idx = data._order[i * data.batch_size : (i + 1) * data.batch_size]
    rows = data.table["sample"].to_numpy()[idx]
    x = samples[rows].copy()
    x -= data.offset
    x /= data.scale
    if data.augment:
        for k, shift in enumerate(data.shifts(i, len(idx))):
            x[k] = np.roll(x[k], shift, axis=(0, 1, 2))
    return x


@pytest.mark.parametrize("storage", ["none", "gzip", "lzf", "contiguous"])
def test_every_storage_reads_what_the_old_loader_read(tmp_path, storage):
    root, samples = write_dataset(tmp_path / storage, storage)
    data = DensityDataset(root, batch_size=4, shuffle=True, augment=True, seed=3)
    expected_path = {"none": "raw", "contiguous": "raw", "gzip": "gzip", "lzf": "other"}
    assert data.storage == expected_path[storage]
    assert len(data) == 3  # 9 samples in batches of 4
    for epoch in range(2):
        for i in range(len(data)):
            x, y = data[i]
            assert x.dtype == np.float32 and x.shape == (len(y), *SHAPE)
            # x * (1 / scale) is within an ulp or two of x / scale
            np.testing.assert_allclose(x, reference_batch(data, samples, i), rtol=3e-7, atol=1e-7)
        data.on_epoch_end()
        assert data.epoch == epoch + 1


def test_old_and_new_storage_give_the_same_batches(tmp_path):
    """A dataset stored by today's scrape (raw) and one stored as before (gzip) are read alike."""
    raw, _ = write_dataset(tmp_path / "raw", "none")
    old, _ = write_dataset(tmp_path / "old", "gzip")
    a = DensityDataset(raw, batch_size=4, augment=True, seed=1)
    b = DensityDataset(old, batch_size=4, augment=True, seed=1)
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])


@pytest.mark.parametrize("seed", range(6))
def test_roll_into_is_np_roll(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 9, 3)) + (int(rng.integers(1, 4)),)
    src = rng.standard_normal(shape).astype(np.float32)
    offset = rng.standard_normal(shape[-1]).astype(np.float32)
    scale = rng.uniform(0.5, 2, shape[-1]).astype(np.float32)
    for _ in range(10):
        shifts = tuple(int(rng.integers(-10, 10)) for _ in range(3))
        out = np.full_like(src, np.nan)
        roll_into(out, src, shifts)
        np.testing.assert_array_equal(out, np.roll(src, shifts, axis=(0, 1, 2)))
        roll_into(out, src, shifts, offset, scale)
        expected = (np.roll(src, shifts, axis=(0, 1, 2)) - offset) / scale
        np.testing.assert_allclose(out, expected, rtol=3e-7, atol=1e-7)


def test_only_periodic_axes_are_rolled(tmp_path):
    root, samples = write_dataset(tmp_path, "none", periodic=(True, False, False))
    data = DensityDataset(root, batch_size=N, shuffle=False, augment=True, seed=0)
    shifts = data.shifts(0, N)
    assert all(s[1] == 0 and s[2] == 0 for s in shifts) and any(s[0] for s in shifts)
    np.testing.assert_allclose(data[0][0], reference_batch(data, samples, 0), rtol=3e-7)


@pytest.mark.parametrize("storage", ["none", "gzip", "lzf"])
def test_threads_and_pickling_do_not_change_a_batch(tmp_path, storage):
    """Reader threads (Keras' workers) share one loader; worker processes get a pickled copy
    that opens its own handle and mapping."""
    root, _ = write_dataset(tmp_path, storage)
    data = DensityDataset(root, batch_size=2, augment=True, seed=7)
    alone = [data[i][0] for i in range(len(data))]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda i: data[i][0], [*range(len(data))] * 4))
    copy = deepcopy(data)  # the state a worker process gets (__getstate__), without pickle
    assert copy._map is None
    for a, b in zip(alone * 4, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(copy[1][0], alone[1])


def test_batches_for_data_parallel_split_evenly_and_shards_partition_an_epoch(tmp_path):
    root, _ = write_dataset(tmp_path, "none")
    cut = DensityDataset(root, batch_size=4, multiple_of=2, seed=2)
    assert [len(cut[i][1]) for i in range(len(cut))] == [4, 4]  # 9 = 4 + 4 + 1: the 1 sits out
    assert len(DensityDataset(root, batch_size=4, multiple_of=4)) == 2
    assert [len(DensityDataset(root, batch_size=4)[i][1]) for i in range(3)] == [4, 4, 1]
    with pytest.raises(Exception, match="not a multiple of 2 devices"):
        DensityDataset(root, batch_size=3, multiple_of=2)
    whole = DensityDataset(root, batch_size=4, seed=5)
    parts = [DensityDataset(root, batch_size=2, seed=5, shard=(p, 2)) for p in range(2)]
    for _ in range(2):  # two epochs
        assert len(parts[0]) == len(parts[1]) == 2  # 9 rows: 2 full global batches of 4
        for i in range(2):
            joined = np.concatenate([d.batch_rows(i) for d in parts])
            np.testing.assert_array_equal(joined, whole.batch_rows(i))
        for d in (whole, *parts):
            d.on_epoch_end()


def test_rows_are_positions_among_the_usable_rows(tmp_path):
    """``rows`` (a k-fold's picks) are positions among the usable rows, not table index labels:
    with a skipped row first, the two differ by one for every row."""
    root, samples = write_dataset(tmp_path / "d", "none", offset=(0.0, 0.0), scale=(1.0, 1.0))
    table = pd.read_parquet(root / "table.parquet")
    table = pd.concat([table.iloc[[-1]], table.iloc[:-1]], ignore_index=True)  # c9 (skipped) first
    replace_table(root, table)
    data = DensityDataset(root, split=None, rows=np.array([4, 0, 7]), batch_size=8, shuffle=False)
    assert data.table["calc_id"].tolist() == ["c4", "c0", "c7"]
    x, _ = data[0]
    stored = dict(zip(table["calc_id"], table["sample"], strict=True))
    np.testing.assert_array_equal(x, samples[[stored["c4"], stored["c0"], stored["c7"]]])
