"""Figures: store data in, plotly figures out. The app and the widgets only arrange them.

Every builder takes plain frames or arrays (what `RunStore` returns) and returns a
`plotly.graph_objects.Figure`, so tests check the figures' data, not pixels.
"""

from __future__ import annotations

import numpy as np
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


def schedule_figure(curves: dict[str, list[float]], title: str = "") -> go.Figure:
    """Each schedulable coefficient's value at every epoch, one small panel per coefficient."""
    if not curves:
        return _empty_figure("this method has no coefficients that follow a schedule")
    fig = _small_multiples(len(curves), list(curves), cols=len(curves))
    for i, (name, values) in enumerate(curves.items()):
        fig.add_scatter(
            x=list(range(len(values))),
            y=list(values),
            mode="lines+markers",
            name=name,
            line={"shape": "hv" if len(set(values)) < len(values) / 2 else "linear"},
            marker={"size": 4},
            row=1,
            col=i + 1,
        )
        fig.update_xaxes(title_text="epoch", row=1, col=i + 1)
    return fig.update_layout(title=title or None, height=230, showlegend=False, margin={"t": 40, "b": 40, "l": 40})


def method_scalar_columns(epochs: pd.DataFrame) -> list[str]:
    """The epoch scalars a method adds: its coefficients (`temperature`, `w_kd`: no dot) and loss terms
    (`train.loss_kd`); not the common ones (lr, loss, accuracy, NLL, ECE) nor probes (`route_kl.0003`)."""
    return [
        c
        for c in epochs.columns
        if c not in ("step", "lr", "train.loss")
        and ("." not in c or (c.startswith("train.") and not c.endswith((".acc", ".nll", ".ece"))))
    ]


