"""The loader (magnb.loader.DensityDataset, roll_into) by value, for mutation testing.

Each guarantee is checked against numbers computed here from the stored samples and the table
with numpy (never through the loader): every sample of a batch carries the label of its own
calculation, ``x`` is the stored sample less the stored offset over the stored scale, the
shuffle and the rolls follow (seed, epoch, batch), ``multiple_of`` and ``shard`` cut batches
as the docstring says, and the raw, gzip and other storage paths read the same values.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from magnb.errors import MagnbError
from magnb.loader import DensityDataset, roll_into
from magnb.store import replace_table
from tests.conftest import h5_storage_options

SHAPE = (5, 4, 3, 2)  #: no two axes alike, so a size read from the wrong axis shows
N_SAMPLES = 13  #: samples stored (one more than the usable rows: a trap row points at it)
OFFSET = (0.5, -1.25)
SCALE = (2.0, 4.0)
SPLITS = ["train"] * 9 + ["val"] * 2 + ["test"]
ORDERS = ["FM", "AFM", "FM", "FM", "AFM", "unknown", "AFM", "FM", "AFM", "FM", "AFM", "FM"]
PATTERNS = ["FM", "Neel", "zigzag", "stripe", "FM", "Neel", "", "stripe", "FM", "FM", "Neel", ""]
MOMENT = [1.0, 0.0, 2.5, np.nan, -1.5, 3.0, 0.25, 4.0, 0.0, 2.0, 1.0, 0.5]
PER_ATOM = [0.5, 0.0, np.nan, 1.0, -0.75, 1.5, 0.125, 2.0, np.nan, 1.0, 0.5, 0.25]
MOMENT_CLASS = [1, 0, 1, 1, -1, 1, 0, 1, 0, 1, 1, 0]


def _write(root: Path, storage: str, samples: np.ndarray, table: pd.DataFrame, **attrs) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shape = samples.shape[1:]
    options = h5_storage_options(storage, shape)
    with h5py.File(root / "dataset.h5", "w") as f:
        f.create_dataset("samples", data=samples, **options)
        f.attrs["norm_offset"] = json.dumps(list(attrs.get("offset", OFFSET)))
        f.attrs["norm_scale"] = json.dumps(list(attrs.get("scale", SCALE)))
        f.attrs["periodic_axes"] = json.dumps(list(attrs.get("periodic", (True, True, True))))
        f.attrs["build_id"] = "hand-made"
    replace_table(root, table)
    return root


def _table(sample_of_row: np.ndarray) -> pd.DataFrame:
    """12 usable rows (status ok, a sample) c0..c11, then a skipped row placed first."""
    table = pd.DataFrame(
        {
            "calc_id": [f"c{i}" for i in range(12)],
            "sample": sample_of_row,
            "status": "ok",
            "split": SPLITS,
            "order": ORDERS,
            "order_pattern": PATTERNS,
            "moment": MOMENT,
            "moment_per_magnetic_atom": PER_ATOM,
            "moment_class": MOMENT_CLASS,
        }
    )
    skipped = pd.DataFrame(
        {"calc_id": ["s"], "sample": [-1], "status": ["skipped"], "split": ["train"],
         "order": ["FM"], "order_pattern": ["FM"], "moment": [1.0],
         "moment_per_magnetic_atom": [1.0], "moment_class": [1]}
    )  # fmt: skip
    return pd.concat([skipped, table], ignore_index=True)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The same samples and table stored four ways; returns (folders by storage, samples,
    table). Sample 12 is stored but no usable row names it; row c0 names sample 0."""
    rng = np.random.default_rng(12)
    samples = (rng.standard_normal((N_SAMPLES, *SHAPE)) * 3 + 1).astype(np.float32)
    sample_of_row = np.concatenate([[0], 1 + rng.permutation(11)])
    table = _table(sample_of_row)
    root = tmp_path_factory.mktemp("kill_loader")
    dirs = {s: _write(root / s, s, samples, table) for s in ("none", "gzip", "lzf", "contiguous")}
    return dirs, samples, table


