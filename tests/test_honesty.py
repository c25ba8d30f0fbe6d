"""Checks by value where the science can go quietly wrong (issue 12, item 1).

Each test is built so that the bug it guards against gives a different number: the training and
test splits disagree (majorities, best cuts, statistics), a moment flag must be raised, class
weights are uneven. Every expected value is computed here by hand or from the raw stored samples,
never by calling the function under test another way.
"""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pandas as pd
import pytest

from magnb.baselines import majority_baseline, physics_baseline
from magnb.errors import MagnbError
from magnb.grid import crop_c, slab_window
from magnb.train import _class_weights

# --------------------------------------------------------------------------------------------
# normalization statistics from the training rows of a real three-way split


@pytest.fixture(scope="module")
def three_way(tmp_path_factory):
    from tests.conftest import build_demo_data

    data = build_demo_data(
        tmp_path_factory.mktemp("honesty"), 6, normalization="none", fractions=(0.5, 0.25, 0.25)
    )
    table = pd.read_parquet(data / "table.parquet")
    ok = table[(table["status"] == "ok") & (table["sample"] >= 0)]
    counts = ok["split"].value_counts()
    assert {"train", "val", "test"} <= set(counts.index), f"need a 3-way split, got {counts}"
    return data


def _rescrape(data, normalization: str):
    from magnb.dataset import ScrapeConfig, scrape

    scrape(
        ScrapeConfig(
            data_dir=data,
            progress=False,
            grid=(16, 16, 16),
            slab_window=12.0,
            normalization=normalization,
            fractions=(0.5, 0.25, 0.25),
            kfold=0,
            workers=1,
        )
    )
    with h5py.File(data / "dataset.h5", "r") as f:
        raw = f["samples"][()].astype(np.float64)
        offset = np.array(json.loads(f.attrs["norm_offset"]))
        scale = np.array(json.loads(f.attrs["norm_scale"]))
        assert f.attrs["normalization"] == normalization
    table = pd.read_parquet(data / "table.parquet")
    return raw, offset, scale, table


def _rows(raw, table, splits):
    ok = table[(table["status"] == "ok") & (table["sample"] >= 0) & table["split"].isin(splits)]
    return raw[ok["sample"].to_numpy()]