def scalars_figure(epochs: pd.DataFrame, columns: list[str] | None = None, title: str = "") -> go.Figure:
    """Small multiples of epoch scalars (default: the method's own, e.g. temperature, w_kd, train.loss_kd)."""
    columns = method_scalar_columns(epochs) if columns is None else [c for c in columns if c in epochs]
    if not columns:
        return _empty_figure("no method scalars yet")
    fig = _small_multiples(len(columns), columns)
    for i, column in enumerate(columns):
        fig.add_scatter(
            x=epochs.index, y=epochs[column], mode="lines+markers", name=column, row=i // 3 + 1, col=i % 3 + 1
        )
    rows = -(-len(columns) // 3)
    return fig.update_layout(title=title or None, height=80 + 200 * rows, showlegend=False, margin={"t": 50, "b": 30})


def compare_curves_figure(curves: dict[str, pd.DataFrame], metric: str, title: str = "") -> go.Figure:
    """One epoch curve of `metric` per run, overlaid; `curves` maps a run's label to its epoch frame."""
    fig = go.Figure()
    for label, epochs in curves.items():
        if metric in epochs:
            fig.add_scatter(x=epochs.index, y=epochs[metric], mode="lines+markers", name=label)
    if not fig.data:
        return _empty_figure(f"none of these runs has {metric!r} yet")
    return fig.update_layout(
        title=title or None, xaxis_title="epoch", yaxis_title=metric, height=380, legend={"orientation": "h", "y": -0.2}
    )


def study_curves_figure(curves: dict[str, pd.DataFrame], metric: str, pruned=(), title: str = "") -> go.Figure:
    """One epoch curve of `metric` per trial of a study (`compare_curves_figure`); pruned trials dashed."""
    fig, pruned = compare_curves_figure(curves, metric, title), set(pruned)
    return fig.for_each_trace(lambda trace: trace.update(line_dash="dash"), selector=lambda t: t.name in pruned)


TRIAL_MARKERS = {"complete": ("circle", "#636efa"), "pruned": ("x", "#ef553b"), "running": ("circle-open", "#7f7f7f")}


def study_params_figure(trials: pd.DataFrame, params: list[str], title: str = "") -> go.Figure:
    """Each searched param against the trials' values, one panel per param; a pruned trial's value is its metric
    where it stopped. `trials` is `kdlib.views.study_summary`."""
    shown = trials.dropna(subset=["value"]) if "value" in trials else trials
    if shown.empty or not params:
        return _empty_figure("no trial has a value yet")
    fig = _small_multiples(len(params), params)
    for i, param in enumerate(params):
        for state, group in shown.groupby("state", sort=True):
            symbol, color = TRIAL_MARKERS.get(state, ("circle", "#000000"))
            fig.add_scatter(
                x=group[param],
                y=group["value"],
                mode="markers",
                name=state,
                legendgroup=state,
                showlegend=i == 0,
                marker={"symbol": symbol, "color": color, "size": 9},
                customdata=group[["trial", "run_id"]].values,
                hovertemplate="trial %{customdata[0]}<br>%{x}: %{y:.4g}<br>run %{customdata[1]}<extra></extra>",
                row=i // 3 + 1,
                col=i % 3 + 1,
            )
    fig.update_yaxes(title_text=shown.metric.iloc[0] if "metric" in shown else "value", col=1)
    rows = -(-len(params) // 3)
    return fig.update_layout(title=title or None, height=100 + 260 * rows, legend={"orientation": "h", "y": -0.15})


_OUTCOMES = ("test_acc", "test_ece")
_NOT_DIMENSIONS = {"id", "name", "status"}
_ALWAYS = {"method", "student"}
_WHEN_VARYING = {"epochs", "lr", "data", "teacher"}  # the recipe: an axis only when runs differ in it


def _categorical_dimension(values: pd.Series) -> dict:
    labels = sorted(values.fillna("none").astype(str).unique())
    codes = values.fillna("none").astype(str).map({v: i for i, v in enumerate(labels)})
    return {"label": values.name, "values": codes.tolist(), "tickvals": list(range(len(labels))), "ticktext": labels}


def _numeric_dimension(values: pd.Series) -> dict:
    """A numeric axis; runs without the value (e.g. a CE run's temperature) sit on an `n/a` tick below."""
    values = values.astype(float)
    if values.notna().all():
        return {"label": values.name, "values": values.tolist()}
    low, high = values.min(), values.max()
    missing = low - max(high - low, abs(low), 1.0) * 0.25
    ticks = sorted({float(f"{t:.3g}") for t in np.linspace(low, high, 4 if high > low else 1)})
    return {
        "label": values.name,
        "values": values.fillna(missing).tolist(),
        "range": [missing, high],
        "tickvals": [missing, *ticks],
        "ticktext": ["n/a", *(f"{t:g}" for t in ticks)],
    }


def parallel_coordinates_figure(summary: pd.DataFrame, color: str = "test_acc", title: str = "") -> go.Figure:
    """Hyperparameters against final test accuracy and calibration error, one line per run.

    `summary` is `kdlib.views.runs_summary`: method and student always appear; other columns appear
    when some run has a value (numeric) or when they differ between runs (text).
    """
    if summary.empty:
        return _empty_figure("no runs to compare")
    dimensions = []
    for column in summary.columns:
        values = summary[column]
        if column in _NOT_DIMENSIONS or column in _OUTCOMES or values.isna().all():
            continue
        if column in _WHEN_VARYING and values.nunique(dropna=False) < 2:
            continue
        if pd.api.types.is_numeric_dtype(values):
            dimensions.append(_numeric_dimension(values))
        elif column in _ALWAYS or values.nunique(dropna=False) > 1:
            dimensions.append(_categorical_dimension(values))
    dimensions += [_numeric_dimension(summary[c]) for c in _OUTCOMES if c in summary]
    line = {}
    if color in summary and summary[color].notna().any():
        values = summary[color].astype(float)
        low, high = values.min(), values.max()
        pad = 0 if high > low else 0.01
        line = {
            "color": values.fillna(low).tolist(),
            "colorscale": "Viridis",
            "cmin": low - pad,
            "cmax": high + pad,
            "showscale": True,
            "colorbar": {"title": color},
        }
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    return fig.update_layout(title=title or None, height=420, margin={"l": 80, "r": 60, "t": 80, "b": 40})


CLASS_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
_TWO_CLASS_SCALE = [[0.0, CLASS_COLORS[0]], [0.5, "#f7f7f7"], [1.0, CLASS_COLORS[1]]]


def decision_boundary_figure(
    xs: np.ndarray,
    ys: np.ndarray,
    grid_probs: np.ndarray,
    points: np.ndarray,
    point_values: np.ndarray,
    color_by: str = "label",
    title: str = "",
    show_scale: bool = True,
) -> go.Figure:
    """A model's predicted regions over a 2-D grid, with points on top.

    `grid_probs` is [len(ys), len(xs), K] (`kdlib.views.grid_probabilities`). Two classes: the
    background is p(class 1) with the 0.5 contour; more: the predicted class. `point_values` are
    labels (`color_by="label"`) or probabilities in [0, 1] (`color_by="probability"`, e.g. the
    teacher's soft label p(class 1) at the run's temperature). `show_scale=False` hides the colour
    bar, for a panel beside another with the same scale.
    """
    num_classes = grid_probs.shape[-1]
    fig = go.Figure()
    if num_classes == 2:
        fig.add_heatmap(
            x=xs,
            y=ys,
            z=grid_probs[..., 1],
            zmin=0,
            zmax=1,
            colorscale=_TWO_CLASS_SCALE,
            opacity=0.55,
            colorbar={"title": "p(class 1)", "len": 0.8, "thickness": 12},
            showscale=show_scale,
            name="p(class 1)",
            hovertemplate="p(class 1)=%{z:.2f}<extra></extra>",
        )
        fig.add_contour(
            x=xs,
            y=ys,
            z=grid_probs[..., 1],
            contours={"start": 0.5, "end": 0.5, "coloring": "lines"},
            line={"color": "black", "width": 2},
            showscale=False,
            name="p = 0.5",
            hoverinfo="skip",
        )
    else:
        steps = [
            [i / num_classes + e / num_classes, CLASS_COLORS[i % len(CLASS_COLORS)]]
            for i in range(num_classes)
            for e in (0, 1)
        ]
        fig.add_heatmap(
            x=xs,
            y=ys,
            z=grid_probs.argmax(-1),
            zmin=-0.5,
            zmax=num_classes - 0.5,
            colorscale=steps,
            opacity=0.45,
            showscale=False,
            name="predicted class",
            hovertemplate="class %{z}<extra></extra>",
        )
    points, point_values = np.asarray(points), np.asarray(point_values)
    if color_by == "label":
        for k in np.unique(point_values.astype(int)):
            rows = point_values.astype(int) == k
            fig.add_scatter(
                x=points[rows, 0],
                y=points[rows, 1],
                mode="markers",
                name=f"label {k}",
                marker={
                    "color": CLASS_COLORS[k % len(CLASS_COLORS)],
                    "size": 6,
                    "line": {"width": 0.5, "color": "black"},
                },
            )
    else:
        fig.add_scatter(
            x=points[:, 0],
            y=points[:, 1],
            mode="markers",
            name="points",
            marker={
                "color": point_values,
                "cmin": 0,
                "cmax": 1,
                "size": 6,
                "line": {"width": 0.5, "color": "black"},
                "colorscale": _TWO_CLASS_SCALE if num_classes == 2 else "Viridis",
                "showscale": num_classes != 2,
            },
            hovertemplate="p=%{marker.color:.2f}<extra></extra>",
        )
    # equal scales on both axes; the plot area shrinks to the data instead of the axes growing past it
    fig.update_yaxes(scaleanchor="x", scaleratio=1, range=[float(ys[0]), float(ys[-1])], constrain="domain")
    fig.update_xaxes(range=[float(xs[0]), float(xs[-1])], constrain="domain")
    return fig.update_layout(
        title=title or None,
        height=380,
        margin={"t": 50, "b": 20, "l": 10, "r": 10},
        legend={"orientation": "h", "y": -0.08},
    )


def softmax_temperature_figure(table: pd.DataFrame, title: str = "") -> go.Figure:
    """softmax(z / T) per class, one group of bars per temperature (`kdlib.views.softmax_table`)."""
    fig = go.Figure()
    for temperature, rows in table.groupby("temperature", sort=True):
        fig.add_bar(x=rows["class"].astype(str), y=rows.probability, name=f"T = {temperature:g}")
    return fig.update_layout(
        title=title or None,
        barmode="group",
        xaxis_title="class",
        yaxis={"title": "probability", "range": [0, 1]},
        height=360,
        legend={"orientation": "h", "y": 1.12},
    )


def entropy_figure(curve: pd.DataFrame, temperature: float | None = None, num_classes: int | None = None) -> go.Figure:
    """Entropy of softmax(z / T) against T (`kdlib.views.entropy_curve`), the chosen T marked."""
    fig = go.Figure(go.Scatter(x=curve.temperature, y=curve.entropy, mode="lines", name="entropy"))
    if num_classes:
        fig.add_hline(y=float(np.log(num_classes)), line_dash="dash", annotation_text="ln K: uniform")
    if temperature is not None:
        at = float(np.interp(temperature, curve.temperature, curve.entropy))
        fig.add_scatter(x=[temperature], y=[at], mode="markers", marker={"size": 12}, name=f"T = {temperature:g}")
    ticks = [t for t in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if curve.temperature.min() <= t <= curve.temperature.max()]
    return fig.update_layout(
        title="entropy of softmax(z / T)",
        xaxis={"title": "temperature T", "type": "log", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]},
        yaxis_title="entropy (nats)",
        height=300,
        showlegend=False,
        margin={"t": 50},
    )


# --- per-sample views: calibration, gradient rescaling, soft-label weights, bias-variance, route ---


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
        marker={"symbol": "line-ew-open", "size": 14, "color": "#ef553b"},
    )
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line={"dash": "dot", "color": "gray"})
    return fig.update_layout(
        title=f"{title} (ECE {100 * ece:.1f}%)",
        xaxis_title="confidence",
        yaxis_title="accuracy",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
        height=380,
    )


