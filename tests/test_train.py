"""Stage 04: training from a config, checks before training, saved models, resumption, papermill
against the CLI, and MirroredStrategy on two logical CPU devices."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from magnb.config import TrainConfig, from_mapping, load_train_config
from magnb.dataset import replace_table
from magnb.errors import MagnbError
from magnb.train import list_runs, preflight, train
from tests.conftest import REPO_ROOT, SMALL_MODEL, build_demo_data


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """A small demo dataset: 12 compounds x FM/AFM, 16^3 x 2 samples (m+, m-)."""
    return build_demo_data(tmp_path_factory.mktemp("demo"), 12)


def write_config(path: Path, **settings) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def small(dataset: Path, runs: Path, **kw) -> TrainConfig:
    return from_mapping(
        TrainConfig, {"dataset_dir": str(dataset), "runs_dir": str(runs), **SMALL_MODEL, **kw}
    )


def test_bad_configs_fail_before_training(demo_dataset, tmp_path):
    with pytest.raises(MagnbError, match=r"bad\.yaml.*unknown key\(s\) epoch\b"):
        load_train_config(write_config(tmp_path / "bad.yaml", epoch=3))
    with pytest.raises(MagnbError, match="learning_rate = 'fast' must be a number"):
        load_train_config(write_config(tmp_path / "t.yaml", learning_rate="fast"))
    with pytest.raises(MagnbError, match="label = 'spin' must be one of"):
        load_train_config(write_config(tmp_path / "l.yaml", label="spin"))
    runs = tmp_path / "runs"
    with pytest.raises(MagnbError, match="channels"):
        preflight(small(demo_dataset, runs, channels=["m", "total"]))
    with pytest.raises(MagnbError, match="kernel 20 is larger than the grid"):
        preflight(small(demo_dataset, runs, kernel_size=[20]))
    with pytest.raises(MagnbError, match="pool 3 does not divide"):
        preflight(small(demo_dataset, runs, pool=[3]))
    assert not runs.exists(), "nothing may be written before the checks pass"


def test_one_class_and_nan_data_fail_before_training(demo_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_dataset, data)
    table_path = data / "table.parquet"
    import pandas as pd

    table = pd.read_parquet(table_path)
    table.loc[table["split"] == "train", "order"] = "FM"
    replace_table(data, table)
    with pytest.raises(MagnbError, match="one class only"):
        preflight(small(data, tmp_path / "runs"))
    shutil.copyfile(demo_dataset / "table.parquet", table_path)
    with h5py.File(data / "dataset.h5", "r+") as f:
        f["samples"][3, 0, 0, 0, 0] = np.nan
    with pytest.raises(MagnbError, match="sample 3 contains NaN"):
        preflight(small(data, tmp_path / "runs"))


@pytest.mark.slow
def test_train_writes_a_complete_run_and_the_model_reloads(demo_dataset, tmp_path):
    import keras

    from magnb.dataset import DensityDataset

    config = small(demo_dataset, tmp_path / "runs")
    result = train(config, progress=False)
    run = result.run_dir
    assert run.name == config.run_id
    for name in ("config.yaml", "model.keras", "history.csv", "metrics.json", "environment.json"):
        assert (run / name).is_file(), name
    assert not (run / "backup").exists()
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["test"]) >= {"model", "majority", "physics", "descriptor"}
    assert m["epochs_trained"] == 2 and len(result.history) == 2
    # a dozen test samples, three of them FM: every metric has its interval, and the run warns
    for entry in m["test"].values():
        assert entry["ci95"]["accuracy"] and entry["ci95"]["balanced_accuracy"]
    assert len(m["warnings"]) == 1 and m["warnings"][0].startswith("small test split: n = ")
    assert "warning: small test split" in result.summary()
    env = json.loads((run / "environment.json").read_text())
    assert env["backend"] == "tensorflow" and env["dataset_hash"]
    assert load_train_config(run / "config.yaml") == config
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    # the demo's slabs are cropped along c: the convolutions wrap along a and b only
    with h5py.File(demo_dataset / "dataset.h5") as f:
        assert json.loads(f.attrs["periodic_axes"]) == [True, True, False]
    convs = [layer for layer in model.layers if type(layer).__name__ == "PeriodicConv3D"]
    assert convs and all(c.periodic == (True, True, False) for c in convs)
    # metrics.json describes this model.keras, byte for byte ...
    assert (
        m["files"]["model.keras"] == hashlib.sha256((run / "model.keras").read_bytes()).hexdigest()
    )
    # ... and its scores are this model's on the test split: predicted here from the saved file,
    # scored by hand against the table's own order column (not the loader's labels)
    test = DensityDataset(demo_dataset, split="test", label="order", shuffle=False, batch_size=64)
    assert len(test) == 1
    x, _ = test[0]
    prob_fm = model.predict(x, verbose=0)[:, 1]
    truth = (test.table["order"] == "FM").to_numpy()
    assert len(truth) == len(prob_fm) == m["test"]["model"]["n"]
    right = (prob_fm > 0.5) == truth
    assert m["test"]["model"]["accuracy"] == pytest.approx(right.mean())
    recalls = [right[truth].mean(), right[~truth].mean()]
    assert m["test"]["model"]["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    # ROC-AUC as the share of (FM, AFM) pairs ranked right (ties half): a two-epoch model may
    # sit at chance, where accuracies cannot tell class 1's column from class 0's, but this can
    pairs = prob_fm[truth][:, None] - prob_fm[~truth][None, :]
    auc = (pairs > 0).mean() + 0.5 * (pairs == 0).mean()
    assert auc != pytest.approx(0.5), "the scores must rank the classes to test the column"
    assert m["test"]["model"]["roc_auc"] == pytest.approx(auc)
    # a finished run is not trained twice; the registry lists it
    assert train(config, progress=False).already_done
    runs = list_runs(tmp_path / "runs")
    assert list(runs["run_id"]) == [config.run_id]


def test_a_rebuilt_dataset_gets_its_own_run_folder(demo_dataset, tmp_path):
    """The run id covers the dataset's identity: after the dataset is rebuilt differently, the
    same config trains into a new folder, and the old run's metrics never come back as the new
    dataset's. A folder of this id that holds a run of other data (a hand copy) is refused with
    what changed."""
    data = tmp_path / "data"
    shutil.copytree(demo_dataset, data)
    config = small(data, tmp_path / "runs", epochs=1)
    first = train(config, progress=False)
    assert train(config, progress=False).already_done
    first_metrics = (first.run_dir / "metrics.json").read_text()
    _rescrape_with_other_splits(data)
    assert config.run_id != first.run_dir.name
    shutil.copytree(first.run_dir, tmp_path / "runs" / config.run_id)
    with pytest.raises(MagnbError, match="was trained on dataset") as err:
        train(config, progress=False)
    assert "scrape settings changed: seed 0 -> 1" in str(err.value), err.value
    assert "metrics.json" in str(err.value) and "force" in str(err.value)
    shutil.rmtree(tmp_path / "runs" / config.run_id)
    again = train(config, progress=False)
    assert not again.already_done and again.run_dir != first.run_dir
    assert again.metrics["run_id"] == again.run_dir.name == config.run_id
    env = json.loads((again.run_dir / "environment.json").read_text())
    with h5py.File(data / "dataset.h5") as f:
        assert env["dataset_hash"] == env["dataset"]["input_hash"] == str(f.attrs["input_hash"])
    assert (first.run_dir / "metrics.json").read_text() == first_metrics
    assert train(config, progress=False).already_done


@pytest.mark.slow
def test_nan_loss_stops_with_a_message(demo_dataset, tmp_path):
    config = small(demo_dataset, tmp_path / "runs", optimizer="sgd", learning_rate=1e30, epochs=3)
    with pytest.raises(MagnbError, match="NaN or infinite"):
        train(config, progress=False)
    assert not (tmp_path / "runs" / config.run_id / "metrics.json").exists()


def _run(cmd: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(cmd, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, **kw)


def _comparable(metrics: dict) -> dict:
    # durations, and the bytes of model.keras (its zip records when it was saved)
    drop = {"train_seconds", "train_samples_per_second", "files"}
    return {k: v for k, v in metrics.items() if k not in drop}


@pytest.mark.slow
def test_papermill_and_cli_train_the_same(demo_dataset, tmp_path):
    settings = {"dataset_dir": str(demo_dataset), **SMALL_MODEL}
    cli_cfg = write_config(tmp_path / "cli.yaml", runs_dir=str(tmp_path / "cli_runs"), **settings)
    nb_cfg = write_config(tmp_path / "nb.yaml", runs_dir=str(tmp_path / "nb_runs"), **settings)
    done = _run([sys.executable, "-m", "magnb.cli", "train", str(cli_cfg)], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "04_train.ipynb"
    done = _run(
        [sys.executable, "-m", "papermill", "notebooks/04_train.ipynb", str(out), "-f", str(nb_cfg),
         "--cwd", str(REPO_ROOT / "notebooks")],
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = load_train_config(cli_cfg).run_id
    a = json.loads((tmp_path / "cli_runs" / run_id / "metrics.json").read_text())
    b = json.loads((tmp_path / "nb_runs" / run_id / "metrics.json").read_text())
    assert _comparable(a) == _comparable(b)


@pytest.mark.slow
def test_unknown_papermill_parameter_is_an_error(demo_dataset, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", dataset_dir=str(demo_dataset), epochz=3)
    done = _run(
        [sys.executable, "-m", "papermill", "notebooks/04_train.ipynb", str(tmp_path / "o.ipynb"),
         "-f", str(cfg), "--cwd", str(REPO_ROOT / "notebooks")],
        timeout=600,
    )  # fmt: skip
    assert done.returncode != 0
    assert "unknown key(s) epochz" in done.stderr + done.stdout


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_single_device(demo_dataset, tmp_path):
    code = (
        "import json, sys\n"
        "from magnb.config import load_train_config\n"
        "from magnb.train import train\n"
        "r = train(load_train_config(sys.argv[1]), progress=False)\n"
        "print(json.dumps({'replicas': r.metrics['replicas'], 'loss': r.history['loss'].tolist()}))\n"
    )
    results = {}
    for name, extra in (("single", {"strategy": "default"}),
                        ("mirrored", {"strategy": "mirrored", "cpu_replicas": 2})):  # fmt: skip
        cfg = write_config(
            tmp_path / f"{name}.yaml",
            dataset_dir=str(demo_dataset),
            runs_dir=str(tmp_path / name),
            **{
                **SMALL_MODEL,
                "batch_size": 4 if name == "single" else 2,
                "augment": False,
                "dropout": 0.0,
            },
            **extra,
        )
        done = _run([sys.executable, "-c", code, str(cfg)], timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["single"]["replicas"] == 1 and results["mirrored"]["replicas"] == 2
    # same global batch (4 = 2 x 2), same data order: the losses agree up to reduction order
    np.testing.assert_allclose(results["mirrored"]["loss"], results["single"]["loss"], rtol=2e-2)


def _rescrape_with_other_splits(data: Path) -> None:
    from magnb.dataset import ScrapeConfig, scrape

    with h5py.File(data / "dataset.h5") as f:
        settings = yaml.safe_load(f.attrs["config"])
    settings.update(data_dir=data, seed=settings["seed"] + 1, progress=False)
    scrape(ScrapeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}))


def _train_two_epochs_then_sigterm(data: Path, tmp_path: Path) -> tuple[list[str], Path]:
    """Start ``magnb train`` of a 40-epoch config on ``data`` and stop it with SIGTERM after
    two epochs; returns the command and the run folder."""
    cfg = write_config(
        tmp_path / "c.yaml",
        dataset_dir=str(data),
        runs_dir=str(tmp_path / "runs"),
        **{**SMALL_MODEL, "epochs": 40, "batch_size": 2},
    )
    run_dir = tmp_path / "runs" / load_train_config(cfg).run_id
    cmd = [sys.executable, "-m", "magnb.cli", "train", str(cfg)]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    history = run_dir / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline:
        if history.is_file() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return cmd, run_dir


@pytest.mark.slow
def test_an_interrupted_run_is_not_resumed_on_a_rebuilt_dataset(demo_dataset, tmp_path):
    """A rebuilt dataset has another identity, so the same command starts a fresh run in a new
    folder instead of resuming the old one's epochs, which stay where they were."""
    data = tmp_path / "data"
    shutil.copytree(demo_dataset, data)
    cmd, run_dir = _train_two_epochs_then_sigterm(data, tmp_path)
    assert (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
    _rescrape_with_other_splits(data)
    done = _run(cmd, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    new_dir = tmp_path / "runs" / load_train_config(tmp_path / "c.yaml").run_id
    assert new_dir != run_dir
    m = json.loads((new_dir / "metrics.json").read_text())
    assert m["resumed_from_epoch"] == 0 and m["epochs_trained"] == 40
    assert (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_sigterm_mid_training_then_rerun_resumes(demo_dataset, tmp_path):
    cmd, run_dir = _train_two_epochs_then_sigterm(demo_dataset, tmp_path)
    history = run_dir / "history.csv"
    epochs_before = len(history.read_text().splitlines()) - 1
    assert 2 <= epochs_before < 40, "the job must be stopped part-way"
    assert (run_dir / "backup").is_dir()
    assert not (run_dir / "metrics.json").exists()
    done = _run(cmd, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    # history.csv is written before Keras' backup of the same epoch: a SIGTERM between the two
    # resumes one epoch before the last row (and that epoch's row is replaced, not repeated)
    assert epochs_before - 1 <= m["resumed_from_epoch"] <= epochs_before
    assert m["resumed_from_epoch"] >= 1
    assert m["epochs_trained"] == 40
    import pandas as pd

    # every epoch's row exactly once, in order (a set would hide a redone epoch's second row)
    epochs = pd.read_csv(history)["epoch"]
    assert epochs.tolist() == list(range(40)), epochs.tolist()


class _FitReached(Exception):
    """Raised by the spy on keras.Model.fit once it has seen fit's arguments."""


def test_balanced_class_weights_reach_the_fit(demo_dataset, tmp_path, monkeypatch):
    """``class_weight: balanced`` gives Keras' fit n / (2 n_c) per class of the training rows
    (counted here from the table), and ``none`` gives it none. A spy on keras.Model.fit records
    the argument and stops the run there (what fit does with it is Keras' business)."""
    import keras
    import pandas as pd

    seen = []

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("class_weight"))
        raise _FitReached

    monkeypatch.setattr(keras.Model, "fit", spy)
    # the demo has an FM and an AFM run of every compound: skip two FM training rows so the
    # classes are uneven
    data = tmp_path / "data"
    shutil.copytree(demo_dataset, data)
    table = pd.read_parquet(data / "table.parquet")
    fm_train = table.index[(table["split"] == "train") & (table["order"] == "FM")]
    table.loc[fm_train[:2], "status"] = "skipped"
    replace_table(data, table)
    train_rows = table[(table["split"] == "train") & (table["status"] == "ok")]
    n_fm = int((train_rows["order"] == "FM").sum())
    n_afm = int((train_rows["order"] == "AFM").sum())
    assert n_fm != n_afm, "uneven classes, or balanced and none would look alike"
    n = n_fm + n_afm
    for runs, weighting in (("a", "balanced"), ("b", "none")):
        with pytest.raises(_FitReached):
            train(small(data, tmp_path / runs, class_weight=weighting), progress=False)
    assert seen[0] == pytest.approx({0: n / (2 * n_afm), 1: n / (2 * n_fm)})  # 0 = AFM
    assert seen[1] is None
