"""Stage 03's sample store: ``scrape`` builds ``dataset.h5`` and ``table.parquet`` from the split
files, ``merge_shards`` joins the shards of a Slurm array, ``read_table`` reads the table back.

``scrape(config)`` reads ``<data>/split/index.parquet`` and the split files of stage 02 and writes

- ``<data>/dataset.h5``: dataset ``samples``, float32 ``(N, X, Y, Z, C)``, one chunk per sample,
  stored raw (``codec: none``, the default: what the loader reads fastest) or through HDF5's
  shuffle and gzip level 1 filters (``codec: gzip``, as magnb stored every dataset before; any
  HDF5 reader opens either); attributes: the config that made it (YAML), the channels and their
  units, voxel size, which axes are periodic, the normalization statistics (training split
  only), the input hash;
- ``<data>/table.parquet``: one row per calculation: ``sample`` (row in ``samples``, -1 when
  skipped), calc_id, formula, run, source_path, labels (moment, moment_integral,
  moment_per_magnetic_atom, ``moment_class`` = |moment| > threshold, magnetic ``order`` FM/AFM
  and its spin pattern ``order_pattern`` FM/Neel/zigzag/stripe, both from the run tag), the
  split (train/val/test, grouped by formula) and k-fold ``fold``, status and the skip reason.

The samples are streamed, so peak memory does not grow with N: each is resampled, its
normalization sums taken and it is turned into the bytes the dataset's filters would make,
then the main process writes those bytes as the sample's chunk (``write_direct_chunk``), in
calc_id order, as they arrive. With ``workers`` > 1 worker processes do all of that (at most two
samples per worker in flight); with one, the main thread resamples while a second thread
encodes the sample before (the compressor and numpy release the GIL). The dataset is sized
for every file up front and cut to the samples written. The labels and grouped splits come from
:mod:`magnb.labels`. Shards (``shard=(i, n)``) write their part for a Slurm array and
:func:`merge_shards` joins them into exactly the single build (copying the stored chunks). Normalization is not baked into the samples: its statistics are stored and
:class:`magnb.loader.DensityDataset` applies them when reading.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from magnb import __version__
from magnb._io import (
    atomic_path,
    check_complete,
    ensure_space,
    h5_attr,
    marker_path,
    new_build_id,
    sha256_text,
    stage_lock,
    stage_writer,
    user_os_errors,
)
from magnb._workers import process_pool
from magnb.config import from_mapping, to_mapping
from magnb.errors import MagnbError, nothing_usable
from magnb.grid import crop_c, resample_cube, resample_fractional, slab_window, tile
from magnb.labels import assign_splits, label_table

#: bump when the dataset's content or table columns change, so old builds are redone
DATASET_FORMAT = 7  # 6: samples stored raw by default (codec); 7: geometry column, symmetry
CHANNELS = ("m", "m+", "m-", "total", "up", "down", "|m|", "mx", "my", "mz")
CHANNEL_UNITS = {c: "muB/A^3" for c in CHANNELS} | {
    "total": "e/A^3",
    "up": "e/A^3",
    "down": "e/A^3",
}


@dataclass(frozen=True)
class ScrapeConfig:
    """Settings of stage 03. ``grid`` is the points per cell (after the c crop), the sample is
    ``grid * supercell`` points along a, b, c for the fractional representation."""

    data_dir: Path  #: magnb data folder holding split/ (from stage 02)
    out_dir: Path | None = None  #: where dataset.h5 and table.parquet go (null: data_dir)
    #: fractional: each cell resampled to `grid` points along a, b, c; cube: a Cartesian cube of
    #: cube_side A with cube_points voxels per edge, one voxel size for every lattice
    representation: Literal["fractional", "cube"] = "fractional"
    grid: tuple[int, int, int] = (32, 32, 32)  #: fractional: points per cell along a, b, c
    #: fractional: A kept along c around the slab (null: the whole cell, as bulk crystals need)
    slab_window: float | None = None
    slab_margin: float = 1.0  #: A of vacuum the slab window must keep beyond the outermost atoms
    supercell: tuple[int, int, int] = (1, 1, 1)  #: fractional: tiling of the cell along a, b, c
    cube_side: float = 12.0  #: cube: edge in A; the voxel is cube_side / cube_points A
    cube_points: int = 32  #: cube: voxels per edge
    #: cube: record each crystal's operations that map the cube onto itself (magnb.symmetry), for
    #: the exact augmentation TrainConfig.augment_symmetry
    symmetry: bool = False
    channels: tuple[str, ...] = ("m+", "m-")  #: any of m, m+, m-, total, up, down, |m|, mx, my, mz
    #: per-channel scaling applied when reading, from the training split only (standard: mean, std)
    normalization: Literal["none", "standard", "maxabs"] = "none"
    #: how samples are stored: ``none`` (raw float32, the loader's fast path) or ``gzip``
    #: (HDF5's shuffle + deflate level 1: about 3x smaller, 10x slower to read; bench/loader.py)
    codec: Literal["none", "gzip"] = "none"
    threshold: float = 4.0  #: muB; moment_class = |moment| > threshold
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  #: train, val, test shares
    #: label whose classes each split keeps in proportion (splits are grouped by formula)
    stratify: Literal["order", "order_pattern", "moment_class", "none"] = "order"
    kfold: int = 5  #: k-fold column over formulas (fold 0 to k-1); 0 or 1: none
    seed: int = 0  #: seed of the splits
    workers: int = 0  #: processes (0: one per core)
    shard: tuple[int, int] | None = None  #: (i, n): build shard i of n, for a Slurm array
    progress: bool = True  #: show a progress bar

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.out_dir is not None:
            object.__setattr__(self, "out_dir", Path(self.out_dir))
        for name in ("grid", "supercell", "channels", "fractions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or not self.channels:
            raise MagnbError(f"unknown channel(s) {unknown}; choose from {list(CHANNELS)}")
        if len(self.grid) != 3 or any(int(g) < 1 for g in self.grid):
            raise MagnbError(f"grid must be three positive integers, not {self.grid}")
        if len(self.supercell) != 3 or any(
            not float(s).is_integer() or s < 1 for s in self.supercell
        ):
            raise MagnbError(f"supercell must be three integers >= 1, not {self.supercell}")
        if self.representation == "cube" and (
            self.supercell != (1, 1, 1) or self.slab_window is not None
        ):
            raise MagnbError(
                "supercell and slab_window apply to the fractional representation only"
            )
        if self.symmetry and self.representation != "cube":
            raise MagnbError("symmetry applies to the cube representation only")
        if (
            len(self.fractions) != 3
            or not math.isclose(sum(self.fractions), 1.0)
            or min(self.fractions) < 0
        ):
            raise MagnbError(
                f"fractions (train, val, test) must be >= 0 and sum to 1: {self.fractions}"
            )
        if self.codec not in CODECS:
            raise MagnbError(f"unknown codec {self.codec!r}; choose from {list(CODECS)}")
        if self.shard is not None and not (0 <= self.shard[0] < self.shard[1]):
            raise MagnbError(f"shard must be (i, n) with 0 <= i < n, not {self.shard}")
        for name in ("cube_side", "slab_margin", "threshold", "slab_window"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise MagnbError(f"{name} must be a finite number, not {value}")
        if self.cube_side <= 0 or self.cube_points < 1:
            raise MagnbError(
                f"cube_side must be > 0 A and cube_points >= 1, not {self.cube_side}, "
                f"{self.cube_points}"
            )
        if self.slab_window is not None and self.slab_window <= 0:
            raise MagnbError(f"slab_window must be > 0 A (or null), not {self.slab_window}")
        if self.slab_margin < 0:
            raise MagnbError(f"slab_margin must be >= 0 A, not {self.slab_margin}")
        if not 0 <= self.seed < 2**32:
            raise MagnbError(f"seed must be in [0, 2**32), not {self.seed}")
        if self.kfold < 0 or self.workers < 0:
            raise MagnbError("kfold and workers must be >= 0")
        check_sample_size(self.sample_shape, "this grid and supercell")

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        if self.representation == "cube":
            n = self.cube_points
            return (n, n, n, len(self.channels))
        g = [int(a) * int(b) for a, b in zip(self.grid, self.supercell, strict=True)]
        return (g[0], g[1], g[2], len(self.channels))

    @property
    def dataset_dir(self) -> Path:
        """The folder that receives dataset.h5 and table.parquet."""
        return self.out_dir if self.out_dir is not None else self.data_dir

    @property
    def periodic_axes(self) -> tuple[bool, bool, bool]:
        if self.representation == "cube":
            return (False, False, False)
        return (True, True, self.slab_window is None)

    def content_settings(self) -> dict[str, Any]:
        """The settings that change the dataset's content (not workers, progress, shard)."""
        d = to_mapping(self)
        for k in ("data_dir", "out_dir", "workers", "shard", "progress"):
            d.pop(k)
        return d


