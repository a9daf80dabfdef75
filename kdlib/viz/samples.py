"""Per-sample views: the scatter of one value per sample and the method views built on it (PS-KD's
gradient rescaling, WSL's soft-label weights, bias against variance), one sample's trajectory over
epochs, its input (image, signal or 2-D point) and its top classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import (
    BOOLEAN_COLORS,
    CLASS_COLORS,
    ROLE_COLORS,
    SELECTED_COLOR,
    color_scale,
    integer_axis,
    is_boolean,
    plain,
    value_color,
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
    """One point per sample (hover shows its index and the values by their `labels`); `selected` is ringed.

    `color` names a column: a yes/no one (a flag) gives two colours with a legend, a number its quantity's
    colour scale (`style.color_scale`), so WSL's weight and a regularization flag never share a colour."""
    labels = labels or {}
    frame = samples.reset_index()
    hover = f"sample %{{customdata}}<br>{plain(labels.get(x, x))} %{{x:.3f}}<br>{plain(labels.get(y, y))} %{{y:.3f}}"
    fig = go.Figure()
    if color is not None and color in frame and is_boolean(frame[color]):
        flag = plain(labels.get(color, color))
        for value in (True, False):
            part = frame[frame[color].fillna(0).astype(bool) == value]
            fig.add_trace(
                go.Scattergl(
                    x=part[x],
                    y=part[y],
                    mode="markers",
                    marker={"size": 6, "opacity": 0.75, "color": BOOLEAN_COLORS[value]},
                    customdata=part["index"],
                    name=f"{flag}: {'yes' if value else 'no'}",
                    hovertemplate=f"{hover}<br>{flag}: {'yes' if value else 'no'}<extra></extra>",
                )
            )
    else:
        marker = {"size": 6, "opacity": 0.7}
        if color is not None and color in frame:
            marker |= {
                "color": frame[color].astype(float),
                "colorscale": color_scale(color),
                "showscale": True,
                "colorbar": {"title": {"text": plain(labels.get(color, color))}},
            }
        fig.add_trace(
            go.Scattergl(
                x=frame[x],
                y=frame[y],
                mode="markers",
                marker=marker,
                customdata=frame["index"],
                name="samples",
                hovertemplate=f"{hover}<extra></extra>",
            )
        )
    if selected is not None and selected in samples.index:
        row = samples.loc[selected]
        fig.add_scatter(
            x=[row[x]],
            y=[row[y]],
            mode="markers",
            name=f"sample {selected}",
            marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 2.5, "color": SELECTED_COLOR}},
        )
    return fig.update_layout(
        title=plain(title) if title else None,
        xaxis_title=plain(labels.get(x, x)),
        yaxis_title=plain(labels.get(y, y)),
        height=420,
        legend={
            "orientation": "h",
            "x": 1,
            "xanchor": "right",
            "y": 1.02,
            "yanchor": "bottom",
        },  # clear of the colour bar
    )


