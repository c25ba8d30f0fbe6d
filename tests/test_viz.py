"""Stage 05: the explorers show the right slices on the real cell, saliency is real, atoms are
the right ones, an empty sample looks empty, and static exports are pictures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magnb.collect import CollectConfig, collect
from magnb.config import TrainConfig
from magnb.dataset import ScrapeConfig, scrape
from magnb.errors import MagnbError
from magnb.model import build_model
from magnb.split import SplitConfig, split_all
from magnb.viz import (
    DENSITY_FLOOR,
    DensityExplorer,
    FilterExplorer,
    SampleGeometry,
    atoms_near_slice,
    attribution_figure,
    dataset_voxel_size,
    isosurface_figure,
    plane_axes,
    projections_figure,
    saliency,
    sample_geometry,
    save_figure,
    slice_figure,
)
from tests.conftest import make_fixture_tree

HEX = np.array([[0.5, 0.0, 0.0], [-0.25, 0.25 * 3**0.5, 0.0], [0.0, 0.0, 0.4]])  # A per voxel


@pytest.fixture(scope="module")
def fixture_dataset(tmp_path_factory, vasp_dir):
    """The real fixtures scraped to an 8 x 12 x 16 fractional grid, whole cells (no crop), no
    normalization."""
    root = tmp_path_factory.mktemp("viz")
    tree = make_fixture_tree(root / "calcs", vasp_dir)
    collect(CollectConfig(source=tree, data_dir=root / "data", progress=False))
    split_all(SplitConfig(data_dir=root / "data", progress=False, workers=1))
    scrape(
        ScrapeConfig(
            data_dir=root / "data",
            grid=(8, 12, 16),
            channels=("m+", "m-"),
            kfold=0,
            fractions=(1.0, 0.0, 0.0),
            stratify="none",
            progress=False,
            workers=1,
        )  # fmt: skip
    )
    return root / "data"


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(1)
    config = TrainConfig(filters=(3, 2), kernel_size=(5, 3), pool=(2, 2), dense=(4,))
    return build_model(config, (8, 12, 16, 2), 2)


@pytest.fixture(scope="module")
def deep_model():
    """7^3 first-layer kernels, 5^3 after a pool of 2 (the demo's shape of problem)."""
    import keras

    keras.utils.set_random_seed(2)
    config = TrainConfig(filters=(3, 2), kernel_size=(7, 5), pool=(2, 2), dense=(4,))
    return build_model(config, (16, 16, 16, 2), 2)


def _shown(view) -> dict:
    """The figure the page draws: the Output's only item, a plotly mime bundle."""
    (item,) = view.output.outputs
    assert item["output_type"] == "display_data"
    return item["data"]["application/vnd.plotly.v1+json"]


def test_filter_explorer_callbacks_show_the_right_slice(model):
    explorer = FilterExplorer(model, voxel_size=(0.5, 0.25, 0.25))
    kernel = np.asarray(model.get_layer("periodic_conv_1").kernel)
    explorer.filter.value = 2
    explorer.channel.value = 1
    for axis in (0, 1, 2):
        explorer.axis.value = axis
        assert explorer.index.max == kernel.shape[axis] - 1
        assert explorer.index.value == 2  # a new axis starts at the kernel's centre
        for index in (0, 3):
            explorer.index.value = index
            shown = np.asarray(explorer.slice_fig.data[0].z).T
            expected = np.take(kernel[..., 1, 2], index, axis=axis)
            np.testing.assert_array_equal(shown, expected)
            assert explorer.slice_fig.layout.meta["index"] == index
    # axis coordinates in angstrom from the kernel's centre: kernel voxels along b are 0.25 A
    explorer.axis.value = 0
    np.testing.assert_allclose(explorer.slice_fig.data[0].x, (np.arange(5) - 2) * 0.25)
    # the deeper layer sees a grid pooled by 2: its voxels are twice as large
    explorer.layer.value = "periodic_conv_2"
    assert explorer.filter.max == 1 and explorer.index.max == 2
    np.testing.assert_allclose(explorer.voxel_size, [1.0, 0.5, 0.5])
    shown = np.asarray(explorer.slice_fig.data[0].z).T
    k2 = np.asarray(model.get_layer("periodic_conv_2").kernel)
    assert (explorer.filter.value, explorer.channel.value) == (1, 1)  # filter 2 clamped to 1
    np.testing.assert_array_equal(shown, k2[explorer.index.value, :, :, 1, 1])
    proj = explorer.proj_fig.data
    np.testing.assert_allclose(np.asarray(proj[2].z).T, k2[..., 1, 1].mean(axis=2), rtol=1e-6)


def test_a_deeper_layer_gets_its_own_axes_and_starts_at_its_centre(deep_model):
    """Defect: switching to periodic_conv_2 (5^3) left the slice at the edge (the slider was
    clamped from 6 to 4) and the page drew one column with the old layer's x range."""
    explorer = FilterExplorer(deep_model, voxel_size=(0.3, 0.3, 0.3))
    explorer.index.value = 6  # the edge of a 7^3 kernel
    explorer.layer.value = "periodic_conv_2"
    assert (explorer.index.max, explorer.index.value) == (4, 2)
    page = _shown(explorer.views["slice"])
    assert page["layout"]["meta"]["index"] == 2
    heat = explorer.slice_fig.data[0]
    np.testing.assert_allclose(heat.x, (np.arange(5) - 2) * 0.6)  # 5 columns, 0.6 A apart
    np.testing.assert_allclose(heat.y, (np.arange(5) - 2) * 0.6)
    k2 = np.asarray(deep_model.get_layer("periodic_conv_2").kernel)
    np.testing.assert_array_equal(np.asarray(heat.z).T, k2[:, :, 2, 0, 0])
    explorer.axis.value = 0
    explorer.layer.value = "periodic_conv_1"
    assert (explorer.index.max, explorer.index.value) == (6, 3)


def test_explorers_redraw_plain_figures_into_outputs(deep_model):
    """Defect: FigureWidgets (anywidget models) could fail to initialize after a kernel restart
    or a re-run cell and stay empty. Every figure is now a plain plotly figure, the only item of
    an ipywidgets Output, replaced whole at each change; no FigureWidget anywhere in the panel."""
    import plotly.graph_objects as go

    explorer = FilterExplorer(deep_model, voxel_size=0.3)

    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)

    widgets = list(walk(explorer.widget()))
    assert not [w for w in widgets if isinstance(w, go.FigureWidget)]
    assert not [w for w in widgets if type(w).__module__.startswith("anywidget")]
    for view in explorer.views.values():
        assert _shown(view)["data"], "a figure with no traces"
    for index in (0, 5):
        explorer.index.value = index
        page = _shown(explorer.views["slice"])
        assert page["layout"]["meta"]["index"] == index and page["data"][0]["type"] == "heatmap"
    again = FilterExplorer(deep_model, voxel_size=0.3)  # the cell run again: a fresh panel
    assert _shown(again.views["projections"])["data"] and _shown(explorer.views["slice"])["data"]


