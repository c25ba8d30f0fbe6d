"""Reading (and fast writing of) VASP outputs.

Volumetric files (CHGCAR, CHG, AECCAR*, plain or .gz/.bz2/.xz) are parsed by pymatgen's compiled
reader; magnb adds the checks that turn a silent misread into a clear :class:`MagnbError`, and, when
pymatgen fails, a line-by-line diagnosis that names the offending line.

Units: VASP stores ``rho * V_cell`` on the grid. :func:`read_chgcar` divides by the cell volume, so
``ChargeDensity.total`` is in e/A^3 and ``ChargeDensity.magnetization`` in muB/A^3, and an integral
over the cell is ``array.sum() * volume / array.size`` (:meth:`ChargeDensity.integral`).

Magnetic moments come from the calculation's companions with this precedence:
``OUTCAR`` (last ``number of electron ... magnetization`` line, per-site ``magnetization (x)`` table)
> ``OSZICAR`` (last ``mag=``) > ``vasprun.xml`` (spin-resolved band occupations, weighted by k-point).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import numpy as np
from numpy.typing import NDArray

from magnb.errors import MagnbError

SpinKind = Literal["none", "collinear", "noncollinear"]

#: Companion files magnb collects beside a CHGCAR, and the suffixes they may carry.
COMPANIONS = ("OUTCAR", "OSZICAR", "vasprun.xml", "INCAR", "POSCAR", "CONTCAR", "KPOINTS")
COMPRESSED_SUFFIXES = ("", ".gz", ".bz2", ".xz")
VOLUMETRIC_NAMES = ("CHGCAR", "CHG", "AECCAR0", "AECCAR1", "AECCAR2", "PARCHG")


@dataclass(frozen=True)
class ChargeDensity:
    """One volumetric file: structure and densities in physical units.

    ``total`` is the electron density (e/A^3), shape (nx, ny, nz). ``magnetization`` is None for a
    non-spin-polarized run, (nx, ny, nz) for a collinear run (up minus down) and (3, nx, ny, nz)
    (mx, my, mz) for a non-collinear run, in muB/A^3.
    """

    path: Path
    structure: object  # pymatgen.core.Structure (kept untyped so importing magnb stays light)
    total: NDArray[np.float64]
    magnetization: NDArray[np.float64] | None

    @property
    def spin_kind(self) -> SpinKind:
        if self.magnetization is None:
            return "none"
        return "noncollinear" if self.magnetization.ndim == 4 else "collinear"

    @property
    def volume(self) -> float:
        """Cell volume in A^3."""
        return float(self.structure.volume)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.total.shape)  # type: ignore[return-value]

    def integral(self, density: NDArray[np.floating]) -> float | NDArray[np.float64]:
        """Integral of a density on this cell's grid over the cell (vector for (3, ...) arrays)."""
        n = int(np.prod(self.grid_shape))
        axes = tuple(range(density.ndim - 3, density.ndim))
        result = density.sum(axis=axes, dtype=np.float64) * self.volume / n
        return float(result) if np.ndim(result) == 0 else result

    @property
    def electrons(self) -> float:
        return float(self.integral(self.total))

    @property
    def moment(self) -> float | None:
        """Integral of the magnetization in muB (the z component for a non-collinear run)."""
        if self.magnetization is None:
            return None
        m = self.magnetization[2] if self.magnetization.ndim == 4 else self.magnetization
        return float(self.integral(m))


@dataclass(frozen=True)
class Moments:
    """Magnetic moments reported by VASP's text outputs for one calculation."""

    total: float | None = None  #: total moment in muB (z component if non-collinear)
    source: str | None = None  #: the file the total came from
    per_site: NDArray[np.float64] | None = None  #: OUTCAR ``magnetization (x)`` 'tot' column
    nelect: float | None = None
    ispin: int | None = None
    noncollinear: bool | None = None
    natoms: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# opening files


def open_maybe_compressed(path: str | Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing by suffix (.gz, .bz2, .xz)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix in (".xz", ".lzma"):
        return lzma.open(path, "rb")
    return open(path, "rb")


_DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    gzip.BadGzipFile,
    EOFError,
    lzma.LZMAError,
    OSError,
    Exception,  # zlib.error and bz2's errors have no common base narrower than this
)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise MagnbError("file does not exist", path)
    if path.is_dir():
        raise MagnbError("is a directory, expected a file", path)
    if path.stat().st_size == 0:
        raise MagnbError("file is empty (0 bytes): a crashed or unfinished run?", path)
    if path.suffix.lower() in (".gz", ".bz2", ".xz", ".lzma"):
        try:
            with open_maybe_compressed(path) as fh:
                while fh.read(1 << 22):
                    pass
        except _DECOMPRESSION_ERRORS as exc:
            raise MagnbError(
                f"corrupt compressed file ({type(exc).__name__}: {exc})", path
            ) from exc


