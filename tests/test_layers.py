"""PeriodicConv3D against the obvious oracle: Conv3D(padding="valid") on padded input.

The oracle pads a periodic axis with ``keras.ops.take`` over wrapped indices (the same as
``np.pad(mode="wrap")`` with ``(c, k - 1 - c)``, c = (k - 1) // 2) and a non-periodic axis with
zeros as ``Conv3D(padding="same")`` pads it (worked out here from the output size, not taken from
the layer), so that gradients with respect to the unpadded input flow through it. Values and
gradients (kernel, bias, input) must agree to float32 precision. A layer with no periodic axis is
also compared with ``Conv3D(padding="same")`` itself.

This process runs on the default (TensorFlow) backend; the JAX backend is checked in a subprocess
that imports this module with KERAS_BACKEND=jax and runs a few of the same cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras import ops

from magnb.errors import MagnbError
from magnb.layers import PeriodicConv3D

RTOL = 1e-4


def _triple(v: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


def mixed_pad(
    x: Any,
    kernel_size: tuple[int, int, int],
    strides: tuple[int, int, int],
    periodic: tuple[bool, bool, bool],
) -> Any:
    """Wrap-pad the periodic axes, zero-pad the others as Conv3D(padding="same") would."""
    for axis, k, s, p in zip((1, 2, 3), kernel_size, strides, periodic, strict=True):
        n = x.shape[axis]
        if p:
            c = (k - 1) // 2
            x = ops.take(x, np.arange(-c, n + k - 1 - c) % n, axis=axis)
        else:
            out = -(-n // s)  # "same": ceil(n / s) outputs
            total = max((out - 1) * s + k - n, 0)  # the fewest zeros that give that many
            pads = [(0, 0)] * 5
            pads[axis] = (total // 2, total - total // 2)
            x = ops.pad(x, pads)
    return x


def _loss_and_grads(layer: keras.layers.Layer, pre: Any, x: np.ndarray, r: np.ndarray) -> dict:
    """Output of ``layer(pre(x))`` and the gradients of ``sum(out * r)`` w.r.t. weights and x."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(pre(xt))
            loss = tf.reduce_sum(y * r)
        grads = tape.gradient(loss, [*layer.trainable_variables, xt])
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        def loss_fn(tv: list, xj: Any) -> tuple[Any, Any]:
            out, _ = layer.stateless_call(tv, [], pre(xj))
            return jnp.sum(out * r), out

        tv = [v.value for v in layer.trainable_variables]
        (_, y), (gw, gx) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(
            tv, jnp.asarray(x)
        )
        grads = [*gw, gx]
    else:  # pragma: no cover - only the two backends above are installed
        pytest.fail(f"no gradient helper for backend {backend}: add one here")
    names = ["kernel", "bias"][: len(layer.trainable_variables)] + ["input"]
    out = {"output": np.asarray(ops.convert_to_numpy(y))}
    for name, g in zip(names, grads, strict=True):
        out[name] = np.asarray(ops.convert_to_numpy(g))
    return out


def compare_with_oracle(
    grid: tuple[int, int, int],
    kernel_size: int | tuple[int, int, int],
    strides: int | tuple[int, int, int] = 1,
    cin: int = 1,
    filters: int = 1,
    use_bias: bool = True,
    activation: str | None = None,
    batch: int = 2,
    seed: int = 0,
    periodic: bool | tuple[bool, bool, bool] = True,
    oracle_padding: str = "valid",
) -> dict[str, float]:
    """Max error of each compared quantity, relative to that quantity's largest magnitude.

    ``oracle_padding="valid"``: the oracle is Conv3D(padding="valid") on :func:`mixed_pad`'s
    input; ``"same"``: Conv3D(padding="same") on the input itself (``periodic`` must be False).
    """
    rng = np.random.default_rng(seed)
    ks = _triple(kernel_size)
    st = _triple(strides)
    per = (periodic,) * 3 if isinstance(periodic, bool) else tuple(periodic)
    x = rng.standard_normal((batch, *grid, cin)).astype("float32")
    layer = PeriodicConv3D(
        filters,
        kernel_size,
        strides=strides,
        periodic=periodic,
        use_bias=use_bias,
        activation=activation,
    )
    layer.build(x.shape)
    layer.kernel.assign(rng.standard_normal(layer.kernel.shape).astype("float32"))
    oracle = keras.layers.Conv3D(
        filters,
        ks,
        strides=strides,
        padding=oracle_padding,
        use_bias=use_bias,
        activation=activation,
    )
    if oracle_padding == "same":
        assert not any(per), "Conv3D(padding='same') is the oracle of non-periodic axes only"

        def pre(t: Any) -> Any:
            return t

    else:

        def pre(t: Any) -> Any:
            return mixed_pad(t, ks, st, per)

    oracle.build(tuple(pre(np.zeros((1, *grid, cin), "float32")).shape))
    oracle.kernel.assign(layer.kernel.value)
    if use_bias:
        layer.bias.assign(rng.standard_normal(filters).astype("float32"))
        oracle.bias.assign(layer.bias.value)

    out_shape = layer.compute_output_shape(x.shape)
    r = rng.standard_normal(out_shape).astype("float32")
    got = _loss_and_grads(layer, lambda t: t, x, r)
    want = _loss_and_grads(oracle, pre, x, r)
    errors = {}
    for key, w in want.items():
        g = got[key]
        assert g.shape == w.shape, (key, g.shape, w.shape)
        scale = max(float(np.abs(w).max()), 1e-6)
        errors[key] = float(np.abs(g - w).max() / scale)
    return errors