def test_atoms_near_a_slice_match_positions_by_hand(fixture_dataset):
    """NO molecule, 2 x 3 x 4 A box on 8 x 12 x 16 (0.25 A voxels): N at fractional (0.5, 0.5,
    0.566480), O at (0.5, 0.5, 0.255897), so in voxels N = (4, 6, 9.0637), O = (4, 6, 4.0944).
    Distances are in A, normal to the plane."""
    geo = sample_geometry(fixture_dataset, "NO__polarized")
    assert geo.species == ["N", "O"]
    np.testing.assert_allclose(geo.positions, [[4, 6, 9.06368], [4, 6, 4.094352]], atol=1e-5)
    np.testing.assert_allclose(geo.voxel_size, [0.25, 0.25, 0.25])
    np.testing.assert_allclose(geo.vectors, np.eye(3) * 0.25)
    assert list(atoms_near_slice(geo, 2, 9, distance=0.25)) == [0]
    assert list(atoms_near_slice(geo, 2, 4, distance=0.25)) == [1]
    assert list(atoms_near_slice(geo, 2, 9, distance=0.015)) == []  # N is 0.0159 A away
    assert list(atoms_near_slice(geo, 2, 7, distance=0.6)) == [0]  # 0.516 A and 0.726 A away
    assert list(atoms_near_slice(geo, 0, 7, distance=0.7)) == []  # 3 voxels, either way round
    assert list(atoms_near_slice(geo, 1, 0, distance=1.5)) == [0, 1]  # 6 voxels: wraps, b periodic
    # defect: only atoms within one voxel (0.25 A here) were drawn; the default is 1 A, stated
    assert list(atoms_near_slice(geo, 2, 6)) == [0, 1]  # 0.766 A and 0.476 A away
    fig = slice_figure(np.zeros((8, 12, 16)), 2, 9, geometry=geo)
    assert list(fig.data[1].text) == ["N"]
    assert (fig.data[1].x[0], fig.data[1].y[0]) == pytest.approx((1.0, 1.5))  # A, in-plane
    assert "atoms within 1 A" in fig.layout.title.text


