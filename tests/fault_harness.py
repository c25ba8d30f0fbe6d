"""Fault injection over every publish point of a stage, after SQLite's crash and I/O-error tests.

For one stage (collect, split, scrape, merge, train) the harness

1. builds the stage's starting state once (``pristine``) and runs the stage on a copy of it
   without faults, logging every fault point it reaches (``MAGNB_FAULT_LOG``): the reference;
2. for each point k: on a fresh copy of ``pristine``, runs the stage with ``MAGNB_FAULT=kill@k``
   (SIGKILL right after that publish step), then runs it again without faults;
3. for each write point k: the same with ``enospc@k`` or ``eio@k`` (alternating): the faulty run
   must end with one line of MagnbError naming a file, and the re-run must finish;
4. compares each re-run's outputs with the reference by content (:func:`fingerprint`), and checks
   that no temporary file or ``.incomplete`` marker is left.

Each run is a fork of this process, which imported magnb (and Keras, for train) once, so a case
costs the stage's own work and not the imports. ``python -m tests.fault_harness STAGE WORK``
prints a JSON report; tests/test_faults.py runs it per stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO_ROOT = Path(__file__).resolve().parents[1]
KILL_EXIT = -signal.SIGKILL

# --------------------------------------------------------------------------------------------
# what a stage's output is, by content


def _h5_content(path: Path) -> dict[str, str]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for k, v in sorted(f.attrs.items()):
            if k != "build_id":  # new for every build by design
                out[f"@{k}"] = str(v)

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = hashlib.sha256(obj[()].tobytes()).hexdigest()
                for k, v in sorted(obj.attrs.items()):
                    out[f"{name}@{k}"] = str(v)

        f.visititems(visit)
    return out


def _frame(path: Path, drop: tuple[str, ...] = ()) -> str:
    import pandas as pd

    frame = pd.read_parquet(path)
    frame = frame.drop(columns=[c for c in drop if c in frame])
    return frame.to_json(orient="split", default_handler=str)


def _manifest(path: Path) -> str:
    import pandas as pd

    from magnb.collect import content_of

    frame = pd.read_parquet(path).drop(columns=["collected_at"])
    # stats of files (inodes, times) differ between folders; their content must not
    frame["files"] = [json.dumps(content_of(f)) for f in frame["files"]]
    return frame.to_json(orient="split")


def fingerprint(root: Path) -> dict[str, Any]:
    """Every file under ``root`` by content, with what legitimately differs between two runs
    (times, inodes, build ids, durations, the resume point) left out. Paths are relative."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() or p.name.endswith(".lock"):
            continue
        if "/backup/" in f"/{rel}":
            continue  # Keras' resume state: removed once a run finishes
        name = p.name
        if name == "manifest.parquet":
            out[rel] = _manifest(p)
        elif name.endswith(".parquet"):
            out[rel] = _frame(p)
        elif name.endswith(".h5"):
            out[rel] = _h5_content(p)
        elif name == "metrics.json":
            m = json.loads(p.read_text())
            for key in ("train_seconds", "train_samples_per_second", "resumed_from_epoch"):
                m.pop(key, None)
            m.pop("files", {})  # model.keras's zip holds its save time; weights compared below
            out[rel] = m
        elif name == "config.yaml":
            import yaml

            config = yaml.safe_load(p.read_text())
            for key in ("dataset_dir", "runs_dir"):  # where the case lives
                config.pop(key, None)
            out[rel] = config
        elif name == "environment.json":
            out[rel] = sorted(json.loads(p.read_text()))
        elif name == "model.keras":
            out[rel] = _weights(p)
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _weights(path: Path) -> dict[str, str]:
    """The weights inside a ``.keras`` file (a zip holding ``model.weights.h5``), read without
    Keras: this process must not start TensorFlow's runtime before it forks the runs."""
    import io
    import zipfile

    with zipfile.ZipFile(path) as z:
        return _h5_content_of(io.BytesIO(z.read("model.weights.h5")))


