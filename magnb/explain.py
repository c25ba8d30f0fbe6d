"""What a trained model rests on, in physical terms.

- :func:`integrated_gradients`: attribution of one class probability to every input voxel, with
  its completeness residual (``sum(attribution) - (p(x) - p(baseline))``; integrated gradients
  make it zero up to the path integral's quadrature error).
- :func:`sample_structure`: where a dataset sample's atoms sit in its voxel grid, in the real
  (possibly sheared) cell of the sample, with the magnetic atoms' neighbour shells from
  pymatgen's neighbour list.
- :func:`region_labels`, :func:`atom_table`, :func:`pair_table`: voxels per atom (nearest atom,
  periodic images included), per neighbour pair (near the segment between them) and per region
  (A site, A-A shell 1, 2, 3, ligand, rest).
- :func:`occlusion_table`: the causal check: flip or remove one site's moment (the density
  within a sphere around it) and measure the change of the class probability; flip two
  neighbours for their interaction.
- :func:`shell_table`: the two side by side, per sample and per class.
- :func:`filter_profiles`, :func:`filter_pair_responses`: first-layer filters in angstrom, and
  their response to two unit moments at each neighbour-shell distance and direction.

Everything that touches the model uses ``keras.ops`` and the running backend's automatic
differentiation (TensorFlow, JAX or PyTorch); the geometry is numpy, scipy and pymatgen.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magnb.errors import MagnbError

__all__ = [
    "REGIONS",
    "SampleStructure",
    "atom_table",
    "class_gradient",
    "filter_pair_responses",
    "filter_profiles",
    "integrated_gradients",
    "kernel_smoothness",
    "occlusion_table",
    "onsite_template",
    "pair_responses",
    "pair_table",
    "region_labels",
    "sample_structure",
    "shell_table",
    "site_occluded",
]

#: the regions of the shell table, in order of precedence (a voxel belongs to the first that
#: holds it): the magnetic sites, the paths between magnetic neighbours of shells 1, 2 and 3,
#: the other atoms, and the rest of the cell
REGIONS = ("A site", "A-A shell 1", "A-A shell 2", "A-A shell 3", "ligand", "rest")


# --------------------------------------------------------------------------------------------
# gradients and integrated gradients


def _probability_fn(model: Any, target: int) -> Callable[[Any], Any]:
    """``inputs -> output[:, target]`` of ``model`` (its probability for a classifier: the models
    of magnb end in a softmax; the prediction for a one-output regressor)."""
    from keras import ops

    def fn(inputs: Any) -> Any:
        out = model(inputs, training=False)
        return ops.take(out, int(target), axis=-1)

    return fn


#: compiled gradient functions per model and target (tf.function / jax.jit), made once
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_gradient(model: Any, target: int) -> Callable[[np.ndarray], tuple[Any, Any]]:
    """``x -> (values, gradients)`` for class ``target``, compiled for the running backend
    (a TensorFlow graph, a jitted JAX function over the model's current weights; PyTorch
    eagerly). Compiling halves the time of a 120^3 seed_base gradient on a CPU."""
    import keras
    from keras import ops

    per_model = _COMPILED.setdefault(model, {})
    backend = keras.backend.backend()
    if backend == "jax":  # the weights are arguments: a jitted function must not close over them
        import jax

        key = (target, tuple(id(v) for v in model.variables))
        if key not in per_model:

            def total(x: Any, trainable: Any, other: Any) -> tuple[Any, Any]:
                out, _ = model.stateless_call(trainable, other, x, training=False)
                values = ops.take(out, int(target), axis=-1)
                return ops.sum(values), values

            per_model[key] = jax.jit(jax.value_and_grad(total, has_aux=True))
        fn = per_model[key]

        def run(x: np.ndarray) -> tuple[Any, Any]:
            trainable = [v.value for v in model.trainable_variables]
            other = [v.value for v in model.non_trainable_variables]
            (_, values), grad = fn(x, trainable, other)
            return values, grad

        return run
    if target in per_model:
        return per_model[target]
    prob = _probability_fn(model, target)
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def run(x: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                values = prob(x)
                total = ops.sum(values)
            return values, tape.gradient(total, x)

    elif backend == "torch":
        import torch

        def run(x: Any) -> tuple[Any, Any]:
            xt = torch.tensor(np.asarray(x), requires_grad=True)
            values = prob(xt)
            values.sum().backward()
            return values.detach().cpu().numpy(), xt.grad.detach().cpu().numpy()

    else:
        raise MagnbError(f"gradients are not implemented for the {backend!r} backend")
    per_model[target] = run
    return run


def class_gradient(model: Any, x: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's output ``target`` (a class probability) for a batch ``x`` and its gradient
    with respect to ``x``, by the running backend's automatic differentiation (TensorFlow's
    GradientTape, ``jax.grad``, PyTorch's autograd), compiled once per model and target.

    Returns ``(values (batch,), gradients like x)``.
    """
    values, grad = _compiled_gradient(model, target)(np.asarray(x, dtype="float32"))
    return np.asarray(values), np.asarray(grad)


