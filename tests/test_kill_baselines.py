"""Baselines and metrics by value on small hand-made labels (the tests ``make mutants`` needed
for magnb/baselines.py; see tests/MUTANTS.md). Milliseconds each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magnb.baselines import (
    _fmt_ci,
    _integral,
    best_cut,
    classification_metrics,
    format_table,
    majority_baseline,
    physics_baseline,
    regression_metrics,
    split_size_warning,
)
from magnb.errors import MagnbError
from magnb.intervals import INTERVAL_METHODS, regression_intervals


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
    with pytest.raises(MagnbError, match="^the training split is empty: no majority to predict$"):
        majority_baseline([], [1], "classification")
    with pytest.raises(MagnbError, match="^the training split has no finite label to average$"):
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


def _order_table(per_atom: list[float], order: list[str], n_mag: list[int]) -> pd.DataFrame:
    n = len(order)
    return pd.DataFrame(
        {
            "calc_id": [f"c{i}" for i in range(n)],
            "status": "ok",
            "order": order,
            "order_pattern": [o if o == "FM" else "zigzag" for o in order],
            "n_magnetic": n_mag,
            "moment_integral": [m * max(k, 1) for m, k in zip(per_atom, n_mag, strict=True)],
        }
    )


def test_physics_order_cut_by_value() -> None:
    train = _order_table([-3.0, 2.5, 0.5, 0.1], ["FM", "FM", "AFM", "AFM"], [2, 1, 2, 0])
    # |m| / n: 3.0, 2.5 FM; 0.5, 0.1 AFM: the cut is the midpoint 1.5
    test = _order_table([2.0, 1.0, -1.75, 0.2], ["FM", "FM", "AFM", "AFM"], [4, 2, 1, 3])
    out = physics_baseline(train, test, "order", threshold=4.0)
    assert out["cut"] == 1.5 and out["train_balanced_accuracy"] == 1.0
    # predicted FM: 2.0, 1.75 -> right, wrong; AFM: 1.0, 0.2 -> wrong, right
    assert out["confusion_matrix"] == [[1, 1], [1, 1]]
    assert out["method"] == "FM iff |moment_integral| / n_magnetic > cut (cut fit on train)"
    assert out["n"] == 4


def test_physics_order_without_a_cut_predicts_the_training_class() -> None:
    train = _order_table([3.0, 2.5], ["FM", "FM"], [1, 1])
    test = _order_table([2.0, 0.1], ["FM", "AFM"], [1, 1])
    out = physics_baseline(train, test, "order", threshold=4.0)
    assert out["cut"] is None and out["confusion_matrix"] == [[0, 1], [0, 1]]
    assert out["notes"][0] == "training split holds only FM: no cut to fit"
    train = _order_table([0.0, 0.5], ["AFM", "AFM"], [1, 1])
    out = physics_baseline(train, test, "order", threshold=4.0)
    assert out["confusion_matrix"] == [[1, 0], [1, 0]]
    assert out["notes"][0] == "training split holds only AFM: no cut to fit"


def test_physics_moment_class_and_regressions_by_value() -> None:
    table = pd.DataFrame(
        {
            "calc_id": ["a", "b", "c", "d"],
            "status": "ok",
            "moment_class": [1, 0, 1, -1],
            "moment": [5.0, 1.0, -4.5, np.nan],
            "moment_per_magnetic_atom": [2.5, 1.0, -4.5, np.nan],
            "moment_integral": [4.5, 3.5, -4.25, 9.0],
            "n_magnetic": [2, 1, 1, 1],
        }
    )
    out = physics_baseline(table, table, "moment_class", threshold=4.0)
    assert out["method"] == "|moment_integral| > 4 muB" and out["threshold"] == 4.0
    assert out["n"] == 3  # the row without a class is left out
    assert out["confusion_matrix"] == [[1, 0], [0, 2]]
    assert out["probability"] == pytest.approx(
        [1 / (1 + np.exp(-5.0)), 1 / (1 + np.exp(5.0)), 1 / (1 + np.exp(-2.5))]
    )
    reg = physics_baseline(table.iloc[:3], table.iloc[:3], "moment", threshold=4.0)
    assert reg["method"] == "moment_integral" and reg["mae"] == pytest.approx(
        (0.5 + 2.5 + 0.25) / 3
    )
    per = physics_baseline(table.iloc[:3], table.iloc[:3], "moment_per_magnetic_atom", 4.0)
    assert per["method"] == "moment_integral / n_magnetic"
    assert per["mae"] == pytest.approx((0.25 + 2.5 + 0.25) / 3)
    with pytest.raises(MagnbError, match="no physics baseline for label 'spin_kind'"):
        physics_baseline(table, table, "spin_kind", 4.0)
    with pytest.raises(MagnbError, match="the test table has no rows with a 'moment_class' label"):
        physics_baseline(table, table.iloc[3:], "moment_class", 4.0)
    with pytest.raises(MagnbError, match="the training table has no rows with an FM/AFM order"):
        physics_baseline(
            table.assign(order=""), table.assign(order=["FM", "AFM", "FM", "AFM"]), "order", 4.0
        )


def test_physics_order_pattern_by_value() -> None:
    train = pd.DataFrame(
        {
            "calc_id": [f"t{i}" for i in range(5)],
            "status": "ok",
            "order_pattern": ["FM", "FM", "stripe", "stripe", "Neel"],
            "n_magnetic": [1, 1, 1, 1, 1],
            "moment_integral": [3.0, 2.0, 0.0, 0.25, 0.5],
        }
    )
    test = train.assign(order_pattern=["FM", "Neel", "stripe", "zigzag", "FM"])
    test["moment_integral"] = [2.5, 0.2, 0.1, 3.0, 0.0]
    out = physics_baseline(train, test, "order_pattern", threshold=4.0)
    assert out["cut"] == 1.25 and out["train_balanced_accuracy"] == 1.0
    assert out["method"] == (
        "FM iff |moment_integral| / n_magnetic > cut (cut fit on train), else stripe "
        "(the training split's most common other pattern)"
    )
    # rows FM, Neel, stripe, zigzag, FM predicted FM, stripe, stripe, FM, stripe
    cm = np.array(out["confusion_matrix"])
    assert cm[0].tolist() == [1, 0, 0, 1] and cm[1].tolist() == [0, 0, 0, 1]
    assert cm[2].tolist() == [1, 0, 0, 0] and cm[3].tolist() == [0, 0, 0, 1]
    only_fm = physics_baseline(train.iloc[:2], test, "order_pattern", threshold=4.0)
    assert only_fm["cut"] is None and np.array(only_fm["confusion_matrix"])[:, 0].sum() == 5
    assert only_fm["notes"][0] == "training split holds FM only or no FM: no cut to fit"
    with pytest.raises(MagnbError, match="the training table has no rows with an order pattern"):
        physics_baseline(train.assign(order_pattern=""), test, "order_pattern", 4.0)


def test_classification_metrics_multiclass_by_value() -> None:
    truth = [0, 1, 2, 2, 1, 0]
    prob = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.3, 0.4, 0.3],
         [0.2, 0.5, 0.3]]
    )  # fmt: skip
    out = classification_metrics(truth, prob, n_boot=50)
    # argmax: 0, 1, 2, 0, 1, 1 -> right, right, right, wrong, right, wrong
    assert out["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert out["labels"] == [0, 1, 2] and out["n"] == 6
    assert out["class_counts"] == {"0": 2, "1": 2, "2": 2}
    assert out["predicted_counts"] == {"0": 2, "1": 3, "2": 1}
    assert out["roc_auc"] is not None and 0.5 < out["roc_auc"] <= 1.0
    assert out["notes"] == []
    # two of three classes present: no ROC-AUC, and a note says why
    part = classification_metrics([0, 1, 1, 0], prob[:4], n_boot=50)
    assert part["roc_auc"] is None
    assert part["notes"][0] == "ROC-AUC undefined: y_true holds 2 of 3 classes"


def test_classification_metrics_two_columns_and_explicit_predictions() -> None:
    prob = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    out = classification_metrics([0, 1, 1, 1], prob, n_boot=50)
    assert out["labels"] == [0, 1] and out["confusion_matrix"] == [[1, 0], [1, 2]]
    assert out["roc_auc"] == pytest.approx(1.0)
    column = classification_metrics([0, 1, 1, 1], prob[:, 1:], n_boot=50)
    assert column["confusion_matrix"] == [[1, 0], [1, 2]]
    explicit = classification_metrics([0, 1, 1, 1], [0.2, 0.7, 0.4, 0.9], y_pred=[1, 1, 1, 1])
    assert explicit["confusion_matrix"] == [[0, 1], [0, 3]]
    assert explicit["roc_auc"] == pytest.approx(1.0)  # from the scores, not the predictions
    with pytest.raises(MagnbError, match="y_pred has 3 labels, y_true 4"):
        classification_metrics([0, 1, 1, 1], [0.2, 0.7, 0.4, 0.9], y_pred=[1, 1, 1])
    with pytest.raises(MagnbError, match="y_true has class 3, but y_prob is 3 class columns"):
        classification_metrics([0, 1, 3], np.full((3, 3), 0.5), y_pred=[0, 1, 1])
    # two columns become one binary score: a third true class is the caller's error, named as
    # such (it was scikit-learn's ValueError from roc_auc_score)
    with pytest.raises(MagnbError, match="y_true has class 2, but y_prob is 2 class columns"):
        classification_metrics([0, 1, 2], np.full((3, 2), 0.5))
    with pytest.raises(MagnbError, match="y_true has class 2, but y_prob is a binary score"):
        classification_metrics([0, 1, 2], [0.2, 0.7, 0.4], y_pred=[0, 1, 1])
    with pytest.raises(MagnbError, match="y_prob has 1 NaN or infinite values"):
        classification_metrics([0, 1], [0.5, np.inf])
    with pytest.raises(MagnbError, match=r"y_prob has shape \(3,\), but there are 2 true labels"):
        classification_metrics([0, 1], [0.5, 0.5, 0.5])


def test_regression_metrics_by_value() -> None:
    out = regression_metrics([1.0, 2.0, 4.0], [[2.0], [2.0], [1.0]], n_boot=50)
    assert out["n"] == 3 and out["mae"] == pytest.approx(4 / 3)
    assert out["rmse"] == pytest.approx(np.sqrt(10 / 3))
    assert out["r2"] == pytest.approx(1 - 10 / (14 / 3))
    assert out["notes"] == [] and set(out["ci95"]) == {"mae", "rmse", "r2"}
    flat = regression_metrics([2.0, 2.0], [1.0, 3.0], n_boot=50)
    assert flat["r2"] is None and flat["ci95"]["r2"] is None
    assert flat["notes"] == ["R^2 undefined: y_true is constant"]
    with pytest.raises(MagnbError, match="y_pred has 1 NaN or infinite values"):
        regression_metrics([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(MagnbError, match="y_true has 1 NaN or infinite values"):
        regression_metrics([np.inf, 2.0], [1.0, 1.0])
    with pytest.raises(MagnbError, match="y_true is empty: no samples to score"):
        regression_metrics([], [])
    with pytest.raises(MagnbError, match=r"y_pred has shape \(1,\), but there are 2 true values"):
        regression_metrics([1.0, 2.0], [1.0])


def test_physics_order_pattern_scores_test_rows_per_magnetic_atom_like_train() -> None:
    # four magnetic atoms a cell: the cut (1.25 muB per atom) is fitted on per-atom moments, so
    # the test rows must be scored per atom too; a stripe cell of 4 muB in all (1 per atom) is
    # below the cut, though its total is above it
    train = pd.DataFrame(
        {
            "calc_id": [f"t{i}" for i in range(5)],
            "status": "ok",
            "order_pattern": ["FM", "FM", "stripe", "stripe", "Neel"],
            "n_magnetic": [4] * 5,
            "moment_integral": [12.0, 8.0, 0.0, 1.0, 2.0],
        }
    )
    test = train.assign(order_pattern=["stripe", "FM", "stripe", "FM", "Neel"])
    test["moment_integral"] = [4.0, 8.0, 0.4, 16.0, 1.2]
    out = physics_baseline(train, test, "order_pattern", threshold=4.0)
    assert out["cut"] == 1.25
    cm = np.array(out["confusion_matrix"])  # classes FM, Neel, zigzag, stripe
    assert cm[0].tolist() == [2, 0, 0, 0]  # both FM rows: 2 and 4 muB per atom
    assert cm[3].tolist() == [0, 0, 0, 2]  # both stripe rows, 1.0 and 0.1 per atom
    assert cm[1].tolist() == [0, 0, 0, 1]  # Neel: 0.3 per atom, the training's other pattern
    # no FM in training: every test row is the training's most common other pattern
    no_fm = physics_baseline(train.iloc[2:], test, "order_pattern", threshold=4.0)
    assert no_fm["cut"] is None
    assert np.array(no_fm["confusion_matrix"])[:, 3].sum() == 5


def test_split_size_warning_names_every_class_absent_ones_included() -> None:
    # order_pattern: FM, Neel, zigzag, stripe; the test split holds no stripe at all
    warning = split_size_warning(np.array([0, 0, 1, 2]), "order_pattern")
    assert warning.startswith("small test split: n = 4 (FM: 2, Neel: 1, zigzag: 1, stripe: 0);")
    moment = split_size_warning(np.array([1, 1, 0]), "moment_class")
    assert moment.startswith("small test split: n = 3 (|m| <= threshold: 1, |m| > threshold: 2);")
    assert split_size_warning(np.array([0.5] * 3), "moment").startswith(
        "small test split: n = 3 (< 20)"
    )
    assert split_size_warning(np.repeat([0, 1], 10), "order") is None


def test_regression_metrics_of_small_values_by_value() -> None:
    # moments per atom of a few tenths: the spread is far below 1, R^2 is still defined
    truth = np.array([0.1, 0.2, 0.4, 0.3, 0.0, 0.5])
    pred = np.array([0.15, 0.1, 0.35, 0.3, 0.1, 0.45])
    out = regression_metrics(truth, pred, n_boot=200, seed=3)
    err = pred - truth
    r2 = 1 - (err**2).sum() / ((truth - truth.mean()) ** 2).sum()
    assert out["r2"] == pytest.approx(r2) and out["notes"] == []
    assert out["mae"] == pytest.approx(np.abs(err).mean())
    assert out["rmse"] == pytest.approx(np.sqrt((err**2).mean()))
    # the intervals are the seeded bootstrap asked for: n_boot and seed reach it
    assert out["ci95"] == regression_intervals(truth, pred, 200, 3)
    assert out["ci95"] != regression_intervals(truth, pred, 200, 4)
    assert out["ci95_methods"] == {m: INTERVAL_METHODS[m] for m in ("mae", "rmse", "r2")}
    assert regression_metrics(truth, pred)["ci95"] == regression_intervals(truth, pred)
    constant = regression_metrics([0.2, 0.2, 0.2], [0.1, 0.2, 0.3], n_boot=50)
    assert constant["r2"] is None and constant["ci95"]["r2"] is None
    assert constant["ci95"]["mae"] is not None
    assert constant["notes"] == ["R^2 undefined: y_true is constant"]
    with pytest.raises(MagnbError, match="^y_true is empty: no samples to score$"):
        regression_metrics([], [])


def test_r2_interval_leaves_out_resamples_of_one_value() -> None:
    # two distinct truths of 0.2 and 0.1: many resamples of 3 hold one value only, whose float
    # spread is 1e-33 rather than 0; they must be left out, not give R^2 of -1e30
    ci = regression_intervals(np.array([0.2, 0.2, 0.1]), np.array([0.1, 0.2, 0.3]), 200, 0)
    assert ci["r2"] is not None and ci["r2"][0] > -100


def test_a_value_prints_with_its_interval_low_then_high() -> None:
    assert _fmt_ci(0.85, [0.62, 0.97]) == "0.850 [0.62, 0.97]"
    assert _fmt_ci(0.85, [None, 0.97]) == _fmt_ci(0.85, None) == "0.850"
    assert _fmt_ci(None, [0.1, 0.2]) == "n/a"


def test_format_table_whole_text_classification() -> None:
    # methods out of order, one extra method, a missing value, no interval on one row, an
    # "understates" note and two warnings (one repeated): the whole text, written by hand
    metrics = {
        "descriptor": {"n": 4, "accuracy": 0.5, "balanced_accuracy": None, "roc_auc": 0.75},
        "extra": {"n": 4, "accuracy": 1.0, "balanced_accuracy": 1.0, "roc_auc": float("nan")},
        "model": {
            "n": 4,
            "accuracy": 0.75,
            "balanced_accuracy": 0.8333,
            "roc_auc": 0.9,
            "ci95": {"accuracy": [0.194, 0.9937], "balanced_accuracy": [0.5, 1.0]},
            "notes": ["the interval understates it"],
            "small_sample_warning": "b warns",
        },
        "majority": {"accuracy": 0.25, "small_sample_warning": "a warns"},
        "physics": {"n": 4, "accuracy": 0.5, "small_sample_warning": "b warns"},
    }
    assert format_table(metrics) == (
        "| method | n | accuracy | balanced accuracy | ROC-AUC |\n"
        "|---|---|---|---|---|\n"
        "| model | 4 | 0.750 [0.19, 0.99] | 0.833 [0.50, 1.00] | 0.900 |\n"
        "| majority | n/a | 0.250 | n/a | n/a |\n"
        "| physics | 4 | 0.500 | n/a | n/a |\n"
        "| descriptor | 4 | 0.500 | n/a | 0.750 |\n"
        "| extra | 4 | 1.000 | 1.000 | n/a |\n"
        "\n[95 % intervals: accuracy exact binomial; balanced accuracy and ROC-AUC stratified "
        "bootstrap over the test samples; n = test samples]\n"
        "[an interval [x, x] of balanced accuracy: every class all right or all wrong, which "
        "the bootstrap cannot vary; the accuracy's exact interval gives the width]\n"
        "warning: a warns\n"
        "warning: b warns"
    )


def test_format_table_whole_text_regression() -> None:
    metrics = {
        "model": {"n": 3, "mae": 0.5, "rmse": 0.75, "r2": -0.25, "ci95": {"mae": [0.1, 0.9]}},
        "majority": {"n": 3, "mae": 1.0, "rmse": 1.25, "r2": None, "notes": ["other"]},
    }
    assert format_table(metrics) == (
        "| method | n | MAE | RMSE | R^2 |\n"
        "|---|---|---|---|---|\n"
        "| model | 3 | 0.500 [0.10, 0.90] | 0.750 | -0.250 |\n"
        "| majority | 3 | 1.000 | 1.250 | n/a |\n"
        "\n[95 % intervals: bootstrap over the test samples; n = test samples]"
    )
    # no interval anywhere: no line about intervals, and no warning line
    assert format_table({"majority": metrics["majority"]}) == (
        "| method | n | MAE | RMSE | R^2 |\n|---|---|---|---|---|\n| majority | 3 | 1.000 | 1.250 | n/a |"
    )
    with pytest.raises(MagnbError, match="^no metrics to tabulate$"):
        format_table({})


def test_regression_metrics_take_object_columns_and_a_column_of_truths() -> None:
    # pandas gives object columns (a label column that once held None); a (n, 1) truth is a column
    truth = pd.Series([1.0, 2.0, 4.0], dtype=object)
    pred = pd.Series([1.5, 2.0, 3.0], dtype=object)
    for t, p in ((truth, pred), (np.array([[1.0], [2.0], [4.0]]), [1.5, 2.0, 3.0])):
        out = regression_metrics(t, p, n_boot=20)
        assert out["n"] == 3 and out["mae"] == pytest.approx(0.5)
        assert out["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 1) / 3))
        # mean 7/3: squared deviations 16/9, 1/9, 25/9
        assert out["r2"] == pytest.approx(1 - 1.25 / (42 / 9), rel=1e-12)


def _order_pattern_tables(test_integrals: list[float], test_patterns: list[str]):
    train = pd.DataFrame(
        {
            "calc_id": [f"t{i}" for i in range(5)],
            "status": "ok",
            "order_pattern": ["FM", "FM", "stripe", "stripe", "Neel"],
            "n_magnetic": 1,
            "moment_integral": [3.0, 2.0, 0.0, 0.25, 0.5],  # cut 1.25, the other pattern stripe
        }
    )
    test = pd.DataFrame(
        {
            "calc_id": [f"s{i}" for i in range(len(test_patterns))],
            "status": "ok",
            "order_pattern": test_patterns,
            "n_magnetic": 1,
            "moment_integral": test_integrals,
        }
    )
    return train, test


def test_physics_order_pattern_at_the_cut_and_with_one_training_row() -> None:
    # a test cell exactly at the cut is not FM ("FM iff > cut"), though its probability is 1/2
    train, test = _order_pattern_tables([1.25, 1.3, 1.2], ["FM", "FM", "stripe"])
    out = physics_baseline(train, test, "order_pattern", threshold=4.0)
    assert out["cut"] == 1.25
    assert np.array(out["confusion_matrix"])[0].tolist() == [1, 0, 0, 1]
    # one training row, not FM: no cut; every test row is that pattern
    one = physics_baseline(train.iloc[2:3], test, "order_pattern", threshold=4.0)
    assert one["cut"] is None
    assert np.array(one["confusion_matrix"])[:, 3].tolist() == [2, 0, 0, 1]
    with pytest.raises(MagnbError, match="^the training table has no rows with an order pattern$"):
        physics_baseline(train.assign(order_pattern=""), test, "order_pattern", 4.0)


def test_physics_order_pattern_roc_auc_from_its_soft_probability() -> None:
    # FM probability expit((|m| - cut) / 0.1): 10 and 9 muB are both 1.0 in float64 (a tie),
    # so ROC-AUC depends on the softness; every class present so the ROC-AUC is defined
    from scipy.special import expit
    from sklearn.metrics import roc_auc_score

    integrals = [10.0, 9.0, 1.0, 0.5, 1.4, 1.1]
    patterns = ["FM", "stripe", "Neel", "zigzag", "FM", "stripe"]
    train, test = _order_pattern_tables(integrals, patterns)
    out = physics_baseline(train, test, "order_pattern", threshold=4.0)
    p_fm = expit((np.array(integrals) - 1.25) / 0.1)
    prob = np.zeros((6, 4))
    prob[:, 0], prob[:, 3] = p_fm, 1 - p_fm  # FM, stripe
    y = np.array([0, 3, 1, 2, 0, 3])
    expected = roc_auc_score(y, prob, multi_class="ovr", labels=[0, 1, 2, 3])
    assert out["roc_auc"] == pytest.approx(expected, abs=1e-12)
    # the same rows with the softness 100 times less sharp give another value
    p_soft = expit((np.array(integrals) - 1.25) * 0.1)
    prob[:, 0], prob[:, 3] = p_soft, 1 - p_soft
    assert roc_auc_score(y, prob, multi_class="ovr", labels=[0, 1, 2, 3]) != pytest.approx(expected)


def test_majority_baseline_k_classes_from_train_and_test() -> None:
    # the training majority (class 2) is a class the test split does not hold
    out = majority_baseline([2, 2, 0], [0, 1, 1], "classification")
    assert out["prediction"] == 2 and out["accuracy"] == 0.0
    assert out["confusion_matrix"] == [[0, 0, 1], [0, 0, 2], [0, 0, 0]]
    # the test split holds a class the training split never had
    out = majority_baseline([1, 1, 0], [2, 1], "classification")
    assert out["confusion_matrix"] == [[0, 0, 0], [0, 1, 0], [0, 1, 0]]
    # one class everywhere: still a binary problem, predicted right
    out = majority_baseline([0, 0], [0, 0, 0], "classification")
    assert out["accuracy"] == 1.0 and out["confusion_matrix"] == [[3, 0], [0, 0]]
    with pytest.raises(MagnbError, match=r"^y_train must hold class indices 0, 1, \.\.\.$"):
        majority_baseline([0.5, 1], [1], "classification")
    with pytest.raises(MagnbError, match=r"^y_test must hold class indices 0, 1, \.\.\.$"):
        majority_baseline([1], [-1], "classification")


def test_best_cut_ties_take_the_middle_of_the_best_cuts() -> None:
    # cuts -1, 0.75, 1.75, 2.5, 4 score 0.5, 0.75, 0.5, 0.75, 0.5: the best are 0.75 and 2.5, and
    # the later of two is taken; a "below everything" cut must not join them
    assert best_cut(np.array([0.0, 1.5, 2.0, 3.0]), np.array([0, 1, 0, 1])) == (2.5, 0.75)


def test_best_cut_is_exact_for_adjacent_floats() -> None:
    # the midpoint of two adjacent floats rounds onto one of them; the rule "class 1 iff
    # score > cut" at the returned cut must still give the returned balanced accuracy
    a, b = 1.0, float(np.nextafter(1.0, 2.0))
    for y in ([0, 1], [1, 0]):
        score, labels = np.array([a, b]), np.array(y)
        cut, ba = best_cut(score, labels)
        pred = (score > cut).astype(int)
        recall = [np.mean(pred[labels == c] == c) for c in (0, 1)]
        assert ba == pytest.approx(np.mean(recall))
    assert best_cut(np.array([a, b]), np.array([0, 1]))[1] == 1.0


def test_best_cut_does_not_call_near_ties_ties() -> None:
    # 100 001 scores, class 0 only at 0: cut 0.5 is perfect, 1.5 misses one of 100 000 (balanced
    # accuracy 1 - 5e-6): not a tie, so the cut is 0.5
    score = np.arange(100_001, dtype=np.float64)
    y = np.ones(len(score), dtype=int)
    y[0] = 0
    assert best_cut(score, y) == (0.5, 1.0)


def _descriptor(sample: np.ndarray) -> dict[str, float]:
    from magnb.baselines import descriptor_feature_names, descriptor_features

    x = np.asarray(sample, dtype=np.float64).reshape(1, -1, 1, 1, 1)
    return dict(zip(descriptor_feature_names(1), descriptor_features(x)[0], strict=True))


def test_descriptor_skew_and_signs_by_value() -> None:
    # Bernoulli(1/4) values: skewness (1 - 2p) / sqrt(p (1 - p)) = 2 / sqrt(3), whatever the scale
    for amplitude in (0.5, 3e-12):
        assert _descriptor([0, 0, 0, amplitude])["c0:skew"] == pytest.approx(2 / np.sqrt(3))
    # nearly constant relative to its mean: rounding noise, reported as no skew
    assert _descriptor([1e6, 1e6, 1e6 + 3e-7])["c0:skew"] == 0.0
    # zeros are neither positive nor negative; values in (0, 1) are positive
    f = _descriptor([0.0, 0.5, -1.0, 0.0, 2.0])
    assert f["c0:frac_pos"] == pytest.approx(0.4) and f["c0:frac_neg"] == pytest.approx(0.2)
    # two samples, two channels: each one's own skew
    from magnb.baselines import descriptor_features

    x = np.zeros((2, 4, 1, 1, 2))
    x[0, 3, 0, 0, 0] = 1.0  # Bernoulli(1/4): 2/sqrt(3)
    x[0, :, 0, 0, 1] = [1, 1, 1, 0]  # Bernoulli(3/4): -2/sqrt(3)
    x[1, :, 0, 0, 0] = [1, -1, 1, -1]  # symmetric: 0
    x[1, :, 0, 0, 1] = [0, 0, 0, 5]
    skew = descriptor_features(x)[:, [10, 23]]
    np.testing.assert_allclose(skew, [[2 / np.sqrt(3), -2 / np.sqrt(3)], [0, 2 / np.sqrt(3)]])


def test_descriptor_features_of_flat_and_tiny_samples_warn_nothing() -> None:
    import warnings

    from magnb.baselines import descriptor_features

    tiny = np.zeros((1, 100, 100, 100, 1))
    tiny[0, 0, 0, 0, 0] = 1e-105  # std**3 underflows to 0 while the third moment does not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x in (np.full((1, 2, 2, 2, 1), 3.0), tiny):
            assert descriptor_features(x)[0, 10] == 0.0
    with pytest.raises(
        MagnbError, match=r"^samples must be \(N, X, Y, Z, C\), not shape \(3, 3\)$"
    ):
        descriptor_features(np.zeros((3, 3)))


def test_descriptor_baseline_input_errors_by_message() -> None:
    from magnb.baselines import descriptor_baseline

    x = np.zeros((4, 3))
    cases = [
        (x, np.zeros((2, 2)), "feature arrays must be (n, F) alike, not (4, 3) and (2, 2)"),
        (np.zeros(4), x, "feature arrays must be (n, F) alike, not (4,) and (4, 3)"),
    ]
    for train, test, message in cases:
        with pytest.raises(MagnbError) as err:
            descriptor_baseline(train, [0, 1, 0, 1], test, [0, 1], "classification")
        assert str(err.value) == message
    with pytest.raises(MagnbError) as err:
        descriptor_baseline(x, [0, 1, 0], x, [0, 1, 0, 1], "classification")
    assert str(err.value) == "4 training feature rows for 3 training labels"
    with pytest.raises(MagnbError) as err:
        descriptor_baseline(np.zeros((0, 3)), [], x, [0, 1, 0, 1], "classification")
    assert str(err.value) == "0 training feature rows for 0 training labels"
    # one training row is enough: it holds one class, which is predicted
    one = descriptor_baseline(x[:1], [1], x, [0, 1, 1, 1], "classification")
    assert one["predicted_counts"] == {"0": 0, "1": 4}


def test_descriptor_ridge_standardizes_its_features_by_value() -> None:
    # standardized features (population std), ridge alpha 1 with an intercept: solved by hand
    from magnb.baselines import descriptor_baseline

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2)) * np.array([1000.0, 0.01])
    y = x[:, 0] / 1000 + 50 * x[:, 1] + rng.normal(0, 0.1, 12)
    xtr, ytr, xte, yte = x[:8], y[:8], x[8:], y[8:]
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
    z = (xtr - mu) / sd
    w = np.linalg.solve(z.T @ z + np.eye(2), z.T @ (ytr - ytr.mean()))
    pred = ((xte - mu) / sd) @ w + ytr.mean()
    out = descriptor_baseline(xtr, ytr, xte, yte, "regression")
    assert out["mae"] == pytest.approx(np.abs(pred - yte).mean(), rel=1e-9)


def test_labels_given_as_a_column_and_bad_labels_by_message() -> None:
    out = classification_metrics(np.array([[0], [1], [1]]), [0.2, 0.7, 0.4])
    assert out["accuracy"] == pytest.approx(2 / 3) and out["confusion_matrix"] == [[1, 0], [1, 1]]
    cases = [
        (dict(y_true=[[0, 1], [1, 0]], y_prob=[0.1, 0.2]), "y_true must be one label per sample, not shape (2, 2)"),
        (dict(y_true=[0.5, 1], y_prob=[0.1, 0.2]), "y_true must hold class indices 0, 1, ..."),
        (dict(y_true=[-1, 1], y_prob=[0.1, 0.2]), "y_true must hold class indices 0, 1, ..."),
        (dict(y_true=[np.inf, 1], y_prob=[0.1, 0.2]), "y_true must hold class indices 0, 1, ..."),
        (dict(y_true=[0, 1], y_prob=[0.1, 0.2], y_pred=[0.5, 1]), "y_pred must hold class indices 0, 1, ..."),
        (dict(y_true=[0, 1], y_prob=[0.1, np.nan]), "y_prob has 1 NaN or infinite values"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(MagnbError) as err:
            classification_metrics(**kwargs)
        assert str(err.value) == message
    # an object column of scores (pandas) is read as numbers
    obj = classification_metrics([0, 1, 1], pd.Series([0.2, 0.7, 0.4], dtype=object))
    assert obj["roc_auc"] == 1.0


def test_classification_intervals_default_to_seed_0() -> None:
    y = np.array([0, 1] * 15)
    score = np.linspace(0, 1, 30)
    default = classification_metrics(y, score, n_boot=200)["ci95"]
    assert default == classification_metrics(y, score, n_boot=200, seed=0)["ci95"]
    assert default != classification_metrics(y, score, n_boot=200, seed=1)["ci95"]


def test_integral_errors_and_columns() -> None:
    # moment_class needs no n_magnetic column
    table = pd.DataFrame({"calc_id": ["a", "b"], "status": "ok", "moment_class": [0, 1]})
    table["moment_integral"] = [1.0, 5.0]
    assert physics_baseline(table, table, "moment_class", threshold=4.0)["accuracy"] == 1.0
    # a moment exactly at the threshold is not above it
    at = table.assign(moment_integral=[4.0, 5.0])
    assert physics_baseline(at, at, "moment_class", threshold=4.0)["accuracy"] == 1.0
    bad = pd.DataFrame({"calc_id": list("abcdefg"), "moment_integral": [np.nan] * 6 + [1.0]})
    with pytest.raises(MagnbError) as err:
        _integral(bad, per_atom=False)
    assert str(err.value) == (
        "6 row(s) have no moment_integral (e.g. ['a', 'b', 'c', 'd', 'e']): the physics baseline "
        "needs stage 02's integral"
    )
    with pytest.raises(MagnbError, match=r"^1 row\(s\) have no moment_integral \(e\.g\. \[\]\)"):
        _integral(pd.DataFrame({"moment_integral": pd.Series([None, 1.0], dtype=object)}), False)


def test_physics_order_at_the_cut_and_with_one_training_row() -> None:
    train = pd.DataFrame(
        {
            "calc_id": [f"t{i}" for i in range(4)],
            "status": "ok",
            "order": ["FM", "FM", "AFM", "AFM"],
            "n_magnetic": 1,
            "moment_integral": [3.0, 2.0, 0.0, 0.5],  # cut 1.25
        }
    )
    test = train.assign(moment_integral=[1.25, 1.3, 1.2, 0.0], order=["AFM", "FM", "AFM", "AFM"])
    out = physics_baseline(train, test, "order", threshold=4.0)
    assert out["cut"] == 1.25 and out["accuracy"] == 1.0  # 1.25 is not above the cut
    one = physics_baseline(train.iloc[:1], test, "order", threshold=4.0)
    assert one["cut"] is None and one["predicted_counts"] == {"0": 0, "1": 4}
    assert one["notes"][0] == "training split holds only FM: no cut to fit"
    with pytest.raises(MagnbError, match="^the training table has no rows with an FM/AFM order$"):
        physics_baseline(train.assign(order=""), test, "order", threshold=4.0)


def test_descriptor_baseline_methods_and_class_counts() -> None:
    from magnb.baselines import descriptor_baseline

    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 2))
    reg = descriptor_baseline(x[:6], rng.normal(size=6), x[6:], [0.0, 1.0, 2.0], "regression")
    assert reg["method"] == "standardized descriptors + ridge regression"
    clf = descriptor_baseline(x[:6], [0, 1] * 3, x[6:], [0, 1, 1], "classification")
    assert clf["method"] == "standardized descriptors + logistic regression (balanced)"
    # one training class: predicted everywhere, with as many classes as train and test hold
    for train_class, test_y, k in ((2, [0, 1, 1], 3), (0, [0, 2, 1], 3), (0, [0, 0, 0], 2)):
        one = descriptor_baseline(x[:6], [train_class] * 6, x[6:], test_y, "classification")
        assert one["method"] == clf["method"]
        assert one["labels"] == list(range(k))
        assert one["predicted_counts"][str(train_class)] == 3
    # two training classes, a third one in the test split, or a class 2 only in training
    three = descriptor_baseline(x[:6], [0, 1] * 3, x[6:], [0, 2, 1], "classification")
    assert three["labels"] == [0, 1, 2] and three["class_counts"] == {"0": 1, "1": 1, "2": 1}
    two = descriptor_baseline(x[:6], [0, 2] * 3, x[6:], [0, 0, 1], "classification")
    assert two["labels"] == [0, 1, 2] and two["predicted_counts"]["1"] == 0
    for y_train, y_test, name in (
        ([0.5] * 6, [0, 1, 1], "y_train"),
        ([0, 1] * 3, [0, -1, 1], "y_test"),
    ):
        with pytest.raises(MagnbError) as err:
            descriptor_baseline(x[:6], y_train, x[6:], y_test, "classification")
        assert str(err.value) == f"{name} must hold class indices 0, 1, ..."


def test_descriptor_logistic_is_standardized_balanced_and_c_1_by_hand() -> None:
    # one feature, nine of class 0 and one of class 1: the balanced, C = 1 logistic regression
    # on standardized features, solved here with scipy, predicts the test rows; unweighted it
    # would predict class 0 everywhere, and with C = 2 its boundary moves past 1.75
    from scipy.optimize import minimize

    from magnb.baselines import descriptor_baseline

    x = np.array([-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    y = np.array([0] * 9 + [1])
    x_test = np.array([1.75, 2.5, -1.0, 1.6])
    z, z_test = (x - x.mean()) / x.std(), (x_test - x.mean()) / x.std()
    weight = np.where(y == 1, 10 / 2, 10 / 18)  # n / (classes * n_class)

    def p_test(c: float) -> np.ndarray:
        def loss(wb: np.ndarray) -> float:
            margin = (2 * y - 1) * (wb[0] * z + wb[1])
            return 0.5 * wb[0] ** 2 + c * float(np.sum(weight * np.logaddexp(0, -margin)))

        w, b = minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
        return 1 / (1 + np.exp(-(w * z_test + b)))

    expected = (p_test(1.0) > 0.5).astype(int)
    assert expected.tolist() == [1, 1, 0, 0] and (p_test(2.0) > 0.5).tolist()[0] is False
    y_test = np.array([1, 1, 0, 1])
    out = descriptor_baseline(x[:, None], y, x_test[:, None], y_test, "classification")
    assert out["confusion_matrix"] == [[1, 0], [1, 2]]
    # standardized: scaling the feature changes nothing
    scaled = descriptor_baseline(
        1e3 * x[:, None], y, 1e3 * x_test[:, None], y_test, "classification"
    )
    assert scaled["confusion_matrix"] == out["confusion_matrix"]
