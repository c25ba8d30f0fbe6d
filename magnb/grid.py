"""Periodic grids: Fourier resampling, fixed-voxel Cartesian cubes, vacuum cropping, supercells.

Every function here takes a density on a periodic grid whose **last three axes** are the lattice
axes a, b, c (leading axes, if any, are channels or samples and are treated independently) and
returns a new float64 array. Nothing here reads or writes files.

Grid convention (VASP's): point ``(i, j, k)`` of an ``(nx, ny, nz)`` grid sits at fractional
coordinates ``(i/nx, j/ny, k/nz)`` and stands for the voxel centred on it.

Units: magnb's densities are per volume (e/A^3, muB/A^3), not VASP's ``rho * V_cell``. Resampling,
cropping and tiling therefore keep the values as they are; no rescaling is needed when the number of
grid points changes. The integral over a cell is ``data.mean() * V_cell``, so an operation that
keeps the mean keeps the integral (the number of electrons, the moment).

- :func:`resample_fractional`: to a fixed number of points along each lattice vector, by zero-padding
  or truncating the Fourier series. Exact for band-limited data, keeps the mean to float precision,
  keeps real data real, commutes with translations.
- :func:`resample_cube`: to an axis-aligned Cartesian cube of fixed side (A) and voxel count, i.e. a
  fixed physical voxel size whatever the lattice (what mp-pyrho's ``get_data_in_cube`` does, with a
  periodic cubic spline instead of pyrho's trilinear interpolation).
- :func:`slab_window` and :func:`crop_c`: keep the planes along c that hold a slab and a margin of
  vacuum, across the cell boundary if the slab wraps.
- :func:`tile`: an integer supercell along a, b, c.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sp_fft
from scipy import ndimage

from magnb.errors import MagnbError

__all__ = [
    "crop_c",
    "cube_atoms",
    "cube_fractional_coords",
    "resample_cube",
    "resample_fractional",
    "slab_window",
    "tile",
]

# Slack (in grid planes) for atoms sitting exactly on a voxel boundary in slab_window.
_PLANE_TOL = 1e-6


# --------------------------------------------------------------------------------------------
# argument checks


def _as_grid(data: ArrayLike, name: str = "data") -> NDArray[np.float64]:
    """``data`` as a float64 array with at least three (grid) axes, none of them empty."""
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim < 3:
        raise MagnbError(f"{name} must have at least 3 axes (nx, ny, nz); got shape {arr.shape}")
    if 0 in arr.shape[-3:]:
        raise MagnbError(f"{name} has an empty grid axis: shape {arr.shape}")
    return arr


def _positive_int(value: object, name: str) -> int:
    """``value`` as an int >= 1; MagnbError for bools, non-integers and values below 1."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise MagnbError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise MagnbError(f"{name} must be at least 1, got {value}")
    return int(value)


def _triple(values: object, name: str) -> tuple[int, int, int]:
    """Three ints >= 1 (one per lattice axis)."""
    try:
        items = tuple(values)  # type: ignore[arg-type]
    except TypeError:
        raise MagnbError(f"{name} must be three integers (a, b, c), got {values!r}") from None
    if len(items) != 3:
        raise MagnbError(f"{name} must be three integers (a, b, c), got {len(items)}: {values!r}")
    a, b, c = (_positive_int(v, f"{name}[{i}]") for i, v in enumerate(items))
    return a, b, c


# --------------------------------------------------------------------------------------------
# Fourier resampling along lattice vectors


