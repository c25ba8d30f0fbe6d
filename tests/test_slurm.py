"""Batch on Slurm: the job scripts in slurm/ run unmodified on a real single-node Slurm cluster
(tests/slurm_cluster.py: munged + slurmctld + slurmd in a temporary folder, 2 CPUs, a fake
2-device gpu gres), plus `magnb submit`, the multi-worker cluster spec and `magnb doctor`.

Jobs are submitted from a per-test folder with MAGNB_ROOT pointing at this checkout, so relative
paths in configs are resolved against the submit directory, as on a cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from magnb.collect import CollectConfig, collect
from magnb.config import load_train_config
from magnb.dataset import ScrapeConfig, scrape
from magnb.errors import MagnbError
from magnb.split import SplitConfig, split_all
from magnb.synth import SynthConfig, write_demo_tree
from tests import slurm_cluster as _cluster
from tests.conftest import REPO_ROOT

slurm_cluster = _cluster.slurm_cluster  # the session fixture (daemons started once)

SLURM = REPO_ROOT / "slurm"
JOB_SCRIPTS = sorted(SLURM.glob("*.sbatch"))
SHELL_FILES = (
    JOB_SCRIPTS
    + sorted(SLURM.glob("*.sh"))
    + [REPO_ROOT / ".ci" / "run", REPO_ROOT / ".ci" / "system-packages"]
)
TINY = {  # a model that trains in seconds on 2 cores
    "filters": [4],
    "kernel_size": [5],
    "pool": [2],
    "dense": [8],
    "batch_size": 2,
    "workers": 1,
    "dropout": 0.0,
    "augment": False,
}
#: the demo dataset's scrape settings (the same as tests/test_train.py's demo_dataset)
SCRAPE = {
    "grid": [16, 16, 16],
    "slab_window": 12.0,
    "normalization": "maxabs",
    "fractions": [0.5, 0.25, 0.25],
    "kfold": 0,
    "workers": 1,
}


# --------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """12 generated compounds x FM/AFM: ``data`` (16^3 x 2 samples, single-process build) and
    ``supercell`` (8 x 8 x 16 per cell tiled 2 x 2 x 1 to 16^3, like the seed's 120^3 input)."""
    root = tmp_path_factory.mktemp("slurm_data")
    write_demo_tree(root / "vasp", SynthConfig(n_compounds=12, grid=(16, 16, 64)), progress=False)
    data = root / "data"
    collect(CollectConfig(source=root / "vasp", data_dir=data, progress=False))
    split_all(SplitConfig(data_dir=data, progress=False, workers=1))
    settings = {**SCRAPE, "grid": tuple(SCRAPE["grid"]), "fractions": tuple(SCRAPE["fractions"])}
    scrape(ScrapeConfig(data_dir=data, progress=False, **settings))
    supercell = {**settings, "grid": (8, 8, 16), "supercell": (2, 2, 1)}
    scrape(ScrapeConfig(data_dir=data, out_dir=root / "supercell", progress=False, **supercell))
    return {"data": data, "supercell": root / "supercell"}


def write_yaml(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def sbatch(cluster, workdir: Path, script: str, *args: str, opts=(), wait=False, env=None) -> str:
    """Submit a job script from ``workdir`` as a user would; returns the job id."""
    cmd = ["sbatch", "--parsable", *(["--wait"] if wait else []), *opts, str(SLURM / script)]
    done = cluster.run(
        [*cmd, *args],
        check=False,
        cwd=workdir,
        env={"MAGNB_ROOT": str(REPO_ROOT), **(env or {})},
    )
    job = done.stdout.strip().split(";")[0].splitlines()[0] if done.stdout.strip() else ""
    if wait:
        assert done.returncode == 0, f"job {job} failed ({done.returncode}):\n" + job_output(
            workdir
        )
    else:
        assert done.returncode == 0 and job, done.stderr
    return job


def job_output(workdir: Path) -> str:
    """The Slurm output files of a test's jobs (the tail of each), for assertion messages."""
    parts = []
    for path in sorted(workdir.glob("slurm-*.out")) + sorted(workdir.rglob("slurm-*.log")):
        parts.append(f"==> {path.name}\n{path.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts) or "(no job output)"


def wait_ok(cluster, job: str, workdir: Path, timeout: float = 600) -> list[dict]:
    records = cluster.wait_done(job, timeout=timeout)
    states = {r["JobState"] for r in records}
    assert states == {"COMPLETED"}, f"job {job}: {states}\n" + job_output(workdir)
    return records


def run_folder(config: Path, workdir: Path) -> Path:
    cwd = Path.cwd()
    try:
        os.chdir(workdir)  # relative paths in the config are the submit directory's
        c = load_train_config(config)
        return (c.runs_dir / c.run_id).resolve()
    finally:
        os.chdir(cwd)


def magnb(*args: str, cwd: Path = REPO_ROOT, env=None, timeout=600):
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "magnb.cli", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------------------
# the scripts themselves


def test_every_script_parses():
    assert {p.name for p in JOB_SCRIPTS} >= {
        "train.sbatch", "train_2gpu_supercell.sbatch", "train_multinode.sbatch", "sweep.sbatch",
        "scrape_array.sbatch", "scrape_merge.sbatch", "smoke.sbatch",
    }  # fmt: skip
    for path in SHELL_FILES:
        done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{path.name}: {done.stderr}"


@pytest.mark.slurm
def test_shellcheck_passes_on_every_script():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck; .ci/run does)")
    done = subprocess.run(
        ["shellcheck", "-x", "--severity=style", *[str(p) for p in SHELL_FILES]],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_job_scripts_have_what_a_cluster_needs():
    for path in JOB_SCRIPTS:
        text = path.read_text()
        head = [line for line in text.splitlines() if line.startswith("#SBATCH")]
        options = " ".join(head)
        assert "set -euo pipefail" in text, path.name
        for option in ("--time=", "--cpus-per-task=", "--output=", "--mem="):
            assert option in options, f"{path.name} lacks {option}"
        for var in ("MAGNB_ROOT", "MAGNB_VENV", "MAGNB_CONDA_ENV"):
            assert var in text.split("#SBATCH")[0], f"{path.name}: {var} not documented on top"
        if path.name != "smoke.sbatch":  # a minute long: nothing to resume
            assert "--requeue" in options and "--signal=B:USR1@" in options, path.name
    gres = {
        p.name: re.search(r"^#SBATCH --gres=gpu:(\d)", p.read_text(), re.M) for p in JOB_SCRIPTS
    }
    assert gres["train.sbatch"][1] == "1" and gres["train_2gpu_supercell.sbatch"][1] == "2"
    # papermill names its kernel and the working directory explicitly
    common = (SLURM / "_common.sh").read_text() + (SLURM / "train_worker.sh").read_text()
    calls = re.findall(r'papermill "\$MAGNB_NOTEBOOKS/04_train.ipynb[^\n]*\n[^\n]*', common)
    assert len(calls) == 2
    for call in calls:
        assert '-k "$MAGNB_KERNEL"' in call and '--cwd "$PWD"' in call, call


# --------------------------------------------------------------------------------------------
# magnb submit, sweeps, prepare (no cluster needed)


def _dry_run(monkeypatch, capsys, *args: str, cwd: Path = REPO_ROOT) -> tuple[int, str, str]:
    """``magnb submit ARGS --dry-run`` in ``cwd``: status, the calls (after the line that says
    where the job scripts come from, checked here), stderr."""
    from magnb.cli import main

    monkeypatch.chdir(cwd)
    code = main(["submit", *args, "--dry-run"])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    if code == 0:
        assert lines[0].startswith("# job scripts from "), out
        lines = lines[1:]
    return code, "\n".join(lines), err


def copy_checkout(dest: Path) -> Path:
    """A second magnb checkout, as far as jobs need one: slurm/ and notebooks/."""
    for sub in ("slurm", "notebooks"):
        shutil.copytree(REPO_ROOT / sub, dest / sub)
    return dest


def test_submit_dry_run_prints_the_sbatch_calls(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MAGNB_ROOT", raising=False)

    def submit(*args: str, cwd: Path = REPO_ROOT) -> tuple[int, str, str]:
        return _dry_run(monkeypatch, capsys, *args, cwd=cwd)

    cfg = write_yaml(tmp_path / "c.yaml", {"name": "x", "strategy": "multiworker"})
    train = write_yaml(tmp_path / "t.yaml", {"name": "t"})
    # outside a checkout: the scripts installed with magnb (here the editable install's checkout),
    # with the variables that point the jobs at them
    exports = (
        f"export MAGNB_NOTEBOOKS={REPO_ROOT / 'notebooks'}\nexport MAGNB_SLURM_DIR={SLURM}\n"
        + (f"export MAGNB_VENV={sys.prefix}\n" if sys.prefix != sys.base_prefix else "")
    )
    for var in ("MAGNB_VENV", "MAGNB_CONDA_ENV"):
        monkeypatch.delenv(var, raising=False)
    cases = {
        (str(train),): f"sbatch {SLURM}/train.sbatch {train}",
        (str(train), "--gpus", "2", "--time", "1:00:00"): (
            f"sbatch --time=1:00:00 --gres=gpu:2 {SLURM}/train.sbatch {train}"
        ),
        (str(train), "--gpus", "0", "--partition", "cpu"): (
            f"sbatch --partition=cpu --gres=none {SLURM}/train.sbatch {train}"
        ),
        (str(cfg), "--nodes", "3", "--gpus", "4", "--sbatch=--account=abc -q long"): (
            f"sbatch --nodes=3 --gres=gpu:4 --account=abc -q long "
            f"{SLURM}/train_multinode.sbatch {cfg}"
        ),
        (str(cfg),): f"sbatch {SLURM}/train_multinode.sbatch {cfg}",  # its 2 nodes
    }
    for args, expected in cases.items():
        assert submit(*args, cwd=tmp_path)[:2] == (0, exports + expected)
    # inside the checkout, the scripts are named as a user types them
    assert submit("configs/default.yaml")[:2] == (
        0,
        "sbatch slurm/train.sbatch configs/default.yaml",
    )
    assert submit("configs/sweep_seed.yaml", "--array", "%4")[:2] == (
        0, "sbatch --array=0-11%4 slurm/sweep.sbatch configs/sweep_seed.yaml",
    )  # fmt: skip
    code, out, _ = submit("configs/scrape.yaml", "--data", "demo/data", "--shards", "8")
    assert code == 0 and out.splitlines() == [
        "jobid=$(sbatch --parsable --array=0-7 slurm/scrape_array.sbatch demo/data "
        "configs/scrape.yaml 8)",
        'sbatch --dependency=afterok:"$jobid" slurm/scrape_merge.sbatch demo/data 8',
    ]
    # mistakes are caught before anything is queued
    bad = write_yaml(tmp_path / "bad.yaml", {"epoch": 3})
    for args, message in (
        (("configs/supercell_2gpu.yaml", "--nodes", "2"), "set `strategy: multiworker`"),
        ((str(train), "--array", "0-3"), "--array is for sweeps"),
        (("configs/scrape.yaml", "--data", "d"), "needs --shards"),
        ((str(bad),), "unknown key(s) epoch"),
    ):
        code, _, err = submit(*args)
        assert code == 2 and message in err, (args, err)


def test_submit_picks_the_script_the_strategy_needs(tmp_path, monkeypatch, capsys):
    """`strategy: mirrored` gets the 2-GPU script (2 GPUs, 32G, 12 h), not train.sbatch's one
    GPU; a GPU count that leaves a strategy one device is said, not silently submitted."""
    monkeypatch.delenv("MAGNB_ROOT", raising=False)

    def submit(*args: str) -> tuple[int, str, str]:
        return _dry_run(monkeypatch, capsys, *args)

    assert submit("configs/supercell_2gpu.yaml") == (
        0, "sbatch slurm/train_2gpu_supercell.sbatch configs/supercell_2gpu.yaml", "",
    )  # fmt: skip
    head = (SLURM / "train_2gpu_supercell.sbatch").read_text()
    assert "--gres=gpu:2" in head and "--mem=32G" in head and "--time=12:00:00" in head
    assert submit("configs/supercell_2gpu.yaml", "--gpus", "2")[:2] == (
        0, "sbatch --gres=gpu:2 slurm/train_2gpu_supercell.sbatch configs/supercell_2gpu.yaml",
    )  # fmt: skip
    assert submit("configs/supercell_2gpu.yaml", "--gpus", "4")[:2] == (
        0, "sbatch --gres=gpu:4 slurm/train.sbatch configs/supercell_2gpu.yaml",
    )  # fmt: skip
    code, out, err = submit("configs/supercell_2gpu.yaml", "--gpus", "1")
    assert (code, out) == (0, "sbatch --gres=gpu:1 slurm/train.sbatch configs/supercell_2gpu.yaml")
    assert "warning: configs/supercell_2gpu.yaml says `strategy: mirrored`" in err
    assert "trains one replica" in err
    # a sweep of mirrored points: sweep.sbatch gives each one GPU unless told otherwise
    write_yaml(tmp_path / "s.yaml", {"base": str(REPO_ROOT / "configs/supercell_2gpu.yaml"),
                                     "sweep": {"seed": [0, 1]}})  # fmt: skip
    code, out, err = _dry_run(monkeypatch, capsys, str(tmp_path / "s.yaml"), cwd=tmp_path)
    assert code == 0 and "trains one replica" in err
    code, out, err = _dry_run(
        monkeypatch, capsys, str(tmp_path / "s.yaml"), "--gpus", "2", cwd=tmp_path
    )
    assert code == 0 and err == "" and "--gres=gpu:2" in out
    assert not submit("configs/default.yaml", "--gpus", "2")[2]  # auto: mirrored on 2 GPUs


def test_submit_takes_the_job_scripts_of_the_checkout_it_runs_in(tmp_path, monkeypatch, capsys):
    """Not those of the checkout the installed package lives in: MAGNB_ROOT, else the current
    directory; a MAGNB_ROOT that is no checkout is an error naming it."""
    other = copy_checkout(tmp_path / "other")
    cfg = write_yaml(tmp_path / "t.yaml", {"name": "t"})
    monkeypatch.delenv("MAGNB_ROOT", raising=False)
    monkeypatch.chdir(other)
    from magnb.cli import main

    assert main(["submit", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"# job scripts from the checkout {other} (the current directory)\n"
        f"sbatch slurm/train.sbatch {cfg}\n"
    )
    monkeypatch.setenv("MAGNB_ROOT", str(other))
    code, out, _ = _dry_run(monkeypatch, capsys, str(cfg), cwd=REPO_ROOT)
    assert (code, out) == (0, f"sbatch {other}/slurm/train.sbatch {cfg}")
    monkeypatch.setenv("MAGNB_ROOT", str(tmp_path))
    code, _, err = _dry_run(monkeypatch, capsys, str(cfg))
    assert code == 2 and f"{tmp_path}/slurm: MAGNB_ROOT names no magnb checkout" in err


@pytest.mark.slow
def test_a_wheel_carries_the_job_scripts(tmp_path):
    """A non-editable install (the wheel, unpacked with pip --target) has slurm/ and the
    notebooks as package data, and submit uses them outside a checkout."""
    wheels = tmp_path / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
         str(REPO_ROOT)], capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         *map(str, wheels.glob("magnb-*.whl"))], capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = site / "magnb" / "_jobs"
    for name in [p.name for p in SHELL_FILES if p.parent == SLURM]:
        assert (jobs / "slurm" / name).read_bytes() == (SLURM / name).read_bytes(), name
    assert (jobs / "notebooks" / "04_train.ipynb").is_file()
    cfg = write_yaml(tmp_path / "t.yaml", {"name": "t"})
    env = {"PYTHONPATH": str(site), "MAGNB_ROOT": ""}
    done = magnb("submit", str(cfg), "--dry-run", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"# job scripts from the installed magnb package ({jobs / 'slurm'})"
    )
    assert f"export MAGNB_SLURM_DIR={jobs / 'slurm'}" in done.stdout
    assert f"export MAGNB_NOTEBOOKS={jobs / 'notebooks'}" in done.stdout
    # named relative to the working directory (here above the install), as a user types it
    assert done.stdout.splitlines()[-1] == f"sbatch site/magnb/_jobs/slurm/train.sbatch {cfg}"
    # without its package data the installed magnb says so
    shutil.rmtree(jobs)
    done = magnb("submit", str(cfg), "--dry-run", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "no job scripts" in done.stderr, done.stderr


def test_sweep_expands_grid_and_config_lists(tmp_path, monkeypatch):
    from magnb.slurm import expand_sweep, prepare

    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path / "base.yaml", {"name": "b", "epochs": 3, "runs_dir": "r"})
    grid = write_yaml(
        tmp_path / "s.yaml",
        {"base": "base.yaml", "set": {"epochs": 5}, "sweep": {"learning_rate": [0.1, 0.01],
         "pool": [[2], [4]]}},
    )  # fmt: skip
    configs = expand_sweep(grid)
    assert [(c.learning_rate, c.pool, c.epochs) for c in configs] == [
        (0.1, (2,), 5), (0.1, (4,), 5), (0.01, (2,), 5), (0.01, (4,), 5),
    ]  # fmt: skip
    assert len({c.run_id for c in configs}) == 4
    listed = write_yaml(tmp_path / "l.yaml", {"configs": ["base.yaml"], "set": {"seed": 7}})
    assert [(c.name, c.seed) for c in expand_sweep(listed)] == [("b", 7)]
    run_dir = prepare(grid, index=3)
    assert run_dir == (tmp_path / "r" / configs[3].run_id)
    job = yaml.safe_load((run_dir / "job.yaml").read_text())
    assert job["learning_rate"] == 0.01 and job["runs_dir"] == str(tmp_path / "r")
    with pytest.raises(MagnbError, match="array index 4 is outside"):
        prepare(grid, index=4)
    with pytest.raises(MagnbError, match="this is a sweep file"):
        prepare(grid)
    with pytest.raises(MagnbError, match="unknown sweep key"):
        expand_sweep(write_yaml(tmp_path / "x.yaml", {"grid": {"seed": [1]}}))


def test_prepare_matches_run_id_and_checks_the_strategy(tmp_path, monkeypatch):
    from magnb.slurm import prepare

    monkeypatch.chdir(tmp_path)
    cfg = write_yaml(tmp_path / "c.yaml", {"name": "p", "epochs": 2})
    done = magnb("run-id", str(cfg), cwd=tmp_path)
    run_dir = prepare(cfg)
    assert run_dir == tmp_path / "runs" / done.stdout.strip()
    job = load_train_config(run_dir / "job.yaml")
    assert job.run_id == run_dir.name and job.dataset_dir == tmp_path / "demo" / "data"
    with pytest.raises(MagnbError, match="set `strategy: multiworker`"):
        prepare(cfg, strategy="multiworker")


def test_leg_says_what_the_training_step_does(tmp_path, monkeypatch):
    """What a job prints before papermill: start, resume after the epochs in history.csv (as
    train() counts them, a repeated epoch once), or leave a finished run alone unless force."""
    from magnb.slurm import leg, main, prepare

    monkeypatch.chdir(tmp_path)
    cfg = write_yaml(tmp_path / "c.yaml", {"name": "leg", "epochs": 5})
    run = prepare(cfg)
    assert leg(run) == ("start", "starting at epoch 1 of 5")
    (run / "history.csv").write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n2,0.8\n")
    state, line = leg(run)
    assert state == "resume" and line.startswith("resuming at epoch 4 of 5: 3 finished earlier")
    (run / "metrics.json").write_text("{}")
    state, line = leg(run)
    assert (
        state == "finished" and "finished earlier (3 epochs, metrics.json): not retrained" in line
    )
    forced = prepare(write_yaml(tmp_path / "f.yaml", {"name": "leg", "epochs": 5, "force": True}))
    assert forced == run and leg(run)[0] == "retrain"
    assert main(["leg", str(tmp_path / "nowhere")]) == 2  # no job.yaml: a MagnbError, status 2


# --------------------------------------------------------------------------------------------
# quiet batch kernels and the run registry (no cluster needed)


@pytest.mark.slow
def test_a_quiet_kernel_prints_each_line_once_and_no_noise(tmp_path):
    """papermill --log-output as the jobs run it, with _common.sh's kernel profile: a C-level
    line once (not also through the notebook), no TCP warning, no tensorflow INFO line; with
    MAGNB_VERBOSE=1 the kernel's warning and the INFO line, as before."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import os, time\nos.write(2, b'C-level line\\n')\nprint('py line')\n"
            "time.sleep(1)  # the kernel forwards fd output from a thread"
        ),
        nbformat.v4.new_code_cell(
            "import logging\nlog = logging.getLogger('tensorflow')\n"
            "log.setLevel(logging.INFO)  # as TensorFlow does in a kernel\n"
            "log.addHandler(logging.StreamHandler())\n"
            "log.info('tf info line')\nlog.warning('tf warning line')"
        ),
    ]
    nbformat.write(nb, tmp_path / "t.ipynb")
    script = (
        f"source {SLURM}/_common.sh; MAGNB_PYTHON={sys.executable}; magnb_quiet_kernel; "
        f"echo profile $IPYTHONDIR; {Path(sys.executable).parent}/papermill t.ipynb o.ipynb "
        "-k python3 --log-output --no-progress-bar"
    )
    # ipykernel captures C-level output only outside pytest (it checks PYTEST_CURRENT_TEST)
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    outputs, notebooks = {}, {}
    for verbose in ("0", "1"):
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={**clean_env, "MAGNB_VERBOSE": verbose, "TMPDIR": str(tmp_path)},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        outputs[verbose] = out = done.stdout + done.stderr
        assert out.count("py line") == 1 and out.count("tf warning line") == 1, out
        executed = nbformat.read(tmp_path / "o.ipynb", as_version=4)
        notebooks[verbose] = json.dumps([c.get("outputs", []) for c in executed.cells])
    quiet, verbose = outputs["0"], outputs["1"]
    # a C-level line stays out of the quiet notebook, so --log-output cannot repeat it
    assert quiet.count("C-level line") == 1 and "C-level line" not in notebooks["0"], quiet
    assert "tf info line" not in quiet and "without encryption" not in quiet, quiet
    assert not list(tmp_path.glob("magnb-ipython.*"))  # removed when the shell exits
    assert "C-level line" in notebooks["1"] and verbose.count("C-level line") == 2, verbose
    assert "tf info line" in verbose and "without encryption" in verbose, verbose


def _finished_run(runs: Path, config, model) -> Path:
    """A run folder as train() leaves it, for the registry: config, model, metrics."""
    from magnb.config import to_mapping

    run = runs / config.run_id
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_mapping(config), sort_keys=False))
    if model is not None:
        model.save(run / "model.keras")
    metrics = {"run_id": config.run_id, "task": "classification", "epochs_trained": 1,
               "replicas": 1, "test": {"model": {"balanced_accuracy": 0.5}}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.mark.slow
def test_runs_shows_the_layers_the_model_really_has(tmp_path):
    """seed_base ignores filters/kernel_size/pool: the registry shows its 3 filters of 40^3,
    read from the saved model, or from the builder when there is no model file."""
    from magnb.config import TrainConfig
    from magnb.model import build_model
    from magnb.train import list_runs

    runs = tmp_path / "runs"
    seed = TrainConfig(name="seed", model="seed_base", label="order_pattern")
    assert seed.filters == (8, 16) and seed.kernel_size == (7, 5)  # the defaults it ignores
    from magnb.dataset import LABEL_CLASSES

    classes = len(LABEL_CLASSES["order_pattern"])
    model = build_model(seed, (40, 40, 40, 2), classes)
    saved = _finished_run(runs, seed, model)
    small = TrainConfig(name="small", filters=(4,), kernel_size=(5,), pool=(2,), dense=(8,))
    _finished_run(runs, small, None)  # no model file: the builder's layers for its config
    table = list_runs(runs).set_index("run_id")
    row = table.loc[seed.run_id]
    assert row["layers"] == f"conv 3x40^3, pool 2, flatten, dense {classes}"
    assert (row["filters"], row["kernel_size"], row["pool"], row["dense"]) == (
        "[3]", "[40]", "[2]", "[]",
    )  # fmt: skip
    other = table.loc[small.run_id]
    assert other["layers"] == "conv 4x5^3, pool 2, global average, dense 8, dropout 0.2, dense 2"
    assert (other["filters"], other["kernel_size"], other["dense"]) == ("[4]", "[5]", "[8]")
    assert "sweep" not in table.columns  # no sweep runs here
    (saved / "model.keras").unlink()
    assert list_runs(runs).set_index("run_id").loc[seed.run_id, "layers"] == row["layers"]
    # a sweep's runs: after the others, point by point (not in the order of their hashes)
    points = [TrainConfig(name="pt", seed=i, filters=(4,), kernel_size=(5,), pool=(2,))
              for i in range(4)]  # fmt: skip
    assert sorted(c.run_id for c in points) != [c.run_id for c in points]
    for i, config in enumerate(points):
        record = {"sweep": "seeds", "file": "s.yaml", "point": i, "points": 4}
        (_finished_run(runs, config, None) / "sweep.json").write_text(json.dumps(record))
    table = list_runs(runs)
    assert list(table["run_id"][2:]) == [c.run_id for c in points]
    assert list(table["sweep"].fillna("-")) == ["-", "-"] + ["seeds"] * 4
    assert list(table["point"][2:]) == [0, 1, 2, 3] and table["point"][:2].isna().all()
    done = magnb("runs", str(runs))
    assert done.returncode == 0 and f"conv 3x40^3, pool 2, flatten, dense {classes}" in done.stdout


# --------------------------------------------------------------------------------------------
# the multi-worker cluster spec (no cluster needed)


def _step_env(ntasks_per_node: list[int], hosts: str, rank: int, gpus: str | None) -> dict:
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": str(rank),
        "SLURM_STEP_NUM_TASKS": str(sum(ntasks_per_node)),
        "SLURM_STEP_NODELIST": hosts,
        "SLURM_STEP_TASKS_PER_NODE": ",".join(str(n) for n in ntasks_per_node),
    }
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def test_cluster_spec_matches_tensorflows_slurm_resolver(monkeypatch):
    import tensorflow as tf

    from magnb.slurm import base_port, cluster_spec, expand_tasks_per_node, tf_config

    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    for rank in range(4):
        env = _step_env([2, 2], "gpu[07-08]", rank, "0,1")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=base_port(env), auto_set_gpu=False
        )
        spec, index = cluster_spec(env)
        assert spec == resolver.cluster_spec().as_dict()
        assert (index, "worker") == (resolver.task_id, resolver.task_type)
        assert json.loads(tf_config(env)) == {
            "cluster": {"worker": ["gpu07:24242", "gpu07:24243", "gpu08:24242", "gpu08:24243"]},
            "task": {"type": "worker", "index": rank},
        }


def test_multiworker_outside_a_job_step_says_what_it_needs(monkeypatch):
    from magnb.slurm import multiworker_strategy

    for key in ("TF_CONFIG", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(MagnbError, match="run it as the tasks of a Slurm job step"):
        multiworker_strategy()


def test_tensorflows_slurm_resolver_still_fails_without_gpus(monkeypatch):
    """The known breakage magnb works around (tensorflow/tensorflow#56894): 0 GPUs per node.
    If this starts to pass, TensorFlow fixed it and magnb's own spec could go."""
    import tensorflow as tf

    from magnb.slurm import cluster_spec

    env = _step_env([2], "vm", 1, None)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="must not be zero"):
        tf.distribute.cluster_resolver.SlurmClusterResolver(gpus_per_node=0).cluster_spec()
    assert cluster_spec(env) == ({"worker": ["vm:24242", "vm:24243"]}, 1)


# --------------------------------------------------------------------------------------------
# magnb doctor


@pytest.mark.slow
def test_doctor_prints_the_environment_and_trains_on_each_device():
    done = magnb("doctor", "--steps", "3", env={"SLURM_JOB_ID": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for needle in ("python", "keras       3.", "backend tensorflow", "tensorflow  2.", "CPU:0"):
        assert needle in out, out
    assert re.search(r"CPU:0 +ok: loss [\d.]+ -> [\d.]+, \d+ samples/s", out), out
    assert "mixed_bfloat16" in out and "doctor: all good" in out
    done = magnb("doctor", "--steps", "2", "--require-gpu")
    assert done.returncode == 3 and "sees no GPU" in done.stdout, done.stdout


# --------------------------------------------------------------------------------------------
# on the real Slurm cluster


@pytest.mark.slurm
@pytest.mark.slow
def test_train_sbatch_leaves_executed_notebook_and_a_resubmission_keeps_it(
    slurm_cluster, tiny_data, tmp_path
):
    import nbformat

    rel = os.path.relpath(tiny_data["data"], tmp_path)  # relative to the submit dir, on purpose
    cfg = write_yaml(
        tmp_path / "small.yaml", {"dataset_dir": rel, "name": "small", **TINY, "epochs": 3}
    )
    (tmp_path / "tmp").mkdir()
    tmp = {"TMPDIR": str(tmp_path / "tmp")}
    job = sbatch(slurm_cluster, tmp_path, "train.sbatch", "small.yaml", wait=True, env=tmp)
    run = run_folder(cfg, tmp_path)
    assert run.parent == tmp_path / "runs"
    for name in ("04_train.ipynb", "model.keras", "metrics.json", "history.csv", "job.yaml",
                 "config.yaml", "environment.json", f"slurm-{job}.log"):  # fmt: skip
        assert (run / name).is_file(), f"{name} missing\n" + job_output(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run_id"] == run.name and metrics["epochs_trained"] == 3
    nb = nbformat.read(run / "04_train.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["dataset_dir"] == str(tiny_data["data"].resolve())
    assert nb.metadata.kernelspec.name == "magnb"
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert f"run {run.name}" in text
    log = (run / f"slurm-{job}.log").read_text()
    assert "CUDA_VISIBLE_DEVICES=0 (Slurm: 0)" in log and "kernel      magnb" in log
    assert "papermill exited with status 0" in log and "starting at epoch 1 of 3" in log
    assert "without encryption" not in log and log.count("Epoch 1/3") == 1, log
    assert (tmp_path / f"slurm-magnb-train-{job}.out").is_file()
    assert not list((tmp_path / "tmp").iterdir())  # the kernel's profile folder is gone

    # submitted again once finished: the record of the training that made the model stays
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    again = sbatch(slurm_cluster, tmp_path, "train.sbatch", "small.yaml", wait=True)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after.pop(f"slurm-{again}.log") and after == before  # notebook byte for byte
    log = (run / f"slurm-{again}.log").read_text()
    assert f"{run.name} finished earlier (3 epochs, metrics.json): not retrained" in log, log
    assert "3 epochs (resumed from 0)" in log and "papermill" not in log


@pytest.fixture(scope="session")
def supercell_2gpu_run(slurm_cluster, tiny_data, tmp_path_factory) -> tuple[Path, dict]:
    """slurm/train_2gpu_supercell.sbatch, unmodified, on a tiny supercell-like config."""
    workdir = tmp_path_factory.mktemp("supercell_job")
    settings = {
        "dataset_dir": str(tiny_data["supercell"]),
        "name": "supercell-2gpu",
        "strategy": "mirrored",
        **TINY,
        "epochs": 3,
    }
    cfg = write_yaml(workdir / "supercell.yaml", settings)
    # magnb submit picks the 2-GPU script for `strategy: mirrored`
    done = magnb(
        "submit", "supercell.yaml", "--sbatch=--cpus-per-task=1", cwd=workdir,
        env={**slurm_cluster.env, "MAGNB_ROOT": str(REPO_ROOT)},
    )  # fmt: skip
    match = re.search(r"submitted job (\d+): sbatch (.*)", done.stdout)
    assert done.returncode == 0 and match, done.stdout + done.stderr
    assert match[2] == f"--cpus-per-task=1 {SLURM}/train_2gpu_supercell.sbatch supercell.yaml"
    record = slurm_cluster.job(match[1])
    assert record.get("TresPerNode") == "gres:gpu:2", record
    assert record["TimeLimit"] == "12:00:00", record
    assert record["MinMemoryNode"] == "32G", record
    wait_ok(slurm_cluster, match[1], workdir)
    return run_folder(cfg, workdir), settings


@pytest.mark.slurm
@pytest.mark.slow
def test_2gpu_supercell_script_trains_two_replicas(supercell_2gpu_run):
    run, settings = supercell_2gpu_run
    metrics = json.loads((run / "metrics.json").read_text())
    env = json.loads((run / "environment.json").read_text())
    assert metrics["replicas"] == 2 and metrics["global_batch"] == 2 * settings["batch_size"]
    assert env["strategy"] == "MirroredStrategy"
    assert {"/device:CPU:0", "/device:CPU:1"} <= set(env["devices"])
    log = next(run.glob("slurm-*.log")).read_text()
    assert "CUDA_VISIBLE_DEVICES=0,1 (Slurm: 0,1)" in log
    assert "3 epochs (resumed from 0), 2 replica(s), global batch 4" in log
    assert "INFO:tensorflow" not in log and "without encryption" not in log, log  # quiet
    with h5py.File(Path(settings["dataset_dir"]) / "dataset.h5") as f:
        assert f["samples"].shape[1:] == (16, 16, 16, 2)  # 8 x 8 x 16 tiled 2 x 2 x 1


@pytest.mark.slurm
@pytest.mark.slow
def test_multinode_script_runs_two_workers_in_step(slurm_cluster, supercell_2gpu_run, tmp_path):
    """Two tasks on the one node stand in for two nodes: two TensorFlow workers on loopback
    ports train one model together and match MirroredStrategy over 2 devices step for step."""
    mirrored_run, settings = supercell_2gpu_run
    cfg = write_yaml(
        tmp_path / "mw.yaml", {**settings, "name": "multinode", "strategy": "multiworker"}
    )
    topology = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"]
    job = sbatch(slurm_cluster, tmp_path, "train_multinode.sbatch", "mw.yaml", opts=topology)
    wait_ok(slurm_cluster, job, tmp_path)
    run = run_folder(cfg, tmp_path)
    log = (run / f"slurm-{job}.log").read_text()
    for rank in (0, 1):
        assert f"{rank}: magnb worker {rank} of 2 on" in log, log[-3000:]
        assert re.search(rf"{rank}: magnb: multi-worker task {rank} of 2 \(worker\), cluster "
                         r"\['[\w.-]+:\d+', '[\w.-]+:\d+'\], from magnb \(no GPUs", log), log[-3000:]  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    env = json.loads((run / "environment.json").read_text())
    assert metrics["replicas"] == 2 and metrics["global_batch"] == 4
    assert env["strategy"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")
    # the chief wrote the run folder; worker 1 its own files, in its own place
    worker = run / "workers" / "1"
    assert (worker / "04_train.ipynb").is_file()
    assert (worker / run.name / "history.csv").is_file()
    assert not list(run.glob("workers/*/metrics.json"))  # not in the run's own listing
    chief = pd.read_csv(run / "history.csv")
    other = pd.read_csv(worker / run.name / "history.csv")
    np.testing.assert_allclose(other["loss"], chief["loss"], rtol=1e-6)  # one model, in step
    # and it is the same training as MirroredStrategy on 2 devices: the batch really is split
    mirrored = pd.read_csv(mirrored_run / "history.csv")
    np.testing.assert_allclose(chief["loss"], mirrored["loss"], rtol=1e-4)


@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_array_trains_one_run_per_point(slurm_cluster, tiny_data, tmp_path, monkeypatch):
    from magnb.slurm import expand_sweep

    write_yaml(tmp_path / "base.yaml", {"dataset_dir": str(tiny_data["data"]), **TINY})
    write_yaml(
        tmp_path / "sweep.yaml",
        {"base": "base.yaml", "name": "lr", "set": {"epochs": 2},
         "sweep": {"learning_rate": [0.01, 0.001]}},
    )  # fmt: skip
    done = magnb(
        "submit", "sweep.yaml", "--sbatch=--cpus-per-task=1", cwd=tmp_path,
        env={**slurm_cluster.env, "MAGNB_ROOT": str(REPO_ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    match = re.search(r"submitted job (\d+): sbatch --array=0-1 ", done.stdout)
    assert match, done.stdout
    records = wait_ok(slurm_cluster, match[1], tmp_path)
    assert len(records) == 2
    monkeypatch.chdir(tmp_path)
    expected = sorted(c.run_id for c in expand_sweep("sweep.yaml"))
    runs = magnb("runs", str(tmp_path / "runs"))
    assert runs.returncode == 0
    for run_id in expected:
        assert (tmp_path / "runs" / run_id / "metrics.json").is_file(), job_output(tmp_path)
        assert run_id in runs.stdout
    from magnb.train import list_runs

    table = list_runs(tmp_path / "runs")
    assert list(table["sweep"]) == ["lr", "lr"] and list(table["point"]) == [0, 1]
    assert list(table["learning_rate"]) == [0.01, 0.001]  # in the sweep's order, not by hash
    assert re.search(r"\blr +0 ", runs.stdout) and re.search(r"\blr +1 ", runs.stdout), runs.stdout
    # each task's log is named, and headed, by the array job and task ids, as Slurm's output is
    for i, config in enumerate(expand_sweep("sweep.yaml")):
        log = tmp_path / "runs" / config.run_id / f"slurm-{match[1]}_{i}.log"
        assert (tmp_path / f"slurm-magnb-sweep-{match[1]}_{i}.out").is_file()
        assert f", array job {match[1]} task {i} (magnb-sweep)" in log.read_text()


@pytest.mark.slurm
@pytest.mark.slow
def test_sharded_scrape_array_and_merge_equal_a_single_build(slurm_cluster, tiny_data, tmp_path):
    cfg = write_yaml(tmp_path / "scrape.yaml", SCRAPE)
    out = tmp_path / "sharded"
    done = magnb(
        "submit", "scrape.yaml", "--data", str(tiny_data["data"]), "--shards", "3",
        "--out", str(out), "--sbatch=--cpus-per-task=1", cwd=tmp_path,
        env={**slurm_cluster.env, "MAGNB_ROOT": str(REPO_ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    jobs = re.findall(r"submitted job (\d+): (.*)", done.stdout)
    assert len(jobs) == 2, done.stdout
    assert "--array=0-2" in jobs[0][1] and f"--dependency=afterok:{jobs[0][0]}" in jobs[1][1]
    assert len(wait_ok(slurm_cluster, jobs[0][0], tmp_path)) == 3
    wait_ok(slurm_cluster, jobs[1][0], tmp_path)
    for i in range(3):
        assert (out / f"dataset.shard-{i}-of-3.h5").is_file()
    single, merged = tiny_data["data"], out
    with h5py.File(single / "dataset.h5") as a, h5py.File(merged / "dataset.h5") as b:
        assert a["samples"].shape == b["samples"].shape
        np.testing.assert_array_equal(a["samples"][...], b["samples"][...])
        for key in ("channels", "norm_offset", "norm_scale", "input_hash", "periodic_axes"):
            assert a.attrs[key] == b.attrs[key], key
    pd.testing.assert_frame_equal(
        pd.read_parquet(single / "table.parquet"), pd.read_parquet(merged / "table.parquet")
    )
    assert cfg.is_file()


@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_training_resumes_instead_of_restarting(slurm_cluster, tiny_data, tmp_path):
    """`scontrol requeue` (what preemption does) and the time-limit signal (USR1 to the batch
    shell, which requeues the job itself) both stop a running training; each restart continues
    after the last finished epoch in the same run folder.

    The signals are sent as soon as an epoch's history row appears, i.e. early in the next epoch:
    Keras' BackupAndRestore writes backup/latest.weights.h5 in place, and a kill during that
    write leaves a backup that resume cannot read (unless double_checkpoint=True keeps the
    previous copy to fall back on); this test is about the requeue, not that race."""
    epochs_total = 16
    cfg = write_yaml(
        tmp_path / "long.yaml",
        {"dataset_dir": str(tiny_data["data"]), "name": "long", **TINY, "batch_size": 1,
         "epochs": epochs_total},
    )  # fmt: skip
    job = sbatch(slurm_cluster, tmp_path, "train.sbatch", "long.yaml")
    run = run_folder(cfg, tmp_path)
    history = run / "history.csv"

    def epochs() -> int:
        return max(0, len(history.read_text().splitlines()) - 1) if history.is_file() else 0

    def wait_for(n: int, restarts: int) -> int:
        import time

        deadline = time.time() + 300
        polls = 0
        while time.time() < deadline:
            polls += 1
            if epochs() >= n or polls % 40 == 0:  # reading the file is cheap, scontrol is not
                record = slurm_cluster.job(job)
                assert record.get("JobState") not in _cluster.ENDED, job_output(tmp_path)
                if int(record.get("Restarts", 0)) == restarts and epochs() >= n:
                    return epochs()
            time.sleep(0.05)
        raise AssertionError(f"no {n} epochs after restart {restarts}\n" + job_output(tmp_path))

    first = wait_for(3, restarts=0)
    slurm_cluster.run(["scontrol", "requeue", job])
    second = wait_for(first + 3, restarts=1)
    slurm_cluster.run(["scancel", "--batch", "--signal=USR1", job])
    wait_ok(slurm_cluster, job, tmp_path)
    assert slurm_cluster.job(job)["Restarts"] == "2"
    metrics = json.loads((run / "metrics.json").read_text())
    assert second <= metrics["resumed_from_epoch"] < epochs_total
    assert metrics["epochs_trained"] == epochs_total
    assert list(pd.read_csv(history)["epoch"].drop_duplicates()) == list(range(epochs_total))
    log = (run / f"slurm-{job}.log").read_text()
    assert log.count("magnb job   ") == 3 and "restarts    2 (leg 3 of this job)" in log
    # every leg says where it resumed; the last one where metrics.json says it did
    resumed = [int(n) for n in re.findall(r"magnb job: resuming at epoch \d+ of 16: (\d+) ", log)]
    assert len(resumed) == 2 and first <= resumed[0] <= second <= resumed[1], log
    assert resumed[1] == metrics["resumed_from_epoch"]
    assert f"resuming at epoch {resumed[1] + 1} of 16" in log
    assert "SIGTERM" in log and "SIGUSR1" in log and f"requeued job {job}" in log


@pytest.mark.slurm
def test_submit_from_a_second_checkout_runs_that_checkouts_scripts(
    slurm_cluster, tiny_data, tmp_path
):
    """With the package installed from this checkout, `magnb submit` run in another one (or
    with MAGNB_ROOT naming it) queues that checkout's job script, and the job sources that
    checkout's _common.sh. The copies say who they are and stop before training."""
    other = copy_checkout(tmp_path / "other")
    for name in ("train.sbatch", "_common.sh"):
        path = other / "slurm" / name
        text = path.read_text().replace("\nmagnb_env\n", f"\nmagnb_env\necho 'second {name}'\n")
        if name == "train.sbatch":
            text = text.replace("magnb_train_job", "exit 0 #")
        else:
            text += "echo 'second checkout _common.sh'\n"
        path.write_text(text)
    cfg = write_yaml(tmp_path / "t.yaml", {"dataset_dir": str(tiny_data["data"]), **TINY})
    env = {**slurm_cluster.env, "MAGNB_VENV": str(Path(sys.prefix))}
    for cwd, extra in ((other, {}), (tmp_path, {"MAGNB_ROOT": str(other)})):
        env.pop("MAGNB_ROOT", None)
        done = magnb(
            "submit", str(cfg), "--sbatch=--cpus-per-task=1", cwd=cwd, env={**env, **extra}
        )
        assert done.returncode == 0, done.stderr
        match = re.search(r"submitted job (\d+): sbatch (.*)", done.stdout)
        assert match and f"# job scripts from the checkout {other} (" in done.stdout, done.stdout
        wait_ok(slurm_cluster, match[1], cwd)
        out = (cwd / f"slurm-magnb-train-{match[1]}.out").read_text()
        assert "second checkout _common.sh" in out and "second train.sbatch" in out, out


@pytest.mark.slurm
@pytest.mark.slow
def test_smoke_job_reports_devices_and_fails_when_gpus_are_not_usable(slurm_cluster, tmp_path):
    """On the test cluster the allocated GPUs are fake: doctor trains on the CPU, then fails
    with the reason, as it would on a GPU node with a CPU-only TensorFlow."""
    job = sbatch(slurm_cluster, tmp_path, "smoke.sbatch", env={"MAGNB_DOCTOR_STEPS": "3"})
    records = slurm_cluster.wait_done(job)
    out = (tmp_path / f"slurm-magnb-smoke-{job}.out").read_text()
    assert records[0]["JobState"] == "FAILED" and records[0]["ExitCode"] == "3:0", out
    assert re.search(r"CPU:0 +ok: loss", out), out
    assert "keras       3." in out and re.search(r"slurm       job \d+ on .*, GPU ids: 0\n", out)
    assert "ERROR: Slurm allocated GPU ids 0 but tensorflow sees no GPU" in out
