"""Benchmark: PeriodicConv3D (FFT) against keras.layers.Conv3D on wrap-padded input.

Both compute the same periodic convolution (the test suite checks values and gradients agree).
With ``--zero``, the non-periodic case instead: ``PeriodicConv3D(periodic=False)`` (linear
convolution by FFT on a zero-padded grid) against ``Conv3D(padding="same")``, which compute the
same thing, beside the periodic FFT layer on the same input, in one run and its own section.
Input ``(1, n, n, n, 2)``, 3 filters, TensorFlow backend, forward and forward+backward (gradients
with respect to kernel, bias and input), one tf.function per case, median of a few calls after a
trace. Each case runs in a fresh subprocess so its peak memory can be read from ``ru_maxrss``.

The direct convolution's cost grows with the kernel volume, so the big cases take many minutes.
A direct case is timed only when its predicted time (a measured case with the largest kernel not
above this one, scaled by kernel volume x grid volume) is at most ``--max-direct-s``; the rest are
shown as *estimated*, never as measurements. A direct case that runs past ``--kill-after-s`` is stopped and reported as
a lower bound.

    python bench/conv.py            # the full table, written to bench/RESULTS.md (~6-8 min, 2 cores)
    python bench/conv.py --quick    # small grids and kernels; prints only (add --write to write)
    python bench/conv.py --zero     # non-periodic axes (cube datasets), own section (~10 min)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _common import RESULTS, load_average, write_section  # noqa: E402  (bench/ is not a package)

HEADING = "## conv: PeriodicConv3D vs Conv3D"
ZERO_HEADING = (
    "## conv, non-periodic axes: PeriodicConv3D(periodic=False) vs Conv3D(padding='same')"
)
CIN = 2
FILTERS = 3
MODES = ("fwd", "fwdbwd")


# ----------------------------------------------------------------------------- worker side


def _rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(spec: dict[str, Any]) -> None:
    """Time one method on one (grid, kernel) for the requested modes; print one JSON line each."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np
    import tensorflow as tf
    from keras import ops

    from magnb.layers import PeriodicConv3D

    n, k, method = int(spec["n"]), int(spec["k"]), spec["method"]
    c = (k - 1) // 2
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((1, n, n, n, CIN)).astype("float32"))
    # the FFT layer with the boundaries the direct method it is compared with has
    zero = method in ("fft_zero", "direct_same")
    fft_layer = PeriodicConv3D(FILTERS, k, periodic=not zero)
    fft_layer.build(x.shape)
    idx = tf.constant((np.arange(-c, n + k - 1 - c) % n).astype("int32"))

    if method in ("fft", "fft_zero"):
        layer = fft_layer

        def apply(t: Any) -> Any:
            return layer(t)

    elif method == "direct_same":
        layer = keras.layers.Conv3D(FILTERS, k, padding="same")
        layer.build(x.shape)
        layer.kernel.assign(fft_layer.kernel.value)

        def apply(t: Any) -> Any:
            return layer(t)

    else:
        layer = keras.layers.Conv3D(FILTERS, k, padding="valid")
        layer.build((1, n + k - 1, n + k - 1, n + k - 1, CIN))
        layer.kernel.assign(fft_layer.kernel.value)

        def apply(t: Any) -> Any:
            for axis in (1, 2, 3):  # periodic padding by (c, k - 1 - c), differentiable
                t = ops.take(t, idx, axis=axis)
            return layer(t)

    @tf.function
    def fwd(t: Any) -> Any:
        return apply(t)

    @tf.function
    def fwdbwd(t: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = apply(t)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [layer.kernel, layer.bias, t])

    funcs = {"fwd": fwd, "fwdbwd": fwdbwd}
    idle_mib = _rss_mib()  # after imports, input and weights; before any tracing
    for mode in spec["modes"]:
        func = funcs[mode]
        func.get_concrete_function(x)  # trace outside the timing
        times: list[float] = []
        deadline = float(spec.get("budget_s", 30.0))
        while True:
            t0 = time.perf_counter()
            out = func(x)
            for t in tf.nest.flatten(out):
                t.numpy()
            times.append(time.perf_counter() - t0)
            # one untimed-warm-up-free call is enough for slow cases; a few for fast ones
            if len(times) >= int(spec.get("repeats", 5)) or sum(times) > deadline:
                break
        # the first call includes one-off set-up (oneDNN primitives, FFT plans): drop it if we can
        kept = times[1:] if len(times) > 2 else times
        result = {
            "method": method,
            "n": n,
            "k": k,
            "mode": mode,
            "seconds": statistics.median(kept),
            "calls": len(times),
            "first_call_s": times[0],
            "peak_extra_mib": _rss_mib() - idle_mib,
            "idle_rss_mib": idle_mib,
            "fft_grid": list(fft_layer.fft_grid),
        }
        if method in ("direct", "direct_same") and mode == "fwd":
            ref = fft_layer(x).numpy()
            got = out.numpy()
            result["max_rel_diff_vs_fft"] = float(np.abs(got - ref).max() / np.abs(got).max())
        print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- driver side


