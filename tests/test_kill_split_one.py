"""Stage 02's ``split_one`` by value, for mutation testing: the integral-vs-reported moment flag
at its tolerance's edges, and every attribute and dataset the split file (and so its index row)
gets. Expected values come from the generated calculation (magnb.synth keeps its arrays and
moments in memory) and from the tolerance formula worked out here, never from split_one."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

import magnb
from magnb.errors import MagnbError
from magnb.split import SplitConfig, split_one
from magnb.synth import make_calculation, write_calculation
from magnb.vasp import read_chgcar

META = {"calc_id": "x", "input_hash": "h123", "run": "FM", "source_path": "Cr/FM"}
ATTRS = [
    "calc_id", "formula", "run", "source_path", "spin_kind", "volume", "volume_units",
    "grid_shape", "electrons", "nelect", "moment_integral", "moment", "moment_source",
    "moment_flag", "moment_units", "natoms", "n_magnetic", "input_hash", "split_format",
    "magnb_version",
]  # fmt: skip


@pytest.fixture(scope="module")
def fm():
    return make_calculation("Cr2Ge2Te6", "FM", grid=(8, 8, 32), seed=3)


def _split(tmp_path, calc, config=None, meta=META, drop=()):
    raw = write_calculation(tmp_path / "raw", calc)
    for name in drop:
        (raw / name).unlink()
    out = tmp_path / "x.h5"
    row = split_one(raw, "CHGCAR", out, config or SplitConfig(data_dir=tmp_path), dict(meta))
    return out, row


def test_the_split_file_holds_every_number_by_value(tmp_path, fm):
    out, row = _split(tmp_path, fm)
    with h5py.File(out, "r") as f:
        assert list(f.attrs) == ATTRS  # written in this order (track_order)
        a = dict(f.attrs)
        assert a["calc_id"] == "x" and a["run"] == "FM" and a["source_path"] == "Cr/FM"
        assert a["formula"] == "CrGeTe3" and a["spin_kind"] == "collinear"
        assert a["volume"] == pytest.approx(fm.volume, rel=1e-6)  # the CHGCAR prints 6 digits
        assert a["volume_units"] == "A^3" and a["moment_units"] == "muB"
        assert a["grid_shape"].tolist() == [8, 8, 32] and a["grid_shape"].dtype == np.int64
        assert a["electrons"] == pytest.approx(fm.nelect, rel=1e-6)
        assert a["nelect"] == 88.0
        assert a["moment_integral"] == pytest.approx(fm.moment, abs=1e-3)
        assert a["moment"] == pytest.approx(fm.moment, abs=1e-4)
        assert a["moment_source"] == "OUTCAR" and not a["moment_flag"]
        assert a["natoms"] == 10 and a["n_magnetic"] == 2 and a["input_hash"] == "h123"
        assert a["split_format"] == 3 and a["magnb_version"] == magnb.__version__
        assert set(f) == {"total", "magnetization", "lattice", "species", "frac_coords",
                          "site_moments"}  # fmt: skip
        for name in f:  # no creation times recorded (h5py's track_times=False)
            assert h5py.h5o.get_info(f[name].id).ctime == 0, name
        for name, want, units in (("total", fm.total, "e/A^3"),
                                  ("magnetization", fm.magnetization, "muB/A^3")):  # fmt: skip
            assert f[name].dtype == np.float32 and f[name].attrs["units"] == units
            np.testing.assert_allclose(f[name][()], want, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(f["lattice"][()], fm.structure.lattice.matrix, atol=1e-6)
        assert f["lattice"].attrs["units"] == "A"
        assert f["lattice"].attrs["layout"] == "rows are the lattice vectors a, b, c"
        assert f["species"][()].tolist() == [b"Cr"] * 2 + [b"Ge"] * 2 + [b"Te"] * 6
        assert f["species"].dtype == np.dtype("S3")
        np.testing.assert_allclose(f["frac_coords"][()], fm.structure.frac_coords, atol=1e-6)
        np.testing.assert_allclose(f["site_moments"][()], fm.site_moments, atol=6e-4)
        assert f["site_moments"].attrs["units"] == "muB"
        assert f["site_moments"].attrs["source"] == "OUTCAR magnetization (x|z) table, tot column"
    assert row["moment_flag"] is False and row["n_magnetic"] == 2 and row["natoms"] == 10
    assert row["moment_source"] == "OUTCAR" and row["spin_kind"] == "collinear"
    assert not out.with_suffix(".mag.vasp").exists()  # export_chgcar is off by default


def test_a_meta_without_run_or_source_path_writes_empty_ones(tmp_path, fm):
    out, row = _split(tmp_path, fm, meta={"calc_id": "y", "input_hash": "h"})
    with h5py.File(out, "r") as f:
        assert f.attrs["run"] == "" and f.attrs["source_path"] == ""
    assert row["source_path"] == ""


def _edge(moment: float, abs_tol: float, rel_tol: float) -> float:
    """The positive shift s of the reported moment at which |s| = abs + rel * |moment + s|."""
    return (abs_tol + rel_tol * moment) / (1 - rel_tol)


@pytest.mark.parametrize("side", [-1, 1])
@pytest.mark.parametrize("order", ["FM", "AFM"])
def test_the_flag_is_raised_just_past_the_tolerance(tmp_path, order, side):
    """abs 0.1 + rel 0.05 * |reported|: the FM moment (5.48) widens the band to about 0.39, the
    AFM one (0.0004) leaves it at 0.1; 0.03 muB inside it is quiet, 0.03 outside is flagged."""
    calc = make_calculation("Cr2Ge2Te6", order, grid=(8, 8, 32), seed=3)
    config = SplitConfig(data_dir=tmp_path, moment_abs_tol=0.1, moment_rel_tol=0.05)
    shift = _edge(calc.moment, 0.1, 0.05) + side * 0.03
    tol = 0.1 + 0.05 * abs(calc.moment + shift)
    assert abs(abs(shift) - tol) > 0.02  # the integral is good to 1e-3: well clear of the edge
    out, row = _split(tmp_path, dataclasses.replace(calc, moment=calc.moment + shift), config)
    with h5py.File(out, "r") as f:
        assert f.attrs["moment"] == pytest.approx(calc.moment + shift, abs=1e-4)
        assert f.attrs["moment_integral"] == pytest.approx(calc.moment, abs=1e-3)
        assert bool(f.attrs["moment_flag"]) is (side > 0)
    assert row["moment_flag"] is (side > 0)


def test_without_an_outcar_the_oszicar_moment_and_the_magnetic_elements_count(tmp_path, fm):
    out, row = _split(tmp_path, dataclasses.replace(fm, moment=fm.moment + 1.0), drop=["OUTCAR"])
    with h5py.File(out, "r") as f:
        assert f.attrs["moment_source"] == "OSZICAR" and bool(f.attrs["moment_flag"])
        assert f.attrs["moment"] == pytest.approx(fm.moment + 1.0, abs=1e-3)
        assert np.isnan(f.attrs["nelect"])
        assert f.attrs["n_magnetic"] == 2  # Cr, Cr: no site table
        assert "site_moments" not in f
    assert row["nelect"] is None and row["n_magnetic"] == 2


def test_with_no_reported_moment_nothing_is_flagged(tmp_path, fm):
    out, row = _split(tmp_path, fm, drop=["OUTCAR", "OSZICAR"])
    with h5py.File(out, "r") as f:
        assert np.isnan(f.attrs["moment"]) and f.attrs["moment_source"] == ""
        assert not f.attrs["moment_flag"]
        assert f.attrs["moment_integral"] == pytest.approx(fm.moment, abs=1e-3)
    assert row["moment"] is None and row["moment_source"] == "" and row["moment_flag"] is False


def test_sites_of_half_a_bohr_magneton_or_more_are_magnetic(tmp_path, fm):
    sites = np.array([2.781, -0.6, 0.5, 0.499, -0.499, 0.0, 0.0, 0.0, 0.0, -0.5])
    out, row = _split(tmp_path, dataclasses.replace(fm, site_moments=sites))
    with h5py.File(out, "r") as f:
        assert f.attrs["n_magnetic"] == 4  # 2.781, -0.6, 0.5, -0.5
        np.testing.assert_allclose(f["site_moments"][()], sites, atol=6e-4)
    assert row["n_magnetic"] == 4


def test_the_space_asked_for_is_the_arrays_and_the_sites(tmp_path, fm, monkeypatch):
    asked = []
    monkeypatch.setattr("magnb.split.ensure_space", lambda path, n: asked.append((path, n)))
    out, _ = _split(tmp_path, fm)
    assert asked == [(out, 4 * 2 * 8 * 8 * 32 + 4 * 10)]


@pytest.mark.parametrize("axis", [None, (0.36, -0.48, 0.8)])
def test_the_exported_chgcar_is_the_magnetization_or_its_z_component(tmp_path, fm, axis):
    calc = fm if axis is None else make_calculation(
        "Cr2Ge2Te6", "FM", grid=(8, 8, 32), seed=3, spin_axis=axis
    )  # fmt: skip
    config = SplitConfig(data_dir=tmp_path, export_chgcar=True)
    out, _ = _split(tmp_path, calc, config)
    exported = read_chgcar(out.with_suffix(".mag.vasp"))
    z = 1.0 if axis is None else axis[2]
    np.testing.assert_allclose(exported.total, z * calc.magnetization, rtol=1e-4, atol=1e-6)
    assert exported.spin_kind == "none"
    first = out.with_suffix(".mag.vasp").read_text().splitlines()[0]
    if axis is not None:
        with h5py.File(out, "r") as f:
            assert "magnetization" not in f
            for k, name in enumerate(("mx", "my", "mz")):
                assert f[name].attrs["units"] == "muB/A^3" and f[name].dtype == np.float32
                np.testing.assert_allclose(
                    f[name][()], axis[k] * calc.magnetization, rtol=1e-5, atol=1e-7
                )
    assert first == "x magnetization (muB), written by magnb"


def test_a_run_without_spin_exports_nothing(tmp_path, vasp_dir):
    config = SplitConfig(data_dir=tmp_path, export_chgcar=True)
    out = tmp_path / "no.h5"
    row = split_one(vasp_dir / "nitric_oxide/unpolarized", "CHGCAR", out, config, dict(META))
    assert row["spin_kind"] == "none" and not row["moment_flag"]
    assert not out.with_suffix(".mag.vasp").exists()
    with h5py.File(out, "r") as f:
        assert set(f) >= {"total"} and "magnetization" not in f


def test_a_moment_exactly_at_the_tolerance_is_not_flagged(tmp_path, fm):
    """'above abs + rel * |reported|': the edge itself is quiet. The gap is read from a first
    split's two moments; a second split with abs = that gap and rel = 0 sits on the edge."""
    shifted = dataclasses.replace(fm, moment=fm.moment + 0.25)
    out, _ = _split(tmp_path / "a", shifted)
    with h5py.File(out, "r") as f:
        gap = abs(float(f.attrs["moment_integral"]) - float(f.attrs["moment"]))
        assert bool(f.attrs["moment_flag"]) and gap == pytest.approx(0.25, abs=1e-3)
    config = SplitConfig(data_dir=tmp_path, moment_abs_tol=gap, moment_rel_tol=0.0)
    _, row = _split(tmp_path / "b", shifted, config)
    assert row["moment_flag"] is False


def test_a_spin_run_whose_companions_report_no_moment_is_refused(tmp_path, vasp_dir):
    """ISPIN = 2 in vasprun.xml, but no OUTCAR, no OSZICAR and no occupations to give the
    moment: stage 02 refuses the run rather than record it without one."""
    import re

    src = vasp_dir / "nitric_oxide/polarized"
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "CHGCAR").write_bytes((src / "CHGCAR").read_bytes())
    text = (src / "vasprun.xml").read_text()
    start, end = text.index("<eigenvalues>"), text.index("</eigenvalues>") + len("</eigenvalues>")
    (raw / "vasprun.xml").write_text(text[:start] + text[end:])
    config = SplitConfig(data_dir=tmp_path)
    with pytest.raises(
        MagnbError, match=rf"^{re.escape(str(raw))}: spin-polarized run with no reported moment$"
    ):
        split_one(raw, "CHGCAR", tmp_path / "x.h5", config, dict(META))
    (raw / "vasprun.xml").write_text(text)  # with its occupations: the moment, no error
    row = split_one(raw, "CHGCAR", tmp_path / "x.h5", config, dict(META))
    assert row["moment_source"] == "vasprun.xml" and row["moment"] == pytest.approx(1.0, abs=1e-3)
