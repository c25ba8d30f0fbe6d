"""Stage 05, visualize: what the filters learned, where they fire, and the dataset and runs.

- :class:`FilterExplorer`: walk through a trained 3D kernel slice by slice (layer, filter, input
  channel, axis, slice), beside its three mean projections and an isosurface.
- :class:`DensityExplorer`: the same slicing over a sample's input channels, a layer's activation
  maps and a saliency map, with the atoms within a stated distance (A) of the slice drawn on it.
- :func:`attribution_figure`: per-atom values (attributions) as markers over a density slice.
- Dataset and run views: the moment histogram with its threshold, class balance per split,
  learning curves, the run registry as a plot.

Every figure is plotly; the explorers show them in ipywidgets ``Output`` areas for JupyterLab (a
plain figure replaced whole at each change, see :class:`FigureView`), and everything also works
headless: :func:`save_figure` writes a PNG (kaleido, with a Chromium on the machine) or
self-contained HTML, so batch runs leave pictures. Lengths are in angstrom, from the sample's own
lattice: slices are drawn on the real cell (sheared for non-orthogonal cells), densities in their
stored physical units on a colour scale that shows an empty sample as white.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magnb.errors import MagnbError

AXES = ("a", "b", "c")
SPECIES_COLOURS = {
    "V": "#a6a6ab", "Cr": "#8a99c7", "Mn": "#9c7ac7", "Fe": "#e06633", "Co": "#f090a0",
    "Ni": "#50d050", "Si": "#f0c8a0", "Ge": "#668f8f", "P": "#ff8000", "S": "#e6c619",
    "Se": "#ffa100", "Te": "#d47a00", "O": "#ff0d0d", "N": "#3050f8", "Li": "#cc80ff",
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# arrays: slices, projections, kernels, activations, saliency


def slice_volume(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` across ``axis`` of a 3D array; rows follow the first remaining
    axis, columns the second (so ``slice_volume(v, 2, k) == v[:, :, k]``)."""
    if volume.ndim != 3:
        raise MagnbError(f"expected a 3D volume, got shape {volume.shape}")
    if not 0 <= axis < 3:
        raise MagnbError(f"axis must be 0, 1 or 2, not {axis}")
    if not 0 <= index < volume.shape[axis]:
        raise MagnbError(f"slice {index} is outside 0..{volume.shape[axis] - 1} along axis {axis}")
    return np.take(volume, index, axis=axis)


def projections(volume: np.ndarray) -> list[np.ndarray]:
    """Mean projections along a, b and c (what the seed project plotted)."""
    return [volume.mean(axis=k) for k in range(3)]


def conv_layers(model: Any) -> list[Any]:
    """The model's 3D convolution layers (PeriodicConv3D or Conv3D), in order."""
    import keras

    from magnb.layers import PeriodicConv3D

    found = [ly for ly in model.layers if isinstance(ly, PeriodicConv3D | keras.layers.Conv3D)]
    if not found:
        raise MagnbError(f"model {model.name!r} has no 3D convolution layer")
    return found


def kernel_volume(model: Any, layer: str, filter_index: int, channel: int) -> np.ndarray:
    """The 3D kernel ``(kx, ky, kz)`` of one filter and input channel of a conv layer."""
    kernel = np.asarray(model.get_layer(layer).kernel)
    if not 0 <= filter_index < kernel.shape[4]:
        raise MagnbError(f"layer {layer!r} has {kernel.shape[4]} filters, not {filter_index + 1}")
    if not 0 <= channel < kernel.shape[3]:
        raise MagnbError(f"layer {layer!r} has {kernel.shape[3]} input channels")
    return kernel[:, :, :, channel, filter_index]


def layer_scale(model: Any, layer: str) -> np.ndarray:
    """How much coarser than the model input the input grid of ``layer`` is, per axis (the product
    of the pools and strides before it)."""
    factor = np.ones(3)
    for ly in model.layers:
        if ly.name == layer:
            return factor
        for attr in ("pool_size", "strides"):
            value = getattr(ly, attr, None)
            if value is not None and type(ly).__name__ != "InputLayer":
                factor *= np.broadcast_to(np.asarray(value, dtype=float), 3)
                break
    raise MagnbError(f"no layer {layer!r} in model {model.name!r}")


def activations(model: Any, layer: str, x: np.ndarray) -> np.ndarray:
    """The output of ``layer`` for inputs ``x`` (batch first)."""
    import keras

    sub = keras.Model(model.inputs, model.get_layer(layer).output)
    return np.asarray(sub.predict(x, verbose=0))


def saliency(model: Any, x: np.ndarray, target: int | None = None) -> np.ndarray:
    """Gradient of the model's output with respect to its input, same shape as ``x``.

    For a classifier the output is the probability of ``target`` (default: the predicted class of
    each sample); for a regressor, the prediction. Computed with the running backend's automatic
    differentiation (TensorFlow, JAX or PyTorch), so it works wherever the model does.
    """
    import keras
    from keras import ops

    x = np.asarray(x, dtype="float32")
    probs = np.asarray(model.predict(x, verbose=0))
    if probs.shape[-1] > 1:
        cls = np.argmax(probs, axis=-1) if target is None else np.full(len(x), int(target))
        mask = np.eye(probs.shape[-1], dtype="float32")[cls]
    else:
        mask = np.ones_like(probs, dtype="float32")

    def objective(inputs: Any) -> Any:
        return ops.sum(model(inputs, training=False) * mask)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            value = objective(xt)
        return np.asarray(tape.gradient(value, xt))
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(objective)(x))
    if backend == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        objective(xt).backward()
        return xt.grad.detach().cpu().numpy()
    raise MagnbError(f"saliency is not implemented for the {backend!r} backend")


# --------------------------------------------------------------------------------------------
# where a sample sits: voxel vectors and atoms