@dataclass
class Cell:
    """One table entry: a measured time, a lower bound from a killed run, or an estimate."""

    seconds: float | None = None
    kind: str = "measured"  # measured | estimated | lower-bound | estimated-lower-bound | n/a
    peak_mib: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def fmt(self) -> str:
        if self.seconds is None:
            return "n/a"
        s = _fmt_s(self.seconds)
        return {
            "measured": s,
            "estimated": f"~{s} (estimated)",
            "lower-bound": f"> {s} (killed)",
            "estimated-lower-bound": f"> {s} (estimated)",
        }[self.kind]


def _fmt_s(s: float) -> str:
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.1f} s"
    if s >= 0.01:
        return f"{s * 1e3:.0f} ms"
    return f"{s * 1e3:.1f} ms"


def _run_worker(spec: dict[str, Any], kill_after_s: float | None) -> tuple[list[dict], bool]:
    """Run one worker subprocess; return its result lines and whether it was killed."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    try:
        stdout, stderr = proc.communicate(timeout=kill_after_s)
    except subprocess.TimeoutExpired:
        proc.kill()  # only the worker this function started
        stdout, stderr = proc.communicate()
        killed = True
    results = [
        json.loads(line[len("RESULT ") :])
        for line in stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    if proc.returncode not in (0, None) and not killed:
        raise RuntimeError(f"worker {spec} failed:\n{stderr[-3000:]}")
    return results, killed


def _predict(known: list[tuple[int, int, float, str]], n: int, k: int) -> tuple[float, str] | None:
    """Predict a direct time by scaling a known case by (n^3 k^3); None if nothing is known.

    ``known`` holds (n, k, seconds, kind) with kind "measured" or "lower-bound". The case scaled is
    the one with the largest kernel not larger than ``k`` (same grid preferred): TensorFlow's CPU
    kernels get much slower per FLOP past some kernel size (the weight gradient by ~20x between
    15^3 and 25^3 here), so scaling up from a much smaller kernel underestimates. A prediction from
    a lower bound is itself a lower bound.
    """
    if not known:
        return None
    below = [r for r in known if r[1] <= k] or known
    n0, k0, t0, kind = max(below, key=lambda r: (r[1] if r[1] <= k else -r[1], r[0] == n, r[0]))
    t = t0 * (n / n0) ** 3 * (k / k0) ** 3
    return t, ("estimated-lower-bound" if kind == "lower-bound" else "estimated")


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for mod in ("keras", "tensorflow", "numpy"):
        try:
            from importlib.metadata import version

            versions[mod] = version("tensorflow-cpu" if mod == "tensorflow" else mod)
        except Exception:
            versions[mod] = "?"
    return (
        f"{cores} CPU cores ({model}), {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, keras {versions['keras']}, "
        f"tensorflow-cpu {versions['tensorflow']}, numpy {versions['numpy']}, "
        "TensorFlow backend, float32"
    )


def run(args: argparse.Namespace) -> str:
    """Run all cases; return the markdown section (heading included)."""
    grids = args.grids
    kernels = args.kernels
    table: dict[tuple[int, int, str, str], Cell] = {}
    known: dict[str, list[tuple[int, int, float, str]]] = {m: [] for m in MODES}
    started = time.perf_counter()
    for n in grids:
        for k in kernels:
            if k > n:
                continue
            # FFT layer: always measured
            res, _ = _run_worker(
                {"method": "fft", "n": n, "k": k, "modes": list(MODES), "repeats": 11}, None
            )
            for r in res:
                table[(n, k, "fft", r["mode"])] = Cell(r["seconds"], peak_mib=r["peak_extra_mib"])
                print(f"  fft    n={n:4d} k={k:3d} {r['mode']:7s} {_fmt_s(r['seconds'])}")
            # direct Conv3D: measured when predicted cheap enough
            for mode in MODES:
                pred = _predict(known[mode], n, k)
                if pred is not None and pred[0] > args.max_direct_s:
                    table[(n, k, "direct", mode)] = Cell(pred[0], kind=pred[1])
                    print(
                        f"  direct n={n:4d} k={k:3d} {mode:7s} skipped, predicted {pred[0]:.0f} s"
                    )
                    continue
                spec = {
                    "method": "direct",
                    "n": n,
                    "k": k,
                    "modes": [mode],
                    "repeats": 3,
                    "budget_s": 5.0,
                }
                t0 = time.perf_counter()
                res, killed = _run_worker(spec, args.kill_after_s)
                if killed:
                    wall = time.perf_counter() - t0
                    table[(n, k, "direct", mode)] = Cell(wall, kind="lower-bound")
                    known[mode].append((n, k, wall, "lower-bound"))
                    print(f"  direct n={n:4d} k={k:3d} {mode:7s} killed after {wall:.0f} s")
                    continue
                (r,) = res
                cell = Cell(r["seconds"], peak_mib=r["peak_extra_mib"], extra=r)
                table[(n, k, "direct", mode)] = cell
                known[mode].append((n, k, r["seconds"], "measured"))
                print(f"  direct n={n:4d} k={k:3d} {mode:7s} {_fmt_s(r['seconds'])}")
    total = time.perf_counter() - started
    return _markdown(table, grids, kernels, args, total)


def _padded_length(n: int) -> int:
    """The length PeriodicConv3D zero-pads a non-periodic axis of n to (magnb.layers.fft_length
    of 2n - 1: scipy's next 5-smooth length), without importing Keras into the driver."""
    from scipy.fft import next_fast_len

    return next_fast_len(2 * n - 1, real=True)


def run_zero(args: argparse.Namespace) -> str:
    """The non-periodic table: periodic FFT, zero-padded FFT and Conv3D(padding="same") side by
    side on each (grid, kernel); return the markdown section (heading included)."""
    load_start = load_average()
    table: dict[tuple[int, int, str, str], Cell] = {}
    known: dict[str, list[tuple[int, int, float, str]]] = {m: [] for m in MODES}
    started = time.perf_counter()
    for n in args.grids:
        for k in args.kernels:
            if k > n:
                continue
            # the periodic FFT on the input and on the padded grid, then the zero-padded FFT,
            # one right after the other: under load, the ratios within a row are what to read
            padded = _padded_length(n)
            for method, size in (("fft", n), ("fft_padded", padded), ("fft_zero", n)):
                spec = {
                    "method": "fft" if method == "fft_padded" else method,
                    "n": size,
                    "k": k,
                    "modes": list(MODES),
                    "repeats": 11,
                }
                res, _ = _run_worker(spec, None)
                for r in res:
                    table[(n, k, method, r["mode"])] = Cell(
                        r["seconds"], peak_mib=r["peak_extra_mib"], extra=r
                    )
                    print(
                        f"  {method:10s} n={size:4d} k={k:3d} {r['mode']:7s} {_fmt_s(r['seconds'])}"
                    )
            for mode in MODES:
                pred = _predict(known[mode], n, k)
                if pred is not None and pred[0] > args.max_direct_s:
                    table[(n, k, "direct_same", mode)] = Cell(pred[0], kind=pred[1])
                    print(f"  same     n={n:4d} k={k:3d} {mode:7s} skipped, ~{pred[0]:.0f} s")
                    continue
                spec = {
                    "method": "direct_same",
                    "n": n,
                    "k": k,
                    "modes": [mode],
                    "repeats": 3,
                    "budget_s": 5.0,
                }
                t0 = time.perf_counter()
                res, killed = _run_worker(spec, args.kill_after_s)
                if killed:
                    wall = time.perf_counter() - t0
                    table[(n, k, "direct_same", mode)] = Cell(wall, kind="lower-bound")
                    known[mode].append((n, k, wall, "lower-bound"))
                    print(f"  same     n={n:4d} k={k:3d} {mode:7s} killed after {wall:.0f} s")
                    continue
                (r,) = res
                table[(n, k, "direct_same", mode)] = Cell(
                    r["seconds"], peak_mib=r["peak_extra_mib"], extra=r
                )
                known[mode].append((n, k, r["seconds"], "measured"))
                print(f"  same     n={n:4d} k={k:3d} {mode:7s} {_fmt_s(r['seconds'])}")
    total = time.perf_counter() - started
    return _zero_markdown(table, args, total, load_start)


def _zero_markdown(
    table: dict[tuple[int, int, str, str], Cell],
    args: argparse.Namespace,
    total_s: float,
    load_start: float | None,
) -> str:
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_end = load_average()
    load = ""
    if load_start is not None and load_end is not None:
        load = (
            f" 1-min load average {load_start:.2f} at the start, {load_end:.2f} at the end: the "
            "machine was shared with other work (four engineers on two cores), so absolute times "
            "are noisy and taken under load."
        )
    padded = ", ".join(
        f"{g} for n = {n}"
        for n, g in sorted(
            {(n, c.extra["fft_grid"][0]) for (n, _, m, _), c in table.items() if m == "fft_zero"}
        )
    )
    cmd = "python bench/conv.py --zero"
    if args.max_direct_s != 120.0:
        cmd += f" --max-direct-s {args.max_direct_s:g}"
    if args.grids != [32, 64]:
        cmd += " --grids " + " ".join(map(str, args.grids))
    if args.kernels != [5, 15, 32]:
        cmd += " --kernels " + " ".join(map(str, args.kernels))
    lines = [
        ZERO_HEADING,
        "",
        f"Run `{cmd}` on {date}; machine: {_machine()}.{load}",
        "",
        f"Input `(1, n, n, n, {CIN})`, {FILTERS} filters, kernel k^3, no axis periodic (a `cube` "
        "dataset). **zero FFT** = `PeriodicConv3D(periodic=False)`: linear convolution by FFT on "
        f"the grid zero-padded to `fft_length(2n - 1)` per axis ({padded}), "
        "whatever the kernel; **Conv3D same** = `keras.layers.Conv3D(padding='same')`, the same "
        "result; **periodic FFT** = `PeriodicConv3D()` on the same input, for the price of the "
        "padding, and on an input of the padded size (**periodic FFT padded**), which the zero FFT "
        "should cost about as much as. Timing as in the section above (one `tf.function` per case, medians after a "
        "trace; direct cases predicted above "
        f"{args.max_direct_s:.0f} s per call are *estimated*, not run).",
        "",
        "| grid | kernel | periodic FFT fwd | periodic FFT padded fwd | zero FFT fwd "
        "| Conv3D same fwd | speed-up fwd | periodic FFT fwd+bwd | periodic FFT padded fwd+bwd "
        "| zero FFT fwd+bwd | Conv3D same fwd+bwd | speed-up fwd+bwd | zero FFT peak MiB "
        "| Conv3D same peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in args.grids:
        for k in args.kernels:
            if k > n:
                continue
            pf, pb = table[(n, k, "fft", "fwd")], table[(n, k, "fft", "fwdbwd")]
            qf, qb = table[(n, k, "fft_padded", "fwd")], table[(n, k, "fft_padded", "fwdbwd")]
            zf, zb = table[(n, k, "fft_zero", "fwd")], table[(n, k, "fft_zero", "fwdbwd")]
            df, db = table[(n, k, "direct_same", "fwd")], table[(n, k, "direct_same", "fwdbwd")]
            peaks = [c.peak_mib for c in (df, db) if c.peak_mib is not None]
            direct_peak = f"{max(peaks):.0f}" if peaks else "n/a"
            lines.append(
                f"| {n}^3 | {k}^3 | {pf.fmt()} | {qf.fmt()} | {zf.fmt()} | {df.fmt()} | "
                f"{_speedup(df, zf)} | {pb.fmt()} | {qb.fmt()} | {zb.fmt()} | {db.fmt()} | "
                f"{_speedup(db, zb)} | "
                f"{zb.peak_mib:.0f} | {direct_peak} |"
            )
    diffs = [
        c.extra["max_rel_diff_vs_fft"] for c in table.values() if "max_rel_diff_vs_fft" in c.extra
    ]
    lines.append("")
    if diffs:
        lines.append(
            f"Largest difference between zero FFT and Conv3D same outputs over the measured "
            f"cases: {max(diffs):.1e} of the output's magnitude."
        )
    lines.append(f"Total benchmark wall time: {total_s / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def _speedup(direct: Cell, fft: Cell) -> str:
    if direct.seconds is None or fft.seconds is None:
        return "n/a"
    x = direct.seconds / fft.seconds
    s = f"{x:,.0f}x" if x >= 10 else f"{x:.1f}x"
    return {
        "measured": s,
        "estimated": f"~{s} (estimated)",
        "lower-bound": f"> {s}",
        "estimated-lower-bound": f"> {s} (estimated)",
    }[direct.kind]


def _markdown(
    table: dict[tuple[int, int, str, str], Cell],
    grids: list[int],
    kernels: list[int],
    args: argparse.Namespace,
    total_s: float,
) -> str:
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        HEADING,
        "",
        f"Run `python bench/conv.py{' --quick' if args.quick else ''}` on {date}; "
        f"machine: {_machine()}.",
        "",
        f"Input `(1, n, n, n, {CIN})`, {FILTERS} filters, kernel k^3. **FFT** = "
        "`magnb.layers.PeriodicConv3D`; **Conv3D** = `keras.layers.Conv3D(padding='valid')` on "
        "the input wrap-padded by `ops.take` (the same periodic result). `fwd` = forward pass; "
        "`fwd+bwd` = forward plus gradients w.r.t. kernel, bias and input. Each case is one "
        "`tf.function`, traced before timing; times are medians over repeated calls "
        "(slow cases: one call). Peak MiB = the case's subprocess peak RSS above its RSS just before "
        "tracing (imports, input and weights already loaded), over both modes.",
        "",
        f"Direct cases predicted to take more than {args.max_direct_s:.0f} s per call (predicted "
        "from the measured case with the largest kernel not above k, by kernel volume x grid "
        "volume) were **not run**: they "
        "are marked *estimated* and are not measurements. *killed* = stopped after "
        f"{args.kill_after_s:.0f} s, a measured lower bound; an estimate scaled from a killed "
        "run is a lower bound too (`>`).",
        "",
        "| grid | kernel | FFT fwd | Conv3D fwd | speed-up fwd | FFT fwd+bwd | Conv3D fwd+bwd "
        "| speed-up fwd+bwd | FFT peak MiB | Conv3D peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in grids:
        for k in kernels:
            if k > n:
                continue
            ff, fb = table[(n, k, "fft", "fwd")], table[(n, k, "fft", "fwdbwd")]
            df, db = table[(n, k, "direct", "fwd")], table[(n, k, "direct", "fwdbwd")]
            peaks = [c.peak_mib for c in (df, db) if c.peak_mib is not None]
            direct_peak = f"{max(peaks):.0f}" if peaks else "n/a"
            lines.append(
                f"| {n}^3 | {k}^3 | {ff.fmt()} | {df.fmt()} | {_speedup(df, ff)} | {fb.fmt()} | "
                f"{db.fmt()} | {_speedup(db, fb)} | {fb.peak_mib:.0f} | {direct_peak} |"
            )
    diffs = [
        c.extra["max_rel_diff_vs_fft"] for c in table.values() if "max_rel_diff_vs_fft" in c.extra
    ]
    lines += [""]
    if diffs:
        lines.append(
            f"Largest difference between the two outputs over the measured cases: "
            f"{max(diffs):.1e} of the output's magnitude."
        )
    lines.append(f"Total benchmark wall time: {total_s / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids and kernels")
    parser.add_argument(
        "--zero",
        action="store_true",
        help="the non-periodic table (default grids 32 64, kernels 5 15 32) instead",
    )
    parser.add_argument("--grids", type=int, nargs="+", help="grid sides (default 60 120)")
    parser.add_argument(
        "--kernels", type=int, nargs="+", help="kernel sides (default 5 15 25 40 60)"
    )
    parser.add_argument(
        "--max-direct-s",
        type=float,
        default=120.0,
        help="do not run a direct case predicted to take longer than this per call",
    )
    parser.add_argument(
        "--kill-after-s",
        type=float,
        default=300.0,
        help="stop a direct case (a subprocess) that runs longer than this",
    )
    parser.add_argument("--write", action="store_true", help="write RESULTS.md even with --quick")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return
    if args.zero:
        args.grids = args.grids or ([16, 32] if args.quick else [32, 64])
        args.kernels = args.kernels or ([5, 15] if args.quick else [5, 15, 32])
        section = run_zero(args)
    else:
        if args.grids is None:
            args.grids = [24, 48] if args.quick else [60, 120]
        if args.kernels is None:
            args.kernels = [5, 15] if args.quick else [5, 15, 25, 40, 60]
        section = run(args)
    print()
    print(section)
    if not args.no_write and (args.write or not args.quick):
        write_section(ZERO_HEADING if args.zero else HEADING, section)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