def integrated_gradients(
    model: Any,
    x: np.ndarray,
    target: int,
    baseline: np.ndarray | None = None,
    steps: int = 16,
    batch_size: int = 8,
) -> tuple[np.ndarray, float]:
    """Integrated gradients of the probability of class ``target`` for one sample ``x``
    (X, Y, Z, C), from ``baseline`` (default: zeros, the input of a cell with no magnetization
    when the dataset is not offset-normalized).

    ``attr = (x - b) * sum_k w_k grad p(b + t_k (x - b))`` over the ``steps`` Gauss-Legendre
    nodes ``t_k`` and weights ``w_k`` of [0, 1] (exact for a path integrand that is a polynomial
    of degree ``2 steps - 1``; far fewer steps than the midpoint rule for the same error).
    Completeness: ``attr.sum() = p(x) - p(b)`` up to the quadrature error, which is returned as
    the residual ``attr.sum() - (p(x) - p(b))`` (in probability units: the integrated quantity
    is the target class's softmax probability, not its logit).

    Returns ``(attribution like x, residual)``.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise MagnbError(f"integrated_gradients takes one sample (X, Y, Z, C), not shape {x.shape}")
    if steps < 1:
        raise MagnbError(f"steps must be >= 1, not {steps}")
    b = np.zeros_like(x) if baseline is None else np.asarray(baseline, dtype=np.float32)
    if b.shape != x.shape:
        raise MagnbError(f"baseline shape {b.shape} differs from the sample's {x.shape}")
    delta = x - b
    total = np.zeros(x.shape, dtype=np.float64)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    ts, ws = (nodes + 1) / 2, weights / 2
    for start in range(0, steps, batch_size):
        t = ts[start : start + batch_size].astype(np.float32)
        path = b[None] + t[:, None, None, None, None] * delta[None]
        _, grad = class_gradient(model, path, target)
        w = ws[start : start + batch_size]
        total += np.tensordot(w, grad.astype(np.float64), axes=(0, 0))
    attr = delta * total
    ends, _ = class_gradient(model, np.stack([x, b]), target)
    residual = float(attr.sum() - (float(ends[0]) - float(ends[1])))
    return attr.astype(np.float32), residual


# --------------------------------------------------------------------------------------------
# a sample's structure in its voxel grid


def magnetic_species(symbol: str) -> bool:
    """True for the species whose moments magnb's shells are about: transition metals,
    lanthanides and actinides (pymatgen's element classes)."""
    from pymatgen.core import Element

    try:
        el = Element(symbol)
    except ValueError:
        return False
    return bool(el.is_transition_metal or el.is_lanthanoid or el.is_actinoid)


@dataclass(frozen=True)
class SampleStructure:
    """The atoms of one sample in its own cell and grid.

    ``cell`` holds the sample's cell vectors as rows (A): for a fractional-grid sample the cell
    the grid spans (the crystal's a and b times the supercell, c cut to the slab window), for a
    cube the cube's edges. Voxel ``(i, j, k)`` sits at fractional ``(i/nx, j/ny, k/nz)`` of it,
    so Cartesian ``frac @ cell``; ``voxel_size`` is the length of one voxel step along each
    cell vector. ``shells`` are the magnetic-magnetic neighbour distances (A) of the crystal,
    first, second, third..., from pymatgen's neighbour list of the whole crystal.
    """

    frac: np.ndarray  #: (n, 3) fractional coordinates of the atoms in the sample cell
    species: list[str]
    magnetic: np.ndarray  #: (n,) bool
    cell: np.ndarray  #: (3, 3) rows: the sample's cell vectors (A)
    shape: tuple[int, int, int]
    periodic: tuple[bool, bool, bool]
    shells: tuple[float, ...]  #: magnetic-magnetic neighbour shell distances (A)

    @property
    def voxel_size(self) -> np.ndarray:
        return np.linalg.norm(self.cell, axis=1) / np.asarray(self.shape)

    @property
    def cartesian(self) -> np.ndarray:
        return self.frac @ self.cell

    def voxel_cartesian(self) -> np.ndarray:
        """(nx*ny*nz, 3) Cartesian positions of the voxels in C order."""
        axes = [np.arange(n) / n for n in self.shape]
        g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        return g @ self.cell


def neighbour_shells(
    lattice: np.ndarray,
    species: Sequence[str],
    frac: np.ndarray,
    n_shells: int = 3,
    tolerance: float = 0.1,
    cutoff: float = 12.0,
) -> tuple[float, ...]:
    """The first ``n_shells`` magnetic-magnetic neighbour distances (A) of a crystal: pymatgen's
    ``Structure.get_neighbor_list`` within ``cutoff`` between magnetic sites, distances sorted
    and grouped into one shell while each is within ``tolerance`` A of the shell's first."""
    from pymatgen.core import Lattice, Structure

    mag = [i for i, s in enumerate(species) if magnetic_species(s)]
    if not mag:
        return ()
    structure = Structure(Lattice(lattice), list(species), frac)
    centre, neighbour, _, dist = structure.get_neighbor_list(
        cutoff, sites=[structure[i] for i in mag]
    )
    is_mag = np.isin(neighbour, mag)
    d = np.sort(dist[is_mag & (dist > 1e-3)])
    shells: list[float] = []
    for value in d:
        if not shells or value - shells[-1] > tolerance:
            if len(shells) == n_shells:
                break
            shells.append(float(value))
    del centre
    return tuple(shells)


def sample_structure(dataset_dir: str | Path, calc_id: str) -> SampleStructure:
    """The structure of one scraped sample in its voxel grid: atoms and voxel vectors from
    :func:`magnb.viz.sample_geometry` (the sample cell is its voxel vectors times the grid),
    neighbour shells from the whole crystal in the split file."""
    from magnb.split import load_split
    from magnb.store import read_table, split_file_path
    from magnb.viz import sample_geometry

    dataset_dir = Path(dataset_dir)
    geometry = sample_geometry(dataset_dir, calc_id)
    row = read_table(dataset_dir).set_index("calc_id").loc[calc_id]
    split = load_split(split_file_path(dataset_dir, row["split_file"]))
    lattice = np.asarray(split["lattice"], dtype=float)
    shape = tuple(int(n) for n in geometry.shape)
    # one definition of the cell for the pictures and the numbers
    cell = np.asarray(geometry.vectors, dtype=float) * np.asarray(shape, dtype=float)[:, None]
    frac = np.asarray(geometry.positions, dtype=float) / np.asarray(shape)
    shells = neighbour_shells(lattice, split["species"], np.asarray(split["frac_coords"]))
    return SampleStructure(
        frac=frac,
        species=list(geometry.species),
        magnetic=np.array([magnetic_species(s) for s in geometry.species], dtype=bool),
        cell=cell,
        shape=shape,  # type: ignore[arg-type]
        periodic=tuple(bool(p) for p in geometry.periodic),  # type: ignore[arg-type]
        shells=shells,
    )


def _images(periodic: Sequence[bool], reach: int | Sequence[int] = 1) -> np.ndarray:
    """Integer cell translations over the periodic axes, (m, 3), ``reach`` per axis."""
    reach = np.broadcast_to(np.asarray(reach, dtype=int), 3)
    ranges = [range(-r, r + 1) if p else range(1) for p, r in zip(periodic, reach, strict=True)]
    return np.array(np.meshgrid(*ranges, indexing="ij")).reshape(3, -1).T


def _reach(cell: np.ndarray, length: float | None = None) -> np.ndarray:
    """How many cell translations per axis hold every vector of up to ``length`` A (default:
    the cell's longest body diagonal, enough for the shortest image of any difference of two
    points in the cell): a vector of length L has fractional components up to L |b_k| (b the
    reciprocal vectors), so ``ceil(L |b_k|) + 1`` (the +1 for points anywhere in the cell)."""
    if length is None:
        corners = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]]) @ cell
        length = float(np.linalg.norm(corners, axis=1).max())
    recip = np.linalg.norm(np.linalg.inv(cell).T, axis=1)
    return np.ceil(length * recip - 1e-9).astype(int) + 1


