"""95 % intervals for metrics measured on small test splits, and the warning for splits too small.

A test split of 20 samples resolves about 0.1 of balanced accuracy; a table without intervals
does not say so. Every metric of :mod:`magnb.baselines` therefore carries one:

- ``accuracy``: the exact binomial (Clopper-Pearson) interval of ``correct`` out of ``n``
  (:func:`binomial_interval`): the test samples are Bernoulli trials of one classifier.
- ``balanced_accuracy`` and ``roc_auc``: a stratified bootstrap over the test samples
  (:func:`stratified_indices`): each of :data:`N_BOOTSTRAP` resamples draws, with replacement,
  as many samples of each true class as the split holds, so every class stays present and both
  metrics stay defined; the interval is the 2.5 and 97.5 percentiles of the resampled values.
  Seeded: the same inputs give the same interval.
- ``mae``, ``rmse`` and ``r2``: the same bootstrap with one stratum (all samples).

The bootstrap knows only the samples it is given: with a few samples per class it is too narrow
(one sample of a class resamples to itself every time), and a class predicted all right (or all
wrong) resamples to a recall of 1 (or 0) every time, so a perfect classifier gets a balanced
accuracy interval of ``[1, 1]``; :func:`classification_intervals` adds a note then, and the
accuracy's exact interval beside it gives the honest width. :func:`small_sample_warning` says so for
any split under :data:`MIN_TEST_PER_CLASS` samples of a class (:data:`MIN_TEST_REGRESSION`
samples for a regression).

>>> [round(v, 3) for v in binomial_interval(18, 20)]
[0.683, 0.988]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "INTERVAL_METHODS",
    "LEVEL",
    "MIN_TEST_PER_CLASS",
    "MIN_TEST_REGRESSION",
    "N_BOOTSTRAP",
    "binomial_interval",
    "classification_intervals",
    "regression_intervals",
    "small_sample_warning",
    "stratified_indices",
]

#: the coverage of every interval
LEVEL = 0.95
#: bootstrap resamples per interval
N_BOOTSTRAP = 2000
#: a classification test split with fewer samples of some class than this gets a warning
MIN_TEST_PER_CLASS = 10
#: a regression test split with fewer samples than this gets a warning
MIN_TEST_REGRESSION = 20

#: how each metric's interval is computed, as metrics.json records it
INTERVAL_METHODS = {
    "accuracy": "exact binomial (Clopper-Pearson)",
    "balanced_accuracy": "stratified bootstrap over the test samples (by true class), percentile",
    "roc_auc": "stratified bootstrap over the test samples (by true class), percentile",
    "mae": "bootstrap over the test samples, percentile",
    "rmse": "bootstrap over the test samples, percentile",
    "r2": "bootstrap over the test samples, percentile",
}


def binomial_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion ``k / n``: the beta quantiles
    ``B(a/2; k, n-k+1)`` and ``B(1-a/2; k+1, n-k)``, with 0 and 1 at the ends."""
    from scipy.stats import beta

    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def stratified_indices(strata: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """Bootstrap resamples ``(n_boot, n)`` of row indices: each row of the result draws, with
    replacement, as many rows of each stratum as there are, from that stratum only (columns
    grouped by stratum, in the order of ``np.unique``)."""
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    parts = []
    for value in np.unique(strata):
        rows = np.flatnonzero(strata == value)
        parts.append(rows[rng.integers(0, len(rows), size=(n_boot, len(rows)))])
    return np.concatenate(parts, axis=1)


def _percentiles(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """``[low, high]`` percentiles of the finite resampled values; None when fewer than half of
    the resamples gave a value (the metric is mostly undefined on them)."""
    finite = values[np.isfinite(values)]
    if len(finite) < max(1, len(values) // 2):
        return None
    alpha = 1.0 - level
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return [float(low), float(high)]


def _balanced_accuracy_rows(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each row of ``(B, n)`` arrays: the mean recall over the classes
    present in that row."""
    recalls = []
    for c in np.unique(truth):
        in_class = truth == c
        count = in_class.sum(axis=1)
        hits = (in_class & (pred == c)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(count > 0, hits / count, np.nan))
    return np.nanmean(np.stack(recalls), axis=0)


def _binary_auc_rows(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of ``(B, n)`` arrays by the rank-sum (Mann-Whitney) formula, ties at
    their average rank; NaN for a row with one class only."""
    from scipy.stats import rankdata

    ranks = rankdata(score, axis=1)
    n1 = positive.sum(axis=1)
    n0 = positive.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * positive).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def auc_rows(truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC per row: ``score`` ``(B, n)`` for a binary task (the score of class 1), or
    ``(B, n, k)`` class probabilities, scored one-vs-rest and averaged over the ``k`` classes
    (scikit-learn's ``multi_class="ovr"``, macro average)."""
    if score.ndim == 2:
        return _binary_auc_rows(truth == 1, score)
    k = score.shape[2]
    return np.mean([_binary_auc_rows(truth == c, score[:, :, c]) for c in range(k)], axis=0)


def classification_intervals(
    truth: np.ndarray,
    pred: np.ndarray,
    score: np.ndarray | None,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, list[float] | None]:
    """95 % intervals of accuracy (exact binomial), balanced accuracy and ROC-AUC (stratified
    bootstrap by true class). ``score`` is what ROC-AUC is computed from (``(n,)`` or
    ``(n, k)``), or None where ROC-AUC is undefined (then its interval is None too)."""
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    n = len(truth)
    out: dict[str, list[float] | None] = {
        "accuracy": list(binomial_interval(int((truth == pred).sum()), n))
    }
    idx = stratified_indices(truth, n_boot, seed)
    t, p = truth[idx], pred[idx]
    out["balanced_accuracy"] = _percentiles(_balanced_accuracy_rows(t, p))
    out["roc_auc"] = None if score is None else _percentiles(auc_rows(t, np.asarray(score)[idx]))
    return out


def regression_intervals(
    truth: np.ndarray, pred: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, list[float] | None]:
    """95 % bootstrap intervals of MAE, RMSE and R^2 (resamples with a constant truth, where
    R^2 is undefined, are left out of its interval)."""
    truth = np.asarray(truth, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    idx = stratified_indices(np.zeros(len(truth)), n_boot, seed)
    t, e = truth[idx], pred[idx] - truth[idx]
    ss_tot = ((t - t.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    varies = t.max(axis=1) > t.min(axis=1)  # not ss_tot > 0: rounding leaves 1e-33 for a constant
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(varies, 1.0 - (e**2).sum(axis=1) / ss_tot, np.nan)
    return {
        "mae": _percentiles(np.abs(e).mean(axis=1)),
        "rmse": _percentiles(np.sqrt((e**2).mean(axis=1))),
        "r2": _percentiles(r2),
    }


def small_sample_warning(
    n: int, class_counts: Mapping[str, int] | None = None, names: Any = None
) -> str | None:
    """A one-line warning when a test split is too small to say much, else None.

    Classification (``class_counts`` given, class index -> count; ``names`` maps an index to a
    class name): any class with fewer than :data:`MIN_TEST_PER_CLASS` samples, absent classes
    included. Regression: fewer than :data:`MIN_TEST_REGRESSION` samples.
    """
    if class_counts is None:
        if n >= MIN_TEST_REGRESSION:
            return None
        return (
            f"small test split: n = {n} (< {MIN_TEST_REGRESSION}); the intervals are wide and "
            "a bootstrap of so few samples understates them"
        )
    small = {c: v for c, v in class_counts.items() if v < MIN_TEST_PER_CLASS}
    if not small:
        return None

    def name(c: str) -> str:
        return str(names[int(c)]) if names is not None else f"class {c}"

    counts = ", ".join(f"{name(c)}: {v}" for c, v in class_counts.items())
    return (
        f"small test split: n = {n} ({counts}); under {MIN_TEST_PER_CLASS} samples of a class "
        "the metrics resolve little and a bootstrap of so few samples understates the intervals"
    )
