"""magnb.callbacks.RunFiles driven by hand, epoch by epoch, in a temporary run folder (the tests
``make mutants`` needed for magnb/callbacks.py; see tests/MUTANTS.md): a tiny real Keras model
(a Dense layer between two seeded Dropout layers, whose generators hold the random state),
real EarlyStopping and ReduceLROnPlateau for the replay, and every expected value worked out by
hand. No fit runs; a few seconds after the Keras import."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from magnb.callbacks import RunFiles, _replay, save_model


class Epochs:
    """The loader's side of RunFiles: the epochs it was set to."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.seen.append(epoch)


def _model(lr: float = 0.5) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dropout(0.5, seed=3),
            keras.layers.Dense(1),
            keras.layers.Dropout(0.5, seed=4),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    return model


def _dense(model: keras.Model) -> keras.layers.Layer:
    return next(x for x in model.layers if isinstance(x, keras.layers.Dense))


def _mark(model: keras.Model, value: float) -> None:
    """Weights that say which epoch they are from."""
    _dense(model).kernel.assign(np.full((2, 1), value, np.float32))


def _saved_mark(run: Path) -> float:
    saved = keras.saving.load_model(run / "model.keras", safe_mode=True)
    return float(np.asarray(_dense(saved).kernel)[0, 0])


def _seeds(model: keras.Model) -> list[list[int]]:
    return [np.asarray(v).tolist() for v in model.variables if "seed_generator_state" in v.path]


def _set_seeds(model: keras.Model, *states: list[int]) -> None:
    gens = [v for v in model.variables if "seed_generator_state" in v.path]
    assert len(gens) == len(states) == 2
    for v, s in zip(gens, states, strict=True):
        v.assign(np.array(s, dtype=np.asarray(v).dtype))


def _files(run: Path, model: keras.Model, replay=(), monitor="val_loss") -> RunFiles:
    files = RunFiles(run, monitor, Epochs(), list(replay))
    files.set_model(model)
    return files


def _rng_files(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "backup" / "rng").iterdir())


def test_a_new_run_keeps_the_best_epoch_and_writes_every_row(tmp_path: Path) -> None:
    model = _model()
    files = _files(tmp_path, model)
    epochs = [  # (mark, logs): a tie, a NaN and a missing val_loss are no new best
        (1.0, {"val_loss": 0.5, "loss": 0.9, "accuracy": 0.25}),
        (2.0, {"val_loss": 0.5, "loss": 0.8, "accuracy": 0.5}),
        (3.0, {"val_loss": float("nan"), "loss": 0.7, "accuracy": 0.5}),
        (4.0, {"loss": 0.6, "accuracy": 0.75}),
        (5.0, {"val_loss": np.float32(0.25), "loss": 0.5, "accuracy": 1.0}),
        (6.0, {"val_loss": 0.375, "loss": 0.4, "accuracy": 1.0}),
    ]
    marks_saved = []
    for epoch, (mark, logs) in enumerate(epochs):
        files.on_epoch_begin(epoch)
        _mark(model, mark)
        files.on_epoch_end(epoch, logs)
        marks_saved.append(_saved_mark(tmp_path))
    assert files.resumed_from_epoch == 0
    assert files.loader.seen == [0, 1, 2, 3, 4, 5]
    assert marks_saved == [1.0, 1.0, 1.0, 1.0, 5.0, 5.0]
    assert files.best == 0.25
    # one row per epoch, the logs' keys sorted after the epoch
    assert (tmp_path / "history.csv").read_text() == (
        "epoch,accuracy,learning_rate,loss,val_loss\n"
        "0,0.25,0.5,0.9,0.5\n"
        "1,0.5,0.5,0.8,0.5\n"
        "2,0.5,0.5,0.7,\n"
        "3,0.75,0.5,0.6,\n"
        "4,1.0,0.5,0.5,0.25\n"
        "5,1.0,0.5,0.4,0.375\n"
    )
    # the generators' states of the last two epochs are kept, older ones removed
    assert _rng_files(tmp_path) == ["epoch-4.npz", "epoch-5.npz"]