def voxels_near_segment(
    structure: SampleStructure, start: np.ndarray, end: np.ndarray, radius: float
) -> np.ndarray:
    """Flat (C-order) indices of the voxels within ``radius`` A of the segment from ``start`` to
    ``end`` (fractional coordinates of the sample cell, unwrapped: ``end`` may lie in a
    neighbouring cell), periodic images included along the periodic axes; a point when
    ``start == end``. Voxels beyond the edge of a non-periodic axis do not exist."""
    shape = np.asarray(structure.shape)
    cell = structure.cell
    start, end = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    reach = radius * np.linalg.norm(np.linalg.inv(cell).T, axis=1)  # a sphere's frac extent
    lo = np.ceil((np.minimum(start, end) - reach) * shape - 1e-9).astype(int)
    hi = np.floor((np.maximum(start, end) + reach) * shape + 1e-9).astype(int)
    idx = np.stack(
        np.meshgrid(*(np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)), indexing="ij"),
        axis=-1,
    ).reshape(-1, 3)
    if len(idx) == 0:
        return np.zeros(0, dtype=np.int64)
    p = (idx / shape) @ cell
    a, b = start @ cell, end @ cell
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-30), 0.0, 1.0) if ab.any() else 0.0
    near = np.linalg.norm(p - (a + np.multiply.outer(t, ab) if ab.any() else a), axis=1) <= radius
    idx = idx[near]
    for k in range(3):
        if structure.periodic[k]:
            idx[:, k] %= shape[k]
    inside = np.all((idx >= 0) & (idx < shape), axis=1)
    return np.unique(np.ravel_multi_index(idx[inside].T, tuple(shape)))


def nearest_atom(structure: SampleStructure, distance: bool = False) -> Any:
    """For each voxel (C order), the index of the nearest atom, periodic images included along
    the periodic axes (minimum-image distance in the real cell, by a k-d tree over the atoms and
    enough of their images for any cell shape, :func:`_reach`). With ``distance``, also that
    distance (A): ``(owner, distance)``."""
    from scipy.spatial import cKDTree

    if len(structure.frac) == 0:
        raise MagnbError("the sample holds no atoms")
    images = _images(structure.periodic, _reach(structure.cell))
    frac = np.where(structure.periodic, structure.frac % 1.0, structure.frac)
    points = (frac[None, :, :] + images[:, None, :]).reshape(-1, 3) @ structure.cell
    owner = np.tile(np.arange(len(structure.frac)), len(images))
    dist, nearest = cKDTree(points).query(structure.voxel_cartesian(), workers=-1)
    return (owner[nearest], dist) if distance else owner[nearest]


@dataclass(frozen=True)
class Pair:
    """Two magnetic atoms of a sample at a neighbour-shell distance."""

    i: int
    j: int
    image: tuple[int, int, int]  #: cell translation of j
    shell: int  #: 1, 2, 3
    distance: float  #: A


def magnetic_pairs(structure: SampleStructure, tolerance: float = 0.1) -> list[Pair]:
    """Every pair of magnetic atoms of the sample whose distance (through any periodic image,
    within the sample cell's neighbouring images) is one of the crystal's neighbour shells,
    each unordered pair and image once."""
    mag = np.flatnonzero(structure.magnetic)
    pairs: list[Pair] = []
    if not structure.shells:
        return pairs
    images = _images(structure.periodic, _reach(structure.cell, max(structure.shells) + 0.5))
    shells = np.asarray(structure.shells)
    for a in mag:
        for b in mag:
            if b < a:
                continue
            vec = (structure.frac[b][None] + images - structure.frac[a][None]) @ structure.cell
            dist = np.linalg.norm(vec, axis=1)
            for img, d in zip(images, dist, strict=True):
                if d < 1e-6:
                    continue
                if a == b and tuple(-img) < tuple(img):  # the same pair seen from its image
                    continue
                hit = np.flatnonzero(np.abs(shells - d) <= tolerance)
                if len(hit):
                    pairs.append(Pair(int(a), int(b), tuple(int(v) for v in img), int(hit[0]) + 1,
                                      float(d)))  # fmt: skip
    return pairs


def region_labels(
    structure: SampleStructure, site_radius: float = 1.0, path_radius: float = 1.0
) -> np.ndarray:
    """The region (an index into :data:`REGIONS`) of every voxel, shaped like the grid.

    In order of precedence: ``A site``, voxels within ``site_radius`` A of a magnetic atom;
    ``A-A shell s``, voxels within ``path_radius`` A of the segment between two magnetic atoms
    of neighbour shell ``s`` (the lowest shell where paths cross); ``ligand``, the rest of the
    voxels whose nearest atom is not magnetic and lies within ``site_radius`` + 1 A; ``rest``,
    everything else (vacuum, interstitial).
    """
    n = int(np.prod(structure.shape))
    labels = np.full(n, len(REGIONS) - 1, dtype=np.int8)
    owner, dist = nearest_atom(structure, distance=True)
    ligand = ~structure.magnetic[owner] & (dist <= site_radius + 1.0)
    labels[ligand] = REGIONS.index("ligand")
    for pair in sorted(magnetic_pairs(structure), key=lambda p: -p.shell):
        start = structure.frac[pair.i]
        end = structure.frac[pair.j] + np.asarray(pair.image)
        labels[voxels_near_segment(structure, start, end, path_radius)] = pair.shell
    for i in np.flatnonzero(structure.magnetic):
        p = structure.frac[i]
        labels[voxels_near_segment(structure, p, p, site_radius)] = 0
    return labels.reshape(structure.shape)


def _minimum_image(structure: SampleStructure, vectors: np.ndarray) -> np.ndarray:
    """Cartesian difference vectors (of points in the cell) reduced to their shortest periodic
    image."""
    images = _images(structure.periodic, _reach(structure.cell)) @ structure.cell
    best = vectors.copy()
    best_norm = np.linalg.norm(vectors, axis=1)
    for shift in images:
        cand = vectors + shift
        norm = np.linalg.norm(cand, axis=1)
        better = norm < best_norm
        best[better], best_norm[better] = cand[better], norm[better]
    return best