def test_atom_distance_is_normal_to_a_sheared_plane():
    """Hexagonal voxels (120 degrees between a and b): the planes across a are
    0.5 * sin(60) = 0.433 A apart, not 0.5 A."""
    geo = SampleGeometry(positions=np.array([[2.0, 0.0, 0.0]]), species=["Cr"],
                         voxel_size=np.linalg.norm(HEX, axis=1), shape=(6, 6, 4),
                         periodic=(True, True, True), voxel_vectors=HEX)  # fmt: skip
    assert list(atoms_near_slice(geo, 0, 0, distance=0.87)) == [0]  # 2 x 0.433 = 0.866 A
    assert list(atoms_near_slice(geo, 0, 0, distance=0.86)) == []


def test_a_sheared_cell_is_drawn_on_its_real_coordinates(fixture_dataset):
    """Defect: non-orthogonal cells were drawn as squares. Every voxel centre's Cartesian
    position in the plane must show that voxel's value, for a synthetic hexagonal cell and for
    the real Si fixture (fcc primitive cell, 60 degrees)."""
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(6, 6, 4))
    for vectors, axis in (
        (HEX, 2),
        (HEX, 0),
        (sample_geometry(fixture_dataset, "Si__static").vectors, 2),
    ):
        shape = (6, 6, 4)
        fig = slice_figure(vol, axis, 1, vectors)
        heat = fig.data[0]
        xs, ys, z = np.asarray(heat.x), np.asarray(heat.y), np.asarray(heat.z, dtype=float)
        rest = [k for k in range(3) if k != axis]
        m = plane_axes(vectors, axis)
        for p in range(shape[rest[0]]):
            for q in range(shape[rest[1]]):
                x, y = m @ [p, q]
                shown = z[np.abs(ys - y).argmin(), np.abs(xs - x).argmin()]
                assert shown == pytest.approx(np.take(vol, 1, axis=axis)[p, q], rel=1e-6)
        # a sheared plane leaves pixels outside the parallelogram empty; the b-c plane of the
        # hexagonal cell is orthogonal and stays a plain heatmap of the slice
        assert np.isnan(z).any() == (abs(m[0, 1]) > 0)
    # the hexagonal plane: b leans back, so the cell reaches x = 5 * -0.25 A
    assert min(slice_figure(vol, 2, 1, HEX).data[0].x) < -1.0


