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
# # 04 train
#
# Train a periodic 3D CNN on the dataset and report it beside the baselines (majority class, the physics integral, a descriptor model) on the same composition-grouped test split. `papermill 04_train.ipynb out.ipynb -f config.yaml` trains exactly what `magnb train config.yaml` trains; `magnb demo` passes `configs/default.yaml` (the spin-pattern task, 15-voxel kernels).

# %% tags=["parameters"]
# every key of magnb.config.TrainConfig; papermill -f config.yaml overrides them
dataset_dir = "../demo/data"
runs_dir = "../demo/runs"
name = "default"
label = "order"
channels = None
model = "default"
filters = [8, 16]
kernel_size = [7, 5]
pool = [2, 2]
dense = [32]
dropout = 0.2
activation = "relu"
kernel_smoothness = 0.0
epochs = 20
batch_size = 8
optimizer = "adam"
learning_rate = 0.001
lr_schedule = "constant"
early_stopping = 0
class_weight = "balanced"
augment = True
augment_symmetry = False
seed = 0
strategy = "auto"
cpu_replicas = 0
workers = 1
force = False
_names_before_injection = set(globals())  # papermill adds its cell after this

# %%
from magnb.config import train_config_from_notebook
from magnb.train import train

config = train_config_from_notebook(globals(), _names_before_injection)
result = train(config)
print(result.summary())

# %%
from magnb.viz import learning_curves

learning_curves(result.history, title=f"{result.run_dir.name}").show()

# %%
from magnb.train import list_runs

runs = list_runs(config.runs_dir)
runs