def _h5_content_of(source: Any) -> dict[str, str]:
    import h5py

    out = {}
    with h5py.File(source, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = hashlib.sha256(obj[()].tobytes()).hexdigest()

        f.visititems(visit)
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary files and ``.incomplete`` markers under ``root``."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob(".*")
        if ".tmp-" in p.name or p.name.endswith(".incomplete")
    )


def diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k)]


# --------------------------------------------------------------------------------------------
# the stages


def _tree(work: Path) -> Path:
    """A small generated tree (FM and AFM of 4 compounds; 1 for collect alone, whose points are
    per file) plus one bad calculation."""
    from magnb.synth import SynthConfig, write_demo_tree

    tree = work / "tree"
    if not tree.exists():
        n = 1 if work.name == "collect" else 4
        write_demo_tree(tree, SynthConfig(n_compounds=n, grid=(8, 8, 32)), progress=False)
        bad = tree / "Bad2X6" / "FM"
        bad.mkdir(parents=True)
        (bad / "CHGCAR").write_text("not a CHGCAR\n")
    return tree


def _collect(data: Path, work: Path) -> None:
    from magnb.collect import CollectConfig, collect

    collect(CollectConfig(source=_tree(work), data_dir=data, progress=False))


def _split(data: Path, work: Path) -> None:
    from magnb.split import SplitConfig, split_all

    split_all(SplitConfig(data_dir=data, workers=1, progress=False))


def _scrape_config(data: Path, **kw: Any) -> Any:
    from magnb.dataset import ScrapeConfig

    settings = {
        "grid": (8, 8, 8),
        "slab_window": 12.0,
        "normalization": "standard",
        "fractions": (0.5, 0.25, 0.25),
        "kfold": 0,
        "workers": 1,
        "progress": False,
        **kw,
    }
    return ScrapeConfig(data_dir=data, **settings)


def _scrape(data: Path, work: Path) -> None:
    from magnb.dataset import scrape

    scrape(_scrape_config(data))


def _merge(data: Path, work: Path) -> None:
    from magnb.dataset import merge_shards

    merge_shards(data, 2)


def _train_config(data: Path) -> Any:
    from magnb.config import TrainConfig, from_mapping

    return from_mapping(
        TrainConfig,
        {
            "dataset_dir": str(data),
            "runs_dir": str(data / "runs"),
            "filters": [2],
            "kernel_size": [3],
            "pool": [2],
            "dense": [4],
            "epochs": 2,
            "batch_size": 2,
            "learning_rate": 0.01,
            "workers": 1,
        },
    )


def _train(data: Path, work: Path) -> None:
    from magnb.train import train

    train(_train_config(data), progress=False)


def _prepare(upto: str, data: Path, work: Path) -> None:
    """The state a stage starts from: every stage before it, run once."""
    from magnb.dataset import scrape

    _tree(work)
    order = ["collect", "split", "scrape"]
    for stage in order[: order.index(upto)] if upto in order else order:
        STAGES[stage][0](data, work)
    if upto == "merge":
        for i in range(2):
            scrape(_scrape_config(data, shard=(i, 2)))
    if upto == "train":
        scrape(_scrape_config(data, grid=(4, 4, 4), normalization="maxabs"))


#: stage -> (run it, which fault points get a kill)
STAGES: dict[str, tuple[Callable[[Path, Path], None], tuple[str, ...]]] = {
    "collect": (_collect, ("write", "flush", "rename", "remove")),
    "split": (_split, ("write", "flush", "rename", "remove")),
    "scrape": (_scrape, ("write", "flush", "rename", "remove")),
    "merge": (_merge, ("write", "flush", "rename", "remove")),
    # a kill before a rename leaves what a kill after the previous one does, plus a temporary
    # file; for train (seconds per run) the kills go after every publish step, and once before
    # the first (a temporary file left)
    "train": (_train, ("rename", "remove")),
}

