"""Laws that hold for every input, checked by hypothesis on small random cases.

Each oracle here is written independently of the code under test (plain numpy loops, np.pad,
hand-rolled bookkeeping), so a test cannot pass by computing its expectation the way the library
does. Example counts are small and fixed (``derandomize``) so the file stays well under 90 s on
two shared cores and a failure reproduces.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from magnb.dataset import assign_splits
from magnb.grid import resample_fractional

FAST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SLOWER = settings(FAST, max_examples=15)


# --------------------------------------------------------------------------------------------
# resampling


@st.composite
def resample_case(draw):
    """A random grid, a target that is a whole multiple or divisor of it per axis, and a shift
    along each axis whose image on the target grid is a whole number of voxels."""
    n_in, n_out, shift_in, shift_out = [], [], [], []
    for _ in range(3):
        m = draw(st.integers(1, 5))
        r = draw(st.integers(1, 3))
        if draw(st.booleans()):  # up-sample m -> m * r
            n_in.append(m)
            n_out.append(m * r)
            s = draw(st.integers(0, m - 1))
            shift_in.append(s)
            shift_out.append(s * r)
        else:  # down-sample m * r -> m: shift by whole output voxels
            n_in.append(m * r)
            n_out.append(m)
            t = draw(st.integers(0, m - 1))
            shift_in.append(t * r)
            shift_out.append(t)
    seed = draw(st.integers(0, 2**31 - 1))
    lead = draw(st.sampled_from([(), (2,)]))
    x = np.random.default_rng(seed).normal(size=lead + tuple(n_in))
    return x, tuple(n_out), tuple(shift_in), tuple(shift_out)


@FAST
@given(resample_case())
def test_resampling_keeps_the_integral(case) -> None:
    x, shape, _, _ = case
    out = resample_fractional(x, shape)
    assert out.shape == x.shape[:-3] + shape
    assert np.isrealobj(out)
    # the cell integral is mean * V; the cell does not change, so the mean must not either
    np.testing.assert_allclose(
        out.mean(axis=(-3, -2, -1)), x.mean(axis=(-3, -2, -1)), rtol=1e-10, atol=1e-12
    )


@FAST
@given(resample_case())
def test_resampling_commutes_with_whole_voxel_rolls(case) -> None:
    x, shape, s_in, s_out = case
    axes = (-3, -2, -1)
    rolled_then_resampled = resample_fractional(np.roll(x, s_in, axis=axes), shape)
    resampled_then_rolled = np.roll(resample_fractional(x, shape), s_out, axis=axes)
    np.testing.assert_allclose(rolled_then_resampled, resampled_then_rolled, atol=1e-10)


# --------------------------------------------------------------------------------------------
# PeriodicConv3D against a direct convolution written from its documented formula


def _same_pad_before(n: int, k: int, s: int) -> int:
    """TensorFlow's ``padding='same'`` rule, written out: the total padding is split with the
    smaller half before."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2


def direct_conv(x, kernel, bias, strides, periodic):
    """``out[b, i, j, l, o] = sum x[b, pos(i), pos(j), pos(l), c] * kernel[di, dj, dl, c, o]``,
    with positions wrapped on periodic axes and zeros beyond the edge on the others."""
    batch, *grid, cin = x.shape
    ks = kernel.shape[:3]
    pad = []
    for n, k, s, p in zip(grid, ks, strides, periodic, strict=True):
        if p:
            c = (k - 1) // 2
            pad.append(("wrap", c, k - 1 - c))
        else:
            before = _same_pad_before(n, k, s)
            after = max(0, (math.ceil(n / s) - 1) * s + k - n - before)
            pad.append(("zero", before, after))
    xp = x
    for axis, (mode, before, after) in enumerate(pad, start=1):
        widths = [(0, 0)] * 5
        widths[axis] = (before, after)
        xp = np.pad(xp, widths, mode="wrap" if mode == "wrap" else "constant")
    outs = [math.ceil(n / s) for n, s in zip(grid, strides, strict=True)]
    y = np.zeros((batch, *outs, kernel.shape[-1]))
    for i in range(outs[0]):
        for j in range(outs[1]):
            for m in range(outs[2]):
                a, b, c = i * strides[0], j * strides[1], m * strides[2]
                patch = xp[:, a : a + ks[0], b : b + ks[1], c : c + ks[2], :]
                y[:, i, j, m, :] = np.einsum("nxyzc,xyzco->no", patch, kernel)
    return y + bias


