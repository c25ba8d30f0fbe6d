"""The label table and the splits checked by value on small tables made by hand (the tests
``make mutants`` needed: each assertion here kills mutants of magnb/labels.py that the
end-to-end tests let through, see tests/MUTANTS.md). Milliseconds each: no VASP tree is built."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magnb.errors import MagnbError
from magnb.labels import (
    assign_splits,
    encode_labels,
    grouped_stratified_folds,
    label_rows,
    label_table,
    order_from_run,
    order_pattern_from_run,
)
from magnb.split import INDEX_COLUMNS


def _write_index(data_dir: Path, rows: list[dict]) -> None:
    """A split/index.parquet with these rows (columns not given are empty), as stage 02 writes
    it: nullable integers for the atom counts."""
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    for column in ("nx", "ny", "nz", "natoms", "n_magnetic"):
        index[column] = index[column].astype("Int64")
    (data_dir / "split").mkdir(parents=True)
    index.to_parquet(data_dir / "split" / "index.parquet", index=False)


def _ok(cid: str, formula: str, run: str | None, moment: float | None, integral: float, n: int,
        source: str = "OUTCAR", spin: str | None = "collinear") -> dict:  # fmt: skip
    return {
        "calc_id": cid, "formula": formula, "run": run, "status": "ok", "error": "",
        "path": f"split/{cid}.h5", "spin_kind": spin, "source_path": f"{formula}/{run}",
        "input_hash": f"h-{cid}", "moment_integral": integral, "moment": moment,
        "moment_source": source, "n_magnetic": n,
    }  # fmt: skip


def test_label_table_every_column_by_value(tmp_path: Path) -> None:
    rows = [
        _ok("c", "NiO", "AFM-Neel", moment=None, integral=-6.5, n=2, source=""),
        _ok("a", "Fe", "FM", moment=4.0, integral=3.9, n=2),
        _ok("b", "Co", None, moment=-5.0, integral=-4.8, n=0, spin=None),
        _ok("d", "Mn", "afm_stripe", moment=0.25, integral=0.1, n=4),
    ]
    rows[3]["source_path"] = None
    _write_index(tmp_path, rows)
    t = label_table(tmp_path, threshold=4.0)
    assert t["calc_id"].tolist() == ["a", "b", "c", "d"]  # sorted, not in index order
    assert t["formula"].tolist() == ["Fe", "Co", "NiO", "Mn"]
    assert t["run"].tolist() == ["FM", "", "AFM-Neel", "afm_stripe"]
    assert t["order"].tolist() == ["FM", "", "AFM", "AFM"]
    assert t["order_pattern"].tolist() == ["FM", "", "Neel", "stripe"]
    assert t["spin_kind"].tolist() == ["collinear", "", "collinear", "collinear"]
    assert t["source_path"].tolist() == ["Fe/FM", "Co/None", "NiO/AFM-Neel", ""]
    assert t["split_file"].tolist() == ["split/a.h5", "split/b.h5", "split/c.h5", "split/d.h5"]
    assert t["status"].tolist() == ["ok"] * 4
    assert t["reason"].tolist() == [""] * 4
    assert t["input_hash"].tolist() == ["h-a", "h-b", "h-c", "h-d"]
    assert t["moment_integral"].tolist() == [3.9, -4.8, -6.5, 0.1]
    # the reported moment wins; the integral stands in where none was reported
    assert t["moment"].tolist() == [4.0, -5.0, -6.5, 0.25]
    assert t["moment_source"].tolist() == ["OUTCAR", "OUTCAR", "integral", "OUTCAR"]
    assert t["n_magnetic"].dtype == np.int64 and t["n_magnetic"].tolist() == [2, 0, 2, 4]
    per_atom = t["moment_per_magnetic_atom"].to_numpy()
    np.testing.assert_array_equal(per_atom[[0, 2, 3]], [2.0, -3.25, 0.0625])
    assert np.isnan(per_atom[1])  # no magnetic atom: no per-atom moment, not inf
    # |moment| > threshold: 4.0 is not above 4.0, -5.0 and -6.5 are
    assert t["moment_class"].tolist() == [0, 1, 1, 0] and t["moment_class"].dtype == np.int64
    assert list(t.columns[:10]) == [
        "calc_id", "formula", "run", "order", "order_pattern", "spin_kind", "source_path",
        "split_file", "status", "reason",
    ]  # fmt: skip


def test_label_table_rows_stage_02_could_not_split_have_no_labels(tmp_path: Path) -> None:
    failed = {
        "calc_id": "b", "formula": "Co", "run": "FM", "status": "failed", "path": "split/b.h5",
        "error": "collect: no CHGCAR",
    }  # fmt: skip
    _write_index(tmp_path, [_ok("a", "Fe", "FM", 4.5, 4.4, 2), failed])
    t = label_table(tmp_path, threshold=4.0)
    assert t["status"].tolist() == ["ok", "skipped"]
    assert t["reason"].tolist() == ["", "split: collect: no CHGCAR"]
    assert t["order"].tolist() == ["FM", "FM"]  # from the run tag, which the index still has
    assert t.loc[0, "moment"] == 4.5 and t.loc[0, "moment_class"] == 1
    assert t.loc[0, "n_magnetic"] == 2 and t.loc[0, "moment_per_magnetic_atom"] == 2.25
    assert t.loc[0, "moment_source"] == "OUTCAR" and t.loc[0, "input_hash"] == "h-a"
    for column in ("moment", "moment_integral", "n_magnetic", "moment_per_magnetic_atom",
                   "moment_class", "moment_source", "input_hash"):  # fmt: skip
        assert pd.isna(t.loc[1, column]), column


def test_moment_class_is_minus_one_without_a_moment(tmp_path: Path) -> None:
    _write_index(tmp_path, [_ok("a", "Fe", "FM", None, None, 2)])
    t = label_table(tmp_path, threshold=4.0)
    assert t["moment_class"].tolist() == [-1]


@pytest.mark.parametrize(
    ("run", "order", "pattern"),
    [("Ferro", "FM", "FM"), ("antiferro", "AFM", ""), ("NEEL_1", "AFM", "Neel"),
     ("ZigZag", "AFM", "zigzag"), ("AFM-Stripe", "AFM", "stripe"), ("x_fm", "", ""),
     ("afm-neel-zigzag", "AFM", "Neel"), (None, "", "")],
)  # fmt: skip
def test_run_tags_case_and_position(run: str, order: str, pattern: str) -> None:
    assert order_from_run(run) == order
    assert order_pattern_from_run(run) == pattern


def _split_table(n_formulas: int, per_formula: int = 1) -> pd.DataFrame:
    rows = [
        {"calc_id": f"F{i}_{j}", "formula": f"F{i}", "order": "FM" if i % 2 else "AFM",
         "status": "ok"}
        for i in range(n_formulas)
        for j in range(per_formula)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_split_sizes_follow_the_fractions_exactly_on_whole_groups() -> None:
    t = assign_splits(_split_table(20), (0.6, 0.2, 0.2), "order", 0, seed=0)
    # test: one of round(1 / 0.2) = 5 folds of 20 formulas; val: one of 4 folds of the other 16
    assert (t["split"] == "test").sum() == 4
    assert (t["split"] == "val").sum() == 4
    assert (t["split"] == "train").sum() == 12
    assert (t["fold"] == -1).all()  # kfold 0: no folds
    # stratified: each held-out set has both orders, two of each
    for name in ("test", "val"):
        assert t.loc[t["split"] == name, "order"].value_counts().to_dict() == {"FM": 2, "AFM": 2}


def test_split_fractions_other_than_a_fifth() -> None:
    t = assign_splits(_split_table(30), (0.5, 0.25, 0.25), "order", 0, seed=2)
    # test: one of 4 folds of 30 formulas (7 or 8); val: 0.25 / 0.75 -> one of 3 folds of the rest
    n_test = (t["split"] == "test").sum()
    assert n_test in (7, 8)
    assert (t["split"] == "val").sum() in ((30 - n_test) // 3, (30 - n_test) // 3 + 1)


def test_no_validation_or_test_rows_when_their_fraction_is_zero() -> None:
    t = assign_splits(_split_table(10), (0.8, 0.0, 0.2), "order", 0, seed=0)
    assert set(t["split"]) == {"train", "test"} and (t["split"] == "test").sum() == 2
    t = assign_splits(_split_table(10), (0.8, 0.2, 0.0), "order", 0, seed=0)
    assert set(t["split"]) == {"train", "val"} and (t["split"] == "val").sum() == 2


def test_one_formula_cannot_be_split_and_stays_in_train() -> None:
    t = assign_splits(_split_table(1, per_formula=6), (0.6, 0.2, 0.2), "order", 0, seed=0)
    assert (t["split"] == "train").all()


def test_a_lone_row_is_a_training_row() -> None:
    t = assign_splits(_split_table(1), (0.6, 0.2, 0.2), "order", 0, seed=0)
    assert t["split"].tolist() == ["train"] and t["fold"].tolist() == [-1]


def test_two_formulas_give_one_to_test() -> None:
    t = assign_splits(_split_table(2, per_formula=3), (0.5, 0.0, 0.5), "none", 0, seed=0)
    assert sorted(t.groupby("formula")["split"].first()) == ["test", "train"]


def test_rows_that_are_not_ok_get_no_split_and_no_fold() -> None:
    table = _split_table(12)
    table.loc[[0, 5], "status"] = "skipped"
    t = assign_splits(table, (0.5, 0.25, 0.25), "order", 3, seed=1)
    assert t.loc[[0, 5], "split"].tolist() == ["", ""]
    assert t.loc[[0, 5], "fold"].tolist() == [-1, -1]
    ok = t.drop(index=[0, 5])
    assert set(ok["split"]) == {"train", "val", "test"}
    assert sorted(ok["fold"].value_counts().tolist()) == [3, 3, 4]
    assert "split" not in table and "fold" not in table


def test_no_ok_rows_gives_empty_splits() -> None:
    table = _split_table(4).assign(status="skipped")
    t = assign_splits(table, (0.5, 0.25, 0.25), "order", 2, seed=1)
    assert t["split"].tolist() == [""] * 4 and t["fold"].tolist() == [-1] * 4


def test_kfold_needs_two_folds_and_as_many_formulas() -> None:
    assert (assign_splits(_split_table(6), (1, 0, 0), "order", 1, 0)["fold"] == -1).all()
    assert (assign_splits(_split_table(3), (1, 0, 0), "order", 4, 0)["fold"] == -1).all()
    folds = assign_splits(_split_table(4), (1, 0, 0), "order", 4, 0)["fold"]
    assert sorted(folds) == [0, 1, 2, 3]


def test_stratify_none_and_by_a_column() -> None:
    # 40 formulas, the first 20 FM: stratified by order each test fold keeps the 1:1 mix
    table = _split_table(40).assign(order=["FM"] * 20 + ["AFM"] * 20)
    t = assign_splits(table, (0.5, 0.25, 0.25), "order", 0, seed=5)
    assert t.loc[t["split"] == "test", "order"].value_counts().to_dict() == {"FM": 5, "AFM": 5}
    none = assign_splits(table, (0.5, 0.25, 0.25), "none", 0, seed=5)
    assert (none["split"] == "test").sum() == 10


def test_the_split_of_a_seed_is_fixed() -> None:
    """A dataset's split is recorded with its seed: the same seed must give the same rows."""
    t = assign_splits(_split_table(10), (0.6, 0.2, 0.2), "order", 2, seed=7)
    assert t["split"].tolist() == [
        "train", "train", "train", "train", "val", "train", "train", "val", "test", "test",
    ]  # fmt: skip
    assert t["fold"].tolist() == [1, 0, 0, 1, 0, 1, 1, 0, 0, 1]


