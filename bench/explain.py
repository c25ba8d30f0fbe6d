"""``magnb.explain`` on one seed_base sample (120^3 x 2, the seed's 2 x 2 supercell of an
A2B2X6 monolayer, 3 periodic filters of 40^3): integrated gradients with their steps, the
region labels and per-atom table, and occlusion of every magnetic site (one flip each, plus
each pair of distinct first- to third-neighbour sites). Target: seconds, not minutes.

    python bench/explain.py [--backend tensorflow|jax] [--steps 32] [--keep DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    cores,
    fmt_s,
    load_average,
    machine_lines,
    markdown_table,
    write_section,
)
from train import build_dataset  # noqa: E402

HEADING = "## explain: one seed_base sample of 120^3 x 2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["tensorflow", "jax"], default="tensorflow")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--keep", help="build the dataset here and keep it")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend  # before Keras is imported
    load_start = load_average()

    import keras
    import numpy as np

    from magnb import explain
    from magnb.config import TrainConfig
    from magnb.loader import DensityDataset
    from magnb.model import build_model

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="magnb-bench-explain-"))
    data = root / "data" if (root / "data/dataset.h5").is_file() else build_dataset(root, 2)
    ds = DensityDataset(data, split=None, label="order", shuffle=False)
    calc_id = str(ds.table["calc_id"].iloc[0])
    x = ds.read(np.array([0]))[0]
    keras.utils.set_random_seed(0)
    model = build_model(TrainConfig(dataset_dir=data, model="seed_base"), x.shape, 2,
                        (True, True, False))  # fmt: skip
    space = explain.InputSpace.of(data)
    model(x[None])  # build and trace once

    timings: list[tuple[str, float, str]] = []

    def timed(name: str, fn, note: str = ""):
        t0 = time.perf_counter()
        out = fn()
        timings.append((name, time.perf_counter() - t0, note))
        return out

    t_forward = timed("one forward pass", lambda: model(x[None]))
    del t_forward
    attr, residual = timed(
        f"integrated gradients ({args.steps} steps)",
        lambda: explain.integrated_gradients(model, x, 0, space.baseline(x.shape), args.steps),
    )
    structure = timed("sample structure (pymatgen shells)",
                      lambda: explain.sample_structure(data, calc_id))  # fmt: skip
    labels = timed("region labels (atoms, pair paths)", lambda: explain.region_labels(structure))
    owner = timed("nearest atom of every voxel", lambda: explain.nearest_atom(structure))
    timed("per-atom table", lambda: explain.atom_table(structure, attr, owner))
    region = explain.region_summary(attr, labels)
    n_mag = int(structure.magnetic.sum())
    timed(
        "occlusion of every magnetic site",
        lambda: explain.occlusion_table(model, x, structure, 0, space, ligands=False, pairs=False),
        f"{n_mag + 1} forward passes",
    )
    core = sum(t for name, t, _ in timings if name != "one forward pass")
    occ = timed(
        "... and pair interactions of the distinct neighbour sites",
        lambda: explain.occlusion_table(model, x, structure, 0, space, ligands=False),
    )
    n_pairs = int((occ["kind"] == "pair").sum())
    timings[-1] = (
        *timings[-1][:2],
        f"{n_mag + 1} + {n_pairs} pairs = {n_mag + n_pairs + 1} passes",
    )
    rows = [[name, fmt_s(t), note] for name, t, note in timings]
    rows.insert(-1, ["**explain: gradients, regions, site occlusion**", f"**{fmt_s(core)}**", ""])
    table = markdown_table(["step", "time", "note"], rows)
    section = "\n".join(
        [
            HEADING,
            "",
            f"`python bench/explain.py --backend {args.backend}`: {calc_id}, "
            f"{x.shape[0]}x{x.shape[1]}x{x.shape[2]} x {x.shape[3]}, {len(structure.frac)} atoms "
            f"({n_mag} magnetic), shells {', '.join(f'{d:.2f}' for d in structure.shells)} A; "
            f"seed_base with random weights (the cost does not depend on them), "
            f"{cores()} CPU cores.",
            "",
            table,
            "",
            f"Completeness residual of the integrated gradients: {residual:.2e} "
            f"(p(x) - p(baseline) = {float(np.sum(attr)) - residual:.3e}); "
            f"share of |attribution| on the A sites: "
            f"{float(region.set_index('region').loc['A site', 'ig_share']):.3f}.",
            "",
            f'Target "seconds, not minutes": {"met" if core < 60 else "not met here"}. All but '
            f"the geometry rows are passes of the model ({fmt_s(timings[0][1])} a forward pass of "
            f"seed_base on this machine; a gradient step costs about twice that): integrated "
            f"gradients are {args.steps} gradient passes (Gauss-Legendre nodes; the residual "
            f"says whether fewer would do), site occlusion one forward pass per magnetic site. "
            f"The geometry (structure, regions, nearest atoms) takes "
            f"{fmt_s(sum(t for n, t, _ in timings[2:6]))}.",
            "",
            *machine_lines(
                [
                    "keras",
                    "tensorflow-cpu" if args.backend == "tensorflow" else "jax",
                    "numpy",
                    "scipy",
                    "pymatgen",
                ],
                load_start,
            ),
            "",
        ]
    )
    print(section)
    if not args.no_write:
        write_section(HEADING, section)


if __name__ == "__main__":
    main()
