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

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from magnb import __version__
from magnb._io import atomic_path, sha256_file
from magnb.errors import MagnbError
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


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(text: str) -> str:
    """A file-name-safe id: runs of other characters become '_', no leading dot."""
    cleaned = _SAFE.sub("_", text).strip("_")
    cleaned = cleaned.lstrip(".") or "calc"
    return cleaned[:200]


# --------------------------------------------------------------------------------------------
# walking the tree


def _walk(root: Path) -> list[tuple[Path, str]]:
    """All regular files under ``root`` as (absolute path, POSIX relative path), sorted.

    Symlinks (to files or folders) are followed only while they stay inside the tree; a folder
    reached twice (a symlink loop) is walked once.
    """
    root_real = root.resolve()
    found: list[tuple[Path, str]] = []
    seen_dirs: set[str] = set()

    def inside(p: Path) -> bool:
        try:
            p.resolve().relative_to(root_real)
            return True
        except ValueError:
            return False

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs or not inside(Path(dirpath)):
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink() and not inside(p):
                continue
            if p.is_file():
                found.append((p, p.relative_to(root).as_posix()))
    return found


def _strip_compression(name: str) -> str:
    for suffix in COMPRESSED_SUFFIXES[1:]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _header_info(path: Path) -> tuple[str, int, str]:
    """(reduced formula, atom count, spin kind) from a CHGCAR: header lines plus a block count.

    The block count is a streaming scan for the grid-dimension line, so the whole file is read
    but never held in memory.
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
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise MagnbError(f"malformed CHGCAR header ({exc})", path) from exc
    except Exception as exc:  # decompression errors of all kinds
        raise MagnbError(f"cannot read ({type(exc).__name__}: {exc})", path) from exc
    kind = {1: "none", 2: "collinear", 4: "noncollinear"}.get(blocks, f"unknown ({blocks} blocks)")
    formula = Composition(dict(zip(species, counts, strict=True))).reduced_formula
    return formula, natoms, kind


def find_calculations(config: CollectConfig) -> list[dict]:
    """Scan the source tree: one dict per calculation (matched file) or per run folder that has
    companions but no volumetric file (a failure row)."""
    source = config.source
    if not source.is_dir():
        raise MagnbError("source tree does not exist or is not a folder", source)
    pattern = layout_regex(config.layout)
    dir_layout = config.layout.rsplit("/", 1)[0] if "/" in config.layout else ""
    dir_pattern = layout_regex(dir_layout) if dir_layout else None
    companion_names = set(config.companions)

    files = _walk(source)
    matches: dict[str, list[tuple[Path, str, dict]]] = {}
    dirs_with_companions: dict[str, Path] = {}
    for path, rel in files:
        m = pattern.match(rel)
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        if m:
            matches.setdefault(parent, []).append((path, rel, m.groupdict()))
        elif _strip_compression(path.name) in companion_names:
            dirs_with_companions.setdefault(parent, path.parent)

    calcs: list[dict] = []
    for parent, items in sorted(matches.items()):
        # prefer the uncompressed file when both CHGCAR and CHGCAR.gz exist
        by_base: dict[str, tuple[Path, str, dict]] = {}
        for item in sorted(items, key=lambda t: (len(t[0].name), t[0].name)):
            by_base.setdefault(_strip_compression(item[0].name), item)
        chosen = list(by_base.values())
        for path, rel, fields in chosen:
            base = parent.replace("/", "__") if parent else ""
            if len(chosen) > 1 or not base:
                base = f"{base}__{path.name}" if base else path.name
            calcs.append(
                {
                    "calc_id": safe_id(base),
                    "path": path,
                    "rel": rel,
                    "parent": path.parent,
                    "fields": fields,
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
                "calc_id": safe_id(parent.replace("/", "__") or "root"),
                "path": None,
                "rel": parent,
                "parent": folder,
                "fields": fields,
            }
        )
    # calc ids must be unique even after sanitizing
    seen: dict[str, int] = {}
    for c in calcs:
        n = seen.get(c["calc_id"], 0)
        seen[c["calc_id"]] = n + 1
        if n:
            c["calc_id"] = f"{c['calc_id']}-{n + 1}"
    return calcs


def _companion_files(folder: Path, names: tuple[str, ...], root: Path) -> list[Path]:
    root_real = root.resolve()
    out = []
    for name in names:
        for suffix in COMPRESSED_SUFFIXES:
            p = folder / f"{name}{suffix}"
            if p.is_file():
                try:
                    p.resolve().relative_to(root_real)
                except ValueError:
                    continue  # a symlink out of the tree
                out.append(p)
                break
    return out


def _place(src: Path, dest: Path, mode: str) -> None:
    """Copy (or hard-link) ``src`` to ``dest`` atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "hardlink":
        tmp = dest.with_name(f".{dest.name}.tmp-link")
        try:
            if tmp.exists():
                tmp.unlink()
            os.link(src, tmp)
            os.replace(tmp, dest)
            return
        except OSError:
            pass  # another file system: fall back to a copy
    with atomic_path(dest) as tmp_path:
        shutil.copyfile(src, tmp_path)


