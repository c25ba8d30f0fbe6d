"""magnb train --cv: one training per k-fold column, model and baselines summarized over the
folds (mean and spread), and the folds are the dataset's, grouped by formula."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pandas as pd
import pytest
import yaml

from magnb.errors import MagnbError
from magnb.train import fold_rows
from tests.conftest import SMALL_MODEL, build_demo_data

SMALL = SMALL_MODEL


def test_a_dataset_without_folds_is_a_clear_error(tmp_path):
    import h5py

    from magnb.dataset import replace_table

    with h5py.File(tmp_path / "dataset.h5", "w") as f:
        f.create_dataset("samples", data=np.zeros((4, 2, 2, 2, 1), dtype=np.float32))
        f.attrs["build_id"] = "hand-made"
    table = pd.DataFrame({"status": ["ok"] * 4, "sample": [0, 1, 2, 3], "fold": [-1] * 4})
    replace_table(tmp_path, table)
    with pytest.raises(MagnbError, match="no k-fold columns"):
        fold_rows(tmp_path)


@pytest.mark.slow
def test_cross_validation_over_the_folds(tmp_path, capsys):
    from magnb.cli import main
    from magnb.dataset import read_table

    data = build_demo_data(tmp_path / "demo", 6, kfold=3)
    table = read_table(data)
    usable = table[(table["status"] == "ok") & (table["sample"] >= 0)].reset_index(drop=True)
    folds = fold_rows(data)
    assert sorted(folds) == [0, 1, 2]
    assert sum(len(r) for r in folds.values()) == len(usable)
    for f, rows in folds.items():  # no formula on both sides of a fold
        others = set(usable.drop(index=rows)["formula"])
        assert not set(usable.loc[rows, "formula"]) & others, f

    cfg = tmp_path / "cv.yaml"
    cfg.write_text(
        yaml.safe_dump({"dataset_dir": str(data), "runs_dir": str(tmp_path / "runs"), **SMALL})
    )
    assert main(["train", str(cfg), "--cv"]) == 0
    printed = capsys.readouterr().out
    runs = list((tmp_path / "runs").glob("*-cv"))
    assert len(runs) == 1
    cv = json.loads((runs[0] / "cv.json").read_text())
    assert cv["folds"] == 3 and [f["fold"] for f in cv["per_fold"]] == [0, 1, 2]
    assert set(cv["summary"]) == {"model", "majority", "physics", "descriptor"}
    fm = usable["order"].isin(["FM", "AFM"])
    for method, entry in cv["summary"].items():
        # each fold scores every labelled row of that fold, model and baselines alike
        assert entry["n"] == [int(fm.iloc[r].sum()) for r in folds.values()], method
        for metric in ("accuracy", "balanced_accuracy"):
            values = [f["test"][method][metric] for f in cv["per_fold"]]
            assert entry[metric]["per_fold"] == values
            assert entry[metric]["mean"] == pytest.approx(statistics.mean(values))
            assert entry[metric]["std"] == pytest.approx(statistics.stdev(values))
            assert entry[metric]["min"] == min(values) and entry[metric]["max"] == max(values)
        for f, n in zip(cv["per_fold"], entry["n"], strict=True):
            assert f["test"][method]["ci95"]["accuracy"] is not None  # with its interval
            assert f["test"][method]["n_train"] == int(fm.sum()) - n  # the other folds train
    # the majority class is half balanced on every fold: no spread
    assert cv["summary"]["majority"]["balanced_accuracy"]["mean"] == pytest.approx(0.5)
    assert cv["summary"]["majority"]["balanced_accuracy"]["std"] == pytest.approx(0.0)
    # 8 samples a fold, 2 of them FM: each fold warns, and so does the printed table
    assert len(cv["warnings"]) == 3
    assert "3-fold cross-validation" in printed
    assert "| majority | 3 | 0.500 +/- 0.000" in printed
    assert printed.count("warning: fold") == 3


def test_cv_table_formats_mean_spread_and_range():
    from magnb.train import format_cv_table

    stats = {"per_fold": [0.5, 0.7], "mean": 0.6, "std": 0.1414, "min": 0.5, "max": 0.7}
    none = {"per_fold": [None, None], "mean": None, "std": None, "min": None, "max": None}
    metrics = {
        "run_id": "x-cv",
        "label": "order",
        "task": "classification",
        "folds": 2,
        "summary": {
            "model": {
                "folds": 2,
                "n": [4, 5],
                "accuracy": stats,
                "balanced_accuracy": stats,
                "roc_auc": none,
            }
        },
        "warnings": ["fold 0: small"],
    }
    text = format_cv_table(metrics)
    assert (
        "| model | 2 | 0.600 +/- 0.141 [0.50, 0.70] | 0.600 +/- 0.141 [0.50, 0.70] | n/a |" in text
    )
    assert "test samples per fold: 4, 5" in text and "warning: fold 0: small" in text