def test_an_empty_sample_is_white_and_says_so(fixture_dataset, model):
    """Defect: a zero-moment sample (|m| ~ 1e-12) was stretched to full colour."""
    tiny = np.random.default_rng(1).normal(size=(4, 4, 4)) * 1e-12
    fig = slice_figure(tiny, 2, 1, units="muB/A^3")
    assert fig.data[0].zmax == DENSITY_FLOOR and fig.data[0].zmin == -DENSITY_FLOOR
    assert "no magnetization" in fig.layout.annotations[0].text
    real = slice_figure(tiny * 1e12, 2, 1, units="muB/A^3")
    assert (
        real.data[0].zmax == pytest.approx(np.abs(tiny * 1e12).max())
        and not real.layout.annotations
    )
    # the real non-spin-polarized Si sample, as the explorer shows it
    explorer = DensityExplorer(model, fixture_dataset, "Si__static")
    assert "no magnetization" in explorer.fig.layout.annotations[0].text
    assert (
        "no magnetization"
        in projections_figure(explorer.raw[..., 0], units="muB/A^3").layout.annotations[-1].text
    )


def test_density_explorer_shows_stored_units_not_normalized(model, fixture_dataset, tmp_path):
    """Defect: the colour bar said "normalized" for a dataset stored without normalization. The
    input is shown as stored, in the dataset's channel units."""
    explorer = DensityExplorer(model, fixture_dataset, "NO__polarized")
    assert explorer.normalization == "none"
    assert explorer.fig.data[0].colorbar.title.text == "muB/A^3"
    assert "normalized" not in explorer.fig.layout.title.text
    explorer.source.value = "saliency"
    assert explorer.fig.data[0].colorbar.title.text == "d p / d input"
    # a normalized copy: still drawn in muB/A^3 as stored, and the title says what the model sees
    scrape(
        ScrapeConfig(
            data_dir=fixture_dataset,
            out_dir=tmp_path,
            grid=(8, 12, 16),
            channels=("m+", "m-"),
            kfold=0,
            fractions=(1.0, 0.0, 0.0),
            stratify="none",
            normalization="maxabs",
            progress=False,
            workers=1,
        )  # fmt: skip
    )
    scaled = DensityExplorer(model, tmp_path, "NO__polarized")
    np.testing.assert_array_equal(scaled.raw, explorer.raw)
    assert not np.allclose(scaled.x[0], scaled.raw)
    assert scaled.fig.data[0].colorbar.title.text == "muB/A^3"
    assert "the model sees it maxabs-normalized" in scaled.fig.layout.title.text


def test_density_explorer_switches_sources(model, fixture_dataset):
    explorer = DensityExplorer(model, fixture_dataset, "NO__polarized")
    assert explorer.array().shape == (8, 12, 16, 2)
    explorer.axis.value = 2
    explorer.index.value = 9
    np.testing.assert_array_equal(np.asarray(explorer.fig.data[0].z).T, explorer.raw[:, :, 9, 0])
    np.testing.assert_allclose(explorer.raw, explorer.x[0], rtol=1e-6)  # no normalization here
    assert list(explorer.fig.data[1].text) == ["N"]
    assert _shown(explorer.view)["layout"]["meta"]["index"] == 9
    explorer.source.value = "activation"
    assert explorer.array().shape == (8, 12, 16, 3)
    assert explorer.channel.max == 2 and explorer.index.value == 9  # the same plane
    explorer.source.value = "saliency"
    assert explorer.array().shape == (8, 12, 16, 2) and np.abs(explorer.array()).max() > 0


def test_kernel_axes_use_one_samples_own_voxels(model, fixture_dataset):
    """Defect: kernel axes used one voxel size averaged over different lattices."""
    with pytest.raises(MagnbError, match="voxels differ"):
        dataset_voxel_size(fixture_dataset)
    geo = sample_geometry(fixture_dataset, "Si__static")
    explorer = FilterExplorer(model, geometry=geo)
    np.testing.assert_allclose(explorer.voxel_vectors, geo.vectors)
    assert "Si__static" in explorer.slice_fig.layout.title.text
    explorer.layer.value = "periodic_conv_2"
    np.testing.assert_allclose(explorer.voxel_vectors, geo.vectors * 2)


