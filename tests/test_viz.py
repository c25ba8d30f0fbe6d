"""Stage 05: the explorers show the right slices, saliency is real, atoms are the right ones,
and static exports are pictures."""

from __future__ import annotations

import numpy as np
import pytest

from magnb.collect import CollectConfig, collect
from magnb.config import TrainConfig
from magnb.dataset import ScrapeConfig, scrape
from magnb.model import build_model
from magnb.split import SplitConfig, split_all
from magnb.viz import (
    DensityExplorer,
    FilterExplorer,
    atoms_near_slice,
    saliency,
    sample_geometry,
    save_figure,
    slice_figure,
)
from tests.conftest import make_fixture_tree


@pytest.fixture(scope="module")
def fixture_dataset(tmp_path_factory, vasp_dir):
    """The real fixtures scraped to an 8 x 12 x 16 fractional grid, whole cells (no crop)."""
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


def test_filter_explorer_callbacks_show_the_right_slice(model):
    explorer = FilterExplorer(model, voxel_size=(0.5, 0.25, 0.25))
    kernel = np.asarray(model.get_layer("periodic_conv_1").kernel)
    explorer.filter.value = 2
    explorer.channel.value = 1
    for axis in (0, 1, 2):
        explorer.axis.value = axis
        assert explorer.index.max == kernel.shape[axis] - 1
        for index in (0, 3):
            explorer.index.value = index
            shown = np.asarray(explorer.slice_fig.data[0].z).T
            expected = np.take(kernel[..., 1, 2], index, axis=axis)
            np.testing.assert_array_equal(shown, expected)
    # axis coordinates in angstrom: kernel voxels along b are 0.25 A
    explorer.axis.value = 0
    np.testing.assert_allclose(explorer.slice_fig.data[0].x, np.arange(5) * 0.25)
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


def test_atoms_near_a_slice_match_positions_by_hand(fixture_dataset):
    """NO molecule, 2 x 3 x 4 A box on 8 x 12 x 16: N at fractional (0.5, 0.5, 0.566480),
    O at (0.5, 0.5, 0.255897), so in voxels N = (4, 6, 9.0637), O = (4, 6, 4.0944)."""
    geo = sample_geometry(fixture_dataset, "NO__polarized")
    assert geo.species == ["N", "O"]
    np.testing.assert_allclose(geo.positions, [[4, 6, 9.06368], [4, 6, 4.094352]], atol=1e-5)
    np.testing.assert_allclose(geo.voxel_size, [0.25, 0.25, 0.25])
    assert list(atoms_near_slice(geo, 2, 9, within=1.0)) == [0]
    assert list(atoms_near_slice(geo, 2, 4, within=1.0)) == [1]
    assert list(atoms_near_slice(geo, 2, 9, within=0.06)) == []  # N is 0.0637 voxels away
    assert list(atoms_near_slice(geo, 2, 7, within=2.5)) == [0]  # 2.06 and 2.91 voxels away
    assert list(atoms_near_slice(geo, 0, 4, within=0.5)) == [0, 1]
    assert list(atoms_near_slice(geo, 0, 7, within=2.9)) == []  # 3 voxels, either way round
    assert list(atoms_near_slice(geo, 1, 0, within=6.0)) == [0, 1]  # 6 voxels: wraps, b periodic
    fig = slice_figure(np.zeros((8, 12, 16)), 2, 9, geo.voxel_size, geometry=geo, within=1.0)
    assert list(fig.data[1].text) == ["N"]
    assert (fig.data[1].x[0], fig.data[1].y[0]) == pytest.approx((1.0, 1.5))  # A, in-plane


def test_density_explorer_switches_sources(model, fixture_dataset):
    explorer = DensityExplorer(model, fixture_dataset, "NO__polarized")
    assert explorer.array().shape == (8, 12, 16, 2)
    explorer.axis.value = 2
    explorer.index.value = 9
    np.testing.assert_array_equal(np.asarray(explorer.fig.data[0].z).T, explorer.x[0, :, :, 9, 0])
    assert list(explorer.fig.data[1].text) == ["N"]
    explorer.source.value = "activation"
    assert explorer.array().shape == (8, 12, 16, 3)
    assert explorer.channel.max == 2
    explorer.source.value = "saliency"
    assert explorer.array().shape == (8, 12, 16, 2) and np.abs(explorer.array()).max() > 0


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
