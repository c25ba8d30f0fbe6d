"""Exact symmetry augmentation of cube samples: the crystal's own point-group operations that also
map the cube's voxel grid onto itself.

A cube sample (``representation: cube``) is the density sampled at the points ``i * h`` of a
Cartesian grid (:func:`magnb.grid.resample_cube`). The cube's grid is mapped onto itself by the 48
signed permutations of x, y, z about its centre ``c`` (90-degree rotations and axis reflections,
:data:`CUBE_OPS`). When such a matrix ``R`` is also the rotation of a symmetry operation
``x -> R x + t`` of the crystal, the transformed sample ``s'(p) = s(R^-1 (p - c) + c)`` is exactly
what scrape makes from the same crystal with the cube's origin moved to ``R c + t - c``
(:func:`equivalent_origin`): a sample of the same data set, obtained without interpolating
again. Any other orientation of a crystal is a different input, left to the user's choice of
lattice frame (see ``resample_cube``).

Which operations qualify is decided by spglib (through pymatgen's ``SpacegroupAnalyzer``) on the
structure, then checked on the densities themselves on their native grid: an operation that maps
the atoms but not the magnetization (an antiferromagnet's up site onto a down site) is dropped.
Only scalar channels transform as plain fields; a non-collinear run (mx, my, mz are an axial
vector) keeps the identity alone.

>>> op = CUBE_OPS.index(((0, -1, 0), (1, 0, 0), (0, 0, 1)))  # 90 degrees about z
>>> x = np.arange(8.0).reshape(2, 2, 2, 1)
>>> np.array_equal(apply_op(x, op)[..., 0], np.rot90(x[..., 0], 1, axes=(0, 1)))
True
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from magnb.errors import MagnbError

__all__ = [
    "CUBE_OPS",
    "apply_op",
    "apply_op_to_atoms",
    "crystal_cube_ops",
    "equivalent_origin",
    "op_matrix",
]


def _signed_permutations() -> list[tuple[tuple[int, ...], ...]]:
    ops = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3), dtype=int)
            for row, (col, sign) in enumerate(zip(perm, signs, strict=True)):
                m[row, col] = sign
            ops.append(tuple(tuple(int(v) for v in r) for r in m))
    identity = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    ops.remove(identity)
    return [identity, *ops]


#: the 48 Cartesian matrices that map a cube's voxel grid onto itself (about its centre); index 0
#: is the identity. A dataset stores operations as indices into this list.
CUBE_OPS: list[tuple[tuple[int, ...], ...]] = _signed_permutations()


def op_matrix(op: int) -> NDArray[np.int64]:
    """The 3 x 3 Cartesian matrix of cube operation ``op`` (an index into :data:`CUBE_OPS`)."""
    if not 0 <= int(op) < len(CUBE_OPS):
        raise MagnbError(f"cube operation {op} is not one of the 48 (0 to 47)")
    return np.array(CUBE_OPS[int(op)], dtype=np.int64)


def apply_op(sample: ArrayLike, op: int) -> NDArray:
    """Cube sample ``(n, n, n, C)`` under operation ``op`` about the cube's centre:
    ``out[p] = sample[R^-1 p]`` in voxel coordinates centred on the cube (exact: voxels are only
    permuted, so every channel's sum is kept). Scalar channels only (see the module docstring).
    """
    x = np.asarray(sample)
    if x.ndim != 4 or not (x.shape[0] == x.shape[1] == x.shape[2]):
        raise MagnbError(f"a cube sample is (n, n, n, channels), not {x.shape}")
    inverse = op_matrix(op).T  # R is orthogonal: R^-1 = R^T
    # (R^-1 u)_a = sign_a * u_perm[a]: flip the axes with sign -1, then move axis perm[a] to a
    perm = [int(np.flatnonzero(row)[0]) for row in inverse]
    signs = [int(row[p]) for row, p in zip(inverse, perm, strict=True)]
    flipped = np.flip(x, axis=[a for a in range(3) if signs[a] < 0]) if min(signs) < 0 else x
    axes = [perm.index(k) for k in range(3)]  # out[i] = flipped[j] with j_a = i_perm[a]
    return np.ascontiguousarray(np.transpose(flipped, [*axes, 3]))


def apply_op_to_atoms(positions: ArrayLike, op: int, n: int) -> NDArray[np.float64]:
    """Atom positions in a cube's voxel coordinates (:func:`magnb.grid.cube_atoms`) under the
    operation :func:`apply_op` applies to the density: ``R (u - c) + c``, ``c = (n - 1) / 2``."""
    u = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    centre = (n - 1) / 2
    return (u - centre) @ op_matrix(op).T.astype(np.float64) + centre


def equivalent_origin(
    op: int, translation: ArrayLike, side: float, n: int, origin: ArrayLike | None = None
) -> NDArray[np.float64]:
    """The cube origin (Cartesian, A) whose sample equals the sample at ``origin`` under ``op``,
    for a crystal symmetry ``x -> R x + translation`` (Cartesian): ``R c + t - c`` shifted by
    ``origin``'s own offset, where ``c`` is the cube's centre."""
    h = float(side) / n
    org = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    centre = org + (n - 1) / 2 * h
    rotation = op_matrix(op).astype(np.float64)
    return rotation @ centre + np.asarray(translation, dtype=np.float64) - centre + org


def crystal_operations(
    lattice: ArrayLike, species: Sequence[str], frac_coords: ArrayLike, symprec: float = 1e-3
) -> list[tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]]:
    """The crystal's space-group operations from spglib (pymatgen's ``SpacegroupAnalyzer``) as
    ``(W, w, R)``: fractional rotation and translation (``f -> W f + w``) and the Cartesian
    rotation ``R = L^T W L^-T`` (rows of ``L`` are a, b, c)."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    lat = np.asarray(lattice, dtype=np.float64)
    structure = Structure(Lattice(lat), list(species), np.asarray(frac_coords, dtype=np.float64))
    ops = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_operations(cartesian=False)
    lt = lat.T
    lt_inv = np.linalg.inv(lt)
    return [
        (op.rotation_matrix, op.translation_vector, lt @ op.rotation_matrix @ lt_inv) for op in ops
    ]


