"""Stage 04, train: fit a model from a :class:`TrainConfig`, evaluate it beside the baselines, and
keep everything a run needs to be trusted later in ``runs/<run_id>/``:

``config.yaml``, ``model.keras`` (best epoch on val_loss, loadable in safe mode), ``history.csv``,
``metrics.json`` (model and baselines on the same test split), ``environment.json`` (versions,
backend, devices, git commit, dataset hash) and, when run by papermill, the executed notebook.

The run id is ``<name>-<hash of the config>``: re-running a config finds its own folder, so a job
killed or requeued mid-training resumes from its last finished epoch (Keras' BackupAndRestore)
and a finished run is not trained twice (unless ``force``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magnb import __version__
from magnb._io import atomic_write, h5_attr, sha256_file
from magnb.config import TrainConfig, to_mapping
from magnb.errors import MagnbError

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: pd.DataFrame
    resumed_from_epoch: int = 0
    already_done: bool = False

    def summary(self) -> str:
        from magnb.baselines import format_table

        head = f"run {self.run_dir.name}: {self.metrics.get('label')} on the test split"
        if self.already_done:
            head += " (finished earlier; not retrained)"
        return head + "\n" + format_table(self.metrics["test"])


# --------------------------------------------------------------------------------------------
# checks before training


def dataset_info(dataset_dir: Path) -> dict[str, Any]:
    """Shape, channels, threshold and hash of a dataset; MagnbError if it is not there."""
    import h5py

    from magnb.baselines import dataset_threshold

    path = dataset_dir / "dataset.h5"
    if not path.is_file():
        raise MagnbError("no dataset: run stage 03 (magnb scrape) first", path)
    threshold = dataset_threshold(dataset_dir)  # the one reader of it (baselines, viz, 05)
    with h5py.File(path, "r") as f:
        return {
            "shape": tuple(int(n) for n in f["samples"].shape[1:]),
            "n": int(f["samples"].shape[0]),
            "channels": tuple(json.loads(f.attrs["channels"])),
            "threshold": threshold,
            "input_hash": str(f.attrs["input_hash"]),
            "table_sha256": sha256_file(dataset_dir / "table.parquet"),
        }


def check_finite(dataset_dir: Path) -> None:
    """One streaming pass over the samples: NaN or inf anywhere is a MagnbError naming the row."""
    import h5py

    path = dataset_dir / "dataset.h5"
    with h5py.File(path, "r") as f:
        ds = f["samples"]
        for i in range(ds.shape[0]):
            if not np.isfinite(ds[i]).all():
                raise MagnbError(f"sample {i} contains NaN or infinite values", path)


def check_dataset(config: TrainConfig) -> dict[str, Any]:
    """The checks of the config against its dataset that need no TensorFlow, so that they run
    before it is imported (a wrong path or label fails in a second, not after its 15-20 s
    import): the dataset is there, has the config's channels, the training and test splits have
    rows with the label, and the training split has two classes or more. Returns
    :func:`dataset_info`. :func:`preflight` runs it first."""
    from magnb.dataset import LABEL_CLASSES, LABEL_HINTS, LABELS, label_rows, read_table

    info = dataset_info(config.dataset_dir)
    if config.channels is not None and tuple(config.channels) != info["channels"]:
        raise MagnbError(
            f"config asks for channels {list(config.channels)} but the dataset has "
            f"{list(info['channels'])}",
            config.dataset_dir / "dataset.h5",
        )
    if config.label not in LABELS:
        raise MagnbError(f"unknown label {config.label!r}; choose from {list(LABELS)}")
    table = label_rows(read_table(config.dataset_dir), config.label)
    if config.label not in LABEL_CLASSES:
        table = table[np.isfinite(table[config.label].astype(float))]
    if config.augment_symmetry and "symmetry_ops" not in table:
        raise MagnbError(
            "augment_symmetry needs a cube dataset scraped with symmetry: true",
            config.dataset_dir / "table.parquet",
        )
    hint = LABEL_HINTS.get(config.label, "")
    for split in ("train", "test"):
        if not (table["split"] == split).any():
            raise MagnbError(
                f"no samples in split {split!r} with a {config.label!r} label{hint}",
                config.dataset_dir / "table.parquet",
            )
    if config.label in LABEL_CLASSES:
        classes = sorted(table.loc[table["split"] == "train", config.label].astype(str).unique())
        if len(classes) < 2:
            raise MagnbError(
                f"the training split has one class only ({config.label} = {classes}): "
                "nothing to learn" + (hint or "; check the split"),
                config.dataset_dir / "table.parquet",
            )
    return info


def preflight(config: TrainConfig) -> dict[str, Any]:
    """Every check that can fail on the user's input, before any training starts."""
    info = check_dataset(config)  # before TensorFlow: the imports below bring it in
    from magnb.dataset import LABEL_HINTS, DensityDataset
    from magnb.model import check_model_fits, is_classification

    check_model_fits(config, info["shape"])
    splits = {}
    for split in ("train", "val", "test"):
        try:
            splits[split] = DensityDataset(
                config.dataset_dir, split=split, label=config.label, shuffle=False
            )
        except MagnbError:
            if split == "val":
                splits[split] = None
                continue
            raise
    if is_classification(config.label):
        classes = np.unique(splits["train"].labels)
        if len(classes) < 2:
            raise MagnbError(
                f"the training split has one class only ({config.label} = {classes.tolist()}): "
                "nothing to learn" + LABEL_HINTS.get(config.label, "; check the split"),
                config.dataset_dir / "table.parquet",
            )
    check_finite(config.dataset_dir)
    info["sizes"] = {k: (0 if v is None else len(v.table)) for k, v in splits.items()}
    return info