# --------------------------------------------------------------------------------------------
# runs in forked children


def _child(run: Callable, data: Path, work: Path, env: dict[str, str], report: Path) -> int:
    """Run the stage in a fork with ``env`` set; (exit status, message) through ``report``."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            from magnb import _io
            from magnb.errors import MagnbError

            os.environ.update(env)
            _io.reset_faults()
            try:
                run(data, work)
            except MagnbError as exc:
                report.write_text(str(exc))
                code = 2
            except BaseException:
                report.write_text(traceback.format_exc())
                code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run_stage_faults(stage: str, work: Path, limit: int | None = None) -> dict[str, Any]:
    run, kill_kinds = STAGES[stage]
    if stage == "train":
        import keras  # noqa: F401 (imported once here, before the forks)
    work.mkdir(parents=True, exist_ok=True)
    pristine = work / "pristine"
    if pristine.exists():
        shutil.rmtree(pristine)
    pristine.mkdir()
    _prepare(stage, pristine, work)
    report = work / "report.txt"

    ref = work / "reference"
    shutil.copytree(pristine, ref, symlinks=True)
    log = work / "points.log"
    log.unlink(missing_ok=True)
    code = _child(run, ref, work, {"MAGNB_FAULT_LOG": str(log)}, report)
    if code != 0:
        raise RuntimeError(f"the reference run of {stage} failed: {report.read_text()}")
    expected = fingerprint(ref)
    points = [line.split("\t") for line in log.read_text().splitlines()]

    cases = []
    writes = 0
    failed_files: set[str] = set()
    for k, kind, path in points:
        if kind in kill_kinds or (stage == "train" and k == points[0][0]):
            cases.append(("kill", int(k), kind, path))
        if kind in ("write", "flush"):
            if stage == "train":  # seconds a run: each file's first write fails, once
                name = os.path.basename(path)
                if name in failed_files:
                    continue
                if kind == "write" and len(failed_files) % 2:  # every other file: its flush
                    continue
                failed_files.add(name)
            cases.append(("enospc" if writes % 2 == 0 else "eio", int(k), kind, path))
            writes += 1
    if limit is not None:
        cases = cases[:limit]

    results = []
    for action, k, kind, path in cases:
        case = work / "case"
        if case.exists():
            shutil.rmtree(case)
        shutil.copytree(pristine, case, symlinks=True)
        report.unlink(missing_ok=True)
        first = _child(run, case, work, {"MAGNB_FAULT": f"{action}@{k}"}, report)
        message = report.read_text() if report.exists() else ""
        report.unlink(missing_ok=True)
        second = _child(run, case, work, {}, report)
        problems = []
        if action == "kill" and first != KILL_EXIT:
            problems.append(f"the run with the kill ended with {first}: {message[-500:]}")
        if action != "kill":
            if first != 2:
                problems.append(f"the failing write gave exit {first}, not a MagnbError: "
                                f"{message[-800:]}")  # fmt: skip
            elif "\n" in message.strip() or os.path.basename(path) not in message:
                problems.append(f"the error is not one line naming the file: {message!r}")
        if second != 0:
            problems.append(f"the re-run failed ({second}): {report.read_text()[-800:]}")
        else:
            changed = diff(expected, fingerprint(case))
            if changed:
                problems.append(f"outputs differ from the uninterrupted run: {changed}")
            left = leftovers(case)
            if left:
                problems.append(f"left behind: {left}")
        results.append(
            {"action": action, "k": k, "kind": kind, "path": os.path.relpath(path, work),
             "message": message.strip()[:300], "problems": problems}
        )  # fmt: skip
    return {
        "stage": stage,
        "points": len(points),
        "kills": sum(r["action"] == "kill" for r in results),
        "write_errors": sum(r["action"] != "kill" for r in results),
        "results": results,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    out = run_stage_faults(sys.argv[1], Path(sys.argv[2]))
    print(json.dumps(out))