def _resample_axis(
    x: NDArray[np.float64], num: int, axis: int, workers: int | None
) -> NDArray[np.float64]:
    """Resample real periodic samples along one axis to ``num`` points through the Fourier series.

    Keeps the ``min(n, num)`` lowest frequencies. An unpaired (Nyquist) bin at ``m/2`` for even
    ``m = min(n, num)`` is split into the pair +-m/2 with half the amplitude each when up-sampling
    and the pair is folded into one bin when down-sampling, so that a real input gives a real
    output and the trigonometric interpolant is sampled consistently (as ``scipy.signal.resample``).
    """
    n = x.shape[axis]
    if num == n:
        return x
    spec = sp_fft.rfft(x, axis=axis, workers=workers)
    m = min(n, num)
    index: list[slice | int] = [slice(None)] * x.ndim
    index[axis] = slice(0, m // 2 + 1)
    spec = spec[tuple(index)]
    if m % 2 == 0:
        index[axis] = m // 2
        nyquist = tuple(index)
        if num < n:
            # X[-m/2] = conj(X[m/2]) for real lines: both land on the output's Nyquist bin.
            spec[nyquist] = 2.0 * spec[nyquist].real
        else:
            # The input's Nyquist bin becomes the bins +-n/2 of the longer series, half each.
            spec[nyquist] *= 0.5
    return sp_fft.irfft(spec * (num / n), n=num, axis=axis, workers=workers)


def resample_fractional(
    data: ArrayLike, shape: tuple[int, int, int], *, workers: int | None = None
) -> NDArray[np.float64]:
    """Resample a periodic density to ``shape`` points along the lattice vectors a, b, c.

    Zero-pads (finer grid) or truncates (coarser grid) the discrete Fourier series along each of the
    last three axes; leading axes (channels, samples) are carried along. The cell does not change,
    only the number of points on it, so a density (e/A^3, muB/A^3) keeps its values and units.

    Properties, each to float precision:

    - the mean is kept, hence the cell integral ``mean * V_cell`` (electrons, moment);
    - real input gives real output (even sizes: the Nyquist bin is split in two when up-sampling
      and the +-Nyquist pair folded into one when down-sampling);
    - ``shape`` equal to the input grid returns a copy of the input;
    - data that are band-limited below both grids' Nyquist frequencies (e.g. a sum of plane waves)
      are reproduced exactly: the output is the same function sampled on the new grid;
    - resampling commutes with translation: rolling the input by ``s`` voxels and resampling gives
      the resampled output rolled by ``s * M / N`` voxels whenever that is a whole number (e.g. a
      doubled grid), and by a Fourier shift of the same fraction of the cell otherwise.

    Down-sampling removes the frequencies the coarser grid cannot hold (an ideal low-pass filter):
    a sharp feature rings a little (Gibbs), and a positive density can dip slightly below zero.

    Args:
        data: float array ``(..., nx, ny, nz)``.
        shape: the output grid ``(mx, my, mz)``, each >= 1.
        workers: threads for ``scipy.fft`` (None: one; -1: all cores).

    Returns:
        float64 array ``(..., mx, my, mz)``.
    """
    arr = _as_grid(data)
    target = _triple(shape, "shape")
    nd = arr.ndim
    # Shrinking axes first keeps the intermediate arrays (and the FFTs) small.
    axes = sorted(range(3), key=lambda i: target[i] - arr.shape[nd - 3 + i])
    out = arr
    for i in axes:
        out = _resample_axis(out, target[i], nd - 3 + i, workers)
    return out.copy() if out is arr else out


# --------------------------------------------------------------------------------------------
# Cartesian cube with a fixed voxel size


def cube_fractional_coords(
    lattice: ArrayLike, side: float, n: int, origin: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Fractional coordinates ``(3, n, n, n)`` of the points of the cube :func:`resample_cube` makes.

    Point ``(i, j, k)`` is at Cartesian ``origin + (i, j, k) * side / n`` (A), expressed in the basis
    of ``lattice`` (rows are a, b, c) and not wrapped into [0, 1).
    """
    lat = np.asarray(lattice, dtype=np.float64)
    if lat.shape != (3, 3) or not np.isfinite(lat).all():
        raise MagnbError(f"lattice must be a finite 3 x 3 matrix (rows a, b, c), got {lat.shape}")
    volume = float(np.linalg.det(lat))
    if abs(volume) < 1e-8:
        raise MagnbError(f"lattice is singular (volume {volume:.3g} A^3)")
    if isinstance(side, bool) or not isinstance(side, Real) or not math.isfinite(side) or side <= 0:
        raise MagnbError(f"cube side must be a positive length in A, got {side!r}")
    n = _positive_int(n, "n (voxels along each cube edge)")
    org = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    if org.shape != (3,) or not np.isfinite(org).all():
        raise MagnbError(f"origin must be a Cartesian point (x, y, z) in A, got {origin!r}")
    inv = np.linalg.inv(lat)  # r = f @ lat  =>  f = r @ inv; row d of inv is the step along axis d
    steps = np.arange(n, dtype=np.float64) * (float(side) / n)
    frac = np.empty((3, n, n, n))
    for a in range(3):
        frac[a] = (
            org @ inv[:, a]
            + steps[:, None, None] * inv[0, a]
            + steps[None, :, None] * inv[1, a]
            + steps[None, None, :] * inv[2, a]
        )
    return frac


def cube_atoms(
    frac_coords: ArrayLike,
    lattice: ArrayLike,
    side: float,
    n: int,
    origin: ArrayLike | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Every periodic image of the atoms that falls inside the cube :func:`resample_cube` makes,
    in the cube's voxel coordinates (voxel ``(i, j, k)``'s centre is at ``(i, j, k)``; the cube
    spans -0.5 to n - 0.5 along each axis), and which atom each image is.

    >>> pos, atom = cube_atoms([[0.0, 0.0, 0.0]], np.eye(3) * 2.0, side=4.0, n=8)
    >>> pos.tolist(), atom.tolist()
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 4.0], [0.0, 4.0, 0.0], [0.0, 4.0, 4.0], [4.0, 0.0, 0.0], [4.0, 0.0, 4.0], [4.0, 4.0, 0.0], [4.0, 4.0, 4.0]], [0, 0, 0, 0, 0, 0, 0, 0])
    """
    lat = np.asarray(lattice, dtype=np.float64)
    frac = np.asarray(frac_coords, dtype=np.float64).reshape(-1, 3) % 1.0
    n = _positive_int(n, "n (voxels along each cube edge)")
    h = float(side) / n
    org = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    low, high = org - h / 2, org + side - h / 2  # the cube's faces
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1])
                        for z in (low[2], high[2])])  # fmt: skip
    f = corners @ np.linalg.inv(lat)
    ranges = [
        range(int(np.floor(f[:, a].min())) - 1, int(np.ceil(f[:, a].max())) + 1) for a in range(3)
    ]
    shifts = np.array([[i, j, k] for i in ranges[0] for j in ranges[1] for k in ranges[2]], float)
    images = (frac[None, :, :] + shifts[:, None, :]) @ lat  # (shift, atom, xyz) in A
    voxel = (images - org) / h
    inside = ((voxel >= -0.5 - 1e-9) & (voxel < n - 0.5 - 1e-9)).all(axis=-1)
    atom = np.broadcast_to(np.arange(len(frac)), inside.shape)[inside]
    positions = voxel[inside]
    order = np.lexsort(positions.T[::-1])
    return positions[order], atom[order].astype(np.int64)


