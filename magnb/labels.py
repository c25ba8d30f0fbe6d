"""Stage 03's label table and splits: labels from the run tags and the split index, and the
train/val/test split and k folds, grouped by formula (no formula in two splits or two folds) and
stratified through scikit-learn's ``StratifiedGroupKFold``.

Also how a model sees a label: :data:`LABEL_CLASSES` (the class of each index),
:func:`label_rows` (the rows that carry a label) and :func:`encode_labels`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magnb.errors import MagnbError

__all__ = [
    "LABELS",
    "LABEL_CLASSES",
    "LABEL_HINTS",
    "ORDERS",
    "ORDER_PATTERNS",
    "assign_splits",
    "encode_labels",
    "grouped_stratified_folds",
    "label_rows",
    "label_table",
    "order_from_run",
    "order_pattern_from_run",
]

ORDERS = {
    "FM": re.compile(r"^(fm|ferro)", re.I),
    "AFM": re.compile(r"^(afm|antiferro|neel|zig-?zag|stripe)", re.I),
}
#: spin patterns named in AFM run tags (``AFM-zigzag``, ``neel``, ``afm_stripe``...)
ORDER_PATTERNS = {
    "Neel": re.compile(r"neel", re.I),
    "zigzag": re.compile(r"zig-?zag", re.I),
    "stripe": re.compile(r"stripe", re.I),
}


# --------------------------------------------------------------------------------------------
# labels and splits


def order_from_run(run: str) -> str:
    """'FM' / 'AFM' from a run tag (``FM``, ``afm_neel``, ``ferro``...), '' when it names neither."""
    for name, pattern in ORDERS.items():
        if pattern.match(run or ""):
            return name
    return ""


def order_pattern_from_run(run: str) -> str:
    """The spin pattern a run tag names: 'FM', 'Neel', 'zigzag' or 'stripe'; '' when the tag
    names no pattern (a bare ``AFM`` says antiparallel, not which arrangement)."""
    order = order_from_run(run)
    if order == "FM":
        return "FM"
    if order == "AFM":
        for name, pattern in ORDER_PATTERNS.items():
            if pattern.search(run):
                return name
    return ""


def label_table(data_dir: Path, threshold: float) -> pd.DataFrame:
    """One row per split-index row with its labels, from ``split/index.parquet`` alone (stage 02
    wrote every number a label needs there, so no split file is opened). Built column by column,
    not a dict per row: at 6400 rows that is 7x faster and takes a third of the memory."""
    from magnb.split import read_index

    index = read_index(data_dir)
    ok = (index["status"] == "ok").to_numpy()
    run = index["run"].fillna("").astype(str)
    tags = run.unique()
    table = pd.DataFrame(
        {
            "calc_id": index["calc_id"],
            "formula": index["formula"],
            "run": run,
            "order": run.map(dict(zip(tags, map(order_from_run, tags), strict=True))),
            "order_pattern": run.map(
                dict(zip(tags, map(order_pattern_from_run, tags), strict=True))
            ),
            "spin_kind": index["spin_kind"].fillna("").astype(str),
            "source_path": index["source_path"].fillna("").astype(str),
            "split_file": index["path"],
            "status": np.where(ok, "ok", "skipped"),
            "reason": ("split: " + index["error"].astype(str)).where(~ok, ""),
        }
    )
    integral = pd.to_numeric(index["moment_integral"], errors="coerce").astype(float)
    reported = pd.to_numeric(index["moment"], errors="coerce").astype(float)
    moment = reported.where(reported.notna(), integral)
    n_magnetic = index["n_magnetic"].astype("float64")  # nullable in the index
    source = index["moment_source"].fillna("").astype(str)
    labels = {  # empty (NaN) on the rows stage 02 could not split
        "input_hash": index["input_hash"],
        "moment_integral": integral,
        "moment": moment,
        "moment_source": source.where(source != "", "integral"),
        "n_magnetic": n_magnetic.astype("int64") if ok.all() else n_magnetic,
        "moment_per_magnetic_atom": moment / n_magnetic.where(n_magnetic != 0),
        "moment_class": (moment.abs() > threshold).astype(int).where(moment.notna(), -1),
    }
    for column, values in labels.items():
        table[column] = values.where(ok) if not ok.all() else values
    return table.sort_values("calc_id", kind="stable").reset_index(drop=True)


def assign_splits(
    table: pd.DataFrame,
    fractions: tuple[float, float, float],
    stratify: str,
    kfold: int,
    seed: int,
) -> pd.DataFrame:
    """Add ``split`` (train/val/test) and ``fold`` columns, grouped by formula: no formula is in
    two splits (or two folds). Stratified by ``stratify`` where the groups allow it."""
    table = table.copy()
    table["split"] = ""
    table["fold"] = -1
    ok = table.index[table["status"] == "ok"]
    if len(ok) == 0:
        return table
    groups, strata = _split_inputs(table, ok, stratify)
    split, folds = _split_columns(groups, strata, fractions, kfold, seed)
    table.loc[ok, "split"] = split
    table.loc[ok, "fold"] = folds
    return table


def _split_inputs(
    table: pd.DataFrame, ok: pd.Index, stratify: str
) -> tuple[np.ndarray, np.ndarray]:
    """The group (formula) and stratum of each row in ``ok``, as the arrays the splitter takes."""
    groups = table.loc[ok, "formula"].to_numpy()
    strata = (
        table.loc[ok, stratify].astype(str).to_numpy()
        if stratify != "none"
        else np.zeros(len(ok), dtype=int)
    )
    return groups, strata


def _split_columns(
    groups: np.ndarray,
    strata: np.ndarray,
    fractions: tuple[float, float, float],
    kfold: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The split name (train/val/test) and k-fold index (-1: none) of each row, from plain
    arrays. The test set is one of ``round(1 / test fraction)`` grouped stratified folds of all
    rows, the validation set one such fold of the rest."""
    n_groups = len(set(groups))

    def pick(idx: np.ndarray, frac: float, salt: int) -> np.ndarray:
        """A grouped, stratified subset of about ``frac`` of ``idx`` (positions into the rows)."""
        if frac <= 0 or len(set(groups[idx])) < 2:
            return np.array([], dtype=int)
        k = max(2, min(round(1 / frac), len(set(groups[idx]))))
        return idx[grouped_stratified_folds(strata[idx], groups[idx], k, seed + salt) == 0]

    every = np.arange(len(groups))
    train_f, val_f, test_f = fractions
    test = pick(every, test_f, 0)
    rest = np.setdiff1d(every, test)
    val = pick(rest, val_f / max(train_f + val_f, 1e-12), 1) if val_f > 0 else np.array([], int)
    split = np.full(len(groups), "train", dtype=object)
    split[test] = "test"
    split[val] = "val"
    folds = np.full(len(groups), -1)
    if kfold >= 2 and n_groups >= kfold:
        folds = grouped_stratified_folds(strata, groups, kfold, seed)
    return split, folds


