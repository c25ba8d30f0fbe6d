"""Stage 03's normalization checked by value against statistics computed by hand from the
voxels of the training rows (the tests ``make mutants`` needed for magnb/store.py; see
tests/MUTANTS.md). Milliseconds each."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from magnb.store import _encoded, _stats_from_disk, _table_for_disk, normalization_stats

SHAPE = (3, 2, 4, 2)  # x, y, z, channels


def _samples() -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Six rows: train, val, test, a skipped train row and a train row without a sample; each
    with the sums ``_encoded`` stores, from samples whose ranges differ row by row."""
    rng = np.random.default_rng(0)
    status = ["ok", "ok", "ok", "ok", "skipped", "ok", "ok"]
    split = ["train", "val", "train", "test", "train", "train", "train"]
    sample = [0, 1, 2, 3, -1, -1, 4]
    arrays, rows = [], []
    for f in (1, 5, 2, 6, 7, 8, 3):  # the rows that are not training rows range the widest
        # channel 0 around 2 f, channel 1 negative and wide: maxabs comes from a minimum
        x = np.stack(
            [rng.normal(2.0 * f, 0.5, SHAPE[:3]), rng.normal(-3.0 * f, 1.0 + f, SHAPE[:3])],
            axis=-1,
        ).astype(np.float32)
        arrays.append(x)
        _, info, _ = _encoded((x, {}, ""), "none")
        rows.append(info)
    table = pd.DataFrame(rows).assign(status=status, split=split, sample=sample)
    return table, arrays


def test_encoded_sums_are_the_samples_per_channel_sums() -> None:
    x = 5.0 - np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    chunk, info, error = _encoded((x, {"crop_start": 3}, ""), "none")
    assert chunk == x.tobytes() and error == ""
    assert info["crop_start"] == 3
    for c in range(2):
        v = x[..., c].astype(np.float64)
        assert info["stat_sum"][c] == pytest.approx(v.sum())
        assert info["stat_sumsq"][c] == pytest.approx((v * v).sum())
        assert info["stat_maxabs"][c] == np.abs(v).max()
    assert info["stat_maxabs"] == [41.0, 42.0]  # from the minima, -41 and -42, not the maxima
    assert _encoded((None, {"a": 1}, "no sample"), "none") == (None, {"a": 1}, "no sample")


def test_standard_normalization_is_the_train_voxels_mean_and_std() -> None:
    table, arrays = _samples()
    train = [arrays[i] for i in (0, 2, 6)]  # ok, train, with a sample
    voxels = np.concatenate([a.reshape(-1, 2) for a in train])
    stats = normalization_stats(table, "standard", 2, int(np.prod(SHAPE[:3])))
    np.testing.assert_allclose(stats["offset"], voxels.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["scale"], voxels.std(axis=0), rtol=1e-6)


def test_maxabs_normalization_is_the_train_voxels_largest_magnitude() -> None:
    table, arrays = _samples()
    train = [arrays[i] for i in (0, 2, 6)]
    voxels = np.concatenate([a.reshape(-1, 2) for a in train])
    stats = normalization_stats(table, "maxabs", 2, int(np.prod(SHAPE[:3])))
    assert stats["offset"] == [0.0, 0.0]
    np.testing.assert_array_equal(stats["scale"], np.abs(voxels).max(axis=0))
    # every other split's range is larger in one channel: none of them may set it
    every = np.concatenate([a.reshape(-1, 2) for a in arrays])
    assert (np.abs(every).max(axis=0) > np.abs(voxels).max(axis=0)).all()


def test_constant_channels_keep_scale_one() -> None:
    zeros = {"stat_sum": [[0.0, 8.0]], "stat_sumsq": [[0.0, 16.0]], "stat_maxabs": [[0.0, 2.0]]}
    table = pd.DataFrame(zeros).assign(status="ok", split="train", sample=0)
    standard = normalization_stats(table, "standard", 2, 4)  # channel 1: four voxels of 2.0
    assert standard == {"offset": [0.0, 2.0], "scale": [1.0, 1.0]}
    assert normalization_stats(table, "maxabs", 2, 4) == {"offset": [0.0, 0.0], "scale": [1.0, 2.0]}


def test_no_normalization_or_no_training_rows() -> None:
    table, _ = _samples()
    identity = {"offset": [0.0, 0.0], "scale": [1.0, 1.0]}
    assert normalization_stats(table, "none", 2, 24) == identity
    assert normalization_stats(table.assign(split="test"), "standard", 2, 24) == identity
    assert normalization_stats(table.assign(split="test"), "maxabs", 2, 24) == identity


def test_round_off_never_gives_a_negative_variance() -> None:
    # a constant channel whose sums round so that sumsq / n < mean^2 by a hair
    v = 0.1
    n = 3
    table = pd.DataFrame(
        {"stat_sum": [[v * n]], "stat_sumsq": [[(v * v * n) * (1 - 1e-15)]], "stat_maxabs": [[v]]}
    ).assign(status="ok", split="train", sample=0)
    stats = normalization_stats(table, "standard", 1, n)
    assert stats["scale"] == [1.0] and stats["offset"] == [pytest.approx(v)]


def test_sums_travel_to_disk_as_json_and_back() -> None:
    table = pd.DataFrame(
        {
            "stat_sum": [[1.5, 2.0], None],
            "stat_sumsq": [[3.0, 4.0], None],
            "stat_maxabs": [[0.5, 1.0], None],
        }
    )
    disk = _table_for_disk(table)
    assert disk["stat_sum"].tolist() == [json.dumps([1.5, 2.0]), ""]
    assert disk["stat_sumsq"].tolist() == [json.dumps([3.0, 4.0]), ""]
    assert disk["stat_maxabs"].tolist() == [json.dumps([0.5, 1.0]), ""]
    assert table["stat_sum"].tolist() == [[1.5, 2.0], None]  # the table itself is not changed
    back = _stats_from_disk(disk)
    for col in ("stat_sum", "stat_sumsq", "stat_maxabs"):
        assert back[col].tolist() == table[col].tolist()
    assert disk["stat_sum"].tolist() == [json.dumps([1.5, 2.0]), ""]


def test_encoded_sums_are_taken_in_float64() -> None:
    """float32 sums would lose the small voxels next to a large one (2^24 + 1 is 2^24 there)."""
    x = np.ones(SHAPE, dtype=np.float32)
    x[0, 0, 0, :] = 2.0**24
    _, info, _ = _encoded((x, {}, ""), "none")
    n = int(np.prod(SHAPE[:3]))
    assert info["stat_sum"] == [2.0**24 + n - 1] * 2
    assert info["stat_sumsq"] == [2.0**48 + n - 1] * 2


def test_maxabs_scale_below_one_is_kept() -> None:
    table = pd.DataFrame({"stat_sum": [[0.0]], "stat_sumsq": [[0.0]], "stat_maxabs": [[0.25]]})
    table = table.assign(status="ok", split="train", sample=0)
    assert normalization_stats(table, "maxabs", 1, 8) == {"offset": [0.0], "scale": [0.25]}