def resample_cube(
    data: ArrayLike,
    lattice: ArrayLike,
    side: float,
    n: int,
    origin: ArrayLike | None = None,
    *,
    order: int = 3,
    up_sample: int = 1,
) -> NDArray[np.float64]:
    """Sample a periodic density on a Cartesian cube of ``side`` A with ``n`` voxels per edge.

    The voxel size ``side / n`` is the same whatever the lattice, so densities of different cells
    become comparable inputs for one convolutional network. The cube is aligned with the Cartesian
    x, y, z axes of ``lattice``; it may be larger or smaller than the cell (the density repeats
    periodically) and need not be commensurate with it.

    What the values are: voxel ``(i, j, k)`` is centred on the Cartesian point
    ``origin + (i, j, k) * side / n`` and holds the density there (e/A^3 or muB/A^3, unchanged
    units), exactly the convention of a VASP grid: the cube is the grid a cubic cell of edge ``side``
    would have, its voxels spanning ``origin - h/2`` to ``origin + side - h/2`` (``h = side / n``).
    Hence ``out.mean() * side**3`` is the integral over the cube, **not** over the cell, unless the
    cube tiles the cell (for a cubic cell of edge ``side`` it is the cell integral up to the
    interpolation error, and the cube is the input itself for ``n`` equal to the grid and ``origin``
    a lattice point).

    How: the grid is optionally Fourier up-sampled by ``up_sample`` (:func:`resample_fractional`),
    then interpolated at the cube's points with a periodic B-spline of ``order``
    (``scipy.ndimage.map_coordinates(mode='grid-wrap')``). Cubic splines (the default) come 10 to 250
    times closer to the exact Fourier interpolant than the trilinear interpolation of mp-pyrho's
    ``get_data_in_cube`` on real CHGCARs (largest error 7e-5 of the maximum for bcc Fe on 28^3,
    against 2e-2), in about the same time and a fifth of the memory; ``up_sample=2`` gains another
    factor 10 to 20 for twice the time and an 8 times larger intermediate grid. A cube much coarser than the native grid samples the density at points, so
    it aliases the detail between them: resample the cell with :func:`resample_fractional` to about
    the cube's voxel size first if that matters.

    The cube's orientation follows the Cartesian frame of ``lattice``, i.e. how the POSCAR was
    written. For a frame-independent cube (a along x, b in the xy plane, as pyrho's
    ``reorient_axis``) pass ``Lattice.from_parameters(*lat.abc, *lat.angles, vesta=True).matrix``:
    the data are indexed by fractional coordinates, so rotating the lattice does not change them.

    Args:
        data: float array ``(..., nx, ny, nz)`` on the cell ``lattice``.
        lattice: 3 x 3, rows are the lattice vectors a, b, c in A.
        side: the cube's edge in A.
        n: voxels along each edge.
        origin: Cartesian position (A) of voxel (0, 0, 0)'s centre; default the cell origin.
        order: spline order, 0 (nearest) to 5; 1 is trilinear.
        up_sample: integer Fourier up-sampling of the cell grid before interpolating.

    Returns:
        float64 array ``(..., n, n, n)`` indexed ``[..., x, y, z]``.
    """
    arr = _as_grid(data)
    if isinstance(order, bool) or not isinstance(order, Integral) or not 0 <= order <= 5:
        raise MagnbError(f"spline order must be an integer from 0 to 5, got {order!r}")
    up = _positive_int(up_sample, "up_sample")
    frac = cube_fractional_coords(lattice, side, n, origin)
    if up > 1:
        arr = resample_fractional(arr, tuple(up * s for s in arr.shape[-3:]))
    grid = np.array(arr.shape[-3:], dtype=np.float64)
    coords = np.mod(frac, 1.0, out=frac)
    coords *= grid[:, None, None, None]
    lead = arr.shape[:-3]
    out = np.empty(lead + coords.shape[1:], dtype=np.float64)
    for idx in np.ndindex(lead):
        ndimage.map_coordinates(
            arr[idx], coords, output=out[idx], order=int(order), mode="grid-wrap"
        )
    return out


