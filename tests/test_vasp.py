"""Reading real VASP outputs: the values SOURCES.md gives, and clean failures on bad files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from pymatgen.io.vasp import Chgcar, Outcar

from magnb.errors import MagnbError
from magnb.vasp import (
    format_grid,
    read_chgcar,
    read_moments,
    read_oszicar_moment,
    read_outcar,
    read_vasprun,
    write_chgcar,
)

# (file, grid, natoms, spin kind, electrons, moment) from ../shared/data/vasp/SOURCES.md
REFERENCE = [
    ("nitric_oxide/polarized/CHGCAR", (32, 48, 64), 2, "collinear", 11.0, 1.0),
    ("nitric_oxide/unpolarized/CHGCAR", (32, 48, 64), 2, "none", 11.0, None),
    ("fe_bcc/CHGCAR_spin", (28, 28, 28), 1, "collinear", 8.0, 2.2725),
    ("fe_bcc/CHGCAR_no_spin", (28, 28, 28), 1, "none", 8.0, None),
    ("fe_bcc/CHGCAR_slash", (28, 28, 28), 1, "none", 8.0, None),
    ("nio_soc/CHGCAR.gz", (28, 28, 28), 4, "noncollinear", 44.0001, -0.0000),
    ("li_spin/CHGCAR.gz", (48, 48, 48), 1, "collinear", 1.0, -0.0203),
    ("si_static/CHGCAR.gz", (60, 60, 60), 2, "collinear", 8.0, 0.0),
]


@pytest.mark.parametrize(("rel", "grid", "natoms", "kind", "electrons", "moment"), REFERENCE)
def test_real_fixtures_match_sources(vasp_dir, rel, grid, natoms, kind, electrons, moment):
    d = read_chgcar(vasp_dir / rel)
    assert d.grid_shape == grid
    assert len(d.structure) == natoms
    assert d.spin_kind == kind
    assert d.electrons == pytest.approx(electrons, abs=1e-3)
    if moment is None:
        assert d.magnetization is None and d.moment is None
    else:
        assert d.moment == pytest.approx(moment, abs=1e-3)


def test_units_are_per_cubic_angstrom(vasp_dir):
    """magnb divides VASP's rho*V by V; pymatgen keeps rho*V."""
    path = vasp_dir / "fe_bcc/CHGCAR_spin"
    ours = read_chgcar(path)
    theirs = Chgcar.from_file(str(path))
    np.testing.assert_allclose(ours.total * ours.volume, theirs.data["total"])
    np.testing.assert_allclose(ours.magnetization * ours.volume, theirs.data["diff"])


def test_noncollinear_gives_three_components(vasp_dir):
    d = read_chgcar(vasp_dir / "nio_soc/CHGCAR.gz")
    assert d.magnetization.shape == (3, 28, 28, 28)
    mx, my, mz = d.integral(d.magnetization)
    assert (mx, my, mz) == pytest.approx((0.0, -0.0001, 0.0), abs=2e-4)
    # locally antiferromagnetic: mz reaches +-154 in VASP units (rho * V)
    assert d.magnetization[2].max() * d.volume == pytest.approx(154, rel=0.05)
    assert d.magnetization[2].min() * d.volume == pytest.approx(-154, rel=0.05)


def test_nitric_oxide_moment_agrees_with_outcar_and_oszicar(vasp_dir):
    folder = vasp_dir / "nitric_oxide/polarized"
    integral = read_chgcar(folder / "CHGCAR").moment
    outcar = read_outcar(folder / "OUTCAR")
    assert outcar.total == pytest.approx(integral, abs=1e-4)
    assert outcar.total == pytest.approx(Outcar(str(folder / "OUTCAR")).total_mag)
    assert read_oszicar_moment(folder / "OSZICAR") == pytest.approx(integral, abs=1e-4)
    assert read_vasprun(folder / "vasprun.xml").total == pytest.approx(integral, abs=1e-4)
    moments = read_moments(folder)
    assert moments.source == "OUTCAR" and moments.nelect == 11.0 and moments.ispin == 2


def test_moment_precedence_falls_back(vasp_dir, tmp_path):
    src = vasp_dir / "nitric_oxide/polarized"
    shutil.copyfile(src / "OSZICAR", tmp_path / "OSZICAR")
    shutil.copyfile(src / "vasprun.xml", tmp_path / "vasprun.xml")
    assert read_moments(tmp_path).source == "OSZICAR"
    (tmp_path / "OSZICAR").unlink()
    m = read_moments(tmp_path)
    assert m.source == "vasprun.xml" and m.total == pytest.approx(1.0)
    (tmp_path / "vasprun.xml").unlink()
    assert read_moments(tmp_path).total is None


def test_unpolarized_run_has_no_moment(vasp_dir):
    m = read_moments(vasp_dir / "nitric_oxide/unpolarized")
    assert m.total is None and m.ispin == 1


