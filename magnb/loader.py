"""Stage 03's loader: batches ``(x, y)`` of one split streamed from ``dataset.h5``, as a Keras 3
``PyDataset`` (every backend; ``workers`` threads prefetch batches while the model runs).

How a sample gets from disk into a batch, by how ``samples`` is stored:

- no filter (``codec: none``, the default from dataset format 6 on): the file is mapped into
  memory once per process (``np.memmap``) and each sample is copied straight from the page cache
  into its slot of the batch, the periodic roll done as index arithmetic on that one copy (at most
  eight block copies, one per corner of the shifted cell) and the normalization fused into it;
- shuffle + deflate (``codec: gzip``, every dataset written before format 6): the stored chunk is
  read as it is (``read_direct_chunk``), inflated by ISA-L, un-shuffled into one buffer reused
  for the batch's samples, then rolled into the batch the same way;
- anything else (a filter another tool added): h5py's ``read_direct``, then the same roll.

The copies and ISA-L release the GIL, so reader threads overlap with each other and the model
(the h5py calls themselves are taken one at a time).
``bench/loader.py`` measures each path beside the loader it replaced.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np

from magnb.errors import MagnbError
from magnb.labels import LABEL_HINTS, LABELS, encode_labels, label_rows
from magnb.store import read_table

__all__ = ["DensityDataset", "roll_into"]

#: HDF5 filter ids
_DEFLATE, _SHUFFLE = 1, 2
#: h5py calls from several reader threads at once fail ("Can't read unprocessed chunk data (no
#: VOL object wrap context?)", h5py 3.14): one at a time; the decoding and copies run outside it
_H5_LOCK = threading.Lock()


def roll_into(
    out: np.ndarray,
    src: np.ndarray,
    shifts: tuple[int, ...],
    offset: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> None:
    """``out[...] = (np.roll(src, shifts, axis=(0, 1, 2)) - offset) / scale`` for a sample
    ``(X, Y, Z, C)`` in one pass over the data (two with both an offset and a scale): each axis
    shifted by ``s`` is cut into ``[0, n - s)`` and ``[n - s, n)``, so the roll is at most eight
    block copies, and no temporary array is made. ``offset`` and ``scale`` are per channel (the
    last axis, which no roll moves); None (or all 0 / all 1) skips them. The division is a
    multiplication by ``1 / scale`` done in the copy (within 1 ulp of dividing), and the channel
    vectors are tiled along z, so numpy's inner loop runs over whole z rows, not C values.

    >>> src = np.arange(4.0).reshape(4, 1, 1, 1); out = np.empty_like(src)
    >>> roll_into(out, src, (1, 0, 0)); out.ravel().tolist()
    [3.0, 0.0, 1.0, 2.0]
    """
    nz, nc = src.shape[2:]
    if offset is not None and not np.any(offset):
        offset = None
    if scale is not None and np.all(scale == 1):
        scale = None
    pieces = []
    for n, s in zip(src.shape[:3], shifts, strict=True):
        s = int(s) % n
        # (source slice, destination slice) pairs along this axis
        pieces.append(
            [(slice(0, n), slice(0, n))]
            if s == 0
            else [(slice(0, n - s), slice(s, n)), (slice(n - s, n), slice(0, s))]
        )
    tiled = {
        name: None if v is None else np.tile(np.asarray(v, src.dtype), nz)
        for name, v in (("offset", offset), ("inverse", None if scale is None else 1 / scale))
    }
    for (sa, da), (sb, db), (sc, dc) in itertools.product(*pieces):
        block, dest = src[sa, sb, sc], out[da, db, dc]
        if offset is None and scale is None:
            np.copyto(dest, block)
            continue
        width = (sc.stop - sc.start) * nc  # (a, b, c, C) -> (a, b, c * C): a view
        block = block.reshape(*block.shape[:2], width)
        dest = dest.reshape(*dest.shape[:2], width)
        if offset is not None:
            np.subtract(block, tiled["offset"][:width], out=dest)
            block = dest
        if scale is not None:
            np.multiply(block, tiled["inverse"][:width], out=dest)


class DensityDataset(keras.utils.PyDataset):
    """Batches ``(x, y)`` streamed from ``dataset.h5`` for one split.

    ``x`` is float32 ``(batch, X, Y, Z, C)`` with the stored normalization applied; ``y`` is the
    label column: class indices for ``order`` (0 = AFM, 1 = FM), ``order_pattern`` (0 = FM,
    1 = Neel, 2 = zigzag, 3 = stripe) and ``moment_class`` (0/1), or a float moment.
    With ``augment``, each sample is rolled by a random whole number of voxels along each periodic
    axis (exact for periodic densities). Shuffling and rolls are seeded by (seed, epoch, batch),
    so a batch is the same whichever reader thread makes it. ``workers`` and the other keyword
    arguments go to ``keras.utils.PyDataset``.

    For data-parallel training on JAX (``keras.distribution``, whose batches must split evenly
    over the devices): ``multiple_of`` cuts the last batch down to a multiple of the device
    count (the few samples left over sit out that epoch; the shuffle changes which), and
    ``shard=(p, n)`` gives process ``p`` of ``n`` its ``batch_size`` part of each global batch
    of ``n * batch_size``, leaving out the last global batch when it is not full.
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str | None = "train",
        label: str = "order",
        batch_size: int = 8,
        shuffle: bool = True,
        augment: bool = False,
        seed: int = 0,
        rows: np.ndarray | None = None,
        multiple_of: int = 1,
        shard: tuple[int, int] | None = None,
        symmetry: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        import h5py

        dataset_dir = Path(dataset_dir)
        self.path = dataset_dir / "dataset.h5"
        if not self.path.is_file():
            raise MagnbError("no dataset: run stage 03 (magnb scrape) first", self.path)
        if label not in LABELS:
            raise MagnbError(f"unknown label {label!r}; choose from {list(LABELS)}")
        table = read_table(dataset_dir)
        table = table[(table["status"] == "ok") & (table["sample"] >= 0)]
        if split is not None:
            table = table[table["split"] == split]
        if rows is not None:
            table = table.iloc[rows]
        table = label_rows(table, label)
        self.dropped_nonfinite = 0
        if label in ("moment", "moment_per_magnetic_atom"):
            finite = np.isfinite(table[label].astype(float))  # NaN e.g. with no magnetic atom
            self.dropped_nonfinite = int((~finite).sum())
            table = table[finite]
        if len(table) == 0:
            raise MagnbError(
                f"no samples in split {split!r} with a {label!r} label"
                + (f"{LABEL_HINTS[label]}" if label in LABEL_HINTS else ""),
                self.path,
            )
        if symmetry and "symmetry_ops" not in table:
            raise MagnbError(
                "augment_symmetry needs a cube dataset scraped with symmetry: true", self.path
            )
        self.symmetry = symmetry  # magnb.symmetry: one of each sample's own operations
        self.table = table.reset_index(drop=True)
        self.label = label
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.multiple_of = max(1, int(multiple_of))
        self.shard = (0, 1) if shard is None else (int(shard[0]), int(shard[1]))
        if self.batch_size % self.multiple_of:
            raise MagnbError(
                f"batch size {self.batch_size} is not a multiple of {self.multiple_of} devices"
            )
        if not 0 <= self.shard[0] < self.shard[1]:
            raise MagnbError(f"shard must be (p, n) with 0 <= p < n, not {shard}")
        with h5py.File(self.path, "r") as f:
            ds = f["samples"]
            self.offset = np.array(json.loads(f.attrs["norm_offset"]), dtype=np.float32)
            self.scale = np.array(json.loads(f.attrs["norm_scale"]), dtype=np.float32)
            self.periodic = json.loads(f.attrs["periodic_axes"])
            self.sample_shape = tuple(ds.shape[1:])
            self.storage, self._chunk_offsets = _storage(ds, self.table["sample"].to_numpy())
        self._file = None
        self._map = None
        self._pid = None
        self._order = self._permutation()

    @property
    def labels(self) -> np.ndarray:
        """All labels of this split, in table order (not shuffled)."""
        return self._labels(np.arange(len(self.table)))

    def _labels(self, idx: np.ndarray) -> np.ndarray:
        return encode_labels(self.table[self.label].to_numpy()[idx], self.label)

    def _permutation(self) -> np.ndarray:
        n = len(self.table)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def __len__(self) -> int:
        n, b = len(self.table), self.batch_size
        if self.shard[1] > 1:
            return n // (b * self.shard[1])
        last = n % b - (n % b) % self.multiple_of
        return n // b + (1 if last > 0 else 0)

    def batch_rows(self, i: int) -> np.ndarray:
        """The table rows of batch ``i`` in this epoch."""
        p, n = self.shard
        start = (i * n + p) * self.batch_size
        idx = self._order[start : start + self.batch_size]
        return idx[: len(idx) - len(idx) % self.multiple_of]

    # ---------------------------------------------------------------------------------------
    # reading

    def _fresh(self) -> None:
        """Open the file (and map it) once per process: a handle is not shared across a fork."""
        import h5py

        if self._pid == os.getpid():
            return
        with _H5_LOCK:
            if self._pid == os.getpid():  # another thread was first
                return
            self._file = h5py.File(self.path, "r")
            if self.storage == "raw":
                self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
            self._pid = os.getpid()

    def _stored(self, k: int, scratch: np.ndarray | None) -> np.ndarray:
        """Table row ``k``'s sample as stored (not normalized), a view where it can be one."""
        shape = self.sample_shape
        if self.storage == "raw":
            start = int(self._chunk_offsets[k])
            count = int(np.prod(shape))
            return np.frombuffer(self._map, np.float32, count, start).reshape(shape)
        row = int(self.table["sample"].iat[k])
        if self.storage == "gzip":
            from isal import isal_zlib

            with _H5_LOCK:  # h5py objects are made and freed under the lock too: HDF5 here
                # is not thread-safe, and a Dataset freed in another thread's read corrupts it
                samples = self._file["samples"]
                _, chunk = samples.id.read_direct_chunk((row, *(0,) * len(shape)))
                del samples
            raw = isal_zlib.decompress(chunk)  # the shuffled bytes: byte 0 of each float, ...
            planes = np.frombuffer(raw, np.uint8).reshape(4, -1)
            np.copyto(scratch.view(np.uint8).reshape(-1, 4), planes.T)
            return scratch
        with _H5_LOCK:
            self._file["samples"].read_direct(scratch, np.s_[row], np.s_[...])
        return scratch

    def _fill(self, idx: np.ndarray, shifts: list[tuple[int, int, int]] | None) -> np.ndarray:
        self._fresh()
        data = np.empty((len(idx), *self.sample_shape), dtype=np.float32)
        scratch = None if self.storage == "raw" else np.empty(self.sample_shape, np.float32)
        for j, k in enumerate(np.asarray(idx, dtype=np.int64)):
            src = self._stored(int(k), scratch)
            roll_into(data[j], src, shifts[j] if shifts else (0, 0, 0), self.offset, self.scale)
        return data

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Normalized samples for table rows ``idx`` (no augmentation), in that order."""
        return self._fill(np.asarray(idx), None)

    def shifts(self, i: int, n: int) -> list[tuple[int, int, int]]:
        """The roll of each of the ``n`` samples of batch ``i`` in this epoch (voxels per axis)."""
        p, n_shards = self.shard
        key = [self.seed, self.epoch, i] + ([p] if n_shards > 1 else [])
        rng = np.random.default_rng(key)
        return [
            tuple(
                int(rng.integers(size)) if periodic else 0
                for size, periodic in zip(self.sample_shape[:3], self.periodic, strict=True)
            )
            for _ in range(n)
        ]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i < 0 or i >= len(self):
            raise IndexError(i)
        idx = self.batch_rows(i)
        x = self._fill(idx, self.shifts(i, len(idx)) if self.augment else None)
        if self.symmetry:
            from magnb.symmetry import apply_op

            rng = np.random.default_rng([self.seed, self.epoch, i, 1])
            for k, ops in enumerate(self.table["symmetry_ops"].to_numpy()[idx]):
                x[k] = apply_op(x[k], int(rng.choice(json.loads(ops))))
        return x, self._labels(idx)

    def set_epoch(self, epoch: int) -> None:
        """Shuffle and augment as in ``epoch`` (a resumed run starts at its own epoch)."""
        self.epoch = int(epoch)
        self._order = self._permutation()

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def __getstate__(self) -> dict[str, Any]:  # worker processes open their own handles
        state = self.__dict__.copy()
        state.update(_file=None, _map=None, _pid=None)
        return state


def _storage(ds: Any, rows: np.ndarray) -> tuple[str, np.ndarray | None]:
    """How ``samples`` is stored: ``raw`` (no filter; with the byte offset of each of ``rows`` in
    the file), ``gzip`` (shuffle + deflate, one sample per chunk) or ``other``."""
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    shape = ds.shape[1:]
    one_per_chunk = ds.chunks == (1, *shape)
    if not filters and ds.dtype == np.float32:
        if ds.chunks is None:
            base = ds.id.get_offset()
            if base is not None:
                return "raw", base + rows.astype(np.int64) * int(np.prod(shape)) * 4
        elif one_per_chunk:
            zeros = (0,) * len(shape)
            offsets = [ds.id.get_chunk_info_by_coord((int(r), *zeros)).byte_offset for r in rows]
            if all(o is not None for o in offsets):
                return "raw", np.array(offsets, dtype=np.int64)
    if filters == [_SHUFFLE, _DEFLATE] and one_per_chunk and ds.dtype == np.float32:
        return "gzip", None
    return "other", None