def test_the_first_epoch_is_checkpointed_without_a_monitor_row_before_it(tmp_path: Path) -> None:
    model = _model()
    files = _files(tmp_path, model, monitor="loss")
    files.on_epoch_begin(0)
    _mark(model, 7.0)
    files.on_epoch_end(0, {"loss": 1e30})  # any finite value beats no value
    assert _saved_mark(tmp_path) == 7.0
    files.on_epoch_begin(1)
    _mark(model, 8.0)
    files.on_epoch_end(1, None)  # no logs: a row with its epoch only, no checkpoint
    assert _saved_mark(tmp_path) == 7.0
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [0, 1]


def test_the_generator_states_are_saved_per_epoch_and_restored_on_resume(tmp_path: Path) -> None:
    model = _model()
    files = _files(tmp_path, model)
    for epoch, states in ((3, ([1, 2], [3, 4])), (4, ([7, 0], [9, 1])), (5, ([8, 5], [10, 6]))):
        files.on_epoch_begin(epoch)
        _set_seeds(model, *states)
        files.on_epoch_end(epoch, {"val_loss": 1.0 - epoch / 10})
    assert _rng_files(tmp_path) == ["epoch-4.npz", "epoch-5.npz"]
    with np.load(tmp_path / "backup" / "rng" / "epoch-4.npz") as saved:
        assert {k: saved[k].tolist() for k in saved} == {"0": [7, 0], "1": [9, 1]}
    # killed after epoch 5's row, before its backup: the run resumes at 5, from the generators
    # as they were when epoch 4 ended (epoch 5's own file is there too)
    again = _model()
    fresh = _seeds(again)
    assert fresh not in ([[7, 0], [9, 1]], [[8, 5], [10, 6]])
    resumed = _files(tmp_path, again)
    resumed.on_epoch_begin(5)
    assert _seeds(again) == [[7, 0], [9, 1]]
    # a resume at epoch 1 restores epoch 0's states
    files.on_epoch_end(0, {"val_loss": 2.0})
    with np.load(tmp_path / "backup" / "rng" / "epoch-0.npz") as saved:
        epoch_0 = [saved["0"].tolist(), saved["1"].tolist()]
    first = _model()
    assert _seeds(first) != epoch_0
    _files(tmp_path, first).on_epoch_begin(1)
    assert _seeds(first) == epoch_0 == [[8, 5], [10, 6]]
    # a resume with no saved states (a backup of an older magnb) keeps fresh generators
    other = _model()
    before = _seeds(other)
    _files(tmp_path, other).on_epoch_begin(8)
    assert _seeds(other) == before
    # a file of one generator restores that one and leaves the other
    np.savez(tmp_path / "backup" / "rng" / "epoch-8.npz", **{"0": np.array([5, 5])})
    one = _model()
    second = _seeds(one)[1]
    _files(tmp_path, one).on_epoch_begin(9)
    assert _seeds(one) == [[5, 5], second]


def test_a_new_run_restores_no_generator_state(tmp_path: Path) -> None:
    """Epoch 0 begins a new run: a states file of epoch -1 (never written by magnb) is not
    read."""
    (tmp_path / "backup" / "rng").mkdir(parents=True)
    np.savez(tmp_path / "backup" / "rng" / "epoch--1.npz", **{"0": np.array([5, 5])})
    model = _model()
    before = _seeds(model)
    _files(tmp_path, model).on_epoch_begin(0)
    assert _seeds(model) == before


HISTORY = (
    "epoch,loss,val_loss\n"
    "1,0.8,0.6\n"
    "0,0.9,0.7\n"
    "2,0.7,0.3\n"
    "1,0.85,0.65\n"  # epoch 1 done again: this row is the one that counts
    "3,0.6,0.1\n"  # after the row, before the backup: epoch 3 is done again
)


