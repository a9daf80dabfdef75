"""Calibration and confidence: the reliability diagram (accuracy against confidence per bin, with
the ECE) and the confidence histograms on a source and a target domain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import QUANTITY_COLORS, ROLE_COLORS, _empty_figure, plain


def reliability_figure(table, title: str = "Reliability") -> go.Figure:
    """Accuracy against confidence per bin; the gap to the diagonal is the calibration error.

    `table` is a run's `<split>.reliability` array ([bins, 3]: count, summed confidence, summed
    correctness) or a frame with count / confidence / accuracy columns (`probes.calibration_bins`).
    """
    if isinstance(table, pd.DataFrame):
        count, confidence, accuracy = table["count"].to_numpy(), table.confidence.to_numpy(), table.accuracy.to_numpy()
    else:
        table = np.asarray(table, dtype=float)
        count = table[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence, accuracy = table[:, 1] / count, table[:, 2] / count
    edges = np.linspace(0, 1, len(count) + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1 / len(count)
    filled = count > 0
    ece = float(np.nansum(count[filled] * np.abs(accuracy[filled] - confidence[filled])) / max(count.sum(), 1))
    fig = go.Figure(
        go.Bar(
            x=centers[filled],
            y=accuracy[filled],
            width=width * 0.95,
            name="accuracy",
            marker_color=QUANTITY_COLORS["accuracy"],
            customdata=np.stack([count[filled], confidence[filled]], 1),
            hovertemplate="bin %{x:.2f}<br>accuracy %{y:.3f}<br>confidence %{customdata[1]:.3f}"
            "<br>%{customdata[0]} samples<extra></extra>",
        )
    )
    fig.add_scatter(
        x=centers[filled],
        y=confidence[filled],
        mode="markers",
        name="mean confidence",
        marker={"symbol": "line-ew-open", "size": 14, "color": QUANTITY_COLORS["probability"]},
    )
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line={"dash": "dot", "color": "gray"})
    return fig.update_layout(
        title=f"{plain(title)} (ECE {100 * ece:.1f}%)",
        xaxis_title="confidence",
        yaxis_title="accuracy",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
        height=380,
    )


def domain_confidence_figure(confidence: dict[str, dict[str, np.ndarray]]) -> go.Figure:
    """Domain adaptation: histograms of each model's confidence on the source (left) and the target (right).

    `confidence` is `{"source": {"student": p, "teacher": p}, "target": {...}}` (`views.domain_confidence`).
    """
    if not confidence:
        return _empty_figure("No target-domain values recorded.")
    sides = list(confidence)
    titles = {
        "source": "source: p(true class)",
        "target": "target: p(top class), no labels",
    }
    fig = make_subplots(rows=1, cols=len(sides), subplot_titles=[titles.get(s, s) for s in sides], shared_yaxes=True)
    for i, side in enumerate(sides):
        for model, values in confidence[side].items():
            fig.add_histogram(
                x=values,
                xbins={"start": 0, "end": 1.0001, "size": 0.05},
                histnorm="probability",
                name=plain(model),
                legendgroup=model,
                showlegend=i == 0,
                marker={"color": ROLE_COLORS.get(model)},
                opacity=0.6,
                row=1,
                col=i + 1,
            )
        fig.update_xaxes(title_text="confidence", range=[0, 1], row=1, col=i + 1)
    fig.update_yaxes(title_text="share of samples", row=1, col=1)
    return fig.update_layout(barmode="overlay", height=340, title="Confidence on source and target")