def _usable(table: pd.DataFrame, split: str | None = "train") -> pd.DataFrame:
    ok = table[(table["status"] == "ok") & (table["sample"] >= 0)]
    return ok if split is None else ok[ok["split"] == split]


def _normalized(samples: np.ndarray, offset=OFFSET, scale=SCALE) -> np.ndarray:
    return (samples.astype(np.float64) - np.asarray(offset)) / np.asarray(scale)


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# rows, labels and their encoding


def test_each_batch_row_has_its_own_sample_and_label_in_table_order(stored):
    dirs, samples, table = stored
    data = DensityDataset(dirs["none"], batch_size=3, shuffle=False)
    rows = _usable(table)
    rows = rows[rows["order"].isin(["AFM", "FM"])]  # c5 is neither
    assert data.table["calc_id"].tolist() == rows["calc_id"].tolist()
    assert data.table.index.tolist() == list(range(len(rows)))
    assert list(data.table.columns) == list(table.columns)  # no old index kept as a column
    assert data.dropped_nonfinite == 0
    want_y = np.array([{"AFM": 0, "FM": 1}[o] for o in rows["order"]])
    np.testing.assert_array_equal(data.labels, want_y)
    assert data.labels.dtype == np.int32
    assert len(data) == 3  # 8 rows in batches of 3
    for i in range(3):
        x, y = data[i]
        k = slice(3 * i, 3 * i + 3)
        assert x.dtype == np.float32 and y.dtype == np.int32
        _close(x, _normalized(samples[rows["sample"].to_numpy()[k]]))
        np.testing.assert_array_equal(y, want_y[k])


@pytest.mark.parametrize(
    ("label", "column", "kept"),
    [
        ("order_pattern", "order_pattern", ["c0", "c1", "c2", "c3", "c4", "c5", "c7", "c8"]),
        ("moment_class", "moment_class", ["c0", "c1", "c2", "c3", "c5", "c6", "c7", "c8"]),
        ("moment", "moment", ["c0", "c1", "c2", "c4", "c5", "c6", "c7", "c8"]),
        ("moment_per_magnetic_atom", "moment_per_magnetic_atom",
         ["c0", "c1", "c3", "c4", "c5", "c6", "c7"]),
    ],
)  # fmt: skip
def test_every_label_keeps_the_rows_that_carry_it(stored, label, column, kept):
    dirs, samples, table = stored
    data = DensityDataset(dirs["none"], label=label, batch_size=16, shuffle=False)
    assert data.table["calc_id"].tolist() == kept
    want = table.set_index("calc_id").loc[kept, column]
    if label == "order_pattern":
        want = want.map({"FM": 0, "Neel": 1, "zigzag": 2, "stripe": 3})
    dropped = {"moment": 1, "moment_per_magnetic_atom": 2}.get(label, 0)
    assert data.dropped_nonfinite == dropped
    x, y = data[0]
    np.testing.assert_array_equal(y, want.to_numpy().astype(y.dtype))
    assert y.dtype == (np.int32 if label in ("order_pattern", "moment_class") else np.float32)
    sample_of = dict(zip(table["calc_id"], table["sample"], strict=True))
    _close(x, _normalized(samples[[sample_of[c] for c in kept]]))


def test_splits_rows_and_read(stored):
    dirs, samples, table = stored
    sample_of = dict(zip(table["calc_id"], table["sample"], strict=True))
    val = DensityDataset(dirs["none"], split="val", batch_size=4)
    assert sorted(val.table["calc_id"]) == ["c10", "c9"]
    one = DensityDataset(dirs["none"], split="test", batch_size=4)  # a split of one row
    assert one.table["calc_id"].tolist() == ["c11"]
    _close(one[0][0], _normalized(samples[[sample_of["c11"]]]))
    # rows: positions among the usable rows of every split (c0 first: sample 0 is one of them)
    picked = DensityDataset(dirs["none"], split=None, rows=np.array([11, 0, 9]), shuffle=False)
    assert picked.table["calc_id"].tolist() == ["c11", "c0", "c9"]
    want = _normalized(samples[[sample_of["c0"], sample_of["c11"]]])
    _close(picked.read(np.array([1, 0])), want)
    _close(picked.read([2]), _normalized(samples[[sample_of["c9"]]]))
    everything = DensityDataset(dirs["none"], split=None, batch_size=16, shuffle=False)
    assert everything.table["calc_id"].tolist() == [
        c for c, o in zip(table["calc_id"][1:], ORDERS, strict=True) if o != "unknown"
    ]


