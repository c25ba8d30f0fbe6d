"""Stage 02, split: each collected calculation to total and magnetization densities in HDF5.

For every ``ok`` row of ``<data>/manifest.parquet`` this writes ``<data>/split/<calc_id>.h5``:

========================  ==========================================================================
``total``                 electron density on the native grid, e/A^3, float32 (nx, ny, nz)
``magnetization``         up minus down, muB/A^3 (collinear runs)
``mx``, ``my``, ``mz``    magnetization vector components, muB/A^3 (non-collinear runs)
``lattice``               (3, 3) rows are lattice vectors, A
``species``, ``frac_coords``, ``site_moments`` (muB, from OUTCAR, when it has the table)
attributes                calc_id, formula, spin_kind, volume (A^3), grid_shape, electrons and
                          moment_integral (cell integrals, computed in float64 before the float32
                          cast), moment and moment_source (OUTCAR > OSZICAR > vasprun.xml),
                          moment_flag (integral and reported moment disagree), input_hash, units
========================  ==========================================================================

and ``<data>/split/index.parquet``, one row per manifest row with the status and the numbers above,
read back from each split file's own attributes, and the file's path relative to the data folder
(``split/<calc_id>.h5``).
A non-spin run is recorded (spin_kind ``none``), not an error. Work runs in processes, one file in
flight per worker; every file is written atomically; an unchanged input (same raw file hashes, same
settings) is skipped, so an interrupted split is finished by running it again.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from magnb import __version__
from magnb._io import (
    atomic_path,
    check_complete,
    ensure_space,
    h5_attr,
    sha256_text,
    stage_writer,
    user_os_errors,
)
from magnb._workers import process_pool
from magnb.collect import content_of, read_manifest
from magnb.errors import MagnbError, WriteError
from magnb.vasp import ChargeDensity, Moments, read_chgcar, read_moments, write_chgcar

#: bump when the split file's content changes, so old outputs are redone
SPLIT_FORMAT = 3

#: elements counted as magnetic when the OUTCAR has no per-site table: 3d, 4d, 5d metals, 4f
MAGNETIC_ELEMENTS = frozenset(
    "Sc Ti V Cr Mn Fe Co Ni Cu Y Zr Nb Mo Tc Ru Rh Pd Hf Ta W Re Os Ir Pt "
    "La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu".split()
)

INDEX_COLUMNS = [
    "calc_id",
    "formula",
    "run",
    "status",
    "error",
    "spin_kind",
    "nx",
    "ny",
    "nz",
    "natoms",
    "volume",
    "electrons",
    "nelect",
    "moment_integral",
    "moment",
    "moment_source",
    "moment_flag",
    "n_magnetic",
    "source_path",
    "input_hash",
    "path",
]


@dataclass(frozen=True)
class SplitConfig:
    """Settings of stage 02."""

    data_dir: Path
    workers: int = 0  #: processes; 0 means one per CPU core
    moment_abs_tol: float = 0.02  #: muB; flag |integral - reported| above abs + rel * |reported|
    moment_rel_tol: float = 0.01
    export_chgcar: bool = False  #: also write <calc_id>.mag.vasp, a CHGCAR that VESTA opens
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.workers < 0:
            raise MagnbError(f"workers must be >= 0, not {self.workers}")


@dataclass
class SplitResult:
    index: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> pd.DataFrame:
        return self.index[self.index["status"] == "failed"]

    def summary(self) -> str:
        c = self.counts
        lines = [
            f"split: {c.get('total', 0)} calculations, {c.get('written', 0)} written, "
            f"{c.get('unchanged', 0)} unchanged, {c.get('failed', 0)} failed, "
            f"{c.get('flagged', 0)} flagged (integral and reported moment disagree)"
        ]
        for row in self.failures.itertuples():
            lines.append(f"  FAILED {row.calc_id}: {row.error}")
        flagged = self.index[self.index["moment_flag"].fillna(False).astype(bool)]
        for row in flagged.itertuples():
            lines.append(
                f"  FLAGGED {row.calc_id}: integral {row.moment_integral:.4f} muB, "
                f"{row.moment_source} says {row.moment:.4f} muB"
            )
        return "\n".join(lines)


def split_path(data_dir: str | Path, calc_id: str) -> Path:
    return Path(data_dir) / split_name(calc_id)


def split_name(calc_id: str) -> str:
    """A split file's path relative to the data folder (how the index records it)."""
    return f"split/{calc_id}.h5"


