"""The moment readers on small OUTCAR and OSZICAR texts written here, each number by value: which
line, which component, which table (the tests ``make mutants`` needed for magnb/vasp.py; see
tests/MUTANTS.md). Milliseconds each."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from magnb.errors import MagnbError
from magnb.vasp import read_moments, read_oszicar_moment, read_outcar
from tests.conftest import fixture_dir


def _table(axis: str, values: list[float]) -> str:
    rows = "".join(
        f"    {i + 1}        0.001   0.002   0.100  {v:8.3f}\n" for i, v in enumerate(values)
    )
    return (
        f" magnetization ({axis})\n \n"
        "# of ion       s       p       d       tot\n"
        "------------------------------------------\n"
        f"{rows}"
        "--------------------------------------------------\n"
        "tot          0.000   0.000   0.000   9.999\n\n"
    )


def _outcar(
    ispin: int | None = 2,
    nonc: str | None = "F",
    nions: int | None = 2,
    mags: tuple[str, ...] = ("1.5000000", "2.2500000"),
    tables: str = "",
) -> str:
    text = ""
    if nions is not None:
        text += f"   number of dos      NEDOS =    301   number of ions     NIONS = {nions:6d}\n"
    if ispin is not None:
        text += f"   ISPIN  =      {ispin}    spin polarized calculation?\n"
    if nonc is not None:
        text += f"   LNONCOLLINEAR =      {nonc} non collinear calculations\n"
    for m in mags:
        text += f" number of electron      11.0000000 magnetization {m}\n"
    return text + tables


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_collinear_outcar_last_moment_and_the_x_table(tmp_path: Path) -> None:
    path = _write(tmp_path, "OUTCAR", _outcar(tables=_table("x", [2.5, -0.25])))
    m = read_outcar(path)
    assert m.total == 2.25  # the last 'magnetization' line, not the first
    assert m.source == "OUTCAR"
    assert m.nelect == 11.0 and m.ispin == 2 and m.noncollinear is False and m.natoms == 2
    np.testing.assert_array_equal(m.per_site, [2.5, -0.25])  # the 'tot' column
    assert m.per_site.dtype == np.float64


def test_noncollinear_outcar_reads_z(tmp_path: Path) -> None:
    tables = _table("x", [0.5, 0.5]) + _table("y", [-0.75, 0.75]) + _table("z", [1.25, 1.75])
    text = _outcar(
        ispin=None, nonc="T", mags=("0.1 0.2 0.3", "0.4000 -0.6000 3.0000"), tables=tables
    )
    m = read_outcar(_write(tmp_path, "OUTCAR", text))
    assert m.total == 3.0 and m.noncollinear is True and m.ispin is None
    np.testing.assert_array_equal(m.per_site, [1.25, 1.75])


def test_collinear_outcar_with_only_a_z_table(tmp_path: Path) -> None:
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=_table("z", [1.0, 3.0]))))
    np.testing.assert_array_equal(m.per_site, [1.0, 3.0])


def test_collinear_outcar_keeps_the_x_table_over_a_later_z(tmp_path: Path) -> None:
    tables = _table("x", [1.0, 2.0]) + _table("z", [7.0, 8.0])
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=tables)))
    np.testing.assert_array_equal(m.per_site, [1.0, 2.0])


def test_outcar_of_a_run_without_spin_has_no_moment(tmp_path: Path) -> None:
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(ispin=1)))
    assert m.total is None and m.source is None and m.ispin == 1 and m.nelect == 11.0
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(ispin=None, nonc=None, nions=None)))
    assert m.total == 2.25 and m.natoms is None and m.noncollinear is None  # no ISPIN line


def test_outcar_first_ispin_nions_and_lnoncollinear_win(tmp_path: Path) -> None:
    text = _outcar(ispin=2, nonc="F", nions=2) + _outcar(ispin=1, nonc="T", nions=5, mags=())
    m = read_outcar(_write(tmp_path, "OUTCAR", text))
    assert m.ispin == 2 and m.noncollinear is False and m.natoms == 2


def test_outcar_refusals_name_the_problem_and_line(tmp_path: Path) -> None:
    with pytest.raises(MagnbError) as exc:
        read_outcar(_write(tmp_path, "OUTCAR", _outcar(mags=())))
    assert exc.value.reason == (
        "spin-polarized (ISPIN = 2) but no 'magnetization' line: unfinished run?"
    )
    with pytest.raises(MagnbError) as exc:
        read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=_table("x", [1.0, 2.0, 3.0]))))
    assert exc.value.reason == "magnetization table has 3 rows but NIONS = 2"
    assert exc.value.path == str(tmp_path / "OUTCAR")
    with pytest.raises(MagnbError) as exc:
        read_outcar(_write(tmp_path, "OUTCAR", _outcar(mags=("1.0", "2.x"))))
    assert exc.value.reason == "malformed 'number of electron ... magnetization' line"
    assert exc.value.line == 5 and exc.value.path == str(tmp_path / "OUTCAR")
    bad_row = _table("x", [1.0, 2.0]).replace("    2        0.001", "    2        0.0a1")
    bad_row = bad_row.replace("  2.000\n", "  2.0b0\n")
    with pytest.raises(MagnbError) as exc:
        read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=bad_row)))
    assert exc.value.reason == "malformed row in the magnetization table" and exc.value.line == 11
    assert exc.value.path == str(tmp_path / "OUTCAR")


def test_site_table_without_its_header_is_not_read(tmp_path: Path) -> None:
    far = _table("x", [1.0, 2.0]).replace(" \n", " \n \n \n \n \n", 1)  # header 6 lines down
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=far)))
    assert m.per_site is None
    near = _table("x", [1.0, 2.0]).replace(" \n", " \n \n \n \n", 1)  # 5 lines: still read
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=near)))
    np.testing.assert_array_equal(m.per_site, [1.0, 2.0])


def test_site_table_stops_at_a_blank_line(tmp_path: Path) -> None:
    table = _table("x", [1.0, 2.0]).replace(
        "--------------------------------------------------\n", "\n"
    )
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=table)))
    np.testing.assert_array_equal(m.per_site, [1.0, 2.0])


OSZICAR = """       N       E                     dE             d eps       ncg     rms          rms(c)
DAV:   1     0.1E+02    0.1E+02   -0.1E+03   512   0.3E+02
   1 F= -.11E+02 E0= -.11E+02  d E =-.10E+00  mag=     1.5000
   2 F= -.11E+02 E0= -.11E+02  d E =-.10E+00  mag=     {last}