# --------------------------------------------------------------------------------------------
# volumetric files


def read_chgcar(path: str | Path) -> ChargeDensity:
    """Read a CHGCAR-like file into densities in e/A^3 and muB/A^3.

    One block is a non-spin-polarized run, two a collinear one (total, up - down), four a
    non-collinear one (total, mx, my, mz). Raises :class:`MagnbError` naming the file, and the line
    where one can be found, for anything that is not a complete, finite volumetric file.
    """
    from pymatgen.io.vasp.outputs import VolumetricData

    path = Path(path)
    _check_readable(path)
    try:
        poscar, data, _aug = VolumetricData.parse_file(path)
    except Exception as exc:  # pymatgen raises ValueError, IndexError, ...; diagnose by hand
        line, reason = diagnose_volumetric(path)
        if reason is None:
            reason = f"could not be parsed ({type(exc).__name__}: {exc})"
        raise MagnbError(reason, path, line) from exc

    blocks = _blocks_in_order(data)
    if not blocks:
        raise MagnbError("no volumetric data after the structure header", path)
    shapes = {b.shape for b in blocks}
    if len(shapes) != 1:
        raise MagnbError(f"grid blocks have different shapes {sorted(shapes)}", path)
    if len(blocks) not in (1, 2, 4):
        raise MagnbError(
            f"{len(blocks)} grid blocks; expected 1 (no spin), 2 (collinear) or 4 (non-collinear)",
            path,
        )
    for i, block in enumerate(blocks):
        if not np.isfinite(block).all():
            raise MagnbError(f"grid block {i + 1} contains NaN or infinite values", path)

    # Re-check against the diagnosis when pymatgen may have silently stopped early: a file cut
    # off exactly between blocks parses as fewer blocks. A trailing partial block is an error.
    structure = poscar.structure
    volume = float(structure.volume)
    # the parsed arrays are ours: divide in place rather than allocate new ones
    total = np.divide(blocks[0], volume, out=blocks[0])
    magnetization: NDArray[np.float64] | None
    if len(blocks) == 1:
        magnetization = None
    elif len(blocks) == 2:
        magnetization = np.divide(blocks[1], volume, out=blocks[1])
    else:
        magnetization = np.stack(blocks[1:])
        magnetization /= volume
    return ChargeDensity(path=path, structure=structure, total=total, magnetization=magnetization)


def _blocks_in_order(data: dict[str, NDArray]) -> list[NDArray[np.float64]]:
    if "diff_x" in data:
        return [data["total"], data["diff_x"], data["diff_y"], data["diff_z"]]
    if "diff" in data:
        return [data["total"], data["diff"]]
    if "total" in data:
        return [data["total"]]
    return []


_FLOAT = re.compile(rb"^[+-]?(\d+\.?\d*|\.\d+)([eEdD][+-]?\d+)?$")