def rescaling_figure(samples: pd.DataFrame, selected: int | None = None, labels: dict | None = None) -> go.Figure:
    """PS-KD's view: each sample's gradient rescaling against how hard it was (1 - p_true the epoch before).

    Easy samples (left) lose most of their gradient, hard ones keep it; below 0 the model is already
    more confident than its target and is pushed down (the calibration effect). `labels`: the run's
    declared labels of its values (`kdlib.views.value_label`), over the ones here.
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
            scale: "gradient on the true class / plain CE's",
            "p_true_student": "p(true) student now",
            **(labels or {}),
            "difficulty": f"difficulty: 1 - p(true class){when}",
        },
        title="Gradient rescaling per sample",
    )
    fig.add_hline(y=1, line_dash="dot", line_color="gray", annotation_text="plain cross-entropy")
    # below the line, where the pushed-down samples are; above it at the right sit the hardest samples
    return fig.add_hline(
        y=0, line_dash="dash", line_color="gray", annotation_text="pushed down", annotation_position="bottom right"
    )


def soft_label_weights_figure(
    samples: pd.DataFrame, selected: int | None = None, labels: dict | None = None
) -> go.Figure:
    """WSL's view: each sample's soft-label weight against the teacher's advantage on the true class.

    Regularization samples (the student already beats the teacher on the true class) sit left of 0,
    get weights below 1 - 1/e, and are drawn in the yes colour of a flag; the rest in its no colour.
    """
    student, teacher = samples.p_true_student.astype(float), samples.p_true_teacher.astype(float)
    frame = samples.assign(advantage=teacher - student)
    if "reg_sample" not in frame:
        frame = frame.assign(reg_sample=teacher < student)
    fig = per_sample_scatter_figure(
        frame,
        "advantage",
        "weight",
        color="reg_sample",
        selected=selected,
        title="Soft-label weight per sample",
        labels={
            "weight": "weight w",
            **(labels or {}),
            "advantage": "p_teacher(true) - p_student(true)",
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
    """Each sample's bias against its variance (log loss = bias + variance); colour by e.g. WSL's flag
    (a yes/no series: two colours and a legend named after the series) or by the mean log loss."""
    data = frame.assign(flag=color) if color is not None else frame
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
            "flag": str(color.name) if color is not None and color.name is not None else "flag",
            "loss": "mean log loss",
        },
    )


def trajectory_figure(
    series: dict[str, pd.Series], title: str = "", epoch: int | None = None, labels: dict | None = None
) -> go.Figure:
    """One sample's values over epochs, one line per key (shown by its `labels`, coloured by its quantity or
    role: the teacher's values in the teacher's colour, WSL's weight in the weight's); `epoch` is marked."""
    labels, fig, used = labels or {}, go.Figure(), {}
    for key, values in series.items():
        color = value_color(key)
        again = used.get(color, 0) if color else 0  # a second value of one quantity: its colour, another dash
        used[color] = again + 1
        fig.add_scatter(
            x=values.index,
            y=values.values,
            mode="lines+markers",
            name=plain(labels.get(key, key)),
            line={"color": color, "dash": ("solid", "dash", "dot", "dashdot")[again % 4]} if color else None,
            marker={"symbol": ("circle", "square", "diamond", "triangle-up")[again % 4]},
        )
    if epoch is not None:
        fig.add_vline(x=epoch, line_dash="dot", line_color="gray")
    shown = [i for values in series.values() for i in values.index]
    return fig.update_layout(
        title=plain(title) if title else None,
        xaxis=integer_axis(shown),
        height=320,
        legend={"orientation": "h", "y": -0.3},
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
    return fig.update_layout(
        title=plain(title) if title else None, height=260, width=260, margin={"l": 10, "r": 10, "t": 40, "b": 10}
    )


def signal_figure(signal: np.ndarray, title: str = "") -> go.Figure:
    """A 1-D input (an mnist1d signal) as a line."""
    return go.Figure(go.Scatter(y=np.asarray(signal, dtype=float).ravel(), mode="lines")).update_layout(
        title=plain(title) if title else None, height=220, xaxis_title="position", margin={"t": 40, "b": 30}
    )


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
        marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": SELECTED_COLOR}},
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig.update_layout(
        title=plain(title) if title else None, height=300, showlegend=False, margin={"t": 40, "b": 20}
    )


def top_classes_figure(
    probs: dict[str, np.ndarray], class_names: list[str] | None = None, k: int = 5, title: str = "Top classes"
) -> go.Figure:
    """Bars of the top-k classes of each model's probabilities (e.g. teacher and student) for one sample."""
    first = next(iter(probs.values()))
    order = np.argsort(-np.asarray(first))[:k]
    names = [plain(class_names[i]) if class_names else str(i) for i in order]
    fig = go.Figure(
        [
            go.Bar(x=names, y=np.asarray(p)[order], name=plain(label), marker_color=ROLE_COLORS.get(label))
            for label, p in probs.items()
        ]
    )
    return fig.update_layout(
        title=plain(title),
        xaxis_type="category",  # class names such as "3" stay labels, in the order of the first model's ranking
        yaxis_title="probability",
        yaxis_range=[0, 1],
        barmode="group",
        height=300,
    )
