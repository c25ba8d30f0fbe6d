"""The GPU numbers on the JAX backend, in one short run (``bench/gpu.sh`` installs magnb and calls
this): build a seed_base dataset, then print

- ``seed_base``'s training samples/s (steady epoch, batch 2, the loader feeding it);
- the loader's samples/s alone (read, un-normalize, roll);
- ``PeriodicConv3D`` (3 filters of 40^3, the seed's layer) forward + backward at 120^3 and
  240^3 x 2, jitted, median of 5 calls after one to compile.

``--dry-run`` runs every step on tiny sizes (a 16^3 dataset of 8 samples, the default model,
the layer at 16^3 and 24^3 with a 5^3 kernel) on whatever device JAX has: the test of the script.

    KERAS_BACKEND=jax python bench/gpu.py [--dry-run] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build(root: Path, samples: int, dry: bool) -> Path:
    """A demo tree scraped the seed's way (120^3 x 2: 60 x 60 x 120 per cell after a 14 A slab
    window, tiled 2 x 2 x 1), or a 16^3 one for a dry run."""
    from magnb.collect import CollectConfig, collect
    from magnb.split import SplitConfig, split_all
    from magnb.store import ScrapeConfig, scrape
    from magnb.synth import SynthConfig, write_demo_tree

    synth_grid = (16, 16, 64) if dry else (30, 30, 120)
    write_demo_tree(
        root / "vasp", SynthConfig(n_compounds=samples // 2, grid=synth_grid), progress=False
    )
    collect(CollectConfig(source=root / "vasp", data_dir=root / "data", progress=False))
    split_all(SplitConfig(data_dir=root / "data", progress=False))
    grid, supercell = ((16, 16, 16), (1, 1, 1)) if dry else ((60, 60, 120), (2, 2, 1))
    scrape(
        ScrapeConfig(
            data_dir=root / "data",
            grid=grid,
            supercell=supercell,
            slab_window=12.0 if dry else 14.0,
            normalization="maxabs",
            fractions=(1.0, 0.0, 0.0),
            kfold=0,
            progress=False,
        )
    )
    return root / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, any device")
    parser.add_argument("--samples", type=int, default=62)
    parser.add_argument("--keep", help="build the dataset here (reused when there)")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    dry = args.dry_run
    samples = 8 if dry else args.samples

    import jax
    import keras

    from magnb.config import TrainConfig
    from magnb.layers import PeriodicConv3D
    from magnb.loader import DensityDataset
    from magnb.model import build_model

    t_start = time.perf_counter()
    print(f"gpu.py: keras {keras.__version__}, backend {keras.backend.backend()}, jax "
          f"{jax.__version__}, devices {jax.devices()}", flush=True)  # fmt: skip
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="magnb-gpu-"))
    t0 = time.perf_counter()
    data = root / "data" if (root / "data/dataset.h5").is_file() else build(root, samples, dry)
    print(f"dataset: {data} ({time.perf_counter() - t0:.1f} s)", flush=True)

    options = dict(split="train", batch_size=2, augment=True, shuffle=True)
    alone = DensityDataset(data, **options)
    n = len(alone.table)
    for i in range(len(alone)):  # warm-up: page cache and memory map
        alone[i]
    t0 = time.perf_counter()
    for i in range(len(alone)):
        alone[i]
    print(f"loader: {n / (time.perf_counter() - t0):.0f} samples/s", flush=True)

    config = TrainConfig(dataset_dir=data, model="default" if dry else "seed_base", batch_size=2)
    model = build_model(config, alone.sample_shape, 2)
    model.compile(
        optimizer=keras.optimizers.Adam(5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(DensityDataset(data, workers=1, **options), epochs=3, callbacks=[Timer()], verbose=0)
    steady = statistics.median(times[1:])
    print(
        f"{config.model}: {n / steady:.1f} samples/s training (steady epoch {steady:.2f} s; "
        f"first epoch, with compilation, {times[0]:.1f} s)",
        flush=True,
    )

    kernel = 5 if dry else 40
    for grid in (16, 24) if dry else (120, 240):
        layer = PeriodicConv3D(3, kernel)
        x = jax.random.normal(jax.random.PRNGKey(0), (1, grid, grid, grid, 2), dtype="float32")
        layer.build(x.shape)
        weights = [v.value for v in layer.trainable_variables]

        def loss(w, x, layer=layer):
            y, _ = layer.stateless_call(w, [], x)
            return (y**2).mean()

        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        jax.block_until_ready(step(weights, x))
        calls = []
        for _ in range(5):
            t0 = time.perf_counter()
            jax.block_until_ready(step(weights, x))
            calls.append(time.perf_counter() - t0)
        print(
            f"fft layer {grid}^3 x 2, {kernel}^3 kernel, 3 filters: "
            f"{1e3 * statistics.median(calls):.1f} ms forward+backward",
            flush=True,
        )
    print(f"gpu.py: done in {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
