"""Shared styling for the figures: the split and class colours, an empty figure with a message,
and a grid of small panels. Every other module of `kdlib.viz` builds on these."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

SPLIT_COLORS = {"train": "#636efa", "val": "#ef553b", "test": "#00cc96"}

CLASS_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def _small_multiples(n: int, titles: list[str], cols: int = 3) -> go.Figure:
    cols = max(min(cols, n), 1)
    rows = max(-(-n // cols), 1)
    return make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08, vertical_spacing=min(0.2, 0.6 / rows)
    )


def _empty_figure(message: str, height: int = 200) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig.update_layout(height=height)
