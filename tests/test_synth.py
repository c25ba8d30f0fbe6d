"""The demo generator: files that real readers accept, exact integrals, physics, reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.io.vasp import Chgcar, Oszicar, Outcar

from magnb.synth import (
    A_SPECIES,
    ANCHORS,
    DISCLAIMER,
    CompoundSpec,
    SynthConfig,
    all_compounds,
    choose_compounds,
    grid_for_cell,
    make_calculation,
    write_calculation,
    write_demo_tree,
)
from magnb.vasp import read_chgcar, read_moments, read_oszicar_moment

SMALL = SynthConfig(n_compounds=6, grid=(12, 12, 48), seed=3)
FILES = ("POSCAR", "INCAR", "CHGCAR", "OUTCAR", "OSZICAR")


def close(a: float, b: float, rel: float = 1e-6, floor: float = 1e-8) -> bool:
    return abs(a - b) <= rel * abs(b) + floor


@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("demo")
    return root, write_demo_tree(root, SMALL, progress=False)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------------------------
# the tree and its files


def test_tree_layout(demo_tree: tuple[Path, list[Path]]) -> None:
    root, folders = demo_tree
    assert len(folders) == SMALL.n_compounds * 2
    specs = SMALL.compound_specs()
    assert [f.relative_to(root).parts for f in folders] == [
        (s.formula, order) for s in specs for order in ("FM", "AFM")
    ]
    for folder in folders:
        for name in FILES:
            assert (folder / name).stat().st_size > 0, folder / name
        assert not list(folder.glob(".*tmp*")), "temporary files left behind"
    assert DISCLAIMER.upper() in (root / "README.txt").read_text()


def test_every_file_round_trips(demo_tree: tuple[Path, list[Path]]) -> None:
    _, folders = demo_tree
    for folder in folders:
        chg = Chgcar.from_file(folder / "CHGCAR")
        assert set(chg.data) == {"total", "diff"}
        assert chg.data["total"].shape == SMALL.grid
        assert len(chg.structure) == 10
        assert DISCLAIMER in chg.poscar.comment

        outcar = Outcar(folder / "OUTCAR")
        assert outcar.spin and not outcar.noncollinear
        assert len(outcar.magnetization) == 10
        assert outcar.total_mag is not None

        density = read_chgcar(folder / "CHGCAR")
        moments = read_moments(folder)
        assert moments.source == "OUTCAR"
        assert moments.ispin == 2 and moments.natoms == 10
        assert moments.per_site is not None and moments.per_site.shape == (10,)
        # the magnetization block integrates to the moment VASP's text files report
        assert close(density.moment, moments.total), (folder, density.moment, moments.total)
        assert close(density.electrons, moments.nelect), folder
        assert moments.nelect == float(round(moments.nelect))
        # pymatgen's raw blocks agree: sum / size is the integral of rho * V
        assert close(chg.data["diff"].sum() / chg.data["diff"].size, moments.total)
        assert close(chg.data["total"].sum() / chg.data["total"].size, moments.nelect)
        assert outcar.total_mag == moments.total
        assert outcar.nelect == moments.nelect
        assert np.allclose([m["tot"] for m in outcar.magnetization], moments.per_site)

        oszicar = Oszicar(folder / "OSZICAR")
        assert oszicar.ionic_steps[-1]["mag"] == pytest.approx(moments.total, abs=5e-5)
        assert read_oszicar_moment(folder / "OSZICAR") == pytest.approx(moments.total, abs=5e-5)
        assert oszicar.ionic_steps[-1]["E0"] == pytest.approx(outcar.final_energy, abs=1e-6)
        # one story: as many electronic steps in the OSZICAR as iterations in the OUTCAR
        lines = (folder / "OUTCAR").read_text().splitlines()
        iterations = sum(1 for line in lines if line.startswith(" number of electron"))
        assert len(oszicar.electronic_steps[0]) == iterations


def test_augmentation_sections_are_what_vasp_writes(tmp_path: Path) -> None:
    calc = make_calculation("CrMnSi2Te6", "AFM", grid=(10, 10, 40))
    write_calculation(tmp_path, calc)
    text = (tmp_path / "CHGCAR").read_text().splitlines()
    headers = [i for i, line in enumerate(text) if line.startswith("augmentation occupancies")]
    assert len(headers) == 20  # one record per atom after each of the two blocks
    for i in headers:
        _, _, index, count = text[i].split()
        values = []
        j = i + 1
        while len(values) < int(count):
            assert len(text[j]) <= 75 and len(text[j].split()) <= 5
            values += [float(v) for v in text[j].split()]
            j += 1
        assert len(values) == int(count) and count in ("138", "33")
    chg = Chgcar.from_file(tmp_path / "CHGCAR")
    assert len(chg.data_aug["total"]) > 0 and len(chg.data_aug["diff"]) > 0
    # the initial moments VASP writes before the magnetization block
    assert "0.30000000000E+01 -.40000000000E+01" in (tmp_path / "CHGCAR").read_text()


def test_in_memory_calculation_matches_the_written_one(tmp_path: Path) -> None:
    calc = make_calculation("Cr2Ge2Te6", "FM", grid=(16, 16, 64), seed=5)
    write_calculation(tmp_path, calc)
    assert calc.moment == calc.chg_magnetization.sum() / calc.chg_magnetization.size
    assert close(calc.chg_total.sum() / calc.chg_total.size, calc.nelect, rel=1e-12)
    density = read_chgcar(tmp_path / "CHGCAR")
    # the CHGCAR header holds the lattice to 6 decimals (as VASP writes it): volumes agree to 1e-6
    assert np.allclose(density.total, calc.total, rtol=1e-6, atol=1e-12)
    assert np.allclose(density.magnetization, calc.magnetization, rtol=1e-6, atol=1e-12)
    moments = read_moments(tmp_path)
    assert np.array_equal(moments.per_site, calc.site_moments)
    assert f"{calc.moment:.7f}" in (tmp_path / "OUTCAR").read_text()
    # an insulating-or-not FM Cr3+ telluride carries about 3 muB per Cr
    assert 5.0 < calc.moment < 7.0


# --------------------------------------------------------------------------------------------
# reproducibility


def test_same_seed_gives_identical_bytes(
    tmp_path: Path, demo_tree: tuple[Path, list[Path]]
) -> None:
    root, _ = demo_tree
    again = tmp_path / "again"
    write_demo_tree(again, SMALL, progress=False)
    assert tree_bytes(again) == tree_bytes(root)


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    config = SynthConfig(compounds=("Cr2Ge2Te6", "CrMnSi2Te6"), grid=(10, 10, 40), seed=0)
    a = tree_bytes(_write(tmp_path / "a", config))
    b = tree_bytes(_write(tmp_path / "b", SynthConfig(**{**config.__dict__, "seed": 1})))
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith(("CHGCAR", "OUTCAR", "OSZICAR")):
            assert a[name] != b[name], name


def _write(root: Path, config: SynthConfig) -> Path:
    write_demo_tree(root, config, progress=False)
    return root


def test_choose_compounds_is_seeded_and_varied() -> None:
    first = choose_compounds(32, seed=0)
    assert first == choose_compounds(32, seed=0)
    assert first != choose_compounds(32, seed=1)
    formulas = [c.formula for c in first]
    assert len(set(formulas)) == 32
    assert formulas[:3] == list(ANCHORS)
    n_mixed = sum(c.mixed for c in first)
    assert 8 <= n_mixed <= 14
    assert {c.x for c in first} == {"S", "Se", "Te"} and {c.b for c in first} == {"Si", "Ge", "P"}
    assert len({a for c in first for a in c.a_sites}) == len(A_SPECIES)
    assert len(all_compounds()) == 189
    with pytest.raises(ValueError):
        choose_compounds(190)
    with pytest.raises(ValueError):
        choose_compounds(0)


@pytest.mark.parametrize("n", range(1, 11))
def test_any_number_of_compounds_can_be_chosen(n: int) -> None:
    """``magnb demo --compounds 3`` once failed: three anchors and a mixed draw left -1 singles."""
    chosen = choose_compounds(n, seed=0)
    assert len({c.formula for c in chosen}) == n


# --------------------------------------------------------------------------------------------
# physics


@pytest.mark.parametrize("formula", ["Cr2Ge2Te6", "Mn2P2S6", "Ni2Si2Se6", "V2P2Te6"])
def test_fm_and_neel_afm_sign_patterns(formula: str) -> None:
    fm = make_calculation(formula, "FM", grid=(12, 12, 48))
    afm = make_calculation(formula, "AFM", grid=(12, 12, 48))
    assert fm.structure == afm.structure  # same cell, only the order differs
    # FM: both A up, every ligand polarized opposite to its neighbours
    assert np.all(fm.site_moments[:2] > 0.5)
    assert np.all(fm.site_moments[4:] < 0)
    assert fm.site_moments[4:].min() > -0.2
    assert fm.moment > 1.0
    # Neel AFM on the honeycomb: the two A sites antiparallel, equal in size; net ~ 0
    a1, a2 = afm.site_moments[:2]
    assert a1 > 0.5 and a2 < -0.5 and a1 == -a2
    assert abs(afm.moment) < 2e-3
    assert np.allclose(afm.site_moments[2:], 0.0, atol=2e-3)  # ligand polarization cancels
    # the magnetization really is up on one site and down on the other
    for calc, signs in ((fm, (1, 1)), (afm, (1, -1))):
        for site, sign in zip(calc.structure[:2], signs, strict=True):
            idx = tuple(
                int(round(f * n)) % n
                for f, n in zip(site.frac_coords, calc.grid_shape, strict=True)
            )
            around = calc.chg_magnetization[
                idx[0] - 1 : idx[0] + 2, idx[1] - 1 : idx[1] + 2, idx[2] - 1 : idx[2] + 2
            ]
            assert np.sign(around.sum()) == sign


def test_ferrimagnet_has_a_net_moment() -> None:
    for formula in ("CrMnSi2Te6", "CrMnP2S6", "VCrGe2Se6", "FeNiSi2Te6"):
        afm = make_calculation(formula, "AFM", grid=(12, 12, 48))
        m1, m2 = afm.site_moments[:2]
        assert m1 > 0 > m2
        assert abs(m1 + m2) >= 0.1
        assert abs(afm.moment) >= 0.1, formula
    # also when both A species have the same nominal spin (Cr2+ and Fe2+: 4 muB each)
    afm = make_calculation("CrFeP2S6", "AFM", grid=(12, 12, 48))
    assert abs(afm.moment) >= 0.1


def test_densities_are_physical() -> None:
    for spec in SMALL.compound_specs():
        for order in ("FM", "AFM"):
            calc = make_calculation(spec, order, grid=SMALL.grid, seed=SMALL.seed)
            rho, m = calc.chg_total, calc.chg_magnetization
            assert np.isfinite(rho).all() and np.isfinite(m).all()
            assert rho.min() > 0
            # both spin densities (rho +- m) / 2 are non-negative
            assert np.all(np.abs(m) <= rho)


def _distance_to(calc, sites: list[int]) -> np.ndarray:
    """Distance (A) from every grid point to the nearest periodic image of the given sites."""
    n = np.array(calc.grid_shape)
    idx = np.stack(np.meshgrid(*[np.arange(k) for k in n], indexing="ij"), axis=-1)
    frac = idx / n
    best = np.full(calc.grid_shape, np.inf)
    lattice = np.array(calc.structure.lattice.matrix)
    for i in sites:
        d = frac - calc.structure.frac_coords[i]
        d -= np.round(d)
        for sx in (-1, 0, 1):
            for sy in (-1, 0, 1):
                r = np.linalg.norm((d + (sx, sy, 0)) @ lattice, axis=-1)
                best = np.minimum(best, r)
    return best


def test_magnetization_sits_on_the_metal_sites() -> None:
    calc = make_calculation("Mn2P2S6", "AFM", grid=(24, 24, 96))
    near_a = _distance_to(calc, [0, 1]) < 1.3
    m = calc.chg_magnetization
    assert np.abs(m[near_a]).sum() > 0.8 * np.abs(m).sum()
    # and within those spheres it integrates to about the per-site moments
    d0 = _distance_to(calc, [0]) < 1.3
    local = m[d0].sum() / m.size
    assert local == pytest.approx(calc.site_moments[0], rel=0.15)


def test_structure_is_an_a2b2x6_monolayer() -> None:
    for formula in ("Cr2Ge2Te6", "Mn2P2S6", "CoNiSi2S6"):
        calc = make_calculation(formula, "FM", grid=(12, 12, 48), vacuum=20.0)
        s = calc.structure
        a, b, c = s.lattice.abc
        assert a == pytest.approx(b) and 5.7 < a < 7.1
        assert s.lattice.gamma == pytest.approx(120.0)
        assert [site.specie.symbol for site in s][2:4] == [calc.compound.b] * 2
        z = s.frac_coords[:, 2]
        assert z.mean() == pytest.approx(0.5)
        thickness = (z.max() - z.min()) * c
        assert c - thickness == pytest.approx(20.0)
        # B2 dimer through the hexagon centre, along c
        assert np.allclose(s.frac_coords[2:4, :2] % 1.0, 0.0)
        dists = s.distance_matrix[np.triu_indices(10, 1)]
        assert dists.min() > 2.0
        # every A is octahedral: six X within 3.2 A
        for i in (0, 1):
            near = [n for n in s.get_neighbors(s[i], 3.2) if n.specie.symbol == calc.compound.x]
            assert len(near) == 6
    mp = make_calculation("Mn2P2S6", "FM", grid=(8, 8, 32)).structure.lattice.a
    cgt = make_calculation("Cr2Ge2Te6", "FM", grid=(8, 8, 32)).structure.lattice.a
    assert mp == pytest.approx(6.08, abs=0.1) and cgt == pytest.approx(6.83, abs=0.1)


def _boundary_ratio(data: np.ndarray, axis: int) -> tuple[float, float]:
    d = np.moveaxis(data, axis, 0)
    across = np.abs(d[0] - d[-1])
    inner = np.abs(np.diff(d, axis=0))
    beside = 0.5 * (inner[0] + inner[-1])
    return float(across.sum() / beside.sum()), float(across.max() / inner.max())


@pytest.mark.parametrize("formula", ["Cr2Ge2Te6", "CrMnSi2Te6", "Mn2P2S6"])
def test_densities_are_periodic(formula: str) -> None:
    # atoms sit on the cell faces (B on the corner, X on the a and b faces): without their periodic
    # images the density jumps between the last and first grid planes
    calc = make_calculation(formula, "FM", grid=(40, 40, 80))
    for data in (calc.chg_total, calc.chg_magnetization):
        for axis in (0, 1):
            total_ratio, max_ratio = _boundary_ratio(data, axis)
            assert total_ratio < 1.5, (axis, total_ratio)
            assert max_ratio <= 1.0 + 1e-9, (axis, max_ratio)
        # along c both faces are vacuum
        assert np.abs(data[:, :, 0] - data[:, :, -1]).max() < 1e-9 * np.abs(data).max()


def _rotate_c3(data: np.ndarray) -> np.ndarray:
    """The grid rotated by 120 degrees about c through the origin: (f1, f2) -> (-f2, f1 - f2)."""
    n = data.shape[0]
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    out = np.empty_like(data)
    out[(-j) % n, (i - j) % n] = data
    return out


def _invert(data: np.ndarray) -> np.ndarray:
    """The grid inverted through (0, 0, 1/2), the centre of the B2 dimer."""
    n0, n1, n2 = data.shape
    i, j, k = np.ix_(np.arange(n0), np.arange(n1), np.arange(n2))
    return data[(-i) % n0, (-j) % n1, (n2 - k) % n2]


@pytest.mark.parametrize("formula", ["Cr2Ge2Te6", "Mn2P2S6"])
def test_densities_have_the_symmetry_of_the_cell(formula: str) -> None:
    # the single-species cell has a 3-fold axis through the dimer and an inversion centre at its
    # middle that swaps the two honeycomb sites; every periodic image must be summed along every
    # axis alike for the grids to keep them
    fm = make_calculation(formula, "FM", grid=(18, 18, 60))
    afm = make_calculation(formula, "AFM", grid=(18, 18, 60))
    for data in (fm.chg_total, fm.chg_magnetization, afm.chg_total, afm.chg_magnetization):
        assert np.allclose(_rotate_c3(data), data, rtol=1e-9, atol=1e-12 * np.abs(data).max())
    for data in (fm.chg_total, fm.chg_magnetization, afm.chg_total):
        assert np.allclose(_invert(data), data, rtol=1e-9, atol=1e-12 * np.abs(data).max())
    # the Neel order is odd under the inversion that swaps the two sublattices
    m = afm.chg_magnetization
    assert np.allclose(_invert(m), -m, atol=1e-4 * np.abs(m).max())


def test_moment_and_electrons_are_exact_on_odd_grids() -> None:
    calc = make_calculation("FeCoGe2Te6", "AFM", grid=(15, 17, 45), seed=11)
    assert calc.moment == calc.chg_magnetization.sum() / calc.chg_magnetization.size
    assert round(calc.moment, 4) == pytest.approx(calc.moment, abs=1e-12)
    assert calc.chg_total.sum() / calc.chg_total.size == pytest.approx(calc.nelect, rel=1e-12)


# --------------------------------------------------------------------------------------------
# inputs


def test_compound_spec_parsing() -> None:
    assert CompoundSpec.parse("Cr2Ge2Te6") == CompoundSpec(("Cr", "Cr"), "Ge", "Te")
    assert CompoundSpec.parse("CrGeTe3") == CompoundSpec(("Cr", "Cr"), "Ge", "Te")
    assert CompoundSpec.parse("MnCrSi2Te6").formula == "CrMnSi2Te6"
    assert CompoundSpec.parse("Mn2P2S6").oxidation == 2
    assert CompoundSpec.parse("Cr2Si2Te6").oxidation == 3
    for bad in ("Cr3Ge2Te6", "Cr2Ge2Te5", "Cu2Ge2Te6", "Cr2Ge2Te3S3", "cr2ge2te6", ""):
        with pytest.raises(ValueError):
            CompoundSpec.parse(bad)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_calculation("Cr2Ge2Te6", "ferri")
    with pytest.raises(ValueError):
        make_calculation("Cr2Ge2Te6", "FM", vacuum=2.0)
    with pytest.raises(ValueError):
        write_demo_tree(tmp_path, SynthConfig(orders=("FM", "PM")), progress=False)
    with pytest.raises(ValueError):
        SynthConfig(compounds=("Cr2Ge2Te6", "CrGeTe3")).compound_specs()


def test_grid_from_spacing() -> None:
    calc = make_calculation("Cr2Ge2Te6", "FM", grid=None, spacing=0.6)
    lattice = np.array(calc.structure.lattice.matrix)
    assert calc.grid_shape == grid_for_cell(lattice, 0.6)
    for n, length in zip(calc.grid_shape, calc.structure.lattice.abc, strict=True):
        assert n % 2 == 0 and length / n <= 0.6
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        assert m == 1


# --------------------------------------------------------------------------------------------
# the rectangular cell: four orders that differ in where the moments sit


RECT_GRID = (12, 20, 48)
PATTERN_ORDERS = ("FM", "AFM-Neel", "AFM-zigzag", "AFM-stripe")
#: parallel nearest neighbours of every A site in each order (of 3 on the honeycomb)
PARALLEL_NEIGHBOURS = {"FM": 3, "AFM-Neel": 0, "AFM-zigzag": 2, "AFM-stripe": 1}


def _a_neighbour_signs(calc) -> list[list[float]]:
    """For every A site, the products of its moment's sign with its 3 nearest A neighbours'."""
    structure = calc.structure
    a = [i for i, s in enumerate(structure) if s.specie.symbol in A_SPECIES]
    signs = np.sign(calc.site_moments)
    out = []
    for i in a:
        near = sorted(
            (n for n in structure.get_neighbors(structure[i], 5.0) if n.index in a),
            key=lambda n: n.nn_distance,
        )[:3]
        assert max(n.nn_distance for n in near) < 1.01 * min(n.nn_distance for n in near)
        out.append([signs[i] * signs[n.index] for n in near])
    return out


@pytest.mark.parametrize("formula", ["Cr2Ge2Te6", "CrMnSi2Te6", "Ni2P2S6"])
def test_rectangular_cell_orders_are_the_named_patterns(formula: str) -> None:
    calcs = {
        o: make_calculation(formula, o, grid=RECT_GRID, cell="rectangular") for o in PATTERN_ORDERS
    }
    first = calcs["FM"].structure
    a, b, _ = first.lattice.abc
    assert len(first) == 20 and first.lattice.angles == pytest.approx((90, 90, 90))
    assert b == pytest.approx(np.sqrt(3) * a)
    for order, calc in calcs.items():
        assert calc.structure == first  # one cell; only the spins differ
        pairs = _a_neighbour_signs(calc)
        assert len(pairs) == 4
        for products in pairs:
            assert sum(p > 0 for p in products) == PARALLEL_NEIGHBOURS[order], order
        # the written moment is the integral of the magnetization, exactly
        assert close(calc.chg_magnetization.sum() / calc.chg_magnetization.size, calc.moment)
        assert np.all(np.abs(calc.chg_magnetization) <= calc.chg_total)
    # the antiparallel orders carry the same local moments: only their places differ
    sizes = {o: np.sort(np.abs(calcs[o].site_moments[:4])) for o in PATTERN_ORDERS[1:]}
    assert np.array_equal(sizes["AFM-Neel"], sizes["AFM-zigzag"])
    assert np.array_equal(sizes["AFM-Neel"], sizes["AFM-stripe"])


def test_rectangular_neel_matches_the_hexagonal_cell() -> None:
    hexagonal = make_calculation("Cr2Ge2Te6", "AFM", grid=(12, 12, 48))
    rectangular = make_calculation("Cr2Ge2Te6", "AFM-Neel", grid=(12, 20, 48), cell="rectangular")
    # two formula units: twice the electrons, the same (zero) net moment, the same local moments
    assert rectangular.nelect == pytest.approx(2 * hexagonal.nelect)
    assert np.allclose(
        np.sort(rectangular.site_moments[:4]), np.repeat(np.sort(hexagonal.site_moments[:2]), 2)
    )
    assert rectangular.energy == pytest.approx(2 * hexagonal.energy, abs=5e-3)


def test_zigzag_and_stripe_compensate_each_species() -> None:
    for formula in ("CrMnSi2Te6", "VCrGe2Se6"):
        for order in ("AFM-zigzag", "AFM-stripe"):
            calc = make_calculation(formula, order, grid=RECT_GRID, cell="rectangular")
            symbols = [s.specie.symbol for s in calc.structure]
            for species in set(CompoundSpec.parse(formula).a_sites):
                sites = [i for i, s in enumerate(symbols) if s == species]
                assert calc.site_moments[sites].sum() == pytest.approx(0.0, abs=1e-9)
        neel = make_calculation(formula, "AFM-Neel", grid=RECT_GRID, cell="rectangular")
        assert abs(neel.moment) >= 0.1  # the Neel cell of two species is a ferrimagnet


def test_demo_config_writes_four_orders(tmp_path: Path) -> None:
    config = SynthConfig.demo(2)
    folders = write_demo_tree(
        tmp_path, SynthConfig(**{**config.__dict__, "grid": RECT_GRID}), progress=False
    )
    assert sorted({f.name for f in folders}) == sorted(PATTERN_ORDERS)
    assert len(folders) == 8
    chg = Chgcar.from_file(folders[0] / "CHGCAR")
    assert chg.data["total"].shape == RECT_GRID
    assert "cell: rectangular" in (tmp_path / "README.txt").read_text()


def _calculation_folders(root: Path) -> set[Path]:
    return {p.parent for p in root.glob("*/*/CHGCAR")}


def test_a_demo_tree_rewritten_with_other_settings_holds_only_the_new_calculations(
    tmp_path: Path,
) -> None:
    """An old demo folder must not leak calculations (the hexagonal FM/AFM runs of an earlier
    magnb, or compounds of a larger --compounds) into a new demo's dataset."""
    four = SynthConfig(**{**SynthConfig.demo(2).__dict__, "grid": RECT_GRID})
    first = write_demo_tree(tmp_path, SMALL, progress=False)
    assert _calculation_folders(tmp_path) == set(first)
    second = write_demo_tree(tmp_path, four, progress=False)
    assert _calculation_folders(tmp_path) == set(second)
    assert len(second) == 8 and len(set(first) - set(second)) > 0
    assert {p.name for p in tmp_path.iterdir() if p.is_dir()} == {f.parent.name for f in second}


def test_a_folder_that_is_not_a_demo_tree_is_only_added_to(tmp_path: Path) -> None:
    mine = tmp_path / "Fe2Ge2Te6" / "my_run"
    mine.mkdir(parents=True)
    (mine / "CHGCAR").write_text("not the demo's")
    folders = write_demo_tree(tmp_path, SynthConfig(n_compounds=1, grid=(12, 12, 48)), False)
    assert (mine / "CHGCAR").read_text() == "not the demo's"
    assert _calculation_folders(tmp_path) == {mine, *folders}


def test_orders_the_cell_cannot_hold_are_refused() -> None:
    with pytest.raises(ValueError, match="hexagonal"):
        make_calculation("Cr2Ge2Te6", "AFM-zigzag", grid=(12, 12, 48))
    with pytest.raises(ValueError, match="cell must be one of"):
        make_calculation("Cr2Ge2Te6", "FM", grid=(12, 12, 48), cell="oblique")
    with pytest.raises(ValueError, match="orders must be drawn from"):
        SynthConfig(orders=("FM", "AFM-stripe"))