@dataclass(frozen=True)
class SampleGeometry:
    """Atoms of one sample in its voxel coordinates, and the Cartesian step of one voxel.

    Voxel ``(i, j, k)`` sits at ``(i, j, k) @ vectors`` angstrom (voxel 0 at the origin). For a
    fractional-grid dataset the rows are the sample's own lattice vectors over its grid (sheared
    for a non-orthogonal cell); for a cube they are the cube's voxel edge along x, y, z.
    """

    positions: np.ndarray  #: (n, 3) voxel coordinates (grid point k of an axis is at k)
    species: list[str]
    voxel_size: np.ndarray  #: (3,) A per voxel along a, b, c (the lengths of the vectors)
    shape: tuple[int, int, int]
    periodic: tuple[bool, bool, bool]
    voxel_vectors: np.ndarray | None = None  #: (3, 3) rows: A per voxel step along a, b, c
    calc_id: str = ""

    @property
    def vectors(self) -> np.ndarray:
        """(3, 3) voxel vectors in A (orthogonal ones from ``voxel_size`` when none are given)."""
        if self.voxel_vectors is None:
            return np.diag(np.asarray(self.voxel_size, dtype=float))
        return np.asarray(self.voxel_vectors, dtype=float)

    def cartesian(self, voxels: np.ndarray) -> np.ndarray:
        """Voxel coordinates (n, 3) to Cartesian A."""
        return np.asarray(voxels, dtype=float) @ self.vectors

    def to_voxels(self, cart: np.ndarray) -> np.ndarray:
        """Cartesian A (n, 3) to voxel coordinates."""
        return np.asarray(cart, dtype=float) @ np.linalg.inv(self.vectors)

    def coarsened(self, shape: tuple[int, ...]) -> SampleGeometry:
        """The same atoms on a coarser grid of ``shape`` (a layer's activation maps)."""
        factor = np.asarray(self.shape, dtype=float) / np.asarray(shape[:3], dtype=float)
        return replace(
            self,
            positions=self.positions / factor,
            voxel_size=np.asarray(self.voxel_size) * factor,
            voxel_vectors=self.vectors * factor[:, None],
            shape=tuple(int(n) for n in shape[:3]),
        )


def sample_geometry(dataset_dir: str | Path, calc_id: str) -> SampleGeometry:
    """The atoms (all supercell images inside the sample) and voxel vectors of a scraped sample,
    from that sample's own lattice."""
    import h5py
    import yaml

    from magnb.split import load_split
    from magnb.store import read_table, split_file_path

    dataset_dir = Path(dataset_dir)
    table = read_table(dataset_dir).set_index("calc_id")
    if calc_id not in table.index:
        raise MagnbError(f"no sample {calc_id!r} in the dataset", dataset_dir / "table.parquet")
    row = table.loc[calc_id]
    if "native_nz" not in row:
        raise MagnbError("dataset made by an older magnb: run stage 03 again", dataset_dir)
    with h5py.File(dataset_dir / "dataset.h5", "r") as f:
        settings = yaml.safe_load(f.attrs["config"])
        periodic = tuple(json.loads(f.attrs["periodic_axes"]))
        shape = tuple(int(n) for n in f["samples"].shape[1:4])
    split = load_split(split_file_path(dataset_dir, row["split_file"]))
    if settings["representation"] == "cube":
        from magnb.grid import cube_atoms

        positions, atom = cube_atoms(
            split["frac_coords"], split["lattice"], settings["cube_side"], settings["cube_points"]
        )
        edge = settings["cube_side"] / settings["cube_points"]
        return SampleGeometry(
            positions=positions,
            species=[split["species"][i] for i in atom],
            voxel_size=np.full(3, edge),
            shape=shape,  # type: ignore[arg-type]
            periodic=periodic,  # type: ignore[arg-type]
            voxel_vectors=np.eye(3) * edge,
            calc_id=calc_id,
        )
    frac = np.asarray(split["frac_coords"], dtype=float) % 1.0
    lattice = np.asarray(split["lattice"], dtype=float)
    grid = np.asarray(settings["grid"], dtype=float)
    reps = np.asarray(settings["supercell"], dtype=int)
    native_nz = int(row["native_nz"])
    planes = int(row["crop_planes"])
    start = int(row["crop_start"])
    # position along c inside the (possibly cropped) window, in native planes
    zc = frac[:, 2] * native_nz
    if planes < native_nz:
        zc = (zc - start) % native_nz
    keep = zc <= planes - 1 + 1e-9 if planes < native_nz else np.ones(len(frac), dtype=bool)
    cell = np.column_stack([frac[:, 0] * grid[0], frac[:, 1] * grid[1], zc * grid[2] / planes])
    positions, species = [], []
    for i in range(reps[0]):
        for j in range(reps[1]):
            for k in range(reps[2]):
                positions.append(cell[keep] + np.array([i, j, k]) * grid)
                species += [s for s, kept in zip(split["species"], keep, strict=True) if kept]
    vectors = lattice / grid[:, None]
    vectors[2] *= planes / native_nz  # the kept window of c, over the grid's points along c
    return SampleGeometry(
        positions=np.concatenate(positions) if positions else np.zeros((0, 3)),
        species=species,
        voxel_size=np.linalg.norm(vectors, axis=1),
        shape=shape,  # type: ignore[arg-type]
        periodic=periodic,  # type: ignore[arg-type]
        voxel_vectors=vectors,
        calc_id=calc_id,
    )


def default_sample(dataset_dir: str | Path) -> str:
    """The sample the pictures show when none is named: the first usable test sample (else the
    first usable one)."""
    from magnb.store import read_table

    table = read_table(dataset_dir)
    ok = table[(table["status"] == "ok") & (table["sample"] >= 0)]
    if ok.empty:
        raise MagnbError("no usable samples in the dataset", Path(dataset_dir))
    test = ok[ok["split"] == "test"]
    return str((test if len(test) else ok)["calc_id"].iloc[0])


def _as_vectors(voxel: Any) -> np.ndarray:
    """(3,) voxel lengths or (3, 3) voxel vectors, as (3, 3) vectors."""
    v = np.asarray(voxel, dtype=float)
    if v.shape == (3, 3):
        return v
    return np.diag(np.broadcast_to(v, 3))


def plane_axes(vectors: Any, axis: int) -> np.ndarray:
    """The 2 x 2 matrix taking steps along the two in-plane axes of a slice across ``axis`` to
    angstrom in that plane: x along the first in-plane lattice direction, y perpendicular to it.
    A 120-degree hexagonal cell comes out a rhombus, not a square.

    >>> plane_axes(np.diag([1.0, 2.0, 3.0]), 2)
    array([[1., 0.],
           [0., 2.]])
    >>> plane_axes([[2.0, 0, 0], [-1.0, 3**0.5, 0], [0, 0, 5.0]], 2).round(3)
    array([[ 2.   , -1.   ],
           [ 0.   ,  1.732]])
    """
    v = _as_vectors(vectors)
    rest = [k for k in range(3) if k != axis]
    vi, vj = v[rest[0]], v[rest[1]]
    e1 = vi / np.linalg.norm(vi)
    along = float(vj @ e1)
    return np.array([[np.linalg.norm(vi), along], [0.0, np.linalg.norm(vj - along * e1)]])


