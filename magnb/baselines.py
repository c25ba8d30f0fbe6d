"""What every metric is shown next to: the majority class, the physics integral, a descriptor model.

A network fed the magnetization that only reproduces its integral has learned nothing new, and a
classifier on an imbalanced split that predicts the majority class scores the majority rate in
accuracy. So every result of stage 04 is reported beside

- ``majority``: the training split's majority class (classification) or mean (regression);
- ``physics``: the integral of the magnetization (``moment_integral``, computed by stage 02 from
  the density itself): ``|integral| > threshold`` for ``moment_class``, a single cut on
  ``|integral| / n_magnetic`` fitted on the training split for ``order`` (and for the FM class of
  ``order_pattern``, whose other classes an integral cannot tell apart), the integral itself
  (or per magnetic atom) for the regression labels;
- ``descriptor``: a linear model (logistic or ridge regression) on a few per-channel statistics of
  the density (:func:`descriptor_features`), computed batch by batch so memory does not grow
  with the split.

:func:`evaluate_all` returns all of them (and the model's, when given its predictions) as one
JSON-serializable dict, the one that goes into ``metrics.json``; :func:`format_table` renders it
as a markdown table. Balanced accuracy is the headline classification number: it is 0.5 for any
constant prediction, whatever the class balance.

Every metric carries its n and a 95 % interval (``ci95``: exact binomial for accuracy, a seeded
stratified bootstrap over the test samples for the rest; :mod:`magnb.intervals`), and a test split
with fewer than :data:`magnb.intervals.MIN_TEST_PER_CLASS` samples of a class carries a
``small_sample_warning`` that :func:`format_table` prints under the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from magnb.errors import MagnbError
from magnb.intervals import (
    INTERVAL_METHODS,
    N_BOOTSTRAP,
    classification_intervals,
    regression_intervals,
    small_sample_warning,
)
from magnb.labels import LABEL_CLASSES

Task = Literal["classification", "regression"]

#: labels predicted as classes; the others (moment, moment_per_magnetic_atom) are regressions
CLASSIFICATION_LABELS = tuple(LABEL_CLASSES)
#: the per-channel statistics of :func:`descriptor_features`, in column order
DESCRIPTOR_STATS = (
    "mean",
    "std",
    "min",
    "max",
    "mean_abs",
    "frac_pos",
    "frac_neg",
    "q01",
    "q50",
    "q99",
    "skew",
    "sum_pos",
    "sum_neg",
)
#: muB: width of the sigmoid that turns a physics moment into a pseudo-probability
PHYSICS_SOFTNESS = 0.1


def task_for(label: str) -> Task:
    """``"classification"`` for ``order`` and ``moment_class``, ``"regression"`` otherwise."""
    return "classification" if label in CLASSIFICATION_LABELS else "regression"


def _check_task(task: str) -> Task:
    if task not in ("classification", "regression"):
        raise MagnbError(f"unknown task {task!r}; choose 'classification' or 'regression'")
    return task  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# metrics


def _as_labels(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise MagnbError(f"{name} must be one label per sample, not shape {arr.shape}")
    if len(arr) == 0:
        raise MagnbError(f"{name} is empty: no samples to score")
    as_float = arr.astype(np.float64)
    if (
        not np.isfinite(as_float).all()
        or (as_float != np.round(as_float)).any()
        or (as_float < 0).any()
    ):
        raise MagnbError(f"{name} must hold class indices 0, 1, ...")
    return as_float.astype(np.int64)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_prob: Sequence[float] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray | None = None,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, ROC-AUC and the confusion matrix of a classifier, each with
    its 95 % interval.

    ``y_prob`` is the predicted probability of class 1, shape ``(n,)`` (or ``(n, 1)``), or the
    class probabilities, shape ``(n, k)``. The predicted class is ``y_prob > 0.5`` (binary) or the
    argmax, unless ``y_pred`` gives it; then ``y_prob`` may be any score that increases with the
    probability of class 1 (it is used for ROC-AUC only).

    Balanced accuracy is the mean recall over the classes present in ``y_true`` (0.5 for a
    constant binary prediction). ROC-AUC is ``None``, with a note, when ``y_true`` holds a single
    class. The confusion matrix has rows = true class, columns = predicted class, over labels
    ``[0, 1]`` (binary) or ``0 .. k-1``. All values are plain Python numbers and lists.

    ``ci95`` maps each metric to its 95 % interval ``[low, high]`` (None where the metric is):
    the exact binomial interval for accuracy, a stratified bootstrap (``n_boot`` resamples within
    each true class, seeded by ``seed``) for balanced accuracy and ROC-AUC; ``ci95_methods``
    says which. See :mod:`magnb.intervals`.
    """
    from sklearn.metrics import roc_auc_score

    truth = _as_labels(y_true, "y_true")
    prob = np.asarray(y_prob, dtype=np.float64)
    if prob.ndim == 2 and prob.shape[1] == 1:
        prob = prob[:, 0]
    if prob.ndim not in (1, 2) or prob.shape[0] != len(truth):
        raise MagnbError(f"y_prob has shape {prob.shape}, but there are {len(truth)} true labels")
    if not np.isfinite(prob).all():
        raise MagnbError(f"y_prob has {int((~np.isfinite(prob)).sum())} NaN or infinite values")
    k = 2 if prob.ndim == 1 else max(prob.shape[1], 2)
    if len(truth) and int(truth.max()) >= k:  # before two columns become one binary score
        given = "a binary score" if prob.ndim == 1 else f"{prob.shape[1]} class columns"
        raise MagnbError(f"y_true has class {int(truth.max())}, but y_prob is {given}")
    if prob.ndim == 2 and prob.shape[1] == 2:
        prob, k = prob[:, 1], 2  # binary given as two columns: the score of class 1
    if y_pred is not None:
        pred = _as_labels(y_pred, "y_pred")
        if len(pred) != len(truth):
            raise MagnbError(f"y_pred has {len(pred)} labels, y_true {len(truth)}")
    elif prob.ndim == 1:
        pred = (prob > 0.5).astype(np.int64)
    else:
        pred = prob.argmax(axis=1).astype(np.int64)
    k = max(k, int(pred.max()) + 1)

    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (truth, pred), 1)
    present = cm.sum(axis=1) > 0
    recall = np.diag(cm)[present] / cm.sum(axis=1)[present]
    notes: list[str] = []
    n_present = int(present.sum())
    if n_present < 2:
        auc = None
        notes.append(
            f"ROC-AUC undefined: y_true holds only class {int(np.flatnonzero(present)[0])}"
        )
    elif prob.ndim == 1:
        auc = float(roc_auc_score(truth, prob))
    elif n_present < k:
        auc = None
        notes.append(f"ROC-AUC undefined: y_true holds {n_present} of {k} classes")
    else:
        auc = float(roc_auc_score(truth, prob, multi_class="ovr", labels=list(range(k))))
    ci95 = classification_intervals(truth, pred, None if auc is None else prob, n_boot, seed)
    if present.sum() and np.all(np.isin(recall, (0.0, 1.0))):
        notes.append(
            "every class's recall is 0 or 1 here, so the bootstrap resamples it unchanged and "
            "the balanced accuracy interval has no width, which understates the uncertainty; "
            "the accuracy's exact interval gives it"
        )
    return {
        "n": len(truth),
        "accuracy": float(np.mean(truth == pred)),
        "balanced_accuracy": float(recall.mean()),
        "roc_auc": auc,
        "ci95": ci95,
        "ci95_methods": {m: INTERVAL_METHODS[m] for m in ci95},
        "confusion_matrix": cm.tolist(),
        "labels": list(range(k)),
        "class_counts": {str(c): int(v) for c, v in enumerate(cm.sum(axis=1))},
        "predicted_counts": {str(c): int(v) for c, v in enumerate(cm.sum(axis=0))},
        "notes": notes,
    }


