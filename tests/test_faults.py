"""Guarantees under faults, by injecting them: a SIGKILL right after every publish step and a
failing write (ENOSPC, EIO) at every write point of every stage, a real file system that fills
up, and two runs of a stage at once. See tests/fault_harness.py for how the faults are placed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from magnb.errors import MagnbError, WriteError
from tests.conftest import REPO_ROOT
from tests.fault_harness import (
    STAGES,
    _prepare,
    diff,
    fingerprint,
    leftovers,
)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_every_publish_point_killed_and_every_write_failed(stage, tmp_path):
    """Each case: the stage on a fresh copy, killed (or a write failing) at point k; then run
    again; its outputs must equal an uninterrupted run's and nothing may be left behind."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fault_harness", stage, str(tmp_path / stage)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    bad = [r for r in report["results"] if r["problems"]]
    assert report["points"] > 0 and report["kills"] > 0 and report["write_errors"] > 0
    assert not bad, json.dumps(bad[:5], indent=1)
    print(
        f"\n{stage}: {report['points']} fault points, {report['kills']} kills, "
        f"{report['write_errors']} failed writes, nothing lost"
    )


# --------------------------------------------------------------------------------------------
# a real file system that fills up


def _start_and_reference(stage: str, work: Path) -> tuple[Path, Path]:
    """The state ``stage`` starts from (``work/pristine``) and an uninterrupted run of it on a
    copy (``work/reference``)."""
    pristine = work / "pristine"
    pristine.mkdir(parents=True)
    _prepare(stage, pristine, work)
    reference = work / "reference"
    shutil.copytree(pristine, reference)
    STAGES[stage][0](reference, work)
    return pristine, reference


@contextlib.contextmanager
def tmpfs(path: Path, size: int):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if done.returncode != 0:
        pytest.fail("cannot mount a tmpfs (CI runs as root; this test needs mount(8))")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _grow(path: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _du(path: Path) -> int:
    """Bytes a tmpfs holds for the files under ``path`` (whole pages)."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["collect", "split", "scrape", "train"])
def test_a_disk_that_fills_up(stage, tmp_path):
    """The stage's data folder on a tmpfs with room for its inputs and a part of its outputs:
    a clear WriteError naming a file; after the disk is made larger, the re-run gives exactly
    the uninterrupted output."""
    work = tmp_path / stage
    run = STAGES[stage][0]
    pristine, reference = _start_and_reference(stage, work)
    expected = fingerprint(reference)
    before, after = _du(pristine), _du(reference)
    # room for the inputs and about half of what the stage adds
    size = before + (after - before) // 2
    with tmpfs(work / "disk", size) as disk:
        data = disk / "data"
        shutil.copytree(pristine, data)
        with pytest.raises(WriteError) as info:
            run(data, work)
        message = str(info.value)
        assert "no space left" in message and "\n" not in message
        assert str(disk) in message  # it names the file
        _grow(disk, 4 * after + (1 << 24))
        run(data, work)
        assert diff(expected, fingerprint(data)) == []
        assert leftovers(data) == []


# --------------------------------------------------------------------------------------------
# two runs at once


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["collect", "split", "scrape"])
def test_two_runs_at_once_give_the_single_run_output(stage, tmp_path):
    """Two runs of a stage on one data folder, started together: one writes, the other is
    refused with a clear message (or finds the work done); the output is the single run's."""
    work = tmp_path / stage
    pristine, reference = _start_and_reference(stage, work)
    expected = fingerprint(reference)

    data = work / "data"
    shutil.copytree(pristine, data)
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[3]);"
        "from tests.fault_harness import STAGES; from magnb.errors import MagnbError\n"
        "try:\n    STAGES[sys.argv[1]][0](Path(sys.argv[2]), Path(sys.argv[4]))\n"
        "except MagnbError as exc:\n    print(exc, file=sys.stderr); sys.exit(2)\n"
    )
    cmd = [sys.executable, "-c", code, stage, str(data), str(REPO_ROOT), str(work)]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert any(code == 0 for code, _ in outcomes), outcomes
    for code, err in outcomes:
        assert code == 0 or (code == 2 and "another magnb" in err), outcomes
    assert diff(expected, fingerprint(data)) == []
    assert leftovers(data) == []


