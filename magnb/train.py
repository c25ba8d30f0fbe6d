"""Stage 04, train: fit a model from a :class:`TrainConfig`, evaluate it beside the baselines, and
keep everything a run needs to be trusted later in ``runs/<run_id>/``:

``config.yaml``, ``model.keras`` (best epoch on val_loss, loadable in safe mode), ``history.csv``,
``metrics.json`` (model and baselines on the same test split, every metric with its n and 95 %
interval, and a warning when the test split is small), ``environment.json`` (versions, backend,
devices, git commit, the dataset's identity) and, when run by papermill, the executed notebook.
:func:`cross_validate` instead trains once per k-fold column and reports mean and spread.

The run id is ``<name>-<hash of the config and of the dataset's identity>`` (its input hash,
:func:`magnb.config.dataset_identity`): re-running a config on the same dataset finds its own
folder, so a job killed or requeued mid-training resumes from its last finished epoch (Keras'
BackupAndRestore) and a finished run is not trained twice (unless ``force``); the same config on
another dataset, or on a rebuilt one, trains into a folder of its own.
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
from magnb._io import (
    atomic_write,
    h5_attr,
    remove,
    remove_temporaries,
    sha256_file,
    stage_lock,
    user_os_errors,
)
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
    from magnb.dataset import read_table

    path = dataset_dir / "dataset.h5"
    read_table(dataset_dir)  # complete, one build, readable: else a MagnbError naming the file
    threshold = dataset_threshold(dataset_dir)  # the one reader of it (baselines, viz, 05)
    with h5py.File(path, "r") as f:
        return {
            "shape": tuple(int(n) for n in f["samples"].shape[1:]),
            "n": int(f["samples"].shape[0]),
            "channels": tuple(json.loads(f.attrs["channels"])),
            "periodic_axes": tuple(bool(p) for p in json.loads(f.attrs["periodic_axes"])),
            "threshold": threshold,
            "input_hash": str(f.attrs["input_hash"]),
            "table_sha256": sha256_file(dataset_dir / "table.parquet"),
        }


def dataset_record(dataset_dir: Path) -> dict[str, Any]:
    """What identifies the dataset in ``dataset_dir``, kept in a run's ``environment.json`` so
    that a later mismatch can say what changed: its input hash, the scrape settings that built it
    and the input hash (first 16 hex digits) of each calculation in it."""
    import h5py
    import yaml

    with h5py.File(dataset_dir / "dataset.h5", "r") as f:
        settings = yaml.safe_load(str(f.attrs.get("config", ""))) or {}
        input_hash = str(f.attrs.get("input_hash", ""))
    table = pd.read_parquet(dataset_dir / "table.parquet")
    hashes = table["input_hash"] if "input_hash" in table else pd.Series([""] * len(table))
    calcs = {
        str(c): (h[:16] if isinstance(h, str) else "")
        for c, h in zip(table["calc_id"], hashes, strict=True)
    }
    return {"input_hash": input_hash, "settings": settings, "calcs": calcs}


def _some(ids: list[str], at_most: int = 3) -> str:
    more = f" and {len(ids) - at_most} more" if len(ids) > at_most else ""
    return ", ".join(ids[:at_most]) + more


def describe_dataset_change(trained: dict[str, Any], current: dict[str, Any]) -> str:
    """What differs between records of :func:`dataset_record`, in one line: the scrape settings
    that changed (old -> new), the calculations added, removed or with changed inputs. A record
    without details (a run from before they were kept) gives the two input hashes only."""
    parts: list[str] = []
    old_s, new_s = trained.get("settings"), current.get("settings")
    detailed = isinstance(old_s, dict) and isinstance(trained.get("calcs"), dict)
    if detailed:
        changed = [
            f"{k} {old_s.get(k)!r} -> {new_s.get(k)!r}"
            for k in sorted(set(old_s) | set(new_s))
            if old_s.get(k) != new_s.get(k)
        ]
        if changed:
            parts.append("scrape settings changed: " + "; ".join(changed))
        old_c, new_c = trained["calcs"], current["calcs"]
        for what, ids in (
            ("added", sorted(set(new_c) - set(old_c))),
            ("removed", sorted(set(old_c) - set(new_c))),
            (
                "with changed inputs",
                sorted(c for c in set(old_c) & set(new_c) if old_c[c] != new_c[c]),
            ),
        ):
            if ids:
                parts.append(f"{len(ids)} calculation(s) {what} ({_some(ids)})")
    old_h, new_h = str(trained.get("input_hash", "")), str(current.get("input_hash", ""))
    if not parts:
        if detailed:
            parts.append(
                f"same settings and calculations, but the input hash changed ({old_h[:12]} -> "
                f"{new_h[:12]}): another dataset format or magnb version built it"
            )
        else:
            parts.append(
                f"input hash {old_h[:12]} -> {new_h[:12]} (the run kept no more detail about "
                "its dataset)"
            )
    return "; ".join(parts)


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
    info["record"] = dataset_record(config.dataset_dir)
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


@dataclass
class JaxStrategy:
    """Data parallelism on the JAX backend through ``keras.distribution.DataParallel``, with the
    parts of a ``tf.distribute`` strategy that :func:`train` uses (``scope()``,
    ``num_replicas_in_sync``). Over several processes (``jax.distributed``) each feeds its own
    part of every global batch: ``process_index`` of ``process_count``."""

    distribution: Any
    devices: list[str]
    process_index: int = 0
    process_count: int = 1

    @property
    def num_replicas_in_sync(self) -> int:
        return len(self.devices)

    def scope(self) -> Any:
        return self.distribution.scope()


def make_strategy(config: TrainConfig) -> Any:
    """A ``tf.distribute`` strategy for the config (TensorFlow backend), a :class:`JaxStrategy`
    (JAX backend, more than one device), or None (one device; other backends)."""
    import keras

    if keras.backend.backend() == "jax":
        return jax_strategy(config)
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


def jax_strategy(config: TrainConfig) -> JaxStrategy | None:
    """The JAX counterpart of the TensorFlow strategies: ``mirrored`` is ``DataParallel`` over
    this process's devices (GPUs, or CPU devices made with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts), ``multiworker``
    first joins the processes of a Slurm job step with ``jax.distributed`` (through
    ``keras.distribution.initialize``, which reads ``KERAS_DISTRIBUTION_*`` or lets JAX find the
    Slurm step) and is ``DataParallel`` over every process's devices. ``auto`` is ``mirrored``
    when there is more than one local device."""
    import jax
    import keras

    kind = config.strategy
    if kind == "multiworker":  # before JAX runs anything
        if not any(k in os.environ for k in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "SLURM_PROCID")):
            raise MagnbError(
                "strategy 'multiworker' needs its cluster: run it as the tasks of a Slurm job "
                "step (slurm/train_multinode.sbatch) or set KERAS_DISTRIBUTION_JOB_ADDRESSES, "
                "KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID"
            )
        keras.distribution.initialize()
        print(
            f"magnb: JAX process {jax.process_index()} of {jax.process_count()}, "
            f"{jax.local_device_count()} local of {jax.device_count()} devices",
            flush=True,
        )
    local = jax.local_devices()
    replicas = _cpu_replicas(config)
    on_cpu = all(d.platform == "cpu" for d in local)
    if on_cpu and replicas > 1 and len(local) != replicas:
        raise MagnbError(
            f"{replicas} CPU devices asked for, but JAX has {len(local)}: start the process with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={replicas} (read when JAX starts)"
        )
    if kind == "auto":
        kind = "mirrored" if len(local) > 1 else "default"
    if kind == "default":
        return None
    devices = keras.distribution.list_devices()  # every process's, after initialize
    return JaxStrategy(
        keras.distribution.DataParallel(devices=devices),
        devices,
        jax.process_index(),
        jax.process_count(),
    )


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
        "strategy": "none"
        if strategy is None
        else type(
            strategy.distribution if isinstance(strategy, JaxStrategy) else strategy
        ).__name__,
        "git_commit": git_commit(),
        "dataset_hash": info["input_hash"],
        "table_sha256": info["table_sha256"],
        "dataset": info["record"],
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        record["tensorflow"] = tf.__version__
        record["devices"] = [d.name for d in tf.config.list_logical_devices()]
    elif keras.backend.backend() == "jax":
        import jax

        record["jax"] = jax.__version__
        record["devices"] = [str(d) for d in jax.devices()]
        record["processes"] = jax.process_count()
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


def _first_kernel_energy(model: Any) -> float | None:
    """:func:`magnb.explain.kernel_smoothness` of the model's first conv layer (None: none, or
    a kernel too small to have a Laplacian)."""
    import keras

    from magnb.explain import kernel_smoothness
    from magnb.layers import PeriodicConv3D

    for layer in model.layers:
        if isinstance(layer, PeriodicConv3D | keras.layers.Conv3D):
            value = kernel_smoothness(np.asarray(layer.kernel))
            return None if math.isnan(value) else value
    return None


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
    run_id = config.run_id
    run_dir = config.runs_dir / run_id
    record = run_dir / "environment.json"
    finished = (run_dir / "metrics.json").is_file()
    if not (finished or (run_dir / "backup").is_dir()) or not record.is_file():
        return None
    env = json.loads(record.read_text())
    trained = env.get("dataset_hash")
    current = h5_attr(config.dataset_dir / "dataset.h5", "input_hash")
    if not trained or not current or trained == current:
        return None
    # the run id covers the dataset's identity, so this takes a folder made by hand (a copy) or
    # a dataset rebuilt between the id and this check
    how = "was trained" if finished else "was interrupted while training"
    what = describe_dataset_change(
        env.get("dataset") or {"input_hash": trained}, dataset_record(config.dataset_dir)
    )
    return (
        f"run folder {run_id} holds a run that {how} on dataset {trained[:12]}, but the "
        f"dataset in {config.dataset_dir} is {current[:12]}: {what}"
    )


def train(config: TrainConfig, progress: bool = True) -> RunResult:
    """Train and evaluate one run. See the module docstring for what it leaves on disk.

    One writer per run folder (a lock); a disk that fills up or fails stops it with a
    MagnbError naming the file, and running it again finishes the run as if never stopped.
    """
    run_dir = config.runs_dir / config.run_id  # read once: the id reads the dataset's identity
    with stage_lock(run_dir, "train"), user_os_errors("cannot write the run", run_dir):
        remove_temporaries(run_dir)
        return _train(config, progress, run_dir)


def _train(config: TrainConfig, progress: bool, run_dir: Path) -> RunResult:
    metrics_path = run_dir / "metrics.json"
    # a run of other data is neither handed back as this dataset's nor resumed on it
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
        for name in ("metrics.json", "history.csv", "model.keras"):  # metrics.json first
            remove(run_dir / name)
        # from the start: an interrupted run's backup is not resumed either
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
            batch_size=options.pop("batch_size", global_batch),
            workers=config.workers,
            use_multiprocessing=False,
            **options,
        )

    # on JAX every batch fit sees must split evenly over the devices (and the processes)
    even: dict[str, Any] = {}
    if isinstance(strategy, JaxStrategy):
        local_batch = global_batch // strategy.process_count
        even = {"multiple_of": replicas // strategy.process_count, "batch_size": local_batch}
        if strategy.process_count > 1:
            even["shard"] = (strategy.process_index, strategy.process_count)
    train_data = loader(
        "train",
        shuffle=True,
        augment=config.augment,
        seed=config.seed,
        symmetry=config.augment_symmetry,
        **even,
    )
    val_data = loader("val", shuffle=False, **even) if info["sizes"]["val"] else None
    classification = is_classification(config.label)
    n_classes = len(LABEL_CLASSES[config.label]) if classification else 1

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = build_model(config, info["shape"], n_classes, info["periodic_axes"])
        if classification:
            loss = keras.losses.SparseCategoricalCrossentropy()
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        else:
            loss = keras.losses.MeanSquaredError()
            metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
        model.compile(optimizer=_optimizer(config, len(train_data)), loss=loss, metrics=metrics)

    from magnb.callbacks import RunFiles, save_model

    monitor = "val_loss" if val_data is not None else "loss"
    stateful: list[Any] = []  # callbacks whose counters a resumed run must get back
    if config.early_stopping:
        stateful.append(keras.callbacks.EarlyStopping(monitor, patience=config.early_stopping))
    if config.lr_schedule == "plateau":
        stateful.append(keras.callbacks.ReduceLROnPlateau(monitor, factor=0.5, patience=3))
    run_files = RunFiles(run_dir, monitor, train_data, replay=stateful)
    callbacks: list[Any] = [
        # model.keras and history.csv for an epoch are on disk before its backup: a run killed
        # between the two does that epoch again, and its row is written once
        run_files,
        # double_checkpoint: a job killed while the backup is being written still resumes
        # (from the previous backup) instead of failing on a half-written file
        # the backup is kept until metrics.json is written: a run killed after its last epoch
        # resumes there instead of training again
        keras.callbacks.BackupAndRestore(
            str(run_dir / "backup"), delete_checkpoint=False, double_checkpoint=True
        ),
        keras.callbacks.TerminateOnNaN(),
        *stateful,
    ]

    class_weight = (
        _class_weights(train_data.labels)
        if (classification and config.class_weight == "balanced")
        else None
    )
    start = time.perf_counter()
    # keras.distribution is read when fit runs (tf.distribute when the model is built)
    fit_scope = strategy.scope() if isinstance(strategy, JaxStrategy) else contextlib.nullcontext()
    with fit_scope:
        fit = model.fit(
            train_data,
            validation_data=val_data,
            epochs=config.epochs,
            class_weight=class_weight,
            callbacks=callbacks,
            # the loader shuffles, seeded by (seed, epoch); Keras' own batch shuffle draws from
            # Python's global random state, which a resumed run cannot get back
            shuffle=False,
            verbose=2 if progress else 0,
        )
    seconds = time.perf_counter() - start
    done_before = _resumed_from(run_files.resumed_from_epoch, run_dir)
    losses = fit.history.get("loss", [])
    _check_losses(losses, done_before, run_dir)
    if not (run_dir / "model.keras").exists():
        save_model(model, run_dir / "model.keras")

    best = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    test_data = loader("test", shuffle=False)
    predictions = best.predict(test_data, verbose=0)
    results = evaluate_all(
        config.dataset_dir,
        config.label,
        info["threshold"],
        _scored_output(predictions, n_classes, classification),
        split="test",
    )
    metrics = _metrics_record(
        config,
        run_dir,
        classification=classification,
        resumed_from=done_before,
        fit_epochs=len(losses),
        replicas=replicas,
        global_batch=global_batch,
        seconds=seconds,
        n_train=len(train_data.table),
        sizes=info["sizes"],
        kernel_energy=_first_kernel_energy(best),
        results=results,
    )
    with atomic_write(metrics_path, "w") as fh:
        json.dump(metrics, fh, indent=2)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return RunResult(run_dir, metrics, read_history(run_dir), resumed_from_epoch=done_before)


# --------------------------------------------------------------------------------------------
# what a run decides after its fit (pure: tests/test_kill_train.py checks each by value, and
# `make mutants` mutates them; _train only calls them)


def _resumed_from(started_at: int | None, run_dir: Path) -> int:
    """The epoch this fit started at: ``RunFiles.resumed_from_epoch``, or, when no epoch began
    (None: the backup held every epoch, so fit had none left to run), the number of epochs in
    the run folder's history.csv."""
    return len(read_history(run_dir)) if started_at is None else started_at


