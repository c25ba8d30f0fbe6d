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
# # 01 collect
#
# Find the VASP calculations in a tree, copy them with their companions into the data folder and write `manifest.parquet` (provenance: source path, sha256 of every file, formula, run tag, spin kind, status). The source tree is only read.

# %% tags=["parameters"]
source_dir = "../demo/vasp"  # root of the VASP calculation tree
data_dir = "../demo/data"  # magnb data folder
layout = "{formula}/{run}/CHGCAR*"  # where the CHGCARs sit in the tree
mode = "copy"  # or "hardlink"

# %%
from magnb.collect import CollectConfig, collect

result = collect(CollectConfig(source=source_dir, data_dir=data_dir, layout=layout, mode=mode))
print(result.summary())

# %%
result.manifest[["calc_id", "formula", "run", "spin_kind", "natoms", "status", "error"]]

# %%
result.manifest.groupby(["run", "spin_kind", "status"]).size()