def test_a_second_writer_is_refused_at_once(tmp_path):
    """While one process holds a stage's lock, another gets a MagnbError, not a wait."""
    from magnb._io import stage_lock

    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with stage_lock(tmp_path, "scrape"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(MagnbError, match="another magnb scrape is writing"):
            with stage_lock(tmp_path, "scrape"):
                pass
    finally:
        release.set()
        t.join()
    with stage_lock(tmp_path, "scrape"):  # free again once released
        pass


def test_a_shard_starting_leaves_another_shards_file_in_flight_alone(tmp_path):
    """The shards of one Slurm array write into one folder at once, each under its own stage
    lock. One starting while another is writing a file must not take that file's temporary
    for a killed run's leftover (it did: the first shard's publish failed, FileNotFoundError)."""
    from magnb._io import atomic_path, stage_writer

    out = tmp_path / "sharded"
    with stage_writer(out, "scrape.shard-0-of-2"):
        with atomic_path(out / "dataset.shard-0-of-2.h5") as tmp:
            tmp.write_bytes(b"shard 0")
            with stage_writer(out, "scrape.shard-1-of-2"):
                assert tmp.exists()
    assert (out / "dataset.shard-0-of-2.h5").read_bytes() == b"shard 0"
    # once alone, a writer removes what a killed run left (in another process: its own lock)
    left = out / ".dataset.shard-1-of-2.h5.tmp-killed"
    left.write_bytes(b"half")
    with stage_writer(out, "scrape.shard-1-of-2"):
        assert not left.exists()
    code = (
        "import sys; from magnb._io import stage_writer\nwith stage_writer(sys.argv[1], 'x'): pass"
    )
    with stage_writer(out, "scrape.shard-0-of-2"):  # a writer in this process: not alone
        left.write_bytes(b"half")
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=REPO_ROOT)
        assert left.exists()
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=REPO_ROOT)
    assert not left.exists()


@pytest.mark.slow
def test_a_resumed_run_says_where_it_resumed_and_matches_an_uninterrupted_one(tmp_path):
    """Killed after the backup of epoch 1 of 3: the re-run resumes at 2 (not 0), records
    epochs_trained 3 and resumed_from_epoch 2, and ends with the uninterrupted run's history and
    weights."""
    from tests.fault_harness import _train_config

    work = tmp_path / "train"
    pristine = work / "pristine"
    pristine.mkdir(parents=True)
    _prepare("train", pristine, work)
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]);"
        "from dataclasses import replace; from tests.fault_harness import _train_config;"
        "from magnb.train import train;"
        "train(replace(_train_config(Path(sys.argv[1])), epochs=3), progress=False)"
    )

    def run(data: Path, env: dict) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code, str(data), str(REPO_ROOT)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )

    reference = work / "reference"
    shutil.copytree(pristine, reference)
    log = work / "points.log"
    assert run(reference, {"MAGNB_FAULT_LOG": str(log)}).returncode == 0
    points = [line.split("\t") for line in log.read_text().splitlines()]
    # the point after epoch 1's random state is saved comes after Keras' backup of epoch 1
    rng_saved = [int(k) for k, kind, path in points if kind == "rename" and "epoch-1.npz" in path]
    assert len(rng_saved) == 1, points
    kill_at = rng_saved[0] + 1
    data = work / "data"
    shutil.copytree(pristine, data)
    assert run(data, {"MAGNB_FAULT": f"kill@{kill_at}"}).returncode == -9
    done = run(data, {})
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = data / "runs" / replace(_train_config(data), epochs=3).run_id
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs_trained"] == 3
    assert diff(fingerprint(reference), fingerprint(data)) == []
