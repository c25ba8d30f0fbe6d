"""magnb.grid: Fourier resampling, Cartesian cubes, slab cropping, supercell tiling.

Synthetic fields check exact properties (band-limited data, translations, scipy's 1-D resampler as
an oracle); the real CHGCARs in ../shared/data/vasp check that integrals survive on real densities.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
from numpy.typing import NDArray
from scipy import ndimage

from magnb import grid
from magnb.errors import MagnbError
from magnb.vasp import ChargeDensity, read_chgcar

VASP_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vasp"

# file, reference electrons (SOURCES.md), a finer and a coarser grid (odd and even sizes mixed)
FIXTURES = {
    "nitric_oxide": ("nitric_oxide/polarized/CHGCAR", 11.0, (45, 72, 97), (20, 31, 40)),
    "fe_bcc": ("fe_bcc/CHGCAR_spin", 8.0, (42, 43, 56), (14, 15, 21)),
    "nio_soc": ("nio_soc/CHGCAR.gz", 44.0, (36, 41, 56), (20, 19, 14)),
    "li_spin": ("li_spin/CHGCAR.gz", 1.0, (64, 65, 72), (24, 31, 36)),
    "si_static": ("si_static/CHGCAR.gz", 8.0, (72, 81, 90), (30, 41, 45)),
}


@cache
def load(name: str) -> ChargeDensity:
    """A real CHGCAR from ../shared/data/vasp, read once per test session."""
    path = VASP_DIR / FIXTURES[name][0]
    if not path.is_file():
        pytest.fail(
            f"real VASP fixture missing: {path} (expected the shared/data/vasp folder beside "
            "the repository, see its SOURCES.md)"
        )
    return read_chgcar(path)


def cell_integral(data: NDArray[np.float64], volume: float) -> NDArray[np.float64]:
    """Integral over the cell of a density on any grid (per channel for leading axes)."""
    return data.mean(axis=(-3, -2, -1)) * volume


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 2.0):
    """A random smooth periodic field (Gaussian-filtered noise, wrapped) with a nonzero mean."""
    noise = rng.standard_normal(shape)
    lead = len(shape) - 3
    return 1.5 + ndimage.gaussian_filter(noise, sigma=(0,) * lead + (sigma,) * 3, mode="wrap")


def plane_waves(frac: NDArray[np.float64]) -> NDArray[np.float64]:
    """A band-limited periodic function of fractional coordinates ``(3, ...)`` (|k| <= 3)."""
    x, y, z = frac
    two_pi = 2 * np.pi
    return (
        0.7
        + 0.5 * np.cos(two_pi * (x + 2 * y - z) + 0.3)
        + 0.3 * np.sin(two_pi * (3 * x - y + 2 * z) + 1.1)
        + 0.2 * np.cos(two_pi * (-2 * x + 3 * y + 3 * z))
    )


def frac_grid(shape: tuple[int, int, int], shift=(0.0, 0.0, 0.0)) -> NDArray[np.float64]:
    """Fractional coordinates (3, nx, ny, nz) of a VASP grid, offset by ``shift``."""
    axes = [np.arange(n) / n + s for n, s in zip(shape, shift, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


# --------------------------------------------------------------------------------------------
# resample_fractional


@pytest.mark.parametrize(
    "shape",
    [(10, 12, 9), (20, 24, 18), (5, 6, 3), (7, 13, 8), (16, 8, 11), (4, 4, 4), (1, 2, 1)],
)
def test_resample_matches_scipy_resample_along_each_axis(shape):
    # White noise has content at every frequency, the Nyquist bins included.
    x = np.random.default_rng(1).standard_normal((2, 10, 12, 9))
    expected = x
    for axis, m in zip((1, 2, 3), shape, strict=True):
        expected = scipy.signal.resample(expected, m, axis=axis)
    out = grid.resample_fractional(x, shape)
    assert out.shape == (2, *shape)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(16, 16, 16), (9, 10, 11), (30, 25, 40), (7, 7, 7)])
def test_resample_reproduces_band_limited_data_exactly(shape):
    native = plane_waves(frac_grid((12, 14, 16)))
    out = grid.resample_fractional(native, shape)
    np.testing.assert_allclose(out, plane_waves(frac_grid(shape)), rtol=0, atol=1e-12)


def test_resample_commutes_with_fourier_shift():
    # A shift by a fraction of the cell that is no whole number of voxels on either grid.
    shift = (0.137, -0.291, 0.0443)
    native = plane_waves(frac_grid((12, 14, 16), shift))
    out = grid.resample_fractional(native, (21, 17, 30))
    np.testing.assert_allclose(out, plane_waves(frac_grid((21, 17, 30), shift)), atol=1e-12)


def test_upsampled_grid_passes_through_the_original_points():
    x = np.random.default_rng(2).standard_normal((6, 7, 8))
    out = grid.resample_fractional(x, (12, 21, 16))
    np.testing.assert_allclose(out[::2, ::3, ::2], x, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("native", "target", "roll"),
    [
        ((6, 7, 8), (12, 14, 16), (1, 3, 5)),  # doubled: s voxels -> 2 s voxels
        ((12, 9, 16), (6, 3, 8), (4, 6, 2)),  # halved/thirded where the roll divides
        ((10, 10, 10), (15, 25, 10), (2, 4, 7)),  # non-integer ratios, whole-voxel rolls
    ],
)
def test_resample_commutes_with_whole_voxel_rolls(native, target, roll):
    x = np.random.default_rng(3).standard_normal((2, *native))  # Nyquist content included
    out_roll = tuple(r * t // n for r, t, n in zip(roll, target, native, strict=True))
    assert all(r * t % n == 0 for r, t, n in zip(roll, target, native, strict=True))
    rolled_first = grid.resample_fractional(np.roll(x, roll, axis=(1, 2, 3)), target)
    rolled_after = np.roll(grid.resample_fractional(x, target), out_roll, axis=(1, 2, 3))
    np.testing.assert_allclose(rolled_first, rolled_after, rtol=0, atol=1e-12)


@pytest.mark.parametrize("target", [(40, 40, 40), (19, 23, 31), (64, 13, 50), (1, 1, 1)])
def test_resample_keeps_the_mean_of_random_smooth_fields(target):
    x = smooth_field(np.random.default_rng(4), (3, 24, 27, 32))
    out = grid.resample_fractional(x, target)
    assert out.shape == (3, *target)
    assert np.isrealobj(out)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), rtol=1e-12)


def test_resample_to_the_same_shape_is_a_copy_of_the_input():
    x = smooth_field(np.random.default_rng(5), (2, 8, 9, 10)).astype(np.float32)
    out = grid.resample_fractional(x, (8, 9, 10))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, x.astype(np.float64))
    out[0, 0, 0, 0] = 99.0  # a copy: the caller's array is untouched
    assert x[0, 0, 0, 0] != 99.0


@pytest.mark.parametrize(
    "shape", [(0, 4, 4), (4, 4), (4, -1, 4), (4.0, 4, 4), (4, 4, 4, 4), (True, 4, 4)]
)
def test_resample_rejects_bad_shapes(shape):
    with pytest.raises(MagnbError, match="shape"):
        grid.resample_fractional(np.ones((4, 4, 4)), shape)


def test_resample_rejects_arrays_without_a_grid():
    with pytest.raises(MagnbError, match="at least 3 axes"):
        grid.resample_fractional(np.ones((4, 4)), (2, 2, 2))


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("direction", ["up", "down"])
def test_resampling_real_chgcars_keeps_electrons_and_moments(name, direction):
    chg = load(name)
    _, electrons, up, down = FIXTURES[name]
    target = up if direction == "up" else down
    volume = chg.volume

    total = grid.resample_fractional(chg.total, target)
    assert total.shape == target
    np.testing.assert_allclose(cell_integral(total, volume), electrons, rtol=1e-3)
    np.testing.assert_allclose(cell_integral(total, volume), chg.integral(chg.total), rtol=1e-10)

    mag = chg.magnetization
    assert mag is not None
    out = grid.resample_fractional(mag, target)
    assert out.shape == mag.shape[:-3] + target
    before, after = chg.integral(mag), cell_integral(out, volume)
    # Moments near zero (Si, the non-collinear NiO components): compare on the scale of |m|.
    scale = np.asarray(chg.integral(np.abs(mag)))
    assert np.all(np.abs(after - before) <= 1e-3 * scale), (before, after, scale)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_resampling_a_real_chgcar_to_its_own_grid_is_identity(name):
    chg = load(name)
    np.testing.assert_allclose(
        grid.resample_fractional(chg.total, chg.grid_shape), chg.total, rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("name", ["fe_bcc", "nitric_oxide"])
def test_resampling_a_rolled_real_cell_gives_the_rolled_output(name):
    chg = load(name)
    doubled = tuple(2 * n for n in chg.grid_shape)
    mag = chg.magnetization
    rolled_first = grid.resample_fractional(np.roll(mag, (3, 5, 7), axis=(0, 1, 2)), doubled)
    rolled_after = np.roll(grid.resample_fractional(mag, doubled), (6, 10, 14), axis=(0, 1, 2))
    np.testing.assert_allclose(rolled_first, rolled_after, rtol=0, atol=1e-12 * abs(mag).max())


# --------------------------------------------------------------------------------------------
# resample_cube


def test_cube_equal_to_a_cubic_cell_with_the_same_grid_is_the_input():
    x = smooth_field(np.random.default_rng(6), (2, 20, 20, 20))
    lattice = np.eye(3) * 5.0
    for order in (1, 3, 5):
        out = grid.resample_cube(x, lattice, 5.0, 20, order=order)
        np.testing.assert_allclose(out, x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [13, 32, 48, 71])
def test_cube_equal_to_a_cubic_cell_keeps_the_integral_of_a_smooth_field(n):
    x = smooth_field(np.random.default_rng(7), (24, 24, 24))
    a = 4.2
    out = grid.resample_cube(x, np.eye(3) * a, a, n)
    assert out.shape == (n, n, n)
    np.testing.assert_allclose(out.mean() * a**3, x.mean() * a**3, rtol=1e-3)


@pytest.mark.parametrize("n", [40, 64, 72])
@pytest.mark.parametrize("up_sample", [1, 2])
def test_cube_equal_to_a_cubic_cell_keeps_the_integral_of_a_real_density(n, up_sample):
    # bcc Li's 48^3 grid holds a periodic density whatever the cell's shape: read it as cubic.
    chg = load("li_spin")
    a = 3.44
    for data in (chg.total, chg.magnetization):
        out = grid.resample_cube(data, np.eye(3) * a, a, n, up_sample=up_sample)
        scale = np.abs(data).mean() * a**3
        assert abs(out.mean() * a**3 - data.mean() * a**3) <= 1e-3 * scale


def test_cube_samples_the_density_at_the_documented_cartesian_points():
    # An oblique cell, a cube larger than the cell and off the origin, two channels.
    lattice = np.array([[3.1, 0.2, -0.1], [1.2, 2.9, 0.3], [-0.4, 0.8, 3.5]])
    inv = np.linalg.inv(lattice)
    data = np.stack(
        [plane_waves(frac_grid((30, 32, 36))), 2 - plane_waves(frac_grid((30, 32, 36)))]
    )
    side, n, origin = 5.5, 24, np.array([-0.7, 1.3, 2.2])
    out = grid.resample_cube(data, lattice, side, n, origin)
    assert out.shape == (2, n, n, n)

    h = side / n
    idx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"))  # (3, n, n, n)
    cart = origin[:, None, None, None] + h * idx
    frac = np.einsum("d...,da->a...", cart, inv)  # r = f @ lattice
    expected = plane_waves(frac)
    # cubic splines on this grid: ~3e-4 of the unit amplitude (trilinear would be ~5e-2)
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-3)
    np.testing.assert_allclose(out[1], 2 - expected, rtol=0, atol=1e-3)
    np.testing.assert_allclose(grid.cube_fractional_coords(lattice, side, n, origin), frac)


def test_cube_with_linear_order_matches_pyrho_get_data_in_cube():
    from pyrho.utils import get_sc_interp

    chg = load("fe_bcc")
    lattice = chg.structure.lattice.matrix
    side, n = 4.0, 20
    ours = grid.resample_cube(chg.total, lattice, side, n, order=1)
    # The core of pyrho's ChargeDensity.get_data_in_cube (trilinear on the padded grid).
    sc_mat = np.linalg.inv(lattice) @ (np.eye(3) * side)
    _, theirs = get_sc_interp(chg.total, sc_mat, [n, n, n])
    np.testing.assert_allclose(ours, theirs.reshape(n, n, n), rtol=1e-10, atol=1e-12)


def test_cube_voxel_size_is_fixed_across_lattices():
    # One physical density (a wave along x, wavelength 2 A) stored on two different cells with
    # different grid spacings gives the same cube: the wave sampled every side/n A along x.
    def density(lattice, shape):
        cart = np.einsum("a...,ad->d...", frac_grid(shape), lattice)
        return 1 + 0.5 * np.cos(np.pi * cart[0])

    side, n = 6.0, 30
    x = np.arange(n) * side / n
    expected = np.broadcast_to((1 + 0.5 * np.cos(np.pi * x))[:, None, None], (n, n, n))
    small = np.eye(3) * np.array([4.0, 3.0, 3.0])
    big = np.array([[6.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 2.0, 4.0]])
    a = grid.resample_cube(density(small, (24, 18, 18)), small, side, n)
    b = grid.resample_cube(density(big, (40, 30, 24)), big, side, n)
    np.testing.assert_allclose(a, expected, rtol=0, atol=1e-3)
    np.testing.assert_allclose(b, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lattice": np.zeros((3, 3))}, "singular"),
        ({"lattice": np.eye(2)}, "3 x 3"),
        ({"side": 0.0}, "side"),
        ({"side": -2.0}, "side"),
        ({"n": 0}, r"n \(voxels.*at least 1"),
        ({"n": 2.5}, r"n \(voxels.*integer"),
        ({"order": 7}, "order"),
        ({"up_sample": 0}, "up_sample"),
        ({"origin": np.zeros(2)}, "origin"),
    ],
)
def test_cube_rejects_bad_arguments(kwargs, match):
    args = {"lattice": np.eye(3) * 3, "side": 3.0, "n": 8, "origin": None} | kwargs
    extra = {k: args.pop(k) for k in ("order", "up_sample") if k in args}
    with pytest.raises(MagnbError, match=match):
        grid.resample_cube(np.ones((6, 6, 6)), **args, **extra)


# --------------------------------------------------------------------------------------------
# slab_window and crop_c


def layer_index_field(shape: tuple[int, int, int]) -> NDArray[np.float64]:
    """A field whose value is the plane index along c, so a crop shows which planes it took."""
    return np.broadcast_to(np.arange(shape[2], dtype=np.float64), shape).copy()


def test_window_is_centred_on_a_slab_in_the_middle_of_the_cell():
    atoms = np.array([[0.1, 0.2, 0.45], [0.6, 0.7, 0.55], [0.3, 0.3, 0.50]])
    start = grid.slab_window(atoms, nz=336, window=120)
    # slab from 151.2 to 184.8 planes, centre 168: planes 108 .. 227 hold it in the middle
    assert start in (108, 109)
    cropped = grid.crop_c(layer_index_field((4, 4, 336)), start, 120)
    assert cropped.shape == (4, 4, 120)
    assert cropped[0, 0, 0] <= 0.45 * 336 - 40 and cropped[0, 0, -1] >= 0.55 * 336 + 40


def test_window_and_crop_follow_a_slab_that_wraps_across_the_cell_boundary():
    atoms = np.array([[0, 0, 0.97], [0, 0, 0.02], [0, 0, 0.06], [0, 0, -0.01]])  # 0.97 .. 1.06
    nz, window = 100, 30
    start = grid.slab_window(atoms, nz, window, margin=1.0, c_length=20.0)
    assert start in (86, 87)  # centred on 101.5 (plane 1.5 of the next cell)
    data = layer_index_field((3, 2, nz))
    cropped = grid.crop_c(data, start, window)
    expected = np.concatenate([data[..., start:], data[..., : start + window - nz]], axis=-1)
    np.testing.assert_array_equal(cropped, expected)
    planes = cropped[0, 0]
    unwrapped = np.where(planes < 50, planes + nz, planes)
    assert np.all(np.diff(unwrapped) == 1)  # one contiguous block across the boundary
    assert unwrapped[0] <= 97 - 5 and unwrapped[-1] >= 106 + 5  # atoms plus 1 A = 5 planes


def test_window_is_found_for_atoms_only_near_zero():
    atoms = np.array([[0, 0, 0.0], [0, 0, 0.99]])
    start = grid.slab_window(atoms, nz=50, window=11)
    cropped = grid.crop_c(layer_index_field((1, 1, 50)), start, 11)[0, 0]
    assert 49 in cropped and 0 in cropped


def test_crop_keeps_leading_channel_axes_and_values():
    x = smooth_field(np.random.default_rng(8), (2, 5, 6, 40))
    out = grid.crop_c(x, 35, 10)
    np.testing.assert_array_equal(out, np.take(x, np.arange(35, 45) % 40, axis=-1))
    np.testing.assert_array_equal(grid.crop_c(x, 0, 40), x)


def test_window_raises_when_the_window_cannot_hold_the_slab():
    atoms = np.array([[0, 0, 0.95], [0, 0, 0.05]])  # 2 A thick on a 20 A axis, 0.2 A planes
    # 1 A of margin on each side: 4 A from plane 90 to plane 110 -> 21 planes
    assert grid.slab_window(atoms, 100, 21, margin=1.0, c_length=20.0) == 90
    with pytest.raises(MagnbError, match=r"cannot hold the slab.*needs 21 planes.*short by 1"):
        grid.slab_window(atoms, 100, 20, margin=1.0, c_length=20.0)
    with pytest.raises(MagnbError, match="short by 11"):
        grid.slab_window(atoms, 100, 10, margin=1.0, c_length=20.0)


def test_window_raises_for_a_real_molecule_that_does_not_fit():
    chg = load("nitric_oxide")  # N at 0.566 c, O at 0.256 c, c = 4 A on 64 planes
    frac = chg.structure.frac_coords
    c = chg.structure.lattice.c
    start = grid.slab_window(frac, 64, 56, margin=1.0, c_length=c)
    cropped = grid.crop_c(chg.total, start, 56)
    assert cropped.shape == (32, 48, 56)
    with pytest.raises(MagnbError, match="A along c.*1 A of margin"):
        grid.slab_window(frac, 64, 40, margin=1.0, c_length=c)


@pytest.mark.parametrize("window", [0, -3, 65])
def test_crop_and_window_reject_windows_outside_the_grid(window):
    with pytest.raises(MagnbError, match="window"):
        grid.crop_c(np.ones((2, 2, 64)), 0, window)
    with pytest.raises(MagnbError, match="window"):
        grid.slab_window(np.array([[0, 0, 0.5]]), 64, window)


def test_window_needs_c_length_for_a_margin_and_atoms():
    with pytest.raises(MagnbError, match="c_length"):
        grid.slab_window(np.array([[0, 0, 0.5]]), 64, 10, margin=2.0)
    with pytest.raises(MagnbError, match="natoms"):
        grid.slab_window(np.zeros((0, 3)), 64, 10)


# --------------------------------------------------------------------------------------------
# tile


def test_seed_style_two_by_two_tiling_of_a_cropped_slab():
    sample = smooth_field(np.random.default_rng(9), (60, 60, 120))
    out = grid.tile(sample, (2, 2, 1))
    assert out.shape == (120, 120, 120)
    for i in (0, 60):
        for j in (0, 60):
            np.testing.assert_array_equal(out[i : i + 60, j : j + 60, :], sample)
    np.testing.assert_allclose(out.mean(), sample.mean(), rtol=1e-12)  # same density


def test_tile_repeats_only_the_grid_axes():
    x = smooth_field(np.random.default_rng(10), (2, 4, 5, 6))
    out = grid.tile(x, (1, 3, 2))
    assert out.shape == (2, 4, 15, 12)
    np.testing.assert_array_equal(out[:, :, 10:15, 6:12], x)


@pytest.mark.parametrize(
    "reps", [(2, 2, 0), (0, 1, 1), (-1, 1, 1), (1.5, 1, 1), (2, 2), (True, 1, 1)]
)
def test_tile_rejects_bad_supercells(reps):
    with pytest.raises(MagnbError, match="supercell reps"):
        grid.tile(np.ones((3, 3, 3)), reps)
