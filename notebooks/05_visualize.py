# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags
#     notebook_metadata_filter: kernelspec
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: magnb (.venv)
#     language: python
#     name: magnb
# ---

# %% [markdown]
# # 05 visualize
#
# Look inside a trained run: walk through its 3D filters slice by slice, see a sample's input (in muB/A^3, as stored), a layer's activations and the saliency map on the sample's real cell with the atoms within `atom_distance` A of the slice, and the dataset and learning curves. Opens the latest run unless `run_id` names one. Move the sliders; nothing here writes to the run except `save_pictures`.

# %% tags=["parameters"]
runs_dir = "../demo/runs"  # where the runs are (configs/default.yaml's runs_dir, demo/runs)
run_id = None  # None: the latest finished run
calc_id = None  # sample whose lattice and density the explorers show (None: the first test one)
atom_distance = 1.0  # A: atoms this close to a slice's plane are drawn on it
save_pictures = False  # write static pictures to <run>/figures (batch runs)

# %%
from magnb.viz import load_run

run = load_run(runs_dir, run_id)
print(run.run_dir.name, run.config.label, run.config.model)
print({k: v.get("balanced_accuracy", v.get("mae")) for k, v in run.metrics["test"].items()})

# %% [markdown]
# Kernel axes are in angstrom from the voxels of the sample `calc_id` (its own lattice, times the pooling before the layer), centred on the kernel's middle voxel.

# %%
from magnb.viz import FilterExplorer, default_sample, sample_geometry

calc_id = calc_id or default_sample(run.dataset_dir)
filters = FilterExplorer(run.model, geometry=sample_geometry(run.dataset_dir, calc_id))
filters.widget()

# %%
from magnb.viz import DensityExplorer

density = DensityExplorer(run.model, run.dataset_dir, calc_id, distance=atom_distance)
density.widget()

# %%
from magnb.baselines import dataset_threshold
from magnb.dataset import read_table
from magnb.viz import class_balance_figure, learning_curves, moment_histogram

table = read_table(run.dataset_dir)
moment_histogram(table, threshold=dataset_threshold(run.dataset_dir)).show()
class_balance_figure(table, run.config.label).show()
learning_curves(run.history, title=run.run_dir.name).show()

# %%
from magnb.train import list_runs
from magnb.viz import save_run_pictures

print(list_runs(runs_dir).to_string(index=False))
if save_pictures:
    for path in save_run_pictures(run):
        print(path)
