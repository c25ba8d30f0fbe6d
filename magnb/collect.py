"""Stage 01, collect: find VASP calculations in a tree and gather them into one data folder.

The source tree is only read. Each calculation's volumetric file and its companions (OUTCAR,
OSZICAR, vasprun.xml, ...) are copied (or hard-linked) into ``<data>/raw/<calc_id>/`` and described
by one row of ``<data>/manifest.parquet``: where it came from, the hash of every file, the formula
read from the CHGCAR header, the run tag from the layout, the spin kind (from the number of grid
blocks), and a status with a one-line error for calculations that cannot be used.

Calculations are found by a *layout pattern* relative to the source root, e.g. the default
``{formula}/{run}/CHGCAR*``, the seed project's ``{formula}/spin_so/CHGCAR``, or a flat folder
``{calc}/CHGCAR*``. ``{name}`` matches one path component (or part of one) and is recorded as a
field; ``*`` matches within a component, ``**`` across components.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from magnb import __version__
from magnb._io import (
    atomic_path,
    check_complete,
    link_into_place,
    remove,
    remove_temporaries,
    sha256_file,
    sha256_text,
    stage_writer,
    user_os_errors,
)
from magnb.errors import MagnbError, WriteError
from magnb.vasp import COMPANIONS, COMPRESSED_SUFFIXES, open_maybe_compressed

MANIFEST_COLUMNS = [
    "calc_id",
    "source_path",
    "chgcar",
    "sha256",
    "files",
    "formula",
    "run",
    "fields",
    "spin_kind",
    "natoms",
    "status",
    "error",
    "collected_at",
    "magnb_version",
]


@dataclass(frozen=True)
class CollectConfig:
    """What stage 01 reads and where it writes."""

    source: Path  #: root of the VASP calculation tree (never written)
    data_dir: Path  #: magnb's data folder; raw copies go to data_dir/raw
    layout: str = "{formula}/{run}/CHGCAR*"
    mode: Literal["copy", "hardlink"] = "copy"
    companions: tuple[str, ...] = COMPANIONS
    verify: bool = False  #: re-hash every file, not only those whose stat changed
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.mode not in ("copy", "hardlink"):
            raise MagnbError(f"collect mode must be 'copy' or 'hardlink', not {self.mode!r}")


@dataclass
class CollectResult:
    manifest: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> pd.DataFrame:
        return self.manifest[self.manifest["status"] == "failed"]

    def summary(self) -> str:
        c = self.counts
        lines = [
            f"collect: {c.get('found', 0)} found, {c.get('new', 0)} new, "
            f"{c.get('updated', 0)} updated, {c.get('unchanged', 0)} unchanged, "
            f"{c.get('failed', 0)} failed"
        ]
        for row in self.failures.itertuples():
            lines.append(f"  FAILED {row.calc_id}: {row.error}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# layout patterns


def layout_regex(layout: str) -> re.Pattern[str]:
    """Compile a layout pattern (``{field}``, ``*``, ``**``) to a regex over POSIX relative paths."""
    if layout.startswith("/") or ".." in Path(layout).parts:
        raise MagnbError(f"layout {layout!r} must be relative to the source root, without '..'")
    out = []
    seen: set[str] = set()
    for token in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\}|\*\*/?|\*)", layout):
        if not token:
            continue
        if token.startswith("{"):
            name = token[1:-1]
            if name in seen:
                out.append(f"(?P={name})")
            else:
                seen.add(name)
                out.append(f"(?P<{name}>[^/]+?)")
        elif token.startswith("**"):
            out.append("(?:.*/)?" if token.endswith("/") else ".*")
        elif token == "*":
            out.append("[^/]*")
        else:
            if "{" in token or "}" in token:
                raise MagnbError(f"layout {layout!r}: malformed field in {token!r}")
            out.append(re.escape(token))
    return re.compile("^" + "".join(out) + "$")


def suggest_layout(source: Path, limit: int = 20000) -> str | None:
    """A layout that would match the first CHGCAR under ``source`` (hidden folders skipped, at
    most ``limit`` entries looked at): its two innermost folders as ``{formula}/{run}``, any
    above as ``*``. For the message of a collect that matched nothing; None if none is found."""
    seen = 0
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("CHGCAR"):
                depth = len(Path(folder).relative_to(source).parts)
                fields = ["{formula}", "{run}"][: min(depth, 2)]
                return "/".join(["*"] * max(depth - 2, 0) + fields + ["CHGCAR*"])
        seen += len(dirs) + len(files)
        if seen > limit:
            return None
    return None


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: a path component that can stand in a calc id as it is: no leading dot, no '_' at either end
#: and no '__' inside (so joining components with '__' can be undone, and ids cannot collide)
_CLEAN_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*(?:_[A-Za-z0-9.-]+)*")
_MAX_ID = 200


def safe_id(text: str) -> str:
    """A file-name-safe id: runs of other characters become '_', no leading dot."""
    cleaned = _SAFE.sub("_", text).strip("_")
    cleaned = cleaned.lstrip(".") or "calc"
    return cleaned[:_MAX_ID]


def calc_id(rel: str) -> str:
    """The calc id of the calculation at ``rel`` (its folder, or its file when a folder holds
    several or it sits at the root), unique by construction and the same on every run.

    Clean path components are joined by ``__`` (``Cr2Ge2Te6/FM`` -> ``Cr2Ge2Te6__FM``); two
    paths give the same join only if they are the same path, since a folder cannot hold a file and
    a folder of one name. Any other path gets a readable stem and ``~`` plus 10 hex digits of its
    sha256 (``x y/run`` -> ``x_y__run~b62cbf6ae2``): ``~`` is never in a clean id, so the two kinds
    cannot collide either.

    >>> calc_id("CrI3/FM"), calc_id("x y/run")
    ('CrI3__FM', 'x_y__run~b62cbf6ae2')
    """
    parts = [p for p in rel.split("/") if p]
    joined = "__".join(parts)
    if parts and all(_CLEAN_PART.fullmatch(p) for p in parts) and len(joined) <= _MAX_ID:
        return joined
    stem = safe_id("__".join(safe_id(p) for p in parts) if parts else "root")
    return f"{stem[: _MAX_ID - 11]}~{sha256_text(rel)[:10]}"


# --------------------------------------------------------------------------------------------
# walking the tree


@dataclass(frozen=True)
class _Entry:
    """Something under the source root: a regular file, or a thing that cannot be read as one
    (``problem`` says why: a FIFO, a folder, a symlink loop, a symlink out of the tree, ...)."""

    path: Path
    rel: str
    problem: str = ""


def _kind(st: os.stat_result) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(st.st_mode):
            return name
    return "not a regular file"


def _walk(root: Path) -> tuple[list[_Entry], list[_Entry]]:
    """Every entry under ``root`` that is not a folder, sorted, and the folders that could not be
    read (as entries with a problem).

    Symlinks (to files or folders) are followed only while they stay inside the tree; a folder
    reached twice (a symlink loop) is walked once. Hidden folders (``.*``) are skipped; hidden
    files are listed (the layout decides whether they match).
    """
    root_real = Path(os.path.realpath(root))
    files: list[_Entry] = []
    unreadable: list[_Entry] = []
    seen_dirs: set[tuple[int, int]] = set()

    def inside(real: str) -> bool:
        return real == str(root_real) or real.startswith(str(root_real) + os.sep)

    def visit(folder: Path, rel: str) -> None:
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen_dirs:
                return
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            unreadable.append(_Entry(folder, rel, f"cannot read this folder ({_reason(exc)})"))
            return
        for e in entries:
            if e.name.startswith(".") and e.is_dir():
                continue
            path = Path(e.path)
            child = f"{rel}/{e.name}" if rel else e.name
            try:
                is_link = e.is_symlink()
                if is_link and not inside(os.path.realpath(path)):
                    files.append(_Entry(path, child, "a symlink that leaves the source tree"))
                    continue
                st = path.stat()  # follows symlinks inside the tree; ELOOP for a loop
            except RuntimeError:  # os.path.realpath on some symlink loops
                files.append(_Entry(path, child, "a symlink loop"))
                continue
            except OSError as exc:
                files.append(_Entry(path, child, _reason(exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                files.append(_Entry(path, child, "a folder"))  # in case the layout names it
                visit(path, child)
            elif stat.S_ISREG(st.st_mode):
                files.append(_Entry(path, child))
            else:
                files.append(_Entry(path, child, _kind(st)))

    visit(root, "")
    return files, unreadable


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOENT:
        return "a broken symlink"
    return exc.strerror or type(exc).__name__


def _strip_compression(name: str) -> str:
    for suffix in COMPRESSED_SUFFIXES[1:]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


#: how many grid blocks each spin kind has (total; + magnetization; + mx, my, mz)
SPIN_KINDS = {1: "none", 2: "collinear", 4: "noncollinear"}


def _header_info(path: Path) -> tuple[str, int, str]:
    """(reduced formula, atom count, spin kind) from a CHGCAR: header lines plus a block count.

    The block count is a streaming scan for the grid-dimension line, so the whole file is read
    but never held in memory. A count other than 1, 2 or 4 is an error (a truncated or
    concatenated file).
    """
    from pymatgen.core import Composition

    if path.stat().st_size == 0:
        raise MagnbError("file is empty (0 bytes): a crashed or unfinished run?", path)
    try:
        with open_maybe_compressed(path) as fh:
            head = [fh.readline() for _ in range(8)]
            species_line = head[5].split()
            if species_line and species_line[0].isdigit():
                raise MagnbError("VASP 4 header without species names is not supported", path, 6)
            counts_line = head[6].split()
            species = [s.decode().split("/")[0].split("_")[0] for s in species_line]
            counts = [int(c) for c in counts_line]
            if len(species) != len(counts) or not counts:
                raise MagnbError("species and atom-count lines disagree", path, 7)
            natoms = sum(counts)
            # skip the coordinate system line(s) and positions, then the blank line
            line = head[7]
            if line.strip()[:1].lower() == b"s":
                line = fh.readline()
            for _ in range(natoms):
                fh.readline()
            dims = b""
            while not dims.strip():
                dims = fh.readline()
                if not dims:
                    raise MagnbError("no grid after the atomic positions", path)
            dims_key = dims.strip()
            blocks = 1
            # the dims line recurs (after augmentation data and moments) before each block
            for raw in fh:
                if raw.strip() == dims_key:
                    blocks += 1
    except MagnbError:
        raise
    except OSError as exc:
        if exc.errno is not None:  # the file system's (permission, ...): the caller says it
            raise
        raise MagnbError(f"cannot read ({type(exc).__name__}: {exc})", path) from exc
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise MagnbError(f"malformed CHGCAR header ({exc})", path) from exc
    except Exception as exc:  # decompression errors of all kinds
        raise MagnbError(f"cannot read ({type(exc).__name__}: {exc})", path) from exc
    if blocks not in SPIN_KINDS:
        raise MagnbError(
            f"has {blocks} grid blocks; a CHGCAR has 1 (no spin), 2 (collinear) or 4 "
            "(non-collinear): truncated, or files joined together?",
            path,
        )
    formula = Composition(dict(zip(species, counts, strict=True))).reduced_formula
    return formula, natoms, SPIN_KINDS[blocks]


def find_calculations(config: CollectConfig) -> list[dict]:
    """Scan the source tree: one dict per calculation (matched file), per matched entry that is
    not a readable file, per run folder that has companions but no volumetric file, and per folder
    that could not be read (the last three become failure rows)."""
    source = config.source
    if not source.is_dir():
        raise MagnbError("source tree does not exist or is not a folder", source)
    pattern = layout_regex(config.layout)
    dir_layout = config.layout.rsplit("/", 1)[0] if "/" in config.layout else ""
    dir_pattern = layout_regex(dir_layout) if dir_layout else None
    companion_names = set(config.companions)

    entries, unreadable = _walk(source)
    matches: dict[str, list[tuple[_Entry, dict]]] = {}
    dirs_with_companions: dict[str, Path] = {}
    for entry in entries:
        m = pattern.match(entry.rel)
        if m and entry.problem == "a folder":
            # a folder the layout names is a failure only if no calculation lies beneath it
            if any(e.rel.startswith(entry.rel + "/") and pattern.match(e.rel) for e in entries):
                continue
        parent = entry.rel.rsplit("/", 1)[0] if "/" in entry.rel else ""
        if m:
            matches.setdefault(parent, []).append((entry, m.groupdict()))
        elif not entry.problem and _strip_compression(entry.path.name) in companion_names:
            dirs_with_companions.setdefault(parent, entry.path.parent)

    calcs: list[dict] = []
    for parent, items in sorted(matches.items()):
        # prefer the uncompressed file when both CHGCAR and CHGCAR.gz exist, and a readable
        # file to an entry that is not one
        by_base: dict[str, tuple[_Entry, dict]] = {}
        for item in sorted(items, key=lambda t: (bool(t[0].problem), len(t[0].rel), t[0].rel)):
            by_base.setdefault(_strip_compression(item[0].path.name), item)
        chosen = list(by_base.values())
        for entry, fields in chosen:
            anchor = entry.rel if (len(chosen) > 1 or not parent) else parent
            calcs.append(
                {
                    "calc_id": calc_id(anchor),
                    "path": entry.path,
                    "rel": entry.rel,
                    "parent": entry.path.parent,
                    "fields": fields,
                    "problem": entry.problem,
                }
            )
    for parent, folder in sorted(dirs_with_companions.items()):
        if parent in matches:
            continue
        if dir_pattern is not None and not dir_pattern.match(parent):
            continue
        if dir_pattern is None and parent:
            continue
        fields = dir_pattern.match(parent).groupdict() if dir_pattern is not None else {}
        calcs.append(
            {
                "calc_id": calc_id(parent),
                "path": None,
                "rel": parent,
                "parent": folder,
                "fields": fields,
                "problem": "",
            }
        )
    for entry in unreadable:  # its calculations cannot be seen: say so instead of losing them
        calcs.append(
            {
                "calc_id": calc_id(entry.rel),
                "path": None,
                "rel": entry.rel,
                "parent": entry.path,
                "fields": {},
                "problem": entry.problem,
            }
        )
    ids = [c["calc_id"] for c in calcs]
    if len(set(ids)) != len(ids):  # cannot happen by construction; never publish it if it does
        raise RuntimeError(f"calc ids collide: {sorted(i for i in ids if ids.count(i) > 1)}")
    return calcs


def _companion_files(folder: Path, names: tuple[str, ...], root: Path) -> list[Path]:
    """The first of ``name``, ``name.gz``, ... that is a file in ``folder``, for each name; a
    symlink counts only when it resolves inside ``root``. One directory listing and one
    ``realpath`` per folder, plus one per symlink: a re-run of an unchanged tree is mostly this."""
    root_real = os.path.realpath(root)
    try:
        with os.scandir(folder) as it:
            present = {e.name: e for e in it}
        folder_real = os.path.realpath(folder)
    except OSError:
        return []
    out = []
    for name in names:
        for suffix in COMPRESSED_SUFFIXES:
            entry = present.get(f"{name}{suffix}")
            if entry is None:
                continue
            try:
                if not entry.is_file():  # follows a symlink, as Path.is_file does
                    continue
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                else:
                    real = os.path.join(folder_real, entry.name)
            except (OSError, RuntimeError):
                continue  # a symlink loop: not a companion
            if real != root_real and not real.startswith(root_real + os.sep):
                continue  # a symlink out of the tree
            out.append(folder / entry.name)
            break
    return out


def _place(src: Path, dest: Path, mode: str) -> None:
    """Copy (or hard-link) ``src`` to ``dest`` atomically."""
    if mode == "hardlink":
        try:
            link_into_place(src, dest)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            # another file system (or links not allowed): fall back to a copy
    with atomic_path(dest) as tmp_path:
        shutil.copyfile(src, tmp_path)


def _stat_key(path: Path) -> dict[str, int]:
    """What says a file is unchanged without reading it, as git's index and rsync use it."""
    st = path.stat()
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "ino": st.st_ino,
    }