#: HDF5's limit on one chunk (one sample is one chunk)
MAX_CHUNK_BYTES = 2**32 - 1


def check_sample_size(shape: tuple[int, ...], what: str) -> None:
    """MagnbError when one float32 sample of ``shape`` cannot be stored as one HDF5 chunk (4 GiB)
    or would not fit in this machine's memory a few times over (the resampling holds copies)."""
    nbytes = 4 * math.prod(int(n) for n in shape)
    if nbytes > MAX_CHUNK_BYTES:
        raise MagnbError(
            f"{what} make samples of {tuple(shape)} = {nbytes / 2**30:.1f} GiB; one sample is one "
            "HDF5 chunk, at most 4 GiB: use a smaller grid, supercell or cube_points"
        )
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if 4 * nbytes > memory:
            raise MagnbError(
                f"{what} make samples of {tuple(shape)} = {nbytes / 2**30:.1f} GiB, and making "
                f"one takes about 4x that; this machine has {memory / 2**30:.1f} GiB"
            )


#: per-cell lines of "what was done" in :meth:`ScrapeResult.summary` (the table holds them all)
GEOMETRY_LINES = 30


@dataclass
class ScrapeResult:
    table: pd.DataFrame
    path: Path
    skipped_build: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        t = self.table
        ok = t[t["status"] == "ok"]
        lines = [
            f"scrape: {len(ok)} samples of shape {tuple(json.loads(self._shape()))}, "
            f"{int((t['status'] != 'ok').sum())} skipped"
            + (" (dataset unchanged, not rebuilt)" if self.skipped_build else "")
        ]
        if len(ok):
            lines.append(
                "  split sizes: "
                + ", ".join(f"{k} {v}" for k, v in ok["split"].value_counts().sort_index().items())
            )
        if "geometry" in t and len(ok):
            lines.append("  what was done with each cell:")
            for row in ok.head(GEOMETRY_LINES).itertuples():
                lines.append(f"    {row.calc_id}: {row.geometry}")
            if len(ok) > GEOMETRY_LINES:
                lines.append(
                    f"    ... {len(ok) - GEOMETRY_LINES} more (table.parquet, column 'geometry')"
                )
        for row in t[t["status"] != "ok"].itertuples():
            lines.append(f"  SKIPPED {row.calc_id}: {row.reason}")
        return "\n".join(lines)

    def check_usable(self, config: ScrapeConfig) -> None:
        """:class:`NothingUsableError` (count and commonest reason) when the build holds no sample
        at all: every calculation was skipped (the slab config on bulk crystals, channels that
        need a magnetization on unpolarized runs...). A shard with none is not an error: the
        others may have them."""
        t = self.table
        if config.shard is None and not (t["status"] == "ok").any():
            raise nothing_usable(
                "scrape",
                "calculations",
                t["reason"].astype(str).tolist(),
                verb="skipped",
                listed=f"column 'reason' of {self.path.with_name('table.parquet')}",
            )

    def _shape(self) -> str:
        import h5py

        with h5py.File(self.path, "r") as f:
            return json.dumps(list(f["samples"].shape[1:]))