def test_gzipped_companions_and_site_table(vasp_dir):
    m = read_moments(vasp_dir / "si_static")
    assert m.source == "OUTCAR.gz"
    assert m.total == pytest.approx(0.0, abs=1e-4)
    np.testing.assert_allclose(m.per_site, [0.0, 0.0])


def test_empty_file_fails_cleanly(vasp_dir):
    with pytest.raises(MagnbError, match="CHGCAR_empty.*empty"):
        read_chgcar(vasp_dir / "fe_bcc/CHGCAR_empty")


def _cut(src: Path, dest: Path, predicate) -> Path:
    lines = src.read_text().splitlines(keepends=True)
    keep = next(i for i, line in enumerate(lines) if predicate(i, line))
    dest.write_text("".join(lines[:keep]))
    return dest


@pytest.mark.parametrize(
    ("name", "cut_at", "message"),
    [
        ("header", lambda i, line: i == 4, "header|lattice|parse"),
        ("positions", lambda i, line: i == 9, "positions"),
        ("first grid", lambda i, line: i == 5000, "grid block 1"),
        ("augmentation", lambda i, line: i == 19677, "augmentation"),
        ("second grid", lambda i, line: i == 30000, "grid block 2"),
    ],
)
def test_truncated_files_name_file_and_place(vasp_dir, tmp_path, name, cut_at, message):
    bad = _cut(vasp_dir / "nitric_oxide/polarized/CHGCAR", tmp_path / "CHGCAR", cut_at)
    with pytest.raises(MagnbError, match=message) as info:
        read_chgcar(bad)
    assert str(bad) in str(info.value)


def test_non_number_in_grid_names_line(vasp_dir, tmp_path):
    lines = (vasp_dir / "fe_bcc/CHGCAR_spin").read_text().splitlines(keepends=True)
    lines[100] = lines[100].replace("E", "Q", 1)
    bad = tmp_path / "CHGCAR"
    bad.write_text("".join(lines))
    with pytest.raises(MagnbError) as info:
        read_chgcar(bad)
    assert info.value.line == 101
    assert "non-numeric" in str(info.value)


def test_wrong_grid_dimensions(vasp_dir, tmp_path):
    text = (vasp_dir / "fe_bcc/CHGCAR_no_spin").read_text()
    bad = tmp_path / "CHGCAR"
    bad.write_text(text.replace("   28   28   28", "   28   28   29", 1))
    with pytest.raises(MagnbError, match="grid block 1"):
        read_chgcar(bad)


def test_corrupt_gzip(vasp_dir, tmp_path):
    data = bytearray((vasp_dir / "li_spin/CHGCAR.gz").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    bad = tmp_path / "CHGCAR.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(MagnbError, match="corrupt compressed"):
        read_chgcar(bad)


def test_outcar_without_magnetization(vasp_dir, tmp_path):
    text = (vasp_dir / "nitric_oxide/polarized/OUTCAR").read_text()
    bad = tmp_path / "OUTCAR"
    bad.write_text("\n".join(x for x in text.splitlines() if "magnetization" not in x))
    with pytest.raises(MagnbError, match="OUTCAR.*no 'magnetization' line"):
        read_outcar(bad)


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2", ".xz"])
def test_compressed_variants(vasp_dir, tmp_path, suffix):
    import bz2
    import lzma

    raw = (vasp_dir / "fe_bcc/CHGCAR_spin").read_bytes()
    opener = {"": None, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix]
    path = tmp_path / f"CHGCAR{suffix}"
    path.write_bytes(opener(raw) if opener else raw)
    assert read_chgcar(path).moment == pytest.approx(2.2725, abs=1e-4)


def test_writer_round_trips_and_matches_vasp_format(vasp_dir, tmp_path):
    src = read_chgcar(vasp_dir / "nitric_oxide/polarized/CHGCAR")
    out = tmp_path / "CHGCAR"
    blocks = [src.total * src.volume, src.magnetization * src.volume]
    write_chgcar(out, src.structure, blocks)
    back = read_chgcar(out)
    np.testing.assert_allclose(back.total, src.total, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(back.magnetization, src.magnetization, rtol=1e-10, atol=1e-14)
    theirs = Chgcar.from_file(str(out))
    np.testing.assert_allclose(theirs.data["diff"], blocks[1], rtol=1e-10, atol=1e-12)
    # VASP's number format, byte for byte, on the fixture's first grid line
    original = (vasp_dir / "nitric_oxide/polarized/CHGCAR").read_text().splitlines()
    first = original.index("   32   48   64") + 1
    raw = Chgcar.from_file(str(vasp_dir / "nitric_oxide/polarized/CHGCAR")).data["total"]
    assert format_grid(raw).decode().splitlines()[0] == original[first]


def test_number_format_edge_cases():
    text = format_grid(np.array([0.0, -1.0, 9.999999999999e-5, 1e300, -2.5e-300]).reshape(5, 1, 1))
    values = [float(v) for v in text.split()]
    np.testing.assert_allclose(values, [0.0, -1.0, 1e-4, 1e300, -2.5e-300], rtol=1e-10)
    assert text.split()[1] == b"-.10000000000E+01"


def test_fast_number_table_matches_the_general_formatter():
    from magnb.vasp import _fortran_e, _fortran_e_table

    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.normal(size=20_000) * 10.0 ** rng.integers(-60, 60, 20_000),
            [0.0, -0.0, 1.0, -1.0, 0.1, 0.09999999999999999, 9.999999999995e-5, 1e-98],
            [9.9999999999e97, 123.456, 0.099999999999996, -2.2250738585072014e-99],
        ]
    )
    table = _fortran_e_table(values)
    assert [bytes(row) for row in table] == _fortran_e(values).tolist()
    assert _fortran_e_table(np.array([1e150])) is None  # three-digit exponent: general path
    tiny = format_grid(np.array([5e-324, 1.0, 2.0, 3.0, 4.0]).reshape(5, 1, 1)).split()
    assert float(tiny[0]) == 5e-324 and len(tiny) == 5


