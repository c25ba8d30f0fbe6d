"""Write notebooks/0*.ipynb from the cell sources below (outputs stripped by construction).

The notebooks are thin callers of magnb; keeping their source here makes review and diffs easy.
Run: .venv/bin/python tools/make_notebooks.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_collect.ipynb": [
        (
            "md",
            "# 01 collect\n\nFind the VASP calculations in a tree, copy them with their companions "
            "into the data folder and write `manifest.parquet` (provenance: source path, sha256 of "
            "every file, formula, run tag, spin kind, status). The source tree is only read.",
        ),
        (
            "parameters",
            'source_dir = "../demo/vasp"  # root of the VASP calculation tree\n'
            'data_dir = "../demo/data"  # magnb data folder\n'
            'layout = "{formula}/{run}/CHGCAR*"  # where the CHGCARs sit in the tree\n'
            'mode = "copy"  # or "hardlink"',
        ),
        (
            "code",
            "from magnb.collect import CollectConfig, collect\n\n"
            "result = collect(\n"
            "    CollectConfig(source=source_dir, data_dir=data_dir, layout=layout, mode=mode)\n"
            ")\n"
            "print(result.summary())",
        ),
        (
            "code",
            'result.manifest[["calc_id", "formula", "run", "spin_kind", "natoms", "status", "error"]]',
        ),
        ("code", 'result.manifest.groupby(["run", "spin_kind", "status"]).size()'),
    ],
    "02_split.ipynb": [
        (
            "md",
            "# 02 split\n\nEach collected calculation to `data/split/<calc_id>.h5`: total density "
            "(e/A^3) and magnetization (muB/A^3) on the native grid, the structure, and the moment "
            "reported by OUTCAR/OSZICAR beside the integral of the magnetization.",
        ),
        (
            "parameters",
            'data_dir = "../demo/data"  # magnb data folder (from 01 collect)\n'
            "workers = 0  # processes (0: one per core)\n"
            "export_chgcar = False  # also write <calc_id>.mag.vasp for VESTA",
        ),
        (
            "code",
            "from magnb.split import SplitConfig, split_all\n\n"
            "result = split_all(\n"
            "    SplitConfig(data_dir=data_dir, workers=workers, export_chgcar=export_chgcar)\n"
            ")\n"
            "print(result.summary())",
        ),
        (
            "code",
            'columns = ["calc_id", "spin_kind", "nx", "ny", "nz", "electrons", "moment_integral",\n'
            '           "moment", "moment_source", "moment_flag", "status"]\n'
            "result.index[columns]",
        ),
        (
            "code",
            "import plotly.express as px\n\n"
            'ok = result.index[result.index["status"] == "ok"]\n'
            "px.scatter(\n"
            '    ok, x="moment", y="moment_integral", color="run", hover_name="calc_id",\n'
            '    labels={"moment": "reported moment (muB)", "moment_integral": "integral of m (muB)"},\n'
            '    title="Integral of the magnetization against the moment VASP reported",\n'
            ")",
        ),
        (
            "code",
            "from magnb.split import load_split\n\n"
            'sample = load_split(ok.iloc[0]["path"])\n'
            'm = sample.get("magnetization", sample.get("mz"))\n'
            "if m is not None:\n"
            "    k = int(abs(m).sum(axis=(0, 1)).argmax())  # the plane where |m| is largest\n"
            "    px.imshow(\n"
            '        m[:, :, k].T, origin="lower", color_continuous_scale="RdBu_r",\n'
            "        color_continuous_midpoint=0.0,\n"
            "        title=f\"{sample['attrs']['calc_id']}: m in plane {k} along c (muB/A^3)\",\n"
            "    ).show()",
        ),
    ],
    "03_scrape.ipynb": [
        (
            "md",
            "# 03 scrape\n\nEvery split file to one fixed-shape sample (resampled to a common grid, "
            "cropped to the slab, tiled into a supercell) in `dataset.h5`, with a label table "
            "`table.parquet`: moments, the moment class at the threshold, the magnetic order, and "
            "the train/val/test split grouped by formula. Choose the threshold by looking at the "
            "histogram below.",
        ),
        (
            "parameters",
            'data_dir = "../demo/data"  # magnb data folder (from 02 split)\n'
            'representation = "fractional"  # or "cube" (fixed voxel size in A)\n'
            "grid = [24, 40, 24]  # points per cell along a, b, c (after the slab crop)\n"
            "slab_window = 12.0  # A kept along c around the slab (None: the whole cell)\n"
            "supercell = [1, 1, 1]  # tiling along a, b, c (the seed used [2, 2, 1])\n"
            'channels = ["m+", "m-"]  # the seed\'s two channels\n'
            'normalization = "maxabs"\n'
            "threshold = 4.0  # muB: moment_class is |moment| > threshold\n"
            "fractions = [0.6, 0.2, 0.2]  # train, val, test (grouped by formula)\n"
            'stratify = "order_pattern"  # keep each split\'s classes balanced\n'
            "kfold = 5\n"
            "seed = 0\n"
            "workers = 0",
        ),
        (
            "code",
            "from magnb.config import from_mapping\n"
            "from magnb.store import ScrapeConfig, scrape\n\n"
            "config = from_mapping(ScrapeConfig, dict(\n"
            "    data_dir=data_dir, representation=representation, grid=grid,\n"
            "    slab_window=slab_window, supercell=supercell, channels=channels,\n"
            "    normalization=normalization, threshold=threshold, fractions=fractions,\n"
            "    stratify=stratify, kfold=kfold, seed=seed, workers=workers,\n"
            "))\n"
            "result = scrape(config)\n"
            "print(result.summary())",
        ),
        (
            "code",
            "from magnb.viz import class_balance, moment_histogram\n\n"
            "moment_histogram(result.table, threshold).show()\n"
            'print("moment class (|moment| > threshold) per split:")\n'
            'print(class_balance(result.table, "moment_class"))\n'
            'print("magnetic order per split:")\n'
            'print(class_balance(result.table, "order"))\n'
            'print("spin pattern per split:")\n'
            'print(class_balance(result.table, "order_pattern"))',
        ),
        (
            "code",
            'columns = ["calc_id", "formula", "order", "order_pattern", "moment", "moment_integral",\n'
            '           "moment_sample", "moment_class", "split", "fold", "status", "reason"]\n'
            "result.table[columns]",
        ),
    ],
    "04_train.ipynb": [
        (
            "md",
            "# 04 train\n\nTrain a periodic 3D CNN on the dataset and report it beside the "
            "baselines (majority class, the physics integral, a descriptor model) on the same "
            "composition-grouped test split. `papermill 04_train.ipynb out.ipynb -f config.yaml` "
            "trains exactly what `magnb train config.yaml` trains; `magnb demo` passes "
            "`configs/default.yaml` (the spin-pattern task, 15-voxel kernels).",
        ),
        ("parameters", None),
        (
            "code",
            "from magnb.config import train_config_from_notebook\n"
            "from magnb.train import train\n\n"
            "config = train_config_from_notebook(globals(), _names_before_injection)\n"
            "result = train(config)\n"
            "print(result.summary())",
        ),
        (
            "code",
            "from magnb.viz import learning_curves\n\n"
            'learning_curves(result.history, title=f"{result.run_dir.name}").show()',
        ),
        (
            "code",
            "from magnb.train import list_runs\n\nruns = list_runs(config.runs_dir)\nruns",
        ),
    ],
    "05_visualize.ipynb": [
        (
            "md",
            "# 05 visualize\n\nLook inside a trained run: walk through its 3D filters slice by "
            "slice, see a sample's input, a layer's activations and the saliency map with the "
            "atoms near the slice, and the dataset and learning curves. Opens the latest run unless "
            "`run_id` names one. Move the sliders; nothing here writes to the run except "
            "`save_pictures`.",
        ),
        (
            "parameters",
            'runs_dir = "../demo/runs"  # where the runs are\n'
            "run_id = None  # None: the latest finished run\n"
            "calc_id = None  # sample for the density explorer (None: the first one)\n"
            "save_pictures = False  # write static pictures to <run>/figures (batch runs)",
        ),
        (
            "code",
            "from magnb.viz import load_run\n\n"
            "run = load_run(runs_dir, run_id)\n"
            "print(run.run_dir.name, run.config.label, run.config.model)\n"
            'print({k: v.get("balanced_accuracy", v.get("mae")) for k, v in run.metrics["test"].items()})',
        ),
        (
            "code",
            "from magnb.viz import FilterExplorer, dataset_voxel_size\n\n"
            "filters = FilterExplorer(run.model, dataset_voxel_size(run.dataset_dir))\n"
            "filters.widget()",
        ),
        (
            "code",
            "from magnb.viz import DensityExplorer\n\n"
            "density = DensityExplorer(run.model, run.dataset_dir, calc_id)\n"
            "density.widget()",
        ),
        (
            "code",
            "from magnb.store import read_table\n"
            "from magnb.viz import class_balance_figure, learning_curves, moment_histogram\n\n"
            "table = read_table(run.dataset_dir)\n"
            "moment_histogram(table, threshold=4.0).show()\n"
            "class_balance_figure(table, run.config.label).show()\n"
            "learning_curves(run.history, title=run.run_dir.name).show()",
        ),
        (
            "code",
            "from magnb.train import list_runs\n"
            "from magnb.viz import save_run_pictures\n\n"
            "print(list_runs(runs_dir).to_string(index=False))\n"
            "if save_pictures:\n"
            "    for path in save_run_pictures(run):\n"
            "        print(path)",
        ),
    ],
}


def train_parameters() -> str:
    """The parameters cell of 04_train: every TrainConfig field at its default, so that
    ``papermill -f config.yaml`` trains what ``magnb train config.yaml`` trains (keys the file
    leaves out take the same defaults in both). ``magnb demo`` passes configs/default.yaml."""
    import dataclasses

    from magnb.config import TrainConfig, to_mapping

    defaults = to_mapping(TrainConfig())
    lines = ["# every key of magnb.config.TrainConfig; papermill -f config.yaml overrides them"]
    for f in dataclasses.fields(TrainConfig):
        value = defaults[f.name]
        if f.name == "dataset_dir":
            value = "../demo/data"
        elif f.name == "runs_dir":
            value = "../demo/runs"
        lines.append(f"{f.name} = {value!r}")
    lines.append("_names_before_injection = set(globals())  # papermill adds its cell after this")
    return "\n".join(lines)


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "magnb",
        "display_name": "magnb (.venv)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        if kind == "md":
            nb.cells.append(new_markdown_cell(source))
        else:
            cell = new_code_cell(source if source is not None else train_parameters())
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), out / name)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