# --------------------------------------------------------------------------------------------
# one sample


def check_channels(fields: Iterable[str], channels: Iterable[str], where: str) -> None:
    """MagnbError if a run with density ``fields`` cannot give ``channels``."""
    fields = set(fields)
    spin = "magnetization" in fields or "mz" in fields
    for c in channels:
        if c != "total" and not spin:
            raise MagnbError(
                f"channel {c!r} needs a magnetization, but the run is not spin-polarized", where
            )
        if c in ("mx", "my") and "mx" not in fields:
            raise MagnbError(f"channel {c!r} needs a non-collinear run", where)


def channel_arrays(fields: dict, channels: Iterable[str], where: str) -> list[np.ndarray]:
    """The requested channels from a run's densities (``total`` and ``magnetization`` or
    ``mx``/``my``/``mz``, as in a split file), as float64 arrays on the same grid.

    For a non-collinear run ``m`` is ``mz``, the component along the quantization axis.
    """
    check_channels(fields, channels, where)
    total = np.asarray(fields["total"], dtype=np.float64)
    vec = None
    m = None
    if "magnetization" in fields:
        m = np.asarray(fields["magnetization"], dtype=np.float64)
    elif "mz" in fields:
        vec = [np.asarray(fields[k], dtype=np.float64) for k in ("mx", "my", "mz")]
        m = vec[2]
    derived = {
        "m": lambda: m,
        "m+": lambda: np.maximum(m, 0.0),
        "m-": lambda: np.maximum(-m, 0.0),
        "total": lambda: total,
        "up": lambda: 0.5 * (total + m),
        "down": lambda: 0.5 * (total - m),
        "|m|": lambda: np.abs(m) if vec is None else np.sqrt(sum(v * v for v in vec)),
        "mx": lambda: vec[0],
        "my": lambda: vec[1],
        "mz": lambda: m,
    }
    return [derived[c]() for c in channels]


BASE_FIELDS = ("total", "magnetization", "mx", "my", "mz")


