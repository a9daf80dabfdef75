"""The teacher's route and the anchors (RCO): the 2-D map of the student on the route, its KL to
each teacher checkpoint over epochs and along the route, and the anchor schedule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import ROLE_COLORS, _empty_figure, integer_axis, log_axis, plain, shades


def route_map_figure(layout: pd.DataFrame, title: str = "The student on the teacher's route") -> go.Figure:
    """A 2-D map of output space: the teacher's checkpoints as a path, the student's epochs as another.

    `layout` (from `kdlib.views.route_layout`) has columns x, y, who ("teacher" | "student" |
    "moving teacher"), epoch, and `anchor` (True for the student's anchors) and `current`.
    """
    fig = go.Figure()
    styles = {
        "teacher": (ROLE_COLORS["teacher"], "circle"),
        "moving teacher": (ROLE_COLORS["moving teacher"], "diamond"),
        "student": (ROLE_COLORS["student"], "circle"),
    }
    for who, part in layout.groupby("who", sort=False):
        color, symbol = styles.get(who, ("gray", "circle"))
        fig.add_scatter(
            x=part.x,
            y=part.y,
            mode="lines+markers+text",
            name=plain(who),
            text=part.epoch.astype(str),
            textposition="top center",
            textfont={"size": 9},
            line={"color": color},
            marker={"symbol": symbol, "size": 8, "color": color},
            hovertemplate=f"{plain(who)} after epoch %{{text}}<extra></extra>",
        )
    if "anchor" in layout and layout.anchor.any():
        anchors = layout[layout.anchor]
        fig.add_scatter(
            x=anchors.x,
            y=anchors.y,
            mode="markers",
            name="anchors",
            marker={
                "symbol": "star",
                "size": 16,
                "color": ROLE_COLORS["anchor"],
                "line": {"width": 1, "color": "black"},
            },
        )
    if "current" in layout and layout.current.any():
        now = layout[layout.current]
        fig.add_scatter(
            x=now.x,
            y=now.y,
            mode="markers",
            name="current anchor",
            marker={"size": 24, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": ROLE_COLORS["anchor"]}},
        )
    return fig.update_layout(title=plain(title), xaxis_title="PC 1", yaxis_title="PC 2", height=480)


def route_distance_figure(epochs: pd.DataFrame) -> go.Figure:
    """Per student epoch: mean KL to each teacher checkpoint (lines from `route_kl.*`), the current anchor marked."""
    columns = sorted(c for c in epochs.columns if c.startswith("route_kl."))
    if not columns:
        return _empty_figure("This run's teacher has no route (train it with teacher.route).")
    fig = go.Figure()
    last = columns[-1]
    for column, color in zip(columns, shades("teacher", len(columns)), strict=True):  # early: light, converged: full
        checkpoint = int(column.split(".")[1])
        fig.add_scatter(
            x=epochs.index,
            y=epochs[column],
            mode="lines",
            name=f"teacher epoch {checkpoint}",
            line={"width": 3 if column == last else 1.2, "color": color},
        )
    if "anchor_epoch" in epochs:
        anchor_kl = [
            epochs.loc[e, f"route_kl.{int(a):04d}"] if f"route_kl.{int(a):04d}" in epochs else np.nan
            for e, a in epochs.anchor_epoch.items()
        ]
        fig.add_scatter(
            x=epochs.index,
            y=anchor_kl,
            mode="markers",
            name="current anchor",
            marker={"symbol": "star", "size": 12, "color": ROLE_COLORS["anchor"]},
        )
    return fig.update_layout(
        title="Student to teacher checkpoints: KL(teacher || student) on the probe set",
        xaxis=integer_axis(epochs.index, "student epoch"),
        yaxis=log_axis(epochs[columns].to_numpy(), "mean KL"),
        height=380,
    )


def route_profile_figure(
    epochs: pd.DataFrame, student_epochs: list[int], anchors: list[int] | None = None, selected: int | None = None
) -> go.Figure:
    """Per student epoch, its mean KL to each checkpoint of the teacher's route (x: the checkpoint).

    A student early in training sits nearer the early checkpoints than the converged teacher (the right
    end): those are the easier targets. `anchors` are starred on the `selected` epoch's line.
    """
    columns = sorted(c for c in epochs.columns if c.startswith("route_kl."))
    if not columns or epochs.empty:
        return _empty_figure("No route distances yet (a run whose teacher has a route records them).")
    checkpoints = [int(c.split(".")[1]) for c in columns]
    fig = go.Figure()
    shown = [e for e in student_epochs if e in epochs.index]
    for epoch, color in zip(shown, shades("student", len(shown)), strict=True):  # early: light, late: full
        bold = epoch == selected
        fig.add_scatter(
            x=checkpoints,
            y=epochs.loc[epoch, columns].astype(float),
            mode="lines+markers",
            name=f"student epoch {epoch}",
            line={"width": 3 if bold else 1.2, "color": color},
            opacity=1 if bold else 0.7,
        )
    if anchors and selected in epochs.index:
        kept = [a for a in anchors if f"route_kl.{a:04d}" in epochs]
        fig.add_scatter(
            x=kept,
            y=[epochs.loc[selected, f"route_kl.{a:04d}"] for a in kept],
            mode="markers",
            name="anchors",
            marker={
                "symbol": "star",
                "size": 16,
                "color": ROLE_COLORS["anchor"],
                "line": {"width": 1, "color": "black"},
            },
        )
    return fig.update_layout(
        title="How far the student is from each point of the route",
        xaxis=integer_axis(checkpoints, "teacher checkpoint (its epoch)"),
        yaxis=log_axis(epochs[columns].to_numpy(), "mean KL(teacher || student)"),
        height=380,
        legend={"orientation": "h", "y": -0.25},
    )


def anchor_schedule_figure(epochs: pd.DataFrame, epoch: int | None = None) -> go.Figure:
    """RCO: the teacher checkpoint (its epoch) the student imitates in each of its own epochs, as steps."""
    if "anchor_epoch" not in epochs or epochs.anchor_epoch.isna().all():
        return _empty_figure("This run follows no anchors.")
    fig = go.Figure(
        go.Scatter(
            x=epochs.index,
            y=epochs.anchor_epoch,
            mode="lines+markers",
            line={"shape": "hv", "color": ROLE_COLORS["anchor"]},
            name="anchor",
            hovertemplate="student epoch %{x}: teacher after epoch %{y}<extra></extra>",
        )
    )
    if epoch is not None:
        fig.add_vline(x=epoch, line_dash="dot", line_color="gray")
    return fig.update_layout(
        title="Anchor schedule",
        xaxis=integer_axis(epochs.index, "student epoch"),
        yaxis=integer_axis(epochs.anchor_epoch.dropna(), "anchor: teacher after epoch"),
        height=300,
        margin={"t": 50},
    )
