"""Exact symmetry augmentation of cube samples (magnb.symmetry): the crystal's operations that map
the cube's grid onto itself give the sample scrape makes at another origin, density and atoms
together; an operation the magnetization does not share is not used."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from magnb.collect import CollectConfig, collect
from magnb.grid import cube_atoms, resample_cube
from magnb.split import SplitConfig, load_split, split_all
from magnb.symmetry import (
    CUBE_OPS,
    apply_op,
    apply_op_to_atoms,
    cartesian_translation,
    crystal_cube_ops,
    crystal_operations,
    equivalent_origin,
    op_matrix,
)
from tests.conftest import make_fixture_tree


@pytest.fixture(scope="module")
def splits(tmp_path_factory, vasp_dir) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("symmetry")
    tree = make_fixture_tree(root / "calcs", vasp_dir)
    collect(CollectConfig(source=tree, data_dir=root / "data", progress=False))
    split_all(SplitConfig(data_dir=root / "data", progress=False, workers=1))
    return {p.stem: load_split(p) for p in sorted((root / "data/split").glob("*.h5"))}


def test_the_48_cube_operations_are_a_group():
    mats = [op_matrix(i) for i in range(48)]
    assert len(set(CUBE_OPS)) == 48 and np.array_equal(mats[0], np.eye(3))
    for m in mats:
        assert np.array_equal(m @ m.T, np.eye(3))
    keys = set(CUBE_OPS)
    for a, b in itertools.product(mats, repeat=2):
        assert tuple(tuple(int(v) for v in r) for r in a @ b) in keys


def test_apply_op_permutes_voxels_by_the_inverse_rotation_about_the_centre():
    rng = np.random.default_rng(0)
    n = 5
    x = rng.normal(size=(n, n, n, 2))
    centre = (n - 1) / 2
    for op in range(48):
        inverse = op_matrix(op).T
        expected = np.empty_like(x)
        for i in np.ndindex(n, n, n):
            j = np.rint(inverse @ (np.array(i) - centre) + centre).astype(int)
            expected[i] = x[tuple(j)]
        out = apply_op(x, op)
        np.testing.assert_array_equal(out, expected)
        assert out.sum() == pytest.approx(x.sum(), rel=1e-12)  # the integral is kept


def test_atoms_move_with_the_density():
    """A density peak at an atom: after the operation the peak sits where the atom went."""
    n = 16
    atom = np.array([3.0, 5.0, 11.0])
    grid = np.indices((n, n, n)).transpose(1, 2, 3, 0).astype(float)
    blob = np.exp(-((grid - atom) ** 2).sum(-1))[..., None]
    for op in range(48):
        moved = apply_op_to_atoms(atom, op, n)[0]
        peak = np.unravel_index(np.argmax(apply_op(blob, op)[..., 0]), (n, n, n))
        np.testing.assert_array_equal(peak, moved)


#: the magnetic order of test_an_operation_the_magnetic_order_lacks_is_not_used, moved off the
#: origin: its operations now carry translations that are not lattice vectors
SHIFTED = (0.15, 0.25, 0.35)


@pytest.mark.parametrize(
    ("calc", "n_ops"), [("Fe__spin", 48), ("NO__polarized", 4), ("shifted order", 16)]
)
def test_each_kept_operation_gives_the_sample_scrape_makes_at_another_origin(splits, calc, n_ops):
    """The oracle: the transformed sample equals resample_cube of the same crystal at the
    equivalent origin (to the cubic splines' interpolation error), density and atoms alike; an
    operation the crystal lacks fails the same comparison by far."""
    if calc == "shifted order":
        sites = {(0, 0, 0): 1, (0.5, 0, 0): -1, (0, 0.5, 0): -1, (0, 0, 0.5): 1}
        split = _checkerboard_split(
            {tuple((np.array(k) + SHIFTED) % 1.0): v for k, v in sites.items()}
        )
        translations = [w for _, w, _ in crystal_operations(
            split["lattice"], split["species"], split["frac_coords"])]  # fmt: skip
        assert max(np.abs(w - np.rint(w)).max() for w in translations) > 0.1
    else:
        split = splits[calc]
    ops = crystal_cube_ops(split)
    assert len(ops) == n_ops and ops[0] == 0
    lattice, side, n = split["lattice"], 6.0, 24
    m = split["magnetization"][None]
    base = resample_cube(m, lattice, side, n)[0][..., None]
    scale = np.abs(base).max()
    atoms, _ = cube_atoms(split["frac_coords"], lattice, side, n)
    checked = set()
    for _, w, rotation in crystal_operations(lattice, split["species"], split["frac_coords"]):
        key = tuple(tuple(int(v) for v in r) for r in np.rint(rotation))
        if key not in CUBE_OPS or CUBE_OPS.index(key) not in ops:
            continue
        op = CUBE_OPS.index(key)
        origin = equivalent_origin(op, cartesian_translation(lattice, w), side, n)
        other = resample_cube(m, lattice, side, n, origin=origin)[0][..., None]
        assert np.abs(apply_op(base, op) - other).max() <= 2e-4 * scale, op
        moved = apply_op_to_atoms(atoms, op, n)
        expected, _ = cube_atoms(split["frac_coords"], lattice, side, n, origin=origin)
        inner = lambda p: p[(np.abs(p - (n - 1) / 2) < n / 2 - 1).all(axis=1)]  # noqa: E731
        np.testing.assert_allclose(
            np.sort(np.round(inner(moved), 6), axis=0),
            np.sort(np.round(inner(expected), 6), axis=0),
            atol=1e-6,
        )
        checked.add(op)
    assert checked == set(ops) - {0} or checked == set(ops)
    if (
        calc == "NO__polarized"
    ):  # a 90-degree turn of NO's 2 x 3 x 4 A box is no symmetry: the oracle says so
        turn = CUBE_OPS.index(((0, -1, 0), (1, 0, 0), (0, 0, 1)))
        assert turn not in ops
        other = resample_cube(m, lattice, side, n)[0][..., None]
        assert np.abs(apply_op(base, turn) - other).max() > 0.05 * scale


def _checkerboard_split(signs: dict[tuple[float, float, float], float]) -> dict:
    """A cubic cell (4 A, 20^3) with one species on the sites given, a Gaussian of total density
    on each and of magnetization with the site's sign."""
    n, a = 20, 4.0
    frac = np.indices((n, n, n)).reshape(3, -1).T / n
    total = np.zeros(n**3)
    mag = np.zeros(n**3)
    for site, sign in signs.items():
        d = (frac - np.array(site) + 0.5) % 1.0 - 0.5  # minimum image
        g = np.exp(-((d * a) ** 2).sum(1) / 0.3)
        total += g
        mag += sign * g
    return {
        "total": total.reshape(n, n, n),
        "magnetization": mag.reshape(n, n, n),
        "lattice": np.eye(3) * a,
        "species": ["Fe"] * len(signs),
        "frac_coords": np.array(list(signs)),
    }


def test_an_operation_the_magnetic_order_lacks_is_not_used():
    """Four Fe sites of a cubic cell: the structure has all 48 operations, but with the sites on
    x and y down and the one on z up, only those that keep the z axis map the magnetization
    onto itself (16: D4h)."""
    ferro = _checkerboard_split({(0, 0, 0): 1, (0.5, 0, 0): 1, (0, 0.5, 0): 1, (0, 0, 0.5): 1})
    assert len(crystal_cube_ops(ferro)) == 48
    ordered = _checkerboard_split({(0, 0, 0): 1, (0.5, 0, 0): -1, (0, 0.5, 0): -1, (0, 0, 0.5): 1})
    ops = crystal_cube_ops(ordered)
    assert len(ops) == 16
    assert all(abs(op_matrix(op)[2, 2]) == 1 for op in ops)


def test_a_non_collinear_run_keeps_the_identity_only(splits):
    assert crystal_cube_ops(splits["NiO__soc"]) == [0]


def test_the_loader_turns_each_cube_by_one_of_its_own_operations(tmp_path, vasp_dir):
    import json

    from magnb.dataset import DensityDataset, ScrapeConfig, scrape

    tree = make_fixture_tree(tmp_path / "calcs", vasp_dir)
    data = tmp_path / "data"
    collect(CollectConfig(source=tree, data_dir=data, progress=False))
    split_all(SplitConfig(data_dir=data, progress=False, workers=1))
    config = ScrapeConfig(
        data_dir=data, representation="cube", cube_side=6.0, cube_points=12, symmetry=True,
        channels=("m",), fractions=(1.0, 0.0, 0.0), kfold=0, workers=1, progress=False,
    )  # fmt: skip
    table = scrape(config).table.set_index("calc_id")
    assert json.loads(table.loc["Fe__spin", "symmetry_ops"]) == list(range(48))
    assert json.loads(table.loc["NiO__soc", "symmetry_ops"]) == [0]
    plain = DensityDataset(data, split="train", label="moment", batch_size=8, shuffle=False)
    turned = DensityDataset(
        data, split="train", label="moment", batch_size=8, shuffle=False, symmetry=True
    )
    x = plain.read(np.arange(len(plain.table)))
    for _ in range(3):
        y, _ = turned[0]
        for k, ops in enumerate(turned.table["symmetry_ops"]):
            images = [apply_op(x[k], op) for op in json.loads(ops)]
            assert any(np.array_equal(y[k], im) for im in images)
        turned.on_epoch_end()
    fe = int(np.flatnonzero(turned.table["calc_id"] == "Fe__spin")[0])
    seen = set()
    for _ in range(8):  # Fe's cube turns: not always the identity
        y, _ = turned[0]
        seen.add(y[fe].tobytes())
        turned.on_epoch_end()
    assert len(seen) > 1
    import dataclasses

    from magnb.errors import MagnbError

    scrape(dataclasses.replace(config, symmetry=False))
    with pytest.raises(MagnbError, match="symmetry: true"):
        DensityDataset(data, split="train", label="moment", symmetry=True)