def per_sample_scatter_figure(
    samples: pd.DataFrame,
    x: str,
    y: str,
    color: str | None = None,
    selected: int | None = None,
    title: str = "",
    labels: dict | None = None,
) -> go.Figure:
    """One point per sample (hover shows its index); `selected` is ringed."""
    labels = labels or {}
    frame = samples.reset_index()
    marker = {"size": 6, "opacity": 0.7}
    if color is not None and color in frame:
        marker |= {
            "color": frame[color].astype(float),
            "colorscale": "Viridis",
            "showscale": True,
            "colorbar": {"title": labels.get(color, color)},
        }
    fig = go.Figure(
        go.Scattergl(
            x=frame[x],
            y=frame[y],
            mode="markers",
            marker=marker,
            customdata=frame["index"],
            name="samples",
            hovertemplate=f"sample %{{customdata}}<br>{x} %{{x:.3f}}<br>{y} %{{y:.3f}}<extra></extra>",
        )
    )
    if selected is not None and selected in samples.index:
        row = samples.loc[selected]
        fig.add_scatter(
            x=[row[x]],
            y=[row[y]],
            mode="markers",
            name=f"sample {selected}",
            marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "#ef553b"}},
        )
    return fig.update_layout(
        title=title or None,
        xaxis_title=labels.get(x, x),
        yaxis_title=labels.get(y, y),
        height=420,
        legend={
            "orientation": "h",
            "x": 1,
            "xanchor": "right",
            "y": 1.02,
            "yanchor": "bottom",
        },  # clear of the colour bar
    )


