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
explain_samples = 8  # test samples in the shell table (None: every test sample)
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

# %% [markdown]
# ## What the decision rests on
#
# Per test sample: integrated gradients of the predicted class's probability, from a cell with no density, summed over regions of the real cell (`ig_share`; the completeness residual in `residual`): the magnetic A sites, the paths between A-A neighbours of shells 1, 2 and 3, the ligands and the rest. Beside them, occlusion: flip the moment within 1 A of one site (`occlusion` of the A sites and ligands), or of both ends of a neighbour pair (`occlusion` of a shell: the pair interaction p(ij) - p(i) - p(j) + p0, what flipping one end changes in the effect of flipping the other). The README says what these show on the demo, beside a model trained on shuffled labels.

# %%
from magnb import explain
from magnb.dataset import read_table

test_ids = read_table(run.dataset_dir).query("split == 'test'")["calc_id"].tolist()
shells = explain.shell_table(run.run_dir, calc_ids=test_ids[:explain_samples], progress=True)
print(explain.per_class(shells).round(3).to_string(index=False))

# %%
from magnb.viz import attribution_figure

sample = explain.sample_attribution(run.run_dir, calc_id)
print(f"{calc_id}: class {sample.target} at p = {sample.probability:.3f}, "
      f"completeness residual {sample.residual:.1e}")  # fmt: skip
attribution_figure(
    sample_geometry(run.dataset_dir, calc_id), sample.atoms, sample.raw[..., 0],
    distance=atom_distance, value="attribution", title=f"{calc_id}: attribution per atom",
).show()  # fmt: skip

# %% [markdown]
# First-layer filters against two unit moments (the dataset's own on-site shape) at each neighbour-shell distance and direction: `interaction` is what the pair's relative orientation changes in the filter's mean response; `distinguishes` names the shell a filter tells apart most.

# %%
responses = explain.filter_pair_responses(run.run_dir, calc_id=calc_id)
print(explain.distinguished_shells(responses).round(4).to_string(index=False))

# %%
from magnb.baselines import dataset_threshold
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
