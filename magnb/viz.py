"""Stage 05, visualize: what the filters learned, where they fire, and the dataset and runs.

- :class:`FilterExplorer`: walk through a trained 3D kernel slice by slice (layer, filter, input
  channel, axis, slice), beside its three mean projections and an isosurface.
- :class:`DensityExplorer`: the same slicing over a sample's input channels, a layer's activation
  maps and a saliency map, with the atoms that lie near the slice drawn on it.
- Dataset and run views: the moment histogram with its threshold, class balance per split,
  learning curves, the run registry as a plot.

Every figure is plotly; the explorers wrap them in ipywidgets for JupyterLab, and everything
also works headless: :func:`save_figure` writes a PNG (kaleido, with a Chromium on the machine) or
self-contained HTML, so batch runs leave pictures. Voxel sizes are in angstrom. For a
fractional-grid dataset the slice axes run along the lattice vectors (a sheared view for
non-orthogonal cells), with the mean voxel size along each vector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
# where a sample sits: voxel size and atoms


@dataclass(frozen=True)
class SampleGeometry:
    """Atoms of one sample in its voxel coordinates, and its voxel size."""

    positions: np.ndarray  #: (n, 3) voxel coordinates (grid point k of an axis is at k)
    species: list[str]
    voxel_size: np.ndarray  #: (3,) A per voxel along a, b, c
    shape: tuple[int, int, int]
    periodic: tuple[bool, bool, bool]


def sample_geometry(dataset_dir: str | Path, calc_id: str) -> SampleGeometry:
    """The atoms (all supercell images inside the sample) and voxel size of a scraped sample."""
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
        return SampleGeometry(
            positions=positions,
            species=[split["species"][i] for i in atom],
            voxel_size=np.full(3, settings["cube_side"] / settings["cube_points"]),
            shape=shape,  # type: ignore[arg-type]
            periodic=periodic,  # type: ignore[arg-type]
        )
    frac = np.asarray(split["frac_coords"], dtype=float) % 1.0
    lengths = np.linalg.norm(split["lattice"], axis=1)
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
    size = lengths / grid
    size[2] = lengths[2] * planes / native_nz / grid[2]
    return SampleGeometry(
        positions=np.concatenate(positions) if positions else np.zeros((0, 3)),
        species=species,
        voxel_size=size,
        shape=shape,  # type: ignore[arg-type]
        periodic=periodic,  # type: ignore[arg-type]
    )


def atoms_near_slice(
    geometry: SampleGeometry, axis: int, index: int, within: float = 1.0
) -> np.ndarray:
    """Indices of the atoms whose coordinate along ``axis`` is within ``within`` voxels of slice
    ``index`` (distances wrap around periodic axes)."""
    d = np.abs(geometry.positions[:, axis] - index)
    if geometry.periodic[axis]:
        n = geometry.shape[axis]
        d = np.minimum(d, n - d)
    return np.flatnonzero(d <= within + 1e-9)


# --------------------------------------------------------------------------------------------
# figures


def slice_figure(
    volume: np.ndarray,
    axis: int,
    index: int,
    voxel_size: np.ndarray | tuple[float, float, float] = (1.0, 1.0, 1.0),
    title: str = "",
    units: str = "",
    geometry: SampleGeometry | None = None,
    within: float = 1.0,
) -> Any:
    """Heatmap of one slice in angstrom, diverging colours centred on zero, with nearby atoms."""
    import plotly.graph_objects as go

    data = slice_volume(volume, axis, index)
    rest = [k for k in range(3) if k != axis]
    size = np.broadcast_to(np.asarray(voxel_size, dtype=float), 3)
    xs = np.arange(volume.shape[rest[0]]) * size[rest[0]]
    ys = np.arange(volume.shape[rest[1]]) * size[rest[1]]
    vmax = float(np.abs(data).max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=data.T,
            x=xs,
            y=ys,
            colorscale="RdBu_r",
            zmid=0.0,
            zmin=-vmax,
            zmax=vmax,
            colorbar={"title": units},
        )  # fmt: skip
    )
    fig.add_trace(
        go.Scatter(x=[], y=[], mode="markers+text", name="atoms", textposition="top center")
    )
    if geometry is not None:
        _set_atoms(fig.data[1], geometry, axis, index, within, size)
    fig.update_layout(
        title=title or f"slice {index} across {AXES[axis]}",
        xaxis={"title": f"along {AXES[rest[0]]} (A)", "constrain": "domain"},
        yaxis={"title": f"along {AXES[rest[1]]} (A)", "scaleanchor": "x", "constrain": "domain"},
        showlegend=False,
        width=620,
        height=480,
    )
    return fig


def _show_in(widget: Any, fig: Any) -> None:
    """Show ``fig`` in a FigureWidget: traces updated in place when their kinds are unchanged (the
    page never sees an empty figure), replaced otherwise."""
    same = [t.type for t in widget.data] == [t.type for t in fig.data]
    with widget.batch_update():
        if same:
            for shown, new in zip(widget.data, fig.data, strict=True):
                shown.update(new.to_plotly_json(), overwrite=True)
        else:
            widget.data = []
            widget.add_traces(list(fig.data))
        widget.layout = fig.layout


def _panel(controls: list[Any]) -> Any:
    """A column of controls wide enough for their labels."""
    import ipywidgets as w

    for control in controls:
        control.style = {"description_width": "90px"}
        control.layout = w.Layout(width="330px")
    return w.VBox(controls, layout=w.Layout(min_width="340px"))


def _set_atoms(trace: Any, geometry: SampleGeometry, axis: int, index: int, within: float,
               size: np.ndarray) -> None:  # fmt: skip
    rest = [k for k in range(3) if k != axis]
    near = atoms_near_slice(geometry, axis, index, within)
    pos = geometry.positions[near]
    names = [geometry.species[i] for i in near]
    trace.x = (pos[:, rest[0]] % geometry.shape[rest[0]]) * size[rest[0]] if len(near) else []
    trace.y = (pos[:, rest[1]] % geometry.shape[rest[1]]) * size[rest[1]] if len(near) else []
    trace.text = names
    trace.marker = {
        "size": 12,
        "color": [SPECIES_COLOURS.get(n, "#444444") for n in names],
        "line": {"width": 1, "color": "black"},
    }


def projections_figure(
    volume: np.ndarray, voxel_size: Any = (1.0, 1.0, 1.0), title: str = "Mean projections"
) -> Any:
    """The three mean projections side by side, each centred on zero."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    size = np.broadcast_to(np.asarray(voxel_size, dtype=float), 3)
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"mean along {a}" for a in AXES])
    for k, proj in enumerate(projections(volume)):
        rest = [j for j in range(3) if j != k]
        vmax = float(np.abs(proj).max()) or 1.0
        fig.add_trace(
            go.Heatmap(
                z=proj.T,
                x=np.arange(proj.shape[0]) * size[rest[0]],
                y=np.arange(proj.shape[1]) * size[rest[1]],
                colorscale="RdBu_r",
                zmid=0.0,
                zmin=-vmax,
                zmax=vmax,
                showscale=k == 2,
            ),  # fmt: skip
            row=1,
            col=k + 1,
        )
        fig.update_xaxes(title_text=f"{AXES[rest[0]]} (A)", row=1, col=k + 1)
        fig.update_yaxes(title_text=f"{AXES[rest[1]]} (A)", row=1, col=k + 1)
    fig.update_layout(title=title)
    return fig