def _check_losses(losses: list[float], resumed_from: int, run_dir: Path) -> None:
    """MagnbError when a training loss of this fit (``losses``, one per epoch from
    ``resumed_from``) is NaN or infinite, naming the last epoch (counted from 1) and the kept
    checkpoint."""
    if any(not math.isfinite(v) for v in losses):
        raise MagnbError(
            f"the training loss became NaN or infinite in epoch {resumed_from + len(losses)}; "
            "training stopped. The last good checkpoint is kept"
            + (f" at {run_dir / 'model.keras'}" if (run_dir / "model.keras").exists() else ""),
            run_dir,
        )


def _scored_output(predictions: np.ndarray, n_classes: int, classification: bool) -> np.ndarray:
    """What the test split is scored on, from ``predict``'s (samples, outputs) matrix: every
    class's probability for more than two classes, class 1's probability for two (the one
    ROC-AUC ranks by), the single column of a regression."""
    return predictions if n_classes > 2 else predictions[:, 1 if classification else 0]


def _metrics_record(
    config: TrainConfig,
    run_dir: Path,
    *,
    classification: bool,
    resumed_from: int,
    fit_epochs: int,
    replicas: int,
    global_batch: int,
    seconds: float,
    n_train: int,
    sizes: dict[str, int],
    kernel_energy: float | None,
    results: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json's record of a finished run: ``fit_epochs`` epochs of ``n_train`` samples
    trained in ``seconds`` by this fit (from epoch ``resumed_from``), the epochs in history.csv,
    the sha256 of model.keras and history.csv as they are now, and the test ``results``
    (:func:`magnb.baselines.evaluate_all`) with their small-sample warnings."""
    samples_seen = n_train * max(1, fit_epochs)
    return {
        "run_id": run_dir.name,
        "label": config.label,
        "task": "classification" if classification else "regression",
        "model": config.model,
        "epochs_trained": len(read_history(run_dir)),
        "resumed_from_epoch": resumed_from,
        # what this record describes, byte for byte (metrics.json is written last)
        "files": {name: sha256_file(run_dir / name) for name in ("model.keras", "history.csv")},
        "replicas": replicas,
        "global_batch": global_batch,
        "train_seconds": seconds,
        "train_samples_per_second": samples_seen / seconds if seconds > 0 else None,
        "sizes": sizes,
        # how rough the first-layer filters are (magnb.explain.kernel_smoothness: ~1 white
        # noise, 0 constant); null for kernels under 3 voxels a side
        "kernel_laplacian_energy": kernel_energy,
        "test": results,
        "warnings": sorted({e["small_sample_warning"] for e in results.values()} - {None}),
    }


# --------------------------------------------------------------------------------------------
# k-fold cross-validation

#: the metrics a cross-validation summarizes over the folds, per task
CV_METRICS = {
    "classification": ("accuracy", "balanced_accuracy", "roc_auc"),
    "regression": ("mae", "rmse", "r2"),
}


@dataclass
class CVResult:
    run_dir: Path
    metrics: dict[str, Any]

    def summary(self) -> str:
        return format_cv_table(self.metrics)


def fold_rows(dataset_dir: Path) -> dict[int, np.ndarray]:
    """Fold index -> positions of its rows among the dataset's usable rows (status ok, with a
    sample: what ``DensityDataset(split=None, rows=...)`` indexes); MagnbError when the dataset
    has no k-fold columns."""
    from magnb.dataset import read_table

    table = read_table(dataset_dir)
    table = table[(table["status"] == "ok") & (table["sample"] >= 0)]
    folds = table["fold"].to_numpy() if "fold" in table else np.full(len(table), -1)
    present = sorted(int(f) for f in np.unique(folds) if f >= 0)
    if len(present) < 2:
        raise MagnbError(
            "the dataset has no k-fold columns (fold = -1 everywhere): rebuild it with "
            "kfold: 5 (or any k >= 2 up to the number of formulas) in the scrape config",
            dataset_dir / "table.parquet",
        )
    return {f: np.flatnonzero(folds == f) for f in present}


def cross_validate(config: TrainConfig, progress: bool = True) -> CVResult:
    """Train and evaluate ``config`` once per fold of the dataset's ``fold`` column (each fold is
    the test set once, the other folds train; the train/val/test split is ignored), with the
    majority, physics and descriptor baselines on the same folds, and summarize each method's
    metrics over the folds as mean, standard deviation (n - 1), min and max.

    Each fold trains for ``config.epochs`` epochs and is scored with its last weights (no
    validation set, no checkpoint, no resume). The stored normalization of the dataset was fitted
    on its ``train`` split, which overlaps every fold's test rows a little. Writes
    ``<runs_dir>/<run_id>-cv/cv.json`` (and ``config.yaml``) and returns it.
    """
    import keras
    import yaml

    from magnb.baselines import evaluate_all, task_for
    from magnb.dataset import LABEL_CLASSES, DensityDataset
    from magnb.model import build_model, is_classification

    info = preflight(config)
    folds = fold_rows(config.dataset_dir)
    run_dir = config.runs_dir / f"{config.run_id}-cv"
    classification = is_classification(config.label)
    n_classes = len(LABEL_CLASSES[config.label]) if classification else 1
    per_fold: list[dict[str, Any]] = []
    for fold, test_rows in folds.items():
        train_rows = np.concatenate([r for f, r in folds.items() if f != fold])
        keras.utils.set_random_seed(config.seed + fold)
        options = {"label": config.label, "batch_size": config.batch_size, "split": None}
        train_data = DensityDataset(
            config.dataset_dir,
            rows=train_rows,
            shuffle=True,
            augment=config.augment,
            seed=config.seed,
            **options,
        )
        test_data = DensityDataset(config.dataset_dir, rows=test_rows, shuffle=False, **options)
        model = build_model(config, info["shape"], n_classes, info["periodic_axes"])
        if classification:
            loss: Any = keras.losses.SparseCategoricalCrossentropy()
        else:
            loss = keras.losses.MeanSquaredError()
        model.compile(optimizer=_optimizer(config, len(train_data)), loss=loss)
        class_weight = (
            _class_weights(train_data.labels)
            if (classification and config.class_weight == "balanced")
            else None
        )
        if progress:
            print(f"fold {fold}: {len(train_data.table)} training, {len(test_data.table)} test")
        model.fit(
            train_data,
            epochs=config.epochs,
            class_weight=class_weight,
            verbose=2 if progress else 0,
        )
        predictions = model.predict(test_data, verbose=0)
        results = evaluate_all(
            config.dataset_dir,
            config.label,
            info["threshold"],
            _scored_output(predictions, n_classes, classification),
            split=f"fold {fold}",
            rows=(train_rows, test_rows),
        )
        per_fold.append({"fold": fold, "test": results})
    task = task_for(config.label)
    summary: dict[str, Any] = {}
    for method in per_fold[0]["test"]:
        entry: dict[str, Any] = {"folds": len(per_fold)}
        entry["n"] = [f["test"][method]["n"] for f in per_fold]
        for metric in CV_METRICS[task]:
            values = [f["test"][method].get(metric) for f in per_fold]
            finite = [float(v) for v in values if v is not None and math.isfinite(v)]
            entry[metric] = {
                "per_fold": values,
                "mean": float(np.mean(finite)) if finite else None,
                "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                "min": min(finite) if finite else None,
                "max": max(finite) if finite else None,
            }
        summary[method] = entry
    warnings = [
        f"fold {f['fold']}: {w}"
        for f in per_fold
        for w in sorted({e["small_sample_warning"] for e in f["test"].values()} - {None})
    ]
    metrics = {
        "run_id": run_dir.name,
        "label": config.label,
        "task": task,
        "model": config.model,
        "folds": len(per_fold),
        "summary": summary,
        "per_fold": per_fold,
        "warnings": warnings,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(run_dir / "config.yaml", "w") as fh:
        yaml.safe_dump(to_mapping(config), fh, sort_keys=False)
    with atomic_write(run_dir / "cv.json", "w") as fh:
        json.dump(metrics, fh, indent=2)
    return CVResult(run_dir, metrics)


def format_cv_table(metrics: dict[str, Any]) -> str:
    """A markdown table of :func:`cross_validate`'s summary: one row per method, each metric as
    ``mean +/- sd [min, max]`` over the folds, then the test samples per fold and the warnings."""
    keys = CV_METRICS[metrics["task"]]
    names = {"balanced_accuracy": "balanced accuracy", "roc_auc": "ROC-AUC", "r2": "R^2"}
    head = ["method", "folds", *(names.get(k, k.replace("_", " ")) for k in keys)]
    lines = [
        f"{metrics['run_id']}: {metrics['label']}, {metrics['folds']}-fold cross-validation "
        "(each fold the test set once)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * len(head)) + "|",
    ]

    def cell(stats: dict[str, Any]) -> str:
        if stats["mean"] is None:
            return "n/a"
        sd = "n/a" if stats["std"] is None else f"{stats['std']:.3f}"
        return f"{stats['mean']:.3f} +/- {sd} [{stats['min']:.2f}, {stats['max']:.2f}]"

    first = ["model", "majority", "physics", "descriptor"]
    summary = metrics["summary"]
    order = [m for m in first if m in summary] + [m for m in summary if m not in first]
    for method in order:
        entry = summary[method]
        lines.append(
            "| " + " | ".join([method, str(entry["folds"]), *(cell(entry[k]) for k in keys)]) + " |"
        )
    n = next(iter(summary.values()))["n"]
    lines.append(
        f"\n[mean +/- standard deviation over the folds, [min, max]; test samples per "
        f"fold: {', '.join(map(str, n))}]"
    )
    lines += [f"warning: {w}" for w in metrics["warnings"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the run registry


def list_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One row per finished run: what the model is, its config fields and the test metrics of
    model and baselines.

    The model's columns (``layers``, ``filters``, ``kernel_size``, ``pool``, ``dense``) describe
    the network that was trained, read from the saved ``model.keras`` (its layer list, without
    loading weights), so that ``seed_base`` shows its 3 filters of 40^3 rather than the config's
    unused defaults. A run of a sweep carries the sweep's name and its point index (from the
    ``sweep.json`` that ``magnb.slurm.prepare`` writes). Rows are sorted as a person reads them:
    runs outside sweeps by the time they finished, then each sweep (by name) point by point.
    """
    import yaml

    runs_dir = Path(runs_dir)
    rows = []
    for metrics_path in runs_dir.glob("*/metrics.json"):
        run_dir = metrics_path.parent
        m = json.loads(metrics_path.read_text())
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        sweep_path = run_dir / "sweep.json"
        point = json.loads(sweep_path.read_text()) if sweep_path.is_file() else {}
        row: dict[str, Any] = {
            "sweep": point.get("sweep"),
            "point": point.get("point"),
            "run_id": run_dir.name,
            "finished": _mtime(metrics_path),
            "label": cfg.get("label"),
            "model": cfg.get("model"),
            **model_layers(run_dir, cfg),
        }
        for key in ("learning_rate", "batch_size", "epochs", "seed", "strategy"):
            row[key] = cfg.get(key)
        row["kernel_smoothness"] = cfg.get("kernel_smoothness", 0.0)
        row["epochs_trained"] = m.get("epochs_trained")
        row["kernel_laplacian_energy"] = m.get("kernel_laplacian_energy")
        row["replicas"] = m.get("replicas")
        main = "balanced_accuracy" if m.get("task") == "classification" else "mae"
        for method, values in m.get("test", {}).items():
            if isinstance(values, dict) and main in values:
                row[f"{method}_{main}"] = values[main]
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    in_sweep = table["sweep"].notna()
    table["_group"] = in_sweep.astype(int)
    table["_sweep"] = table["sweep"].fillna("")
    table["_point"] = table["point"].fillna(-1)
    table = table.sort_values(["_group", "_sweep", "_point", "finished", "run_id"])
    table = table.drop(columns=["_group", "_sweep", "_point"]).reset_index(drop=True)
    if not in_sweep.any():
        table = table.drop(columns=["sweep", "point"])
    else:
        table["point"] = table["point"].astype("Int64")
    return table