def describe_geometry(
    lattice: np.ndarray,
    native: tuple[int, int, int],
    config: ScrapeConfig,
    crop_planes: int | None = None,
) -> str:
    """What scrape does with one cell, in words: tiled, cropped, resampled, at what voxel size.

    For the cube representation the cube's edge is compared with the cell's widths (the distance
    between opposite faces, ``V / |b x c|`` ...): more than one width along a direction means the
    cube holds periodic images there ("tiled"), less means part of the cell is not seen
    ("cropped"). A cube voxel much coarser than the native grid's is said to alias.

    >>> cfg = ScrapeConfig(data_dir=".", representation="cube", cube_side=12.0, cube_points=48)
    >>> describe_geometry(np.eye(3) * 3.0, (30, 30, 30), cfg)
    'cube 12 A at 0.250 A/voxel (48^3): tiled 4.0 x 4.0 x 4.0 cell widths; resampled from 30x30x30 (0.100 A/voxel), point-sampled 2.5x coarser (finer detail aliases)'
    """
    lattice = np.asarray(lattice, dtype=np.float64)
    native = tuple(int(n) for n in native)
    lengths = np.linalg.norm(lattice, axis=1)
    native_voxel = lengths / np.array(native)
    grid = "x".join(str(n) for n in native)
    step = f"{native_voxel.min():.3f}" + (
        f"-{native_voxel.max():.3f}"
        if not np.allclose(native_voxel, native_voxel[0], rtol=1e-3)
        else ""
    )
    if config.representation == "cube":
        volume = abs(float(np.linalg.det(lattice)))
        faces = np.linalg.norm(np.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]]), axis=1)
        spans = config.cube_side / (volume / faces)
        voxel = config.cube_side / config.cube_points
        if (spans >= 1 - 1e-9).all():
            how = "tiled"
        elif (spans <= 1 + 1e-9).all():
            how = "cropped"
        else:
            how = "cropped and tiled"
        text = (
            f"cube {config.cube_side:g} A at {voxel:.3f} A/voxel ({config.cube_points}^3): {how} "
            + " x ".join(f"{x:.1f}" for x in spans)
            + f" cell widths; resampled from {grid} ({step} A/voxel)"
        )
        if voxel > 1.5 * native_voxel.max():
            text += (
                f", point-sampled {voxel / native_voxel.max():.1f}x coarser (finer detail aliases)"
            )
        return text
    parts = []
    c_planes = native[2] if crop_planes is None else int(crop_planes)
    if c_planes != native[2]:
        parts.append(
            f"c cropped to {lengths[2] * c_planes / native[2]:.2f} A ({c_planes} of {native[2]} planes)"
        )
    kept = np.array([lengths[0], lengths[1], lengths[2] * c_planes / native[2]])
    voxel = kept / np.array(config.grid, dtype=np.float64)
    target = "x".join(str(int(g)) for g in config.grid)
    parts.append(
        f"resampled {native[0]}x{native[1]}x{c_planes} -> {target} ("
        + ", ".join(f"{v:.3f}" for v in voxel)
        + " A/voxel along a, b, c)"
    )
    if config.supercell != (1, 1, 1):
        parts.append("tiled " + "x".join(str(int(r)) for r in config.supercell))
    return "; ".join(parts)


def make_sample(
    split_file: str | Path, config: ScrapeConfig
) -> tuple[np.ndarray, dict[str, float]]:
    """One fixed-shape float32 sample (X, Y, Z, C) and its integrals, from a split file.

    The densities VASP gives (total, m or mx/my/mz) are cropped and resampled first and the
    channels derived after, so derived channels keep their meaning exactly on the new grid
    (``m+`` and ``m-`` stay non-negative and ``m+ - m-`` is the resampled ``m``).
    """
    from magnb.split import load_split

    split = load_split(split_file)
    where = str(split_file)
    fields = [k for k in BASE_FIELDS if k in split]
    check_channels(fields, config.channels, where)
    stack = np.stack([split[k].astype(np.float64) for k in fields])
    lattice = split["lattice"]
    volume = float(split["attrs"]["volume"])
    nz = stack.shape[-1]
    info: dict[str, float] = {}
    native = stack.shape[-3:]
    if config.representation == "cube":
        out = resample_cube(stack, lattice, config.cube_side, config.cube_points)
        info["geometry"] = describe_geometry(lattice, native, config)
        if config.symmetry:
            from magnb.symmetry import crystal_cube_ops

            info["symmetry_ops"] = json.dumps(crystal_cube_ops(split))
    else:
        region_volume = volume
        if config.slab_window is not None:
            c_len = float(np.linalg.norm(lattice[2]))
            planes = int(round(config.slab_window / c_len * nz))
            if planes > nz:
                raise MagnbError(
                    f"slab_window {config.slab_window} A is longer than the cell's c = {c_len:.2f} A"
                    " (a bulk crystal? slab_window: null keeps the whole cell; "
                    "configs/scrape_bulk.yaml makes cubes of one voxel size)",
                    where,
                )
            start = slab_window(
                split["frac_coords"], nz, max(planes, 1), margin=config.slab_margin, c_length=c_len
            )
            stack = crop_c(stack, start, max(planes, 1))
            region_volume = volume * stack.shape[-1] / nz
            info["crop_start"] = start
        info["crop_planes"] = stack.shape[-1]
        info["native_nz"] = nz
        info["geometry"] = describe_geometry(lattice, native, config, stack.shape[-1])
        out = resample_fractional(stack, config.grid)
        m_field = "magnetization" if "magnetization" in fields else "mz" if "mz" in fields else None
        if m_field is not None:
            info["moment_sample"] = float(out[fields.index(m_field)].mean() * region_volume)
        out = tile(out, config.supercell)
    resampled = dict(zip(fields, out, strict=True))
    channels = np.stack(channel_arrays(resampled, config.channels, where))
    sample = np.ascontiguousarray(np.moveaxis(channels, 0, -1), dtype=np.float32)
    if not np.isfinite(sample).all():
        raise MagnbError("sample has NaN or infinite values", where)
    return sample, info


#: how ``samples`` is stored, one chunk per sample, by ``ScrapeConfig.codec``: the h5py options
#: of the dataset and its filter pipeline as ``(code, cd_values)`` (:func:`_chunk_bytes` makes
#: the chunks itself, so each pipeline must stay the one it makes)
CODECS: dict[str, dict[str, Any]] = {
    "none": {},
    "gzip": {"compression": "gzip", "compression_opts": 1, "shuffle": True},  # magnb <= format 5
}
_PIPELINES = {"none": [], "gzip": [(2, (4,)), (1, (1,))]}  # shuffle of 4-byte items, deflate 1