def atom_table(
    structure: SampleStructure, attribution: np.ndarray, owner: np.ndarray | None = None
) -> pd.DataFrame:
    """Attribution summed over the voxels nearest each atom (all channels), one row per atom:
    index, species, magnetic, position (A), attribution, share of the total absolute.
    ``owner`` is :func:`nearest_atom` of the structure, when already at hand."""
    a = np.asarray(attribution, dtype=np.float64)
    per_voxel = a.reshape(-1, a.shape[-1]).sum(axis=1) if a.ndim == 4 else a.ravel()
    owner = nearest_atom(structure) if owner is None else np.asarray(owner).ravel()
    n = len(structure.frac)
    sums = np.bincount(owner, weights=per_voxel, minlength=n)
    absum = np.bincount(owner, weights=np.abs(per_voxel), minlength=n)
    cart = structure.cartesian
    return pd.DataFrame(
        {
            "atom": np.arange(n),
            "species": structure.species,
            "magnetic": structure.magnetic,
            "x": cart[:, 0], "y": cart[:, 1], "z": cart[:, 2],
            "attribution": sums,
            "abs_share": absum / max(np.abs(per_voxel).sum(), 1e-30),
        }
    )  # fmt: skip


def pair_table(
    structure: SampleStructure, attribution: np.ndarray, radius: float = 1.0
) -> pd.DataFrame:
    """Attribution summed over the voxels within ``radius`` A of each magnetic neighbour pair's
    segment (regions of different pairs overlap), one row per pair."""
    a = np.asarray(attribution, dtype=np.float64)
    per_voxel = a.reshape(-1, a.shape[-1]).sum(axis=1) if a.ndim == 4 else a.ravel()
    rows = []
    for pair in magnetic_pairs(structure):
        end = structure.frac[pair.j] + np.asarray(pair.image)
        idx = voxels_near_segment(structure, structure.frac[pair.i], end, radius)
        rows.append({"i": pair.i, "j": pair.j, "shell": pair.shell, "distance": pair.distance,
                     "attribution": per_voxel[idx].sum(), "voxels": len(idx)})  # fmt: skip
    return pd.DataFrame(rows, columns=["i", "j", "shell", "distance", "attribution", "voxels"])


# --------------------------------------------------------------------------------------------
# occlusion: flip or remove a site's moment


