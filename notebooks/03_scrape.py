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
# # 03 scrape
#
# Every split file to one fixed-shape sample (resampled to a common grid, cropped to the slab, tiled into a supercell, or cut as a Cartesian cube of one voxel size) in `dataset.h5`, with a label table `table.parquet`: moments, the moment class at the threshold, the magnetic order, and the train/val/test split grouped by formula. The settings come from `config_file` (every key: `docs/config.md`; `magnb scrape DATA --config FILE` builds the same dataset). Choose the threshold by looking at the histogram below, then set it in the file.

# %% tags=["parameters"]
data_dir = "../demo/data"  # magnb data folder (from 02 split)
config_file = "../configs/scrape.yaml"  # ScrapeConfig settings; bulk crystals: scrape_bulk.yaml
settings = {}  # keys that override the file's, e.g. {"threshold": 2.0}
workers = 0  # processes (0: one per core)

# %%
from magnb.config import from_mapping, load_yaml
from magnb.dataset import ScrapeConfig, scrape

values = {**load_yaml(config_file), **settings, "data_dir": data_dir, "workers": workers}
config = from_mapping(ScrapeConfig, values, config_file)
result = scrape(config)
print(result.summary())

# %%
from magnb.viz import class_balance, moment_histogram

moment_histogram(result.table, config.threshold).show()
print("moment class (|moment| > threshold) per split:")
print(class_balance(result.table, "moment_class"))
print("magnetic order per split:")
print(class_balance(result.table, "order"))
print("spin pattern per split:")
print(class_balance(result.table, "order_pattern"))

# %%
columns = [
    "calc_id",
    "formula",
    "order",
    "order_pattern",
    "moment",
    "moment_integral",
    "moment_sample",
    "moment_class",
    "split",
    "fold",
    "status",
    "reason",
]
result.table[columns]