def _grid_image(shape: tuple[int, int, int], w_rot: NDArray, w_shift: NDArray) -> tuple | None:
    """Index arrays ``g'`` of ``f -> W f + w`` on a periodic grid of ``shape`` (``f = g / n``),
    or None when the operation does not map grid points onto grid points."""
    n = np.array(shape, dtype=np.float64)
    g = np.indices(shape, dtype=np.float64).reshape(3, -1)
    image = (w_rot @ (g / n[:, None]) + np.asarray(w_shift)[:, None]) * n[:, None]
    rounded = np.rint(image)
    if np.abs(image - rounded).max() > 1e-6:
        return None
    idx = np.mod(rounded.astype(np.int64), np.array(shape)[:, None])
    return tuple(idx)


def _invariant(fields: Iterable[np.ndarray], w_rot: NDArray, w_shift: NDArray, tol: float) -> bool:
    for field in fields:
        image = _grid_image(field.shape, w_rot, w_shift)
        if image is None:
            return False
        flat = field.reshape(-1)
        scale = max(float(np.abs(flat).max()), 1e-30)
        # rho(W f + w) must equal rho(f) at every grid point
        if float(np.abs(flat[np.ravel_multi_index(image, field.shape)] - flat).max()) > tol * scale:
            return False
    return True


def crystal_cube_ops(split: dict, symprec: float = 1e-3, tol: float = 1e-3) -> list[int]:
    """The cube operations (indices into :data:`CUBE_OPS`, identity first) that are symmetries
    of one calculation's densities: rotations of its space group (spglib) that are signed
    permutations in the Cartesian frame, kept only where the total density and the
    magnetization on the native grid are invariant to ``tol`` of their largest value.

    ``split`` is a split file's content (:func:`magnb.split.load_split`). A non-collinear run
    (mx, my, mz) gives ``[0]``: its magnetization is a vector, which a plain field transform
    would get wrong.
    """
    if "mx" in split:
        return [0]
    fields = [np.asarray(split[k]) for k in ("total", "magnetization") if k in split]
    found = {0}
    for w_rot, w_shift, rotation in crystal_operations(
        split["lattice"], [str(s) for s in split["species"]], split["frac_coords"], symprec
    ):
        rounded = np.rint(rotation)
        if np.abs(rotation - rounded).max() > 1e-4:
            continue  # not a signed permutation in this frame: moves the cube's grid
        key = tuple(tuple(int(v) for v in r) for r in rounded)
        if key not in CUBE_OPS or CUBE_OPS.index(key) in found:
            continue
        if _invariant(fields, w_rot, w_shift, tol):
            found.add(CUBE_OPS.index(key))
    return sorted(found)


def cartesian_translation(lattice: ArrayLike, w_shift: ArrayLike) -> NDArray[np.float64]:
    """A fractional translation in Cartesian A (rows of ``lattice`` are a, b, c)."""
    return np.asarray(w_shift, dtype=np.float64) @ np.asarray(lattice, dtype=np.float64)