def _hashed_entries(files: list[Path], old: dict | None, verify: bool) -> list[dict]:
    """The manifest entries (name, sha256, source stat) of a calculation's files: a file whose
    stat equals its entry in ``old`` keeps its recorded hash, any other is read and hashed."""
    known = {}
    if old is not None and not verify:
        known = {e["name"]: e for e in json.loads(old["files"]) if "stat" in e}
    entries = []
    for p in files:
        key = _stat_key(p)
        prev = known.get(p.name)
        digest = prev["sha256"] if prev is not None and prev["stat"] == key else sha256_file(p)
        entries.append({"name": p.name, "sha256": digest, "size": key["size"], "stat": key})
    return entries


def content_of(files_json: str) -> list[tuple[str, str]]:
    """(name, sha256) of each file of a manifest row: what a calculation's content is (stats and
    raw-copy details left out), for the input hashes of later stages."""
    return [(e["name"], e["sha256"]) for e in json.loads(files_json)]


def read_manifest(data_dir: str | Path, complete: bool = False) -> pd.DataFrame:
    """The manifest of a data folder; a MagnbError naming the file if it is missing or damaged
    (and, with ``complete``, if a collect was interrupted or is running)."""
    data_dir = Path(data_dir)
    path = data_dir / "manifest.parquet"
    if complete:
        check_complete(data_dir, "collect", f"magnb collect SOURCE {data_dir}")
    if not path.is_file():
        raise MagnbError("no manifest: run stage 01 (magnb collect) first", path)
    try:
        manifest = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's errors for a damaged file have no common base
        raise MagnbError(f"cannot read the manifest ({type(exc).__name__}: {exc})", path) from exc
    if "calc_id" not in manifest or "files" not in manifest:
        raise MagnbError("not a magnb manifest (no calc_id or files column)", path)
    return manifest