def _flip_map(channels: Sequence[str], mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function on raw channel values (..., C) that flips (``m -> -m``) or removes
    (``m -> 0``) the magnetization, keeping the total density."""
    ch = list(channels)
    idx = {c: ch.index(c) for c in ch}
    if mode not in ("flip", "zero"):
        raise MagnbError(f"occlusion mode must be 'flip' or 'zero', not {mode!r}")
    if mode == "zero" and ("up" in idx) != ("down" in idx) and "total" not in idx:
        raise MagnbError("removing the moment from an up or down channel needs both, or total")

    def apply(v: np.ndarray) -> np.ndarray:
        out = v.copy()
        for name in ("m", "mx", "my", "mz"):
            if name in idx:
                out[..., idx[name]] = -v[..., idx[name]] if mode == "flip" else 0.0
        for a, b in (("m+", "m-"), ("up", "down")):
            if a in idx and b in idx and mode == "flip":
                out[..., idx[a]], out[..., idx[b]] = v[..., idx[b]], v[..., idx[a]]
        if mode == "zero":
            for name in ("m+", "m-", "|m|"):
                if name in idx:
                    out[..., idx[name]] = 0.0
            if "up" in idx or "down" in idx:
                total = (
                    v[..., idx["up"]] + v[..., idx["down"]]
                    if "up" in idx and "down" in idx
                    else v[..., idx["total"]]
                )
                for name in ("up", "down"):
                    if name in idx:
                        out[..., idx[name]] = 0.5 * total
        return out

    return apply


@dataclass(frozen=True)
class InputSpace:
    """How a dataset's stored samples map to the model's input: channel names and the
    normalization ``x = (raw - offset) / scale`` per channel."""

    channels: tuple[str, ...]
    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, dataset_dir: str | Path) -> InputSpace:
        import h5py

        with h5py.File(Path(dataset_dir) / "dataset.h5", "r") as f:
            return cls(
                channels=tuple(json.loads(f.attrs["channels"])),
                offset=np.array(json.loads(f.attrs["norm_offset"]), dtype=np.float32),
                scale=np.array(json.loads(f.attrs["norm_scale"]), dtype=np.float32),
            )

    def baseline(self, shape: tuple[int, ...]) -> np.ndarray:
        """The model input of a cell with no density at all (raw zeros)."""
        return np.broadcast_to(-self.offset / self.scale, shape).astype(np.float32)


def site_occluded(
    x: np.ndarray,
    structure: SampleStructure,
    sites: Sequence[int],
    space: InputSpace,
    radius: float = 1.0,
    mode: str = "flip",
) -> np.ndarray:
    """A copy of sample ``x`` (normalized, (X, Y, Z, C)) with the magnetization within
    ``radius`` A of each of ``sites`` (periodic images included) flipped or removed."""
    apply = _flip_map(space.channels, mode)
    flat = np.asarray(x, dtype=np.float32).reshape(-1, x.shape[-1]).copy()
    idx = np.unique(
        np.concatenate(
            [voxels_near_segment(structure, structure.frac[s], structure.frac[s], radius)
             for s in sites] or [np.zeros(0, dtype=np.int64)]
        )
    )  # fmt: skip
    raw = flat[idx] * space.scale + space.offset
    flat[idx] = (apply(raw) - space.offset) / space.scale
    return flat.reshape(x.shape)


def _predict(model: Any, xs: np.ndarray, target: int, batch_size: int = 8) -> np.ndarray:
    """The probability of ``target`` for a batch, by Keras' compiled predict step."""
    out = []
    for start in range(0, len(xs), batch_size):
        out.append(np.asarray(model.predict_on_batch(xs[start : start + batch_size]))[:, target])
    return np.concatenate(out) if out else np.zeros(0)


def occlusion_table(
    model: Any,
    x: np.ndarray,
    structure: SampleStructure,
    target: int,
    space: InputSpace,
    radius: float = 1.0,
    mode: str = "flip",
    ligands: bool = True,
    pairs: bool = True,
) -> pd.DataFrame:
    """The causal check for one sample: the change of the probability of class ``target``
    when one site's moment is flipped (``mode="flip"``) or removed (``"zero"``) within
    ``radius`` A, for every magnetic site (and, with ``ligands``, every other atom, its
    moment removed); and (with ``pairs``) for every pair of distinct magnetic neighbours (shells 1-3) the
    interaction ``p(flip i, j) - p(flip i) - p(flip j) + p(x)``: what flipping the two together
    does beyond flipping each alone (for a model linear in the products ``s_i s_j`` of the site
    moments' signs, 4 J_ij; zero for a model that reads the two sites independently). A pair of
    a site with its own periodic image, and a pair of atoms that are neighbours through two
    shells at once (by different images, in a small cell), cannot be flipped apart and are left
    out.

    One row per site or pair: ``kind`` (site, ligand, pair), ``region`` (A site, ligand,
    A-A shell s), atoms ``i``, ``j``, ``effect``.
    """
    p0 = float(_predict(model, x[None], target)[0])
    mag = [int(i) for i in np.flatnonzero(structure.magnetic)]
    others = [int(i) for i in np.flatnonzero(~structure.magnetic)] if ligands else []
    shells_of: dict[tuple[int, int], set[int]] = {}
    for p in magnetic_pairs(structure):
        if p.i != p.j:
            shells_of.setdefault((min(p.i, p.j), max(p.i, p.j)), set()).add(p.shell)
    # flipping two sites flips every image of each: a pair joined through two shells (in a
    # small cell) cannot be told apart by flips and is left out
    pair_shell = {key: min(s) for key, s in shells_of.items() if len(s) == 1} if pairs else {}
    single = np.stack([site_occluded(x, structure, [i], space, radius, mode) for i in mag]
                      or [x])  # fmt: skip
    p_site = dict(zip(mag, _predict(model, single, target), strict=False))
    rows: list[dict[str, Any]] = [
        {"kind": "site", "region": "A site", "i": i, "j": -1, "effect": p_site[i] - p0} for i in mag
    ]
    if others:
        removed = np.stack([site_occluded(x, structure, [i], space, radius, "zero")
                            for i in others])  # fmt: skip
        for i, p in zip(others, _predict(model, removed, target), strict=True):
            rows.append({"kind": "ligand", "region": "ligand", "i": i, "j": -1, "effect": p - p0})
    if pair_shell:
        keys = sorted(pair_shell)
        both = np.stack([site_occluded(x, structure, [i, j], space, radius, mode)
                         for i, j in keys])  # fmt: skip
        for (i, j), p in zip(keys, _predict(model, both, target), strict=True):
            rows.append({"kind": "pair", "region": f"A-A shell {pair_shell[(i, j)]}", "i": i,
                         "j": j, "effect": p - p_site[i] - p_site[j] + p0})  # fmt: skip
    table = pd.DataFrame(rows, columns=["kind", "region", "i", "j", "effect"])
    table.attrs["probability"] = p0
    return table


# --------------------------------------------------------------------------------------------
# the shell table


def region_summary(
    attribution: np.ndarray, labels: np.ndarray, occlusion: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per region of :data:`REGIONS`: the attribution summed there (``ig``), its share
    of the total absolute attribution (``ig_share``, summing to 1 over the regions), the
    voxels; and from ``occlusion`` (:func:`occlusion_table`) the mean absolute effect per site
    or pair there (``occlusion``) and, over the A-A shells, each shell's share of the summed
    absolute pair interactions (``occlusion_share``)."""
    a = np.asarray(attribution, dtype=np.float64)
    per_voxel = a.reshape(-1, a.shape[-1]).sum(axis=1) if a.ndim == 4 else a.ravel()
    lab = np.asarray(labels).ravel()
    k = len(REGIONS)
    ig = np.bincount(lab, weights=per_voxel, minlength=k)
    absum = np.bincount(lab, weights=np.abs(per_voxel), minlength=k)
    table = pd.DataFrame(
        {
            "region": REGIONS,
            "voxels": np.bincount(lab, minlength=k),
            "ig": ig,
            "ig_share": absum / max(absum.sum(), 1e-30),
        }
    )
    if occlusion is not None:
        eff = occlusion.assign(abs_effect=occlusion["effect"].abs())
        mean = eff.groupby("region")["abs_effect"].mean()
        total = eff.groupby("region")["abs_effect"].sum()
        shells = [r for r in REGIONS if r.startswith("A-A")]
        pair_total = sum(float(total.get(r, 0.0)) for r in shells)
        table["occlusion"] = [float(mean[r]) if r in mean else np.nan for r in REGIONS]
        table["occlusion_share"] = [
            float(total.get(r, 0.0)) / pair_total if r in shells and pair_total > 0 else np.nan
            for r in REGIONS
        ]
    return table


def _open_model(run_or_model: Any) -> tuple[Any, Any]:
    """(model, TrainConfig or None) from a run folder or a model."""
    if isinstance(run_or_model, str | Path):
        import keras

        import magnb.layers  # noqa: F401  (registers PeriodicConv3D)
        from magnb.config import load_train_config

        run_dir = Path(run_or_model)
        for name in ("config.yaml", "model.keras"):
            if not (run_dir / name).is_file():
                raise MagnbError(f"not a finished run: no {name}", run_dir)
        model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
        return model, load_train_config(run_dir / "config.yaml")
    return run_or_model, None


def shell_table(
    run_or_model: Any,
    dataset_dir: str | Path | None = None,
    calc_ids: Sequence[str] | None = None,
    split: str = "test",
    label: str | None = None,
    steps: int = 16,
    site_radius: float = 1.0,
    path_radius: float = 1.0,
    occlusion: bool = True,
    mode: str = "flip",
    progress: bool = False,
) -> pd.DataFrame:
    """How much of each decision rests on the magnetic sites, the A-A neighbour shells 1-3,
    the ligands and the rest, per sample: integrated gradients of the predicted class's
    probability from a cell with no density (:func:`integrated_gradients`, completeness residual
    in ``residual``) summed per region (:func:`region_labels`), beside the occlusion effects
    (:func:`occlusion_table`).

    ``run_or_model``: a run folder (its model, dataset and label) or a Keras model (then give
    ``dataset_dir``; ``label`` names the true class column, default ``order_pattern``).
    ``calc_ids`` default to the samples of ``split``. One row per sample and region: calc_id,
    true and predicted class, probability, residual, and the columns of
    :func:`region_summary`. :func:`per_class` averages it by class.
    """
    from tqdm.auto import tqdm

    from magnb.labels import LABEL_CLASSES
    from magnb.loader import DensityDataset

    model, config = _open_model(run_or_model)
    if dataset_dir is None:
        if config is None:
            raise MagnbError("shell_table needs dataset_dir when given a model, not a run")
        dataset_dir = config.dataset_dir
    label = label or (config.label if config is not None else "order_pattern")
    data = DensityDataset(dataset_dir, split=None if calc_ids else split, label=label,
                          shuffle=False)  # fmt: skip
    ids = data.table["calc_id"].tolist()
    wanted = list(calc_ids) if calc_ids else ids
    missing = [c for c in wanted if c not in ids]
    if missing:
        raise MagnbError(f"no sample {missing[0]!r} in the dataset", Path(dataset_dir))
    space = InputSpace.of(dataset_dir)
    classes = LABEL_CLASSES.get(label)
    frames = []
    for calc_id in tqdm(wanted, desc="explain", disable=not progress):
        k = ids.index(calc_id)
        x = data.read(np.array([k]))[0]
        probs = np.asarray(model(x[None], training=False))[0]
        target = int(np.argmax(probs))
        attr, residual = integrated_gradients(model, x, target, space.baseline(x.shape), steps)
        structure = sample_structure(dataset_dir, calc_id)
        labels = region_labels(structure, site_radius, path_radius)
        occ = (
            occlusion_table(model, x, structure, target, space, site_radius, mode)
            if occlusion
            else None
        )
        table = region_summary(attr, labels, occ)
        true = int(data.labels[k])
        table.insert(0, "calc_id", calc_id)
        table.insert(1, "true", classes[true] if classes else true)
        table.insert(2, "predicted", classes[target] if classes else target)
        table.insert(3, "probability", float(probs[target]))
        table.insert(4, "residual", residual)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class SampleAttribution:
    """One sample's integrated gradients and where they sit: ``raw`` is the sample as stored
    (grid x channels, in the dataset's units), ``attribution`` the integrated gradients on the
    same grid, ``atoms`` :func:`atom_table` (per-atom sums, positions in A), ``target`` the
    predicted class index and ``probability`` its probability, ``residual`` the completeness
    residual."""

    calc_id: str
    raw: np.ndarray
    attribution: np.ndarray
    structure: SampleStructure
    atoms: pd.DataFrame
    target: int
    probability: float
    residual: float


def sample_attribution(
    run_or_model: Any, calc_id: str, dataset_dir: str | Path | None = None, steps: int = 16
) -> SampleAttribution:
    """Integrated gradients of the predicted class of one sample (``calc_id``), summed per atom:
    what :func:`viz.attribution_figure <magnb.viz.attribution_figure>` draws over the density."""
    from magnb.loader import DensityDataset

    model, config = _open_model(run_or_model)
    if dataset_dir is None:
        if config is None:
            raise MagnbError("sample_attribution needs dataset_dir when given a model, not a run")
        dataset_dir = config.dataset_dir
    data = DensityDataset(dataset_dir, split=None, label="moment", shuffle=False)
    ids = data.table["calc_id"].tolist()
    if calc_id not in ids:
        raise MagnbError(f"no sample {calc_id!r} in the dataset", Path(dataset_dir))
    x = data.read(np.array([ids.index(calc_id)]))[0]
    probs = np.asarray(model(x[None], training=False))[0]
    target = int(np.argmax(probs))
    space = InputSpace.of(dataset_dir)
    attr, residual = integrated_gradients(model, x, target, space.baseline(x.shape), steps)
    structure = sample_structure(dataset_dir, calc_id)
    return SampleAttribution(
        calc_id=calc_id,
        raw=x * space.scale + space.offset,
        attribution=attr,
        structure=structure,
        atoms=atom_table(structure, attr),
        target=target,
        probability=float(probs[target]),
        residual=float(residual),
    )


def per_class(table: pd.DataFrame, by: str = "true") -> pd.DataFrame:
    """The shell table averaged per class (rows: class and region)."""
    cols = [c for c in ("ig", "ig_share", "occlusion", "occlusion_share", "residual")
            if c in table]  # fmt: skip
    return table.groupby([by, "region"], sort=False)[cols].mean().reset_index()


def dominant_region(table: pd.DataFrame, column: str, among: Sequence[str] = REGIONS) -> pd.Series:
    """Per sample, the region with the largest ``column`` among ``among``."""
    sub = table[table["region"].isin(list(among))]
    return sub.loc[sub.groupby("calc_id")[column].idxmax(), ["calc_id", "region"]].set_index(
        "calc_id"
    )["region"]


# --------------------------------------------------------------------------------------------
# first-layer filters in angstrom


def _magnetization(raw: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """The magnetization (muB/A^3) of raw channel values (..., C)."""
    ch = list(channels)
    for name in ("m", "mz"):
        if name in ch:
            return raw[..., ch.index(name)]
    if "m+" in ch and "m-" in ch:
        return raw[..., ch.index("m+")] - raw[..., ch.index("m-")]
    if "up" in ch and "down" in ch:
        return raw[..., ch.index("up")] - raw[..., ch.index("down")]
    raise MagnbError(f"channels {ch} do not give the signed magnetization")


def _channels_of(m: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """Raw channel values (..., C) of a pure magnetization ``m`` (no total density)."""
    out = []
    for name in channels:
        if name in ("m", "mz"):
            out.append(m)
        elif name == "m+":
            out.append(np.maximum(m, 0.0))
        elif name == "m-":
            out.append(np.maximum(-m, 0.0))
        elif name == "|m|":
            out.append(np.abs(m))
        elif name in ("up", "down"):
            out.append(0.5 * m if name == "up" else -0.5 * m)
        else:  # total, mx, my: no density of their own here
            out.append(np.zeros_like(m))
    return np.stack(out, axis=-1)


#: the on-site shape used when a dataset shows none: a Gaussian of this width (A)
FALLBACK_SIGMA = 0.4


def onsite_template(
    dataset_dir: str | Path | None = None,
    calc_ids: Sequence[str] | None = None,
    r_max: float = 2.0,
    bins: int = 20,
    max_samples: int = 8,
) -> pd.DataFrame:
    """The dataset's own on-site magnetization shape: the spherical average (radial bins of
    ``r_max / bins`` A; a bin no voxel falls in is interpolated from its neighbours) of the
    magnetization around every magnetic atom of up to ``max_samples`` samples, each times the
    sign of its own moment, normalized to one muB (``sum 4 pi r^2 density dr = 1``). Without a dataset, or where it shows no moment, a
    Gaussian of width :data:`FALLBACK_SIGMA` A; ``attrs["source"]`` says which."""
    edges = np.linspace(0.0, r_max, bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    sums = np.zeros(bins)
    counts = np.zeros(bins)
    if dataset_dir is not None:
        from magnb.loader import DensityDataset

        data = DensityDataset(dataset_dir, split=None, label="moment", shuffle=False)
        space = InputSpace.of(dataset_dir)
        ids = list(calc_ids) if calc_ids else data.table["calc_id"].tolist()[:max_samples]
        all_ids = data.table["calc_id"].tolist()
        for calc_id in ids:
            raw = data.read(np.array([all_ids.index(calc_id)]))[0] * space.scale + space.offset
            m = _magnetization(raw, space.channels).ravel()
            s = sample_structure(dataset_dir, calc_id)
            if not s.magnetic.any():
                continue
            grid = s.voxel_cartesian()
            for i in np.flatnonzero(s.magnetic):
                idx = voxels_near_segment(s, s.frac[i], s.frac[i], r_max)
                d = np.linalg.norm(_minimum_image(s, grid[idx] - s.cartesian[i]), axis=1)
                sign = np.sign(m[idx].sum()) or 1.0
                b = np.minimum((d / r_max * bins).astype(int), bins - 1)
                sums += np.bincount(b, weights=sign * m[idx], minlength=bins)
                counts += np.bincount(b, minlength=bins)
    density = np.divide(sums, counts, out=np.zeros(bins), where=counts > 0)
    seen = counts > 0
    if seen.any():  # bins finer than the voxels hold none: linear between their neighbours
        density = np.interp(centres, centres[seen], density[seen], right=0.0)
    norm = float((4 * np.pi * centres**2 * density).sum() * (edges[1] - edges[0]))
    if norm > 0 and np.isfinite(norm):
        density = density / norm
        source = "dataset"
    else:
        sigma = FALLBACK_SIGMA
        density = np.exp(-0.5 * (centres / sigma) ** 2) / (2 * np.pi * sigma**2) ** 1.5
        source = f"gaussian sigma={sigma} A"
    table = pd.DataFrame({"r": centres, "density": density})
    table.attrs["source"] = source
    return table


def _kernel_offsets(kernel_shape: Sequence[int], structure: SampleStructure,
                    scale: np.ndarray) -> np.ndarray:  # fmt: skip
    """Cartesian offsets (A) of a kernel's taps from its centre tap, (kx, ky, kz, 3)."""
    axes = [np.arange(k) - (k - 1) // 2 for k in kernel_shape]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(float)
    step = structure.cell / np.asarray(structure.shape)[:, None] * np.asarray(scale)[:, None]
    return g @ step


def filter_profiles(
    model: Any, structure: SampleStructure, layer: str | None = None, bins: int = 8
) -> pd.DataFrame:
    """Radial and angular profiles (in A, with the voxel size and cell of ``structure``) of
    every filter of a conv layer (default: the first): the weight energy ``w^2`` summed over
    input channels, as its share per radial bin (``kind="radial"``, bin centre in A), per polar
    angle from the cell's c axis (``"polar"``, degrees) and per azimuth in the ab plane from a
    (``"azimuth"``, degrees, 0-180: a kernel and its inversion image weigh alike for pairs);
    and its signed mean weight per radial bin (``"radial_mean"``)."""
    from magnb.viz import conv_layers, layer_scale

    layers = conv_layers(model)
    name = layer or layers[0].name
    kernel = np.asarray(model.get_layer(name).kernel, dtype=np.float64)
    offsets = _kernel_offsets(kernel.shape[:3], structure, layer_scale(model, name))
    r = np.linalg.norm(offsets, axis=-1)
    c_axis = structure.cell[2] / np.linalg.norm(structure.cell[2])
    a_axis = structure.cell[0] / np.linalg.norm(structure.cell[0])
    b_perp = np.cross(c_axis, a_axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        polar = np.degrees(np.arccos(np.clip((offsets @ c_axis) / r, -1, 1)))
    azimuth = np.degrees(np.arctan2(offsets @ b_perp, offsets @ a_axis)) % 180.0
    r_edges = np.linspace(0, r.max() + 1e-9, bins + 1)
    kinds = {
        "radial": (r, r_edges),
        "polar": (polar, np.linspace(0, 180, bins + 1)),
        "azimuth": (azimuth, np.linspace(0, 180, bins + 1)),
    }
    rows = []
    off_centre = r > 1e-9
    for f in range(kernel.shape[4]):
        w = kernel[..., f]
        energy = (w**2).sum(axis=-1)
        total = energy.sum() or 1.0
        for kind, (value, edges) in kinds.items():
            mask = np.ones_like(r, dtype=bool) if kind == "radial" else off_centre
            b = np.clip(np.digitize(value[mask], edges) - 1, 0, bins - 1)
            share = np.bincount(b, weights=energy[mask], minlength=bins) / total
            for k in range(bins):
                rows.append({"layer": name, "filter": f, "kind": kind,
                             "bin": 0.5 * (edges[k] + edges[k + 1]), "value": share[k]})  # fmt: skip
        b = np.clip(np.digitize(r, r_edges) - 1, 0, bins - 1)
        mean = w.mean(axis=-1)
        s = np.bincount(b.ravel(), weights=mean.ravel(), minlength=bins)
        n = np.bincount(b.ravel(), minlength=bins)
        for k in range(bins):
            rows.append({"layer": name, "filter": f, "kind": "radial_mean",
                         "bin": 0.5 * (r_edges[k] + r_edges[k + 1]),
                         "value": s[k] / n[k] if n[k] else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def _moment_volume(structure: SampleStructure, template: pd.DataFrame,
                   centres: np.ndarray, moments: Sequence[float]) -> np.ndarray:  # fmt: skip
    """Magnetization on the sample grid of unit moments at fractional ``centres`` (periodic
    images included), each shaped by the radial ``template``."""
    grid = structure.voxel_cartesian()
    r_tab, rho = template["r"].to_numpy(), template["density"].to_numpy()
    m = np.zeros(len(grid))
    for c, mu in zip(centres, moments, strict=True):
        if mu == 0:
            continue
        d = np.linalg.norm(_minimum_image(structure, grid - np.asarray(c) @ structure.cell), axis=1)
        m += mu * np.interp(d, r_tab, rho, right=0.0)
    return m.reshape(structure.shape)


def filter_pair_responses(
    run_or_model: Any,
    dataset_dir: str | Path | None = None,
    calc_id: str | None = None,
    template: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The response of every first-layer filter to two unit moments at each neighbour-shell
    distance and direction of a sample's magnetic atoms, parallel and antiparallel.

    The moments have the dataset's own on-site shape (:func:`onsite_template`, or ``template``)
    and sit symmetric about the centre of the sample's cell (``calc_id``: default the first
    test sample, its grid, cell and shells), along each distinct neighbour vector of each shell
    (up to sign). The response is the mean over the grid of the layer's output (after its
    activation) for filter f: ``R(s1, s2)``. Columns: filter, shell, distance (A), direction
    (unit vector, Cartesian), ``parallel`` = R(+1, +1), ``antiparallel`` = R(+1, -1), and
    ``interaction`` = R(+1, +1) - R(+1, -1) - R(0, +1) + R(0, -1): what the relative
    orientation changes beyond the second moment's own sign (zero when the filter cannot see
    both moments at once). :func:`distinguished_shells` says which shell each filter tells
    apart most.
    """
    from magnb.loader import DensityDataset

    model, config = _open_model(run_or_model)
    if dataset_dir is None:
        if config is None:
            raise MagnbError("filter_pair_responses needs dataset_dir when given a model")
        dataset_dir = config.dataset_dir
    if calc_id is None:
        table = DensityDataset(dataset_dir, split="test", label="moment", shuffle=False).table
        calc_id = str(table["calc_id"].iloc[0])
    structure = sample_structure(dataset_dir, calc_id)
    space = InputSpace.of(dataset_dir)
    if template is None:
        template = onsite_template(dataset_dir)
    table = pair_responses(model, structure, space, template)
    table.attrs["calc_id"] = calc_id
    return table


def pair_responses(
    model: Any, structure: SampleStructure, space: InputSpace, template: pd.DataFrame
) -> pd.DataFrame:
    """:func:`filter_pair_responses` for a given structure, input space and on-site shape."""
    from magnb.viz import conv_layers

    first = conv_layers(model)[0]
    centre = np.full(3, 0.5)
    vectors: dict[int, list[np.ndarray]] = {}
    for pair in magnetic_pairs(structure):
        v = structure.frac[pair.j] + np.asarray(pair.image) - structure.frac[pair.i]
        cart = v @ structure.cell
        seen = vectors.setdefault(pair.shell, [])
        if not any(
            np.allclose(cart, u @ structure.cell, atol=0.05)
            or np.allclose(cart, -(u @ structure.cell), atol=0.05)
            for u in seen
        ):
            seen.append(v)
    rows = []
    for shell, vs in sorted(vectors.items()):
        for v in vs:
            a, b = centre - v / 2, centre + v / 2
            xs = []
            for s1, s2 in ((1.0, 1.0), (1.0, -1.0), (0.0, 1.0), (0.0, -1.0)):
                m = _moment_volume(structure, template, np.stack([a, b]), [s1, s2])
                xs.append((_channels_of(m, space.channels) - space.offset) / space.scale)
            out = np.asarray(first(np.stack(xs).astype(np.float32)))
            resp = out.reshape(4, -1, out.shape[-1]).astype(np.float64).mean(axis=1)
            cart = v @ structure.cell
            dist = float(np.linalg.norm(cart))
            for f in range(resp.shape[1]):
                rows.append(
                    {
                        "filter": f,
                        "shell": shell,
                        "distance": dist,
                        "direction": tuple(float(c) for c in np.round(cart / dist, 3)),
                        "parallel": resp[0, f],
                        "antiparallel": resp[1, f],
                        "interaction": resp[0, f] - resp[1, f] - resp[2, f] + resp[3, f],
                    }
                )
    table = pd.DataFrame(
        rows,
        columns=["filter", "shell", "distance", "direction", "parallel", "antiparallel",
                 "interaction"],
    )  # fmt: skip
    table.attrs["template"] = template.attrs.get("source", "given")
    return table


def distinguished_shells(responses: pd.DataFrame) -> pd.DataFrame:
    """Per filter: the mean |interaction| per shell over directions, and the shell with the
    largest (the shell whose parallel and antiparallel pairs the filter tells apart most)."""
    wide = (
        responses.assign(abs_interaction=responses["interaction"].abs())
        .groupby(["filter", "shell"])["abs_interaction"].mean().unstack("shell")
    )  # fmt: skip
    wide.columns = [f"shell {s}" for s in wide.columns]
    wide["distinguishes"] = wide.idxmax(axis=1)
    return wide.reset_index()


# --------------------------------------------------------------------------------------------
# kernel smoothness


def _laplacian(w: np.ndarray) -> np.ndarray:
    """6-point discrete Laplacian over the first three axes, edges repeated (so a constant
    kernel has none)."""
    p = np.pad(w, [(1, 1)] * 3 + [(0, 0)] * (w.ndim - 3), mode="edge")
    c = p[1:-1, 1:-1, 1:-1]
    return (p[2:, 1:-1, 1:-1] + p[:-2, 1:-1, 1:-1] + p[1:-1, 2:, 1:-1] + p[1:-1, :-2, 1:-1]
            + p[1:-1, 1:-1, 2:] + p[1:-1, 1:-1, :-2] - 6 * c)  # fmt: skip


#: ``||laplacian(w)||^2 / ||w||^2`` of white noise far from the edges (6 + 36): the scale of
#: :func:`kernel_smoothness`
WHITE_NOISE_LAPLACIAN = 42.0


def kernel_smoothness(kernel: np.ndarray) -> float:
    """Mean normalized Laplacian energy of a conv kernel ``(kx, ky, kz, cin, filters)``: for
    each filter and input channel ``||L w||^2 / (42 ||w||^2)`` with ``L`` the 6-point discrete
    Laplacian (edges repeated), averaged. White noise gives about 1 (a little less: the
    repeated edges), a kernel smooth on the scale of a few voxels much less, a constant 0; it
    does not depend on the kernel's scale. A kernel of all zeros counts as smooth (0); a kernel
    with a side under 3 voxels has no Laplacian to speak of and gives NaN.

    >>> kernel_smoothness(np.ones((5, 5, 5, 1, 1)))
    0.0
    >>> w = np.zeros((3, 3, 3, 1, 1)); w[1, 1, 1] = 1.0  # one spike: 36 + 6 over 42
    >>> kernel_smoothness(w)
    1.0
    """
    w = np.asarray(kernel, dtype=np.float64)
    if w.ndim != 5:
        raise MagnbError(f"expected a kernel (kx, ky, kz, cin, filters), got shape {w.shape}")
    if min(w.shape[:3]) < 3:
        return float("nan")
    lap = (_laplacian(w) ** 2).sum(axis=(0, 1, 2))
    norm = (w**2).sum(axis=(0, 1, 2))
    ratio = np.divide(lap, norm, out=np.zeros_like(lap), where=norm > 0)
    return float(ratio.mean() / WHITE_NOISE_LAPLACIAN)
