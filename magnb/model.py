"""Keras 3 models for periodic densities, built from a :class:`magnb.config.TrainConfig`.

Every convolution is a :class:`PeriodicConv3D` with the dataset's own boundaries: it wraps
around along the axes the dataset records as periodic (``periodic_axes`` in ``dataset.h5``; a
whole cell is periodic along a, b, c) and pads with zeros along the others (a cube cut from a
crystal has none, a slab cropped along c is not periodic along c).

- ``default``: a few blocks of :class:`PeriodicConv3D` and max pooling,
  then global average pooling (a density's label does not depend on where the cell starts), a
  small dense head. It learns the demo's tasks in minutes on two CPU cores.
- ``seed_base``: the seed project's base model in spirit: 3 filters of 40^3 on a 120^3 x 2 input,
  pool 2, flatten, dense softmax; but by FFT, so the 40^3 kernels cost what 3^3 ones do.

Pooling with ``padding="valid"`` is exact on periodic grids whose sides divide by the pool size;
:func:`check_model_fits` says so before training when they do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from magnb.errors import MagnbError
from magnb.layers import LaplacianSmoothness, PeriodicConv3D

if TYPE_CHECKING:
    from magnb.config import TrainConfig

__all__ = ["PeriodicConv3D", "build_model", "check_model_fits", "is_classification"]


def is_classification(label: str) -> bool:
    """True for the class labels (order, order_pattern, moment_class), False for regressions."""
    from magnb.labels import LABEL_CLASSES

    return label in LABEL_CLASSES


def _blocks(config: TrainConfig) -> list[tuple[int, int, int]]:
    if config.model == "seed_base":
        return [(3, 40, 2)]
    n = len(config.filters)
    if not (len(config.kernel_size) == len(config.pool) == n):
        raise MagnbError(
            f"filters {list(config.filters)}, kernel_size {list(config.kernel_size)} and "
            f"pool {list(config.pool)} must have the same length (one entry per conv block)"
        )
    return list(zip(config.filters, config.kernel_size, config.pool, strict=True))


def check_model_fits(config: TrainConfig, input_shape: tuple[int, int, int, int]) -> None:
    """Raise MagnbError before training if a kernel is larger than the grid it meets, or a pool
    does not divide it (pooling would then drop voxels and break periodicity)."""
    grid = list(input_shape[:3])
    for i, (_, kernel, pool) in enumerate(_blocks(config)):
        if kernel > min(grid):
            raise MagnbError(
                f"conv block {i + 1}: kernel {kernel} is larger than the grid {tuple(grid)} it "
                "convolves; use a smaller kernel or a finer dataset grid"
            )
        if pool > 1:
            if any(g % pool for g in grid):
                raise MagnbError(
                    f"conv block {i + 1}: pool {pool} does not divide the grid {tuple(grid)}; "
                    "choose grid sizes divisible by the pools"
                )
            grid = [g // pool for g in grid]


def build_model(
    config: TrainConfig,
    input_shape: tuple[int, int, int, int],
    n_classes: int,
    periodic_axes: tuple[bool, bool, bool] = (True, True, True),
) -> keras.Model:
    """The network ``config.model`` for samples of ``input_shape`` (X, Y, Z, C) whose axes wrap
    around where ``periodic_axes`` says so (the dataset's ``periodic_axes`` attribute; stage 04
    passes it), with zeros beyond the edges of the others.

    Classification heads end in a softmax over ``n_classes``; regression heads in one linear unit.
    """
    periodic = tuple(bool(p) for p in periodic_axes)
    if len(periodic) != 3:
        raise MagnbError(f"periodic_axes must be 3 true/false values, not {periodic_axes!r}")
    check_model_fits(config, input_shape)
    inputs = keras.Input(shape=input_shape, name="density")
    x = inputs
    for i, (filters, kernel, pool) in enumerate(_blocks(config)):
        smooth = i == 0 and config.kernel_smoothness > 0
        x = PeriodicConv3D(
            filters,
            kernel,
            periodic=periodic,
            activation=config.activation,
            kernel_regularizer=LaplacianSmoothness(config.kernel_smoothness) if smooth else None,
            name=f"periodic_conv_{i + 1}",
        )(x)
        if pool > 1:
            x = keras.layers.MaxPooling3D(pool, name=f"pool_{i + 1}")(x)
    if config.model == "seed_base":
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling3D(name="global_pool")(x)
        for j, units in enumerate(config.dense):
            x = keras.layers.Dense(units, activation=config.activation, name=f"dense_{j + 1}")(x)
            if config.dropout > 0:
                x = keras.layers.Dropout(config.dropout, name=f"dropout_{j + 1}")(x)
    if is_classification(config.label):
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    else:
        outputs = keras.layers.Dense(1, name="prediction")(x)
    return keras.Model(inputs, outputs, name=config.model)