def plane_spacing(vectors: Any, axis: int) -> float:
    """Distance in A between neighbouring slices across ``axis`` (the voxel's height normal to
    the plane: the voxel size along ``axis`` for an orthogonal cell, less for a sheared one)."""
    v = _as_vectors(vectors)
    rest = [k for k in range(3) if k != axis]
    return float(abs(np.linalg.det(v)) / np.linalg.norm(np.cross(v[rest[0]], v[rest[1]])))


def _near_plane(positions: np.ndarray, geometry: SampleGeometry, axis: int, index: int,
                distance: float) -> np.ndarray:  # fmt: skip
    d = np.abs(np.asarray(positions, dtype=float)[:, axis] - index)
    if geometry.periodic[axis]:
        n = geometry.shape[axis]
        d = d % n
        d = np.minimum(d, n - d)
    return np.flatnonzero(d * plane_spacing(geometry.vectors, axis) <= distance + 1e-9)


def atoms_near_slice(
    geometry: SampleGeometry, axis: int, index: int, distance: float = 1.0
) -> np.ndarray:
    """Indices of the atoms within ``distance`` angstrom of the plane of slice ``index`` across
    ``axis`` (measured normal to the plane; wrapping around periodic axes)."""
    return _near_plane(geometry.positions, geometry, axis, index, distance)


# --------------------------------------------------------------------------------------------
# figures

#: a density (muB/A^3, e/A^3) is drawn on a colour scale of at least +-DENSITY_FLOOR, so a sample
#: with nothing in it stays white instead of being stretched to full colour
DENSITY_FLOOR = 1e-2
#: below this largest |value| (same units) a density is labelled as empty (a non-spin-polarized
#: Si cell: 3e-5 muB/A^3 of resampling noise; the weakest real moment in the fixtures, Li: 1e-3)
EMPTY_BELOW = 1e-4
DENSITY_UNITS = {"muB/A^3": "magnetization", "e/A^3": "charge density"}


def colour_limit(vmax: float, units: str = "") -> tuple[float, str]:
    """The symmetric colour range ``+-limit`` for data whose largest |value| is ``vmax``, and a
    note to print on the figure when there is nothing to see.

    >>> colour_limit(1e-12, "muB/A^3")
    (0.01, 'no magnetization: max |value| = 1e-12 muB/A^3')
    >>> colour_limit(0.3, "muB/A^3")
    (0.3, '')
    >>> colour_limit(0.0, "weight")
    (1.0, 'all zero')
    """
    vmax = float(vmax)
    if units in DENSITY_UNITS:
        note = f"no {DENSITY_UNITS[units]}: max |value| = {vmax:.2g} {units}"
        return max(vmax, DENSITY_FLOOR), note if vmax < EMPTY_BELOW else ""
    return (vmax, "") if vmax > 0 else (1.0, "all zero")


def _sheared(m: np.ndarray) -> bool:
    return abs(m[0, 1]) > 1e-9 * m[0, 0]


def _plane_heatmap(data: np.ndarray, m: np.ndarray, origin: np.ndarray, limit: float,
                   units: str, showscale: bool = True, max_pixels: int = 300) -> Any:  # fmt: skip
    """``data[p, q]`` drawn with voxel ``(p, q)`` at ``m @ ((p, q) - origin)`` angstrom.

    An orthogonal plane is a plain heatmap on the voxel centres (``z`` is the slice itself). A
    sheared one is resampled to a square raster whose every pixel holds the value of the voxel
    whose parallelogram contains it (NaN, transparent, outside the cell): plotly's heatmap cannot
    shear, a contour would smooth the voxels away, and one polygon per voxel is thousands of
    shapes; the raster keeps exact values, hover and the colour bar.
    """
    import plotly.graph_objects as go

    n0, n1 = data.shape
    style = {"colorscale": "RdBu_r", "zmid": 0.0, "zmin": -limit, "zmax": limit,
             "showscale": showscale, "colorbar": {"title": {"text": units}},
             "hoverongaps": False, "name": "slice"}  # fmt: skip
    if not _sheared(m):
        xs = (np.arange(n0) - origin[0]) * m[0, 0]
        ys = (np.arange(n1) - origin[1]) * m[1, 1]
        return go.Heatmap(z=data.T, x=xs, y=ys, **style)
    corners = np.array([[-0.5, -0.5], [n0 - 0.5, -0.5], [-0.5, n1 - 0.5], [n0 - 0.5, n1 - 0.5]])
    xy = (corners - origin) @ m.T
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    step = max(min(m[0, 0], m[1, 1]) / 4, float((hi - lo).max()) / max_pixels)
    xs = np.arange(lo[0] + step / 2, hi[0], step)
    ys = np.arange(lo[1] + step / 2, hi[1], step)
    gx, gy = np.meshgrid(xs, ys)  # rows: y
    pq = np.linalg.solve(m, np.stack([gx.ravel(), gy.ravel()])) + np.asarray(origin)[:, None]
    p, q = np.rint(pq).astype(int)
    inside = (p >= 0) & (p < n0) & (q >= 0) & (q < n1)
    z = np.full(p.shape, np.nan, dtype=np.float32)
    z[inside] = data[p[inside], q[inside]]
    return go.Heatmap(z=z.reshape(gx.shape), x=xs, y=ys, **style)


def _plane_titles(axis: int, m: np.ndarray) -> tuple[str, str]:
    rest = [AXES[k] for k in range(3) if k != axis]
    if _sheared(m):
        return f"along {rest[0]} (A)", f"normal to {rest[0]}, in the {rest[0]}{rest[1]} plane (A)"
    return f"along {rest[0]} (A)", f"along {rest[1]} (A)"


def _note(fig: Any, note: str, **where: Any) -> None:
    if note:
        fig.add_annotation(text=note, showarrow=False, font={"size": 14, "color": "#444"},
                           bgcolor="rgba(255,255,255,0.8)", **where)  # fmt: skip