def diagnose_volumetric(path: str | Path) -> tuple[int | None, str | None]:
    """Walk a volumetric file line by line and say where and why it is malformed.

    Slow (pure Python), so only called after the fast parser failed. Returns (line, reason), or
    (None, None) when it finds nothing wrong.
    """
    path = Path(path)
    try:
        with open_maybe_compressed(path) as fh:
            lines = fh.read().split(b"\n")
    except _DECOMPRESSION_ERRORS as exc:
        return None, f"corrupt compressed file ({type(exc).__name__}: {exc})"
    if lines and not lines[-1]:
        lines.pop()  # the file's final newline

    n = len(lines)
    # header: comment, scale, 3 lattice lines, [species], counts, [Selective], Direct/Cartesian
    if n < 8:
        return n, f"truncated inside the structure header ({n} lines)"
    i = 2
    for k in range(3):
        if len(lines[i + k].split()) != 3 or not all(_FLOAT.match(t) for t in lines[i + k].split()):
            return i + k + 1, "lattice vector line is not three numbers"
    i = 5
    tokens = lines[i].split()
    if tokens and not tokens[0].isdigit():
        i += 1  # species line
    counts = lines[i].split()
    if not counts or not all(t.isdigit() for t in counts):
        return i + 1, "atom counts line is not a list of integers"
    natoms = sum(int(t) for t in counts)
    i += 1
    if lines[i].strip()[:1].lower() == b"s":
        i += 1
    i += 1  # Direct / Cartesian
    for k in range(natoms):
        if i + k >= n or len(lines[i + k].split()) < 3:
            return min(
                i + k + 1, n
            ), f"truncated inside the atomic positions (atom {k + 1} of {natoms})"
    i += natoms

    block = 0
    while i < n:
        line = lines[i].strip()
        i += 1
        if not line:
            continue
        if line.startswith(b"augmentation occupancies"):
            parts = line.split()
            try:
                count = int(parts[-1])
            except ValueError:
                return i, "malformed augmentation occupancies header"
            got = 0
            while got < count and i < n:
                for t in lines[i].split():
                    if not _FLOAT.match(t):
                        return (
                            i + 1,
                            f"non-numeric value {t.decode(errors='replace')!r} in augmentation occupancies",
                        )
                got += len(lines[i].split())
                i += 1
            if got < count:
                return (
                    n,
                    f"truncated inside the augmentation occupancies of grid block {block} ({got} of {count} values)",
                )
            continue
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            dims = [int(p) for p in parts]
            need = dims[0] * dims[1] * dims[2]
            block += 1
            got = 0
            start = i
            while got < need and i < n:
                toks = lines[i].split()
                if toks and toks[0].startswith(b"augmentation"):
                    return i + 1, (
                        f"grid block {block} ends after {got} of {need} values: do its "
                        f"dimensions {dims} match the data?"
                    )
                for t in toks:
                    if not _FLOAT.match(t):
                        return (
                            i + 1,
                            f"non-numeric value {t.decode(errors='replace')!r} in grid block {block}",
                        )
                got += len(toks)
                i += 1
            if got < need:
                return (
                    n,
                    f"truncated inside grid block {block} ({got} of {need} values, from line {start})",
                )
            continue
        if all(_FLOAT.match(p) for p in parts):
            continue  # e.g. the per-atom line VASP writes before a second block
        return i, f"unexpected line {line[:40].decode(errors='replace')!r}"
    if block == 0:
        return None, "no volumetric data after the structure header"
    return None, None


# --------------------------------------------------------------------------------------------
# moments from OUTCAR / OSZICAR / vasprun.xml


def find_companion(directory: Path, name: str) -> Path | None:
    """The file ``name`` (optionally compressed) in ``directory``, or None."""
    for suffix in COMPRESSED_SUFFIXES:
        candidate = directory / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_moments(directory: str | Path, files: Iterable[Path] | None = None) -> Moments:
    """Moments of the calculation in ``directory`` from its OUTCAR, OSZICAR or vasprun.xml.

    Precedence for the total moment: OUTCAR > OSZICAR > vasprun.xml. Returns an empty
    :class:`Moments` when none of the three exists. A companion that exists but cannot be read is
    a :class:`MagnbError`; one that has no moment (a non-spin run) leaves ``total`` None.
    """
    directory = Path(directory)
    outcar = find_companion(directory, "OUTCAR")
    oszicar = find_companion(directory, "OSZICAR")
    vasprun = find_companion(directory, "vasprun.xml")

    total: float | None = None
    source: str | None = None
    per_site = None
    nelect = ispin = natoms = None
    noncollinear = None

    if outcar is not None:
        o = read_outcar(outcar)
        total, per_site, nelect, ispin = o.total, o.per_site, o.nelect, o.ispin
        noncollinear, natoms = o.noncollinear, o.natoms
        if total is not None:
            source = outcar.name
    if total is None and oszicar is not None:
        total = read_oszicar_moment(oszicar)
        if total is not None:
            source = oszicar.name
    if vasprun is not None and (total is None or ispin is None):
        v = read_vasprun(vasprun)
        ispin = ispin if ispin is not None else v.ispin
        nelect = nelect if nelect is not None else v.nelect
        natoms = natoms if natoms is not None else v.natoms
        noncollinear = noncollinear if noncollinear is not None else v.noncollinear
        if total is None and v.total is not None:
            total, source = v.total, vasprun.name
    return Moments(
        total=total,
        source=source,
        per_site=per_site,
        nelect=nelect,
        ispin=ispin,
        noncollinear=noncollinear,
        natoms=natoms,
    )


