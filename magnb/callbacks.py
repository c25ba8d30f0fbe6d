"""The Keras callbacks of stage 04 that keep a run folder right under kills and resumes.

:class:`RunFiles` writes ``model.keras`` (best epoch) and ``history.csv`` atomically at the end of
each epoch, *before* Keras' BackupAndRestore records that epoch, so a run killed anywhere resumes
with a history that has every finished epoch exactly once. On the first epoch of a resumed fit it
restores what a resume would otherwise forget, so the run continues as if never stopped:

- the loader's epoch (its shuffle and augmentation are seeded by (seed, epoch, batch));
- the best monitored value so far (so the checkpoint keeps the same best epoch);
- the state of EarlyStopping and ReduceLROnPlateau, by replaying the recorded epochs through
  them (the learning rate itself comes back with the optimizer from the backup; history.csv
  records each epoch's rate, which ReduceLROnPlateau's replay needs);
- the random state of the model's own generators (Dropout's ``SeedGenerator``), which Keras'
  weight files leave out: kept per epoch in ``backup/rng/``.

Imported by :func:`magnb.train.train` only (it imports Keras).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from magnb._io import atomic_path, atomic_write, remove


class _Stub:
    """Stands in for the model while recorded epochs are replayed through a callback: the
    callback's decisions (stop, a new learning rate) land here, not on the real model."""

    def __init__(self, learning_rate: float) -> None:
        self.stop_training = False
        self.optimizer = type("Optimizer", (), {"learning_rate": learning_rate})()


class RunFiles(keras.callbacks.Callback):
    """Atomic ``model.keras`` and ``history.csv``, and the state a resumed run needs (see the
    module docstring). ``resumed_from_epoch`` is the epoch the fit started at (0: a new run)."""

    def __init__(
        self,
        run_dir: Path,
        monitor: str,
        loader: Any,
        replay: list[keras.callbacks.Callback],
    ) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.loader = loader
        self.replay = replay
        self.rows: list[dict[str, Any]] = []
        self.best = math.inf
        self.resumed_from_epoch: int | None = None

    @property
    def history_path(self) -> Path:
        return self.run_dir / "history.csv"

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.keras"

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.resumed_from_epoch is None:
            self._start(epoch)
        self.loader.set_epoch(epoch)

    def _start(self, epoch: int) -> None:
        self.resumed_from_epoch = epoch
        rows = []
        if epoch > 0 and self.history_path.is_file() and self.history_path.stat().st_size:
            history = pd.read_csv(self.history_path)
            # rows of epochs the backup does not hold (killed after the row, before the backup)
            # are done again: drop them
            history = history[history["epoch"] < epoch].drop_duplicates("epoch", keep="last")
            rows = history.sort_values("epoch").to_dict("records")
        self.rows = rows
        # as on_epoch_end keeps it: a NaN epoch is no best (min() would return a leading NaN,
        # which no later value beats)
        values = [v for r in rows if math.isfinite(v := r.get(self.monitor, math.nan))]
        self.best = min(values, default=math.inf)
        for callback in self.replay:
            _replay(callback, rows)
        if epoch > 0:
            self._restore_rng(epoch - 1)

    def _rng_path(self, epoch: int) -> Path:
        return self.run_dir / "backup" / "rng" / f"epoch-{epoch}.npz"

    def _rng_variables(self) -> list[Any]:
        return [v for v in self.model.variables if "seed_generator_state" in v.path]

    def _save_rng(self, epoch: int) -> None:
        states = {str(i): np.asarray(v.numpy()) for i, v in enumerate(self._rng_variables())}
        with atomic_path(self._rng_path(epoch), suffix=".npz") as tmp:
            np.savez(tmp, **states)
        remove(self._rng_path(epoch - 2))  # the backup keeps two epochs at most

    def _restore_rng(self, epoch: int) -> None:
        path = self._rng_path(epoch)
        if not path.is_file():
            return  # a backup of an older magnb: the run goes on with fresh generators
        with np.load(path, allow_pickle=False) as saved:
            for i, v in enumerate(self._rng_variables()):
                if str(i) in saved:
                    v.assign(saved[str(i)])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        # the epoch's learning rate, which the replay of ReduceLROnPlateau needs: Keras' logs
        # get it from that callback, after this one has read them
        logs.setdefault(
            "learning_rate", keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        row = {"epoch": epoch, **{k: float(v) for k, v in sorted(logs.items())}}
        value = row.get(self.monitor, math.nan)
        if math.isfinite(value) and value < self.best:
            self.best = value
            save_model(self.model, self.model_path)
        self.rows.append(row)
        with atomic_write(self.history_path, "w") as fh:
            pd.DataFrame(self.rows).to_csv(fh, index=False)
        self._save_rng(epoch)


def _replay(callback: keras.callbacks.Callback, rows: list[dict[str, Any]]) -> None:
    """Feed recorded epochs to a fresh callback so that its counters (best, wait, cooldown) are
    where they were when the run stopped."""
    real = callback.model if hasattr(callback, "_model") else None
    lr = rows[0].get("learning_rate", 0.0) if rows else 0.0
    stub = _Stub(float(lr))
    callback.set_model(stub)  # type: ignore[arg-type]
    callback.on_train_begin()
    for row in rows:
        stub.optimizer.learning_rate = float(row.get("learning_rate", stub.optimizer.learning_rate))
        callback.on_epoch_end(int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"})
    if real is not None:
        callback.set_model(real)


def save_model(model: keras.Model, path: Path) -> None:
    """``model.save`` to a temporary ``.keras`` file beside ``path``, renamed into place."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
