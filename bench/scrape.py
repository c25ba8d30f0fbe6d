"""Benchmark: magnb's stage 03 (scrape) against an in-memory pandas table, and the resampling alone.

A base set of distinct demo calculations (``--distinct``, default 100: 50 compounds x FM/AFM at
the demo's 24 x 24 x 96 grid) is generated, collected and split once. For each N (100, 400, 1600)
a data folder gets N split files, hard links to the base files under new calc_ids, and a
``split/index.parquet`` listing them, so the samples are real split files without generating
1600 calculations. Settings: grid 24^3 after a 12 A slab window, channels m+ and m-.

Each N runs, each in a fresh process:

- *resampling alone*: ``make_sample`` over the N split files, results dropped, in the process
  (workers = 1) and in a pool of 2 processes (workers = 2, the pool's start timed too);
- *labels*: ``prepared_table`` alone (label table from the split index, grouped splits), and
  in the same process the 5-fold grouped splits of that table by magnb's
  ``grouped_stratified_folds`` and by scikit-learn's ``StratifiedGroupKFold`` (its import timed
  apart), checked equal (since issue 15 the first is a wrapper around the second: the row now
  shows the wrapper's cost and the import's, which stage 03 pays once per scrape);
- *magnb scrape*: ``scrape(ScrapeConfig(..., workers=1))`` and ``workers=2`` (labels, splits,
  samples streamed into the gzip-compressed ``dataset.h5``, ``table.parquet``), and
  ``workers=1`` again with ``ARROW_DEFAULT_MEMORY_POOL=system`` (for its memory growth);
- *pandas in memory*: what the seed project did: the same label table, a list of dict rows with
  each sample's array in a column, ``pd.DataFrame(rows)``, then ``np.save`` of the stacked
  samples and the labels to parquet.

Throughput is N / wall time of the whole call. Peak memory is the process's resident high-water
mark above its resident size after imports (for workers = 2, the main process; the workers'
peaks are shown apart). CPU (user, system, minor page faults of the process and its children) is
recorded for the resampling and scrape runs. Targets (issue "Stage 03 scrape"): scrape throughput
(workers = 1) within 1.3x of the resampling alone, i.e. time <= 1.3 x resampling time (workers = 2
is also shown against the resampling in 2 processes); scrape's peak memory flat in N (slope below
10% of one sample's size per added sample), where the pandas table grows linearly.

    python bench/scrape.py            # N = 100, 400, 1600 (~4 min on 2 cores); writes RESULTS.md
    python bench/scrape.py --quick    # N = 100, 400
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (  # noqa: E402
    RESULTS,
    children_peak_mib,
    emit,
    fmt_mib,
    fmt_s,
    load_average,
    machine_lines,
    markdown_table,
    measure_peak,
    publish,
    run_worker,
)

HEADING = "## scrape: dataset build"
GRID = (24, 24, 24)
SLAB_WINDOW = 12.0
CHANNELS = ("m+", "m-")
TIME_TARGET = 1.3  #: scrape time / resampling time at most
SLOPE_TARGET = 0.10  #: scrape's memory growth per sample / sample size at most
METHODS = ("resample", "resample-w2", "labels", "scrape-w1", "scrape-w2", "pandas", "scrape-w1-sys")
#: environment of a method's worker: ``scrape-w1-sys`` is scrape with Arrow's system allocator
ENV = {"scrape-w1-sys": {"ARROW_DEFAULT_MEMORY_POOL": "system"}}


# ----------------------------------------------------------------------------- worker side


def _config(data_dir: str, workers: int) -> Any:
    from magnb.store import ScrapeConfig

    return ScrapeConfig(
        data_dir=Path(data_dir),
        grid=GRID,
        slab_window=SLAB_WINDOW,
        channels=CHANNELS,
        workers=workers,
        kfold=0,
        progress=False,
    )


def _cpu() -> tuple[float, float, int]:
    """User and system CPU seconds and minor page faults of this process and its waited-for
    children so far."""
    import resource

    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return (
        me.ru_utime + kids.ru_utime,
        me.ru_stime + kids.ru_stime,
        me.ru_minflt + kids.ru_minflt,
    )


def _cpu_since(start: tuple[float, float, int]) -> dict[str, float]:
    end = _cpu()
    return {"user": end[0] - start[0], "sys": end[1] - start[1], "minflt": end[2] - start[2]}


def _resample_dropped(job: tuple[str, Any]) -> None:
    from magnb.store import make_sample

    sample, _info = make_sample(*job)
    del sample


def _w_resample(data_dir: str, workers: int = 1) -> dict[str, Any]:
    from concurrent.futures import ProcessPoolExecutor

    import pandas as pd

    from magnb.store import make_sample

    config = _config(data_dir, workers)
    index = pd.read_parquet(Path(data_dir) / "split" / "index.parquet")
    paths = [str(Path(data_dir) / p) for p in index["path"]]
    make_sample(paths[0], config)  # warm-up (first-call costs)
    with measure_peak() as mem:
        cpu = _cpu()
        t = time.perf_counter()
        if workers == 1:
            for p in paths:
                sample, _info = make_sample(p, config)
                del sample
        else:  # the pool's start counts, as it does in scrape
            with ProcessPoolExecutor(workers) as pool:
                jobs = [(p, config) for p in paths]
                for _ in pool.map(_resample_dropped, jobs, chunksize=4):
                    pass
        elapsed = time.perf_counter() - t
    return {"time": elapsed, "peak_mib": mem.delta_mib, "exact": mem.exact, **_cpu_since(cpu)}


def _w_labels(data_dir: str) -> dict[str, Any]:
    """The label table with its grouped splits, alone; then magnb's splitter against
    scikit-learn's (import, folds) on that table."""
    import numpy as np
    import pandas as pd

    from magnb.labels import grouped_stratified_folds
    from magnb.store import make_sample, prepared_table

    config = _config(data_dir, 1)
    first = (
        Path(data_dir) / pd.read_parquet(Path(data_dir) / "split" / "index.parquet")["path"].iloc[0]
    )
    make_sample(first, config)
    with measure_peak() as mem:
        t = time.perf_counter()
        table = prepared_table(config)
        elapsed = time.perf_counter() - t
    groups, strata = table["formula"].to_numpy(), table[config.stratify].astype(str).to_numpy()
    t = time.perf_counter()
    ours = grouped_stratified_folds(strata, groups, 5, config.seed)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    from sklearn.model_selection import StratifiedGroupKFold

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    theirs = np.full(len(groups), -1)
    splitter = StratifiedGroupKFold(5, shuffle=True, random_state=config.seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(groups)), strata, groups)):
        theirs[held] = fold
    theirs_s = time.perf_counter() - t
    return {
        "time": elapsed,
        "peak_mib": mem.delta_mib,
        "exact": mem.exact,
        "extra": {
            "table_bytes_per_row": float(table.memory_usage(deep=True).sum() / len(table)),
            "magnb_folds": ours_s,
            "sklearn_import": import_s,
            "sklearn_folds": theirs_s,
            "equal": bool(np.array_equal(ours, theirs)),
        },
    }