_OUTCAR_MAG = re.compile(r"number of electron\s+(\S+)\s+magnetization\s+(\S+)(?:\s+(\S+)\s+(\S+))?")
_OUTCAR_ISPIN = re.compile(r"^\s*ISPIN\s*=\s*(\d)", re.M)
_OUTCAR_NONCOLL = re.compile(r"LNONCOLLINEAR\s*=\s*([TF])")
_OUTCAR_NIONS = re.compile(r"NIONS\s*=\s*(\d+)")


def read_outcar(path: str | Path) -> Moments:
    """Final total moment, per-site moments, NELECT, ISPIN and atom count from an OUTCAR.

    A streaming regex scan rather than pymatgen's ``Outcar`` (which reads everything, is slow on
    long MD runs, and has no line numbers for errors); the two agree on the fixtures (tests).
    """
    path = Path(path)
    _check_readable(path)
    last_mag: tuple[float, ...] | None = None
    nelect = None
    ispin = None
    nonc = None
    nions = None
    site_table: list[float] | None = None
    lines: list[str] = []
    try:
        with open_maybe_compressed(path) as fh:
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except _DECOMPRESSION_ERRORS as exc:
        raise MagnbError(f"cannot read ({type(exc).__name__}: {exc})", path) from exc
    i = 0
    while i < len(lines):
        line = lines[i]
        if "number of electron" in line and "magnetization" in line:
            m = _OUTCAR_MAG.search(line)
            if m:
                try:
                    nelect = float(m.group(1))
                    vals = [m.group(2)] + [g for g in (m.group(3), m.group(4)) if g]
                    last_mag = tuple(float(v) for v in vals)
                except ValueError as exc:
                    raise MagnbError(
                        "malformed 'number of electron ... magnetization' line", path, i + 1
                    ) from exc
        elif ispin is None and (m := _OUTCAR_ISPIN.match(line)):
            ispin = int(m.group(1))
        elif nonc is None and "LNONCOLLINEAR" in line and (m := _OUTCAR_NONCOLL.search(line)):
            nonc = m.group(1) == "T"
        elif nions is None and (m := _OUTCAR_NIONS.search(line)):
            nions = int(m.group(1))
        elif line.strip() == "magnetization (x)" or line.strip() == "magnetization (z)":
            if line.strip() == "magnetization (x)" or site_table is None or nonc:
                table = _read_site_table(lines, i, path)
                if table is not None and (line.strip() == "magnetization (z)" or not nonc):
                    site_table = table
        i += 1

    total: float | None = None
    # a non-collinear run prints ISPIN = 1 (its spinor has no ISPIN) and mx my mz
    if last_mag is not None and (ispin is None or ispin == 2 or nonc):
        # magnb's scalar moment of a non-collinear run is the z component
        total = last_mag[-1] if len(last_mag) == 3 else last_mag[0]
    if (ispin == 2 or nonc) and last_mag is None:
        setting = "LNONCOLLINEAR = T" if nonc else "ISPIN = 2"
        raise MagnbError(
            f"spin-polarized ({setting}) but no 'magnetization' line: unfinished run?", path
        )
    per_site = np.asarray(site_table, dtype=np.float64) if site_table is not None else None
    if per_site is not None and nions is not None and per_site.size != nions:
        raise MagnbError(f"magnetization table has {per_site.size} rows but NIONS = {nions}", path)
    return Moments(
        total=total,
        source=path.name if total is not None else None,
        per_site=per_site,
        nelect=nelect,
        ispin=ispin,
        noncollinear=nonc,
        natoms=nions,
    )


def _read_site_table(lines: list[str], start: int, path: Path) -> list[float] | None:
    """Parse the 'tot' column of a ``magnetization (x)`` table that begins at ``lines[start]``."""
    values: list[float] = []
    j = start + 1
    while j < len(lines) and not lines[j].strip().startswith("# of ion"):
        j += 1
        if j - start > 5:
            return None
    j += 2  # header and dashes
    while j < len(lines):
        parts = lines[j].split()
        if not parts or parts[0].startswith("-") or parts[0] == "tot":
            break
        try:
            int(parts[0])
            values.append(float(parts[-1]))
        except ValueError as exc:
            raise MagnbError("malformed row in the magnetization table", path, j + 1) from exc
        j += 1
    return values


_OSZICAR_MAG = re.compile(r"mag=\s*(\S+)(?:\s+(\S+)\s+(\S+))?")