CASES = [
    # grid, kernel_size, strides, cin, filters, use_bias
    ((8, 8, 8), 1, 1, 1, 1, True),
    ((8, 8, 8), 2, 1, 2, 3, True),
    ((9, 9, 9), 3, 2, 3, 2, False),
    ((8, 10, 12), 4, 1, 2, 4, True),
    ((11, 9, 10), 5, 2, 1, 2, True),
    ((10, 8, 9), (5, 2, 3), (1, 2, 2), 2, 3, True),
    ((8, 8, 8), 8, 1, 2, 2, True),  # kernel = the whole (even) grid
    ((7, 9, 10), (7, 9, 10), (2, 1, 3), 3, 1, False),  # the whole non-cubic grid
    ((9, 9, 9), 9, 2, 1, 4, True),  # the whole odd grid, strided
    ((8, 9, 10), 3, 1, 6, 4, True),  # more than 4 input channels: the matmul path
]


@pytest.mark.parametrize(("grid", "kernel_size", "strides", "cin", "filters", "use_bias"), CASES)
def test_matches_wrap_padded_conv3d(
    grid: tuple[int, int, int],
    kernel_size: int | tuple[int, int, int],
    strides: int | tuple[int, int, int],
    cin: int,
    filters: int,
    use_bias: bool,
) -> None:
    errors = compare_with_oracle(grid, kernel_size, strides, cin, filters, use_bias)
    assert all(e < RTOL for e in errors.values()), errors
    assert set(errors) == {"output", "kernel", "input"} | ({"bias"} if use_bias else set())


# grid, kernel_size, strides, cin, filters, periodic
MIXED_CASES = [
    ((8, 8, 8), 3, 1, 2, 2, (True, True, False)),  # a slab cropped along c
    ((8, 8, 8), 3, 1, 1, 2, False),  # a cube cut from a crystal
    ((9, 8, 10), (5, 2, 4), 1, 2, 3, (False, True, False)),  # even kernels: c != k - 1 - c
    ((8, 9, 10), (8, 9, 10), 1, 1, 2, (False, True, False)),  # kernel = the whole grid
    ((8, 9, 7), 3, 2, 2, 2, False),  # strides: "same" pads 0 before on even n, 1 on odd
    ((10, 8, 9), (4, 3, 5), (2, 3, 2), 2, 3, (True, False, False)),
    ((8, 8, 9), 4, (1, 2, 3), 6, 2, (False, False, True)),  # the matmul path
    ((1, 6, 6), (1, 3, 3), 1, 1, 1, (False, True, False)),  # an axis of one voxel
]


@pytest.mark.parametrize(
    ("grid", "kernel_size", "strides", "cin", "filters", "periodic"), MIXED_CASES
)
def test_mixed_boundaries_match_padded_conv3d(
    grid: tuple[int, int, int],
    kernel_size: int | tuple[int, int, int],
    strides: int | tuple[int, int, int],
    cin: int,
    filters: int,
    periodic: bool | tuple[bool, bool, bool],
) -> None:
    """Wrap-around along the periodic axes, zeros beyond the edges along the others."""
    errors = compare_with_oracle(grid, kernel_size, strides, cin, filters, periodic=periodic)
    assert all(e < RTOL for e in errors.values()), errors
    assert set(errors) == {"output", "kernel", "bias", "input"}


@pytest.mark.parametrize(
    ("grid", "kernel_size", "strides"),
    [((8, 8, 8), 3, 1), ((8, 9, 10), (4, 5, 2), 1), ((9, 8, 7), (3, 4, 5), (2, 3, 2))],
)
def test_no_periodic_axis_is_conv3d_same(
    grid: tuple[int, int, int],
    kernel_size: int | tuple[int, int, int],
    strides: int | tuple[int, int, int],
) -> None:
    """With no periodic axis the layer is Keras' own Conv3D(padding="same"), strides included."""
    errors = compare_with_oracle(
        grid, kernel_size, strides, 2, 3, periodic=False, oracle_padding="same"
    )
    assert all(e < RTOL for e in errors.values()), errors