def _input_hash(manifest_row: dict, config: SplitConfig) -> str:
    settings = {
        "files": content_of(manifest_row["files"]),
        "format": SPLIT_FORMAT,
        "abs_tol": config.moment_abs_tol,
        "rel_tol": config.moment_rel_tol,
        "export_chgcar": config.export_chgcar,
    }
    return sha256_text(json.dumps(settings, sort_keys=True))


def check_consistency(density: ChargeDensity, moments: Moments, raw_dir: Path) -> None:
    """Cross-check a CHGCAR against its companions; a MagnbError names the disagreeing file."""
    natoms = len(density.structure)
    companion = moments.source or "OUTCAR/OSZICAR/vasprun.xml"
    if moments.natoms is not None and moments.natoms != natoms:
        raise MagnbError(
            f"has {natoms} atoms but {companion} reports {moments.natoms} (NIONS): "
            "files from different calculations?",
            density.path,
        )
    if moments.per_site is not None and moments.per_site.size != natoms:
        raise MagnbError(
            f"has {natoms} atoms but the OUTCAR magnetization table has "
            f"{moments.per_site.size} rows",
            density.path,
        )
    if (moments.ispin == 2 or moments.noncollinear) and density.spin_kind == "none":
        setting = "LNONCOLLINEAR = T" if moments.noncollinear else "ISPIN = 2"
        raise MagnbError(
            f"has one grid block but the run is spin-polarized ({setting}): "
            "truncated after the first block?",
            density.path,
        )
    # a non-collinear run prints ISPIN = 1: its LNONCOLLINEAR says what it is
    if density.spin_kind == "collinear" and (moments.ispin == 1 or moments.noncollinear):
        setting = "LNONCOLLINEAR = T" if moments.noncollinear else "ISPIN = 1"
        raise MagnbError(
            f"has a magnetization block but the OUTCAR says {setting}: mixed-up files?",
            density.path,
        )
    said = moments.noncollinear
    if density.spin_kind == "noncollinear" and (said is False or (said is None and moments.ispin)):
        raise MagnbError(
            f"has four grid blocks (non-collinear) but {companion} does not say "
            "LNONCOLLINEAR = T: mixed-up files?",
            density.path,
        )


def split_one(
    raw_dir: str | Path, chgcar_name: str, out_path: str | Path, config: SplitConfig, meta: dict
) -> dict:
    """Split one calculation folder into ``out_path`` (atomic). Returns its index row.

    Raises MagnbError for bad input; the batch driver turns it into a failure row.
    """
    import h5py

    raw_dir = Path(raw_dir)
    out_path = Path(out_path)
    density = read_chgcar(raw_dir / chgcar_name)
    moments = read_moments(raw_dir)
    check_consistency(density, moments, raw_dir)

    structure = density.structure
    nx, ny, nz = density.grid_shape
    electrons = density.electrons
    moment_integral = density.moment
    moment = moments.total
    flag = False
    if density.spin_kind != "none":
        if moment is None and moments.source is None and moments.ispin == 2:
            raise MagnbError("spin-polarized run with no reported moment", raw_dir)
        if moment is not None and moment_integral is not None:
            tol = config.moment_abs_tol + config.moment_rel_tol * abs(moment)
            flag = abs(moment_integral - moment) > tol

    if moments.per_site is not None:  # magnetic sites: those VASP gives half a muB or more
        n_magnetic = int((np.abs(moments.per_site) >= 0.5).sum())
    else:
        n_magnetic = sum(1 for site in structure if site.specie.symbol in MAGNETIC_ELEMENTS)
    arrays = [density.total, density.magnetization]
    ensure_space(out_path, sum(a.size * 4 for a in arrays if a is not None) + 4 * len(structure))
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        f.attrs.update(
            {
                "calc_id": meta["calc_id"],
                "formula": structure.composition.reduced_formula,
                "run": meta.get("run", ""),
                "source_path": meta.get("source_path", ""),
                "spin_kind": density.spin_kind,
                "volume": density.volume,
                "volume_units": "A^3",
                "grid_shape": np.array([nx, ny, nz], dtype=np.int64),
                "electrons": electrons,
                "nelect": np.nan if moments.nelect is None else moments.nelect,
                "moment_integral": np.nan if moment_integral is None else moment_integral,
                "moment": np.nan if moment is None else moment,
                "moment_source": moments.source or "",
                "moment_flag": flag,
                "moment_units": "muB",
                "natoms": len(structure),
                "n_magnetic": n_magnetic,
                "input_hash": meta["input_hash"],
                "split_format": SPLIT_FORMAT,
                "magnb_version": __version__,
            }
        )
        _dataset(f, "total", density.total, "e/A^3")
        if density.magnetization is not None:
            if density.spin_kind == "collinear":
                _dataset(f, "magnetization", density.magnetization, "muB/A^3")
            else:
                for k, name in enumerate(("mx", "my", "mz")):
                    _dataset(f, name, density.magnetization[k], "muB/A^3")
        lat = f.create_dataset("lattice", data=structure.lattice.matrix, track_times=False)
        lat.attrs["units"] = "A"
        lat.attrs["layout"] = "rows are the lattice vectors a, b, c"
        f.create_dataset(
            "species",
            data=np.array([s.specie.symbol for s in structure], dtype="S3"),
            track_times=False,
        )
        f.create_dataset("frac_coords", data=structure.frac_coords, track_times=False)
        if moments.per_site is not None:
            ds = f.create_dataset("site_moments", data=moments.per_site, track_times=False)
            ds.attrs["units"] = "muB"
            ds.attrs["source"] = "OUTCAR magnetization (x|z) table, tot column"

    if config.export_chgcar and density.magnetization is not None:
        m = density.magnetization if density.spin_kind == "collinear" else density.magnetization[2]
        write_chgcar(
            out_path.with_suffix(".mag.vasp"),
            structure,
            [m * density.volume],
            comment=f"{meta['calc_id']} magnetization (muB), written by magnb",
        )

    return index_row(out_path)