# --------------------------------------------------------------------------------------------
# order, epochs and rolls: seeded by (seed, epoch, batch)


def _expected_shifts(key: list[int], n: int, periodic=(True, True, True)) -> list[tuple]:
    """The rolls the docstring promises: one generator per batch, seeded by ``key``, drawing
    a whole number of voxels in [0, size) along each periodic axis, sample after sample."""
    rng = np.random.default_rng(key)
    return [
        tuple(
            int(rng.integers(size)) if p else 0 for size, p in zip(SHAPE[:3], periodic, strict=True)
        )
        for _ in range(n)
    ]


def test_shuffle_and_rolls_follow_seed_epoch_and_batch(stored):
    dirs, samples, table = stored
    rows = _usable(table)
    rows = rows[rows["order"].isin(["AFM", "FM"])]
    want_x = _normalized(samples[rows["sample"].to_numpy()])
    want_y = np.array([{"AFM": 0, "FM": 1}[o] for o in rows["order"]])
    data = DensityDataset(dirs["none"], batch_size=3, shuffle=True, augment=True, seed=7)
    assert data.epoch == 0
    for epoch in range(3):
        order = np.random.default_rng([7, epoch]).permutation(8)
        np.testing.assert_array_equal(data._order, order)
        for i in range(len(data)):
            idx = order[3 * i : 3 * i + 3]
            np.testing.assert_array_equal(data.batch_rows(i), idx)
            shifts = _expected_shifts([7, epoch, i], len(idx))
            assert data.shifts(i, len(idx)) == shifts
            x, y = data[i]
            want = np.stack(
                [np.roll(want_x[k], s, axis=(0, 1, 2)) for k, s in zip(idx, shifts, strict=True)]
            )
            _close(x, want)
            np.testing.assert_array_equal(y, want_y[idx])
        data.on_epoch_end()
        assert data.epoch == epoch + 1
    data.set_epoch(1)
    assert data.epoch == 1
    np.testing.assert_array_equal(data._order, np.random.default_rng([7, 1]).permutation(8))
    data.set_epoch(np.int64(0))  # a resumed run's epoch, from a number in a file
    assert type(data.epoch) is int
    np.testing.assert_array_equal(data._order, np.random.default_rng([7, 0]).permutation(8))


def test_without_shuffle_or_augment_nothing_moves(stored):
    dirs, samples, table = stored
    data = DensityDataset(dirs["gzip"], batch_size=8, shuffle=False, augment=False, seed=3)
    rows = _usable(table)
    rows = rows[rows["order"].isin(["AFM", "FM"])]
    for _ in range(2):
        np.testing.assert_array_equal(data._order, np.arange(8))
        _close(data[0][0], _normalized(samples[rows["sample"].to_numpy()]))
        data.on_epoch_end()


def test_only_periodic_axes_roll_and_the_shard_seeds_its_own_rolls(stored, tmp_path):
    dirs, samples, table = stored
    root = _write(tmp_path / "p", "none", samples, table, periodic=(False, True, False))
    data = DensityDataset(root, batch_size=4, shuffle=False, augment=True, seed=2)
    shifts = _expected_shifts([2, 0, 1], 4, periodic=(False, True, False))
    assert data.shifts(1, 4) == shifts
    rows = _usable(table)
    rows = rows[rows["order"].isin(["AFM", "FM"])]
    want_x = _normalized(samples[rows["sample"].to_numpy()])
    want = [np.roll(want_x[4 + k], s, axis=(0, 1, 2)) for k, s in enumerate(shifts)]
    _close(data[1][0], np.stack(want))
    sharded = DensityDataset(dirs["none"], batch_size=2, augment=True, seed=2, shard=(1, 2))
    assert sharded.shifts(1, 2) == _expected_shifts([2, 0, 1, 1], 2)


# --------------------------------------------------------------------------------------------
# batch counts, multiple_of and shards