_Resampled = tuple[np.ndarray | None, dict, str]  #: a sample (None: skipped), its info, the reason
_Encoded = tuple[bytes | None, dict, str]  #: the same with the sample as its stored chunk


def _resampled(path: str, config: ScrapeConfig) -> _Resampled:
    """:func:`make_sample`, with a sample the split file cannot give turned into a skip reason."""
    try:
        sample, info = make_sample(path, config)
    except MagnbError as exc:
        return None, {}, str(exc) if exc.path is not None else f"{path}: {exc}"
    if sample.shape != config.sample_shape or sample.dtype != np.float32:  # would corrupt a chunk
        raise RuntimeError(
            f"{path}: sample {sample.shape} {sample.dtype}, not {config.sample_shape}"
        )
    return sample, info, ""


def _encoded(resampled: _Resampled, codec: str) -> _Encoded:
    """A sample's normalization sums and its chunk bytes (the per-sample work besides the
    resampling; done in the worker processes, or in a thread beside the resampling)."""
    sample, info, error = resampled
    if sample is None:
        return None, info, error
    channels = np.ascontiguousarray(np.moveaxis(sample, -1, 0), dtype=np.float64)
    channels = channels.reshape(sample.shape[-1], -1)
    info["stat_sum"] = channels.sum(axis=1).tolist()
    info["stat_sumsq"] = np.einsum("ij,ij->i", channels, channels).tolist()
    info["stat_maxabs"] = np.abs(channels).max(axis=1).tolist()
    return _chunk_bytes(sample, codec), info, error


def _chunk_bytes(sample: np.ndarray, codec: str) -> bytes:
    """``sample`` as a chunk of ``samples`` for ``write_direct_chunk``. ``none``: its float32
    bytes. ``gzip``: the shuffle filter (byte 0
    of every float32, then byte 1, ...) as ``H5Z_filter_shuffle`` makes it, then a zlib stream,
    which is what HDF5's deflate filter decodes. The stream comes from ISA-L (``isal``), whose
    level 1 is about 6x faster than zlib's here and compresses these densities slightly better
    (``bench/scrape.py``); any zlib reads it. numpy's copy and the compressor release the GIL, so
    this overlaps with work in other threads."""
    data = np.ascontiguousarray(sample, dtype=np.float32).reshape(-1)
    if codec == "none":
        return data.tobytes()
    from isal import isal_zlib

    shuffled = np.ascontiguousarray(data.view(np.uint8).reshape(-1, data.itemsize).T)
    return isal_zlib.compress(shuffled, CODECS["gzip"]["compression_opts"])


def _sample_job(args: tuple[str, ScrapeConfig]) -> _Encoded:
    """One sample from resampling to chunk bytes (what a worker process does)."""
    path, config = args
    return _encoded(_resampled(path, config), config.codec)


def _ordered_map(fn: Callable, jobs: Iterable, pool: Executor, depth: int) -> Iterator:
    """``map(fn, jobs)`` on ``pool``, in order, with at most ``depth`` results in flight (so
    memory does not grow with the number of jobs). ``jobs`` is consumed lazily: a generator's
    own work (the resampling, with a thread pool) overlaps with ``fn`` on the jobs before."""
    pending: deque[Future] = deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _encoded_samples(
    paths: list[str], config: ScrapeConfig, pool: Executor | None, workers: int
) -> Iterator[_Encoded]:
    """Each split file's sample as its chunk bytes, info and skip reason, in order. With a
    process ``pool`` the workers do everything; without, this thread resamples and one helper
    thread computes the sums and compresses the sample before (at most 2 samples waiting)."""
    if pool is not None:
        yield from _ordered_map(_sample_job, ((p, config) for p in paths), pool, 2 * workers)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="magnb-encode") as encoder:
        resampled = (_resampled(p, config) for p in paths)
        yield from _ordered_map(partial(_encoded, codec=config.codec), resampled, encoder, 2)


# --------------------------------------------------------------------------------------------
# the build


def prepared_table(config: ScrapeConfig) -> pd.DataFrame:
    """The label table with rows the channels cannot use marked skipped, and splits assigned."""
    table = _labelled_table(config)
    return assign_splits(table, config.fractions, config.stratify, config.kfold, config.seed)


def _labelled_table(config: ScrapeConfig) -> pd.DataFrame:
    """:func:`prepared_table` before the splits (all that the input hash needs)."""
    table = label_table(config.data_dir, config.threshold)
    needs_m = any(c != "total" for c in config.channels)
    no_spin = (table["status"] == "ok") & (table["spin_kind"] == "none")
    if needs_m and no_spin.any():
        table.loc[no_spin, "status"] = "skipped"
        table.loc[no_spin, "reason"] = (
            f"not spin-polarized, but channels {list(config.channels)} need a magnetization"
        )
    return table


def dataset_paths(data_dir: Path, shard: tuple[int, int] | None = None) -> tuple[Path, Path]:
    if shard is None:
        return data_dir / "dataset.h5", data_dir / "table.parquet"
    i, n = shard
    return data_dir / f"dataset.shard-{i}-of-{n}.h5", data_dir / f"table.shard-{i}-of-{n}.parquet"