# --------------------------------------------------------------------------------------------
# distribution


def _cpu_replicas(config: TrainConfig) -> int:
    """Logical CPU devices to make when there is no GPU: the config's, or for a mirrored run, as
    many as Slurm's CUDA_VISIBLE_DEVICES names (so a GPU job script runs unchanged on CPUs)."""
    if config.cpu_replicas:
        return config.cpu_replicas
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if config.strategy == "mirrored" and visible:
        return len([v for v in visible.split(",") if v.strip()])
    return 0


def make_strategy(config: TrainConfig) -> Any:
    """A ``tf.distribute`` strategy for the config (TensorFlow backend), or None (other backends,
    where only single-device training is supported)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        if config.strategy in ("mirrored", "multiworker"):
            raise MagnbError(
                f"strategy {config.strategy!r} needs the TensorFlow backend, "
                f"not {keras.backend.backend()!r}"
            )
        return None
    if config.strategy == "multiworker":  # before any other TensorFlow call: see below
        return multiworker_strategy()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    replicas = _cpu_replicas(config)
    if not gpus and replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
            )
        except RuntimeError as exc:
            if len(tf.config.list_logical_devices("CPU")) != replicas:
                raise MagnbError(
                    f"cannot split the CPU into {replicas} devices after TensorFlow started; "
                    "train in a fresh process"
                ) from exc
    kind = config.strategy
    if kind == "auto":
        kind = "mirrored" if len(gpus) > 1 or (not gpus and replicas > 1) else "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    return multiworker_strategy()


def multiworker_strategy() -> Any:
    """``MultiWorkerMirroredStrategy`` for a job whose workers are described by ``TF_CONFIG`` or,
    without it, by the Slurm job step they run in (``srun``; slurm/train_multinode.sbatch).

    It must exist before TensorFlow runs anything (it configures the runtime's collectives), and
    before CUDA_VISIBLE_DEVICES is read: :func:`make_strategy` calls it first. The cluster spec,
    the 0-GPU workaround for SlurmClusterResolver and a fix for Keras 3's multi-worker reductions
    are in :func:`magnb.slurm.multiworker_strategy`.
    """
    from magnb.slurm import multiworker_strategy as from_slurm

    return from_slurm()


# --------------------------------------------------------------------------------------------
# the run


def environment_record(strategy: Any, info: dict[str, Any]) -> dict[str, Any]:
    import keras

    record: dict[str, Any] = {
        "magnb": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "replicas": 1 if strategy is None else int(strategy.num_replicas_in_sync),
        "strategy": "none" if strategy is None else type(strategy).__name__,
        "git_commit": git_commit(),
        "dataset_hash": info["input_hash"],
        "table_sha256": info["table_sha256"],
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        record["tensorflow"] = tf.__version__
        record["devices"] = [d.name for d in tf.config.list_logical_devices()]
    return record


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _class_weights(labels: np.ndarray) -> dict[int, float]:
    classes, counts = np.unique(labels, return_counts=True)
    return {
        int(c): float(len(labels) / (len(classes) * n))
        for c, n in zip(classes, counts, strict=True)
    }


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> Any:
    import keras

    lr: Any = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, steps_per_epoch * config.epochs)
        )
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr)
    return keras.optimizers.SGD(lr, momentum=0.9)


def read_history(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "history.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    history = pd.read_csv(path)
    # a job killed between the CSV row and the backup repeats that epoch on resume: keep the last
    return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def trained_on_other_data(config: TrainConfig) -> str | None:
    """Why the run in ``config``'s run folder, finished or interrupted with a backup, does not
    belong to the dataset now in ``config.dataset_dir`` (it was trained on another one, or on an
    earlier build of it); None when it does or there is no such run."""
    run_dir = config.runs_dir / config.run_id
    record = run_dir / "environment.json"
    finished = (run_dir / "metrics.json").is_file()
    if not (finished or (run_dir / "backup").is_dir()) or not record.is_file():
        return None
    trained = json.loads(record.read_text()).get("dataset_hash")
    current = h5_attr(config.dataset_dir / "dataset.h5", "input_hash")
    if not trained or not current or trained == current:
        return None
    how = "was trained" if finished else "was interrupted while training"
    return (
        f"run {config.run_id} {how} on dataset {trained[:12]}, but {config.dataset_dir} now "
        f"holds dataset {current[:12]}"
    )


def train(config: TrainConfig, progress: bool = True) -> RunResult:
    """Train and evaluate one run. See the module docstring for what it leaves on disk."""
    run_dir = config.runs_dir / config.run_id
    metrics_path = run_dir / "metrics.json"
    # the run id names the settings, not the data: a run of other data is neither handed back
    # as this dataset's nor resumed on it
    other_data = trained_on_other_data(config)
    if other_data and not config.force:
        raise MagnbError(
            f"{other_data}; train it again from the start with force: true (magnb train "
            "--force) or give this dataset its own runs_dir",
            metrics_path if metrics_path.is_file() else run_dir / "backup",
        )
    if metrics_path.is_file() and not config.force:
        return RunResult(
            run_dir, json.loads(metrics_path.read_text()), read_history(run_dir), already_done=True
        )
    if config.force and run_dir.exists():
        for name in ("metrics.json", "history.csv", "model.keras"):
            (run_dir / name).unlink(missing_ok=True)
        if other_data:  # its backup holds epochs of the other data
            shutil.rmtree(run_dir / "backup", ignore_errors=True)

    info = preflight(config)  # its first checks run before TensorFlow is imported
    import keras

    from magnb.baselines import evaluate_all
    from magnb.dataset import LABEL_CLASSES, DensityDataset
    from magnb.model import build_model, is_classification

    strategy = make_strategy(config)
    replicas = 1 if strategy is None else int(strategy.num_replicas_in_sync)
    global_batch = config.batch_size * replicas
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml

    with atomic_write(run_dir / "config.yaml", "w") as fh:
        yaml.safe_dump(to_mapping(config), fh, sort_keys=False)
    env = environment_record(strategy, info)
    env["global_batch"] = global_batch
    with atomic_write(run_dir / "environment.json", "w") as fh:
        json.dump(env, fh, indent=2)

    keras.utils.set_random_seed(config.seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    def loader(split: str, **options: Any) -> Any:
        return DensityDataset(
            config.dataset_dir,
            split=split,
            label=config.label,
            batch_size=global_batch,
            workers=config.workers,
            use_multiprocessing=False,
            **options,
        )

    train_data = loader(
        "train",
        shuffle=True,
        augment=config.augment,
        seed=config.seed,
        symmetry=config.augment_symmetry,
    )
    val_data = loader("val", shuffle=False) if info["sizes"]["val"] else None
    classification = is_classification(config.label)
    n_classes = len(LABEL_CLASSES[config.label]) if classification else 1

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = build_model(config, info["shape"], n_classes)
        if classification:
            loss = keras.losses.SparseCategoricalCrossentropy()
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        else:
            loss = keras.losses.MeanSquaredError()
            metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
        model.compile(optimizer=_optimizer(config, len(train_data)), loss=loss, metrics=metrics)

    monitor = "val_loss" if val_data is not None else "loss"
    callbacks: list[Any] = [
        # double_checkpoint: a job killed while the backup is being written still resumes
        # (from the previous backup) instead of failing on a half-written file
        keras.callbacks.BackupAndRestore(
            str(run_dir / "backup"), delete_checkpoint=True, double_checkpoint=True
        ),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "model.keras"), monitor=monitor, save_best_only=True
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor, patience=config.early_stopping))
    if config.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor, factor=0.5, patience=3))
    done_before = len(read_history(run_dir))

    class_weight = (
        _class_weights(train_data.labels)
        if (classification and config.class_weight == "balanced")
        else None
    )
    start = time.perf_counter()
    fit = model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=2 if progress else 0,
    )
    seconds = time.perf_counter() - start
    losses = fit.history.get("loss", [])
    if any(not math.isfinite(v) for v in losses):
        raise MagnbError(
            f"the training loss became NaN or infinite in epoch {done_before + len(losses)}; "
            "training stopped. The last good checkpoint is kept"
            + (f" at {run_dir / 'model.keras'}" if (run_dir / "model.keras").exists() else ""),
            run_dir,
        )
    if not (run_dir / "model.keras").exists():
        model.save(run_dir / "model.keras")

    best = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    test_data = loader("test", shuffle=False)
    predictions = best.predict(test_data, verbose=0)
    model_output = predictions if n_classes > 2 else predictions[:, 1 if classification else 0]
    results = evaluate_all(
        config.dataset_dir, config.label, info["threshold"], model_output, split="test"
    )
    trained_epochs = len(read_history(run_dir))
    samples_seen = len(train_data.table) * max(1, len(losses))
    metrics = {
        "run_id": config.run_id,
        "label": config.label,
        "task": "classification" if classification else "regression",
        "model": config.model,
        "epochs_trained": trained_epochs,
        "resumed_from_epoch": done_before,
        "replicas": replicas,
        "global_batch": global_batch,
        "train_seconds": seconds,
        "train_samples_per_second": samples_seen / seconds if seconds > 0 else None,
        "sizes": info["sizes"],
        "test": results,
    }
    with atomic_write(metrics_path, "w") as fh:
        json.dump(metrics, fh, indent=2)
    return RunResult(run_dir, metrics, read_history(run_dir), resumed_from_epoch=done_before)


# --------------------------------------------------------------------------------------------
# the run registry


def list_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One row per finished run: its config fields and the test metrics of model and baselines."""
    import yaml

    runs_dir = Path(runs_dir)
    rows = []
    for metrics_path in sorted(runs_dir.glob("*/metrics.json")):
        run_dir = metrics_path.parent
        m = json.loads(metrics_path.read_text())
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        row: dict[str, Any] = {"run_id": run_dir.name, "finished": _mtime(metrics_path)}
        for key in ("label", "model", "filters", "kernel_size", "pool", "learning_rate",
                    "batch_size", "epochs", "seed", "strategy"):  # fmt: skip
            value = cfg.get(key)
            row[key] = json.dumps(value) if isinstance(value, list) else value
        row["epochs_trained"] = m.get("epochs_trained")
        row["replicas"] = m.get("replicas")
        main = "balanced_accuracy" if m.get("task") == "classification" else "mae"
        for method, values in m.get("test", {}).items():
            if isinstance(values, dict) and main in values:
                row[f"{method}_{main}"] = values[main]
        rows.append(row)
    return pd.DataFrame(rows)


def _mtime(path: Path) -> str:
    return pd.Timestamp(path.stat().st_mtime, unit="s").isoformat(timespec="seconds")