# --------------------------------------------------------------------------------------------
# slabs: vacuum cropping along c


def _slab_span(z: NDArray[np.float64]) -> tuple[float, float]:
    """(start, extent) along c, in fractions of c, of atoms at fractional heights ``z``.

    The slab is the complement of the largest gap between consecutive atoms around the periodic
    cell, so a slab split across the cell boundary (atoms near 0 and near 1) is one slab.
    """
    zs = np.sort(np.mod(z, 1.0))
    gaps = np.diff(np.append(zs, zs[0] + 1.0))
    widest = int(np.argmax(gaps))
    start = float(zs[(widest + 1) % len(zs)])
    return start, 1.0 - float(gaps[widest])


def slab_window(
    positions_frac: ArrayLike,
    nz: int,
    window: int,
    *,
    margin: float = 0.0,
    c_length: float | None = None,
) -> int:
    """First plane (index along c) of a ``window``-plane crop that holds the slab, centred on it.

    The slab is found as the complement of the widest vacuum gap between atoms along c around the
    periodic cell, so slabs that wrap across the cell boundary are handled; the window is centred on
    the middle of the slab's span (not the atoms' mean) and may wrap as well: take it with
    :func:`crop_c`. A plane stands for a layer ``c/nz`` thick centred on it, so a window holds
    ``window * c/nz``; it must hold every atom and ``margin`` A of vacuum on both sides, measured
    along c.

    Args:
        positions_frac: fractional coordinates ``(natoms, 3)``; only the third column is used.
        nz: grid points along c.
        window: planes to keep, 1 to ``nz``.
        margin: vacuum to keep beyond the outermost atoms on each side, in A (needs ``c_length``).
        c_length: length of the lattice vector c in A (used for ``margin`` and in messages).

    Returns:
        start index in ``[0, nz)``; the window is planes ``start .. start + window - 1`` modulo nz.

    Raises:
        MagnbError: window outside 1..nz, no atoms, or the slab plus margins does not fit in the
            window (the message gives the planes needed and how many are missing).
    """
    nz = _positive_int(nz, "nz (grid points along c)")
    window = _positive_int(window, "window (planes along c)")
    if window > nz:
        raise MagnbError(
            f"the grid cannot hold the requested window: {window} planes along c asked, "
            f"the grid has {nz} (short by {window - nz})"
        )
    if isinstance(margin, bool) or not isinstance(margin, Real) or not margin >= 0:
        raise MagnbError(f"margin must be a length >= 0 in A, got {margin!r}")
    if c_length is not None and not (math.isfinite(c_length) and c_length > 0):
        raise MagnbError(f"c_length must be a positive length in A, got {c_length!r}")
    if margin > 0 and c_length is None:
        raise MagnbError("a margin in A needs c_length, the length of lattice vector c")
    pos = np.asarray(positions_frac, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) == 0:
        raise MagnbError(f"positions_frac must be (natoms >= 1, 3), got shape {pos.shape}")
    if not np.isfinite(pos).all():
        raise MagnbError("positions_frac contains NaN or infinite values")

    start, extent = _slab_span(pos[:, 2])
    m = 0.0 if c_length is None else float(margin) / float(c_length) * nz  # margin in planes
    lo = start * nz - m  # lowest point to keep, in plane units
    hi = (start + extent) * nz + m  # highest point to keep
    # Planes s .. s + window - 1 cover [s - 1/2, s + window - 1/2]: valid s lie in [s_min, s_max].
    s_max = math.floor(lo + 0.5 + _PLANE_TOL)
    s_min = math.ceil(hi + 0.5 - window - _PLANE_TOL)
    if s_min > s_max:
        need = window + (s_min - s_max)
        per_plane = "" if c_length is None else f" ({c_length / nz:.4g} A each)"
        span = (
            f"atoms span {extent * nz:.2f} planes"
            if c_length is None
            else f"atoms span {extent * c_length:.3f} A along c, plus {margin:g} A of margin on "
            f"each side"
        )
        raise MagnbError(
            f"the grid window cannot hold the slab: {span}, which needs {need} planes of "
            f"{nz}{per_plane} on this grid but the window holds {window} (short by {need - window})"
        )
    ideal = (lo + hi) / 2 - (window - 1) / 2
    best = min(max(round(ideal), s_min), s_max)
    return int(best % nz)