def _w_scrape(data_dir: str, workers: int) -> dict[str, Any]:
    import h5py
    import pandas as pd

    from magnb.store import make_sample, scrape

    config = _config(data_dir, workers)
    first = (
        Path(data_dir) / pd.read_parquet(Path(data_dir) / "split" / "index.parquet")["path"].iloc[0]
    )
    make_sample(first, config)  # the same warm-up as the resampling run
    for name in ("dataset.h5", "table.parquet"):
        (Path(data_dir) / name).unlink(missing_ok=True)
    with measure_peak() as mem:
        cpu = _cpu()
        t = time.perf_counter()
        result = scrape(config)
        elapsed = time.perf_counter() - t
        used = _cpu_since(cpu)
    with h5py.File(result.path, "r") as f:
        n = int(f["samples"].shape[0])
    size = result.path.stat().st_size
    return {
        "time": elapsed,
        "peak_mib": mem.delta_mib,
        "exact": mem.exact,
        "children_peak_mib": children_peak_mib() if workers > 1 else None,
        "samples": n,
        "bytes": size,
        **used,
    }


def _w_pandas(data_dir: str) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from magnb.store import make_sample, prepared_table

    config = _config(data_dir, 1)
    out = Path(data_dir) / "pandas"
    out.mkdir(exist_ok=True)
    first = (
        Path(data_dir) / pd.read_parquet(Path(data_dir) / "split" / "index.parquet")["path"].iloc[0]
    )
    make_sample(first, config)
    with measure_peak() as mem:
        t = time.perf_counter()
        table = prepared_table(config)
        rows = []
        for rec in table.to_dict("records"):
            if rec["status"] != "ok":
                continue
            sample, info = make_sample(Path(data_dir) / rec["split_file"], config)
            rows.append({**rec, **info, "sample": sample})
        frame = pd.DataFrame(rows)
        np.save(out / "samples.npy", np.stack(frame["sample"].to_list()))
        frame.drop(columns=["sample"]).to_parquet(out / "table.parquet", index=False)
        elapsed = time.perf_counter() - t
    size = (out / "samples.npy").stat().st_size
    shutil.rmtree(out)
    return {"time": elapsed, "peak_mib": mem.delta_mib, "exact": mem.exact, "bytes": size}


