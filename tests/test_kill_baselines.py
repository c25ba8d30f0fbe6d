"""Baselines and metrics by value on small hand-made labels (the tests ``make mutants`` needed
for magnb/baselines.py; see tests/MUTANTS.md). Milliseconds each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magnb.baselines import _integral, best_cut, majority_baseline
from magnb.errors import MagnbError


def test_best_cut_by_value() -> None:
    # 0.0, 1.0 class 0; 2.0, 3.0 class 1: the cut is the midpoint 1.5, balanced accuracy 1
    assert best_cut(np.array([3.0, 0.0, 2.0, 1.0]), np.array([1, 0, 1, 0])) == (1.5, 1.0)
    # one class: no cut, the rule predicts it everywhere
    assert best_cut(np.array([1.0, 2.0]), np.array([1, 1])) == (None, 1.0)
    assert best_cut(np.array([1.0, 2.0]), np.array([0, 0])) == (None, 1.0)
    # class 1 below class 0: no rule "class 1 iff score > c" beats chance; the best candidates
    # are the cuts below and above everything (-1, 2), and the tie goes to the later of the two
    cut, ba = best_cut(np.array([0.0, 1.0]), np.array([1, 0]))
    assert ba == 0.5 and cut == 2.0


def test_best_cut_with_overlap() -> None:
    score = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([0, 1, 0, 1, 1])
    cut, ba = best_cut(score, y)
    # cut 2.5: class 1 above -> 3, 4 right, 1 wrong (tpr 2/3); class 0 at or below all right
    assert cut == 2.5 and ba == pytest.approx((2 / 3 + 1) / 2)


def test_majority_baseline_by_value() -> None:
    out = majority_baseline([1, 1, 0, 2, 1], [0, 2, 2, 1], "classification")
    assert out["prediction"] == 1 and out["method"] == "training majority class"
    assert out["accuracy"] == pytest.approx(0.25)
    reg = majority_baseline([1.0, 2.0, np.nan, 6.0], [3.0, 5.0], "regression")
    assert reg["prediction"] == 3.0 and reg["method"] == "training mean"
    assert reg["mae"] == pytest.approx(1.0)
    with pytest.raises(MagnbError, match="the training split is empty"):
        majority_baseline([], [1], "classification")
    with pytest.raises(MagnbError, match="no finite label to average"):
        majority_baseline([np.nan], [1.0], "regression")


def test_integral_per_magnetic_atom() -> None:
    table = pd.DataFrame({"moment_integral": [4.0, -3.0, 2.0], "n_magnetic": [2, 0, np.nan]})
    np.testing.assert_array_equal(_integral(table, per_atom=False), [4.0, -3.0, 2.0])
    # no magnetic atom or an unknown count: divided by 1
    np.testing.assert_array_equal(_integral(table, per_atom=True), [2.0, -3.0, 2.0])
    with pytest.raises(MagnbError, match="no 'n_magnetic' column: rebuild it with stage 03"):
        _integral(table.drop(columns="n_magnetic"), per_atom=True)
    bad = table.assign(moment_integral=[1.0, np.nan, 2.0], calc_id=["a", "b", "c"])
    with pytest.raises(MagnbError, match=r"1 row\(s\) have no moment_integral \(e.g. \['b'\]\)"):
        _integral(bad, per_atom=False)