@st.composite
def conv_case(draw):
    grid = tuple(draw(st.integers(1, 6)) for _ in range(3))
    kernel = tuple(draw(st.integers(1, n)) for n in grid)
    strides = tuple(draw(st.integers(1, 3)) for _ in range(3))
    periodic = tuple(draw(st.booleans()) for _ in range(3))
    cin = draw(st.integers(1, 3))
    filters = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    return grid, kernel, strides, periodic, cin, filters, seed


@SLOWER
@given(conv_case())
def test_periodic_conv_equals_the_padded_direct_convolution(case) -> None:
    from magnb.layers import PeriodicConv3D

    grid, ks, strides, periodic, cin, filters, seed = case
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, *grid, cin)).astype(np.float32)
    kernel = rng.normal(size=(*ks, cin, filters)).astype(np.float32)
    bias = rng.normal(size=filters).astype(np.float32)
    layer = PeriodicConv3D(filters, ks, strides=strides, periodic=periodic)
    layer.build((None, *grid, cin))
    layer.set_weights([kernel, bias])
    got = np.asarray(layer(x))
    want = direct_conv(x.astype(np.float64), kernel.astype(np.float64), bias, strides, periodic)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()))


# --------------------------------------------------------------------------------------------
# grouped splits


@st.composite
def split_table(draw):
    n_formulas = draw(st.integers(2, 24))
    rows = []
    for f in range(n_formulas):
        orders = draw(st.lists(st.sampled_from(["FM", "AFM"]), min_size=1, max_size=3, unique=True))
        rows += [
            {"calc_id": f"F{f}__{o}", "formula": f"F{f}", "order": o, "status": "ok"}
            for o in orders
        ]
    if draw(st.booleans()):
        rows.append({"calc_id": "Bad__FM", "formula": "Bad", "order": "FM", "status": "skipped"})
    fractions = draw(st.sampled_from([(0.6, 0.2, 0.2), (0.7, 0.15, 0.15), (0.5, 0.25, 0.25)]))
    kfold = draw(st.sampled_from([0, 3, 5]))
    seed = draw(st.integers(0, 1000))
    return pd.DataFrame(rows), fractions, kfold, seed


@FAST
@given(split_table())
def test_grouped_splits_never_share_a_formula_and_keep_every_class(case) -> None:
    table, fractions, kfold, seed = case
    out = assign_splits(table, fractions, "order", kfold, seed)
    ok = out[out["status"] == "ok"]
    assert set(ok["split"]) <= {"train", "val", "test"} and (ok["split"] != "").all()
    assert (out.loc[out["status"] != "ok", "split"] == "").all()
    # no formula in two splits, nor in two folds
    assert (ok.groupby("formula")["split"].nunique() == 1).all()
    assert (ok.groupby("formula")["fold"].nunique() == 1).all()
    # the rows are the input's rows, untouched
    pd.testing.assert_frame_equal(out[table.columns], table)
    # every class held by two or more formulas is trained on: the test and validation sets are
    # single folds of a spread of groups and cannot take all of them
    formulas_per_class = ok.groupby("order")["formula"].nunique()
    trained = set(ok.loc[ok["split"] == "train", "order"])
    for cls, n in formulas_per_class.items():
        if n >= 2:
            assert cls in trained, f"class {cls} ({n} formulas) missing from train"
    # and the training split is never empty while there are two or more formulas
    assert (ok["split"] == "train").any()


# --------------------------------------------------------------------------------------------
# CHGCAR round trip


@st.composite
def chgcar_case(draw):
    grid = tuple(draw(st.integers(1, 7)) for _ in range(3))
    n_blocks = draw(st.sampled_from([1, 2, 4]))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-6, 1.0, 3e3]))
    return grid, n_blocks, seed, scale