def _worker(spec: dict[str, Any]) -> None:
    method, data_dir = spec["method"], spec["data_dir"]
    if method == "resample":
        emit(_w_resample(data_dir))
    elif method == "resample-w2":
        emit(_w_resample(data_dir, 2))
    elif method == "labels":
        emit(_w_labels(data_dir))
    elif method in ("scrape-w1", "scrape-w1-sys"):
        emit(_w_scrape(data_dir, 1))
    elif method == "scrape-w2":
        emit(_w_scrape(data_dir, 2))
    elif method == "pandas":
        emit(_w_pandas(data_dir))
    else:
        raise ValueError(method)


# ----------------------------------------------------------------------------- driver side


def make_base(work: Path, distinct: int) -> Path:
    """Generate, collect and split ``distinct`` demo calculations (reused if already there)."""
    import pandas as pd

    from magnb.collect import CollectConfig, collect
    from magnb.split import SplitConfig, split_all
    from magnb.synth import SynthConfig, write_demo_tree

    base = work / "base"
    index = base / "split" / "index.parquet"
    if index.is_file():
        ok = pd.read_parquet(index)
        if len(ok) == distinct and (ok["status"] == "ok").all():
            return base
    if distinct % 2:
        raise SystemExit("--distinct must be even (FM and AFM of each compound)")
    t = time.perf_counter()
    write_demo_tree(work / "tree", SynthConfig(n_compounds=distinct // 2), progress=False)
    collect(CollectConfig(source=work / "tree", data_dir=base, progress=False))
    result = split_all(SplitConfig(data_dir=base, workers=2, progress=False))
    if result.counts.get("failed"):
        raise SystemExit(result.summary())
    print(f"  base set: {distinct} calculations in {time.perf_counter() - t:.1f} s", flush=True)
    return base


def make_replica(base: Path, work: Path, n: int) -> Path:
    """A data folder with N split files: hard links to the base set's under new calc_ids."""
    import pandas as pd

    folder = work / f"n{n}"
    split = folder / "split"
    if folder.exists():
        shutil.rmtree(folder)
    split.mkdir(parents=True)
    index = pd.read_parquet(base / "split" / "index.parquet")
    rows = []
    for i in range(n):
        rec = index.iloc[i % len(index)].to_dict()
        copy = i // len(index)
        calc_id = rec["calc_id"] if copy == 0 else f"{rec['calc_id']}__copy{copy:03d}"
        target = split / f"{calc_id}.h5"
        os.link(base / rec["path"], target)
        rows.append({**rec, "calc_id": calc_id, "path": f"split/{calc_id}.h5"})
    table = pd.DataFrame(rows, columns=index.columns).astype(index.dtypes.to_dict())
    table.to_parquet(split / "index.parquet", index=False)
    return folder


@dataclass
class Cell:
    """Repeated runs of one method at one N."""

    times: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    children: list[float] = field(default_factory=list)
    bytes: int = 0
    exact: bool = True
    cpu: list[dict[str, float]] = field(default_factory=list)  #: user, sys, minflt per run
    extra: list[dict[str, Any]] = field(default_factory=list)  #: a worker's other numbers

    @property
    def time(self) -> float:
        return statistics.median(self.times)

    def cpu_median(self, key: str) -> float:
        return statistics.median(c[key] for c in self.cpu) if self.cpu else float("nan")

    @property
    def peak(self) -> float:
        return statistics.median(self.peaks)


def sample_bytes() -> int:
    """Bytes of one float32 sample."""
    return GRID[0] * GRID[1] * GRID[2] * len(CHANNELS) * 4


def run(args: argparse.Namespace) -> str:
    """Build the inputs, run every measurement, return the markdown section."""
    sizes = args.sizes or ([100, 400] if args.quick else [100, 400, 1600])
    t0, load0 = time.perf_counter(), load_average()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="magnb-scrape-"))
    work.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).resolve()
    cells: dict[tuple[int, str], Cell] = {}
    try:
        print(f"working in {work}", flush=True)
        base = make_base(work, args.distinct)
        for n in sizes:
            folder = make_replica(base, work, n)
            repeats = _repeats(args.repeats, n)
            for _ in range(repeats):
                for method in METHODS:  # interleaved, so that drift hits all alike
                    spec = {"method": method, "data_dir": str(folder)}
                    r = run_worker(script, spec, env=ENV.get(method))
                    cell = cells.setdefault((n, method), Cell())
                    cell.times.append(r["time"])
                    cell.peaks.append(r["peak_mib"])
                    cell.exact &= r["exact"]
                    if r.get("children_peak_mib") is not None:
                        cell.children.append(r["children_peak_mib"])
                    cell.bytes = r.get("bytes", 0)
                    if "user" in r:
                        cell.cpu.append({k: r[k] for k in ("user", "sys", "minflt")})
                    if "extra" in r:
                        cell.extra.append(r["extra"])
            print(
                f"  N={n}: "
                + ", ".join(
                    f"{m} {fmt_s(cells[(n, m)].time)} / {fmt_mib(cells[(n, m)].peak)}"
                    for m in METHODS
                ),
                flush=True,
            )
            shutil.rmtree(folder)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return _markdown(sizes, cells, args, time.perf_counter() - t0, load0)