def read_oszicar_moment(path: str | Path) -> float | None:
    """The moment of the last ionic step in an OSZICAR (``mag=``), or None for a non-spin run."""
    path = Path(path)
    _check_readable(path)
    last = None
    lineno = None
    try:
        with open_maybe_compressed(path) as fh:
            for k, raw in enumerate(fh, start=1):
                if b"mag=" in raw:
                    last, lineno = raw.decode("utf-8", errors="replace"), k
    except _DECOMPRESSION_ERRORS as exc:
        raise MagnbError(f"cannot read ({type(exc).__name__}: {exc})", path) from exc
    if last is None:
        return None
    m = _OSZICAR_MAG.search(last)
    try:
        vals = [float(g) for g in m.groups() if g] if m else []
    except ValueError:
        vals = []
    if not vals:
        raise MagnbError("malformed 'mag=' value", path, lineno)
    return vals[-1] if len(vals) == 3 else vals[0]


def read_vasprun(path: str | Path) -> Moments:
    """ISPIN, NELECT, atom count and the moment from spin-resolved occupations in vasprun.xml."""
    from pymatgen.electronic_structure.core import Spin
    from pymatgen.io.vasp.outputs import Vasprun

    path = Path(path)
    _check_readable(path)
    try:
        v = Vasprun(str(path), parse_dos=False, parse_eigen=True, parse_potcar_file=False)
    except Exception as exc:
        raise MagnbError(f"cannot parse vasprun.xml ({type(exc).__name__}: {exc})", path) from exc
    ispin = int(v.parameters.get("ISPIN", 1))
    nonc = bool(v.parameters.get("LNONCOLLINEAR", False))
    total = None
    if ispin == 2 and v.eigenvalues and Spin.down in v.eigenvalues:
        w = np.asarray(v.actual_kpoints_weights, dtype=np.float64)
        up = (v.eigenvalues[Spin.up][..., 1].sum(axis=1) * w).sum()
        down = (v.eigenvalues[Spin.down][..., 1].sum(axis=1) * w).sum()
        total = float(up - down)
    return Moments(
        total=total,
        source=path.name if total is not None else None,
        nelect=float(v.parameters["NELECT"]) if "NELECT" in v.parameters else None,
        ispin=ispin,
        noncollinear=nonc,
        natoms=len(v.final_structure),
    )


# --------------------------------------------------------------------------------------------
# writing


_FIELD = 18  #: characters per value: " 0.12345678901E+01"