@pytest.mark.parametrize(
    ("n", "batch", "multiple_of", "sizes"),
    [
        (8, 4, 1, [4, 4]),
        (9, 4, 1, [4, 4, 1]),
        (9, 4, 2, [4, 4]),  # the 1 left over sits out
        (10, 4, 2, [4, 4, 2]),
        (11, 4, 2, [4, 4, 2]),  # 3 left: 2 of them make a batch
        (11, 4, 0, [4, 4, 3]),  # 0 devices is read as 1
        (7, 8, 1, [7]),
        (8, 2, 2, [2, 2, 2, 2]),
    ],
)
def test_batches_are_cut_to_a_multiple_of_the_devices(stored, n, batch, multiple_of, sizes):
    dirs, _, table = stored
    usable = _usable(table, None)
    picks = np.flatnonzero(usable["order"].isin(["AFM", "FM"]).to_numpy())[:n]
    assert len(picks) == n
    data = DensityDataset(
        dirs["none"], split=None, rows=picks, batch_size=batch, multiple_of=multiple_of, seed=4
    )
    assert len(data) == len(sizes)
    order = np.random.default_rng([4, 0]).permutation(n)
    got = [data.batch_rows(i) for i in range(len(data))]
    assert [len(g) for g in got] == sizes
    start = 0
    for g in got:
        np.testing.assert_array_equal(g, order[start : start + len(g)])
        start += batch
    assert [len(data[i][1]) for i in range(len(data))] == sizes
    with pytest.raises(IndexError, match=rf"^{len(data)}$"):
        data[len(data)]
    with pytest.raises(IndexError, match=r"^-1$"):
        data[-1]


@pytest.mark.parametrize(("n", "batch", "shards", "batches"), [(8, 2, 2, 2), (7, 2, 2, 1),
                                                                (8, 1, 3, 2), (6, 2, 3, 1)])  # fmt: skip
def test_a_shard_takes_its_part_of_each_full_global_batch(stored, n, batch, shards, batches):
    dirs, _, table = stored
    usable = _usable(table, None)
    picks = np.flatnonzero(usable["order"].isin(["AFM", "FM"]).to_numpy())[:n]
    order = np.random.default_rng([5, 0]).permutation(n)
    for p in range(shards):
        data = DensityDataset(
            dirs["none"], split=None, rows=picks, batch_size=batch, seed=5, shard=(p, shards)
        )
        assert data.shard == (p, shards)
        assert len(data) == batches
        for i in range(batches):
            start = (i * shards + p) * batch
            np.testing.assert_array_equal(data.batch_rows(i), order[start : start + batch])
        with pytest.raises(IndexError):
            data[batches]


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0), (3, 2)])
def test_a_shard_outside_its_count_is_refused(stored, shard):
    with pytest.raises(
        MagnbError, match=rf"shard must be \(p, n\) with 0 <= p < n, not \({shard[0]}"
    ):
        DensityDataset(stored[0]["none"], shard=shard)


# --------------------------------------------------------------------------------------------
# storage paths


def test_every_storage_path_reads_the_same_values(stored):
    dirs, samples, table = stored
    got = {}
    for storage, path in (("none", "raw"), ("contiguous", "raw"), ("gzip", "gzip"),
                          ("lzf", "other")):  # fmt: skip
        data = DensityDataset(dirs[storage], split=None, batch_size=5, augment=True, seed=9)
        assert data.storage == path
        assert data.sample_shape == SHAPE
        assert data.offset.dtype == data.scale.dtype == np.float32
        np.testing.assert_array_equal(data.offset, np.float32(OFFSET))
        np.testing.assert_array_equal(data.scale, np.float32(SCALE))
        got[storage] = [data[i] for i in range(len(data))]
        sample_of = data.table["sample"].to_numpy()
        _close(data.read(np.arange(len(data.table))), _normalized(samples[sample_of]))
    for storage in ("contiguous", "gzip", "lzf"):
        for (xa, ya), (xb, yb) in zip(got["none"], got[storage], strict=True):
            np.testing.assert_array_equal(xa, xb)  # bit for bit: the same float32 arithmetic
            np.testing.assert_array_equal(ya, yb)


