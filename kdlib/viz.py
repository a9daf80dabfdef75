"""Figures: store data in, plotly figures out. The app and the widgets only arrange them.

Every builder takes plain frames or arrays (what `RunStore` returns) and returns a
`plotly.graph_objects.Figure`, so tests check the figures' data, not pixels.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SPLIT_COLORS = {"train": "#636efa", "val": "#ef553b", "test": "#00cc96"}


def training_curves_figure(steps: pd.DataFrame, epochs: pd.DataFrame, title: str = "") -> go.Figure:
    """Loss per logged step and per epoch (left), accuracy per epoch on each split (right).

    `steps` is indexed by global step with a `train.loss` column; `epochs` by epoch, with
    `step`, `train.loss` and `<split>.acc` columns (`RunStore.step_metrics` / `epoch_metrics`).
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    if "train.loss" in steps:
        fig.add_scatter(
            x=steps.index,
            y=steps["train.loss"],
            mode="lines",
            name="train loss (steps)",
            line={"color": SPLIT_COLORS["train"], "width": 1},
            opacity=0.5,
            row=1,
            col=1,
        )
    if "train.loss" in epochs:
        fig.add_scatter(
            x=epochs["step"],
            y=epochs["train.loss"],
            mode="lines+markers",
            name="train loss (epoch mean)",
            line={"color": SPLIT_COLORS["train"]},
            row=1,
            col=1,
        )
    for split, color in SPLIT_COLORS.items():
        if f"{split}.acc" in epochs:
            fig.add_scatter(
                x=epochs.index,
                y=epochs[f"{split}.acc"],
                mode="lines+markers",
                name=f"{split} accuracy",
                line={"color": color},
                row=1,
                col=2,
            )
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    return fig.update_layout(
        title=title or None, height=360, margin={"t": 60, "b": 40}, legend={"orientation": "h", "y": -0.25}
    )
