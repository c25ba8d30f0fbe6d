"""Benchmark: the loader (magnb.loader.DensityDataset) against the loader it replaced, on the
seed's 120^3 x 2 float32 samples, side by side in one run, with the chunk codec beside it.

The dataset is ``bench/train.py``'s (62 demo samples scraped the seed's way: 120^3 x 2, m+ and
m-, ``maxabs`` normalization). Its samples are copied into one file per codec, same table:

- ``gzip``: HDF5 shuffle + deflate level 1, one chunk per sample: how magnb stored every dataset
  before format 6 (and still does with ``codec: gzip``);
- ``none``: raw float32, one chunk per sample: ``codec: none``, the default now;
- ``lz4``, ``zstd``: Blosc2 (shuffle, level 5) through ``hdf5plugin``, read by h5py's filter
  pipeline (the loader's general path): candidates for a codec that saves disk.

*Old loader* is the loader as it was (``git show e4360a9:magnb/dataset.py``, reproduced in
:func:`old_batch`): per sample ``read_direct`` through h5py's filters, ``-= offset``,
``/= scale`` over the batch, then ``np.roll`` per sample. *New loader* is ``DensityDataset``:
raw chunks straight from a memory map, the roll as block copies with the normalization fused in
(see its module docstring). Every case reads all batches of batch 2 with the roll augmentation
on, from the page cache (one warm-up pass first, which also maps the file), 3 passes, median;
*2 threads* is the new loader called from 2 threads (what Keras' PyDataset ``workers=2`` does).
The old and new loaders' batches are checked equal (to 1 ulp: the new one multiplies by
1 / scale). Target (issue 15): the new loader at least 200 samples/s single-process.

    python bench/loader.py [--keep DIR] [--passes 3] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (  # noqa: E402
    cores,
    load_average,
    machine_lines,
    markdown_table,
    publish,
)

HEADING = "## loader: 120^3 x 2 samples from the page cache"
TARGET = 200.0  #: samples/s, new loader, single process
BATCH = 2


def codec_files(data: Path, out: Path) -> dict[str, Path]:
    """The dataset's samples copied into one dataset folder per codec (table and attrs shared)."""
    import shutil

    import h5py

    from magnb.store import CODECS

    try:
        import hdf5plugin
    except ImportError:  # the Blosc2 rows are left out
        hdf5plugin = None
    options = {"none": CODECS["none"], "gzip": CODECS["gzip"]}
    if hdf5plugin is not None:
        for name, cname in (("lz4", "lz4"), ("zstd", "zstd")):
            options[name] = dict(hdf5plugin.Blosc2(cname=cname, clevel=5))
    folders = {}
    with h5py.File(data / "dataset.h5", "r") as src:
        samples = src["samples"]
        for name, opts in options.items():
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data / "table.parquet", folder / "table.parquet")
            with h5py.File(folder / "dataset.h5", "w") as f:
                ds = f.create_dataset(
                    "samples", samples.shape, np.float32, chunks=(1, *samples.shape[1:]), **opts
                )
                for i in range(samples.shape[0]):
                    ds[i] = samples[i]
                for k, v in src.attrs.items():
                    f.attrs[k] = v
            folders[name] = folder
    return folders


def old_batch(data, samples, i: int) -> np.ndarray:
    """Batch ``i`` as the old loader made it (magnb/dataset.py before issue 15)."""
    idx = data.batch_rows(i)
    rows = data.table["sample"].to_numpy()[idx].astype(np.int64)
    x = np.empty((len(rows), *data.sample_shape), dtype=np.float32)
    for k, row in enumerate(rows):
        samples.read_direct(x, np.s_[row], np.s_[k])
    x -= data.offset
    x /= data.scale
    for k, shifts in enumerate(data.shifts(i, len(x))):
        x[k] = np.roll(x[k], shifts, axis=(0, 1, 2))
    return x


def passes(fn, n_batches: int, count: int, repeat: int) -> float:
    """Median samples/s of ``repeat`` passes of ``fn(i)`` over every batch (after a warm-up)."""
    for i in range(n_batches):
        fn(i)
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        for i in range(n_batches):
            fn(i)
        rates.append(count / (time.perf_counter() - t))
    return statistics.median(rates)