@pytest.mark.slow
@pytest.mark.parametrize("normalization", ["none", "standard", "maxabs"])
def test_normalization_statistics_come_from_the_training_rows_only(three_way, normalization):
    from magnb.dataset import DensityDataset

    raw, offset, scale, table = _rescrape(three_way, normalization)
    nchan = raw.shape[-1]
    train = _rows(raw, table, {"train"}).reshape(-1, nchan)
    every = _rows(raw, table, {"train", "val", "test"}).reshape(-1, nchan)
    if normalization == "none":
        want_offset, want_scale = np.zeros(nchan), np.ones(nchan)
    elif normalization == "standard":
        want_offset, want_scale = train.mean(axis=0), train.std(axis=0)
        # the test can tell: statistics over every split are different numbers
        assert not np.allclose(every.mean(axis=0), want_offset, rtol=1e-3)
        assert not np.allclose(every.std(axis=0), want_scale, rtol=1e-3)
    else:
        want_offset, want_scale = np.zeros(nchan), np.abs(train).max(axis=0)
        assert not np.allclose(np.abs(every).max(axis=0), want_scale, rtol=1e-3)
        # and the smallest |value| (or the most negative value) is not the scale either
        assert not np.allclose(np.abs(train).min(axis=0), want_scale, rtol=1e-3)
    np.testing.assert_allclose(offset, want_offset, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(scale, want_scale, rtol=1e-5, atol=1e-9)
    # the loader applies exactly those numbers, to every split
    for split in ("train", "test"):
        ds = DensityDataset(three_way, split=split, label="moment", batch_size=64, shuffle=False)
        rows = ds.table["sample"].to_numpy()
        got = ds.read(np.arange(len(ds.table)))
        want = (raw[rows] - want_offset) / want_scale
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# baselines on splits that disagree


def test_majority_baseline_predicts_the_training_majority_not_the_tests():
    y_train = [1, 1, 1, 0, 1]  # majority 1
    y_test = [0, 0, 0, 1]  # majority 0
    out = majority_baseline(y_train, y_test, "classification")
    assert out["prediction"] == 1
    # predicting 1 everywhere: 1 of 4 right; the test majority would score 3 of 4
    assert out["accuracy"] == pytest.approx(0.25)
    assert out["confusion_matrix"] == [[0, 3], [0, 1]]


def test_majority_baseline_breaks_ties_to_the_smaller_label():
    out = majority_baseline([2, 2, 0, 0, 1], [1, 1, 2], "classification")
    assert out["prediction"] == 0
    assert out["accuracy"] == 0.0


def test_majority_baseline_regression_uses_the_training_mean():
    out = majority_baseline([1.0, 2.0, 6.0], [10.0, 10.0], "regression")
    assert out["prediction"] == pytest.approx(3.0)


def _order_table(ratios_afm, ratios_fm, n_magnetic=2):
    rows = [("AFM", r) for r in ratios_afm] + [("FM", r) for r in ratios_fm]
    return pd.DataFrame(
        {
            "calc_id": [f"c{i}" for i in range(len(rows))],
            "status": "ok",
            "order": [o for o, _ in rows],
            "moment_integral": [r * n_magnetic * (-1) ** i for i, (_, r) in enumerate(rows)],
            "n_magnetic": n_magnetic,
        }
    )


def test_physics_cut_is_fitted_on_train_and_scored_on_test():
    # train separates cleanly: the only perfect cut is midway between 0.3 and 1.0
    train = _order_table([0.1, 0.2, 0.3], [1.0, 1.2, 1.4])
    # on test a cut of 0.65 calls 0.7 and 0.9 FM wrongly: TNR 1/3, TPR 1, balanced 2/3; a cut
    # fitted on test (e.g. 1.2, or 0.75) would reach 5/6
    test = _order_table([0.5, 0.7, 0.9], [0.8, 1.5, 2.0])
    out = physics_baseline(train, test, "order", threshold=0.5)
    assert out["cut"] == pytest.approx(0.65)
    assert out["train_balanced_accuracy"] == pytest.approx(1.0)
    assert out["balanced_accuracy"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(4 / 6)


def _pattern_table(rows, n_magnetic=2):
    return pd.DataFrame(
        {
            "calc_id": [f"p{i}" for i in range(len(rows))],
            "status": "ok",
            "order_pattern": [o for o, _ in rows],
            "moment_integral": [r * n_magnetic for _, r in rows],
            "n_magnetic": n_magnetic,
        }
    )


def test_physics_order_pattern_takes_cut_and_fallback_pattern_from_train():
    from magnb.dataset import LABEL_CLASSES

    classes = LABEL_CLASSES["order_pattern"]
    # train: below the cut mostly Neel; its only perfect FM cut is (0.3 + 1.0) / 2
    train = _pattern_table(
        [("Neel", 0.1), ("Neel", 0.2), ("zigzag", 0.3), ("FM", 1.0), ("FM", 1.2)]
    )
    # test: below the cut mostly zigzag (its own cut would be (0.3 + 1.1) / 2 = 0.7)
    test = _pattern_table(
        [("zigzag", 0.1), ("zigzag", 0.2), ("zigzag", 0.3), ("Neel", 0.25), ("FM", 1.1)]
    )
    out = physics_baseline(train, test, "order_pattern", threshold=0.5)
    assert out["cut"] == pytest.approx(0.65)
    # everything below the cut is called Neel: the Neel row and the FM row are right, 2 of 5
    assert out["accuracy"] == pytest.approx(2 / 5)
    predicted = out["predicted_counts"]
    assert predicted[str(classes.index("Neel"))] == 4
    assert predicted[str(classes.index("FM"))] == 1


def test_physics_moment_class_uses_the_given_threshold():
    table = pd.DataFrame(
        {
            "calc_id": ["a", "b", "c", "d"],
            "status": "ok",
            "moment_class": [0, 1, 1, 0],
            "moment_integral": [0.1, -0.9, 0.6, -0.4],
            "n_magnetic": 1,
        }
    )
    out = physics_baseline(table, table, "moment_class", threshold=0.5)
    # |m| > 0.5: 0, 1, 1, 0 -> all right; a threshold of 0.3 would call d class 1
    assert out["accuracy"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# the moment flag


@pytest.mark.parametrize(
    ("shift", "flagged"), [(0.0, False), (0.01, False), (0.5, True), (-0.5, True)]
)
def test_moment_flag_is_raised_when_integral_and_report_disagree(tmp_path, shift, flagged):
    from magnb.split import SplitConfig, load_split, split_one
    from magnb.synth import make_calculation, write_calculation

    calc = make_calculation("Cr2Ge2Te6", "FM", grid=(8, 8, 32), seed=3)
    # the OUTCAR and OSZICAR report ``moment``; the CHGCAR integrates to the original one
    reported = dataclasses.replace(calc, moment=calc.moment + shift)
    raw = write_calculation(tmp_path / "raw", reported)
    out = tmp_path / "x.h5"
    row = split_one(
        raw, "CHGCAR", out, SplitConfig(data_dir=tmp_path), {"calc_id": "x", "input_hash": "h"}
    )
    attrs = load_split(out)["attrs"]
    assert float(attrs["moment"]) == pytest.approx(calc.moment + shift, abs=1e-3)
    assert float(attrs["moment_integral"]) == pytest.approx(calc.moment, abs=1e-3)
    assert bool(attrs["moment_flag"]) is flagged
    assert bool(row["moment_flag"]) is flagged


def _flipped(calc):
    """The same calculation with every moment reversed (a negative total, as VASP reports for a
    ferromagnet whose spins point down)."""
    return dataclasses.replace(
        calc,
        chg_magnetization=-calc.chg_magnetization,
        moment=-calc.moment,
        site_moments=-calc.site_moments,
        site_spd=-calc.site_spd,
        magmom_init=-calc.magmom_init,
    )


@pytest.mark.parametrize(("shift", "flagged"), [(0.0, False), (0.01, False), (0.5, True)])
def test_moment_flag_on_a_negative_moment(tmp_path, shift, flagged):
    """The tolerance grows with |moment|: a negative moment is checked as a positive one."""
    from magnb.split import SplitConfig, load_split, split_one
    from magnb.synth import make_calculation, write_calculation

    calc = _flipped(make_calculation("Cr2Ge2Te6", "FM", grid=(8, 8, 32), seed=3))
    assert calc.moment < -5
    raw = write_calculation(tmp_path / "raw", dataclasses.replace(calc, moment=calc.moment + shift))
    split_one(raw, "CHGCAR", tmp_path / "x.h5", SplitConfig(data_dir=tmp_path),
              {"calc_id": "x", "input_hash": "h"})  # fmt: skip
    attrs = load_split(tmp_path / "x.h5")["attrs"]
    assert float(attrs["moment_integral"]) == pytest.approx(calc.moment, abs=1e-3)
    assert bool(attrs["moment_flag"]) is flagged


def test_antiparallel_sites_count_as_magnetic(tmp_path):
    """n_magnetic counts the sites with |m| >= 0.5 muB in the OUTCAR table, down sites too: a
    Neel cell of Cr2Ge2Te6 has two (one up, one down)."""
    from magnb.split import SplitConfig, load_split, split_one
    from magnb.synth import make_calculation, write_calculation

    calc = make_calculation("Cr2Ge2Te6", "AFM", grid=(8, 8, 32), seed=3)
    assert sorted(np.sign(calc.site_moments[:2])) == [-1, 1] and min(abs(calc.site_moments[:2])) > 1
    raw = write_calculation(tmp_path / "raw", calc)
    split_one(raw, "CHGCAR", tmp_path / "x.h5", SplitConfig(data_dir=tmp_path),
              {"calc_id": "x", "input_hash": "h"})  # fmt: skip
    assert int(load_split(tmp_path / "x.h5")["attrs"]["n_magnetic"]) == 2


# --------------------------------------------------------------------------------------------
# class weights


def test_class_weights_by_value():
    labels = np.array([0, 0, 0, 1, 2, 2])
    # n / (k * n_c): the rare class weighs most
    assert _class_weights(labels) == pytest.approx({0: 6 / 9, 1: 6 / 3, 2: 6 / 6})
    weights = _class_weights(np.array([1, 1, 1, 0]))
    assert weights == pytest.approx({0: 2.0, 1: 4 / 6})
    # weighted, each class contributes the same total
    counts = {0: 1, 1: 3}
    assert weights[0] * counts[0] == pytest.approx(weights[1] * counts[1])


# --------------------------------------------------------------------------------------------
# the slab window


def _atoms(z):
    return np.array([[0.1, 0.2, h] for h in z])


def test_slab_window_is_centred_on_the_slab_by_value():
    # 20 planes; atoms on planes 8 and 10 (z = 0.4, 0.5): a 5-plane window centred is 7..11
    assert slab_window(_atoms([0.4, 0.45, 0.5]), 20, 5) == 7
    # a 3-plane window just holds them: planes 8, 9, 10 span [7.5, 10.5]
    assert slab_window(_atoms([0.4, 0.5]), 20, 3) == 8
    # two planes cannot hold atoms two planes apart
    with pytest.raises(MagnbError, match="short by 1"):
        slab_window(_atoms([0.4, 0.5]), 20, 2)
    # atoms half a plane inside the window's edges still fit: [7.5, 10.5] holds 7.6 .. 10.4
    assert slab_window(_atoms([7.6 / 20, 10.4 / 20]), 20, 3) == 8
    # ... but not 7.4 (beyond the lower edge by 0.1 plane): it needs a 4th plane
    with pytest.raises(MagnbError):
        slab_window(_atoms([7.4 / 20, 10.4 / 20]), 20, 3)


def test_slab_window_with_a_margin_and_across_the_boundary():
    # c = 20 A on 20 planes (1 A each): atoms at 9 A and 11 A, 2 A margin -> keep [7, 13] A,
    # i.e. planes 7..13 (7 planes, [6.5, 13.5]); a 9-plane window centred on 10 is 6..14
    assert slab_window(_atoms([0.45, 0.55]), 20, 9, margin=2.0, c_length=20.0) == 6
    with pytest.raises(MagnbError):
        slab_window(_atoms([0.45, 0.55]), 20, 6, margin=2.0, c_length=20.0)
    # a slab across c = 0 (planes 19 and 1): a 3-plane window starts at plane 19
    assert slab_window(_atoms([0.95, 0.05]), 20, 3) == 19


def test_crop_c_takes_the_planes_by_value_and_wraps():
    data = np.broadcast_to(np.arange(20.0), (2, 3, 4, 20))
    np.testing.assert_array_equal(crop_c(data, 7, 5)[0, 0, 0], [7, 8, 9, 10, 11])
    np.testing.assert_array_equal(crop_c(data, 18, 5)[1, 2, 3], [18, 19, 0, 1, 2])
    assert crop_c(data, 18, 5).shape == (2, 3, 4, 5)


# --------------------------------------------------------------------------------------------
# the label table by value, from a split index written by hand


def test_label_table_by_value(tmp_path):
    """moment is the reported moment (the integral only where none is reported), moment_class
    compares |moment| with the threshold (a moment of -3 muB is magnetic), per magnetic atom
    divides by n_magnetic, and a failed row has no labels."""
    from magnb.labels import label_table

    (tmp_path / "split").mkdir()
    index = pd.DataFrame(
        {
            "calc_id": ["a__FM", "b__AFM", "c__FM", "d__AFM", "e__FM", "f__FM"],
            "formula": ["A", "B", "C", "D", "E", "F"],
            "run": ["FM", "AFM", "FM", "AFM", "FM", "FM"],
            "spin_kind": ["collinear"] * 5 + [None],
            "source_path": ["x"] * 5 + [None],
            "path": [f"split/{c}.h5" for c in "abcdef"],
            "status": ["ok"] * 5 + ["failed"],
            "error": [None] * 5 + ["truncated"],
            "moment_integral": [2.9, -2.9, 0.25, -0.25, -2.0, np.nan],
            "moment": [3.0, -3.0, 0.2, -0.2, np.nan, np.nan],
            "moment_source": ["OUTCAR"] * 4 + ["", ""],
            "n_magnetic": [2, 2, 1, 4, 0, np.nan],
            "input_hash": ["h"] * 6,
        }
    )
    index.to_parquet(tmp_path / "split" / "index.parquet")
    table = label_table(tmp_path, threshold=0.5).set_index("calc_id")
    ok = table.iloc[:5]
    assert ok["moment"].tolist() == [3.0, -3.0, 0.2, -0.2, -2.0]
    assert ok["moment_integral"].tolist() == [2.9, -2.9, 0.25, -0.25, -2.0]
    assert ok["moment_source"].tolist() == ["OUTCAR"] * 4 + ["integral"]
    assert ok["moment_class"].tolist() == [1, 1, 0, 0, 1]
    per = ok["moment_per_magnetic_atom"].tolist()
    assert per[:4] == [1.5, -1.5, 0.2, -0.05] and np.isnan(per[4])  # no magnetic atom
    assert ok["order"].tolist() == ["FM", "AFM", "FM", "AFM", "FM"]
    failed = table.loc["f__FM"]
    assert failed["status"] == "skipped" and failed["reason"] == "split: truncated"
    assert np.isnan(failed["moment"]) and np.isnan(failed["moment_class"])


# --------------------------------------------------------------------------------------------
# the moment inside the sample


@pytest.mark.parametrize("axis", [None, (0.36, -0.48, 0.8)])
def test_moment_sample_is_the_integral_over_the_slab_window(tmp_path, axis):
    """moment_sample is the moment inside what the sample keeps: the sum of m (mz for a
    non-collinear run) over the window's planes of the native grid, times the voxel volume,
    summed here by hand from the split file (resampling keeps the integral)."""
    from magnb.dataset import ScrapeConfig, make_sample
    from magnb.split import SplitConfig, load_split, split_one
    from magnb.synth import make_calculation, write_calculation

    calc = make_calculation("CrMnSi2Te6", "AFM", grid=(8, 8, 40), seed=1, spin_axis=axis)
    raw = write_calculation(tmp_path / "raw", calc)
    out = tmp_path / "x.h5"
    split_one(
        raw, "CHGCAR", out, SplitConfig(data_dir=tmp_path), {"calc_id": "x", "input_hash": "h"}
    )
    split = load_split(out)
    m = split["magnetization" if axis is None else "mz"].astype(np.float64)
    voxel = float(split["attrs"]["volume"]) / m.size
    whole = ScrapeConfig(data_dir=tmp_path, grid=(8, 8, 8), slab_window=None)
    _, info = make_sample(out, whole)
    assert info["moment_sample"] == pytest.approx(m.sum() * voxel, abs=1e-4)
    window = ScrapeConfig(data_dir=tmp_path, grid=(8, 8, 8), slab_window=8.0)
    _, info = make_sample(out, window)
    planes = (info["crop_start"] + np.arange(info["crop_planes"])) % m.shape[2]
    assert 0 < info["crop_planes"] < m.shape[2]
    inside = m[:, :, planes].sum() * voxel
    assert info["moment_sample"] == pytest.approx(inside, abs=1e-4)