def rescaling_figure(samples: pd.DataFrame, selected: int | None = None) -> go.Figure:
    """PS-KD's view: each sample's gradient rescaling against how hard it was (1 - p_true the epoch before).

    Easy samples (left) lose most of their gradient, hard ones keep it; below 0 the model is already
    more confident than its target and is pushed down (the calibration effect).
    """
    scale = "grad_scale_true" if "grad_scale_true" in samples else "logit_grad_ratio_true"
    difficulty = samples["prev_p_true"] if "prev_p_true" in samples else samples["p_true_student"]
    frame = samples.assign(difficulty=1 - difficulty.astype(float))
    when = " at the previous epoch" if "prev_p_true" in samples else ""
    fig = per_sample_scatter_figure(
        frame,
        "difficulty",
        scale,
        color="p_true_student",
        selected=selected,
        labels={
            "difficulty": f"difficulty: 1 - p(true class){when}",
            scale: "gradient on the true class / plain CE's",
            "p_true_student": "p(true) now",
        },
        title="Gradient rescaling per sample",
    )
    fig.add_hline(y=1, line_dash="dot", line_color="gray", annotation_text="plain cross-entropy")
    # below the line, where the pushed-down samples are; above it at the right sit the hardest samples
    return fig.add_hline(
        y=0, line_dash="dot", line_color="#ef553b", annotation_text="pushed down", annotation_position="bottom right"
    )