def test_folds_stratify_when_the_largest_stratum_equals_the_fold_count() -> None:
    # 5 FM and 5 AFM rows, one formula each, 5 folds: stratified, each fold has one of each
    strata = np.array(["FM", "AFM"] * 5)
    groups = np.array([f"F{i}" for i in range(10)])
    folds = grouped_stratified_folds(strata, groups, 5, seed=0)
    for k in range(5):
        assert sorted(strata[folds == k]) == ["AFM", "FM"]


def test_folds_of_small_strata_warn_nothing_and_cover_every_row() -> None:
    strata = np.array(["FM"] * 6 + ["AFM"])  # AFM has fewer rows than folds
    groups = np.array([f"F{i}" for i in range(7)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = grouped_stratified_folds(strata, groups, 3, seed=0)
    assert sorted(np.bincount(folds)) == [2, 2, 3]


def test_label_rows_each_filter_on_its_own() -> None:
    table = pd.DataFrame(
        {
            "status": ["ok", "skipped", "ok", "ok", "ok", "ok"],
            "sample": [0, 1, -1, 2, 3, 4],
            "order": ["FM", "FM", "FM", "AFM", "", "FM"],
            "moment_class": [1, 1, 1, 0, -1, 1],
            "moment": [5.0, 5.0, 5.0, 0.5, 0.1, 4.5],
        }
    )
    assert label_rows(table, "order").index.tolist() == [0, 3, 5]
    assert label_rows(table, "moment_class").index.tolist() == [0, 3, 5]
    assert label_rows(table, "moment").index.tolist() == [0, 3, 4, 5]
    # the table before a build has no sample column; a regression label keeps every ok row
    assert label_rows(table.drop(columns="sample"), "moment").index.tolist() == [0, 2, 3, 4, 5]
    assert label_rows(table.drop(columns="status"), "moment").index.tolist() == [0, 1, 3, 4, 5]
    with pytest.raises(MagnbError, match="no 'order' column: rebuild it"):
        label_rows(table.drop(columns="order"), "order")


def test_encode_labels_dtypes_and_values() -> None:
    codes = encode_labels(np.array([1, 0, 1]), "moment_class")
    assert codes.dtype == np.int32 and codes.tolist() == [1, 0, 1]
    values = encode_labels([1.5, -2.25], "moment")
    assert values.dtype == np.float32 and values.tolist() == [1.5, -2.25]
    per_atom = encode_labels([0.5], "moment_per_magnetic_atom")
    assert per_atom.dtype == np.float32
    assert encode_labels(["FM", "AFM"], "order").dtype == np.int32
