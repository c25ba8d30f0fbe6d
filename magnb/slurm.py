"""Running magnb on a Slurm cluster: what ``magnb submit`` hands to ``sbatch``, the helpers the job
scripts in ``slurm/`` call, multi-worker TensorFlow under ``srun``, and ``magnb doctor``.

- :func:`submit_commands` / :func:`submit`: the sbatch call(s) for a training config (the script
  its strategy needs: ``train.sbatch``, ``train_2gpu_supercell.sbatch`` for ``mirrored``,
  ``train_multinode.sbatch`` for ``multiworker``), a sweep file (a job array over configs or a
  parameter grid) or a scrape config (a sharded job array and the merge as a job that depends on
  it), so that routine runs need no hand-edited script. :func:`find_job_scripts` says whose
  scripts: the checkout of ``MAGNB_ROOT`` or of the working directory, else the package's copies.
- ``python -m magnb.slurm prepare SPEC [--index I]``: called by the job scripts; checks the config,
  makes the run folder ``<runs_dir>/<run_id>`` (the id is the config's hash, so a requeued job
  finds the same folder and resumes), writes ``job.yaml`` there (every TrainConfig field, paths made
  absolute: exactly what papermill is given; a sweep point also ``sweep.json``) and prints the
  folder. ``python -m magnb.slurm leg RUN_DIR`` then says what the training step will do
  (:func:`leg`: start, resume at epoch N, or leave a finished run and its notebook alone).
- :func:`multiworker_strategy`: ``tf.distribute.MultiWorkerMirroredStrategy`` for a job step of
  several tasks. On nodes with GPUs the cluster spec comes from TensorFlow's
  ``SlurmClusterResolver``; on CPU-only nodes that resolver fails (it divides the node's GPUs
  among its tasks: ``range(0, 0, 0)``, tensorflow/tensorflow#56894), so magnb builds the same spec
  from the Slurm step's variables itself. It also works around Keras 3's multi-worker reductions
  (keras-team/keras#20585), see :func:`_fix_keras_reductions`.
- :func:`doctor`: versions, devices and mixed-precision support, then a tiny model trained for a
  few steps on generated data on each visible device: the offline smoke test of a GPU node.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from magnb.config import TrainConfig, from_mapping, load_train_config, load_yaml, to_mapping
from magnb.errors import MagnbError

SCRIPTS = {
    "train": "train.sbatch",
    "supercell": "train_2gpu_supercell.sbatch",
    "multinode": "train_multinode.sbatch",
    "sweep": "sweep.sbatch",
    "scrape": "scrape_array.sbatch",
    "merge": "scrape_merge.sbatch",
    "smoke": "smoke.sbatch",
}
#: first TCP port of a multi-worker job's TensorFlow servers (one per task on a node, counting up);
#: the default spreads jobs over 20000-39999 by job id so that jobs sharing a node do not collide
PORT_ENV = "MAGNB_TF_PORT"
SWEEP_KEYS = {"base", "set", "sweep", "configs", "name"}
#: a sweep point's run folder holds this record of its sweep (written by :func:`prepare`)
SWEEP_RECORD = "sweep.json"


# --------------------------------------------------------------------------------------------
# sweeps: a job array over configs or a parameter grid


def is_sweep(mapping: dict[str, Any]) -> bool:
    return "sweep" in mapping or "configs" in mapping


def expand_sweep(path: str | Path) -> list[TrainConfig]:
    """The training configs of a sweep file, in array-index order.

    A sweep file is YAML with ``base`` (a training config file; default: TrainConfig's defaults),
    ``set`` (settings applied to every point), and either ``sweep`` (setting -> list of values:
    the Cartesian product, first key slowest) or ``configs`` (a list of config files, each taken
    as it is plus ``set``). Paths are relative to the working directory, as everywhere in magnb.
    """
    path = Path(path)
    spec = load_yaml(path)
    unknown = sorted(set(spec) - SWEEP_KEYS)
    if unknown:
        raise MagnbError(
            f"unknown sweep key(s) {', '.join(unknown)}; known: {', '.join(sorted(SWEEP_KEYS))}",
            path,
        )
    if ("sweep" in spec) == ("configs" in spec):
        raise MagnbError("a sweep file needs exactly one of `sweep:` or `configs:`", path)
    common = spec.get("set") or {}
    if not isinstance(common, dict):
        raise MagnbError("`set:` must be a mapping of setting: value", path)
    if "configs" in spec:
        files = spec["configs"]
        if not isinstance(files, list) or not files:
            raise MagnbError("`configs:` must be a non-empty list of config files", path)
        return [_with(load_yaml(f), common, str(f)) for f in files]
    base = load_yaml(spec["base"]) if spec.get("base") else {}
    if spec.get("name"):
        base["name"] = spec["name"]
    grid = spec["sweep"]
    if not isinstance(grid, dict) or not grid:
        raise MagnbError("`sweep:` must map settings to lists of values", path)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise MagnbError(f"sweep values of {key} must be a non-empty list", path)
    configs = []
    for point in itertools.product(*grid.values()):
        configs.append(_with(base, {**common, **dict(zip(grid, point, strict=True))}, str(path)))
    ids = [c.run_id for c in configs]
    if len(set(ids)) != len(ids):
        raise MagnbError("two points of the sweep are the same config (same run id)", path)
    return configs


def _with(settings: dict[str, Any], extra: dict[str, Any], where: str) -> TrainConfig:
    return from_mapping(TrainConfig, {**settings, **extra}, where)


# --------------------------------------------------------------------------------------------
# what the job scripts call before papermill


def prepare(spec: str | Path, index: int | None = None, strategy: str | None = None) -> Path:
    """Check a training config (or point ``index`` of a sweep), make its run folder, write
    ``job.yaml`` there (every field, paths absolute) and return the folder.

    Relative paths in the config are taken from the working directory, as ``magnb train`` does.
    ``strategy``, if given, is the distribution strategy the calling script needs.
    """
    spec = Path(spec)
    if index is None:
        mapping = load_yaml(spec)
        if is_sweep(mapping):
            raise MagnbError(
                "this is a sweep file: submit it with slurm/sweep.sbatch as a job array "
                "(magnb submit does)",
                spec,
            )
        config = load_train_config(spec)
    else:
        configs = expand_sweep(spec)
        if not 0 <= index < len(configs):
            raise MagnbError(
                f"array index {index} is outside the sweep's {len(configs)} configs "
                f"(submit with --array=0-{len(configs) - 1})",
                spec,
            )
        config = configs[index]
    if strategy is not None and config.strategy != strategy:
        raise MagnbError(
            f"this job script runs strategy {strategy!r}, but the config says "
            f"strategy: {config.strategy}; set `strategy: {strategy}` in the config",
            spec,
        )
    settings = to_mapping(config)
    settings["dataset_dir"] = str(config.dataset_dir.resolve())
    settings["runs_dir"] = str(config.runs_dir.resolve())
    run_dir = config.runs_dir.resolve() / config.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml

    from magnb._io import atomic_write

    with atomic_write(run_dir / "job.yaml", "w") as fh:
        fh.write(f"# the parameters papermill was given for {spec} (written by magnb.slurm)\n")
        yaml.safe_dump(settings, fh, sort_keys=False)
    if index is not None:  # which sweep and point this run is, for magnb runs
        point = {
            "sweep": load_yaml(spec).get("name") or spec.stem,
            "file": str(spec.resolve()),
            "point": index,
            "points": len(configs),
        }
        with atomic_write(run_dir / SWEEP_RECORD, "w") as fh:
            json.dump(point, fh, indent=2)
    return run_dir


def leg(run_dir: str | Path) -> tuple[str, str]:
    """What a job's training step will do in ``run_dir`` (prepared, with ``job.yaml``): the
    state and one line for the log.

    ``finished`` (metrics.json, no ``force``: the job leaves the run and its executed notebook as
    they are), ``retrain`` (finished, ``force: true``), ``resume`` (epochs in history.csv: the
    training resumes from its backup after them, as :func:`magnb.train.train` counts them) or
    ``start``. A run trained on another build of the dataset is a MagnbError, as in ``train``.
    """
    from magnb.train import read_history, trained_on_other_data

    run_dir = Path(run_dir)
    config = load_train_config(run_dir / "job.yaml")
    other = trained_on_other_data(config)
    if other and not config.force:
        raise MagnbError(
            f"{other}; train it again from the start with force: true or give this dataset its "
            "own runs_dir",
            run_dir,
        )
    done = len(read_history(run_dir))
    if (run_dir / "metrics.json").is_file():
        if config.force:
            return (
                "retrain",
                f"force: true: retraining the finished run {run_dir.name} from epoch 1",
            )
        return "finished", (
            f"{run_dir.name} finished earlier ({done} epochs, metrics.json): not retrained; its "
            "executed 04_train.ipynb is kept as it is (force: true in the config retrains)"
        )
    if done:
        return "resume", (
            f"resuming at epoch {done + 1} of {config.epochs}: {done} finished earlier "
            f"(history.csv in {run_dir})"
        )
    return "start", f"starting at epoch 1 of {config.epochs}"


# --------------------------------------------------------------------------------------------
# magnb submit


def _config_kind(path: Path, data: str | None) -> str:
    """sweep, train or scrape, from the file's keys (a file valid as both: scrape if --data)."""
    mapping = load_yaml(path)
    if is_sweep(mapping):
        return "sweep"
    train_keys = {f.name for f in fields(TrainConfig)}
    if set(mapping) <= train_keys and not data:
        return "train"
    from magnb.store import ScrapeConfig

    if set(mapping) <= {f.name for f in fields(ScrapeConfig)}:
        return "scrape"
    if set(mapping) <= train_keys:
        return "train"
    load_train_config(path)  # names the unknown keys
    return "train"


@dataclass(frozen=True)
class JobScripts:
    """The job scripts ``magnb submit`` hands to sbatch: their folder, where it was found (said
    to the user) and the variables the jobs need to find ``_common.sh`` and the notebook."""

    slurm_dir: Path
    source: str
    env: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> str:
        """A job script's path as the user would type it: relative when under the working dir."""
        path = self.slurm_dir / SCRIPTS[name]
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)