def test_layouts_leave_room_for_titles_and_ticks():
    """Defects: projection axis titles ran into the next panel; the isosurface was a 200-pixel
    plot with overlapping ticks."""
    vol = np.random.default_rng(2).normal(size=(5, 5, 5))
    proj = projections_figure(vol, 0.3)
    assert proj.layout.xaxis2.domain[0] - proj.layout.xaxis.domain[1] >= 0.1
    assert proj.layout.width >= 1000
    iso = isosurface_figure(vol, 0.5, 0.3)
    assert iso.layout.height >= 450 and iso.layout.scene.aspectmode == "data"
    assert iso.layout.scene.xaxis.nticks <= 5


def test_attribution_figure_puts_values_on_the_atoms_near_the_slice(fixture_dataset):
    geo = sample_geometry(fixture_dataset, "NO__polarized")
    vol = np.random.default_rng(3).normal(size=geo.shape)
    cart = geo.cartesian(geo.positions)
    table = pd.DataFrame({"species": geo.species, "value": [0.7, -0.2],
                          "x": cart[:, 0], "y": cart[:, 1], "z": cart[:, 2]})  # fmt: skip
    fig = attribution_figure(geo, table, vol, axis=2, distance=0.5)
    assert fig.layout.meta["index"] == 9  # the plane through N, the largest |value|
    marks = fig.data[-1]
    assert list(marks.text) == ["N +0.7"] and fig.layout.meta["atoms_drawn"] == 1
    assert (marks.x[0], marks.y[0]) == pytest.approx((1.0, 1.5))
    np.testing.assert_array_equal(np.asarray(fig.data[0].z).T, vol[:, :, 9])
    # the same atoms by fractions of the box or by voxels; a wider distance reaches O too
    frac = pd.DataFrame({"species": geo.species, "value": [0.7, -0.2],
                         **dict(zip(["frac_a", "frac_b", "frac_c"],
                                    (geo.positions / np.array(geo.shape)).T, strict=True))})  # fmt: skip
    wide = attribution_figure(geo, frac, vol, axis=2, index=6, distance=1.0)
    assert sorted(wide.data[-1].text) == ["N +0.7", "O -0.2"]
    sizes = np.asarray(wide.data[-1].marker.size)
    assert (
        sizes[list(wide.data[-1].text).index("N +0.7")]
        > sizes[list(wide.data[-1].text).index("O -0.2")]
    )
    with pytest.raises(MagnbError, match="positions"):
        attribution_figure(geo, table[["species", "value"]], vol)


def test_saliency_has_the_input_shape_and_is_not_zero(model):
    x = np.random.default_rng(0).normal(size=(2, 8, 12, 16, 2)).astype("float32")
    grad = saliency(model, x)
    assert grad.shape == x.shape
    assert np.abs(grad).max() > 0
    # the gradient of a sum of outputs is linear: check one entry by finite differences
    import keras

    probs = model.predict(x, verbose=0)
    cls = probs.argmax(axis=1)
    eps = 1e-2
    bumped = x.copy()
    i = np.unravel_index(np.abs(grad[0]).argmax(), grad[0].shape)
    bumped[(0, *i)] += eps
    change = (keras.ops.convert_to_numpy(model(bumped))[0, cls[0]] - probs[0, cls[0]]) / eps
    assert change == pytest.approx(grad[(0, *i)], rel=0.1)


def test_static_exports_are_pictures(model, tmp_path):
    import shutil

    # kaleido's PNG export needs a Chrome; without one save() would write .html and this test
    # would check the fallback instead of the pictures: the missing browser is a failure
    if not (shutil.which("chromium") or shutil.which("google-chrome")):
        pytest.fail("no chromium for kaleido's PNG export (.ci/system-packages installs it)")
    paths = FilterExplorer(model).save(tmp_path)
    assert len(paths) == 3
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000
        assert path.suffix == ".png" and data[:8] == b"\x89PNG\r\n\x1a\n", path
    out = save_figure(slice_figure(np.ones((2, 2, 2)), 0, 0), tmp_path / "one.html")
    assert out.read_text().count("plotly") > 0
