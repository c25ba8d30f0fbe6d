"""The JAX backend end to end: `magnb train` and the notebook under papermill, DataParallel on two
virtual CPU devices against one device, the same metrics as TensorFlow from the same weights,
resume after SIGTERM, and `magnb doctor`. Each run is a subprocess: the backend and XLA's device
count are fixed when Keras and JAX start."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax  # noqa: E402, F401 (a dev dependency: missing, this module fails, not skips)
import numpy as np
import pytest
import yaml

from magnb.config import load_train_config
from tests.conftest import REPO_ROOT, SMALL_MODEL, build_demo_data

TWO_DEVICES = "--xla_force_host_platform_device_count=2"


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory) -> Path:
    """12 compounds x FM/AFM, 16^3 x 2 samples: 12 train, 6 val, 6 test."""
    return build_demo_data(tmp_path_factory.mktemp("demo"), 12)


def run(cmd: list[str], backend: str, xla_flags: str = "", **kw) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "XLA_FLAGS": xla_flags,
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, **kw)


def write_config(path: Path, **settings) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def _comparable(metrics: dict) -> dict:
    return {
        k: v
        for k, v in metrics.items()
        if k not in {"train_seconds", "train_samples_per_second", "files"}  # "files": save times
    }


@pytest.mark.slow
def test_cli_and_papermill_train_on_jax_alike(demo_dataset, tmp_path):
    settings = {"dataset_dir": str(demo_dataset), **SMALL_MODEL}
    cli_cfg = write_config(tmp_path / "cli.yaml", runs_dir=str(tmp_path / "cli"), **settings)
    nb_cfg = write_config(tmp_path / "nb.yaml", runs_dir=str(tmp_path / "nb"), **settings)
    done = run([sys.executable, "-m", "magnb.cli", "train", str(cli_cfg)], "jax", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run(
        [sys.executable, "-m", "papermill", "notebooks/04_train.ipynb", str(tmp_path / "o.ipynb"),
         "-f", str(nb_cfg), "--cwd", str(REPO_ROOT / "notebooks")],
        "jax",
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = load_train_config(cli_cfg).run_id
    for runs in ("cli", "nb"):
        env = json.loads((tmp_path / runs / run_id / "environment.json").read_text())
        assert env["backend"] == "jax" and env["jax"] and env["strategy"] == "none", env
    a = json.loads((tmp_path / "cli" / run_id / "metrics.json").read_text())
    b = json.loads((tmp_path / "nb" / run_id / "metrics.json").read_text())
    assert a["epochs_trained"] == 2 and set(a["test"]) >= {"model", "majority", "physics"}
    assert _comparable(a) == _comparable(b)


TRAIN = (
    "import json, sys\n"
    "from keras.src.backend.jax import distribution_lib\n"
    "from magnb.config import load_train_config\n"
    "from magnb.train import train\n"
    "# a spy on Keras (not on magnb): over how many devices each batch fit is given is split\n"
    "shards, split = [], distribution_lib.distribute_data_input\n"
    "def spy(*args, **kwargs):\n"
    "    out = split(*args, **kwargs)\n"
    "    shards.append(len(out.sharding.device_set))\n"
    "    return out\n"
    "distribution_lib.distribute_data_input = spy\n"
    "r = train(load_train_config(sys.argv[1]), progress=False)\n"
    "env = json.loads((r.run_dir / 'environment.json').read_text())\n"
    "print(json.dumps({'replicas': r.metrics['replicas'], 'loss': r.history['loss'].tolist(),\n"
    "                  'strategy': env['strategy'], 'devices': env['devices'],\n"
    "                  'shards': sorted(set(shards))}))\n"
)


@pytest.mark.slow
def test_data_parallel_on_two_virtual_devices_matches_one_device(demo_dataset, tmp_path):
    results = {}
    for name, extra, flags in (
        ("single", {"strategy": "default", "batch_size": 4}, ""),
        ("parallel", {"strategy": "mirrored", "cpu_replicas": 2, "batch_size": 2}, TWO_DEVICES),
    ):
        cfg = write_config(
            tmp_path / f"{name}.yaml",
            dataset_dir=str(demo_dataset),
            runs_dir=str(tmp_path / name),
            **{**SMALL_MODEL, "augment": False, "dropout": 0.0, "epochs": 3, **extra},
        )
        done = run([sys.executable, "-c", TRAIN, str(cfg)], "jax", flags, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["single"]["replicas"] == 1 and results["single"]["strategy"] == "none"
    assert results["parallel"]["replicas"] == 2
    assert results["parallel"]["strategy"] == "DataParallel"
    assert len(results["parallel"]["devices"]) == 2
    assert results["single"]["shards"] == [] and results["parallel"]["shards"] == [2]
    # the same global batch (4 = 2 x 2) and data order: equal up to the order of the reductions
    np.testing.assert_allclose(results["parallel"]["loss"], results["single"]["loss"], rtol=1e-4)


@pytest.mark.slow
def test_two_devices_asked_for_but_one_there_says_how(demo_dataset, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        dataset_dir=str(demo_dataset),
        runs_dir=str(tmp_path / "runs"),
        **{**SMALL_MODEL, "strategy": "mirrored", "cpu_replicas": 2},
    )
    done = run([sys.executable, "-m", "magnb.cli", "train", str(cfg)], "jax", timeout=300)
    assert done.returncode != 0
    assert "xla_force_host_platform_device_count=2" in done.stderr, done.stderr[-2000:]


SAME_WEIGHTS = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "import keras, numpy as np\n"
    "from magnb.config import load_train_config\n"
    "from magnb.loader import DensityDataset\n"
    "from magnb.model import build_model\n"
    "cfg = load_train_config(sys.argv[1]); weights = Path(sys.argv[2])\n"
    "options = dict(label='order', batch_size=4)\n"
    "train = DensityDataset(cfg.dataset_dir, split='train', shuffle=True, seed=0, **options)\n"
    "test = DensityDataset(cfg.dataset_dir, split='test', shuffle=False, **options)\n"
    "model = build_model(cfg, train.sample_shape, 2)\n"
    "if weights.exists():\n"
    "    model.load_weights(weights)\n"
    "else:\n"
    "    model.save_weights(weights)\n"
    "model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(),\n"
    "              metrics=[keras.metrics.SparseCategoricalAccuracy(name='accuracy')])\n"
    "h = model.fit(train, epochs=3, shuffle=False, verbose=0).history  # our order, not Keras'\n"
    "p = model.predict(test, verbose=0)\n"
    "print(json.dumps({'loss': h['loss'], 'accuracy': h['accuracy'], 'p': p.tolist()}))\n"
)


@pytest.mark.slow
def test_jax_trains_to_tensorflows_metrics_from_the_same_weights(demo_dataset, tmp_path):
    """Initializers draw from each backend's own random generator, so the two backends start
    from the same weights only when given them: TensorFlow saves its initial weights, JAX loads
    them. Then every epoch's loss agrees within 1e-4 (relative) and the test predictions within
    1e-4 (the FFT convolution's float32 rounding differs between the backends). Plain SGD, not
    Adam: Adam's first steps are +-lr whatever a gradient's size, so rounding noise in a
    near-zero gradient becomes a full step (measured: 6e-4 apart after one epoch). tanh, not
    ReLU: in the vacuum the FFT convolution gives +-1e-9 where a direct one gives 0, and ReLU's
    gradient there is 1 or 0 by the sign of that noise, which differs between the backends
    (measured: the conv bias' first SGD step 6e-3 on TensorFlow, -5e-4 on JAX). No max-pool: the
    vacuum holds windows of tied maxima, and TensorFlow's MaxPooling3D gradient does not go where
    JAX's goes (measured with tanh and pool 2: the conv bias' first step 7e-3 against 1e-5;
    with pool 1, 3.2114e-4 against 3.2139e-4). ``fit(shuffle=False)``: the loader's seeded
    order, not the batch order Keras would draw on top of it, which differs between backends."""
    cfg = write_config(
        tmp_path / "c.yaml",
        dataset_dir=str(demo_dataset),
        runs_dir=str(tmp_path / "runs"),
        **{**SMALL_MODEL, "augment": False, "dropout": 0.0, "activation": "tanh", "pool": [1]},
    )
    weights = tmp_path / "initial.weights.h5"
    out = {}
    for backend in ("tensorflow", "jax"):
        done = run(
            [sys.executable, "-c", SAME_WEIGHTS, str(cfg), str(weights)], backend, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    tf, jx = out["tensorflow"], out["jax"]
    assert tf["loss"][0] != tf["loss"][-1], "it must have trained"
    np.testing.assert_allclose(jx["loss"], tf["loss"], rtol=1e-4)
    np.testing.assert_allclose(jx["accuracy"], tf["accuracy"], atol=1e-6)
    np.testing.assert_allclose(jx["p"], tf["p"], atol=1e-4)


@pytest.mark.slow
def test_sigterm_mid_training_on_jax_then_rerun_resumes(demo_dataset, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        dataset_dir=str(demo_dataset),
        runs_dir=str(tmp_path / "runs"),
        **{**SMALL_MODEL, "epochs": 30, "batch_size": 2},
    )
    run_dir = tmp_path / "runs" / load_train_config(cfg).run_id
    cmd = [sys.executable, "-m", "magnb.cli", "train", str(cfg)]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    history = run_dir / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline:
        if history.is_file() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    before = len(history.read_text().splitlines()) - 1
    assert 2 <= before < 30, "the job must be stopped part-way"
    assert (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
    done = run(cmd, "jax", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["resumed_from_epoch"] >= 2
    import pandas as pd

    epochs = set(pd.read_csv(history)["epoch"])
    # it went on from the backup to the last epoch, not from the start, and every epoch has its
    # row exactly once (model.keras and history.csv are written before the epoch's backup)
    assert sorted(pd.read_csv(history)["epoch"]) == list(range(30)), epochs
    assert m["epochs_trained"] == len(epochs)


@pytest.mark.slow
def test_doctor_on_jax():
    """`magnb doctor` with KERAS_BACKEND=jax names the backend and JAX and trains on the CPU (its
    first device; the second virtual one is the same CPU) as it does on TensorFlow."""
    done = run(
        [sys.executable, "-m", "magnb.cli", "doctor", "--steps", "2"],
        "jax",
        TWO_DEVICES,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "backend jax" in done.stdout and "jax         0." in done.stdout, done.stdout
    assert re.search(r"CPU:0 +ok: loss [\d.]+ -> [\d.]+, \d+ samples/s", done.stdout), done.stdout
    assert "doctor: all good" in done.stdout