def soft_label_weights_figure(samples: pd.DataFrame, selected: int | None = None) -> go.Figure:
    """WSL's view: each sample's soft-label weight against the teacher's advantage on the true class.

    Regularization samples (the student already beats the teacher on the true class) sit left of 0
    and get weights below 1 - 1/e.
    """
    frame = samples.assign(advantage=samples.p_true_teacher.astype(float) - samples.p_true_student.astype(float))
    fig = per_sample_scatter_figure(
        frame,
        "advantage",
        "weight",
        color="reg_sample" if "reg_sample" in frame else None,
        selected=selected,
        title="Soft-label weight per sample",
        labels={
            "advantage": "p_teacher(true) - p_student(true)",
            "weight": "weight w",
            "reg_sample": "regularization sample",
        },
    )
    fig.add_vline(x=0, line_dash="dot", line_color="gray")
    return fig.add_hline(y=1 - np.exp(-1), line_dash="dot", line_color="gray", annotation_text="1 - 1/e")


def bias_variance_figure(
    frame: pd.DataFrame,
    color: pd.Series | None = None,
    selected: int | None = None,
    title: str = "Bias and variance per sample",
) -> go.Figure:
    """Each sample's bias against its variance (log loss = bias + variance); colour by e.g. WSL's flag."""
    data = frame.assign(flag=color.astype(float)) if color is not None else frame
    return per_sample_scatter_figure(
        data,
        "variance",
        "bias",
        color="flag" if color is not None else "loss",
        selected=selected,
        title=title,
        labels={
            "variance": "variance: mean KL(mean prediction || prediction)",
            "bias": "bias: CE(label, mean prediction)",
            "flag": color.name if color is not None else "flag",
            "loss": "mean log loss",
        },
    )


def trajectory_figure(series: dict[str, pd.Series], title: str = "", epoch: int | None = None) -> go.Figure:
    """One sample's values over epochs, one line per key; `epoch` is marked."""
    fig = go.Figure()
    for key, values in series.items():
        fig.add_scatter(x=values.index, y=values.values, mode="lines+markers", name=key)
    if epoch is not None:
        fig.add_vline(x=epoch, line_dash="dot", line_color="gray")
    return fig.update_layout(
        title=title or None, xaxis_title="epoch", height=320, legend={"orientation": "h", "y": -0.3}
    )


def sample_image_figure(image: np.ndarray, title: str = "") -> go.Figure:
    """An input image ([C, H, W] or [H, W]), shown as a person sees it (gray or RGB, rescaled to 0..255)."""
    image = np.asarray(image, dtype=float)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    image = (image - image.min()) / max(image.max() - image.min(), 1e-8) * 255
    if image.ndim == 2:
        fig = go.Figure(go.Heatmap(z=image[::-1], colorscale="gray", showscale=False))
        fig.update_yaxes(scaleanchor="x", showticklabels=False)
    else:
        fig = go.Figure(go.Image(z=np.moveaxis(image, 0, -1).astype(np.uint8)))
    fig.update_xaxes(showticklabels=False)
    return fig.update_layout(title=title or None, height=260, width=260, margin={"l": 10, "r": 10, "t": 40, "b": 10})