def _check_folders(source: Path, data_dir: Path) -> None:
    """Refuse a data folder inside the source tree and a source inside the data folder (after
    resolving symlinks): either way collect would write into what it reads."""
    src = Path(os.path.realpath(source))
    data = Path(os.path.realpath(data_dir))
    if src == data:
        raise MagnbError("the data folder and the source tree are the same folder", data_dir)
    if data.is_relative_to(src):
        raise MagnbError(f"the data folder must not be inside the source tree {source}", data_dir)
    if src.is_relative_to(data):
        raise MagnbError(
            f"the source tree must not be inside the data folder {data_dir}: collect writes "
            "there (raw copies are replaced and extra files removed)",
            source,
        )


def collect(config: CollectConfig) -> CollectResult:
    """Run stage 01: scan ``config.source``, gather calculations, write the manifest.

    Re-running is idempotent and costs what changed: a source file whose stat (size, mtime,
    ctime, inode) is unchanged keeps its recorded hash, and its raw copy is kept when that copy's
    stat is what collect left; anything else is hashed and copied again (``verify`` re-hashes
    everything). The raw copies and the manifest are one output: while collect changes them,
    ``.collect.incomplete`` marks the data folder and stage 02 refuses it.
    """
    from tqdm.auto import tqdm

    data_dir = config.data_dir
    raw_root = data_dir / "raw"
    manifest_path = data_dir / "manifest.parquet"
    with user_os_errors("cannot read the source tree", config.source):
        if not config.source.is_dir():
            raise MagnbError("source tree does not exist or is not a folder", config.source)
        _check_folders(config.source, data_dir)
    with stage_writer(data_dir, "collect"):
        previous: dict[str, dict] = {}
        if manifest_path.is_file():
            for row in read_manifest(data_dir).to_dict("records"):
                previous[row["calc_id"]] = row
        remove_temporaries(raw_root, recursive=True)

        calcs = find_calculations(config)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        rows = []
        counts = {"found": len(calcs), "new": 0, "updated": 0, "unchanged": 0, "failed": 0}
        for calc in tqdm(calcs, desc="collect", unit="calc", disable=not config.progress):
            row = _collect_one(calc, config, previous.get(calc["calc_id"]), raw_root, counts)
            row["collected_at"] = row.get("collected_at") or now
            rows.append(row)

        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        manifest["natoms"] = manifest["natoms"].astype("int64")
        with user_os_errors("cannot write the manifest", manifest_path):
            with atomic_path(manifest_path) as tmp:
                manifest.to_parquet(tmp, index=False)
    return CollectResult(manifest=manifest, counts=counts)


