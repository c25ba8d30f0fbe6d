"""Keras 3 layers for periodic (crystal) grids and for grids cut out of them.

A CHGCAR-derived density lives on a periodic cell, so a convolution over it should wrap around the
cell rather than pad with zeros. :class:`PeriodicConv3D` computes that circular convolution with
FFTs, so its cost does not depend on the kernel size: a 60^3 kernel costs the same as a 5^3 one.
An axis that is not periodic (a cube cut from a crystal, a slab cropped along c) is convolved as
``Conv3D(padding="same")`` would, with zeros beyond the edge: a linear convolution, by FFT on a
zero-padded grid whose length depends on the grid only, so that cost does not depend on the kernel
size either.

Pooling needs no special layer: ``keras.layers.MaxPooling3D`` / ``AveragePooling3D`` with
``padding="valid"`` are already exact on periodic data when every grid side is divisible by the pool
size (and stride equals pool size), because no window then crosses the cell boundary. Choose grid
sizes accordingly (e.g. 120 = 2^3 * 3 * 5).

Everything here is written with ``keras.ops`` only, so it runs on the TensorFlow, JAX and PyTorch
backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from magnb.errors import MagnbError

__all__ = ["LaplacianSmoothness", "PeriodicConv3D", "fft_length", "same_padding"]

# Up to this many input channels the spectra are mixed by a loop of broadcast products; above it by
# one matmul per frequency (see PeriodicConv3D._mix_channels).
_LOOP_MAX_CIN = 4


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """Normalise an int or a 3-sequence of positive ints to a 3-tuple."""
    if isinstance(value, int):
        out = (value, value, value)
    else:
        out = tuple(int(v) for v in value)
    if len(out) != 3 or any(v < 1 for v in out):
        raise MagnbError(f"{name} must be a positive int or 3 positive ints, got {value!r}")
    return out  # type: ignore[return-value]


def _periodic_triple(value: bool | Sequence[bool]) -> tuple[bool, bool, bool]:
    """Normalise a bool or a 3-sequence of bools to a 3-tuple."""
    if isinstance(value, bool):
        return (value, value, value)
    out = tuple(value)
    # numpy's bool_ (a dataset's attrs read with numpy) counts as a bool; 0 and 1 do not
    if len(out) != 3 or not all(type(v).__name__ in ("bool", "bool_") for v in out):
        raise MagnbError(f"periodic must be true/false or 3 of them (x, y, z), got {value!r}")
    return tuple(bool(v) for v in out)  # type: ignore[return-value]


def fft_length(n: int) -> int:
    """The smallest ``2^a 3^b 5^c >= n``: a length the FFTs of every backend handle fast
    (scipy's ``next_fast_len`` for real transforms).

    >>> [fft_length(n) for n in (7, 15, 63, 239)]
    [8, 15, 64, 240]
    """
    from scipy.fft import next_fast_len

    return next_fast_len(max(int(n), 1), real=True)


def same_padding(n: int, k: int, s: int) -> int:
    """Zeros ``Conv3D(padding="same")`` puts before an axis of ``n`` voxels (kernel ``k``, stride
    ``s``): half of ``max((ceil(n / s) - 1) * s + k - n, 0)``, rounded down (TensorFlow's and
    JAX's rule; ``(k - 1) // 2`` at stride 1).

    >>> same_padding(8, 3, 1), same_padding(8, 3, 2), same_padding(9, 3, 2)
    (1, 0, 1)
    """
    out = -(-n // s)
    return max((out - 1) * s + k - n, 0) // 2


@keras.saving.register_keras_serializable(package="magnb")
class PeriodicConv3D(keras.layers.Layer):
    """3D convolution with periodic (wrap-around) boundaries, computed by FFT; an axis may instead
    be non-periodic, with zeros beyond its edges.

    Input is channels-last ``(batch, nx, ny, nz, cin)`` with static spatial sizes; the output is
    ``(batch, ceil(nx/sx), ceil(ny/sy), ceil(nz/sz), filters)``.

    Semantics match ``keras.layers.Conv3D`` (a cross-correlation) with ``padding="valid"`` applied
    to the input padded along each axis: a **periodic** axis wrap-padded by ``c = (k - 1) // 2``
    voxels before and ``k - 1 - c`` after, a **non-periodic** axis zero-padded exactly as
    ``Conv3D(padding="same")`` pads it (``p`` = :func:`same_padding` zeros before, the rest
    after). Per axis::

        periodic:      out[i] = sum_k x[(s * i + k - c) mod n] * kernel[k]
        non-periodic:  out[i] = sum_k x[s * i + k - p] * kernel[k]   (x = 0 outside 0 .. n-1)

    summed over the three axes' offsets and the input channels, plus bias. The kernel is centred
    like ``padding="same"``; a periodic boundary wraps around the cell. Strides keep every
    ``s``-th voxel of the full-resolution result, starting at 0; at stride 1, ``p = c``, and a
    layer with no periodic axis is ``Conv3D(padding="same")`` for any strides.

    The kernel is zero-padded to the grid and transformed on every call; the product of spectra is
    summed over input channels and transformed back. A non-periodic axis of ``n`` voxels is first
    zero-padded to :func:`fft_length` ``(2n - 1)`` voxels, enough for any kernel up to ``n``,
    so that the circular convolution there equals the linear one; its output is cropped back to
    ``n``. The cost is that of ``cin * filters`` FFTs of the (padded) grid plus ``cin + filters``
    more, independent of the kernel size, which may be anything up to the grid size along each
    axis; every non-periodic axis costs about twice a periodic one. The FFTs run in float32
    (float64 if the layer's compute dtype is float64) whatever the mixed-precision policy, with the
    weights read at full precision (``autocast=False``); the output has the policy's compute dtype.

    Args:
        filters: number of output channels.
        kernel_size: int or 3 ints; each must not exceed the input's spatial size on that axis.
        strides: int or 3 ints; subsampling of the full-resolution output.
        periodic: bool or 3 bools (x, y, z): which axes wrap around (default all). A dataset
            records its own as ``periodic_axes`` in ``dataset.h5``'s attributes.
        activation: activation function or its name (as for ``Conv3D``).
        use_bias: whether to add a per-filter bias.
        kernel_initializer, bias_initializer: initializers (as for ``Conv3D``).
        kernel_regularizer, bias_regularizer, activity_regularizer: regularizers.
        kernel_constraint, bias_constraint: constraints.
        **kwargs: passed to ``keras.layers.Layer`` (``name``, ``dtype``, ``trainable``...).

    The kernel weight has shape ``(kx, ky, kz, cin, filters)``, the same layout as ``Conv3D``, so
    weights can be copied between the two.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        periodic: bool | Sequence[bool] = True,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        # The weights are read at full precision (no float16 autocast): the FFTs run in float32.
        kwargs.setdefault("autocast", False)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if int(filters) < 1:
            raise MagnbError(f"filters must be a positive int, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _triple(kernel_size, "kernel_size")
        self.strides = _triple(strides, "strides")
        self.periodic = _periodic_triple(periodic)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=5)

    # ------------------------------------------------------------------ build and shapes

    def _check_input_shape(self, input_shape: Sequence[int | None]) -> tuple[int, int, int, int]:
        """Return ``(nx, ny, nz, cin)`` or raise MagnbError if the shape cannot be used."""
        if len(input_shape) != 5:
            raise MagnbError(
                f"{self.name}: expected input (batch, nx, ny, nz, channels), got shape "
                f"{tuple(input_shape)}"
            )
        grid = tuple(input_shape[1:4])
        cin = input_shape[4]
        if any(n is None for n in grid) or cin is None:
            raise MagnbError(
                f"{self.name}: the spatial sizes and channel count must be known, got shape "
                f"{tuple(input_shape)}"
            )
        for axis, (n, k) in enumerate(zip(grid, self.kernel_size, strict=True)):
            if k > n:
                raise MagnbError(
                    f"{self.name}: kernel_size {self.kernel_size} is larger than the input grid "
                    f"{grid} along axis {axis} ({k} > {n}); a kernel can be at most one "
                    "grid wide"
                )
        return int(grid[0]), int(grid[1]), int(grid[2]), int(cin)

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Create the kernel ``(kx, ky, kz, cin, filters)`` and bias ``(filters,)``."""
        nx, ny, nz, cin = self._check_input_shape(input_shape)
        self.grid = (nx, ny, nz)
        # the FFT grid: a non-periodic axis zero-padded so that no kernel up to n wraps around
        self.fft_grid = tuple(
            n if p else fft_length(2 * n - 1) for n, p in zip(self.grid, self.periodic, strict=True)
        )
        # kernel index that lands on output voxel 0 (before striding), per axis
        self.offsets = tuple(
            (k - 1) // 2 if p else same_padding(n, k, s)
            for n, k, s, p in zip(
                self.grid, self.kernel_size, self.strides, self.periodic, strict=True
            )
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, cin, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            trainable=True,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
            )
        else:
            self.bias = None
        self.input_spec = keras.layers.InputSpec(ndim=5, axes={-1: cin})

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        """``(batch, ceil(nx/sx), ceil(ny/sy), ceil(nz/sz), filters)``."""
        nx, ny, nz, _ = self._check_input_shape(input_shape)
        out = tuple(-(-n // s) for n, s in zip((nx, ny, nz), self.strides, strict=True))
        return (input_shape[0], *out, self.filters)

    # ------------------------------------------------------------------ the transform

    def _fft_dtype(self) -> str:
        return "float64" if self.compute_dtype == "float64" else "float32"

    @staticmethod
    def _rfft3(x: Any) -> tuple[Any, Any]:
        """Real 3D FFT over the last three axes ``(..., nx, ny, nz)``.

        Returns real and imaginary parts laid out as ``(..., nz//2+1, nx, ny)``: a 1D ``rfft`` along
        z, then a 2D complex ``fft2`` over (x, y) after moving them last. Both have gradients on
        every backend (TF's fused ``rfft3d`` / ``irfft3d`` have no registered gradient).
        """
        re, im = ops.rfft(x)
        rank = len(re.shape)
        perm = list(range(rank - 3)) + [rank - 1, rank - 3, rank - 2]
        re = ops.transpose(re, perm)
        im = ops.transpose(im, perm)
        return ops.fft2((re, im))

    @staticmethod
    def _irfft3(re: Any, im: Any, nz: int) -> Any:
        """Inverse of :meth:`_rfft3`: ``(..., nz//2+1, nx, ny)`` spectra to real ``(..., nx, ny, nz)``."""
        re, im = ops.ifft2((re, im))
        rank = len(re.shape)
        perm = list(range(rank - 3)) + [rank - 2, rank - 1, rank - 3]
        re = ops.transpose(re, perm)
        im = ops.transpose(im, perm)
        return ops.irfft((re, im), fft_length=nz)

    @staticmethod
    def _wrap_place(t: Any, axis: int, n: int, k: int, c: int) -> Any:
        """Zero-pad ``axis`` from ``k`` to ``n`` and roll so that kernel index ``c`` lands on 0.

        ``g[m] = w[(m + c) mod n]``: then ``out[i] = sum_j x[j] g[j - i]`` is the cross-correlation
        with kernel index ``c`` on voxel ``i``, whose spectrum is ``X * conj(G)``.
        """
        if n > k:
            pads = [(0, 0)] * len(t.shape)
            pads[axis] = (0, n - k)
            t = ops.pad(t, pads)
        return ops.roll(t, shift=-c, axis=axis) if c else t

    def _kernel_spectrum(self, dtype: str) -> tuple[Any, Any]:
        """Spectrum of the kernel, zero-padded to the grid and rolled so its centre sits at 0.

        Returns parts shaped ``(cin, filters, nz//2+1, nx, ny)`` over the FFT grid (the input grid
        with its non-periodic axes zero-padded). The z transform runs before the x and y padding,
        on ``kx * ky`` lines instead of ``nx * ny``.
        """
        (nx, ny, nz), (kx, ky, kz) = self.fft_grid, self.kernel_size
        cx, cy, cz = self.offsets
        w = ops.cast(self.kernel, dtype)
        w = ops.transpose(w, (3, 4, 0, 1, 2))  # (cin, filters, kx, ky, kz)
        w = self._wrap_place(w, 4, nz, kz, cz)
        re, im = ops.rfft(w)  # (cin, filters, kx, ky, nz//2+1)
        parts = []
        for t in (re, im):
            t = ops.transpose(t, (0, 1, 4, 2, 3))  # (cin, filters, nz//2+1, kx, ky)
            t = self._wrap_place(t, 3, nx, kx, cx)
            parts.append(self._wrap_place(t, 4, ny, ky, cy))
        return ops.fft2((parts[0], parts[1]))

    @staticmethod
    def _mix_channels(xr: Any, xi: Any, gr: Any, gi: Any) -> tuple[Any, Any]:
        """``sum_cin (xr + i xi)[b, cin] * (gr - i gi)[cin, f]`` at every frequency.

        ``x*`` are ``(batch, cin, *freq)``, ``g*`` are ``(cin, filters, *freq)``; returns
        ``(batch, filters, *freq)``. Few input channels: a sum of broadcast products, one channel at
        a time (memory ``batch * filters * freq``). Many: one small matmul per frequency with the
        frequencies moved first, which is what a GEMM is good at. (``einsum`` with the frequency
        axes last is 10-25x slower than either on TensorFlow's CPU kernels.)
        """
        cin = xr.shape[1]
        if cin <= _LOOP_MAX_CIN:
            yr = yi = None
            for a, b, g, h in zip(
                ops.unstack(xr, axis=1),
                ops.unstack(xi, axis=1),
                ops.unstack(gr, axis=0),
                ops.unstack(gi, axis=0),
                strict=True,
            ):
                a, b = a[:, None], b[:, None]
                g, h = g[None], h[None]
                dr = a * g + b * h
                di = b * g - a * h
                yr = dr if yr is None else yr + dr
                yi = di if yi is None else yi + di
            return yr, yi
        filters = gr.shape[1]
        freq = tuple(xr.shape[2:])
        size = 1
        for n in freq:
            size *= n

        def freq_first(t: Any, cols: int) -> Any:
            return ops.transpose(ops.reshape(t, (-1, cols, size)), (2, 0, 1))

        xr, xi = (freq_first(t, cin) for t in (xr, xi))  # (freq, batch, cin)
        gr, gi = (freq_first(t, filters) for t in (gr, gi))  # (freq, cin, filters)
        yr = ops.matmul(xr, gr) + ops.matmul(xi, gi)
        yi = ops.matmul(xi, gr) - ops.matmul(xr, gi)

        def back(t: Any) -> Any:
            return ops.reshape(ops.transpose(t, (1, 2, 0)), (-1, filters, *freq))

        return back(yr), back(yi)

    def call(self, inputs: Any) -> Any:
        """Cross-correlation of ``inputs`` with the kernel (circular along periodic axes, linear
        with zeros beyond the edges along the others), then strides, bias, activation."""
        out_dtype = self.compute_dtype
        dtype = self._fft_dtype()
        nz = self.fft_grid[2]
        x = ops.cast(inputs, dtype)
        x = ops.transpose(x, (0, 4, 1, 2, 3))  # (batch, cin, nx, ny, nz)
        if self.fft_grid != self.grid:  # zeros beyond the non-periodic edges
            pads = [(0, 0), (0, 0)] + [
                (0, f - n) for f, n in zip(self.fft_grid, self.grid, strict=True)
            ]
            x = ops.pad(x, pads)
        xr, xi = self._rfft3(x)  # (batch, cin, kz, nx, ny)
        gr, gi = self._kernel_spectrum(dtype)  # (cin, filters, kz, nx, ny)
        yr, yi = self._mix_channels(xr, xi, gr, gi)  # (batch, filters, kz, nx, ny)
        y = self._irfft3(yr, yi, nz)  # (batch, filters, nx, ny, nz) over the FFT grid
        y = ops.transpose(y, (0, 2, 3, 4, 1))
        (nx, ny, nz), (sx, sy, sz) = self.grid, self.strides
        if self.fft_grid != self.grid or (sx, sy, sz) != (1, 1, 1):
            y = y[:, 0:nx:sx, 0:ny:sy, 0:nz:sz, :]
        y = ops.cast(y, out_dtype)
        if self.bias is not None:
            y = y + ops.cast(self.bias, out_dtype)
        if self.activation is not None:
            y = self.activation(y)
        return y

    # ------------------------------------------------------------------ serialization

    def get_config(self) -> dict[str, Any]:
        """Everything needed to rebuild the layer (safe-mode loadable)."""
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": list(self.kernel_size),
                "strides": list(self.strides),
                "periodic": list(self.periodic),
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config


def _edge_pad(w: Any, axis: int) -> Any:
    """``w`` with its first and last slice along ``axis`` repeated once (``keras.ops`` only)."""
    n = w.shape[axis]
    first = ops.take(w, [0], axis=axis)
    last = ops.take(w, [n - 1], axis=axis)
    return ops.concatenate([first, w, last], axis=axis)


@keras.saving.register_keras_serializable(package="magnb")
class LaplacianSmoothness(keras.regularizers.Regularizer):
    """A penalty on rough 3D kernels: ``strength * mean_(cin, f) ||L w||^2 / (42 ||w||^2)``,
    with ``L`` the 6-point discrete Laplacian over the kernel's three spatial axes (edges
    repeated, so a constant kernel costs nothing) and 42 its energy gain on white noise, so
    that white noise costs about ``strength`` and a smooth kernel much less. Normalized by the
    kernel's own energy, it changes the shape of a filter, not its size (weight decay does
    that). ``magnb.explain.kernel_smoothness`` is the same number without ``strength``.
    """

    def __init__(self, strength: float = 0.0) -> None:
        self.strength = float(strength)

    def __call__(self, w: Any) -> Any:
        if min(w.shape[:3]) < 3:
            return ops.zeros(())
        p = w
        for axis in range(3):
            p = _edge_pad(p, axis)
        c = p[1:-1, 1:-1, 1:-1]
        lap = (
            p[2:, 1:-1, 1:-1] + p[:-2, 1:-1, 1:-1] + p[1:-1, 2:, 1:-1] + p[1:-1, :-2, 1:-1]
            + p[1:-1, 1:-1, 2:] + p[1:-1, 1:-1, :-2] - 6.0 * c
        )  # fmt: skip
        rough = ops.sum(ops.square(lap), axis=(0, 1, 2))
        energy = ops.sum(ops.square(w), axis=(0, 1, 2))
        return self.strength * ops.mean(rough / (42.0 * energy + 1e-12))

    def get_config(self) -> dict[str, Any]:
        return {"strength": self.strength}
