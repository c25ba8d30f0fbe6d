"""Stage 01's tree walk entry by entry: what is listed, in which order, and the problem named for
each thing that is not a readable file (the tests ``make mutants`` needed for magnb/collect.py;
see tests/MUTANTS.md). Milliseconds each; no CHGCAR is read."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

from magnb.collect import _reason, _walk


def test_walk_lists_every_entry_with_its_problem(tmp_path: Path) -> None:
    root = tmp_path / "src"
    outside = tmp_path / "outside"
    (outside / "calc").mkdir(parents=True)
    (outside / "calc/CHGCAR").write_text("x")
    (root / "a/run").mkdir(parents=True)
    (root / "a/run/CHGCAR").write_text("x")
    (root / "a/run/OUTCAR").write_text("x")
    (root / "a/.git/objects").mkdir(parents=True)  # a hidden folder: not walked
    (root / "a/.git/objects/CHGCAR").write_text("x")
    os.symlink(root / "a", root / "b")  # inside the tree, reached twice: walked once
    os.symlink(outside / "calc", root / "c_out")  # a folder out of the tree
    os.symlink(outside / "calc/CHGCAR", root / "d_out")  # a lone file out of the tree
    os.symlink(root / "nowhere", root / "e_broken")
    os.symlink("f_loop", root / "f_loop")
    os.mkfifo(root / "g_fifo")
    os.mknod(root / "h_dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "i_sock"))
    (root / "j_link").symlink_to("a/run/CHGCAR")  # a file link inside the tree: followed
    try:
        files, unreadable = _walk(root)
    finally:
        sock.close()
    got = [(e.rel, e.problem) for e in files]
    assert got == [
        ("a", "a folder"),
        ("a/run", "a folder"),
        ("a/run/CHGCAR", ""),
        ("a/run/OUTCAR", ""),
        ("b", "a folder"),  # the same folder again: listed, not walked a second time
        ("c_out", "a symlink that leaves the source tree"),
        ("d_out", "a symlink that leaves the source tree"),
        ("e_broken", "a broken symlink"),
        ("f_loop", "a symlink loop"),
        ("g_fifo", "a FIFO"),
        ("h_dev", "a character device"),
        ("i_sock", "a socket"),
        ("j_link", ""),
    ]
    assert unreadable == []
    assert [e.path for e in files][:3] == [root / "a", root / "a/run", root / "a/run/CHGCAR"]


def test_walk_of_a_root_reached_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real/run").mkdir(parents=True)
    (tmp_path / "real/run/CHGCAR").write_text("x")
    os.symlink(tmp_path / "real", tmp_path / "link")
    # links into the real root count as inside, and a sibling that shares the prefix does not
    (tmp_path / "real2").mkdir()
    (tmp_path / "real2/CHGCAR").write_text("x")
    os.symlink(tmp_path / "real2/CHGCAR", tmp_path / "real/run/CHGCAR.gz")
    os.symlink(tmp_path / "real", tmp_path / "real/run/up")
    files, _ = _walk(tmp_path / "link")
    assert [(e.rel, e.problem) for e in files] == [
        ("run", "a folder"),
        ("run/CHGCAR", ""),
        ("run/CHGCAR.gz", "a symlink that leaves the source tree"),
        ("run/up", "a folder"),  # the root itself, inside: followed, already seen
    ]


def test_walk_names_a_folder_it_cannot_read(tmp_path: Path) -> None:
    files, unreadable = _walk(tmp_path / "missing")
    assert files == []
    assert [(e.rel, e.path, e.problem) for e in unreadable] == [
        ("", tmp_path / "missing", "cannot read this folder (a broken symlink)")
    ]


def test_reasons_of_os_errors() -> None:
    assert _reason(OSError(errno.ELOOP, "Too many levels")) == "a symlink loop"
    assert _reason(OSError(errno.EACCES, "Permission denied")) == "permission denied"
    assert _reason(OSError(errno.EPERM, "Not permitted")) == "permission denied"
    assert _reason(OSError(errno.ENOENT, "No such file")) == "a broken symlink"
    assert _reason(OSError(errno.EIO, "Input/output error")) == "Input/output error"
    assert _reason(OSError("no errno")) == "OSError"


def test_kind_of_each_file_type() -> None:
    from magnb.collect import _kind

    def kind(mode: int) -> str:
        return _kind(os.stat_result((mode, 0, 0, 0, 0, 0, 0, 0, 0, 0)))

    assert kind(stat.S_IFDIR) == "a folder"
    assert kind(stat.S_IFIFO) == "a FIFO"
    assert kind(stat.S_IFCHR) == "a character device"
    assert kind(stat.S_IFBLK) == "a block device"
    assert kind(stat.S_IFSOCK) == "a socket"
    assert kind(0) == "not a regular file"


def test_a_missing_source_tree_is_named(tmp_path: Path) -> None:
    import pytest

    from magnb.collect import CollectConfig, find_calculations
    from magnb.errors import MagnbError

    config = CollectConfig(source=tmp_path / "nowhere", data_dir=tmp_path / "data", progress=False)
    with pytest.raises(MagnbError) as exc:
        find_calculations(config)
    assert exc.value.reason == "source tree does not exist or is not a folder"
    assert exc.value.path == str(tmp_path / "nowhere")


def test_companions_without_a_volumetric_file_in_a_flat_layout(tmp_path: Path) -> None:
    from magnb.collect import CollectConfig, find_calculations

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.CHGCAR").write_text("x")
    (src / "sub" / "OUTCAR").write_text("x")  # below the flat layout's one level: not a run
    config = CollectConfig(source=src, data_dir=tmp_path / "data", layout="{calc}.CHGCAR")
    assert [(c["rel"], c["path"] is None) for c in find_calculations(config)] == [
        ("a.CHGCAR", False)
    ]
    (src / "a.CHGCAR").unlink()
    (src / "OUTCAR").write_text("x")  # the root itself is the run folder, without its CHGCAR
    calcs = find_calculations(config)
    assert [(c["rel"], c["path"], c["fields"], c["problem"]) for c in calcs] == [("", None, {}, "")]


def test_a_folder_the_layout_names_is_a_failure_only_without_a_calculation_beneath(
    tmp_path: Path,
) -> None:
    from magnb.collect import CollectConfig, find_calculations

    src = tmp_path / "src"
    (src / "Fe/a/CHGCAR/x").mkdir(parents=True)  # a folder named CHGCAR, a CHGCAR beneath it
    (src / "Fe/a/CHGCAR/x/CHGCAR").write_text("x")
    (src / "Co/b/CHGCAR").mkdir(parents=True)  # a folder named CHGCAR and nothing beneath
    config = CollectConfig(source=src, data_dir=tmp_path / "data", layout="{formula}/**/CHGCAR")
    got = [(c["rel"], c["problem"]) for c in find_calculations(config)]
    assert got == [("Co/b/CHGCAR", "a folder"), ("Fe/a/CHGCAR/x/CHGCAR", "")]


def test_which_files_make_calculations_and_failure_rows(tmp_path: Path) -> None:
    from magnb.collect import CollectConfig, find_calculations

    src = tmp_path / "src"
    for rel in ("A/run/CHGCAR", "A/run/OUTCAR", "B/deep/er/OUTCAR", "C/run/OUTCAR",
                "D/two/CHGCAR", "D/two/CHGCAR_spin", "E/pick/CHGCAR.gz", "F/notes/README"):  # fmt: skip
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("x")
    os.mkfifo(src / "E/pick/CHGCAR")  # not a readable file: the .gz beside it is chosen
    config = CollectConfig(source=src, data_dir=tmp_path / "data")
    got = [(c["calc_id"], c["rel"], c["problem"]) for c in find_calculations(config)]
    assert got == [
        ("A__run", "A/run/CHGCAR", ""),
        ("D__two__CHGCAR", "D/two/CHGCAR", ""),  # two files in one folder: ids from the files
        ("D__two__CHGCAR_spin", "D/two/CHGCAR_spin", ""),
        ("E__pick", "E/pick/CHGCAR.gz", ""),
        ("C__run", "C/run", ""),  # companions without a CHGCAR: a row (a failure, later)
    ]  # B/deep/er is no run folder of the layout; F/notes has no companion


def test_a_folder_that_cannot_be_listed_is_a_row_of_its_own(tmp_path: Path, monkeypatch) -> None:
    # the tests run as root, whom no permission stops: the folder's listing fails by injection
    from magnb.collect import CollectConfig, find_calculations

    src = tmp_path / "src"
    for run in ("Fe2O3/afm", "NiO/fm"):
        (src / run).mkdir(parents=True)
        (src / run / "CHGCAR").write_text("x")
    locked = src / "NiO"
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    calcs = find_calculations(CollectConfig(source=src, data_dir=tmp_path / "data"))
    assert calcs == [
        {
            "calc_id": "Fe2O3__afm",
            "path": src / "Fe2O3/afm/CHGCAR",
            "rel": "Fe2O3/afm/CHGCAR",
            "parent": src / "Fe2O3/afm",
            "fields": {"formula": "Fe2O3", "run": "afm"},
            "problem": "",
        },
        {
            "calc_id": "NiO",
            "path": None,
            "rel": "NiO",
            "parent": locked,
            "fields": {},
            "problem": "cannot read this folder (permission denied)",
        },
    ]


def test_companion_folders_without_a_chgcar_are_rows_with_their_layout_fields(
    tmp_path: Path,
) -> None:
    from magnb.collect import CollectConfig, find_calculations

    src = tmp_path / "src"
    for folder in ("A", "B/fm", "C/afm"):  # A is not a {formula}/{run} folder: no row
        (src / folder).mkdir(parents=True)
        (src / folder / "OUTCAR").write_text("x")
    calcs = find_calculations(CollectConfig(source=src, data_dir=tmp_path / "data"))
    assert [(c["calc_id"], c["path"], c["parent"], c["fields"]) for c in calcs] == [
        ("B__fm", None, src / "B/fm", {"formula": "B", "run": "fm"}),
        ("C__afm", None, src / "C/afm", {"formula": "C", "run": "afm"}),
    ]