#: the index columns a split file's attributes give (the rest come from the manifest)
_FROM_FILE = (
    "spin_kind", "natoms", "volume", "electrons", "nelect", "moment_integral", "moment",
    "moment_source", "moment_flag", "n_magnetic", "source_path", "input_hash",
)  # fmt: skip


def index_row(path: str | Path) -> dict:
    """The split index's numbers for one split file, read from the file's own attributes (so
    the index can never say what its file does not); MagnbError if the file cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as exc:
        raise MagnbError(f"cannot read the split file ({exc})", path) from exc
    missing = [k for k in (*_FROM_FILE, "grid_shape") if k not in attrs]
    if missing:
        raise MagnbError(f"split file from an older magnb (no {', '.join(missing)})", path)
    row = {k: attrs[k] for k in _FROM_FILE}
    row["nx"], row["ny"], row["nz"] = (int(n) for n in attrs["grid_shape"])
    for k in ("volume", "electrons", "nelect", "moment_integral", "moment"):
        value = float(row[k])
        row[k] = None if math.isnan(value) else value
    for k in ("natoms", "n_magnetic"):
        row[k] = int(row[k])
    row["moment_flag"] = bool(row["moment_flag"])
    for k in ("spin_kind", "moment_source", "source_path", "input_hash"):
        row[k] = str(row[k])
    return row


def _dataset(f, name: str, data: np.ndarray, units: str) -> None:
    ds = f.create_dataset(name, data=data.astype(np.float32), track_times=False)
    ds.attrs["units"] = units


def _work(args: tuple) -> dict:
    raw_dir, chgcar, out_path, config, meta = args
    try:
        with user_os_errors("cannot read or write"):
            row = split_one(raw_dir, chgcar, out_path, config, meta)
        row["status"] = "ok"
        row["error"] = ""
    except WriteError:
        raise  # a full disk stops the stage: no later file could be written either
    except MagnbError as exc:
        # name the user's file, not magnb's raw copy of it
        message = str(exc).replace(str(raw_dir), meta.get("source_path") or str(raw_dir))
        row = {"status": "failed", "error": message}
    return row


def split_all(config: SplitConfig) -> SplitResult:
    """Run stage 02 over the manifest; returns (and writes) the split index.

    The split files and the index are one output: while they change, ``split/.split.incomplete``
    is there and stage 03 refuses the folder. Every index row is read from its split file's own
    attributes, so an index can only say what its files do.
    """
    from tqdm.auto import tqdm

    data_dir = config.data_dir
    manifest = read_manifest(data_dir, complete=True)
    split_dir = data_dir / "split"
    with stage_writer(split_dir, "split"):
        index, counts = _split_under_lock(config, manifest, tqdm)
    return SplitResult(index=index, counts=counts)


def _split_under_lock(config: SplitConfig, manifest: pd.DataFrame, tqdm) -> tuple:
    data_dir = config.data_dir
    split_dir = data_dir / "split"
    rows: dict[str, dict] = {}
    jobs = []
    counts = {"total": len(manifest), "written": 0, "unchanged": 0, "failed": 0, "flagged": 0}
    for rec in manifest.to_dict("records"):
        cid = rec["calc_id"]
        base = {"calc_id": cid, "formula": rec["formula"], "run": rec["run"]}
        base["path"] = split_name(cid)
        if rec["status"] != "ok":
            rows[cid] = {**base, "status": "failed", "error": f"collect: {rec['error']}"}
            continue
        out = split_path(data_dir, cid)
        input_hash = _input_hash(rec, config)
        if h5_attr(out, "input_hash") == input_hash:
            try:  # the file is the record: its attributes give the row
                rows[cid] = {**index_row(out), **base, "status": "ok", "error": ""}
                counts["unchanged"] += 1
                continue
            except MagnbError:
                pass  # unreadable or older: split it again
        meta = {
            "calc_id": cid,
            "run": rec["run"],
            "source_path": rec["source_path"],
            "input_hash": input_hash,
        }
        jobs.append((data_dir / "raw" / cid, rec["chgcar"], out, config, meta))
        rows[cid] = base

    workers = config.workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc="split", unit="calc", disable=not config.progress)
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            rows[job[4]["calc_id"]].update(_work(job))
            bar.update()
    else:
        with process_pool(workers) as pool:
            for job, res in zip(jobs, pool.map(_work, jobs, chunksize=1), strict=True):
                rows[job[4]["calc_id"]].update(res)
                bar.update()
    bar.close()

    index = pd.DataFrame([rows[c] for c in manifest["calc_id"]], columns=INDEX_COLUMNS)
    submitted = {job[4]["calc_id"] for job in jobs}
    for row in index.itertuples():
        if row.status == "failed":
            counts["failed"] += 1
        elif row.calc_id in submitted:
            counts["written"] += 1
    index["moment_flag"] = index["moment_flag"].astype("boolean")
    for column in ("nx", "ny", "nz", "natoms", "n_magnetic"):
        index[column] = index[column].astype("Int64")
    counts["flagged"] = int(index["moment_flag"].fillna(False).sum())
    with user_os_errors("cannot write the split index", split_dir / "index.parquet"):
        with atomic_path(split_dir / "index.parquet") as tmp:
            index.to_parquet(tmp, index=False)
    return index, counts


def read_index(data_dir: str | Path) -> pd.DataFrame:
    """The split index of a data folder, refused while stage 02 is incomplete there; paths in it
    are relative to the data folder."""
    data_dir = Path(data_dir)
    path = data_dir / "split" / "index.parquet"
    check_complete(data_dir / "split", "split", f"magnb split {data_dir}")
    if not path.is_file():
        raise MagnbError("no split index: run stage 02 (magnb split) first", path)
    try:
        index = pd.read_parquet(path)
    except Exception as exc:  # a damaged file: pyarrow's errors share no base class
        raise MagnbError(f"cannot read the split index ({type(exc).__name__})", path) from exc
    missing = {"n_magnetic", "source_path", "input_hash", "path"} - set(index.columns)
    paths = index["path"].astype(str) if "path" in index else pd.Series(dtype=str)
    if missing or not paths.str.startswith("split/").all():
        raise MagnbError("split index from an older magnb: run stage 02 (magnb split) again", path)
    return index


def load_split(path: str | Path) -> dict:
    """Read a split file into a dict of arrays and attributes (for notebooks and tests)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MagnbError("no split file: run stage 02 (magnb split) first", path)
    try:
        with h5py.File(path, "r") as f:
            out = {k: f[k][()] for k in f}
            out["attrs"] = dict(f.attrs)
    except OSError as exc:  # truncated or overwritten: HDF5 cannot read it
        raise MagnbError(f"damaged split file, HDF5 cannot read it ({exc})", path) from exc
    if "species" in out:
        out["species"] = [s.decode() for s in out["species"]]
    return out