def test_a_chunked_dataset_with_several_samples_per_chunk_is_read_another_way(stored, tmp_path):
    _, samples, table = stored
    root = tmp_path / "two"
    root.mkdir()
    with h5py.File(root / "dataset.h5", "w") as f:
        f.create_dataset("samples", data=samples, chunks=(2, *SHAPE))
        f.attrs["norm_offset"] = json.dumps(list(OFFSET))
        f.attrs["norm_scale"] = json.dumps(list(SCALE))
        f.attrs["periodic_axes"] = json.dumps([True] * 3)
        f.attrs["build_id"] = "hand-made"
    replace_table(root, table)
    data = DensityDataset(root, split=None, shuffle=False, batch_size=16)
    assert data.storage == "other"
    _close(data[0][0], _normalized(samples[data.table["sample"].to_numpy()]))


# --------------------------------------------------------------------------------------------
# user errors and settings


def test_clear_errors_name_the_dataset(stored, tmp_path):
    dirs, _, _ = stored
    with pytest.raises(MagnbError, match=r"dataset\.h5: no dataset: run stage 03 \(magnb scrape\)"):
        DensityDataset(tmp_path / "nothing")
    with pytest.raises(MagnbError, match=r"unknown label 'spin'; choose from \['order', "):
        DensityDataset(dirs["none"], label="spin")
    with pytest.raises(
        MagnbError,
        match=r"dataset\.h5: no samples in split 'nope' with a 'order' label; the run tags must",
    ):
        DensityDataset(dirs["none"], split="nope")
    with pytest.raises(
        MagnbError, match=r"dataset\.h5: no samples in split 'nope' with a 'moment' label$"
    ):
        DensityDataset(dirs["none"], split="nope", label="moment")
    with pytest.raises(MagnbError, match=r"^batch size 3 is not a multiple of 2 devices$"):
        DensityDataset(dirs["none"], batch_size=3, multiple_of=2)
    with pytest.raises(
        MagnbError,
        match=r"dataset\.h5: augment_symmetry needs a cube dataset scraped with symmetry: true",
    ):
        DensityDataset(dirs["none"], symmetry=True)
    data = DensityDataset(dirs["none"], batch_size=np.int64(4), workers=3)
    assert data.batch_size == 4 and type(data.batch_size) is int
    assert data.workers == 3 and data.symmetry is False