def crop_c(data: ArrayLike, start: int, window: int) -> NDArray[np.float64]:
    """Planes ``start .. start + window - 1`` (modulo nz) along c, the last axis.

    Wraps around the cell boundary (``np.take(mode='wrap')``), so a window from
    :func:`slab_window` that straddles c = 0 comes out as one contiguous slab. Values are kept
    (densities per volume); the cropped block is no longer periodic along c.

    Raises:
        MagnbError: ``window`` outside 1..nz or a non-integer ``start``.
    """
    arr = _as_grid(data)
    nz = arr.shape[-1]
    window = _positive_int(window, "window (planes along c)")
    if window > nz:
        raise MagnbError(
            f"the grid cannot hold the requested window: {window} planes along c asked, "
            f"the grid has {nz} (short by {window - nz})"
        )
    if isinstance(start, bool) or not isinstance(start, Integral):
        raise MagnbError(f"start must be an integer plane index, got {start!r}")
    return np.take(arr, np.arange(int(start), int(start) + window), axis=-1, mode="wrap")


# --------------------------------------------------------------------------------------------
# supercells


def tile(data: ArrayLike, reps: tuple[int, int, int]) -> NDArray[np.float64]:
    """The density of the ``reps[0] x reps[1] x reps[2]`` supercell (``np.tile`` on the last 3 axes).

    Values are kept (densities per volume); the supercell's integral is ``prod(reps)`` times the
    cell's. Leading axes are not repeated.

    Raises:
        MagnbError: a repetition that is not an integer >= 1 (e.g. a supercell of 0).
    """
    arr = _as_grid(data)
    r = _triple(reps, "supercell reps")
    return np.tile(arr, (1,) * (arr.ndim - 3) + r)