def model_layers(run_dir: Path, config: dict[str, Any]) -> dict[str, str]:
    """The trained network of a run, from the layer list in its ``model.keras`` (a zip whose
    ``config.json`` Keras writes; read without Keras) or, without one, from
    :func:`magnb.model.build_model` for the run's config: ``layers`` (e.g. ``conv 3x40^3,
    pool 2, flatten, dense 2``) and the conv blocks' ``filters``, ``kernel_size``, ``pool`` and
    the hidden ``dense`` widths as JSON lists."""
    import zipfile

    path = run_dir / "model.keras"
    layers: list[dict[str, Any]] = []
    try:
        with zipfile.ZipFile(path) as archive:
            layers = json.loads(archive.read("config.json"))["config"]["layers"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        layers = []
    if not layers:  # no saved model to read: the layers the builder makes for this config
        from magnb.config import from_mapping
        from magnb.dataset import LABEL_CLASSES
        from magnb.model import _blocks, build_model, is_classification

        names = set(TrainConfig.__dataclass_fields__)
        train_config = from_mapping(
            TrainConfig, {k: v for k, v in config.items() if k in names}, str(path)
        )
        blocks = _blocks(train_config)
        grid = max(kernel for _, kernel, _ in blocks)  # a grid every block fits
        for _, _, pool in blocks:
            grid *= pool
        label = train_config.label
        classes = len(LABEL_CLASSES[label]) if is_classification(label) else 1
        channels = len(train_config.channels or ()) or 2
        model = build_model(train_config, (grid, grid, grid, channels), classes)
        layers = json.loads(model.to_json())["config"]["layers"]
    parts: list[str] = []
    filters: list[int] = []
    kernels: list[int | list[int]] = []
    pools: list[int | list[int]] = []
    dense: list[int] = []
    dense_layers = [layer for layer in layers if layer["class_name"] == "Dense"]
    for layer in layers:
        kind, c = layer["class_name"], layer["config"]
        if kind in ("PeriodicConv3D", "Conv3D"):
            k = c["kernel_size"]
            k = k[0] if len(set(k)) == 1 else k
            filters.append(c["filters"])
            kernels.append(k)
            pools.append(1)
            parts.append(f"conv {c['filters']}x{k}^3" if isinstance(k, int) else f"conv {k}")
        elif kind == "MaxPooling3D":
            p = c["pool_size"]
            p = p[0] if len(set(p)) == 1 else p
            if pools:
                pools[-1] = p
            parts.append(f"pool {p}")
        elif kind == "Flatten":
            parts.append("flatten")
        elif kind == "GlobalAveragePooling3D":
            parts.append("global average")
        elif kind == "Dropout":
            parts.append(f"dropout {c['rate']}")
        elif kind == "Dense":
            if layer is not dense_layers[-1]:
                dense.append(c["units"])
            parts.append(f"dense {c['units']}")
    return {
        "layers": ", ".join(parts),
        "filters": json.dumps(filters),
        "kernel_size": json.dumps(kernels),
        "pool": json.dumps(pools),
        "dense": json.dumps(dense),
    }


def _mtime(path: Path) -> str:
    return pd.Timestamp(path.stat().st_mtime, unit="s").isoformat(timespec="seconds")