def grouped_stratified_folds(
    strata: np.ndarray, groups: np.ndarray, n_folds: int, seed: int
) -> np.ndarray:
    """The fold (0 to ``n_folds - 1``) of each row from scikit-learn's
    ``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)``: every group whole in one
    fold, each fold's mix of strata as close to the whole set's as its greedy pass makes it.
    (Its warning about a stratum with fewer rows than folds is silenced: small strata are
    expected here, and the groups come first.)"""
    from sklearn.model_selection import StratifiedGroupKFold

    fold = np.full(len(groups), -1)
    if np.unique(strata, return_counts=True)[1].max() < n_folds:
        # scikit-learn refuses when every stratum has fewer rows than folds (a small tree):
        # the groups alone then decide, as an unstratified grouped split
        strata = np.zeros(len(groups), dtype=int)
    splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(groups)), strata, groups)):
            fold[held_out] = k
    return fold


# --------------------------------------------------------------------------------------------
# the loader

#: the classes of each classification label, in the order of their indices
LABEL_CLASSES: dict[str, tuple[str, ...]] = {
    "order": ("AFM", "FM"),
    "order_pattern": ("FM", "Neel", "zigzag", "stripe"),
    "moment_class": ("0", "1"),
}
#: what to check when a label has too few rows or classes (appended to the error)
LABEL_HINTS = {
    "order": "; the run tags must say FM or AFM (FM, ferro, AFM, neel...)",
    "order_pattern": (
        "; the run tags must name the spin pattern (FM, AFM-Neel, AFM-zigzag, AFM-stripe...): "
        "a bare 'AFM' names none"
    ),
    "moment_class": "; check the threshold",
}
#: every label a model can train on; those not in LABEL_CLASSES are regressions
LABELS = ("order", "order_pattern", "moment_class", "moment", "moment_per_magnetic_atom")


def label_rows(table: pd.DataFrame, label: str) -> pd.DataFrame:
    """The rows of a dataset table that carry ``label``: status ok, with a sample, and a known
    class (order FM/AFM, a named order pattern, moment_class 0/1) or any value (regressions)."""
    if "status" in table:
        table = table[table["status"] == "ok"]
    if "sample" in table:
        table = table[table["sample"] >= 0]
    if label in ("order", "order_pattern"):
        if label not in table:
            raise MagnbError(f"the dataset table has no {label!r} column: rebuild it (stage 03)")
        table = table[table[label].isin(LABEL_CLASSES[label])]
    elif label == "moment_class":
        table = table[table["moment_class"] >= 0]
    return table


def encode_labels(values: Any, label: str) -> np.ndarray:
    """A label column as the models see it: class indices (int32, in :data:`LABEL_CLASSES`
    order: order 0 = AFM, 1 = FM) or float32 values for the regressions."""
    col = np.asarray(values)
    if label in ("order", "order_pattern"):
        classes = LABEL_CLASSES[label]
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[v] for v in col], dtype=np.int32)
    if label == "moment_class":
        return col.astype(np.int32)
    return col.astype(np.float32)