# --------------------------------------------------------------------------------------------
# a non-collinear calculation with distinct, non-zero mx, my, mz (the real NiO's are all ~0)

#: the spin axis of the generated non-collinear run: every component distinct and non-zero, so
#: reading one component for another changes the number
AXIS = (0.36, -0.48, 0.8)


@pytest.fixture(scope="module")
def noncollinear(tmp_path_factory):
    from magnb.synth import make_calculation, write_calculation

    calc = make_calculation("Cr2Ge2Te6", "FM", grid=(8, 8, 32), seed=2, spin_axis=AXIS)
    return calc, write_calculation(tmp_path_factory.mktemp("noncollinear"), calc)


def test_noncollinear_outcar_reads_the_z_table_and_the_z_total(noncollinear):
    calc, folder = noncollinear
    moment = calc.moment
    assert abs(moment) > 5  # a ferromagnet: every component is far from 0
    text = (folder / "OUTCAR").read_text()
    # VASP's own layout: ISPIN = 1 with LNONCOLLINEAR = T, three values per magnetization line
    assert "   ISPIN  =      1" in text and "LNONCOLLINEAR =      T" in text
    for name in ("(x)", "(y)", "(z)"):
        assert text.count(f" magnetization {name}\n") == 1, name
    last = [line for line in text.splitlines() if line.startswith(" number of electron")][-1]
    assert [float(v) for v in last.split()[-3:]] == pytest.approx([a * moment for a in AXIS])

    o = read_outcar(folder / "OUTCAR")
    assert o.noncollinear is True and o.ispin == 1 and o.natoms == len(calc.site_moments)
    # the z component, not x (0.36 m) or y (-0.48 m)
    assert o.total == pytest.approx(0.8 * moment, abs=1e-6)
    # the site table is the (z) one: each component's table differs in every magnetic row
    assert o.per_site == pytest.approx(0.8 * calc.site_moments, abs=6e-4)
    metal = np.abs(calc.site_moments) > 1
    assert metal.sum() == 2
    assert not np.allclose(o.per_site[metal], 0.36 * calc.site_moments[metal], atol=0.1)
    m = read_moments(folder)
    assert m.source == "OUTCAR" and m.total == o.total and m.noncollinear is True
    # OSZICAR: mag= mx my mz, and its z is what is read
    assert read_oszicar_moment(folder / "OSZICAR") == pytest.approx(0.8 * moment, abs=5e-5)
    # pymatgen reads the same file as non-collinear, with the x, y, z tables each in its place
    # (its total_mag is the x component: magnb's reader, not pymatgen's, gives the moment)
    pmg = Outcar(folder / "OUTCAR")
    assert pmg.noncollinear
    vectors = np.array([site["tot"].moment for site in pmg.magnetization])
    assert vectors == pytest.approx(np.outer(calc.site_moments, AXIS), abs=6e-4)


def test_noncollinear_chgcar_blocks_are_mx_my_mz(noncollinear):
    calc, folder = noncollinear
    d = read_chgcar(folder / "CHGCAR")
    assert d.spin_kind == "noncollinear" and d.magnetization.shape == (3, 8, 8, 32)
    integrals = d.integral(d.magnetization)
    assert integrals == pytest.approx([a * calc.moment for a in AXIS], abs=1e-6)
    assert d.moment == pytest.approx(integrals[2])  # magnb's scalar moment is mz's integral
    for k, a in enumerate(AXIS):
        np.testing.assert_allclose(d.magnetization[k], a * calc.magnetization, atol=1e-9)