def _input_hash(table: pd.DataFrame, config: ScrapeConfig) -> str:
    inputs = table.get("input_hash", pd.Series(dtype=str)).fillna("").tolist()
    payload = {
        "settings": config.content_settings(),
        "calcs": table["calc_id"].tolist(),
        "inputs": inputs,
        "version": DATASET_FORMAT,
    }
    return sha256_text(json.dumps(payload, sort_keys=True, default=str))


def scrape(config: ScrapeConfig) -> ScrapeResult:
    """Run stage 03 (or one shard of it). See the module docstring for what it writes."""

    out_dir = config.dataset_dir
    table = _labelled_table(config)
    input_hash = _input_hash(table, config)  # the splits follow from the table: not needed yet
    h5_path, table_path = dataset_paths(out_dir, config.shard)
    stage = _stage_name(config.shard)
    if h5_attr(h5_path, "input_hash") == input_hash and not marker_path(out_dir, stage).exists():
        previous = None
        with contextlib.suppress(MagnbError):  # a table of another build: build again
            previous = ScrapeResult(_read_build(h5_path, table_path), h5_path, skipped_build=True)
        if previous is not None:
            previous.check_usable(config)
            return previous
    with stage_writer(out_dir, stage), user_os_errors("cannot write the dataset", h5_path):
        result = _build(config, table, input_hash, h5_path, table_path)
    result.check_usable(config)
    return result


def _stage_name(shard: tuple[int, int] | None) -> str:
    """The lock and marker name of a scrape: shards of one build run at once, each its own."""
    return "scrape" if shard is None else f"scrape.shard-{shard[0]}-of-{shard[1]}"


def _build(
    config: ScrapeConfig, table: pd.DataFrame, input_hash: str, h5_path: Path, table_path: Path
) -> ScrapeResult:
    import h5py

    # split before any sample is made: every shard splits the whole table alike, and a file
    # whose sample cannot be made keeps the split its row was given
    table = assign_splits(table, config.fractions, config.stratify, config.kfold, config.seed)

    positions = np.arange(len(table))
    if config.shard is not None:
        i, n = config.shard
        positions = positions[positions % n == i]
    todo = positions[table["status"].to_numpy()[positions] == "ok"].tolist()
    paths = [str(config.data_dir / p) for p in table["split_file"].to_numpy()[todo]]
    shape = config.sample_shape
    table["sample"] = -1
    for col in ("sum", "sumsq", "maxabs"):
        table[f"stat_{col}"] = None
    table["moment_sample"] = math.nan
    for col in ("crop_start", "crop_planes", "native_nz"):  # where the sample sits in its cell
        table[col] = -1
    table["geometry"] = ""  # what was done with the cell, in words (describe_geometry)
    if config.symmetry:
        table["symmetry_ops"] = ""  # JSON list of indices into magnb.symmetry.CUBE_OPS
    workers = config.workers or os.cpu_count() or 1
    parallel = workers > 1 and len(paths) > 1

    with contextlib.ExitStack() as stack:  # processes forked before any thread of ours starts
        pool = stack.enter_context(process_pool(workers)) if parallel else None
        tmp = stack.enter_context(atomic_path(h5_path))
        f = stack.enter_context(h5py.File(tmp, "w"))
        ds = f.create_dataset(
            "samples",
            shape=(len(paths), *shape),  # cut to the samples written at the end
            maxshape=(None, *shape),
            dtype=np.float32,
            chunks=(1, *shape),
            **CODECS[config.codec],
        )
        if _filters(ds) != _PIPELINES[config.codec]:
            raise RuntimeError(
                f"h5py made the filters {_filters(ds)}, not {_PIPELINES[config.codec]}"
            )
        bar = None
        if config.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(paths), desc="scrape", unit="sample")
        columns: dict[str, dict[int, Any]] = {
            c: {} for c in ("sample", "stat_sum", "stat_sumsq", "stat_maxabs", "moment_sample",
                            "crop_start", "crop_planes", "native_nz", "geometry", "status",
                            "reason", *(["symmetry_ops"] if config.symmetry else []))
        }  # fmt: skip
        n = 0
        zeros = (0,) * len(shape)
        encoded = _encoded_samples(paths, config, pool, workers)
        for p, (chunk, info, error) in zip(todo, encoded, strict=True):
            if bar is not None:
                bar.update()
            if chunk is None:
                columns["status"][p] = "skipped"
                columns["reason"][p] = error
                continue
            ensure_space(h5_path, len(chunk))
            ds.id.write_direct_chunk((n, *zeros), chunk)
            columns["sample"][p] = n
            for col in ("stat_sum", "stat_sumsq", "stat_maxabs"):
                columns[col][p] = info[col]
            columns["moment_sample"][p] = info.get("moment_sample", math.nan)
            for col in ("crop_start", "crop_planes", "native_nz"):
                columns[col][p] = int(info.get(col, 0 if col == "crop_start" else -1))
            columns["geometry"][p] = info.get("geometry", "")
            if config.symmetry:
                columns["symmetry_ops"][p] = info["symmetry_ops"]
            n += 1
        if bar is not None:
            bar.close()
        if n < len(paths):
            ds.resize(n, axis=0)  # skipped files leave no row
        for col, values in columns.items():  # one assignment per column, not per cell
            table[col] = [
                values.get(i, old) for i, old in zip(table.index, table[col], strict=True)
            ]
        if config.shard is not None:
            table = table.iloc[positions].reset_index(drop=True)
        build_id = new_build_id()
        _write_attrs(f, config, table, input_hash, build_id)
        disk = _table_for_disk(table)
        # the table first: its build id names a dataset not yet in place, so a reader finds
        # the pair incomplete until the rename below (the marker says so as well)
        _write_table(disk, table_path, build_id)
    return ScrapeResult(disk, h5_path)