def _has_scripts(slurm_dir: Path) -> bool:
    return all((slurm_dir / name).is_file() for name in ("_common.sh", *SCRIPTS.values()))


def _packaged(what: str) -> Path:
    """The copy of slurm/ or notebooks/ installed with magnb: a wheel's ``magnb/_jobs/<what>``,
    or, for an editable install (which has none), the folder of the checkout it lives in."""
    wheel = Path(__file__).resolve().parent / "_jobs" / what
    return wheel if wheel.is_dir() else Path(__file__).resolve().parents[1] / what


def find_job_scripts(environ: dict[str, str] | None = None) -> JobScripts:
    """The job scripts of the checkout named by ``MAGNB_ROOT``, else of the current directory
    (when it is a magnb checkout), else the copies installed with the package.

    Jobs read ``_common.sh`` and ``notebooks/04_train.ipynb`` from the same place: from a checkout
    through ``MAGNB_ROOT`` (which the scripts default to the submit directory), from the package
    through ``MAGNB_SLURM_DIR`` and ``MAGNB_NOTEBOOKS`` (set here, in :attr:`JobScripts.env`, with
    ``MAGNB_VENV`` the running virtualenv unless an environment is named already). Raises
    MagnbError when ``MAGNB_ROOT`` is not a checkout or the installed package has no scripts.
    """
    env = os.environ if environ is None else environ
    if env.get("MAGNB_ROOT"):
        root = Path(env["MAGNB_ROOT"]).expanduser().resolve()
        if not _has_scripts(root / "slurm"):
            raise MagnbError(
                "MAGNB_ROOT names no magnb checkout (no job scripts in its slurm/ folder); point "
                "it at the checkout, or unset it to use the job scripts installed with magnb",
                root / "slurm",
            )
        return JobScripts(root / "slurm", f"the checkout {root} (MAGNB_ROOT)")
    cwd = Path.cwd()
    if _has_scripts(cwd / "slurm"):
        return JobScripts(cwd / "slurm", f"the checkout {cwd} (the current directory)")
    slurm_dir, notebooks = _packaged("slurm"), _packaged("notebooks")  # see pyproject.toml
    if not _has_scripts(slurm_dir) or not (notebooks / "04_train.ipynb").is_file():
        raise MagnbError(
            "no job scripts: the current directory is not a magnb checkout, MAGNB_ROOT is not "
            "set, and the installed magnb carries no copy of slurm/ and notebooks/ (reinstall "
            "it, or run magnb submit in a checkout)",
            slurm_dir,
        )
    job_env = {"MAGNB_SLURM_DIR": str(slurm_dir), "MAGNB_NOTEBOOKS": str(notebooks)}
    if not (env.get("MAGNB_VENV") or env.get("MAGNB_CONDA_ENV")) and sys.prefix != sys.base_prefix:
        job_env["MAGNB_VENV"] = sys.prefix  # the environment this magnb runs in
    return JobScripts(slurm_dir, f"the installed magnb package ({slurm_dir})", job_env)