@pytest.mark.parametrize("seed", range(6))
def test_random_boundaries_match_padded_conv3d(seed: int) -> None:
    """Random grids, kernels, strides and periodicity (seeded, so a failure reproduces)."""
    rng = np.random.default_rng(100 + seed)
    grid = tuple(int(n) for n in rng.integers(3, 11, size=3))
    kernel = tuple(int(rng.integers(1, n + 1)) for n in grid)
    strides = tuple(int(s) for s in rng.integers(1, 4, size=3))
    periodic = tuple(bool(p) for p in rng.integers(0, 2, size=3))
    cin, filters = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    errors = compare_with_oracle(grid, kernel, strides, cin, filters, periodic=periodic, seed=seed)
    case = dict(grid=grid, kernel=kernel, strides=strides, periodic=periodic, cin=cin)
    assert all(e < RTOL for e in errors.values()), (case, errors)


def test_non_periodic_edge_sees_zeros_not_the_far_face() -> None:
    """A delta at the last voxel of a non-periodic axis reaches no output voxel at index 0 (it
    does along a periodic axis): the cube's opposite faces are not neighbours."""
    x = np.zeros((1, 8, 8, 8, 1), "float32")
    x[0, 7, 4, 4, 0] = 1.0
    out = {}
    for periodic in ((True, True, True), (False, True, True)):
        layer = PeriodicConv3D(1, 3, periodic=periodic, use_bias=False, kernel_initializer="ones")
        out[periodic] = np.asarray(layer(x))[0, :, :, :, 0]
    assert out[(True, True, True)][0, 4, 4] == pytest.approx(1.0, abs=1e-5)
    assert abs(out[(False, True, True)][0, 4, 4]) < 1e-5
    assert out[(False, True, True)][6, 4, 4] == pytest.approx(1.0, abs=1e-5)


def test_non_periodic_fft_grid_does_not_depend_on_the_kernel() -> None:
    """The zero-padded FFT grid is a function of the input grid only (the cost claim)."""
    grids = set()
    for k in (1, 3, 8, 15):
        layer = PeriodicConv3D(1, k, periodic=(False, True, False))
        layer.build((1, 15, 15, 15, 1))
        grids.add(layer.fft_grid)
    assert grids == {(30, 15, 30)}


@pytest.mark.parametrize("bad", [(True, False), (1, 0, 1), "yes"])
def test_bad_periodic_raises(bad: Any) -> None:
    with pytest.raises(MagnbError, match="periodic"):
        PeriodicConv3D(2, 3, periodic=bad)


def test_activation_applied() -> None:
    errors = compare_with_oracle((8, 8, 8), 3, 1, 2, 3, True, activation="tanh")
    assert all(e < RTOL for e in errors.values()), errors


def test_output_shape_and_strides() -> None:
    layer = PeriodicConv3D(4, 3, strides=(2, 3, 1))
    y = layer(np.zeros((1, 9, 9, 8, 2), "float32"))
    assert tuple(y.shape) == (1, 5, 3, 8, 4)
    assert layer.compute_output_shape((None, 9, 9, 8, 2)) == (None, 5, 3, 8, 4)
    assert tuple(layer.kernel.shape) == (3, 3, 3, 2, 4)