#: the key of the build id in table.parquet's schema metadata
_BUILD_KEY = b"magnb_build_id"


def _write_table(table: pd.DataFrame, path: Path, build_id: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), _BUILD_KEY: build_id})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)


def _read_build(h5_path: Path, table_path: Path) -> pd.DataFrame:
    """A dataset's table, after checking that it and ``h5_path`` are one build."""
    import h5py
    import pyarrow.parquet as pq

    if not h5_path.is_file():
        raise MagnbError("no dataset: run stage 03 (magnb scrape) first", h5_path)
    if not table_path.is_file():
        raise MagnbError("no dataset table: run stage 03 (magnb scrape) first", table_path)
    try:
        with h5py.File(h5_path, "r") as f:
            dataset_build = str(f.attrs.get("build_id", ""))
            f["samples"].shape  # noqa: B018 (a dataset with no samples is damaged)
    except (OSError, KeyError) as exc:
        raise MagnbError(
            f"damaged dataset, HDF5 cannot read it ({exc}): run stage 03 (magnb scrape) again",
            h5_path,
        ) from exc
    try:
        table_build = (pq.read_schema(table_path).metadata or {}).get(_BUILD_KEY, b"").decode()
        table = pd.read_parquet(table_path)
    except Exception as exc:  # pyarrow's errors for a damaged file share no base class
        raise MagnbError(
            f"damaged dataset table ({type(exc).__name__}): run stage 03 (magnb scrape) again",
            table_path,
        ) from exc
    if not dataset_build or dataset_build != table_build:
        raise MagnbError(
            f"{h5_path.name} and {table_path.name} are from different builds (an interrupted "
            "or older scrape): run stage 03 (magnb scrape) again",
            table_path,
        )
    return table


def _filters(ds) -> list[tuple[int, tuple[int, ...]]]:
    """An HDF5 dataset's filter pipeline as ``(filter code, client data)`` in order."""
    plist = ds.id.get_create_plist()
    return [tuple(plist.get_filter(i)[:3:2]) for i in range(plist.get_nfilters())]


def normalization_stats(
    table: pd.DataFrame, mode: str, nchan: int, voxels: int
) -> dict[str, list[float]]:
    """Per-channel offset and scale from the training rows' per-sample sums (in table order)."""
    train = table[(table["status"] == "ok") & (table["split"] == "train") & (table["sample"] >= 0)]
    if mode == "none" or len(train) == 0:
        return {"offset": [0.0] * nchan, "scale": [1.0] * nchan}
    sums = np.array(train["stat_sum"].tolist(), dtype=np.float64)
    if mode == "maxabs":
        scale = np.array(train["stat_maxabs"].tolist(), dtype=np.float64).max(axis=0)
        return {"offset": [0.0] * nchan, "scale": np.where(scale > 0, scale, 1.0).tolist()}
    sumsq = np.array(train["stat_sumsq"].tolist(), dtype=np.float64)
    count = voxels * len(train)
    mean = sums.sum(axis=0) / count
    var = np.maximum(sumsq.sum(axis=0) / count - mean**2, 0.0)
    std = np.sqrt(var)
    return {"offset": mean.tolist(), "scale": np.where(std > 0, std, 1.0).tolist()}


def _write_attrs(
    f, config: ScrapeConfig, table: pd.DataFrame, input_hash: str, build_id: str
) -> None:
    import yaml

    shape = config.sample_shape
    # the settings that made the content (not where it lives or how many workers built it)
    f.attrs["config"] = yaml.safe_dump(config.content_settings(), sort_keys=False)
    f.attrs["channels"] = json.dumps(list(config.channels))
    f.attrs["channel_units"] = json.dumps([CHANNEL_UNITS[c] for c in config.channels])
    f.attrs["periodic_axes"] = json.dumps(list(config.periodic_axes))
    f.attrs["representation"] = config.representation
    f.attrs["normalization"] = config.normalization
    stats = normalization_stats(table, config.normalization, shape[-1], int(np.prod(shape[:3])))
    f.attrs["norm_offset"] = json.dumps(stats["offset"])
    f.attrs["norm_scale"] = json.dumps(stats["scale"])
    f.attrs["input_hash"] = input_hash
    f.attrs["build_id"] = build_id
    # where the split files are, from this folder (paths in the table are relative to it)
    f.attrs["data_dir"] = os.path.relpath(config.data_dir, config.dataset_dir)
    f.attrs["magnb_version"] = __version__
    f.attrs["layout"] = "samples[n, x, y, z, channel]; row n is table.parquet's 'sample' column"