def test_symmetry_applies_one_of_each_samples_own_operations(tmp_path):
    from magnb.symmetry import CUBE_OPS

    identity = CUBE_OPS.index(((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    flip_x = CUBE_OPS.index(((-1, 0, 0), (0, 1, 0), (0, 0, 1)))
    rng = np.random.default_rng(3)
    cube = (4, 4, 4, 1)
    samples = rng.standard_normal((10, *cube)).astype(np.float32)
    n = 10
    table = pd.DataFrame(
        {
            "calc_id": [f"c{i}" for i in range(n)],
            "sample": np.arange(n),
            "status": "ok",
            "split": "train",
            "order": ["FM", "AFM"] * 5,
            "symmetry_ops": [json.dumps([identity, flip_x])] * (n - 1) + [json.dumps([flip_x])],
        }
    )
    root = _write(tmp_path / "cube", "none", samples, table, offset=[0.0], scale=[1.0])
    data = DensityDataset(root, batch_size=5, shuffle=False, symmetry=True, seed=11)
    assert data.symmetry is True and data.storage == "raw"  # one channel: chunk (0, 0, 0, 0)
    for epoch in range(2):
        for i in range(2):
            pick = np.random.default_rng([11, epoch, i, 1])
            x, y = data[i]
            for k in range(5):
                row = 5 * i + k
                ops = [identity, flip_x] if row < n - 1 else [flip_x]
                op = int(pick.choice(ops))
                want = samples[row][::-1] if op == flip_x else samples[row]
                np.testing.assert_array_equal(x[k], want)
            np.testing.assert_array_equal(y, [1, 0, 1, 0, 1] if i == 0 else [0, 1, 0, 1, 0])
        data.on_epoch_end()


# --------------------------------------------------------------------------------------------
# roll_into


@pytest.mark.parametrize(
    ("offset", "scale"),
    [
        (None, None),
        ((0.0, 0.0), (1.0, 1.0)),
        ((0.5, -2.0), None),
        ((0.5, -2.0), (1.0, 1.0)),
        (None, (2.0, 2.0)),
        ((0.0, 0.0), (2.0, 0.5)),
        ((0.25, 1.0), (2.0, 0.5)),
    ],
)
def test_roll_into_rolls_then_normalizes_by_value(offset, scale):
    rng = np.random.default_rng(5)
    src = rng.standard_normal(SHAPE).astype(np.float32)
    o = np.zeros(2) if offset is None else np.asarray(offset)
    s = np.ones(2) if scale is None else np.asarray(scale)
    for shifts in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (4, 3, 2), (-1, 5, 7), (2, 1, 1)]:
        out = np.full_like(src, np.nan)
        roll_into(
            out,
            src,
            shifts,
            None if offset is None else np.float32(offset),
            None if scale is None else np.float32(scale),
        )
        want = np.empty(SHAPE)
        for i, j, k in np.ndindex(*SHAPE[:3]):  # out[p + shift] = src[p], by hand
            a, b, c = (i + shifts[0]) % 5, (j + shifts[1]) % 4, (k + shifts[2]) % 3
            want[a, b, c] = (src[i, j, k].astype(np.float64) - o) / s
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)
        # and bit for bit the float32 arithmetic the docstring describes: subtract the offset,
        # multiply by the float32 reciprocal of the scale (so every storage path agrees)
        exact = np.roll(src, shifts, axis=(0, 1, 2))
        if offset is not None:
            exact = exact - np.float32(offset)
        if scale is not None:
            exact = exact * (np.float32(1) / np.float32(scale))
        assert exact.dtype == np.float32
        np.testing.assert_array_equal(out, exact)


def test_roll_into_casts_the_statistics_to_the_samples_float32():
    """float64 statistics (as JSON gives them) make the same bits as float32 ones: the
    arithmetic is float32 whatever the offset's and scale's dtype."""
    rng = np.random.default_rng(5)
    src = rng.standard_normal(SHAPE).astype(np.float32)
    o64, s64 = np.array([0.1, -0.7]), np.array([3.0, 0.3])
    wide, narrow = np.empty_like(src), np.empty_like(src)
    roll_into(wide, src, (1, 2, 0), o64, s64)
    roll_into(narrow, src, (1, 2, 0), o64.astype(np.float32), s64.astype(np.float32))
    np.testing.assert_array_equal(wide, narrow)


def test_roll_into_wants_one_shift_per_axis():
    src = np.zeros(SHAPE, np.float32)
    with pytest.raises(ValueError):
        roll_into(np.empty_like(src), src, (1, 1))
    with pytest.raises(ValueError):  # not quietly the first three
        roll_into(np.empty_like(src), src, (1, 1, 1, 1))


def test_the_defaults_are_the_training_split_shuffled_by_seed_0_in_batches_of_8(stored):
    dirs, samples, table = stored
    data = DensityDataset(dirs["none"])
    rows = _usable(table)
    rows = rows[rows["order"].isin(["AFM", "FM"])]
    assert data.label == "order" and data.batch_size == 8 and data.seed == 0
    assert data.augment is False and data.shuffle is True and data.symmetry is False
    assert data.multiple_of == 1 and data.shard == (0, 1) and len(data) == 1
    order = np.random.default_rng([0, 0]).permutation(8)
    x, y = data[0]
    _close(x, _normalized(samples[rows["sample"].to_numpy()[order]]))  # no roll
    np.testing.assert_array_equal(y, [{"AFM": 0, "FM": 1}[o] for o in rows["order"].iloc[order]])


@pytest.mark.parametrize("flags", [2, 4])
def test_a_periodic_flag_per_axis_or_no_roll(stored, tmp_path, flags):
    _, samples, table = stored
    root = _write(tmp_path / "flags", "none", samples, table, periodic=(True,) * flags)
    data = DensityDataset(root, augment=True)
    with pytest.raises(ValueError):  # not quietly the first three flags
        data.shifts(0, 2)
    with pytest.raises(ValueError):
        data[0]