def threaded(fn, n_batches: int, count: int, repeat: int, threads: int) -> float:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, range(n_batches)))
        rates = []
        for _ in range(repeat):
            t = time.perf_counter()
            list(pool.map(fn, range(n_batches)))
            rates.append(count / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="build (or reuse) bench/train.py's dataset here")
    parser.add_argument("--samples", type=int, default=62)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the section here, not RESULTS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_start = load_average()

    import h5py
    from train import build_dataset

    from magnb.loader import DensityDataset

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="magnb-bench-loader-"))
    data = root / "data"
    if not (data / "dataset.h5").is_file():
        build_dataset(root, args.samples)
    folders = codec_files(data, root / "codecs")

    rows, rates = [], {}
    options = dict(split="train", batch_size=BATCH, shuffle=True, augment=True, seed=0)
    for name, folder in folders.items():
        loader = DensityDataset(folder, **options)
        n, nb = len(loader.table), len(loader)
        size = (folder / "dataset.h5").stat().st_size
        raw = n * int(np.prod(loader.sample_shape)) * 4
        with h5py.File(folder / "dataset.h5", "r") as f:
            samples = f["samples"]
            for i in range(nb):  # the same batches, to 1 ulp
                np.testing.assert_allclose(
                    loader[i][0], old_batch(loader, samples, i), rtol=3e-7, atol=1e-7
                )
            old = passes(lambda i, s=samples, d=loader: old_batch(d, s, i), nb, n, args.passes)
        new = passes(lambda i, d=loader: d[i], nb, n, args.passes)
        two = threaded(lambda i, d=loader: d[i], nb, n, args.passes, 2)
        rates[name] = {"old": old, "new": new, "two": two}
        mb = np.prod(loader.sample_shape) * 4 / 1e6
        rows.append(
            [
                f"`{name}`" + (" (today's storage)" if name == "gzip" else ""),
                f"{size / 2**20:.0f} MiB ({raw / size:.1f}x)",
                loader.storage,
                f"{old:.1f}",
                f"**{new:.0f}**" if name == "none" else f"{new:.1f}",
                f"{two:.0f}",
                f"{new * mb / 1e3:.2f} GB/s",
            ]
        )
    table = markdown_table(
        ["codec", "size on disk (raw / size)", "new loader's path", "old loader samples/s",
         "new loader samples/s", "new, 2 threads", "new, bytes/s"],
        rows,
    )  # fmt: skip
    best = rates["none"]["new"]
    baseline = rates["gzip"]["old"]
    verdict = "PASS" if best >= TARGET else "FAIL"
    load_end = load_average() or 0.0
    loaded = (load_start or 0.0) > 0.5 * cores() or load_end > 0.5 * cores()
    section = "\n".join(
        [
            HEADING,
            "",
            f"`python bench/loader.py`: {n} samples of {'x'.join(map(str, loader.sample_shape))} "
            f"float32 ({mb:.1f} MB each), batch {BATCH}, shuffled, roll augmentation on (x and y: "
            "the slab window makes z non-periodic), maxabs normalization; from the page cache. "
            "Old loader = the loader before issue 15 (h5py `read_direct`, un-normalize, `np.roll`); "
            "new loader = `magnb.loader.DensityDataset`. Both give the same batches (checked). "
            "Medians of "
            f"{args.passes} passes after a warm-up pass.",
            "",
            *machine_lines(["numpy", "h5py", "hdf5plugin", "isal", "keras"], load_start),
            *(
                [
                    "- **Taken under load**: other work shared these cores (load average above), "
                    "so every number here is lower than on an idle machine."
                ]
                if loaded
                else []
            ),
            "",
            table,
            "",
            f"Today's loader on today's storage: {baseline:.1f} samples/s. The new loader on raw "
            f"chunks: {best:.0f} samples/s single-threaded ({best / baseline:.0f}x), "
            f"{rates['none']['two']:.0f} with 2 threads. Target >= {TARGET:.0f} samples/s "
            f"single-process: **{verdict}**.",
            "",
            "Codec choice: raw (`none`) is the default because reading it is one copy out of the "
            "page cache, which no decoder beats; it costs the disk the table shows. `gzip` stays "
            "for datasets written before and for builds where disk matters more than read speed "
            "(`codec: gzip`); the Blosc2 rows show what LZ4 or zstd would give through "
            "hdf5plugin (not offered by scrape: each adds a compiled plugin dependency for a "
            "read speed between the two).",
        ]
    )
    publish(HEADING, section, args.out, False, args.no_write)


if __name__ == "__main__":
    main()