def slice_figure(
    volume: np.ndarray,
    axis: int,
    index: int,
    voxel_size: Any = None,
    title: str = "",
    units: str = "",
    geometry: SampleGeometry | None = None,
    distance: float = 1.0,
    origin: Any = None,
    vmax: float | None = None,
    note: str = "",
) -> Any:
    """One slice on the real cell, in angstrom, with the atoms within ``distance`` A of its plane.

    ``voxel_size`` is (3,) lengths or (3, 3) voxel vectors (default: the geometry's, else 1 A);
    non-orthogonal cells are drawn sheared. Colours are diverging and centred on zero, over the
    whole volume's range (``vmax`` overrides it), never narrower than :data:`DENSITY_FLOOR` for a
    density: a sample without magnetization is white and says so. ``origin``: the voxel drawn at
    0 (a kernel's centre); ``note``: a line under the title. ``layout.meta`` records the axis,
    index and distance drawn.
    """
    import plotly.graph_objects as go

    data = slice_volume(volume, axis, index)
    rest = [k for k in range(3) if k != axis]
    if voxel_size is None:
        voxel_size = geometry.vectors if geometry is not None else (1.0, 1.0, 1.0)
    m = plane_axes(voxel_size, axis)
    o = np.zeros(3) if origin is None else np.broadcast_to(np.asarray(origin, dtype=float), 3)
    limit, empty = colour_limit(np.abs(volume).max() if vmax is None else vmax, units)
    fig = go.Figure(_plane_heatmap(data, m, o[rest], limit, units))
    fig.add_trace(
        go.Scatter(
            x=[],
            y=[],
            mode="markers+text",
            name=f"atoms within {distance:g} A",
            textposition="top center",
        )  # fmt: skip
    )
    head = title or f"slice {index} across {AXES[axis]}"
    lines = [note] if note else []
    if geometry is not None:
        _set_atoms(fig.data[1], geometry, axis, index, distance, m, o)
        lines.append(f"atoms within {distance:g} A of the plane")
    if lines:
        head += f"<br><sup>{'; '.join(lines)}</sup>"
    xt, yt = _plane_titles(axis, m)
    fig.update_layout(
        title=head,
        xaxis={"title": xt, "constrain": "domain"},
        yaxis={"title": yt, "scaleanchor": "x", "constrain": "domain"},
        showlegend=False,
        width=620,
        height=500,
        meta={"axis": int(axis), "index": int(index), "distance": float(distance)},
    )
    _note(fig, empty, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def _set_atoms(trace: Any, geometry: SampleGeometry, axis: int, index: int, distance: float,
               m: np.ndarray, origin: np.ndarray) -> None:  # fmt: skip
    rest = [k for k in range(3) if k != axis]
    near = atoms_near_slice(geometry, axis, index, distance)
    pos = geometry.positions[near][:, rest] % np.asarray(geometry.shape)[rest]
    xy = (pos - origin[rest]) @ m.T if len(near) else np.zeros((0, 2))
    names = [geometry.species[i] for i in near]
    trace.x = xy[:, 0]
    trace.y = xy[:, 1]
    trace.text = names
    trace.marker = {
        "size": 12,
        "color": [SPECIES_COLOURS.get(n, "#444444") for n in names],
        "line": {"width": 1, "color": "black"},
    }


def attribution_figure(
    geometry: SampleGeometry,
    per_atom: pd.DataFrame,
    volume: np.ndarray,
    axis: int = 2,
    index: int | None = None,
    distance: float = 1.0,
    units: str = "muB/A^3",
    value: str = "value",
    title: str = "",
) -> Any:
    """Per-atom values (an attribution table, or any number per atom) as markers over a slice of
    ``volume`` (one channel of the sample, on ``geometry``'s grid).

    ``per_atom`` has a ``species`` column, a ``value`` column (or the one named by ``value``) and
    the atoms' positions as Cartesian ``x, y, z`` in A in the sample's frame (voxel 0 at the
    origin, as :meth:`SampleGeometry.cartesian` gives), as fractions of the sample box
    ``frac_a, frac_b, frac_c``, or as voxel coordinates ``vox_a, vox_b, vox_c``. The atoms within
    ``distance`` A of the plane are drawn: a marker's area grows with |value|, red positive, blue
    negative, species and value as its label. ``index`` None: the plane through the atom with the
    largest |value|.
    """
    import plotly.graph_objects as go

    if value not in per_atom or "species" not in per_atom:
        raise MagnbError(f"the per-atom table needs 'species' and {value!r} columns, has "
                         f"{list(per_atom.columns)}")  # fmt: skip
    for cols, to_vox in (
        (["vox_a", "vox_b", "vox_c"], lambda p: p),
        (["frac_a", "frac_b", "frac_c"], lambda p: p * np.asarray(geometry.shape)),
        (["x", "y", "z"], geometry.to_voxels),
    ):
        if all(c in per_atom for c in cols):
            vox = to_vox(per_atom[cols].to_numpy(dtype=float))
            break
    else:
        raise MagnbError("the per-atom table needs positions: x, y, z (A), frac_a, frac_b, "
                         f"frac_c or vox_a, vox_b, vox_c; has {list(per_atom.columns)}")  # fmt: skip
    values = per_atom[value].to_numpy(dtype=float)
    if index is None:
        top = int(np.abs(values).argmax()) if len(values) else 0
        index = int(np.rint(vox[top, axis])) % geometry.shape[axis] if len(values) else 0
    fig = slice_figure(volume, axis, index, geometry.vectors, units=units,
                       title=title or f"{value} per atom over slice {index} across {AXES[axis]}")  # fmt: skip
    near = _near_plane(vox, geometry, axis, index, distance)
    rest = [k for k in range(3) if k != axis]
    m = plane_axes(geometry.vectors, axis)
    xy = (vox[near][:, rest] % np.asarray(geometry.shape)[rest]) @ m.T
    v = values[near]
    big = float(np.abs(values).max()) if len(values) and np.abs(values).max() > 0 else 1.0
    species = per_atom["species"].to_numpy()[near]
    fig.add_trace(
        go.Scatter(
            x=xy[:, 0] if len(near) else [],
            y=xy[:, 1] if len(near) else [],
            mode="markers+text",
            name=f"{value} (atoms within {distance:g} A)",
            text=[f"{s} {x:+.2g}" for s, x in zip(species, v, strict=True)],
            textposition="top center",
            customdata=v,
            hovertemplate="%{text}<extra></extra>",
            marker={
                "size": 8 + 24 * np.sqrt(np.abs(v) / big),
                "color": np.where(v >= 0, "#d62728", "#1f77b4"),
                "opacity": 0.8,
                "line": {"width": 1, "color": "black"},
            },
        )
    )
    fig.update_layout(title=f"{fig.layout.title.text}<br><sup>{len(near)} atoms within "
                            f"{distance:g} A of the plane; marker area ~ |{value}|</sup>")  # fmt: skip
    fig.layout.meta = {**fig.layout.meta, "atoms_drawn": len(near)}
    return fig


def projections_figure(
    volume: np.ndarray,
    voxel_size: Any = (1.0, 1.0, 1.0),
    title: str = "Mean projections",
    units: str = "",
    origin: Any = None,
) -> Any:
    """The three mean projections side by side on the real (sheared) cell, on one colour scale
    centred on zero."""
    from plotly.subplots import make_subplots

    vectors = _as_vectors(voxel_size)
    o = np.zeros(3) if origin is None else np.broadcast_to(np.asarray(origin, dtype=float), 3)
    projs = projections(volume)
    limit, note = colour_limit(max(float(np.abs(p).max()) for p in projs), units)
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"mean along {a}" for a in AXES],
                        horizontal_spacing=0.12)  # fmt: skip
    for k, proj in enumerate(projs):
        rest = [j for j in range(3) if j != k]
        m = plane_axes(vectors, k)
        fig.add_trace(_plane_heatmap(proj, m, o[rest], limit, units, showscale=k == 2),
                      row=1, col=k + 1)  # fmt: skip
        xt, yt = _plane_titles(k, m)
        fig.update_xaxes(title_text=xt.replace("along ", ""), row=1, col=k + 1)
        fig.update_yaxes(title_text=yt.replace("along ", "").replace(", in the", "<br>in the"),
                         scaleanchor="x" if k == 0 else f"x{k + 1}", row=1, col=k + 1)  # fmt: skip
    fig.update_layout(title=title, width=1150, height=420, margin={"l": 70, "r": 40})
    _note(fig, note, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def isosurface_figure(
    volume: np.ndarray,
    level: float,
    voxel_size: Any = (1.0, 1.0, 1.0),
    title: str = "",
    origin: Any = None,
) -> Any:
    """Isosurfaces of a 3D array at +level (red) and -level (blue), ``level`` a fraction of the
    largest absolute value, on axes in A (the lattice directions drawn at right angles: plotly's
    isosurface needs a rectilinear grid; the slices show the shear)."""
    import plotly.graph_objects as go

    vectors = _as_vectors(voxel_size)
    size = np.linalg.norm(vectors, axis=1)
    o = np.zeros(3) if origin is None else np.broadcast_to(np.asarray(origin, dtype=float), 3)
    vmax = float(np.abs(volume).max()) or 1.0
    gx, gy, gz = np.meshgrid(*((np.arange(n) - c) * s for n, s, c in zip(volume.shape, size, o,
                               strict=True)), indexing="ij")  # fmt: skip
    common = {"x": gx.ravel(), "y": gy.ravel(), "z": gz.ravel(), "value": volume.ravel(),
              "surface_count": 1, "showscale": False, "opacity": 0.6}  # fmt: skip
    fig = go.Figure(
        [
            go.Isosurface(
                **common, isomin=level * vmax, isomax=vmax, colorscale=[[0, "red"], [1, "red"]]
            ),
            go.Isosurface(
                **common, isomin=-vmax, isomax=-level * vmax, colorscale=[[0, "blue"], [1, "blue"]]
            ),
        ]  # fmt: skip
    )
    axis = {"nticks": 4, "tickfont": {"size": 11}}
    sheared = not np.allclose(vectors, np.diag(size), atol=1e-9 * size.max())
    fig.update_layout(
        title=(title or "isosurfaces") + f"<br><sup>at +-{level:g} of the largest |value|"
        + ("; lattice axes drawn at right angles" if sheared else "") + "</sup>",
        width=620,
        height=520,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        scene={"aspectmode": "data", "camera": {"eye": {"x": 1.6, "y": 1.6, "z": 1.0}},
               "xaxis": {**axis, "title": {"text": "a (A)"}},
               "yaxis": {**axis, "title": {"text": "b (A)"}},
               "zaxis": {**axis, "title": {"text": "c (A)"}}},
    )  # fmt: skip
    return fig


# --------------------------------------------------------------------------------------------
# the explorers


class FigureView:
    """One figure shown in an ``ipywidgets.Output``, replaced whole at every draw.

    The output's only item is a plain plotly figure (JupyterLab's plotly mime renderer draws it),
    set in one assignment: nothing is sent as an in-place update, so no state can be lost between
    kernel and page. A ``FigureWidget`` (an anywidget since plotly 6) is a second model in the
    page whose initialization can fail when the kernel restarts or the cell re-runs while the old
    one is torn down (``[anywidget] Failed to initialize model.``): its figure then stays empty,
    and updates sent to it in place are lost.
    """

    def __init__(self) -> None:
        import ipywidgets as w

        self.output = w.Output()
        self.figure: Any = None

    def show(self, fig: Any) -> None:
        import plotly.io as pio

        self.figure = fig
        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())
        title = fig.layout.title.text or "figure"
        bundle["text/plain"] = f"<plotly figure: {title}>"
        self.output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)