def _table_for_disk(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for col in ("stat_sum", "stat_sumsq", "stat_maxabs"):
        out[col] = [json.dumps(v) if v is not None else "" for v in out[col]]
    return out


def _stats_from_disk(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for col in ("stat_sum", "stat_sumsq", "stat_maxabs"):
        out[col] = [json.loads(v) if v else None for v in out[col]]
    return out


def merge_shards(data_dir: str | Path, n: int, out_dir: str | Path | None = None) -> Path:
    """Join ``n`` shard builds in ``out_dir`` (default ``data_dir``) into ``dataset.h5`` and
    ``table.parquet`` there, identical to a single build (samples in calc_id order, normalization
    from the training rows). ``data_dir`` is the data folder the shards were scraped from."""
    data_dir = Path(data_dir)
    out = Path(out_dir) if out_dir is not None else data_dir
    h5_path, _ = dataset_paths(out)
    with stage_writer(out, "scrape"), user_os_errors("cannot write the dataset", h5_path):
        return _merge(data_dir, n, out)


def _merge(data_dir: Path, n: int, out: Path) -> Path:
    import h5py
    import yaml

    parts = []
    for i in range(n):
        h5, tab = dataset_paths(out, (i, n))
        if not h5.is_file() or not tab.is_file():
            raise MagnbError(f"shard {i} of {n} is missing: run scrape with shard=({i}, {n})", h5)
        check_complete(out, _stage_name((i, n)), f"magnb scrape DATA --shard {i}/{n}")
        parts.append((h5, _stats_from_disk(_read_build(h5, tab)), i))
    table = pd.concat([t.assign(shard_index=i, shard_sample=t["sample"]) for _, t, i in parts])
    table = table.sort_values("calc_id", kind="stable").reset_index(drop=True)
    ok = table["sample"] >= 0
    table.loc[ok, "sample"] = np.arange(int(ok.sum()))
    h5_path, table_path = dataset_paths(out)
    sources = [h5py.File(p, "r") for p, _, _ in parts]
    try:
        first = sources[0]
        shape = first["samples"].shape[1:]
        config_map = yaml.safe_load(first.attrs["config"])
        config = from_mapping(
            ScrapeConfig, {**config_map, "data_dir": str(data_dir), "out_dir": str(out)}
        )
        build_id = new_build_id()
        with atomic_path(h5_path) as tmp, h5py.File(tmp, "w") as f:
            ds = f.create_dataset(
                "samples",
                shape=(int(ok.sum()), *shape),
                maxshape=(None, *shape),  # as scrape's: an empty merge (0 samples) is allowed
                dtype=np.float32,
                chunks=(1, *shape),
                **CODECS[config.codec],
            )
            # the same filters (any shard magnb wrote): copy the stored chunks as they are
            direct = all(_filters(s["samples"]) == _filters(ds) for s in sources)
            zeros = (0,) * len(shape)
            for row in table[ok].itertuples():
                src = sources[row.shard_index]["samples"]
                if direct:
                    mask, chunk = src.id.read_direct_chunk((int(row.shard_sample), *zeros))
                    ensure_space(h5_path, len(chunk))
                    ds.id.write_direct_chunk((int(row.sample), *zeros), chunk, mask)
                else:
                    ds[row.sample] = src[int(row.shard_sample)]
            clean = table.drop(columns=["shard_index", "shard_sample"])
            full_hash = _input_hash(_labelled_table(config), config)
            _write_attrs(f, config, clean, full_hash, build_id)
            _write_table(_table_for_disk(clean), table_path, build_id)
    finally:
        for s in sources:
            s.close()
    return h5_path


def read_table(dataset_dir: str | Path) -> pd.DataFrame:
    """A dataset's table, refused while its scrape is incomplete and when dataset.h5 and
    table.parquet are not one build (MagnbErrors that name the file and say what to run)."""
    dataset_dir = Path(dataset_dir)
    check_complete(dataset_dir, "scrape", f"magnb scrape DATA --out {dataset_dir}")
    h5_path, table_path = dataset_paths(dataset_dir)
    return _read_build(h5_path, table_path)


def replace_table(dataset_dir: str | Path, table: pd.DataFrame) -> None:
    """Write an edited table (relabelled rows, say) as the table of the dataset in
    ``dataset_dir``: it keeps that dataset's build id, so readers take the two as one build."""
    dataset_dir = Path(dataset_dir)
    h5_path, table_path = dataset_paths(dataset_dir)
    build_id = h5_attr(h5_path, "build_id")
    if not build_id:
        raise MagnbError("no readable dataset to go with the table", h5_path)
    with stage_lock(dataset_dir, "scrape"):
        _write_table(table, table_path, build_id)


def split_file_path(dataset_dir: str | Path, split_file: str) -> Path:
    """Where a table row's split file is: the table holds paths relative to the data folder,
    and dataset.h5 says where that folder is from the dataset's own (``data_dir`` attribute)."""
    dataset_dir = Path(dataset_dir)
    data_dir = h5_attr(dataset_paths(dataset_dir)[0], "data_dir") or "."
    return dataset_dir / data_dir / split_file
