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
# # 02 split
#
# Each collected calculation to `data/split/<calc_id>.h5`: total density (e/A^3) and magnetization (muB/A^3) on the native grid, the structure, and the moment reported by OUTCAR/OSZICAR beside the integral of the magnetization.

# %% tags=["parameters"]
data_dir = "../demo/data"  # magnb data folder (from 01 collect)
workers = 0  # processes (0: one per core)
export_chgcar = False  # also write <calc_id>.mag.vasp for VESTA

# %%
from magnb.split import SplitConfig, split_all

result = split_all(SplitConfig(data_dir=data_dir, workers=workers, export_chgcar=export_chgcar))
print(result.summary())

# %%
columns = [
    "calc_id",
    "spin_kind",
    "nx",
    "ny",
    "nz",
    "electrons",
    "moment_integral",
    "moment",
    "moment_source",
    "moment_flag",
    "status",
]
result.index[columns]

# %%
import plotly.express as px

ok = result.index[result.index["status"] == "ok"]
px.scatter(
    ok,
    x="moment",
    y="moment_integral",
    color="run",
    hover_name="calc_id",
    labels={"moment": "reported moment (muB)", "moment_integral": "integral of m (muB)"},
    title="Integral of the magnetization against the moment VASP reported",
)

# %%
from pathlib import Path

from magnb.split import load_split

sample = load_split(Path(data_dir) / ok.iloc[0]["path"])  # paths are relative to the data folder
m = sample.get("magnetization", sample.get("mz"))
if m is not None:
    k = int(abs(m).sum(axis=(0, 1)).argmax())  # the plane where |m| is largest
    px.imshow(
        m[:, :, k].T,
        origin="lower",
        color_continuous_scale="RdBu_r",
        color_continuous_midpoint=0.0,
        title=f"{sample['attrs']['calc_id']}: m in plane {k} along c (muB/A^3)",
    ).show()