"""


def test_oszicar_last_step_and_the_z_component(tmp_path: Path) -> None:
    assert read_oszicar_moment(_write(tmp_path, "OSZICAR", OSZICAR.format(last="2.7500"))) == 2.75
    noncollinear = OSZICAR.format(last="0.1000 -0.2000 3.2500")
    assert read_oszicar_moment(_write(tmp_path, "OSZICAR", noncollinear)) == 3.25
    assert read_oszicar_moment(_write(tmp_path, "OSZICAR", OSZICAR.split("   1 F")[0])) is None
    with pytest.raises(MagnbError) as exc:
        read_oszicar_moment(_write(tmp_path, "OSZICAR", OSZICAR.format(last="x.y")))
    assert exc.value.reason == "malformed 'mag=' value" and exc.value.line == 4
    assert exc.value.path == str(tmp_path / "OSZICAR")
    with pytest.raises(MagnbError) as exc:
        read_oszicar_moment(_write(tmp_path, "OSZICAR", OSZICAR.format(last="")))
    assert exc.value.line == 4


def test_oszicar_gzipped(tmp_path: Path) -> None:
    path = tmp_path / "OSZICAR.gz"
    path.write_bytes(gzip.compress(OSZICAR.format(last="2.5000").encode()))
    assert read_oszicar_moment(path) == 2.5


def test_moment_precedence_outcar_then_oszicar_then_vasprun(tmp_path: Path, vasp_dir: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copyfile(vasp_dir / "nitric_oxide/polarized/vasprun.xml", folder / "vasprun.xml")
    v = read_moments(folder)  # vasprun.xml alone: its occupations give the moment
    assert v.source == "vasprun.xml" and v.total == pytest.approx(1.0, abs=1e-3)
    assert v.ispin == 2 and v.natoms == 2 and v.nelect == 11.0 and v.noncollinear is False
    _write(folder, "OSZICAR", OSZICAR.format(last="2.7500"))
    o = read_moments(folder)
    assert (o.source, o.total, o.ispin, o.natoms) == ("OSZICAR", 2.75, 2, 2)
    _write(folder, "OUTCAR", _outcar(ispin=2, nions=None, tables=_table("x", [2.0, 0.25])))
    m = read_moments(folder)
    assert (m.source, m.total, m.ispin, m.nelect) == ("OUTCAR", 2.25, 2, 11.0)
    assert m.natoms is None  # the OUTCAR gave moment and ISPIN: vasprun.xml is not read
    np.testing.assert_array_equal(m.per_site, [2.0, 0.25])
    # an OUTCAR without ISPIN or NIONS: vasprun.xml fills them in, the OUTCAR's moment stays
    _write(folder, "OUTCAR", _outcar(ispin=None, nonc=None, nions=None, mags=("0.5", "1.75")))
    m = read_moments(folder)
    assert (m.source, m.total, m.ispin, m.natoms, m.nelect) == ("OUTCAR", 1.75, 2, 2, 11.0)
    assert m.noncollinear is False


def test_moments_of_an_empty_folder_and_of_a_run_without_spin(tmp_path: Path) -> None:
    empty = read_moments(tmp_path)
    assert (empty.total, empty.source, empty.ispin, empty.natoms) == (None, None, None, None)
    _write(tmp_path, "OUTCAR", _outcar(ispin=1))
    _write(tmp_path, "OSZICAR", OSZICAR.split("   1 F")[0])
    m = read_moments(tmp_path)
    assert (m.total, m.source, m.ispin, m.nelect, m.natoms) == (None, None, 1, 11.0, 2)
    assert m.noncollinear is False


def test_read_vasprun_by_value(tmp_path: Path, vasp_dir: Path) -> None:
    from magnb.vasp import read_vasprun

    polarized = vasp_dir / "nitric_oxide/polarized/vasprun.xml"
    v = read_vasprun(polarized)
    assert v.total == pytest.approx(1.0, abs=1e-6) and v.source == "vasprun.xml"
    assert (v.nelect, v.ispin, v.noncollinear, v.natoms) == (11.0, 2, False, 2)
    u = read_vasprun(vasp_dir / "nitric_oxide/unpolarized/vasprun.xml")
    assert (u.total, u.source, u.ispin, u.nelect) == (None, None, 1, 11.0)
    # the occupations are weighted by the k-point weights: half the weight, half the moment
    text = polarized.read_text().replace(
        '<varray name="weights" >\n   <v>       1.00000000 </v>',
        '<varray name="weights" >\n   <v>       0.50000000 </v>',
    )
    assert text != polarized.read_text()
    half = read_vasprun(_write(tmp_path, "vasprun.xml", text))
    assert half.total == pytest.approx(0.5, abs=1e-6)
    broken = _write(tmp_path, "broken.xml", polarized.read_text()[:5000])
    with pytest.raises(MagnbError) as exc:
        read_vasprun(broken)
    assert exc.value.path == str(broken)
    assert exc.value.reason.startswith(
        f"cannot parse vasprun.xml ({type(exc.value.__cause__).__name__}: "
    )


def test_oszicar_line_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "OSZICAR"
    path.write_bytes(OSZICAR.format(last="2.5000").encode().replace(b"d E", b"d \xff"))
    assert read_oszicar_moment(path) == 2.5


def test_site_table_edges(tmp_path: Path) -> None:
    # the header right under the title, no blank line between
    tight = _table("x", [1.0, 2.0]).replace(" magnetization (x)\n \n", " magnetization (x)\n")
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=tight)))
    np.testing.assert_array_equal(m.per_site, [1.0, 2.0])
    # the 'tot' line right after the rows, no dashes between
    no_dashes = _table("x", [1.0, 2.0]).replace(
        "--------------------------------------------------\n", ""
    )
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=no_dashes)))
    np.testing.assert_array_equal(m.per_site, [1.0, 2.0])
    # the file ends with the rows
    cut = _table("x", [1.0, 2.0])[
        : _table("x", [1.0, 2.0]).index("-----------------------------------------------", 60)
    ]
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=cut).rstrip("\n")))
    np.testing.assert_array_equal(m.per_site, [1.0, 2.0])
    # the file ends under the title, before any header: an empty table, which NIONS refutes
    with pytest.raises(MagnbError) as exc:
        read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=" magnetization (x)\n \n")))
    assert exc.value.reason == "magnetization table has 0 rows but NIONS = 2"


def test_outcar_with_a_byte_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "OUTCAR"
    path.write_bytes(b"  POSCAR = Fe \xe9l\xe9ment\n" + _outcar().encode())
    assert read_outcar(path).total == 2.25


def test_the_last_site_table_wins_and_a_broken_one_keeps_the_one_before(tmp_path: Path) -> None:
    tables = _table("x", [1.0, 2.0]) + _table("x", [3.0, 4.0])  # two ionic steps
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=tables)))
    np.testing.assert_array_equal(m.per_site, [3.0, 4.0])
    far = _table("x", [5.0, 6.0]).replace(" \n", " \n \n \n \n \n", 1)  # header not found
    m = read_outcar(_write(tmp_path, "OUTCAR", _outcar(tables=_table("x", [1.0, 2.0]) + far)))
    np.testing.assert_array_equal(m.per_site, [1.0, 2.0])


def test_vasprun_fills_in_only_what_the_outcar_lacks(tmp_path: Path, vasp_dir: Path) -> None:
    shutil.copyfile(vasp_dir / "nitric_oxide/polarized/vasprun.xml", tmp_path / "vasprun.xml")
    # an OUTCAR of ISPIN = 1, collinear (no moment): vasprun.xml gives the moment, the OUTCAR
    # the rest (a non-collinear OUTCAR also says ISPIN = 1, but its magnetization line counts)
    text = (
        "   number of dos      NEDOS =    301   number of ions     NIONS =      3\n"
        "   ISPIN  =      1    spin polarized calculation?\n"
        "   LNONCOLLINEAR =      F non collinear calculations\n"
        " number of electron      13.0000000 magnetization       0.0000000\n"
    )
    _write(tmp_path, "OUTCAR", text)
    m = read_moments(tmp_path)
    assert (m.source, m.total) == ("vasprun.xml", pytest.approx(1.0, abs=1e-6))
    assert (m.ispin, m.nelect, m.natoms, m.noncollinear) == (1, 13.0, 3, False)


def test_lnoncollinear_is_read_from_vasprun_xml_and_outcar_wins(tmp_path) -> None:
    # no non-collinear vasprun.xml among the fixtures: the unpolarized one with the flag set to T
    from magnb.vasp import read_vasprun

    src = fixture_dir() / "nitric_oxide" / "unpolarized" / "vasprun.xml"
    text = src.read_text()
    flag = '<i type="logical" name="LNONCOLLINEAR"> F  </i>'
    assert text.count(flag) == 1
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "vasprun.xml").write_text(text.replace(flag, flag.replace(" F ", " T ")))
    assert read_vasprun(alone / "vasprun.xml").noncollinear is True
    assert read_vasprun(src).noncollinear is False
    assert read_moments(alone).noncollinear is True
    # the OUTCAR's flag (F, with no moment line for this unpolarized run) comes first
    shutil.copy(src.parent / "OUTCAR", alone / "OUTCAR")
    m = read_moments(alone)
    assert m.total is None and m.noncollinear is False