def _array(spec: str | None, n: int) -> str:
    """``--array`` for n tasks; a user's ``%k`` (at most k at once) or full spec is kept."""
    if not spec:
        return f"0-{n - 1}"
    if spec.startswith("%"):
        return f"0-{n - 1}{spec}"
    return spec


def submit_commands(
    config: str | Path,
    gpus: int | None = None,
    nodes: int | None = None,
    array: str | None = None,
    time_limit: str | None = None,
    partition: str | None = None,
    data: str | None = None,
    shards: int | None = None,
    out: str | None = None,
    sbatch_args: Sequence[str] = (),
    scripts: JobScripts | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[list[str]]:
    """The sbatch call(s) for ``config``; a second call (the merge of a sharded scrape) carries
    ``--dependency=afterok:{jobid}``, to be filled with the first call's job id.

    The kind of job follows from the file: a sweep (``sweep:`` or ``configs:``), a scrape config
    (ScrapeConfig keys; needs ``data``), or a training config. A training config's script follows
    from what it asks for: ``strategy: mirrored`` -> ``train_2gpu_supercell.sbatch`` (2 GPUs;
    with another ``gpus``, ``train.sbatch`` with that many), ``strategy: multiworker`` or
    ``nodes`` > 1 -> ``train_multinode.sbatch``, else ``train.sbatch``. Configs are checked here,
    so a typo fails before anything is queued; a GPU count that leaves a strategy one device is
    reported through ``warn`` (default: stderr). ``scripts``: default :func:`find_job_scripts`.
    """
    scripts = scripts or find_job_scripts()
    warn = warn or (lambda text: print(f"magnb submit: warning: {text}", file=sys.stderr))
    path = Path(config)
    kind = _config_kind(path, data)
    common: list[str] = []
    if time_limit:
        common.append(f"--time={time_limit}")
    if partition:
        common.append(f"--partition={partition}")
    if gpus is not None:
        if gpus < 0:
            raise MagnbError(f"--gpus must be >= 0, not {gpus}")
        common.append(f"--gres=gpu:{gpus}" if gpus else "--gres=none")
    if nodes is not None and nodes < 1:
        raise MagnbError(f"--nodes must be >= 1, not {nodes}")
    extra = list(sbatch_args)

    if kind == "scrape":
        from magnb.store import ScrapeConfig

        settings = load_yaml(path)
        data = data or settings.get("data_dir")
        out = out or settings.get("out_dir")
        if not data:
            raise MagnbError("a scrape needs the data folder: --data DATA", path)
        from_mapping(ScrapeConfig, {**settings, "data_dir": data}, str(path))
        if not shards or shards < 1:
            raise MagnbError("a sharded scrape needs --shards N (the number of array tasks)")
        if nodes not in (None, 1):
            raise MagnbError("--nodes applies to training; scrape shards are array tasks")
        args = [str(data), str(path), str(shards)] + ([out] if out else [])
        first = ["sbatch", f"--array={_array(array, shards)}", *common, *extra]
        merge = ["sbatch", "--dependency=afterok:{jobid}", *common, *extra]
        return [
            [*first, scripts.path("scrape"), *args],
            [*merge, scripts.path("merge"), str(data), str(shards)] + ([out] if out else []),
        ]

    if kind == "sweep":
        configs = expand_sweep(path)
        if nodes not in (None, 1):
            raise MagnbError("sweep points run on one node each; --nodes is for one training")
        for strategy in sorted({c.strategy for c in configs}):
            _check_gpus(strategy, 1 if gpus is None else gpus, path, warn, "sweep.sbatch")
        cmd = ["sbatch", f"--array={_array(array, len(configs))}", *common, *extra]
        return [cmd + [scripts.path("sweep"), str(path)]]

    if array:
        raise MagnbError(
            "--array is for sweeps (a file with `sweep:` or `configs:`) and sharded scrapes; "
            "a training config is one run"
        )
    train = load_train_config(path)
    if (nodes is not None and nodes > 1) or train.strategy == "multiworker":
        if train.strategy != "multiworker":
            raise MagnbError(
                f"--nodes {nodes} trains with MultiWorkerMirroredStrategy: set "
                f"`strategy: multiworker` in the config (it says {train.strategy!r})",
                path,
            )
        node_opts = [f"--nodes={nodes}"] if nodes is not None else []
        return [["sbatch", *node_opts, *common, *extra, scripts.path("multinode"), str(path)]]
    if train.strategy == "mirrored" and gpus in (None, 2):
        return [["sbatch", *common, *extra, scripts.path("supercell"), str(path)]]
    _check_gpus(train.strategy, 1 if gpus is None else gpus, path, warn, "train.sbatch")
    return [["sbatch", *common, *extra, scripts.path("train"), str(path)]]


def _check_gpus(
    strategy: str, gpus: int, path: Path, warn: Callable[[str], None], script: str
) -> None:
    """An error for GPUs a strategy cannot use, a warning for a strategy left one device."""
    if gpus > 1 and strategy == "default":
        raise MagnbError(
            f"--gpus {gpus} with `strategy: default` would train on one device; use "
            "`strategy: mirrored` (or auto)",
            path,
        )
    if strategy == "mirrored" and gpus < 2:
        warn(
            f"{path} says `strategy: mirrored` but {script} gets {gpus} GPU(s) per run: "
            + (
                "it trains one replica; give --gpus 2 (or more)"
                if gpus == 1
                else "with no GPU it splits the CPU into logical devices (slow)"
            )
        )


def shell_text(commands: list[list[str]], env: dict[str, str] | None = None) -> str:
    """The calls as a shell snippet a user can paste (the dependent call reads ``$jobid``),
    after ``export`` lines for the variables the jobs need (:attr:`JobScripts.env`)."""
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted((env or {}).items())]
    if len(commands) == 1:
        return "\n".join([*lines, shlex.join(commands[0])])
    first = shlex.join([commands[0][0], "--parsable", *commands[0][1:]])
    dep = "--dependency=afterok:{jobid}"
    second = shlex.join(commands[1]).replace(shlex.quote(dep), dep.replace("{jobid}", '"$jobid"'))
    return "\n".join([*lines, f"jobid=$({first})", second])