def _collect_one(
    calc: dict, config: CollectConfig, old: dict | None, raw_root: Path, counts: dict[str, int]
) -> dict:
    """One manifest row: the calculation's files hashed and placed in ``raw_root/<calc_id>``, or
    a failure row naming the file. A full disk (WriteError) stops the stage instead."""
    try:
        source_path = os.path.realpath(calc["parent"])
    except (OSError, RuntimeError):
        source_path = os.path.abspath(calc["parent"])
    row = {
        "calc_id": calc["calc_id"],
        "source_path": source_path,
        "chgcar": calc["path"].name if calc["path"] is not None else "",
        "sha256": "",
        "files": "[]",
        "formula": calc["fields"].get("formula", ""),
        "run": calc["fields"].get("run", ""),
        "fields": json.dumps(calc["fields"], sort_keys=True),
        "spin_kind": "",
        "natoms": 0,
        "status": "ok",
        "error": "",
        "collected_at": "",
        "magnb_version": __version__,
    }
    try:
        if calc["problem"]:
            raise MagnbError(
                calc["problem"] if calc["path"] is None else f"{calc['problem']}, not a file",
                calc["path"] if calc["path"] is not None else calc["parent"],
            )
        if calc["path"] is None:
            raise MagnbError(
                f"no file matching {config.layout.rsplit('/', 1)[-1]!r} in this folder",
                calc["parent"],
            )
        companions = _companion_files(calc["parent"], config.companions, config.source)
        files = [calc["path"], *companions]
        with user_os_errors("cannot read"):
            entries = _hashed_entries(files, old, config.verify)
            if old is not None and old["status"] == "ok" and old["sha256"] == entries[0]["sha256"]:
                # the same CHGCAR (by its recorded hash): its header says what it said
                formula, natoms, kind = old["formula"], int(old["natoms"]), old["spin_kind"]
            else:
                formula, natoms, kind = _header_info(calc["path"])
        row["sha256"] = entries[0]["sha256"]
        row["formula"] = formula
        row["natoms"] = natoms
        row["spin_kind"] = kind
        dest = raw_root / calc["calc_id"]
        raw = _raw_copies(old, entries, dest, config.verify)
        if raw is not None:
            counts["unchanged"] += 1
            row["collected_at"] = old["collected_at"]
        else:
            raw = {}
            with user_os_errors("cannot write the raw copy"):
                for p in files:
                    _place(p, dest / p.name, config.mode)
                    raw[p.name] = _stat_key(dest / p.name)
                _remove_extra(dest, {e["name"] for e in entries})
            counts["updated" if old is not None else "new"] += 1
        for e in entries:
            e["raw"] = raw[e["name"]]
        row["files"] = json.dumps(entries)
    except WriteError:
        raise
    except MagnbError as exc:
        row["status"] = "failed"
        row["error"] = str(exc)
        counts["failed"] += 1
    return row


def _raw_copies(old: dict | None, entries: list[dict], dest: Path, verify: bool) -> dict | None:
    """The raw copies' stats when ``dest`` holds exactly the files of ``entries`` as collect left
    them (same content recorded, same stat since; with ``verify``, same bytes), else None."""
    if old is None or old["status"] != "ok":
        return None
    recorded = {e["name"]: e for e in json.loads(old["files"])}
    if [(e["name"], e["sha256"]) for e in entries] != content_of(old["files"]):
        return None
    out = {}
    for e in entries:
        p = dest / e["name"]
        prev = recorded[e["name"]].get("raw")
        try:
            key = _stat_key(p)
        except OSError:
            return None
        if prev is None or key != prev or (verify and sha256_file(p) != e["sha256"]):
            return None
        out[e["name"]] = key
    return out


def _remove_extra(dest: Path, keep: set[str]) -> None:
    for p in dest.iterdir():
        if p.name not in keep:
            if p.is_file() or p.is_symlink():
                remove(p)
