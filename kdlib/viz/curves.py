"""One run over time: loss and accuracy curves, scheduled coefficients, the method's own epoch
scalars, and the curves of method internals (DFA's search weights, LSSKD's auxiliary heads). A run
tuned while it trained (`kdlib set`) has a dotted vertical line on every curve where a change took
effect (`changes`: `RunStore.changes`)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import (
    ROLE_COLORS,
    SPLIT_COLORS,
    _empty_figure,
    _small_multiples,
    integer_axis,
    plain,
    scalar_label,
    shades,
    value_color,
)


def training_curves_figure(
    steps: pd.DataFrame, epochs: pd.DataFrame, title: str = "", changes: pd.DataFrame | None = None
) -> go.Figure:
    """Loss per logged step and per epoch (left), accuracy per epoch on each split (right).

    `steps` is indexed by global step with a `train.loss` column; `epochs` by epoch, with
    `step`, `train.loss` and `<split>.acc` columns (`RunStore.step_metrics` / `epoch_metrics`);
    `changes`, a line where each change made while it trained took effect (`RunStore.changes`).
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
    fig.update_xaxes(integer_axis(steps.index.append(pd.Index(epochs.get("step", []))), "step"), row=1, col=1)
    fig.update_xaxes(integer_axis(epochs.index), row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    mark_changes(fig, changes, epochs, {(1, 1): "step", (1, 2): "epoch"})
    return fig.update_layout(
        title=plain(title) if title else None,
        height=360,
        margin={"t": 60, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )


def schedule_figure(curves: dict[str, list[float]], title: str = "") -> go.Figure:
    """Each schedulable coefficient's value at every epoch, one small panel per coefficient."""
    if not curves:
        return _empty_figure("this method has no coefficients that follow a schedule")
    fig = _small_multiples(len(curves), [plain(c) for c in curves], cols=len(curves))  # the form's field names
    for i, (name, values) in enumerate(curves.items()):
        fig.add_scatter(
            x=list(range(len(values))),
            y=list(values),
            mode="lines+markers",
            name=plain(name),
            line={"shape": "hv" if len(set(values)) < len(values) / 2 else "linear"},
            marker={"size": 4},
            row=1,
            col=i + 1,
        )
        fig.update_xaxes(integer_axis(range(len(values))), row=1, col=i + 1)
    return fig.update_layout(
        title=plain(title) if title else None, height=230, showlegend=False, margin={"t": 40, "b": 40, "l": 40}
    )


def method_scalar_columns(epochs: pd.DataFrame) -> list[str]:
    """The epoch scalars a method adds: its coefficients (`temperature`, `w_kd`: no dot) and loss terms
    (`train.loss_kd`); not the common ones (lr, loss, accuracy, NLL, ECE) nor probes (`route_kl.0003`)."""
    return [
        c
        for c in epochs.columns
        if c not in ("step", "lr", "train.loss")
        and ("." not in c or (c.startswith("train.") and not c.endswith((".acc", ".nll", ".ece"))))
    ]


def scalars_figure(
    epochs: pd.DataFrame, columns: list[str] | None = None, title: str = "", changes: pd.DataFrame | None = None
) -> go.Figure:
    """Small multiples of epoch scalars (default: the method's own, e.g. temperature, w_kd, train.loss_kd);
    `changes` as in `training_curves_figure`."""
    columns = method_scalar_columns(epochs) if columns is None else [c for c in columns if c in epochs]
    if not columns:
        return _empty_figure("no method scalars yet")
    fig = _small_multiples(len(columns), [scalar_label(c) for c in columns])
    for i, column in enumerate(columns):
        fig.add_scatter(
            x=epochs.index,
            y=epochs[column],
            mode="lines+markers",
            name=scalar_label(column),
            line={"color": value_color(column)},  # its quantity's colour where known
            row=i // 3 + 1,
            col=i % 3 + 1,
        )
    fig.update_xaxes(integer_axis(epochs.index, None))
    mark_changes(fig, changes, epochs, {(i // 3 + 1, i % 3 + 1): "epoch" for i in range(len(columns))})
    rows = -(-len(columns) // 3)
    return fig.update_layout(
        title=plain(title) if title else None, height=80 + 200 * rows, showlegend=False, margin={"t": 50, "b": 30}
    )


CHANGE_COLOR = "#555555"  # a change made while the run trained: a grey dotted line


def mark_changes(fig: go.Figure, changes: pd.DataFrame | None, epochs: pd.DataFrame, panels: dict) -> go.Figure:
    """A dotted line at each step where changes took effect, in every panel ({(row, col): "step" or "epoch"}),
    labelled in the first. On an epoch axis, where epoch e's point is the end of epoch e, a change at global step
    s sits at s / steps_per_epoch - 1 (the steps per epoch read off `epochs`' `step` column)."""
    if changes is None or changes.empty or "step" not in changes:
        return fig
    applied = changes[changes.state == "applied"] if "state" in changes else changes
    for row, col in panels:  # the data's own range: plotly would widen it to fit a line's label beside it
        xs = [float(x) for t in fig.select_traces(row=row, col=col) for x in (t.x if t.x is not None else ())]
        if xs:
            pad = max((max(xs) - min(xs)) * 0.03, 0.5)
            fig.update_xaxes(range=[min(xs) - pad, max(xs) + pad], row=row, col=col)
    per_epoch = epochs["step"].iloc[-1] / (epochs.index[-1] + 1) if len(epochs) and "step" in epochs else None
    for step, group in applied.groupby("step"):
        label = ", ".join(
            f"{path.removeprefix('method.')}={value:g}" for path, value in zip(group.path, group.value, strict=True)
        )
        for i, ((row, col), axis) in enumerate(panels.items()):
            if axis == "epoch" and not per_epoch:
                continue
            x = float(step if axis == "step" else step / per_epoch - 1)
            note = {"annotation_text": plain(label), "annotation_position": "top right"} if i == 0 else {}
            fig.add_vline(x=x, row=row, col=col, line={"dash": "dot", "width": 1, "color": CHANGE_COLOR}, **note)
    return fig


def search_weights_figure(search: pd.DataFrame, title: str = "Aggregation weights during the search") -> go.Figure:
    """DFA: softmax(alpha) of each stage's candidates over search steps (`dfa.alpha.stage{i}.{j}` columns)."""
    columns = [c for c in search.columns if c.startswith("dfa.alpha.")]
    if not columns:
        return _empty_figure("No search recorded for this run.")
    stages = sorted({c.split(".")[2] for c in columns})
    fig = _small_multiples(len(stages), stages)
    for i, stage in enumerate(stages):
        for column in sorted(c for c in columns if c.split(".")[2] == stage):
            fig.add_scatter(
                x=search.index,
                y=search[column],
                mode="lines",
                name=f"{stage} candidate {column.split('.')[-1]}",
                row=i // 3 + 1,
                col=i % 3 + 1,
            )
    fig.update_xaxes(integer_axis(search.index, "search step"))
    return fig.update_layout(title=plain(title), height=320 * ((len(stages) + 2) // 3))


def head_accuracy_figure(epochs_by_head: pd.DataFrame, title: str = "Auxiliary heads") -> go.Figure:
    """LSSKD: mean true-class probability of each head (columns) per epoch (index)."""
    heads = [c for c in epochs_by_head.columns if c != "final"]
    # every head is the student's: shallow heads in light shades of its colour, the final classifier in full
    colors = dict(zip(heads, shades("student", len(heads) + 1), strict=False)) | {"final": ROLE_COLORS["student"]}
    fig = go.Figure(
        [
            go.Scatter(
                x=epochs_by_head.index,
                y=epochs_by_head[c],
                mode="lines+markers",
                name=plain(c),
                line={"color": colors.get(c), "width": 3 if c == "final" else 1.5},
            )
            for c in epochs_by_head.columns
        ]
    )
    return fig.update_layout(
        title=plain(title),
        xaxis=integer_axis(epochs_by_head.index),
        yaxis_title="mean p(true class)",
        yaxis_range=[0, 1],
        height=340,
    )