def _repeats(repeats: int, n: int) -> int:
    """Runs per cell: more at small N, where a run takes well under a second and the machine's
    noise (+-20% between runs) would otherwise decide the verdict."""
    return repeats * max(1, 300 // n)


def _pass(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def _slope_kib(sizes: list[int], cells: dict[tuple[int, str], Cell], method: str) -> float:
    """Least-squares growth of peak memory per added sample, KiB."""
    import numpy as np

    x = np.array(sizes, dtype=float)
    y = np.array([cells[(n, method)].peak for n in sizes]) * 1024
    if len(x) < 2:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def _markdown(
    sizes: list[int],
    cells: dict[tuple[int, str], Cell],
    args: argparse.Namespace,
    total_s: float,
    load0: float | None,
) -> str:
    sample_kib = sample_bytes() / 1024
    lines = [
        HEADING,
        "",
        "`python bench/scrape.py" + (" --quick" if args.quick else "") + "`: N samples of shape "
        f"{GRID[0]} x {GRID[1]} x {GRID[2]} x {len(CHANNELS)} (float32, {sample_kib:.0f} KiB "
        f"each; channels {', '.join(CHANNELS)}, {SLAB_WINDOW:g} A slab window) from split files of "
        f"{args.distinct} distinct demo calculations (24 x 24 x 96 grid), hard-linked under new "
        "calc_ids up to N. *resampling alone* = `make_sample` over the N files, nothing kept or "
        "written, in this process (workers=1) or in a pool of 2 processes started inside the "
        "timing (workers=2); *magnb scrape* = `scrape()` (labels, grouped splits, samples "
        "streamed into the gzip-compressed `dataset.h5`, `table.parquet`); *pandas in memory* = "
        "the seed project's way: the same label table, a list of dict rows holding each sample's "
        "array, `pd.DataFrame(rows)`, `np.save` of the stacked samples and the labels to parquet. "
        "Each run in a fresh process, timed after one warm-up `make_sample`; medians of "
        + ", ".join(f"{_repeats(args.repeats, n)} runs at N = {n}" for n in sizes)
        + " (the methods interleaved). Throughput = N / wall time. "
        "Peak = resident high-water mark above the resident size after imports (for workers = 2 "
        "the main process; the largest worker's absolute peak RSS, shared pages included, is in "
        "the last column).",
        "",
        *machine_lines(["magnb", "numpy", "scipy", "pandas", "h5py", "scikit-learn"], load0),
        "",
    ]
    header = [
        "N",
        "resampling alone",
        "magnb scrape, workers=1",
        "scrape / resampling",
        f"<= {TIME_TARGET}x",
        "resampling alone, 2 processes",
        "magnb scrape, workers=2",
        "w=2: scrape / resampling",
        "pandas in memory",
        "peak: resampling",
        "peak: scrape w=1",
        "peak: scrape w=2 (worker)",
        "peak: pandas",
    ]
    rows = []
    for n in sizes:
        c = {m: cells[(n, m)] for m in METHODS}
        ratio = c["scrape-w1"].time / c["resample"].time
        ratio2 = c["scrape-w2"].time / c["resample-w2"].time

        def thr(cell: Cell, n: int = n) -> str:
            return f"{n / cell.time:.0f}/s ({fmt_s(cell.time)})"

        worker_peak = (
            f" ({fmt_mib(statistics.median(c['scrape-w2'].children))})"
            if c["scrape-w2"].children
            else ""
        )
        rows.append(
            [
                str(n),
                thr(c["resample"]),
                thr(c["scrape-w1"]),
                f"{ratio:.2f}x",
                _pass(ratio <= TIME_TARGET),
                thr(c["resample-w2"]),
                thr(c["scrape-w2"]),
                f"{ratio2:.2f}x",
                thr(c["pandas"]),
                fmt_mib(c["resample"].peak),
                fmt_mib(c["scrape-w1"].peak),
                fmt_mib(c["scrape-w2"].peak) + worker_peak,
                fmt_mib(c["pandas"].peak),
            ]
        )
    lines += [markdown_table(header, rows), ""]

    if len(sizes) >= 2:
        slopes = {m: _slope_kib(sizes, cells, m) for m in METHODS}
        flat = slopes["scrape-w1"] <= SLOPE_TARGET * sample_kib
        flat2 = slopes["scrape-w2"] <= SLOPE_TARGET * sample_kib
        lines += [
            f"Peak memory growth per added sample (least squares over N = "
            f"{', '.join(map(str, sizes))}; one sample is {sample_kib:.0f} KiB): "
            f"scrape workers=1 {slopes['scrape-w1']:.1f} KiB, workers=2 "
            f"{slopes['scrape-w2']:.1f} KiB, resampling alone {slopes['resample']:.1f} KiB, "
            f"pandas {slopes['pandas']:.1f} KiB ({slopes['pandas'] / sample_kib:.1f} samples). "
            f"Target flat (< {SLOPE_TARGET:.0%} of a sample per sample): workers=1 "
            f"{_pass(flat)}, workers=2 {_pass(flat2)}.",
            "",
            "What grows is not the samples but the per-row label table (its pandas frame holds "
            f"{_table_row_bytes(sizes, cells):.0f} bytes per row): the parquet read of the split "
            "index and the write of `table.parquet` go through Arrow, whose default allocator "
            "(mimalloc) keeps the pages it used. The same scrape (workers=1) with "
            "`ARROW_DEFAULT_MEMORY_POOL=system` grows "
            f"{slopes['scrape-w1-sys']:.1f} KiB per sample.",
            "",
        ]
    lines += [
        "Where scrape's time goes (workers = 1, per sample). scrape resamples in its main thread; "
        "a second thread computes each sample's normalization sums and compresses it into the "
        "chunk HDF5's shuffle + gzip filters decode (deflate by ISA-L; written with "
        "`write_direct_chunk`). The label table and its grouped splits are made before the "
        "samples. *labels* = `prepared_table` alone (label table from the split index, grouped "
        "splits), measured apart; *overhead* = scrape minus resampling alone (the label table, "
        "writing the chunks and the table). *CPU* = user + system seconds of the process and its children, per "
        "sample; *kernel* = the system part, mostly page faults (*faults* = minor page faults per "
        "sample): `make_sample` allocates and frees its arrays each call, and how often glibc "
        "hands that memory back to the kernel differs between the two loops.",
        "",
    ]
    rows = []
    for n in sizes:
        scrape_c, resample_c = cells[(n, "scrape-w1")], cells[(n, "resample")]
        labels_s = cells[(n, "labels")].time

        def per(x: float, n: int = n) -> str:
            return f"{x / n * 1e3:.2f} ms"

        def cpu(cell: Cell, n: int = n) -> str:
            user, sys_, faults = (cell.cpu_median(k) for k in ("user", "sys", "minflt"))
            return f"{(user + sys_) / n * 1e3:.2f} ms ({sys_ / n * 1e3:.2f} ms, {faults / n:.0f})"

        rows.append(
            [
                str(n),
                per(scrape_c.time),
                per(resample_c.time),
                per(scrape_c.time - resample_c.time),
                per(labels_s),
                cpu(scrape_c),
                cpu(resample_c),
            ]
        )
    lines += [
        markdown_table(
            [
                "N",
                "scrape",
                "resampling",
                "overhead",
                "labels",
                "CPU: scrape (kernel, faults)",
                "CPU: resampling (kernel, faults)",
            ],
            rows,
        ),
        "",
    ]
    lines += _splitter_lines(sizes, cells)
    last = sizes[-1]
    d = cells[(last, "scrape-w1")].bytes
    p = cells[(last, "pandas")].bytes
    if d and p:
        lines += [
            f"On disk at N = {last}: `dataset.h5` {fmt_mib(d / 2**20)} (gzip level 1 + shuffle), "
            f"pandas' `samples.npy` {fmt_mib(p / 2**20)}.",
            "",
        ]
    if not all(c.exact for c in cells.values()):
        lines += ["Memory: /proc/self/clear_refs was not writable; peaks are upper bounds.", ""]
    lines.append(f"Total benchmark wall time: {total_s / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def _table_row_bytes(sizes: list[int], cells: dict[tuple[int, str], Cell]) -> float:
    extra = cells[(sizes[-1], "labels")].extra
    return statistics.median(e["table_bytes_per_row"] for e in extra) if extra else math.nan


def _splitter_lines(sizes: list[int], cells: dict[tuple[int, str], Cell]) -> list[str]:
    """The grouped splits by magnb and by scikit-learn, side by side."""
    rows = []
    for n in sizes:
        extra = cells[(n, "labels")].extra
        if not extra:
            continue

        def med(key: str, extra: list[dict[str, Any]] = extra) -> str:
            return fmt_s(statistics.median(e[key] for e in extra))

        rows.append(
            [
                str(n),
                med("magnb_folds"),
                med("sklearn_import"),
                med("sklearn_folds"),
                "yes" if all(e["equal"] for e in extra) else "**NO**",
                fmt_s(cells[(n, "resample")].time),
            ]
        )
    if not rows:
        return []
    first = sizes[0]
    import_s = statistics.median(e["sklearn_import"] for e in cells[(first, "labels")].extra)
    share = import_s / cells[(first, "resample")].time
    return [
        "Grouped splits (5 folds of the table, stratified by order, grouped by formula), measured "
        "in the *labels* process after magnb's imports: magnb's `grouped_stratified_folds` "
        "against scikit-learn's `StratifiedGroupKFold(shuffle=True)`, whose algorithm it "
        f"follows. At N = {first}, scikit-learn's import alone takes {share:.2f}x the time of "
        f"resampling the {first} samples (the scrape target allows {TIME_TARGET - 1:.1f}x "
        "on top of it), which is why scrape uses magnb's; the folds are identical (*equal*), "
        "as `tests/test_dataset.py` checks on random tables.",
        "",
        markdown_table(
            [
                "N",
                "magnb folds",
                "scikit-learn import",
                "scikit-learn folds",
                "equal",
                "resampling alone (N samples)",
            ],
            rows,
        ),
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 100 and 400 only")
    parser.add_argument("--sizes", type=int, nargs="+", help="the N to run (default 100 400 1600)")
    parser.add_argument(
        "--distinct", type=int, default=100, help="distinct demo calculations (default 100)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per cell (medians are reported)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"markdown file whose '{HEADING[3:]}' section is replaced (default {RESULTS}; "
        "with --quick nothing is written unless --out is given)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument(
        "--workdir",
        help="keep the base set of split files here and reuse it next time "
        "(default: a temporary folder, removed afterwards)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return
    publish(HEADING, run(args), args.out, args.quick, args.no_write)


if __name__ == "__main__":
    main()