@SLOWER
@given(chgcar_case())
def test_a_chgcar_written_by_magnb_reads_back_to_the_same_arrays(tmp_path, case) -> None:
    from pymatgen.core import Lattice, Structure

    from magnb.vasp import read_chgcar, write_chgcar

    grid, n_blocks, seed, scale = case
    rng = np.random.default_rng(seed)
    lattice = Lattice.from_parameters(3.1, 3.7, 4.3, 88.0, 95.0, 101.0)
    structure = Structure(lattice, ["Fe", "O"], [[0, 0, 0], [0.5, 0.4, 0.3]])
    blocks = [np.abs(rng.normal(size=grid)) * scale]
    blocks += [rng.normal(size=grid) * scale for _ in range(n_blocks - 1)]
    path = tmp_path / f"CHGCAR_{seed}_{n_blocks}"
    write_chgcar(path, structure, blocks)
    back = read_chgcar(path)
    # the file holds rho * V_file (V of the lattice as written, to 6 significant figures)
    volume = back.volume
    assert volume == pytest.approx(structure.volume, rel=1e-5)
    np.testing.assert_allclose(back.structure.lattice.matrix, lattice.matrix, atol=1e-5)
    assert back.grid_shape == grid
    tol = dict(rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(back.total * volume, blocks[0], **tol)
    if n_blocks == 1:
        assert back.magnetization is None
    elif n_blocks == 2:
        assert back.magnetization.shape == grid
        np.testing.assert_allclose(back.magnetization * volume, blocks[1], **tol)
    else:
        assert back.magnetization.shape == (3, *grid)
        for k in range(3):
            np.testing.assert_allclose(back.magnetization[k] * volume, blocks[k + 1], **tol)


# --------------------------------------------------------------------------------------------
# the label of every loaded sample is the label of its own calculation


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from tests.conftest import build_demo_data

    return build_demo_data(
        tmp_path_factory.mktemp("props"), 4, normalization="standard", fractions=(0.5, 0.25, 0.25)
    )


def _own_labels(data) -> tuple[list[np.ndarray], list[dict]]:
    """Each calculation's sample, made afresh from its split file, and its labels, read from the
    split file's own attributes (not from the dataset table the loader uses)."""
    import h5py
    import yaml

    from magnb.dataset import ScrapeConfig, make_sample
    from magnb.split import load_split

    with h5py.File(data / "dataset.h5", "r") as f:
        settings_ = yaml.safe_load(f.attrs["config"])
        offset = np.array(json.loads(f.attrs["norm_offset"]), dtype=np.float32)
        scale = np.array(json.loads(f.attrs["norm_scale"]), dtype=np.float32)
    config = ScrapeConfig(data_dir=data, progress=False, workers=1, **_scrape_kwargs(settings_))
    samples, labels = [], []
    for path in sorted((data / "split").glob("*.h5")):
        if path.name == "index.h5":
            continue
        sample, _ = make_sample(path, config)
        attrs = load_split(path)["attrs"]
        run = str(attrs["run"])
        reported = float(attrs["moment"])
        labels.append(
            {
                "calc_id": str(attrs["calc_id"]),
                "moment": reported if math.isfinite(reported) else float(attrs["moment_integral"]),
                "order": 1 if run.upper().startswith("FM") else 0 if "AFM" in run.upper() else -1,
            }
        )
        samples.append((sample - offset) / scale)
    return samples, labels


def _scrape_kwargs(settings_: dict) -> dict:
    from dataclasses import fields

    from magnb.dataset import ScrapeConfig

    names = {f.name for f in fields(ScrapeConfig)}
    out = {k: v for k, v in settings_.items() if k in names}
    for k, v in out.items():
        if isinstance(v, list):
            out[k] = tuple(v)
    return out


@pytest.fixture(scope="module")
def own(demo):
    return _own_labels(demo)


@SLOWER
@given(
    label=st.sampled_from(["moment", "order"]),
    split=st.sampled_from(["train", "val", "test", None]),
    batch_size=st.integers(1, 5),
    shuffle=st.booleans(),
    augment=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_every_loaded_sample_carries_its_own_calculations_label(
    demo, own, label, split, batch_size, shuffle, augment, seed
) -> None:
    from magnb.dataset import DensityDataset

    samples, labels = own
    # rolls change the voxels' places, not their values: identify a sample by its sorted values
    keys = [np.sort(s, axis=None) for s in samples]
    ds = DensityDataset(
        demo,
        split=split,
        label=label,
        batch_size=batch_size,
        shuffle=shuffle,
        augment=augment,
        seed=seed,
    )
    seen = []
    for i in range(len(ds)):
        x, y = ds[i]
        for xk, yk in zip(x, y, strict=True):
            key = np.sort(xk, axis=None)
            match = [j for j, k in enumerate(keys) if np.allclose(k, key, atol=1e-4)]
            assert len(match) == 1, "a loaded sample must be exactly one calculation's density"
            own_label = labels[match[0]][label]
            if label == "order":
                assert int(yk) == own_label
            else:
                assert float(yk) == pytest.approx(own_label, rel=1e-5, abs=1e-6)
            seen.append(labels[match[0]]["calc_id"])
    assert len(seen) == len(set(seen)) == len(ds.table)