def signal_figure(signal: np.ndarray, title: str = "") -> go.Figure:
    """A 1-D input (an mnist1d signal) as a line."""
    return go.Figure(go.Scatter(y=np.asarray(signal, dtype=float).ravel(), mode="lines")).update_layout(
        title=title or None, height=220, xaxis_title="position", margin={"t": 40, "b": 30}
    )


def top_classes_figure(
    probs: dict[str, np.ndarray], class_names: list[str] | None = None, k: int = 5, title: str = "Top classes"
) -> go.Figure:
    """Bars of the top-k classes of each model's probabilities (e.g. teacher and student) for one sample."""
    first = next(iter(probs.values()))
    order = np.argsort(-np.asarray(first))[:k]
    names = [class_names[i] if class_names else str(i) for i in order]
    fig = go.Figure([go.Bar(x=names, y=np.asarray(p)[order], name=label) for label, p in probs.items()])
    return fig.update_layout(
        title=title,
        xaxis_type="category",  # class names such as "3" stay labels, in the order of the first model's ranking
        yaxis_title="probability",
        yaxis_range=[0, 1],
        barmode="group",
        height=300,
    )


def route_map_figure(layout: pd.DataFrame, title: str = "The student on the teacher's route") -> go.Figure:
    """A 2-D map of output space: the teacher's checkpoints as a path, the student's epochs as another.

    `layout` (from `kdlib.views.route_layout`) has columns x, y, who ("teacher" | "student" |
    "moving teacher"), epoch, and `anchor` (True for the student's anchors) and `current`.
    """
    fig = go.Figure()
    styles = {
        "teacher": ("#636efa", "circle"),
        "moving teacher": ("#ab63fa", "diamond"),
        "student": ("#ef553b", "circle"),
    }
    for who, part in layout.groupby("who", sort=False):
        color, symbol = styles.get(who, ("gray", "circle"))
        fig.add_scatter(
            x=part.x,
            y=part.y,
            mode="lines+markers+text",
            name=who,
            text=part.epoch.astype(str),
            textposition="top center",
            textfont={"size": 9},
            line={"color": color},
            marker={"symbol": symbol, "size": 8, "color": color},
            hovertemplate=f"{who} after epoch %{{text}}<extra></extra>",
        )
    if "anchor" in layout and layout.anchor.any():
        anchors = layout[layout.anchor]
        fig.add_scatter(
            x=anchors.x,
            y=anchors.y,
            mode="markers",
            name="anchors",
            marker={"symbol": "star", "size": 16, "color": "#ffa15a", "line": {"width": 1, "color": "black"}},
        )
    if "current" in layout and layout.current.any():
        now = layout[layout.current]
        fig.add_scatter(
            x=now.x,
            y=now.y,
            mode="markers",
            name="current anchor",
            marker={"size": 24, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "#ffa15a"}},
        )
    return fig.update_layout(title=title, xaxis_title="PC 1", yaxis_title="PC 2", height=480)