def _mantissa_exponent(values: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """11-digit mantissa (as an integer in [1e10, 1e11)) and exponent with |v| = 0.m * 10**e."""
    mant = np.abs(values)
    nonzero = mant > 0
    with np.errstate(divide="ignore"):
        exp = np.where(nonzero, np.floor(np.log10(np.where(nonzero, mant, 1.0))) + 1, 0)
    exp = exp.astype(np.int64)
    digits = np.rint(mant / 10.0**exp * 1e11).astype(np.int64)
    # log10 can land one off near powers of ten, and rounding can carry to 1e11: fix both
    under = nonzero & (digits < 10**10)
    if under.any():
        exp = np.where(under, exp - 1, exp)
        digits = np.where(under, np.rint(mant / 10.0**exp * 1e11).astype(np.int64), digits)
    over = digits >= 10**11
    digits = np.where(over, digits // 10, digits)
    exp = exp + over
    return np.where(nonzero, digits, 0), np.where(nonzero, exp, 0)


def _fortran_e(values: NDArray[np.float64]) -> NDArray[np.bytes_]:
    """Numbers as VASP writes them in a CHGCAR: `` 0.12345678901E+01`` and `` -.12345678901E+01``
    (one bytes string per value; exponents of three digits are written in full)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    digits, exp = _mantissa_exponent(values)
    lead = np.where(values < 0, " -.", " 0.")
    out = np.char.add(lead, np.char.zfill(digits.astype("U11"), 11))
    exp_sign = np.where(exp < 0, "E-", "E+")
    out = np.char.add(np.char.add(out, exp_sign), np.char.zfill(np.abs(exp).astype("U3"), 2))
    return out.astype("S")


def _fortran_e_table(values: NDArray[np.float64]) -> NDArray[np.uint8] | None:
    """The same text as :func:`_fortran_e`, built as an (n, 18) array of ASCII codes with integer
    arithmetic (about ten times faster than numpy's string functions). None when an exponent
    needs three digits, which this fixed-width table cannot hold."""
    digits, exp = _mantissa_exponent(values)
    if exp.size and np.abs(exp).max() > 99:
        return None
    out = np.empty((values.size, _FIELD), dtype=np.uint8)
    out[:, 0] = ord(" ")
    out[:, 1] = np.where(values < 0, ord("-"), ord("0"))
    out[:, 2] = ord(".")
    # the 11 mantissa digits, last first: divmod by 10 on whole columns (integer division of an
    # (n, 11) array by powers of ten is several times slower)
    rest = digits.copy()
    columns = np.empty((11, values.size), dtype=np.uint8)
    for k in range(10, -1, -1):
        quotient = rest // 10
        columns[k] = rest - quotient * 10
        rest = quotient
    out[:, 3:14] = columns.T
    out[:, 3:14] += ord("0")
    out[:, 14] = ord("E")
    out[:, 15] = np.where(exp < 0, ord("-"), ord("+"))
    aexp = np.abs(exp)
    out[:, 16] = aexp // 10 + ord("0")
    out[:, 17] = aexp % 10 + ord("0")
    return out


def _format_lines(values: NDArray[np.float64], per_line: int) -> bytes:
    """``values`` (a multiple of ``per_line`` of them) as lines of ``per_line`` fields."""
    table = _fortran_e_table(values)
    if table is None:  # three-digit exponents: the slow, general path
        rows = _fortran_e(values).reshape(-1, per_line)
        joined = rows[:, 0]
        for k in range(1, per_line):
            joined = np.char.add(joined, rows[:, k])
        return b"\n".join(joined.tolist()) + b"\n"
    lines = np.empty((values.size // per_line, per_line * _FIELD + 1), dtype=np.uint8)
    lines[:, :-1] = table.reshape(-1, per_line * _FIELD)
    lines[:, -1] = ord("\n")
    return lines.tobytes()


def format_grid(data: NDArray[np.floating], per_line: int = 5, chunk_lines: int = 200_000) -> bytes:
    """A grid block's values in VASP order (x fastest), ``per_line`` per line, as bytes.

    Formats ``chunk_lines`` lines at a time so the temporary arrays stay small.
    """
    flat = np.asarray(data, dtype=np.float64).ravel(order="F")
    n = flat.size
    full = n - n % per_line
    step = chunk_lines * per_line
    parts = [_format_lines(flat[i : min(i + step, full)], per_line) for i in range(0, full, step)]
    if n % per_line:
        parts.append(b"".join(_fortran_e(flat[full:]).tolist()) + b"\n")
    return b"".join(parts)


def write_chgcar(
    path: str | Path,
    structure: object,
    blocks: list[NDArray[np.floating]],
    augmentation: list[bytes] | None = None,
    magmoms: NDArray[np.floating] | None = None,
    comment: str | None = None,
) -> None:
    """Write a CHGCAR fast (vectorized formatting, no per-value Python loop).

    ``blocks`` hold ``rho * V`` as VASP stores it (not magnb's e/A^3): one block for a non-spin
    file, two (total, up - down) for a collinear one, four for a non-collinear one.
    ``augmentation``, when given, holds one already-formatted augmentation section per block,
    written after it as VASP does; ``magmoms`` are the initial moments VASP writes on one line
    before each magnetization block (zeros when not given). The file is written to a temporary
    name and renamed into place.
    """
    from pymatgen.io.vasp.inputs import Poscar

    from magnb._io import atomic_write

    shape = blocks[0].shape
    for k, block in enumerate(blocks):
        if block.shape != shape:
            raise ValueError(f"block {k} has shape {block.shape}, expected {shape}")
    poscar = Poscar(structure, comment=comment or structure.formula)
    header = poscar.get_str(significant_figures=6).encode()
    dims = f"{shape[0]:5d}{shape[1]:5d}{shape[2]:5d}\n".encode()
    if magmoms is None:
        magmoms = np.zeros(len(structure) * (3 if len(blocks) == 4 else 1))
    magmom_line = b"".join(_fortran_e(np.asarray(magmoms)).tolist()) + b"\n"
    with atomic_write(path) as fh:
        fh.write(header + b"\n")
        for k, block in enumerate(blocks):
            if k > 0 and (k == 1 or len(blocks) == 2):
                fh.write(magmom_line)
            fh.write(dims)
            fh.write(format_grid(block))
            if augmentation is not None and augmentation[k]:
                fh.write(augmentation[k])