def submit(
    commands: list[list[str]],
    out: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
) -> list[str]:
    """Run the sbatch calls (with ``env`` added to the environment the jobs get); returns the
    job ids."""
    if shutil.which("sbatch") is None:
        raise MagnbError("sbatch not found: run this on a Slurm login node (or use --dry-run)")
    ids: list[str] = []
    for cmd in commands:
        cmd = [c.replace("{jobid}", ids[-1]) if ids else c for c in cmd]
        run = [cmd[0], "--parsable", *cmd[1:]]
        done = subprocess.run(
            run, capture_output=True, text=True, env={**os.environ, **(env or {})}
        )
        if done.returncode != 0:
            raise MagnbError(f"{shlex.join(run)} failed: {done.stderr.strip() or done.stdout}")
        job = done.stdout.strip().split(";")[0]
        ids.append(job)
        out(f"submitted job {job}: {shlex.join(cmd)}")
    return ids


# --------------------------------------------------------------------------------------------
# multi-worker training under srun


def _visible_gpus() -> list[str]:
    """The GPUs Slurm gave this task (CUDA_VISIBLE_DEVICES), if the node has NVIDIA GPUs at all.

    Decided without TensorFlow, which must not start before the strategy is made. A node without
    the NVIDIA driver has none, whatever CUDA_VISIBLE_DEVICES says (a gres of another kind, or the
    test cluster's fake one).
    """
    if shutil.which("nvidia-smi") is None and not Path("/dev/nvidiactl").exists():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    try:
        done = subprocess.run(
            ["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(done.stdout.splitlines()) if line.startswith("GPU ")]


def expand_hostlist(hostlist: str) -> list[str]:
    """``vm[1-3],gpu07`` -> ``['vm1', 'vm2', 'vm3', 'gpu07']`` (Slurm's compressed host lists)."""
    from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import (
        expand_hostlist as tf_expand,
    )

    return tf_expand(hostlist)


def expand_tasks_per_node(spec: str) -> list[int]:
    """``2(x3),1`` -> ``[2, 2, 2, 1]`` (SLURM_STEP_TASKS_PER_NODE)."""
    out: list[int] = []
    for part in spec.split(","):
        count, _, rest = part.partition("(x")
        out.extend([int(count)] * (int(rest.rstrip(")")) if rest else 1))
    return out


def base_port(env: dict[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    if env.get(PORT_ENV):
        return int(env[PORT_ENV])
    return 20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000


def slurm_step(env: dict[str, str] | None = None) -> dict[str, Any]:
    """This task's place in its Slurm job step: rank, task count, hosts and tasks per host."""
    env = os.environ if env is None else env
    try:
        rank = int(env["SLURM_PROCID"])
        ntasks = int(env.get("SLURM_STEP_NUM_TASKS") or env["SLURM_NTASKS"])
        hosts = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
        per_node = expand_tasks_per_node(
            env.get("SLURM_STEP_TASKS_PER_NODE") or env["SLURM_TASKS_PER_NODE"]
        )
    except KeyError as exc:
        raise MagnbError(
            f"{exc.args[0]} is not set: multi-worker training runs as the tasks of a Slurm job "
            "step (srun), or with TF_CONFIG set by hand"
        ) from None
    if len(per_node) != len(hosts) or sum(per_node) != ntasks:
        raise MagnbError(
            f"Slurm step of {ntasks} tasks on {hosts} with tasks per node {per_node} does not add up"
        )
    return {"rank": rank, "ntasks": ntasks, "hosts": hosts, "tasks_per_node": per_node}


def cluster_spec(env: dict[str, str] | None = None) -> tuple[dict[str, list[str]], int]:
    """The ``{"worker": [host:port, ...]}`` spec of a Slurm step and this task's index in it.

    Tasks are placed as Slurm's default block distribution does (and as TensorFlow's
    SlurmClusterResolver assumes): the hosts sorted, ranks counted up host by host, one port per
    task on a host counting up from :func:`base_port`.
    """
    step = slurm_step(env)
    port = base_port(env)
    workers = []
    for host, n in sorted(zip(step["hosts"], step["tasks_per_node"], strict=True)):
        workers.extend(f"{host}:{port + k}" for k in range(n))
    return {"worker": workers}, step["rank"]


def tf_config(env: dict[str, str] | None = None) -> str:
    """TF_CONFIG (JSON) for this task of a Slurm step."""
    spec, rank = cluster_spec(env)
    return json.dumps({"cluster": spec, "task": {"type": "worker", "index": rank}})


def cluster_resolver() -> tuple[Any, str]:
    """A TensorFlow cluster resolver for this Slurm task, and which one it is.

    With GPUs on the node: TensorFlow's SlurmClusterResolver (each task gets its share of the GPUs
    Slurm allocated, by local task id). Without: magnb's own spec (:func:`cluster_spec`) in a
    SimpleClusterResolver, because SlurmClusterResolver cannot handle 0 GPUs per node.
    """
    import tensorflow as tf

    gpus = _visible_gpus()
    step = slurm_step()
    if gpus:
        per_node = max(step["tasks_per_node"])
        per_task = max(1, len(gpus) // per_node)
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=base_port(),
            gpus_per_node=len(gpus),
            gpus_per_task=per_task,
            auto_set_gpu=False,  # it would renumber from 0; keep the IDs Slurm gave
        )
        local = int(os.environ.get("SLURM_LOCALID", "0"))
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(
            gpus[local * per_task : (local + 1) * per_task]
        )
        return resolver, "SlurmClusterResolver"
    spec, rank = cluster_spec()
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type="worker", task_id=rank, rpc_layer="grpc"
    )
    return resolver, "magnb (no GPUs on the node; SlurmClusterResolver needs some)"


def multiworker_strategy() -> Any:
    """``MultiWorkerMirroredStrategy`` for this process: from TF_CONFIG if set, else from the Slurm
    job step it runs in. Must be called before TensorFlow runs any op. Prints which task this is."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        source = "TF_CONFIG"
    elif "SLURM_PROCID" in os.environ and (
        os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS")
    ):
        resolver, source = cluster_resolver()
    else:
        raise MagnbError(
            "strategy 'multiworker' needs its cluster: run it as the tasks of a Slurm job step "
            "(slurm/train_multinode.sbatch) or set TF_CONFIG"
        )
    spec = resolver.cluster_spec().as_dict()
    task_type, task_id = resolver.task_type, resolver.task_id
    workers = spec.get("worker", [])
    print(
        f"magnb: multi-worker task {task_id} of {len(workers)} ({task_type}), cluster {workers}, "
        f"from {source}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}",
        flush=True,
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    _fix_keras_reductions(strategy)
    return strategy


def _fix_keras_reductions(strategy: Any) -> None:
    """Make ``strategy.reduce`` accept what Keras 3's TensorFlow trainer gives it.

    With more than one worker, Keras 3.15 fails in ``fit`` twice (keras-team/keras#20585):
    ``_maybe_symbolic_build`` reduces the whole ``(x, y)`` batch structure in one call, which
    CollectiveAllReduceStrategy turns into a tensor conversion of a tuple of PerReplica values
    ("Attempt to convert a value (PerReplica...) with an unsupported type"), and
    ``reduce_per_replica`` reduces the scalar loss and metrics with ``axis=0`` ("Invalid reduction
    dimension 0 for input with 0 dimensions"). Reducing leaf by leaf, scalars over replicas only,
    is what both calls mean; with it, 2 workers train exactly as MirroredStrategy on 2 devices.
    """
    import tensorflow as tf

    original = strategy.reduce

    def reduce(reduce_op: Any, value: Any, axis: Any = None) -> Any:
        def one(v: Any) -> Any:
            local = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            rank = getattr(getattr(local, "shape", None), "rank", None)
            return original(reduce_op, v, axis=None if rank == 0 else axis)

        return tf.nest.map_structure(one, value)

    strategy.reduce = reduce


# --------------------------------------------------------------------------------------------
# magnb doctor


def _slurm_gpus() -> str:
    """The GPUs Slurm allocated to this job ('' outside a job or without a gpu gres)."""
    if not os.environ.get("SLURM_JOB_ID"):
        return ""
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if os.environ.get(key):
            return os.environ[key]
    return ""


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _devices(backend: str) -> list[tuple[str, Any, str]]:
    """(name, handle, mixed-precision note) for each device the backend sees."""
    out: list[tuple[str, Any, str]] = []
    flags = _cpu_flags()
    cpu_note = "mixed_bfloat16: " + (
        "native (AVX512_BF16/AMX)" if flags & {"avx512_bf16", "amx_bf16"} else "emulated (slow)"
    )
    if backend == "tensorflow":
        import tensorflow as tf

        for d in tf.config.list_logical_devices("CPU")[:1]:
            out.append((d.name.split("device:")[-1], d.name, cpu_note))
        physical = tf.config.list_physical_devices("GPU")
        for d, p in zip(tf.config.list_logical_devices("GPU"), physical, strict=False):
            details = tf.config.experimental.get_device_details(p)
            cc = details.get("compute_capability")
            name = details.get("device_name", "GPU")
            out.append((d.name.split("device:")[-1], d.name, f"{name}, " + _mixed_note(cc)))
    elif backend == "jax":
        import jax

        for d in jax.devices("cpu")[:1]:
            out.append(("CPU:0", d, cpu_note))
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        for i, d in enumerate(gpus):
            cc = getattr(d, "compute_capability", None)
            cc_t = tuple(int(x) for x in str(cc).split(".")) if cc else None
            out.append((f"GPU:{i}", d, f"{d.device_kind}, " + _mixed_note(cc_t)))
    else:
        out.append(("default", None, "(device listing not implemented for this backend)"))
    return out


def _mixed_note(cc: Any) -> str:
    if not cc:
        return "compute capability unknown"
    label = ".".join(str(c) for c in cc)
    if tuple(cc) >= (8, 0):
        return f"compute {label}: mixed_float16 and mixed_bfloat16 on tensor cores"
    if tuple(cc) >= (7, 0):
        return f"compute {label}: mixed_float16 on tensor cores"
    return f"compute {label}: mixed precision gives no speed-up (needs >= 7.0)"


def _tiny_fit(backend: str, handle: Any, steps: int, batch: int = 8) -> dict[str, Any]:
    """Train magnb's default model (periodic convolutions) on generated data on one device."""
    import contextlib

    import keras
    import numpy as np

    from magnb.model import build_model

    if backend == "tensorflow" and handle is not None:
        import tensorflow as tf

        scope: Any = tf.device(handle)
    elif backend == "jax" and handle is not None:
        import jax

        scope = jax.default_device(handle)
    else:
        scope = contextlib.nullcontext()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * steps, 8, 8, 8, 2)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2, 3)) > x[..., 1].mean(axis=(1, 2, 3))).astype("int32")
    config = TrainConfig(filters=(4,), kernel_size=(3,), pool=(2,), dense=(8,), dropout=0.0)
    with scope:
        keras.utils.set_random_seed(0)
        model = build_model(config, (8, 8, 8, 2), 2)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        losses = [float(model.train_on_batch(x[:batch], y[:batch]))]  # compiles
        start = time.perf_counter()
        for i in range(1, steps):
            sl = slice(i * batch, (i + 1) * batch)
            losses.append(float(model.train_on_batch(x[sl], y[sl])))
        seconds = time.perf_counter() - start
    finite = all(np.isfinite(losses))
    rate = batch * (steps - 1) / seconds if seconds > 0 and steps > 1 else float("nan")
    return {"ok": finite, "losses": losses, "samples_per_second": rate}


def doctor(steps: int = 5, require_gpu: bool = False, out: Callable[[str], None] = print) -> int:
    """Print the environment, train a tiny model on each visible device; 0 if all is well.

    Exit status 1: a device failed to train; 3: Slurm allocated GPUs (or ``require_gpu``) but the
    backend sees none (no CUDA build of TensorFlow, no driver, a wrong CUDA_VISIBLE_DEVICES).
    """
    import numpy as np

    import magnb

    out("magnb doctor")
    out(f"  python      {platform.python_version()} ({sys.executable})")
    out(f"  platform    {platform.platform()}, {os.cpu_count()} CPUs")
    out(f"  magnb       {magnb.__version__} ({Path(magnb.__file__).parent})")
    out(f"  numpy       {np.__version__}")
    import keras

    backend = keras.backend.backend()
    out(f"  keras       {keras.__version__}, backend {backend} (KERAS_BACKEND)")
    if backend == "tensorflow":
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        cuda = build.get("cuda_version") if tf.test.is_built_with_cuda() else None
        out(f"  tensorflow  {tf.__version__}, " + (f"CUDA {cuda}" if cuda else "CPU-only build"))
    elif backend == "jax":
        import jax

        out(f"  jax         {jax.__version__}, default backend {jax.default_backend()}")
    job = os.environ.get("SLURM_JOB_ID")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if job:
        out(
            f"  slurm       job {job} on {os.environ.get('SLURMD_NODENAME', platform.node())}, "
            + (f"GPU ids: {_slurm_gpus()}" if _slurm_gpus() else "no GPU")
        )
    else:
        out("  slurm       not in a Slurm job")
    out(f"  CUDA_VISIBLE_DEVICES={'(unset)' if visible is None else visible}")
    devices = _devices(backend)
    out("devices:")
    for name, _, note in devices:
        out(f"  {name:<8} {note}")
    n_gpu = sum(1 for name, _, _ in devices if name.startswith("GPU"))
    out(f"tiny training: default model (periodic conv 3^3, 8^3 x 2 input), {steps} steps, batch 8:")
    status = 0
    for name, handle, _ in devices:
        try:
            r = _tiny_fit(backend, handle, steps)
        except Exception as exc:  # a broken device is the finding; report it and go on
            out(f"  {name:<8} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            status = 1
            continue
        verdict = "ok" if r["ok"] else "FAILED (non-finite loss)"
        status = status if r["ok"] else 1
        out(
            f"  {name:<8} {verdict}: loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}, "
            f"{r['samples_per_second']:.0f} samples/s"
        )
    allocated = _slurm_gpus()
    if n_gpu == 0 and (allocated or require_gpu):
        why = f"Slurm allocated GPU ids {allocated}" if allocated else "--require-gpu was given"
        out(
            f"ERROR: {why} but {backend} sees no GPU: install the GPU build (pip install "
            "'magnb[gpu]', or jax[cuda12] with KERAS_BACKEND=jax), load the CUDA modules, "
            "and check that the node has the NVIDIA driver (nvidia-smi)"
        )
        status = status or 3
    out("doctor: " + ("all good" if status == 0 else f"problems found (exit status {status})"))
    return status


# --------------------------------------------------------------------------------------------
# python -m magnb.slurm: the helpers the job scripts call


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m magnb.slurm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="check a config, make its run folder, print it")
    p.add_argument("spec", help="training config, or sweep file with --index")
    p.add_argument("--index", type=int, help="the point of a sweep (SLURM_ARRAY_TASK_ID)")
    p.add_argument("--strategy", help="the strategy the calling script needs")
    p = sub.add_parser("leg", help="what this job's training does in a prepared run folder")
    p.add_argument("run_dir")
    p = sub.add_parser("sweep-size", help="number of configs in a sweep file")
    p.add_argument("spec")
    sub.add_parser("tf-config", help="TF_CONFIG for this task of a Slurm step")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            print(prepare(args.spec, args.index, args.strategy))
        elif args.command == "leg":
            print(" ".join(leg(args.run_dir)))
        elif args.command == "sweep-size":
            print(len(expand_sweep(args.spec)))
        else:
            print(tf_config())
    except MagnbError as exc:
        print(f"magnb: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
