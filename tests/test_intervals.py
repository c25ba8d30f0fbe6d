"""95 % intervals by value against independent computations: scipy's exact binomial interval,
scikit-learn's metrics on every bootstrap resample, and the resampling law itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import (
    balanced_accuracy_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)

from magnb.baselines import classification_metrics, format_table, regression_metrics
from magnb.intervals import (
    MIN_TEST_PER_CLASS,
    auc_rows,
    binomial_interval,
    classification_intervals,
    regression_intervals,
    small_sample_warning,
    stratified_indices,
)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (0, 7), (3, 7), (7, 7), (18, 20), (51, 97)])
def test_binomial_interval_is_scipys_exact_interval(k: int, n: int) -> None:
    want = binomtest(k, n).proportion_ci(0.95, method="exact")
    low, high = binomial_interval(k, n)
    assert low == pytest.approx(want.low, abs=1e-12)
    assert high == pytest.approx(want.high, abs=1e-12)


def test_accuracy_interval_in_the_metrics_is_exact_binomial() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 23)
    p = rng.random(23)
    m = classification_metrics(y, p)
    correct = int(((p > 0.5).astype(int) == y).sum())
    want = binomtest(correct, 23).proportion_ci(0.95, method="exact")
    assert m["ci95"]["accuracy"] == pytest.approx([want.low, want.high], abs=1e-12)
    assert "binomial" in m["ci95_methods"]["accuracy"]


def test_stratified_resamples_keep_each_class_and_its_count() -> None:
    strata = np.array([1, 0, 1, 1, 2, 0, 1])
    idx = stratified_indices(strata, n_boot=200, seed=3)
    assert idx.shape == (200, 7)
    for row in idx:
        assert sorted(strata[row]) == sorted(strata)  # class counts kept in every resample
    assert len({tuple(r) for r in idx}) > 100  # and the resamples differ
    np.testing.assert_array_equal(idx, stratified_indices(strata, n_boot=200, seed=3))
    assert not np.array_equal(idx, stratified_indices(strata, n_boot=200, seed=4))


def _loop_percentiles(values: list[float]) -> list[float]:
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def test_bootstrap_intervals_match_scikit_learn_on_every_resample() -> None:
    """The vectorized metrics over resamples equal scikit-learn's metric on each resample."""
    rng = np.random.default_rng(7)
    n = 30
    y = rng.integers(0, 2, n)
    score = np.round(np.clip(y * 0.3 + rng.random(n) * 0.8, 0, 1), 1)  # ties on purpose
    pred = (score > 0.5).astype(int)
    n_boot, seed = 300, 11
    got = classification_intervals(y, pred, score, n_boot=n_boot, seed=seed)
    idx = stratified_indices(y, n_boot, seed)
    ba = [balanced_accuracy_score(y[r], pred[r]) for r in idx]
    auc = [roc_auc_score(y[r], score[r]) for r in idx]
    assert got["balanced_accuracy"] == pytest.approx(_loop_percentiles(ba), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(_loop_percentiles(auc), abs=1e-12)
    # the interval holds the point estimate of the whole sample
    lo, hi = got["balanced_accuracy"]
    assert lo <= balanced_accuracy_score(y, pred) <= hi


def test_multiclass_auc_is_scikit_learns_one_vs_rest_macro() -> None:
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 6)
    prob = rng.dirichlet(np.ones(4), size=24)
    prob[np.arange(24), y] += 0.3
    prob /= prob.sum(axis=1, keepdims=True)
    idx = stratified_indices(y, 50, 0)
    got = auc_rows(y[idx], prob[idx])
    want = [roc_auc_score(y[r], prob[r], multi_class="ovr") for r in idx]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_regression_intervals_match_scikit_learn_on_every_resample() -> None:
    rng = np.random.default_rng(4)
    truth = rng.normal(size=25)
    pred = truth + rng.normal(scale=0.5, size=25)
    got = regression_intervals(truth, pred, n_boot=300, seed=5)
    idx = stratified_indices(np.zeros(25), 300, 5)
    mae = [mean_absolute_error(truth[r], pred[r]) for r in idx]
    rmse = [np.sqrt(np.mean((pred[r] - truth[r]) ** 2)) for r in idx]
    r2 = [r2_score(truth[r], pred[r]) for r in idx]
    assert got["mae"] == pytest.approx(_loop_percentiles(mae), abs=1e-12)
    assert got["rmse"] == pytest.approx(_loop_percentiles(rmse), abs=1e-12)
    assert got["r2"] == pytest.approx(_loop_percentiles(r2), abs=1e-12)
    m = regression_metrics(truth, pred)
    assert set(m["ci95"]) == {"mae", "rmse", "r2"}
    assert m["ci95"]["mae"][0] <= m["mae"] <= m["ci95"]["mae"][1]


def test_intervals_narrow_as_the_test_split_grows() -> None:
    """About 0.4 wide at 20 samples, 0.1 at 400 (the table says how little a small split says)."""
    rng = np.random.default_rng(9)
    widths = {}
    for n in (20, 400):
        y = np.repeat([0, 1], n // 2)
        pred = np.where(rng.random(n) < 0.8, y, 1 - y)
        ci = classification_intervals(y, pred, None, seed=0)
        widths[n] = ci["balanced_accuracy"][1] - ci["balanced_accuracy"][0]
        assert ci["roc_auc"] is None
    assert 0.25 < widths[20] < 0.55 and 0.05 < widths[400] < 0.12, widths


def test_a_perfect_classifier_gets_a_note_that_its_bootstrap_has_no_width() -> None:
    m = classification_metrics([0] * 5 + [1] * 5, [0.1] * 5 + [0.9] * 5)
    assert m["ci95"]["balanced_accuracy"] == [1.0, 1.0]
    assert any("understates" in note for note in m["notes"])
    assert m["ci95"]["accuracy"][0] == pytest.approx(binomtest(10, 10).proportion_ci().low)
    assert "the bootstrap cannot vary" in format_table({"model": m})


def test_small_sample_warning_per_class_and_for_regressions() -> None:
    assert small_sample_warning(40, {"0": 20, "1": 20}) is None
    text = small_sample_warning(12, {"0": MIN_TEST_PER_CLASS, "1": 2}, names=("AFM", "FM"))
    assert text is not None and "AFM: 10, FM: 2" in text and "n = 12" in text
    assert small_sample_warning(5, {"0": 5, "1": 0}) is not None  # a class missing altogether
    assert small_sample_warning(19) is not None and small_sample_warning(20) is None


def test_the_table_prints_intervals_and_the_warning() -> None:
    m = classification_metrics([0, 0, 1, 1, 1], [0.1, 0.6, 0.7, 0.4, 0.9])
    m["small_sample_warning"] = small_sample_warning(5, m["class_counts"])
    text = format_table({"model": m})
    row = text.splitlines()[2]
    lo, hi = m["ci95"]["accuracy"]
    assert f"| 0.600 [{lo:.2f}, {hi:.2f}] |" in row
    assert "warning: small test split: n = 5" in text