def test_a_resumed_run_keeps_the_rows_the_backup_holds(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text(HISTORY)
    model = _model()
    files = _files(tmp_path, model)
    files.on_epoch_begin(3)
    files.on_epoch_begin(4)  # later epochs do not start the run again
    assert files.resumed_from_epoch == 3
    assert files.loader.seen == [3, 4]
    assert files.rows == [
        {"epoch": 0, "loss": 0.9, "val_loss": 0.7},
        {"epoch": 1, "loss": 0.85, "val_loss": 0.65},
        {"epoch": 2, "loss": 0.7, "val_loss": 0.3},
    ]
    assert files.best == 0.3  # not epoch 3's 0.1: that epoch is done again
    _mark(model, 2.5)
    files.on_epoch_end(3, {"loss": 0.65, "val_loss": 0.35})  # no better than epoch 2
    assert not (tmp_path / "model.keras").exists()
    _mark(model, 3.5)
    files.on_epoch_end(4, {"loss": 0.6, "val_loss": 0.2})
    assert _saved_mark(tmp_path) == 3.5
    assert (tmp_path / "history.csv").read_text() == (
        # rows of an older magnb without the learning rate keep theirs empty
        "epoch,loss,val_loss,learning_rate\n"
        "0,0.9,0.7,\n1,0.85,0.65,\n2,0.7,0.3,\n3,0.65,0.35,0.5\n4,0.6,0.2,0.5\n"
    )


def test_a_resume_at_epoch_1_keeps_epoch_0(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text(HISTORY)
    files = _files(tmp_path, _model())
    files.on_epoch_begin(1)
    assert files.rows == [{"epoch": 0, "loss": 0.9, "val_loss": 0.7}]
    assert files.best == 0.7


def test_a_new_run_keeps_no_old_row(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text(HISTORY)
    files = _files(tmp_path, _model())
    files.on_epoch_begin(0)
    assert files.rows == [] and files.best == float("inf")
    files.on_epoch_end(0, {"loss": 2.0, "val_loss": 1.5})
    assert (
        tmp_path / "history.csv"
    ).read_text() == "epoch,learning_rate,loss,val_loss\n0,0.5,2.0,1.5\n"


@pytest.mark.parametrize("text", [None, "", "epoch,loss\n0,0.9\n1,0.8\n"])
def test_a_resume_without_monitored_rows_has_no_best_yet(tmp_path: Path, text) -> None:
    """No history.csv, an empty one (killed before its first row), or one without val_loss."""
    if text is not None:
        (tmp_path / "history.csv").write_text(text)
    files = _files(tmp_path, _model())
    files.on_epoch_begin(2)
    assert files.best == float("inf")
    assert files.rows == (
        [] if not text else [{"epoch": 0, "loss": 0.9}, {"epoch": 1, "loss": 0.8}]
    )


# val_loss by epoch: better, better, then worse for four epochs
VAL = [1.0, 0.8, 0.9, 0.85, 0.95, 0.9]


def test_early_stopping_is_replayed_to_where_it_was(tmp_path: Path) -> None:
    """EarlyStopping(patience=5) after VAL: best 0.8 at epoch 1, four epochs waited. The
    replay's decisions land on a stand-in: the real model is told nothing, and the callback is
    handed back the real model, so the next epoch without progress stops the resumed run."""
    rows = [{"epoch": e, "loss": 1.0, "val_loss": v} for e, v in enumerate(VAL)]
    pd.DataFrame(rows).to_csv(tmp_path / "history.csv", index=False)
    model = _model()
    stop = keras.callbacks.EarlyStopping("val_loss", patience=5)
    stop.set_model(model)  # as fit's CallbackList does before the first epoch
    files = _files(tmp_path, model, replay=[stop])
    files.on_epoch_begin(6)
    assert (stop.best, stop.best_epoch, stop.wait, stop.stopped_epoch) == (0.8, 1, 4, 0)
    assert stop.model is model and not model.stop_training
    stop.on_epoch_end(6, {"val_loss": 0.9})
    assert model.stop_training and stop.stopped_epoch == 6


def test_a_replay_that_stops_stops_the_stand_in_only(tmp_path: Path) -> None:
    model = _model()
    stop = keras.callbacks.EarlyStopping("val_loss", patience=2)
    stop.set_model(model)
    _replay(stop, [{"epoch": e, "val_loss": v} for e, v in enumerate(VAL)])
    assert stop.stopped_epoch == 5  # past its patience from epoch 3 on: the last row's epoch
    assert stop.model is model and not model.stop_training


def test_a_callback_without_a_model_is_replayed(tmp_path: Path) -> None:
    stop = keras.callbacks.EarlyStopping("val_loss", patience=5)
    del stop._model  # a callback fit has not been given a model
    _replay(stop, [{"epoch": e, "val_loss": v} for e, v in enumerate(VAL)])
    assert (stop.best, stop.wait) == (0.8, 4)
    _replay(stop, [])  # no rows: the callback as fresh
    assert (stop.best, stop.wait) == (None, 0)


def test_save_model_writes_a_loadable_keras_file(tmp_path: Path) -> None:
    model = _model()
    _mark(model, 4.25)
    save_model(model, tmp_path / "m.keras")
    assert _saved_mark_at(tmp_path / "m.keras") == 4.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def _saved_mark_at(path: Path) -> float:
    saved = keras.saving.load_model(path, safe_mode=True)
    return float(np.asarray(_dense(saved).kernel)[0, 0])


def _epoch(callbacks: list, epoch: int, val_loss: float) -> None:
    """One epoch's end as fit's CallbackList runs it: the callbacks in order, one logs dict."""
    logs = {"loss": 1.0, "val_loss": val_loss}
    for callback in callbacks:
        callback.on_epoch_end(epoch, logs)


def test_reduce_lr_on_plateau_is_replayed_to_where_it_was(tmp_path: Path) -> None:
    """ReduceLROnPlateau(patience=2) over VAL halves the learning rate at the ends of epochs 3
    and 5 (0.5, 0.25, 0.125) and has waited 0 epochs since. A run stopped after epoch 5 and
    resumed (the optimizer's 0.125 back from the backup) is where the uninterrupted run is:
    epoch 6 without progress waits 1, and reduces nothing. The epochs' learning rates are
    recorded in history.csv (Keras' logs hold none when RunFiles reads them), or the replay
    would see no rate to reduce and wait 4."""
    model = _model(0.5)
    plateau = keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=2)
    plateau.set_model(model)
    first = _files(tmp_path, model, replay=[plateau])
    for epoch, value in enumerate(VAL):
        first.on_epoch_begin(epoch)
        _epoch([first, plateau], epoch, value)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["learning_rate"].tolist() == [0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert float(model.optimizer.learning_rate) == 0.125 and plateau.wait == 0

    again = _model(0.125)  # as BackupAndRestore gives it back
    resumed = keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=2)
    resumed.set_model(again)
    files = _files(tmp_path, again, replay=[resumed])
    files.on_epoch_begin(6)
    assert (resumed.best, resumed.wait, resumed.cooldown_counter) == (0.8, 0, 0)
    assert float(again.optimizer.learning_rate) == 0.125  # the replay's halvings hit a stand-in
    _epoch([files, resumed], 6, 0.9)
    _epoch([first, plateau], 6, 0.9)  # the uninterrupted run
    assert resumed.wait == plateau.wait == 1
    assert float(again.optimizer.learning_rate) == float(model.optimizer.learning_rate) == 0.125


def test_a_resume_after_a_nan_first_epoch_still_checkpoints(tmp_path: Path) -> None:
    """Epoch 0's val_loss was NaN (no checkpoint), epoch 1's 0.6 the best: a resumed run's best
    is 0.6, and a later 0.5 is checkpointed as in the uninterrupted run (a NaN best would
    refuse every later epoch)."""
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,0.9,\n1,0.8,0.6\n")
    model = _model()
    files = _files(tmp_path, model)
    files.on_epoch_begin(2)
    assert files.best == 0.6
    _mark(model, 9.0)
    files.on_epoch_end(2, {"loss": 0.7, "val_loss": 0.5})
    assert _saved_mark(tmp_path) == 9.0
