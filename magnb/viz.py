"""Stage 05, visualize: pictures of datasets, runs and what the filters learned (plotly).

Every function returns a plotly figure; :func:`save_figure` writes it as a static PNG when kaleido
and a browser are available and as standalone HTML otherwise, so batch runs leave pictures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from magnb.errors import MagnbError


def moment_histogram(table: pd.DataFrame, threshold: float, bins: int = 40) -> Any:
    """Histogram of |moment| per sample with the class threshold drawn, coloured by order, so the
    cut is chosen by looking (as the seed project chose 4 muB)."""
    import plotly.express as px

    ok = table[table["status"] == "ok"].copy()
    if ok.empty:
        raise MagnbError("no usable samples in the table to draw")
    ok["|moment| (muB)"] = ok["moment"].abs()
    ok["order"] = ok["order"].replace("", "unknown")
    n_above = int((ok["|moment| (muB)"] > threshold).sum())
    fig = px.histogram(
        ok,
        x="|moment| (muB)",
        color="order",
        nbins=bins,
        barmode="stack",
        title=f"Total moment per cell: {n_above} of {len(ok)} above {threshold:g} muB",
    )
    fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"t = {threshold:g} muB")
    return fig


def class_balance(table: pd.DataFrame, label: str = "moment_class") -> pd.DataFrame:
    """Counts of each class of ``label`` per split (rows: split, columns: class)."""
    ok = table[table["status"] == "ok"]
    return ok.groupby(["split", label]).size().unstack(fill_value=0)


def learning_curves(history: pd.DataFrame, title: str = "Learning curves") -> Any:
    """Loss and the first metric against epoch, training and validation."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if history.empty:
        raise MagnbError("the run has no history yet")
    metric = next((c for c in history.columns if c not in ("epoch", "loss", "learning_rate")
                   and not c.startswith("val_")), None)  # fmt: skip
    cols = [("loss", "loss")] + ([(metric, metric)] if metric else [])
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=[c[1] for c in cols])
    for k, (name, _) in enumerate(cols, start=1):
        for prefix, dash in (("", "solid"), ("val_", "dash")):
            if prefix + name in history:
                fig.add_trace(
                    go.Scatter(
                        x=history["epoch"] + 1,
                        y=history[prefix + name],
                        name=f"{'validation' if prefix else 'training'} {name}",
                        line={"dash": dash},
                    ),
                    row=1,
                    col=k,
                )
        fig.update_xaxes(title_text="epoch", row=1, col=k)
    fig.update_layout(title=title)
    return fig


def runs_comparison(runs: pd.DataFrame, x: str, metric: str) -> Any:
    """The run registry as a plot: ``metric`` against a config field ``x``."""
    import plotly.express as px

    if runs.empty:
        raise MagnbError("no finished runs to compare")
    for col in (x, metric):
        if col not in runs:
            raise MagnbError(f"no column {col!r} in the run registry; have {list(runs.columns)}")
    baseline_cols = [
        c for c in runs.columns if c.endswith(metric.split("_", 1)[-1]) and c != metric
    ]
    long = runs.melt(id_vars=["run_id", x], value_vars=[metric, *baseline_cols], var_name="method")
    return px.scatter(
        long, x=x, y="value", color="method", hover_name="run_id", title=f"{metric} against {x}"
    )


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (.png via kaleido when it works, else .html beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        try:
            fig.write_image(str(path))
            return path
        except Exception:  # kaleido or its browser missing: fall back to HTML
            path = path.with_suffix(".html")
    fig.write_html(str(path), include_plotlyjs=True)  # self-contained: opens offline
    return path