def regression_metrics(
    y_true: Sequence[float] | np.ndarray,
    y_pred: Sequence[float] | np.ndarray,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean absolute error, root mean square error and R^2 (``None`` with a note when ``y_true``
    is constant, where R^2 is undefined). Non-finite values are an error. ``ci95`` holds each
    one's 95 % bootstrap interval over the samples (``n_boot`` resamples, seeded)."""
    truth = np.asarray(y_true, dtype=np.float64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.float64)
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if pred.shape != truth.shape:
        raise MagnbError(f"y_pred has shape {pred.shape}, but there are {len(truth)} true values")
    if len(truth) == 0:
        raise MagnbError("y_true is empty: no samples to score")
    for name, arr in (("y_true", truth), ("y_pred", pred)):
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise MagnbError(f"{name} has {bad} NaN or infinite values")
    err = pred - truth
    ss_tot = float(((truth - truth.mean()) ** 2).sum())
    notes: list[str] = []
    # constant is max == min: (0.2 - mean([0.2] * 3))^2 is 1e-33, not 0, and gave R^2 = -9e30
    if truth.max() > truth.min():
        r2: float | None = 1.0 - float((err**2).sum()) / ss_tot
    else:
        r2 = None
        notes.append("R^2 undefined: y_true is constant")
    ci95 = regression_intervals(truth, pred, n_boot, seed)
    if r2 is None:
        ci95["r2"] = None
    return {
        "n": len(truth),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": r2,
        "ci95": ci95,
        "ci95_methods": {m: INTERVAL_METHODS[m] for m in ci95},
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------
# majority and physics


def majority_baseline(
    y_train: Sequence[float] | np.ndarray, y_test: Sequence[float] | np.ndarray, task: str
) -> dict[str, Any]:
    """Predict the training split's majority class (ties: the smaller label) for every test
    sample, or the training mean for a regression. Returns the metrics plus ``prediction``."""
    task = _check_task(task)
    train = np.asarray(y_train)
    if train.size == 0:
        raise MagnbError("the training split is empty: no majority to predict")
    if task == "regression":
        train_f = train.astype(np.float64).reshape(-1)
        train_f = train_f[np.isfinite(train_f)]
        if train_f.size == 0:
            raise MagnbError("the training split has no finite label to average")
        mean = float(train_f.mean())
        test = np.asarray(y_test, dtype=np.float64).reshape(-1)
        out = regression_metrics(test, np.full(len(test), mean))
        return {"method": "training mean", "prediction": mean, **out}
    train_l = _as_labels(train, "y_train")
    test_l = _as_labels(y_test, "y_test")
    counts = np.bincount(train_l)
    majority = int(counts.argmax())
    k = max(len(counts), int(test_l.max()) + 1, 2)
    prob = np.zeros((len(test_l), k))
    prob[:, majority] = 1.0
    out = classification_metrics(test_l, prob[:, 1] if k == 2 else prob)
    return {"method": "training majority class", "prediction": majority, **out}


def _label_rows(table: pd.DataFrame, label: str) -> pd.DataFrame:
    """The rows of ``table`` that carry ``label``, as :class:`magnb.loader.DensityDataset`
    keeps them (:func:`magnb.labels.label_rows`)."""
    from magnb.labels import label_rows

    return label_rows(table, label)


def _table_labels(table: pd.DataFrame, label: str) -> np.ndarray:
    """The label column as the loader encodes it (order: 1 = FM, 0 = AFM; order_pattern: the
    index in ``magnb.labels.LABEL_CLASSES``), int64 classes or float64 values."""
    from magnb.labels import encode_labels

    out = encode_labels(table[label].to_numpy(), label)
    return out.astype(np.int64 if task_for(label) == "classification" else np.float64)


def _integral(table: pd.DataFrame, per_atom: bool) -> np.ndarray:
    """``moment_integral`` (optionally over ``max(n_magnetic, 1)``); missing values are an error."""
    for column in ("moment_integral",) + (("n_magnetic",) if per_atom else ()):
        if column not in table:
            raise MagnbError(f"the table has no {column!r} column: rebuild it with stage 03")
    m = table["moment_integral"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(m)
    if bad.any():
        ids = table["calc_id"].to_numpy()[bad][:5] if "calc_id" in table else []
        raise MagnbError(
            f"{int(bad.sum())} row(s) have no moment_integral (e.g. {list(ids)}): "
            "the physics baseline needs stage 02's integral"
        )
    if per_atom:
        n = np.nan_to_num(table["n_magnetic"].to_numpy(dtype=np.float64), nan=1.0)
        m = m / np.maximum(n, 1.0)
    return m


def best_cut(score: np.ndarray, y: np.ndarray) -> tuple[float | None, float]:
    """The threshold ``c`` for the rule ``class 1 iff score > c`` that maximizes balanced accuracy
    on ``(score, y)``; candidates are the midpoints between consecutive distinct scores (ties: the
    middle of the best candidates). Returns ``(cut, balanced_accuracy)``; the cut is ``None``
    when ``y`` holds one class (the rule then predicts that class for everything)."""
    score = np.asarray(score, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    n1 = int((y == 1).sum())
    n0 = len(y) - n1
    if n0 == 0 or n1 == 0:
        return None, 1.0
    values = np.unique(score)
    cuts = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    s1 = np.sort(score[y == 1])
    s0 = np.sort(score[y == 0])
    tpr = 1.0 - np.searchsorted(s1, cuts, side="right") / n1  # fraction of class 1 above cut
    tnr = np.searchsorted(s0, cuts, side="right") / n0  # fraction of class 0 at or below
    ba = (tpr + tnr) / 2
    best = np.flatnonzero(np.isclose(ba, ba.max(), rtol=0, atol=1e-12))
    i = int(best[len(best) // 2])
    return float(cuts[i]), float(ba[i])


def physics_baseline(
    train_table: pd.DataFrame, test_table: pd.DataFrame, label: str, threshold: float
) -> dict[str, Any]:
    """The physics integral as a predictor of ``label`` on ``test_table``.

    - ``moment_class``: class 1 iff ``|moment_integral| > threshold`` (muB); ``probability`` is
      ``sigmoid((|m| - threshold) / 0.1 muB)``; ROC-AUC is scored on ``|m|``.
    - ``order``: FM iff ``|moment_integral| / n_magnetic > cut``, the single cut that maximizes
      balanced accuracy on ``train_table`` (see :func:`best_cut`); ROC-AUC is scored on the ratio.
      ``n_magnetic`` of 0 counts as 1.
    - ``order_pattern``: the same cut says FM or not; below it, the training split's most common
      antiparallel pattern (an integral cannot tell Neel from zigzag from stripe). ROC-AUC is
      scored on pseudo-probabilities: ``sigmoid((ratio - cut) / 0.1 muB)`` for FM, the rest on
      that pattern.
    - ``moment``: ``moment_integral``; ``moment_per_magnetic_atom``: ``moment_integral /
      n_magnetic``.

    Rows without the label (order not FM/AFM, moment_class -1, status not ok) are left out of
    both tables, as the loader leaves them out. Returns the metrics plus ``method`` and the
    fitted ``cut`` where there is one.
    """
    from scipy.special import expit

    if label not in (*CLASSIFICATION_LABELS, "moment", "moment_per_magnetic_atom"):
        raise MagnbError(f"no physics baseline for label {label!r}")
    test = _label_rows(test_table, label)
    if len(test) == 0:
        raise MagnbError(f"the test table has no rows with a {label!r} label")
    y_test = _table_labels(test, label)
    if label == "moment_class":
        score = np.abs(_integral(test, per_atom=False))
        pred = (score > threshold).astype(np.int64)
        out = classification_metrics(y_test, score, y_pred=pred)
        return {
            "method": f"|moment_integral| > {threshold:g} muB",
            "threshold": float(threshold),
            "probability": expit((score - threshold) / PHYSICS_SOFTNESS).tolist(),
            **out,
        }
    if label == "order":
        train = _label_rows(train_table, label)
        if len(train) == 0:
            raise MagnbError("the training table has no rows with an FM/AFM order")
        y_train = _table_labels(train, label)
        cut, train_ba = best_cut(np.abs(_integral(train, per_atom=True)), y_train)
        score = np.abs(_integral(test, per_atom=True))
        notes: list[str] = []
        if cut is None:
            only = int(y_train[0])
            pred = np.full(len(score), only, dtype=np.int64)
            notes.append(f"training split holds only {'FM' if only else 'AFM'}: no cut to fit")
        else:
            pred = (score > cut).astype(np.int64)
        out = classification_metrics(y_test, score, y_pred=pred)
        out["notes"] = notes + out["notes"]
        return {
            "method": "FM iff |moment_integral| / n_magnetic > cut (cut fit on train)",
            "cut": cut,
            "train_balanced_accuracy": train_ba,
            **out,
        }
    if label == "order_pattern":
        return _physics_order_pattern(train_table, test, y_test)
    per_atom = label == "moment_per_magnetic_atom"
    pred_f = _integral(test, per_atom=per_atom)
    out = regression_metrics(y_test, pred_f)
    method = "moment_integral / n_magnetic" if per_atom else "moment_integral"
    return {"method": method, **out}


def _physics_order_pattern(
    train_table: pd.DataFrame, test: pd.DataFrame, y_test: np.ndarray
) -> dict[str, Any]:
    """The physics baseline for ``order_pattern`` (see :func:`physics_baseline`)."""
    from scipy.special import expit

    classes = LABEL_CLASSES["order_pattern"]
    fm = classes.index("FM")
    train = _label_rows(train_table, "order_pattern")
    if len(train) == 0:
        raise MagnbError("the training table has no rows with an order pattern")
    y_train = _table_labels(train, "order_pattern")
    cut, train_ba = best_cut(np.abs(_integral(train, per_atom=True)), (y_train == fm).astype(int))
    afm = y_train[y_train != fm]
    below = int(np.bincount(afm, minlength=len(classes)).argmax()) if len(afm) else fm
    score = np.abs(_integral(test, per_atom=True))
    notes: list[str] = []
    if cut is None:
        p_fm = np.full(len(score), float(len(afm) == 0))
        notes.append("training split holds FM only or no FM: no cut to fit")
    else:
        p_fm = expit((score - cut) / PHYSICS_SOFTNESS)
    prob = np.zeros((len(score), len(classes)))
    prob[:, fm] = p_fm
    prob[:, below] += 1.0 - p_fm
    pred = np.where(p_fm > 0.5, fm, below).astype(np.int64)
    out = classification_metrics(y_test, prob, y_pred=pred)
    out["notes"] = notes + out["notes"]
    return {
        "method": (
            f"FM iff |moment_integral| / n_magnetic > cut (cut fit on train), else "
            f"{classes[below]} (the training split's most common other pattern)"
        ),
        "cut": cut,
        "train_balanced_accuracy": train_ba,
        **out,
    }


# --------------------------------------------------------------------------------------------
# descriptor model


def descriptor_feature_names(channels: int | Sequence[str]) -> list[str]:
    """Names of the columns of :func:`descriptor_features`: ``<channel>:<statistic>``, channel
    by channel. ``channels`` is their number (named ``c0``, ``c1``...) or their names."""
    names = [f"c{i}" for i in range(channels)] if isinstance(channels, int) else list(channels)
    return [f"{c}:{s}" for c in names for s in DESCRIPTOR_STATS]


def descriptor_features(samples: np.ndarray) -> np.ndarray:
    """Per-channel statistics of each sample, float64 ``(N, C * 13)``, channel by channel in the
    order of :data:`DESCRIPTOR_STATS`: mean, std, min, max, mean of ``|x|``, fraction of voxels
    ``> 0`` and ``< 0``, the 1/50/99 % quantiles, the skewness (third central moment over
    ``std**3``, 0 where ``std`` is 0), the sum of the positive part ``max(x, 0)`` and the sum of
    the negative part ``max(-x, 0)`` (both >= 0) over the voxels.

    ``samples`` is ``(N, X, Y, Z, C)`` (or ``(X, Y, Z, C)`` for one sample). Call it batch by
    batch: memory is that of the batch.
    """
    x = np.asarray(samples)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5:
        raise MagnbError(f"samples must be (N, X, Y, Z, C), not shape {x.shape}")
    n, c = x.shape[0], x.shape[-1]
    flat = x.reshape(n, -1, c).astype(np.float64)
    mean = flat.mean(axis=1)
    centred = flat - mean[:, None, :]
    var = (centred**2).mean(axis=1)
    std = np.sqrt(var)
    third = (centred**3).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), third / std**3, 0.0)
    q01, q50, q99 = np.quantile(flat, [0.01, 0.5, 0.99], axis=1)
    stats = [
        mean,
        std,
        flat.min(axis=1),
        flat.max(axis=1),
        np.abs(flat).mean(axis=1),
        (flat > 0).mean(axis=1),
        (flat < 0).mean(axis=1),
        q01,
        q50,
        q99,
        skew,
        np.maximum(flat, 0.0).sum(axis=1),
        np.maximum(-flat, 0.0).sum(axis=1),
    ]
    # (n, stat, channel) -> (n, channel, stat) -> (n, channel * stat)
    return np.stack(stats, axis=1).transpose(0, 2, 1).reshape(n, c * len(DESCRIPTOR_STATS))


def descriptor_baseline(
    x_train_feats: np.ndarray,
    y_train: Sequence[float] | np.ndarray,
    x_test_feats: np.ndarray,
    y_test: Sequence[float] | np.ndarray,
    task: str,
    seed: int = 0,
) -> dict[str, Any]:
    """A linear model on descriptor features: ``StandardScaler`` + ``LogisticRegression``
    (``class_weight="balanced"``, ``C=1``) for a classification, ``StandardScaler`` + ``Ridge``
    (``alpha=1``) for a regression. Fit on the training features, scored on the test features.
    A training split with a single class predicts that class (with a note) instead of failing."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    task = _check_task(task)
    xtr = np.asarray(x_train_feats, dtype=np.float64)
    xte = np.asarray(x_test_feats, dtype=np.float64)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise MagnbError(f"feature arrays must be (n, F) alike, not {xtr.shape} and {xte.shape}")
    if len(xtr) != len(np.asarray(y_train).reshape(-1)) or len(xtr) == 0:
        raise MagnbError(f"{len(xtr)} training feature rows for {len(y_train)} training labels")
    if task == "regression":
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
        model.fit(xtr, np.asarray(y_train, dtype=np.float64).reshape(-1))
        out = regression_metrics(y_test, model.predict(xte))
        return {"method": "standardized descriptors + ridge regression", **out}
    ytr = _as_labels(y_train, "y_train")
    yte = _as_labels(y_test, "y_test")
    classes = np.unique(ytr)
    method = "standardized descriptors + logistic regression (balanced)"
    if len(classes) < 2:
        k = max(int(classes[0]), int(yte.max()), 1) + 1
        prob = np.zeros((len(yte), k))
        prob[:, int(classes[0])] = 1.0
        out = classification_metrics(yte, prob[:, 1] if k == 2 else prob)
        only = f"training split holds only class {int(classes[0])}: predicted it"
        out["notes"] = [only, *out["notes"]]
        return {"method": method, **out}
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed),
    )
    model.fit(xtr, ytr)
    k = max(int(classes.max()), int(yte.max()), 1) + 1
    prob = np.zeros((len(xte), k))
    prob[:, model.classes_] = model.predict_proba(xte)
    pred = model.predict(xte)
    out = classification_metrics(yte, prob[:, 1] if k == 2 else prob, y_pred=pred)
    return {"method": method, **out}


# --------------------------------------------------------------------------------------------
# all of them


def dataset_threshold(data_dir: str | Path) -> float:
    """The ``moment_class`` threshold (muB) that built ``<data_dir>/dataset.h5``, from its
    config attribute."""
    import h5py
    import yaml

    path = Path(data_dir) / "dataset.h5"
    if not path.is_file():
        raise MagnbError("no dataset: run stage 03 (magnb scrape) first", path)
    with h5py.File(path, "r") as f:
        config = yaml.safe_load(str(f.attrs.get("config", ""))) or {}
    if "threshold" not in config:
        raise MagnbError("the dataset records no threshold: pass one", path)
    return float(config["threshold"])


def _features(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Descriptor features and labels of a loader, one batch in memory at a time."""
    feats, labels = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        feats.append(descriptor_features(x))
        labels.append(np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


def evaluate_all(
    data_dir: str | Path,
    label: str,
    threshold: float | None = None,
    model_prob_or_pred: np.ndarray | Sequence[float] | None = None,
    split: str = "test",
    batch_size: int = 16,
    seed: int = 0,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Majority, physics and descriptor baselines (and the model, when given) on ``split``.

    Reads ``<data_dir>/dataset.h5`` and ``table.parquet`` through
    :class:`magnb.loader.DensityDataset` (training split and ``split``, in table order, no
    shuffling or augmentation); descriptor features are computed batch by batch.
    ``model_prob_or_pred`` holds the model's outputs for the ``split`` rows in that order: the
    probability of class 1 ``(n,)``/``(n, 1)`` or class probabilities ``(n, k)`` for
    ``order``/``moment_class``, the predicted value for the regressions. ``threshold`` (muB,
    ``moment_class`` only) defaults to the one the dataset was built with.

    ``rows``, if given, is ``(train rows, test rows)``: positions among the dataset's usable rows
    (``DensityDataset(split=None, rows=...)``, as a k-fold run picks them) in place of the
    ``train`` and ``split`` splits; ``split`` then only names the test rows in the result.

    For a regression, rows whose label is not finite (``moment_per_magnetic_atom`` of a cell
    without magnetic atoms) are left out of every method's score, with a note.

    Returns ``{"model": ..., "majority": ..., "physics": ..., "descriptor": ...}``, each a dict
    of plain JSON values (the model entry only when predictions are given).
    """
    from magnb.labels import LABELS
    from magnb.loader import DensityDataset

    if label not in LABELS:
        raise MagnbError(f"unknown label {label!r}; choose from {list(LABELS)}")
    task = task_for(label)
    if threshold is None and label == "moment_class":
        threshold = dataset_threshold(data_dir)
    options = {"label": label, "batch_size": batch_size, "shuffle": False, "augment": False}
    if rows is None:
        train_ds = DensityDataset(data_dir, split="train", **options)
        test_ds = DensityDataset(data_dir, split=split, **options)
    else:
        train_ds = DensityDataset(data_dir, split=None, rows=rows[0], **options)
        test_ds = DensityDataset(data_dir, split=None, rows=rows[1], **options)
    x_train, y_train = _features(train_ds)
    x_test, y_test = _features(test_ds)
    train_table, test_table = train_ds.table, test_ds.table

    model_out = None
    if model_prob_or_pred is not None:
        model_out = np.asarray(model_prob_or_pred, dtype=np.float64)
        if model_out.shape[0] != len(test_table):
            raise MagnbError(
                f"{model_out.shape[0]} model outputs for {len(test_table)} {split!r} samples "
                f"with a {label!r} label (predict on DensityDataset(split={split!r}, "
                "shuffle=False))"
            )

    notes: list[str] = []
    dropped = train_ds.dropped_nonfinite, test_ds.dropped_nonfinite
    if any(dropped):
        notes.append(
            f"left out {dropped[0]} training and {dropped[1]} {split} rows without a finite {label}"
        )

    results: dict[str, dict[str, Any]] = {}
    if model_out is not None:
        if task == "classification":
            results["model"] = {"method": "model", **classification_metrics(y_test, model_out)}
        else:
            results["model"] = {"method": "model", **regression_metrics(y_test, model_out)}
    results["majority"] = majority_baseline(y_train, y_test, task)
    results["physics"] = physics_baseline(train_table, test_table, label, threshold or 0.0)
    results["descriptor"] = descriptor_baseline(x_train, y_train, x_test, y_test, task, seed)
    warning = split_size_warning(y_test, label)
    for entry in results.values():
        entry.update(label=label, split=split, task=task, n_train=len(y_train))
        entry["notes"] = notes + list(entry.get("notes", []))
        entry["small_sample_warning"] = warning
        entry.pop("probability", None)  # per-sample values do not belong in metrics.json
    return results


def split_size_warning(y_test: np.ndarray | Sequence[float], label: str) -> str | None:
    """:func:`magnb.intervals.small_sample_warning` for the labels of a test split: per class
    (every class of ``label``, absent ones as 0) for a classification, n for a regression."""
    y = np.asarray(y_test)
    if task_for(label) == "regression":
        return small_sample_warning(len(y))
    classes = LABEL_CLASSES[label]
    counts = np.bincount(y.astype(np.int64), minlength=len(classes))
    names = classes if label != "moment_class" else ("|m| <= threshold", "|m| > threshold")
    return small_sample_warning(len(y), {str(c): int(v) for c, v in enumerate(counts)}, names=names)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3f}"


def _fmt_ci(value: Any, interval: Any) -> str:
    """``0.850 [0.62, 0.97]``: a value and its 95 % interval (the value alone without one)."""
    text = _fmt(value)
    if text == "n/a" or not interval or any(v is None for v in interval):
        return text
    return f"{text} [{interval[0]:.2f}, {interval[1]:.2f}]"


def format_table(metrics: dict[str, dict[str, Any]]) -> str:
    """A markdown table of :func:`evaluate_all`'s result: one row per method (the model first,
    then majority, physics, descriptor, then any others), with n and accuracy, balanced accuracy
    and ROC-AUC (classification) or MAE, RMSE and R^2 (regression), each with its 95 % interval
    in brackets. Under the table: how the intervals were computed, and the small-sample warning
    when the split has one."""
    if not metrics:
        raise MagnbError("no metrics to tabulate")
    first = ["model", "majority", "physics", "descriptor"]
    names = [m for m in first if m in metrics] + [m for m in metrics if m not in first]
    classification = any("accuracy" in metrics[m] for m in names)
    if classification:
        head = ["method", "n", "accuracy", "balanced accuracy", "ROC-AUC"]
        keys = ["accuracy", "balanced_accuracy", "roc_auc"]
    else:
        head = ["method", "n", "MAE", "RMSE", "R^2"]
        keys = ["mae", "rmse", "r2"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for name in names:
        row = metrics[name]
        ci95 = row.get("ci95") or {}
        cells = [name, str(row.get("n", "n/a"))] + [_fmt_ci(row.get(k), ci95.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    if any(metrics[m].get("ci95") for m in names):
        if classification:
            how = (
                "accuracy exact binomial; balanced accuracy and ROC-AUC stratified bootstrap "
                "over the test samples"
            )
        else:
            how = "bootstrap over the test samples"
        lines.append(f"\n[95 % intervals: {how}; n = test samples]")
        if any("understates" in note for m in names for note in metrics[m].get("notes", [])):
            lines.append(
                "[an interval [x, x] of balanced accuracy: every class all right or all wrong, "
                "which the bootstrap cannot vary; the accuracy's exact interval gives the width]"
            )
    warnings = {metrics[m].get("small_sample_warning") for m in names} - {None}
    for warning in sorted(warnings):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