def read_manifest(data_dir: str | Path) -> pd.DataFrame:
    """The manifest of a data folder; a MagnbError naming the file if it is missing."""
    path = Path(data_dir) / "manifest.parquet"
    if not path.is_file():
        raise MagnbError("no manifest: run stage 01 (magnb collect) first", path)
    return pd.read_parquet(path)


def collect(config: CollectConfig) -> CollectResult:
    """Run stage 01: scan ``config.source``, gather calculations, write the manifest.

    Re-running is idempotent: calculations whose files hash the same as in the existing manifest
    (and whose raw copies are intact) are left alone and counted as unchanged.
    """
    from tqdm.auto import tqdm

    data_dir = config.data_dir
    raw_root = data_dir / "raw"
    manifest_path = data_dir / "manifest.parquet"
    try:
        data_dir.resolve().relative_to(config.source.resolve())
        raise MagnbError("the data folder must not be inside the source tree", data_dir)
    except ValueError:
        pass
    previous: dict[str, dict] = {}
    if manifest_path.is_file():
        for row in pd.read_parquet(manifest_path).to_dict("records"):
            previous[row["calc_id"]] = row

    calcs = find_calculations(config)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    rows = []
    counts = {"found": len(calcs), "new": 0, "updated": 0, "unchanged": 0, "failed": 0}
    for calc in tqdm(calcs, desc="collect", unit="calc", disable=not config.progress):
        row = {
            "calc_id": calc["calc_id"],
            "source_path": str(calc["parent"].resolve()),
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
            "collected_at": now,
            "magnb_version": __version__,
        }
        try:
            if calc["path"] is None:
                raise MagnbError(
                    f"no file matching {config.layout.rsplit('/', 1)[-1]!r} in this folder",
                    calc["parent"],
                )
            companions = _companion_files(calc["parent"], config.companions, config.source)
            files = [calc["path"], *companions]
            entries = [
                {"name": p.name, "sha256": sha256_file(p), "size": p.stat().st_size} for p in files
            ]
            row["sha256"] = entries[0]["sha256"]
            row["files"] = json.dumps(entries)
            formula, natoms, kind = _header_info(calc["path"])
            row["formula"] = formula
            row["natoms"] = natoms
            row["spin_kind"] = kind
            dest = raw_root / calc["calc_id"]
            old = previous.get(calc["calc_id"])
            intact = old is not None and old["files"] == row["files"] and _raw_intact(dest, entries)
            if intact:
                counts["unchanged"] += 1
                row["collected_at"] = old["collected_at"]
            else:
                for p in files:
                    _place(p, dest / p.name, config.mode)
                _remove_extra(dest, {e["name"] for e in entries})
                counts["updated" if old is not None else "new"] += 1
        except MagnbError as exc:
            row["status"] = "failed"
            row["error"] = str(exc)
            counts["failed"] += 1
        rows.append(row)

    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest["natoms"] = manifest["natoms"].astype("int64")
    with atomic_path(manifest_path) as tmp:
        manifest.to_parquet(tmp, index=False)
    result = CollectResult(manifest=manifest, counts=counts)
    return result


def _raw_intact(dest: Path, entries: list[dict]) -> bool:
    for e in entries:
        p = dest / e["name"]
        if not p.is_file() or p.stat().st_size != e["size"]:
            return False
    return True


def _remove_extra(dest: Path, keep: set[str]) -> None:
    for p in dest.iterdir():
        if p.name not in keep:
            if p.is_file() or p.is_symlink():
                p.unlink()
