"""Helpers the benchmark scripts share: the machine they ran on, peak memory of a process, fresh
worker subprocesses, and writing one ``## `` section of ``bench/RESULTS.md``.

Peak memory is read from ``/proc/self/status``: a worker resets its high-water mark (``VmHWM``) by
writing ``5`` to ``/proc/self/clear_refs`` after its imports and warm-up, notes its resident size
then (the baseline), runs the measured call and reports ``VmHWM - baseline``. Unlike
``tracemalloc`` this sees numpy's and HDF5's C allocations. Where ``clear_refs`` cannot be written
the fallback is ``ru_maxrss`` (the peak of the whole process, imports included), flagged in the
result.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
MIB = 1024 * 1024

PREAMBLE = "# Benchmark results\n\nWritten by the scripts in `bench/`; one section each.\n"


# --------------------------------------------------------------------------------------------
# the machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('unknown CPU' elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ram_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def package_versions(packages: Iterable[str]) -> str:
    """``name x.y.z`` for each installed distribution, comma separated."""
    out = []
    for name in packages:
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def git_revision() -> str:
    """The checkout's commit (short), with ``+ uncommitted changes`` when the tree is dirty."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not rev:
        return "unknown"
    return rev + (" + uncommitted changes" if dirty else "")


def machine_lines(packages: Iterable[str], load_at_start: float | None = None) -> list[str]:
    """Markdown bullet lines: machine, software versions, date and load average (at the start,
    when given, and at the end of the run: other work on the machine skews timings)."""
    ram = ram_gib()
    ram_text = f"{ram:.1f} GiB RAM" if ram is not None else "RAM unknown"
    load = ""
    end = load_average()
    if end is not None:
        start = f"{load_at_start:.2f} at the start, " if load_at_start is not None else ""
        load = f" (1-min load average: {start}{end:.2f} at the end of the run)"
    return [
        f"- Machine: {cores()} CPU cores ({cpu_model()}), {ram_text}, "
        f"{platform.system()} {platform.release()} {platform.machine()}",
        f"- Software: Python {platform.python_version()}, {package_versions(packages)}; "
        f"checkout {git_revision()}",
        f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}{load}",
    ]


# --------------------------------------------------------------------------------------------
# memory of this process


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    kib = _status_kib("VmRSS")
    if kib is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kib / 1024


@dataclass
class PeakMemory:
    """Peak resident memory of a block of code above the resident size when it started (MiB).

    ``exact`` is False when the kernel's high-water mark could not be reset, in which case
    ``peak_mib`` is the whole process's peak (imports included) minus the baseline: an upper bound.
    """

    baseline_mib: float = 0.0
    peak_mib: float = 0.0
    exact: bool = True

    @property
    def delta_mib(self) -> float:
        return max(self.peak_mib - self.baseline_mib, 0.0)


def reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    """This process's resident high-water mark, MiB (since the last :func:`reset_peak`)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kib / 1024


@contextlib.contextmanager
def measure_peak() -> Iterator[PeakMemory]:
    """``with measure_peak() as mem: ...`` then ``mem.delta_mib`` is the block's peak above its
    starting resident size."""
    import gc

    gc.collect()
    mem = PeakMemory(exact=reset_peak())
    mem.baseline_mib = rss_mib()
    try:
        yield mem
    finally:
        mem.peak_mib = peak_mib()


def children_peak_mib() -> float:
    """Largest peak RSS of any waited-for child process (absolute, shared pages included), MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------
# worker subprocesses


class WorkerTimeout(RuntimeError):
    """A worker ran longer than its time limit and was stopped."""


def run_worker(
    script: Path, spec: dict[str, Any], timeout_s: float | None = None, env: dict | None = None
) -> dict[str, Any]:
    """Run ``python script --worker JSON`` in a fresh process; return the last JSON line it prints.

    Raises :class:`WorkerTimeout` after ``timeout_s`` and RuntimeError (with stderr's tail) when
    the worker fails.
    """
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec)]
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=full_env, cwd=ROOT
        )
    except subprocess.TimeoutExpired as exc:
        raise WorkerTimeout(f"worker {spec} ran past {timeout_s} s") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"worker {spec} printed no result:\n{proc.stdout[-2000:]}")


def emit(result: dict[str, Any]) -> None:
    """Print a worker's result as the one JSON line :func:`run_worker` reads."""
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# RESULTS.md


def _split_sections(text: str) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("## ") and current:
            chunks.append("".join(current))
            current = []
        current.append(line)
    if current:
        chunks.append("".join(current))
    return chunks


def write_section(heading: str, section: str, path: Path = RESULTS) -> None:
    """Replace the section that starts with ``heading`` in RESULTS.md (append it when absent),
    keeping every other section as it is.

    The file is re-read right before writing, under an advisory lock on its folder (for the other
    scripts that use this helper), and replaced atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not section.startswith(heading):
        raise ValueError(f"section must start with its heading {heading!r}")
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else PREAMBLE
        chunks = _split_sections(text)
        replaced = False
        for i, chunk in enumerate(chunks):
            if chunk.splitlines()[0].strip() == heading.strip():
                chunks[i] = section.rstrip("\n") + "\n\n"
                replaced = True
        if not replaced:
            if chunks and not chunks[-1].endswith("\n\n"):
                chunks[-1] = chunks[-1].rstrip("\n") + "\n\n"
            chunks.append(section.rstrip("\n") + "\n")
        out = "".join(chunks).rstrip("\n") + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".RESULTS.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        fcntl.flock(dir_fd, fcntl.LOCK_UN)
        os.close(dir_fd)


# --------------------------------------------------------------------------------------------
# formatting


def fmt_s(seconds: float) -> str:
    """A duration with sensible precision."""
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 100:
        return f"{seconds:.2f} s"
    return f"{seconds:.0f} s"


def fmt_mib(mib: float) -> str:
    """Memory in MiB (GiB above 10 GiB)."""
    if mib >= 10240:
        return f"{mib / 1024:.1f} GiB"
    if mib >= 100:
        return f"{mib:.0f} MiB"
    return f"{mib:.1f} MiB"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def publish(heading: str, section: str, out: Path | None, quick: bool, no_write: bool) -> None:
    """Print a benchmark's section and write it to ``out`` (RESULTS.md unless ``quick``)."""
    print()
    print(section)
    target = out if out is not None else (None if quick else RESULTS)
    if target is not None and not no_write:
        write_section(heading, section, target)
        print(f"written to {target}")