def isosurface_figure(
    volume: np.ndarray, level: float, voxel_size: Any = (1.0, 1.0, 1.0), title: str = ""
) -> Any:
    """Isosurfaces of a 3D array at +level (red) and -level (blue), ``level`` a fraction of the
    largest absolute value."""
    import plotly.graph_objects as go

    size = np.broadcast_to(np.asarray(voxel_size, dtype=float), 3)
    vmax = float(np.abs(volume).max()) or 1.0
    gx, gy, gz = np.meshgrid(*(np.arange(n) * s for n, s in zip(volume.shape, size, strict=True)),
                             indexing="ij")  # fmt: skip
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
    fig.update_layout(title=title or f"isosurfaces at +-{level:g} of the largest value")
    return fig


# --------------------------------------------------------------------------------------------
# the explorers


class _Explorer:
    """Shared control logic: a change of a control in ``_structural`` first adjusts the ranges of
    the others (``_limits``), then the figure is redrawn once (``update``)."""

    _adjusting = False

    def _structural(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _limits(self) -> None:
        raise NotImplementedError

    def update(self) -> None:
        raise NotImplementedError

    def _changed(self, change: Any) -> None:
        if self._adjusting:  # a slider clamped by _limits: one update follows anyway
            return
        if change["owner"] in self._structural():
            self._adjusting = True
            try:
                self._limits()
            finally:
                self._adjusting = False
        self.update()


class FilterExplorer(_Explorer):
    """Slice through the kernels of a trained model's 3D convolution layers.

    ``widget()`` returns the ipywidgets panel for JupyterLab; ``figures()`` the current plotly
    figures (for headless export); every control's callback goes through :meth:`update`.
    """

    def __init__(self, model: Any, voxel_size: Any = (1.0, 1.0, 1.0)) -> None:
        import ipywidgets as w
        import plotly.graph_objects as go

        self.model = model
        self.base_voxel = np.broadcast_to(np.asarray(voxel_size, dtype=float), 3).copy()
        names = [ly.name for ly in conv_layers(model)]
        self.layer = w.Dropdown(options=names, value=names[0], description="layer")
        self.filter = w.IntSlider(0, 0, 0, description="filter")
        self.channel = w.IntSlider(0, 0, 0, description="channel")
        self.axis = w.ToggleButtons(options=[("a", 0), ("b", 1), ("c", 2)], value=2,
                                    description="slice across")  # fmt: skip
        self.index = w.IntSlider(0, 0, 0, description="slice", continuous_update=True)
        self.level = w.FloatSlider(0.5, min=0.05, max=0.95, step=0.05, description="iso level")
        self.slice_fig = go.FigureWidget()
        self.proj_fig = go.FigureWidget()
        self.iso_fig = go.FigureWidget()
        self._limits()
        self.index.value = self.index.max // 2  # the kernel's centre
        self.update()
        for control in (self.layer, self.filter, self.channel, self.axis, self.index, self.level):
            control.observe(self._changed, names="value")

    def _structural(self) -> tuple[Any, ...]:
        return (self.layer, self.axis)

    def _limits(self) -> None:
        kernel = self.model.get_layer(self.layer.value).kernel
        kx, ky, kz, cin, filters = kernel.shape
        self.filter.max = filters - 1
        self.channel.max = cin - 1
        self.index.max = (kx, ky, kz)[self.axis.value] - 1
        if self.index.value > self.index.max:
            self.index.value = self.index.max // 2

    @property
    def voxel_size(self) -> np.ndarray:
        return self.base_voxel * layer_scale(self.model, self.layer.value)

    def volume(self) -> np.ndarray:
        return kernel_volume(self.model, self.layer.value, self.filter.value, self.channel.value)

    def figures(self) -> dict[str, Any]:
        vol = self.volume()
        label = f"{self.layer.value}, filter {self.filter.value}, channel {self.channel.value}"
        return {
            "slice": slice_figure(vol, self.axis.value, self.index.value, self.voxel_size,
                                  title=f"{label}: slice {self.index.value}", units="weight"),
            "projections": projections_figure(vol, self.voxel_size, title=f"{label}: projections"),
            "isosurface": isosurface_figure(vol, self.level.value, self.voxel_size, title=label),
        }  # fmt: skip

    def update(self) -> None:
        figs = self.figures()
        for widget, fig in ((self.slice_fig, figs["slice"]), (self.proj_fig, figs["projections"]),
                            (self.iso_fig, figs["isosurface"])):  # fmt: skip
            _show_in(widget, fig)

    def widget(self) -> Any:
        import ipywidgets as w

        controls = _panel(
            [self.layer, self.filter, self.channel, self.axis, self.index, self.level]
        )
        return w.VBox([w.HBox([controls, self.slice_fig]), self.proj_fig, self.iso_fig])

    def save(self, out_dir: str | Path, stem: str = "filters") -> list[Path]:
        return [
            save_figure(f, Path(out_dir) / f"{stem}_{k}.png") for k, f in self.figures().items()
        ]


class DensityExplorer(_Explorer):
    """Slice through one sample: its input channels, a layer's activation maps, or the saliency
    map, with the atoms near the slice drawn on it."""

    SOURCES = ("input", "activation", "saliency")

    def __init__(self, model: Any, dataset_dir: str | Path, calc_id: str | None = None,
                 within: float = 1.0) -> None:  # fmt: skip
        import ipywidgets as w
        import plotly.graph_objects as go

        from magnb.loader import DensityDataset

        data = DensityDataset(dataset_dir, split=None, label="moment", shuffle=False)
        ids = data.table["calc_id"].tolist()
        calc_id = calc_id or ids[0]
        if calc_id not in ids:
            raise MagnbError(f"no sample {calc_id!r} in the dataset", Path(dataset_dir))
        self.model = model
        self.calc_id = calc_id
        self.within = within
        self.x = data.read(np.array([ids.index(calc_id)]))
        self.geometry = sample_geometry(dataset_dir, calc_id)
        self.channels = json.loads(_attr(dataset_dir, "channels"))
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        names = [ly.name for ly in conv_layers(model)]
        self.source = w.ToggleButtons(options=self.SOURCES, value="input", description="show")
        self.layer = w.Dropdown(options=names, value=names[0], description="layer")
        self.channel = w.IntSlider(0, 0, 0, description="channel")
        self.axis = w.ToggleButtons(options=[("a", 0), ("b", 1), ("c", 2)], value=2,
                                    description="slice across")  # fmt: skip
        self.index = w.IntSlider(0, 0, 0, description="slice")
        self.fig = go.FigureWidget()
        self._limits()
        # start on the plane where the sample is largest (the atomic layer of a slab)
        self.index.value = int(np.abs(self.x[0]).sum(axis=(0, 1, 3)).argmax())
        self.update()
        for control in (self.source, self.layer, self.channel, self.axis, self.index):
            control.observe(self._changed, names="value")

    def _structural(self) -> tuple[Any, ...]:
        return (self.source, self.layer, self.axis)

    def array(self) -> np.ndarray:
        """The current 4D array (X, Y, Z, C) being sliced."""
        source = self.source.value
        key = (source, self.layer.value if source == "activation" else "")
        if key not in self._cache:
            if source == "input":
                self._cache[key] = self.x[0]
            elif source == "activation":
                self._cache[key] = activations(self.model, self.layer.value, self.x)[0]
            else:
                self._cache[key] = saliency(self.model, self.x)[0]
        return self._cache[key]

    def _limits(self) -> None:
        arr = self.array()
        self.channel.max = arr.shape[-1] - 1
        self.index.max = arr.shape[self.axis.value] - 1
        if self.index.value > self.index.max:
            self.index.value = self.index.max // 2

    def voxel_size(self) -> np.ndarray:
        arr = self.array()
        return (
            self.geometry.voxel_size * np.asarray(self.geometry.shape) / np.asarray(arr.shape[:3])
        )

    def figure(self) -> Any:
        arr = self.array()
        source = self.source.value
        vol = arr[..., self.channel.value]
        name = self.channels[self.channel.value] if source != "activation" else (
            f"{self.layer.value} map {self.channel.value}")  # fmt: skip
        geometry = self.geometry if source != "activation" else None
        return slice_figure(
            vol, self.axis.value, self.index.value, self.voxel_size(),
            title=f"{self.calc_id}: {source} {name}, slice {self.index.value}",
            units={"input": "normalized", "activation": "activation",
                   "saliency": "d output / d input"}[source],
            geometry=geometry, within=self.within,
        )  # fmt: skip

    def update(self) -> None:
        _show_in(self.fig, self.figure())

    def widget(self) -> Any:
        import ipywidgets as w

        controls = _panel([self.source, self.layer, self.channel, self.axis, self.index])
        return w.HBox([controls, self.fig])

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


def dataset_voxel_size(dataset_dir: str | Path) -> np.ndarray:
    """Mean voxel size (A along a, b, c) over the dataset's samples (for kernel axes)."""
    from magnb.store import read_table

    table = read_table(dataset_dir)
    ok = table[(table["status"] == "ok") & (table["sample"] >= 0)]
    sizes = [sample_geometry(dataset_dir, cid).voxel_size for cid in ok["calc_id"][:50]]
    return np.mean(sizes, axis=0)


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
    paths = FilterExplorer(run.model, dataset_voxel_size(run.dataset_dir)).save(out)
    test = table[(table["split"] == "test") & (table["status"] == "ok")]
    calc_id = test["calc_id"].iloc[0] if len(test) else None
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