def _panel(controls: list[Any]) -> Any:
    """A column of controls wide enough for their labels."""
    import ipywidgets as w

    for control in controls:
        control.style = {"description_width": "90px"}
        control.layout = w.Layout(width="330px")
    return w.VBox(controls, layout=w.Layout(min_width="340px"))


class _Explorer:
    """Shared control logic: a change of a control in ``_structural`` first adjusts the ranges of
    the others (``_limits``), then the figure is redrawn once (``update``)."""

    _adjusting = False

    def _structural(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _limits(self, owner: Any = None) -> None:
        raise NotImplementedError

    def update(self) -> None:
        raise NotImplementedError

    def _changed(self, change: Any) -> None:
        if self._adjusting:  # a slider moved by _limits: one update follows anyway
            return
        if change["owner"] in self._structural():
            self._adjusting = True
            try:
                self._limits(change["owner"])
            finally:
                self._adjusting = False
        self.update()


def _set_slider(slider: Any, maximum: int, value: int) -> None:
    """Set a slider's range and value in an order in which ipywidgets never clamps the value to
    an edge on the way."""
    slider.min = 0
    slider.value = 0
    slider.max = maximum
    slider.value = min(max(int(value), 0), maximum)


class FilterExplorer(_Explorer):
    """Slice through the kernels of a trained model's 3D convolution layers.

    Kernel axes are in A, centred on the kernel's middle voxel, from the voxel vectors of one
    sample's lattice (``geometry``, see :func:`sample_geometry`; or ``voxel_size``) times the
    pooling before the layer. ``widget()`` returns the ipywidgets panel for JupyterLab;
    ``figures()`` the current plotly figures (for headless export).
    """

    def __init__(self, model: Any, voxel_size: Any = None,
                 geometry: SampleGeometry | None = None) -> None:  # fmt: skip
        import ipywidgets as w

        self.model = model
        if geometry is not None:
            self.base_vectors = geometry.vectors
            self.source = f"voxels of {geometry.calc_id}" if geometry.calc_id else ""
        else:
            self.base_vectors = _as_vectors(1.0 if voxel_size is None else voxel_size)
            self.source = ""
        names = [ly.name for ly in conv_layers(model)]
        self.layer = w.Dropdown(options=names, value=names[0], description="layer")
        self.filter = w.IntSlider(0, 0, 0, description="filter")
        self.channel = w.IntSlider(0, 0, 0, description="channel")
        self.axis = w.ToggleButtons(options=[("a", 0), ("b", 1), ("c", 2)], value=2,
                                    description="slice across")  # fmt: skip
        self.index = w.IntSlider(0, 0, 0, description="slice", continuous_update=True)
        self.level = w.FloatSlider(0.5, min=0.05, max=0.95, step=0.05, description="iso level")
        self.views = {"slice": FigureView(), "projections": FigureView(),
                      "isosurface": FigureView()}  # fmt: skip
        self._limits()
        self.update()
        for control in (self.layer, self.filter, self.channel, self.axis, self.index, self.level):
            control.observe(self._changed, names="value")

    @property
    def slice_fig(self) -> Any:
        return self.views["slice"].figure

    @property
    def proj_fig(self) -> Any:
        return self.views["projections"].figure

    @property
    def iso_fig(self) -> Any:
        return self.views["isosurface"].figure

    def _structural(self) -> tuple[Any, ...]:
        return (self.layer, self.axis)

    def kernel_shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.model.get_layer(self.layer.value).kernel.shape[:3])  # type: ignore[return-value]

    def _limits(self, owner: Any = None) -> None:
        kernel = self.model.get_layer(self.layer.value).kernel
        _, _, _, cin, filters = kernel.shape
        self.filter.max = filters - 1
        self.channel.max = cin - 1
        n = self.kernel_shape()[self.axis.value]
        _set_slider(self.index, n - 1, (n - 1) // 2)  # a new layer or axis: its centre

    @property
    def voxel_vectors(self) -> np.ndarray:
        """(3, 3) A per kernel voxel step at the current layer."""
        return self.base_vectors * layer_scale(self.model, self.layer.value)[:, None]

    @property
    def voxel_size(self) -> np.ndarray:
        return np.linalg.norm(self.voxel_vectors, axis=1)

    def volume(self) -> np.ndarray:
        return kernel_volume(self.model, self.layer.value, self.filter.value, self.channel.value)

    def figures(self) -> dict[str, Any]:
        vol = self.volume()
        centre = (np.asarray(vol.shape) - 1) / 2
        label = f"{self.layer.value}, filter {self.filter.value}, channel {self.channel.value}"
        sizes = ", ".join(f"{s:.3f}" for s in self.voxel_size)
        where = f"voxel {sizes} A" + (f" ({self.source})" if self.source else "")
        n = vol.shape[self.axis.value]
        return {
            "slice": slice_figure(vol, self.axis.value, self.index.value, self.voxel_vectors,
                                  title=f"{label}: slice {self.index.value} of 0-{n - 1}"
                                        f"<br><sup>{where}; 0 = kernel centre</sup>",
                                  units="weight", origin=centre),
            "projections": projections_figure(vol, self.voxel_vectors, units="weight",
                                              title=f"{label}: projections ({where})",
                                              origin=centre),
            "isosurface": isosurface_figure(vol, self.level.value, self.voxel_vectors,
                                            title=label, origin=centre),
        }  # fmt: skip

    def update(self) -> None:
        state = {"layer": self.layer.value, "filter": self.filter.value,
                 "channel": self.channel.value}  # fmt: skip
        for name, fig in self.figures().items():
            fig.layout.meta = {**(fig.layout.meta or {}), **state, "view": f"filters-{name}"}
            self.views[name].show(fig)

    def widget(self) -> Any:
        import ipywidgets as w

        controls = _panel(
            [self.layer, self.filter, self.channel, self.axis, self.index, self.level]
        )
        v = self.views
        return w.VBox([w.HBox([controls, v["slice"].output]), v["projections"].output,
                       v["isosurface"].output])  # fmt: skip

    def save(self, out_dir: str | Path, stem: str = "filters") -> list[Path]:
        return [
            save_figure(f, Path(out_dir) / f"{stem}_{k}.png") for k, f in self.figures().items()
        ]


class DensityExplorer(_Explorer):
    """Slice through one sample: its input channels (in their physical units, as stored), a
    layer's activation maps, or the saliency map, with the atoms within ``distance`` A of the
    slice's plane, on the sample's own (sheared) cell."""

    SOURCES = ("input", "activation", "saliency")

    def __init__(self, model: Any, dataset_dir: str | Path, calc_id: str | None = None,
                 distance: float = 1.0) -> None:  # fmt: skip
        import h5py
        import ipywidgets as w

        from magnb.loader import DensityDataset

        data = DensityDataset(dataset_dir, split=None, label="moment", shuffle=False)
        ids = data.table["calc_id"].tolist()
        calc_id = calc_id or ids[0]
        if calc_id not in ids:
            raise MagnbError(f"no sample {calc_id!r} in the dataset", Path(dataset_dir))
        pos = ids.index(calc_id)
        self.model = model
        self.calc_id = calc_id
        self.distance = float(distance)
        self.x = data.read(np.array([pos]))  # what the model sees (normalized as it was trained)
        with h5py.File(Path(dataset_dir) / "dataset.h5", "r") as f:
            self.raw = np.asarray(f["samples"][int(data.table["sample"].iat[pos])], np.float32)
            self.channels = json.loads(f.attrs["channels"])
            self.channel_units = json.loads(f.attrs["channel_units"])
            self.normalization = str(f.attrs["normalization"])
        self.geometry = sample_geometry(dataset_dir, calc_id)
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        names = [ly.name for ly in conv_layers(model)]
        self.source = w.ToggleButtons(options=self.SOURCES, value="input", description="show")
        self.layer = w.Dropdown(options=names, value=names[0], description="layer")
        self.channel = w.IntSlider(0, 0, 0, description="channel")
        self.axis = w.ToggleButtons(options=[("a", 0), ("b", 1), ("c", 2)], value=2,
                                    description="slice across")  # fmt: skip
        self.index = w.IntSlider(0, 0, 0, description="slice")
        self.view = FigureView()
        self._limits(self.axis)
        self.update()
        for control in (self.source, self.layer, self.channel, self.axis, self.index):
            control.observe(self._changed, names="value")

    @property
    def fig(self) -> Any:
        return self.view.figure

    def _structural(self) -> tuple[Any, ...]:
        return (self.source, self.layer, self.axis)

    def array(self) -> np.ndarray:
        """The current 4D array (X, Y, Z, C) being sliced."""
        source = self.source.value
        key = (source, self.layer.value if source == "activation" else "")
        if key not in self._cache:
            if source == "input":
                self._cache[key] = self.raw
            elif source == "activation":
                self._cache[key] = activations(self.model, self.layer.value, self.x)[0]
            else:
                self._cache[key] = saliency(self.model, self.x)[0]
        return self._cache[key]

    def _limits(self, owner: Any = None) -> None:
        arr = self.array()
        self.channel.max = arr.shape[-1] - 1
        n = arr.shape[self.axis.value]
        if owner is self.axis:  # a new axis: the plane where the sample is largest along it
            ax = self.axis.value
            weight = np.abs(self.raw).sum(axis=tuple(k for k in range(4) if k != ax))
            value = int(weight.argmax()) * n // self.raw.shape[ax]
        else:  # another source or layer: the same place in the cell on its grid
            value = int(self.index.value * n // max(self._seen, 1))
        self._seen = n
        _set_slider(self.index, n - 1, value)

    _seen = 1

    def geometry_shown(self) -> SampleGeometry:
        """The sample's geometry on the grid of the array shown (coarser for pooled layers)."""
        return self.geometry.coarsened(self.array().shape[:3])

    def units(self) -> str:
        source = self.source.value
        if source == "input":
            return self.channel_units[self.channel.value]
        if source == "activation":
            return "activation"
        return "d p / d input" + ("" if self.normalization == "none" else " (normalized)")

    def figure(self) -> Any:
        arr = self.array()
        source = self.source.value
        vol = arr[..., self.channel.value]
        name = self.channels[self.channel.value] if source != "activation" else (
            f"{self.layer.value} map {self.channel.value}")  # fmt: skip
        what = (f"as stored (the model sees it {self.normalization}-normalized)"
                if source == "input" and self.normalization != "none" else "")  # fmt: skip
        geometry = self.geometry_shown()
        return slice_figure(
            vol, self.axis.value, self.index.value, geometry.vectors,
            title=f"{self.calc_id}: {source} {name}, slice {self.index.value}",
            units=self.units(), geometry=geometry, distance=self.distance, note=what,
        )  # fmt: skip

    def update(self) -> None:
        fig = self.figure()
        fig.layout.meta = {**fig.layout.meta, "view": "density", "source": self.source.value,
                           "layer": self.layer.value, "channel": self.channel.value}  # fmt: skip
        self.view.show(fig)

    def widget(self) -> Any:
        import ipywidgets as w

        controls = _panel([self.source, self.layer, self.channel, self.axis, self.index])
        return w.HBox([controls, self.view.output])

    def save(self, out_dir: str | Path, stem: str = "density") -> list[Path]:
        paths = []
        for source in self.SOURCES:
            self.source.value = source
            paths.append(save_figure(self.figure(), Path(out_dir) / f"{stem}_{source}.png"))
        self.source.value = "input"
        return paths


def _attr(dataset_dir: str | Path, name: str) -> Any:
    import h5py

    with h5py.File(Path(dataset_dir) / "dataset.h5", "r") as f:
        return f.attrs[name]


def dataset_voxel_size(dataset_dir: str | Path, rtol: float = 0.01) -> np.ndarray:
    """The voxel size (A along a, b, c) every sample of the dataset shares (a cube dataset, or
    one lattice throughout). Raises when the samples' lattices give different voxels: kernel axes
    are then in the voxels of one chosen sample, ``FilterExplorer(model,
    geometry=sample_geometry(dataset_dir, calc_id))``, not in an average of several."""
    from magnb.store import read_table

    table = read_table(dataset_dir)
    ok = table[(table["status"] == "ok") & (table["sample"] >= 0)]
    if ok.empty:
        raise MagnbError("no usable samples in the dataset", Path(dataset_dir))
    sizes = np.array([sample_geometry(dataset_dir, cid).voxel_size for cid in ok["calc_id"]])
    if not np.allclose(sizes, sizes[0], rtol=rtol):
        lo, hi = sizes.min(axis=0), sizes.max(axis=0)
        raise MagnbError(
            "the samples' voxels differ (A along a, b, c: "
            + ", ".join(f"{a:.3f}-{b:.3f}" for a, b in zip(lo, hi, strict=True))
            + "): draw kernels in one sample's voxels, geometry=sample_geometry(dataset, calc_id)",
            Path(dataset_dir),
        )
    return sizes[0]


def moment_histogram(table: pd.DataFrame, threshold: float, bins: int = 40) -> Any:
    """Histogram of |moment| per sample with the class threshold drawn, coloured by the spin
    pattern (or by FM/AFM where the run tags name no pattern), so the cut is chosen by looking
    (as the seed project chose 4 muB)."""
    import plotly.express as px

    ok = table[table["status"] == "ok"].copy()
    if ok.empty:
        raise MagnbError("no usable samples in the table to draw")
    ok["|moment| (muB)"] = ok["moment"].abs()
    by = "order_pattern" if "order_pattern" in ok and (ok["order_pattern"] != "").any() else "order"
    ok[by] = ok[by].replace("", "unknown")
    n_above = int((ok["|moment| (muB)"] > threshold).sum())
    fig = px.histogram(
        ok,
        x="|moment| (muB)",
        color=by,
        nbins=bins,
        barmode="stack",
        title=f"Total moment per cell: {n_above} of {len(ok)} above {threshold:g} muB",
    )
    fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"t = {threshold:g} muB")
    return fig


def class_balance(table: pd.DataFrame, label: str = "moment_class") -> pd.DataFrame:
    """Counts of each class of ``label`` per split (rows: split, columns: class)."""
    ok = table[table["status"] == "ok"]
    return ok.groupby(["split", label]).size().unstack(fill_value=0)


def class_balance_figure(table: pd.DataFrame, label: str = "moment_class") -> Any:
    """Class balance per split as grouped bars."""
    import plotly.express as px

    counts = class_balance(table, label).reset_index().melt(id_vars="split", value_name="samples")
    counts[label] = counts[label].astype(str)
    return px.bar(counts, x="split", y="samples", color=label, barmode="group",
                  title=f"{label} per split")  # fmt: skip


def learning_curves(history: pd.DataFrame, title: str = "Learning curves") -> Any:
    """Loss and the first metric against epoch, training and validation."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if history.empty:
        raise MagnbError("the run has no history yet")
    metric = next((c for c in history.columns if c not in ("epoch", "loss", "learning_rate")
                   and not c.startswith("val_")), None)  # fmt: skip
    cols = [("loss", "loss")] + ([(metric, metric)] if metric else [])
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=[c[1] for c in cols])
    for k, (name, _) in enumerate(cols, start=1):
        for prefix, dash in (("", "solid"), ("val_", "dash")):
            if prefix + name in history:
                fig.add_trace(
                    go.Scatter(
                        x=history["epoch"] + 1,
                        y=history[prefix + name],
                        name=f"{'validation' if prefix else 'training'} {name}",
                        line={"dash": dash},
                    ),
                    row=1,
                    col=k,
                )
        fig.update_xaxes(title_text="epoch", row=1, col=k)
    fig.update_layout(title=title)
    return fig


def runs_comparison(runs: pd.DataFrame, x: str, metric: str) -> Any:
    """The run registry as a plot: ``metric`` against a config field ``x``."""
    import plotly.express as px

    if runs.empty:
        raise MagnbError("no finished runs to compare")
    for col in (x, metric):
        if col not in runs:
            raise MagnbError(f"no column {col!r} in the run registry; have {list(runs.columns)}")
    baseline_cols = [
        c for c in runs.columns if c.endswith(metric.split("_", 1)[-1]) and c != metric
    ]
    long = runs.melt(id_vars=["run_id", x], value_vars=[metric, *baseline_cols], var_name="method")
    return px.scatter(
        long, x=x, y="value", color="method", hover_name="run_id", title=f"{metric} against {x}"
    )


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (.png via kaleido when it works, else .html beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        try:
            fig.write_image(str(path))
            return path
        except Exception:  # kaleido or its browser missing: fall back to HTML
            path = path.with_suffix(".html")
    fig.write_html(str(path), include_plotlyjs=True)  # self-contained: opens offline
    return path


# --------------------------------------------------------------------------------------------
# a run, opened for looking


@dataclass
class RunView:
    """What stage 05 reads of a finished run (nothing here writes to it)."""

    run_dir: Path
    config: Any  #: magnb.config.TrainConfig
    model: Any
    metrics: dict[str, Any]
    history: pd.DataFrame

    @property
    def dataset_dir(self) -> Path:
        return Path(self.config.dataset_dir)


def latest_run(runs_dir: str | Path) -> Path:
    """The most recently finished run folder (by its metrics.json)."""
    runs = sorted(Path(runs_dir).glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise MagnbError("no finished run: train one first (magnb train)", Path(runs_dir))
    return runs[-1].parent


def load_run(runs_dir: str | Path, run_id: str | None = None) -> RunView:
    """Open a run (the latest when ``run_id`` is None); the model loads in Keras' safe mode."""
    import keras

    import magnb.layers  # noqa: F401  (registers PeriodicConv3D for deserialization)
    from magnb.config import load_train_config
    from magnb.train import read_history

    run_dir = Path(runs_dir) / run_id if run_id else latest_run(runs_dir)
    for name in ("config.yaml", "model.keras", "metrics.json"):
        if not (run_dir / name).is_file():
            raise MagnbError(f"incomplete run: no {name}", run_dir)
    return RunView(
        run_dir=run_dir,
        config=load_train_config(run_dir / "config.yaml"),
        model=keras.saving.load_model(run_dir / "model.keras", safe_mode=True),
        metrics=json.loads((run_dir / "metrics.json").read_text()),
        history=read_history(run_dir),
    )


def save_run_pictures(run: RunView, out_dir: str | Path | None = None) -> list[Path]:
    """Every static picture of a run: filters, one sample's input/activation/saliency, the
    dataset views and learning curves. Defaults to ``<run>/figures``."""
    from magnb.baselines import dataset_threshold
    from magnb.store import read_table
    from magnb.train import list_runs

    out = Path(out_dir) if out_dir is not None else run.run_dir / "figures"
    table = read_table(run.dataset_dir)
    threshold = dataset_threshold(run.dataset_dir)
    calc_id = default_sample(run.dataset_dir)
    geometry = sample_geometry(run.dataset_dir, calc_id)
    paths = FilterExplorer(run.model, geometry=geometry).save(out)
    paths += DensityExplorer(run.model, run.dataset_dir, calc_id).save(out)
    paths.append(save_figure(moment_histogram(table, threshold), out / "moment_histogram.png"))
    paths.append(save_figure(class_balance_figure(table, run.config.label), out / "balance.png"))
    if not run.history.empty:
        paths.append(save_figure(learning_curves(run.history), out / "learning_curves.png"))
    runs = list_runs(run.run_dir.parent)
    metric = next((c for c in runs.columns if c.startswith("model_")), None)
    if metric is not None and len(runs) > 1:
        fig = runs_comparison(runs, "learning_rate", metric)
        paths.append(save_figure(fig, out / "runs.png"))
    return paths
