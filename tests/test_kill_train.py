"""Stage 04's decisions after the fit, checked by value without training (the tests ``make
mutants`` needed for magnb/train.py's resume and evaluation; see tests/MUTANTS.md): which epoch a
run resumed from, the NaN check, which column of the predictions is scored, and the record
metrics.json keeps. Milliseconds each; no Keras."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from magnb.config import TrainConfig
from magnb.errors import MagnbError
from magnb.train import (
    _check_losses,
    _metrics_record,
    _resumed_from,
    _scored_output,
    read_history,
)

# three samples; the columns differ so that a wrong column cannot look right
TWO = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
THREE = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], dtype=np.float32)


def test_two_classes_are_scored_on_the_probability_of_class_1() -> None:
    out = _scored_output(TWO, 2, True)
    assert out.shape == (3,)
    np.testing.assert_array_equal(out, np.array([0.1, 0.8, 0.4], dtype=np.float32))


def test_more_than_two_classes_are_scored_on_every_column() -> None:
    out = _scored_output(THREE, 3, True)
    assert out.shape == (3, 3)
    np.testing.assert_array_equal(out, THREE)


def test_a_regression_is_scored_on_its_one_column() -> None:
    out = _scored_output(np.array([[1.5], [-2.0], [0.25]], dtype=np.float32), 1, False)
    assert out.shape == (3,)
    np.testing.assert_array_equal(out, np.array([1.5, -2.0, 0.25], dtype=np.float32))


def _history(run: Path, text: str) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "history.csv").write_text(text)


def test_read_history_keeps_the_last_row_of_a_repeated_epoch(tmp_path: Path) -> None:
    _history(tmp_path, "epoch,loss\n0,1.0\n1,0.9\n2,0.8\n2,0.7\n3,0.6\n")
    history = read_history(tmp_path)
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    assert history["loss"].tolist() == [1.0, 0.9, 0.7, 0.6]  # epoch 2 as it was done again
    assert history.index.tolist() == [0, 1, 2, 3]
    assert history.columns.tolist() == ["epoch", "loss"]  # the old index is not kept


def test_read_history_of_no_or_an_empty_file_is_empty(tmp_path: Path) -> None:
    assert read_history(tmp_path / "none").empty
    _history(tmp_path, "")
    assert read_history(tmp_path).empty


def test_the_resume_epoch_is_where_the_fit_started(tmp_path: Path) -> None:
    _history(tmp_path, "epoch,loss\n0,1.0\n1,0.9\n2,0.8\n3,0.7\n4,0.6\n")
    assert _resumed_from(3, tmp_path) == 3  # not the 5 rows of history.csv
    assert _resumed_from(0, tmp_path) == 0  # a new run over old rows (force) is a new run


def test_a_backup_of_every_epoch_resumes_after_the_last_row(tmp_path: Path) -> None:
    """No epoch began (RunFiles saw none): the fit had nothing left, so the run resumed after
    its last recorded epoch, each epoch counted once."""
    _history(tmp_path, "epoch,loss\n0,1.0\n1,0.9\n1,0.85\n2,0.8\n")
    assert _resumed_from(None, tmp_path) == 3
    assert _resumed_from(None, tmp_path / "new") == 0


def test_finite_losses_pass_the_nan_check(tmp_path: Path) -> None:
    _check_losses([1.0, 0.5, 0.25], 7, tmp_path)
    _check_losses([], 7, tmp_path)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_nan_or_infinite_loss_names_its_epoch_and_the_checkpoint(
    tmp_path: Path, bad: float
) -> None:
    # resumed at epoch 4, two epochs run: the last is the 6th
    with pytest.raises(MagnbError) as err:
        _check_losses([0.5, bad], 4, tmp_path)
    assert err.value.path == str(tmp_path)
    assert err.value.reason == (
        "the training loss became NaN or infinite in epoch 6; training stopped. The last good "
        "checkpoint is kept"
    )
    (tmp_path / "model.keras").write_bytes(b"x")
    with pytest.raises(MagnbError) as err:
        _check_losses([bad, 0.5, 0.4], 0, tmp_path)
    assert err.value.reason == (
        "the training loss became NaN or infinite in epoch 3; training stopped. The last good "
        f"checkpoint is kept at {tmp_path / 'model.keras'}"
    )


def _record(run: Path, **kw):
    settings = {
        "classification": True,
        "resumed_from": 2,
        "fit_epochs": 3,
        "replicas": 2,
        "global_batch": 8,
        "seconds": 4.0,
        "n_train": 10,
        "sizes": {"train": 10, "val": 3, "test": 4},
        "kernel_energy": 0.75,
        "results": {
            "model": {"n": 4, "small_sample_warning": "small test split: n = 4"},
            "majority": {"n": 4, "small_sample_warning": None},
            "physics": {"n": 4, "small_sample_warning": "another warning"},
            "descriptor": {"n": 4, "small_sample_warning": "small test split: n = 4"},
        },
    }
    config = TrainConfig(label="order_pattern", model="seed_base")
    return _metrics_record(config, run, **{**settings, **kw})


def test_the_metrics_record_by_value(tmp_path: Path) -> None:
    run = tmp_path / "order-abc123"
    _history(run, "epoch,loss\n0,1.0\n1,0.9\n2,0.8\n2,0.8\n3,0.7\n4,0.6\n")
    (run / "model.keras").write_bytes(b"the best model's bytes")
    record = _record(run)
    assert record == {
        "run_id": "order-abc123",
        "label": "order_pattern",
        "task": "classification",
        "model": "seed_base",
        "epochs_trained": 5,  # epochs 0 to 4, the repeated one once
        "resumed_from_epoch": 2,
        "files": {
            "model.keras": hashlib.sha256(b"the best model's bytes").hexdigest(),
            "history.csv": hashlib.sha256(
                b"epoch,loss\n0,1.0\n1,0.9\n2,0.8\n2,0.8\n3,0.7\n4,0.6\n"
            ).hexdigest(),
        },
        "replicas": 2,
        "global_batch": 8,
        "train_seconds": 4.0,
        "train_samples_per_second": 7.5,  # 10 samples x 3 epochs in 4 s
        "sizes": {"train": 10, "val": 3, "test": 4},
        "kernel_laplacian_energy": 0.75,
        "test": {
            "model": {"n": 4, "small_sample_warning": "small test split: n = 4"},
            "majority": {"n": 4, "small_sample_warning": None},
            "physics": {"n": 4, "small_sample_warning": "another warning"},
            "descriptor": {"n": 4, "small_sample_warning": "small test split: n = 4"},
        },
        # each warning once, sorted, no null
        "warnings": ["another warning", "small test split: n = 4"],
    }
    assert list(record) == [
        "run_id", "label", "task", "model", "epochs_trained", "resumed_from_epoch", "files",
        "replicas", "global_batch", "train_seconds", "train_samples_per_second", "sizes",
        "kernel_laplacian_energy", "test", "warnings",
    ]  # fmt: skip


def test_the_metrics_record_of_a_regression_and_of_a_fit_with_no_epoch_left(
    tmp_path: Path,
) -> None:
    run = tmp_path / "moment-1"
    _history(run, "epoch,loss\n0,1.0\n")
    (run / "model.keras").write_bytes(b"m")
    record = _record(run, classification=False, fit_epochs=0, kernel_energy=None)
    assert record["task"] == "regression"
    assert record["kernel_laplacian_energy"] is None
    assert record["train_samples_per_second"] == 2.5  # one pass over 10 samples in 4 s
    assert _record(run, seconds=0.0)["train_samples_per_second"] is None
    assert _record(run, seconds=0.5, fit_epochs=2)["train_samples_per_second"] == 40.0
    assert _record(run, results={"model": {"small_sample_warning": None}})["warnings"] == []