def route_distance_figure(epochs: pd.DataFrame) -> go.Figure:
    """Per student epoch: mean KL to each teacher checkpoint (lines from `route_kl.*`), the current anchor marked."""
    columns = sorted(c for c in epochs.columns if c.startswith("route_kl."))
    if not columns:
        return _empty_figure("This run's teacher has no route (train it with teacher.route).")
    fig = go.Figure()
    last = columns[-1]
    for column in columns:
        checkpoint = int(column.split(".")[1])
        fig.add_scatter(
            x=epochs.index,
            y=epochs[column],
            mode="lines",
            name=f"teacher epoch {checkpoint}",
            line={"width": 3 if column == last else 1},
            opacity=1 if column == last else 0.45,
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
            marker={"symbol": "star", "size": 12, "color": "#ffa15a"},
        )
    return fig.update_layout(
        title="Student to teacher checkpoints: KL(teacher || student) on the probe set",
        xaxis_title="student epoch",
        yaxis_title="mean KL",
        height=380,
        yaxis_type="log",
    )


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
    return fig.update_layout(title=title, height=320 * ((len(stages) + 2) // 3))


def head_accuracy_figure(epochs_by_head: pd.DataFrame, title: str = "Auxiliary heads") -> go.Figure:
    """LSSKD: mean true-class probability of each head (columns) per epoch (index)."""
    fig = go.Figure(
        [
            go.Scatter(x=epochs_by_head.index, y=epochs_by_head[c], mode="lines+markers", name=c)
            for c in epochs_by_head.columns
        ]
    )
    return fig.update_layout(
        title=title, xaxis_title="epoch", yaxis_title="mean p(true class)", yaxis_range=[0, 1], height=340
    )


# --- one sample's input, the route over time, method views and the lessons' closed forms ---


def sample_input_figure(
    x: np.ndarray, points: np.ndarray | None = None, labels: np.ndarray | None = None, title: str = ""
) -> go.Figure:
    """One input as a person sees it: an image, a 1-D signal, or a 2-D point ringed among `points`."""
    x = np.asarray(x, dtype=float)
    if x.ndim >= 2 and x.shape[-1] > 1 and x.shape[-2] > 1:
        return sample_image_figure(x, title)
    if x.size != 2:
        return signal_figure(x, title)
    fig = go.Figure()
    if points is not None:
        points = np.asarray(points, dtype=float)
        colors = np.asarray(labels, dtype=int) if labels is not None else np.zeros(len(points), int)
        fig.add_scattergl(
            x=points[:, 0],
            y=points[:, 1],
            mode="markers",
            name="training points",
            marker={"size": 4, "color": [CLASS_COLORS[c % len(CLASS_COLORS)] for c in colors], "opacity": 0.35},
            hoverinfo="skip",
        )
    fig.add_scatter(
        x=[x[0]],
        y=[x[1]],
        mode="markers",
        name="this sample",
        marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "black"}},
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig.update_layout(title=title or None, height=300, showlegend=False, margin={"t": 40, "b": 20})


def anchor_schedule_figure(epochs: pd.DataFrame, epoch: int | None = None) -> go.Figure:
    """RCO: the teacher checkpoint (its epoch) the student imitates in each of its own epochs, as steps."""
    if "anchor_epoch" not in epochs or epochs.anchor_epoch.isna().all():
        return _empty_figure("This run follows no anchors.")
    fig = go.Figure(
        go.Scatter(
            x=epochs.index,
            y=epochs.anchor_epoch,
            mode="lines+markers",
            line={"shape": "hv", "color": "#ffa15a"},
            name="anchor",
            hovertemplate="student epoch %{x}: teacher after epoch %{y}<extra></extra>",
        )
    )
    if epoch is not None:
        fig.add_vline(x=epoch, line_dash="dot", line_color="gray")
    return fig.update_layout(
        title="Anchor schedule",
        xaxis_title="student epoch",
        yaxis_title="anchor: teacher after epoch",
        height=300,
        margin={"t": 50},
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
    for epoch in [e for e in student_epochs if e in epochs.index]:
        bold = epoch == selected
        fig.add_scatter(
            x=checkpoints,
            y=epochs.loc[epoch, columns].astype(float),
            mode="lines+markers",
            name=f"student epoch {epoch}",
            line={"width": 3 if bold else 1},
            opacity=1 if bold else 0.5,
        )
    if anchors and selected in epochs.index:
        kept = [a for a in anchors if f"route_kl.{a:04d}" in epochs]
        fig.add_scatter(
            x=kept,
            y=[epochs.loc[selected, f"route_kl.{a:04d}"] for a in kept],
            mode="markers",
            name="anchors",
            marker={"symbol": "star", "size": 16, "color": "#ffa15a", "line": {"width": 1, "color": "black"}},
        )
    return fig.update_layout(
        title="How far the student is from each point of the route",
        xaxis_title="teacher checkpoint (its epoch)",
        yaxis_title="mean KL(teacher || student)",
        yaxis_type="log",
        height=380,
        legend={"orientation": "h", "y": -0.25},
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
    colors = {"student": "#ef553b", "teacher": "#636efa"}
    for i, side in enumerate(sides):
        for model, values in confidence[side].items():
            fig.add_histogram(
                x=values,
                xbins={"start": 0, "end": 1.0001, "size": 0.05},
                histnorm="probability",
                name=model,
                legendgroup=model,
                showlegend=i == 0,
                marker={"color": colors.get(model)},
                opacity=0.6,
                row=1,
                col=i + 1,
            )
        fig.update_xaxes(title_text="confidence", range=[0, 1], row=1, col=i + 1)
    fig.update_yaxes(title_text="share of samples", row=1, col=1)
    return fig.update_layout(barmode="overlay", height=340, title="Confidence on source and target")


def pskd_rescaling_curve_figure(
    p_true: np.ndarray, curves: dict[str, np.ndarray], point: tuple[float, float] | None = None
) -> go.Figure:
    """PS-KD's w_gt against p_g (the prediction now), one curve per setting; `point` is the sliders' sample."""
    fig = go.Figure()
    for i, (name, values) in enumerate(curves.items()):
        fig.add_scatter(x=p_true, y=values, mode="lines", name=name, line={"width": 3 if i == 0 else 1.5})
    if point is not None:
        fig.add_scatter(
            x=[point[0]],
            y=[point[1]],
            mode="markers",
            name="the sliders' sample",
            marker={"size": 14, "color": "black"},
        )
    fig.add_hline(y=1, line_dash="dot", line_color="gray", annotation_text="plain cross-entropy")
    fig.add_hline(y=0, line_dash="dot", line_color="#ef553b", annotation_text="no gradient")
    return fig.update_layout(
        title="Gradient on the true class, as a share of cross-entropy's",
        xaxis_title="p_g: the model's probability of the true class now",
        yaxis_title="w_gt",
        yaxis_range=[-1.5, 1.2],
        xaxis_range=[0, 1],
        height=380,
        legend={"orientation": "h", "y": -0.25},
    )


def wsl_weight_map_figure(
    p_student: np.ndarray, p_teacher: np.ndarray, weights: np.ndarray, point: tuple[float, float] | None = None
) -> go.Figure:
    """WSL's weight over the student's (x) and the teacher's (y) true-class probability.

    `weights` is [len(p_teacher), len(p_student)]. Below the diagonal the teacher is less sure of the
    true class than the student: the regularization samples, weighted below 1 - 1/e.
    """
    fig = go.Figure(
        go.Heatmap(
            x=p_student,
            y=p_teacher,
            z=weights,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar={"title": "w"},
            hovertemplate="p_s,y %{x:.2f}<br>p_t,y %{y:.2f}<br>w %{z:.3f}<extra></extra>",
        )
    )
    fig.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", name="p_t,y = p_s,y (w = 1 - 1/e)", line={"dash": "dot", "color": "white"}
    )
    fig.add_annotation(x=0.75, y=0.15, text="regularization samples", showarrow=False, font={"color": "white"})
    if point is not None:
        fig.add_scatter(
            x=[point[0]],
            y=[point[1]],
            mode="markers",
            name="the sliders' sample",
            marker={"size": 14, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "#ef553b"}},
        )
    fig.update_yaxes(range=[0, 1])
    fig.update_xaxes(range=[0, 1])
    return fig.update_layout(
        title="WSL's weight w = 1 - exp(-CE_student / CE_teacher)",
        xaxis_title="p_s,y: the student's probability of the true class",
        yaxis_title="p_t,y: the teacher's",
        height=420,
        showlegend=False,
    )