def test_translation_equivariant() -> None:
    """Rolling the input by whole voxels rolls the output the same way (the point of the layer)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 10, 12, 2)).astype("float32")
    layer = PeriodicConv3D(3, 5)
    y = np.asarray(layer(x))
    shift = (3, -4, 5)
    y_rolled = np.asarray(layer(np.roll(x, shift, axis=(1, 2, 3))))
    np.testing.assert_allclose(
        y_rolled, np.roll(y, shift, axis=(1, 2, 3)), rtol=1e-4, atol=1e-4 * np.abs(y).max()
    )


@pytest.mark.parametrize(
    ("kernel_size", "grid"), [(9, (8, 8, 8)), ((3, 3, 11), (8, 8, 10)), ((5, 13, 5), (12, 12, 12))]
)
def test_kernel_larger_than_grid_raises(kernel_size: Any, grid: tuple[int, int, int]) -> None:
    layer = PeriodicConv3D(2, kernel_size)
    with pytest.raises(MagnbError, match="larger than the input grid"):
        layer(np.zeros((1, *grid, 1), "float32"))


def test_unknown_spatial_size_raises() -> None:
    with pytest.raises(MagnbError, match="must be known"):
        PeriodicConv3D(2, 3).build((None, None, 8, 8, 1))


@pytest.mark.parametrize("bad", [0, (3, 3), (3, 0, 3)])
def test_bad_kernel_size_raises(bad: Any) -> None:
    with pytest.raises(MagnbError):
        PeriodicConv3D(2, bad)


def test_config_round_trip() -> None:
    layer = PeriodicConv3D(
        3,
        (5, 4, 3),
        strides=2,
        periodic=(True, False, True),
        activation="relu",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(1e-3),
        name="pconv",
    )
    config = layer.get_config()
    clone = PeriodicConv3D.from_config(config)
    assert clone.get_config() == config
    assert clone.kernel_size == (5, 4, 3) and clone.strides == (2, 2, 2)
    assert clone.periodic == (True, False, True)
    # a layer saved before per-axis periodicity existed has none in its config: all periodic
    old = {k: v for k, v in config.items() if k != "periodic"}
    assert PeriodicConv3D.from_config(old).periodic == (True, True, True)
    json.dumps(config)  # plain data only


def _small_model() -> keras.Model:
    inputs = keras.Input((8, 8, 8, 2))
    h = PeriodicConv3D(
        6, 5, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4), name="pconv"
    )(inputs)
    h = keras.layers.MaxPooling3D(2)(h)  # exact on periodic data: 8 is divisible by 2
    # 6 input channels: the matmul path; z not periodic (a slab cropped along c)
    h = PeriodicConv3D(2, 3, strides=2, periodic=(True, True, False), name="pconv2")(h)
    h = keras.layers.GlobalAveragePooling3D()(h)
    outputs = keras.layers.Dense(1)(h)
    return keras.Model(inputs, outputs)


def test_save_and_load_safe_mode(tmp_path: Path) -> None:
    model = _small_model()
    x = np.random.default_rng(1).standard_normal((3, 8, 8, 8, 2)).astype("float32")
    before = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("pconv"), PeriodicConv3D)
    assert loaded.get_layer("pconv2").periodic == (True, True, False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)


def test_fit_updates_kernel() -> None:
    model = _small_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 8, 8, 2)).astype("float32")
    y = rng.standard_normal((4, 1)).astype("float32")
    before = {n: ops.convert_to_numpy(model.get_layer(n).kernel.value) for n in ("pconv", "pconv2")}
    history = model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for name, kernel in before.items():
        assert not np.allclose(ops.convert_to_numpy(model.get_layer(name).kernel.value), kernel)


def test_mixed_precision_policy() -> None:
    """Under float16 compute the FFTs still run in float32; the result is close to float32."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 8, 8, 8, 2)).astype("float32")
    ref = PeriodicConv3D(2, 3)
    half = PeriodicConv3D(2, 3, dtype="mixed_float16")
    ref.build(x.shape)
    half.build(x.shape)
    half.kernel.assign(ref.kernel.value)
    y = half(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    want = np.asarray(ref(x))
    np.testing.assert_allclose(np.asarray(y, "float32"), want, rtol=1e-2, atol=1e-2)


JAX_SCRIPT = """
import json, sys
sys.path.insert(0, {tests_dir!r})
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
from test_layers import compare_with_oracle
cases = [
    dict(grid=(8, 8, 8), kernel_size=3, strides=1, cin=2, filters=3),
    dict(grid=(9, 10, 7), kernel_size=(4, 5, 2), strides=2, cin=1, filters=2),
    dict(grid=(8, 8, 8), kernel_size=8, strides=1, cin=3, filters=2, use_bias=False),
    dict(grid=(8, 9, 10), kernel_size=3, strides=(1, 2, 1), cin=6, filters=4),
    dict(grid=(8, 9, 7), kernel_size=(3, 4, 5), strides=(2, 1, 2), cin=2, filters=2,
         periodic=(False, True, False)),
    dict(grid=(8, 8, 9), kernel_size=4, strides=(1, 2, 3), cin=6, filters=2, periodic=False),
]
print("RESULT " + json.dumps([compare_with_oracle(**c) for c in cases]))
"""


def test_jax_backend_matches_oracle() -> None:
    # a subprocess on JAX whatever this process runs on (jax is a dev dependency: no skip)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    script = JAX_SCRIPT.format(tests_dir=str(Path(__file__).parent))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    results = json.loads(line[len("RESULT ") :])
    assert len(results) == 6
    for errors in results:
        assert set(errors) >= {"output", "kernel", "input"}
        assert all(e < RTOL for e in errors.values()), errors


@pytest.mark.parametrize("periodic", [(True, True, True), (True, True, False), (False,) * 3])
def test_model_builder_takes_the_dataset_periodicity(periodic: tuple[bool, bool, bool]) -> None:
    from magnb.config import TrainConfig
    from magnb.model import build_model

    config = TrainConfig(filters=(2, 3), kernel_size=(3, 3), pool=(2, 1), dense=(4,))
    model = build_model(config, (8, 8, 8, 2), 2, periodic)
    convs = [layer for layer in model.layers if isinstance(layer, PeriodicConv3D)]
    assert len(convs) == 2 and all(c.periodic == periodic for c in convs)
