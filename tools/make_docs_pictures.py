"""docs/demo_patterns.png: one demo compound's four orders, the m+ channel in the metal plane.

    python tools/make_docs_pictures.py demo/runs   # after `make demo`

Shows why the demo's order task needs a model that sees space: the Neel, zigzag and stripe cells
hold the same amount of positive magnetization, on different A sites.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt

from magnb.store import read_table
from magnb.viz import DensityExplorer, load_run, save_figure

ORDERS = ("FM", "AFM-Neel", "AFM-zigzag", "AFM-stripe")


def main(runs_dir: str) -> None:
    run = load_run(runs_dir)
    table = read_table(run.dataset_dir)
    test = table[(table["split"] == "test") & (table["status"] == "ok")]
    first = test["formula"].iloc[0]  # a compound the model never saw: its four runs
    ids = dict(test[test["formula"] == first][["run", "calc_id"]].to_numpy())
    out = Path(__file__).resolve().parents[1] / "docs" / "demo_patterns.png"
    fig, axes = plt.subplots(1, len(ORDERS), figsize=(2.6 * len(ORDERS), 3.6))
    with tempfile.TemporaryDirectory() as tmp:
        for ax, order in zip(axes, ORDERS, strict=True):
            explorer = DensityExplorer(run.model, run.dataset_dir, ids[order])
            png = save_figure(explorer.figure(), Path(tmp) / f"{order}.png")
            ax.imshow(mpimg.imread(png)[70:450, 130:420])  # the heatmap and its axes
            ax.set_title(order)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo/runs")
