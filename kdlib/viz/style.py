"""Shared styling for the figures: one colour (and one colour scale) per quantity, the same on every page;
yes/no values as two colours with a legend; how a stored name is shown to a person; epoch and log axes
that stay readable; user text made plain for plotly; an empty figure and a grid of small panels. Every
other module of `kdlib.viz` builds on these, so a quantity looks the same wherever it is drawn."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# --- colours: one meaning each -----------------------------------------------------------------------

SPLIT_COLORS = {"train": "#636efa", "val": "#ef553b", "test": "#00cc96"}

CLASS_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]

# Who a curve or a bar belongs to: the converged teacher, the student, RCO's anchor, ProKT's moving teacher.
ROLE_COLORS = {"teacher": "#636efa", "student": "#ef553b", "anchor": "#ffa15a", "moving teacher": "#ab63fa"}

# The quantities the pages share: a line colour and, where a quantity colours points, its continuous scale.
# WSL's weight keeps Viridis everywhere; yes/no values never use a scale (BOOLEAN_COLORS).
QUANTITY_COLORS = {
    "weight": "#21918c",  # WSL's soft-label weight (Viridis' middle)
    "gradient ratio": "#2ca02c",  # the gradient as a share of plain cross-entropy's (PS-KD's w_gt)
    "probability": "#ef553b",  # p(true), confidence: the student's unless a role says otherwise
    "bias": "#8c564b",
    "variance": "#17becf",
    "loss": "#7f7f7f",
    "kl": "#9467bd",
    "accuracy": "#b279a2",
    "calibration error": "#e45756",
}
QUANTITY_SCALES = {
    "weight": "Viridis",
    "probability": "Cividis",
    "loss": "Plasma",
    "bias": "Plasma",
    "variance": "Blues",
    "kl": "Purples",
    "gradient ratio": "Greens",
    "accuracy": "Cividis",
    "calibration error": "Plasma_r",
    "temperature": [[0, "#2c7bb6"], [0.5, "#8e44ad"], [1, "#f46d43"]],  # cool to hot, over log2 T
}

# Yes/no values (a regularization sample, a correct prediction) get two colours and a legend, never a scale.
BOOLEAN_COLORS = {True: "#f58518", False: "#b0b0b0"}

# A built-in method keeps its colour wherever runs are drawn by method; another method gets one by its name.
METHOD_COLORS = {
    "ce": "#7f7f7f",
    "label_smoothing": "#bcbd22",
    "kd": "#1f77b4",
    "rco": "#ff7f0e",
    "pskd": "#2ca02c",
    "wsl": "#d62728",
    "dkd": "#9467bd",
    "prokt": "#8c564b",
    "dfa": "#e377c2",
    "lsskd": "#17becf",
    "uda_pkd": "#393b79",
}
_MORE_COLORS = ["#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1"]

SELECTED_COLOR = "black"  # the ring around the picked sample, on every scatter

# Which quantity a stored name (a per-sample key or an epoch scalar) measures, by its words.
_QUANTITY_OF = [
    (re.compile(r"(^|_)weight$|^w$"), "weight"),
    (re.compile(r"grad_scale|grad_ratio|w_gt"), "gradient ratio"),
    (re.compile(r"(^|[._])acc$|accuracy"), "accuracy"),
    (re.compile(r"ece$"), "calibration error"),
    (re.compile(r"^p_|p_true|confidence|probability"), "probability"),
    (re.compile(r"^bias"), "bias"),
    (re.compile(r"^variance"), "variance"),
    (re.compile(r"(^|_)kl"), "kl"),
    (re.compile(r"loss|nll"), "loss"),
]


def quantity_of(name: str) -> str | None:
    """The quantity a stored name measures (`weight`, `probability`, ...), None when unknown."""
    return next((quantity for pattern, quantity in _QUANTITY_OF if pattern.search(str(name))), None)


def value_color(name: str) -> str | None:
    """The line colour of a stored value: its role's when it names one (teacher, anchor), else its quantity's."""
    for role in ("teacher", "anchor", "student"):
        if role in str(name):
            return ROLE_COLORS[role]
    return QUANTITY_COLORS.get(quantity_of(name) or "")


def color_scale(name: str) -> str:
    """The continuous colour scale of a stored value, by its quantity (Viridis for WSL's weight only)."""
    return QUANTITY_SCALES.get(quantity_of(name) or "", "Cividis")


def shades(role: str, n: int) -> list[str]:
    """`n` shades of a role's colour, light to full: a route's checkpoints, a student's epochs, in order."""
    scale = [[0, "#e8e8e8"], [1, ROLE_COLORS[role]]]
    return plotly.colors.sample_colorscale(scale, [0.35 + 0.65 * i / max(n - 1, 1) for i in range(n)])


def temperature_color(temperature: float) -> str:
    """A temperature's colour, the same on every chart: cool blue at T = 0.25, through purple, to hot orange at
    T = 64 (on a log scale, so T = 1, 2, 4, 8 are evenly apart)."""
    position = (math.log2(min(max(float(temperature), 0.25), 64.0)) + 2) / 8
    return plotly.colors.sample_colorscale(QUANTITY_SCALES["temperature"], [position])[0]


def method_color(method: str) -> str:
    """One colour per method: a built-in's own, another's picked by its name (stable across pages and runs)."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _MORE_COLORS[sum(map(ord, str(method))) % len(_MORE_COLORS)]


def is_boolean(values: pd.Series) -> bool:
    """Whether a column holds yes/no values: booleans, or numbers that are all 0 or 1 (a stored flag)."""
    present = pd.Series(values).dropna()
    if pd.api.types.is_bool_dtype(present):
        return True
    numeric = pd.api.types.is_numeric_dtype(present)
    return bool(numeric and len(present) and present.isin([0, 1]).all())


# --- names and text as a person reads them -----------------------------------------------------------

_SPLIT_METRICS = {"acc": "accuracy", "loss": "loss", "nll": "NLL", "ece": "calibration error (ECE)"}
_SCALARS = {
    "lr": "learning rate",
    "step": "step",
    "anchor_epoch": "anchor: teacher after epoch",
    "test_acc": "test accuracy",
    "test_ece": "test ECE (calibration error)",
    "reg_fraction": "share of regularization samples",
    "alpha_t": "α_t",
}  # a method's coefficients (temperature, w_kd) keep the names its form shows


def scalar_label(name: str) -> str:
    """How an epoch scalar's stored name is shown: `test.acc` -> `test accuracy`, `train.loss_kd` ->
    `train loss: kd term`, `route_kl.0003` -> `KL to teacher epoch 3`; an unknown name as it is."""
    head, _, rest = str(name).partition(".")
    if head == "route_kl" and rest.isdigit():
        return f"KL to teacher epoch {int(rest)}"
    if rest and head in ("train", "val", "test", "target"):
        if rest in _SPLIT_METRICS:
            return f"{head} {_SPLIT_METRICS[rest]}"
        if rest.startswith("loss_"):
            return f"{head} loss: {rest.removeprefix('loss_').replace('_', ' ')} term"
        return f"{head}: {_SCALARS.get(rest, rest)}"
    return _SCALARS.get(str(name), str(name))


_TAG = re.compile(r"&(?!#?\w+;)")  # a bare ampersand; an entity (`&lt;`, text made plain already) is kept


def plain(text) -> str:
    """User text (a run, class or model name) for a plotly title, legend, tick or hover, which read `<b>`,
    `<a href>` and `<br>`: shown as it is. Text made plain already stays as it is."""
    return _TAG.sub("&amp;", str(text)).replace("<", "&lt;").replace(">", "&gt;")


# --- axes ---------------------------------------------------------------------------------------------


def integer_axis(values, title: str | None = "epoch") -> dict:
    """An axis of whole numbers (epochs, steps, a teacher's checkpoint): ticks on integers only, about
    eight of them, never at 0.5."""
    finite = [float(v) for v in np.ravel(np.asarray(values, dtype=float)) if np.isfinite(v)] if len(values) else []
    span = max(finite) - min(finite) if finite else 1.0
    step = 1
    for nice in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        step = nice
        if span / nice <= 8:
            break
    axis = {"tickmode": "linear", "tick0": 0, "dtick": step, "tickformat": "d"}
    return axis | ({"title": {"text": title}} if title is not None else {})


_LOG_STEPS = ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9))


def log_axis(values, title: str | None = None) -> dict:
    """A log axis whose labels do not crowd: one label a decade (10⁻², 10⁻¹, ...) and unlabelled minor ticks over
    a wide range; over a narrow one, plain numbers at 1-2-5 steps (0.02, 0.05, 0.1), denser only where fewer
    than three would show."""
    finite = np.asarray(values, dtype=float).ravel()
    finite = finite[np.isfinite(finite) & (finite > 0)]
    axis = {"type": "log"} | ({"title": {"text": title}} if title is not None else {})
    low, high = (finite.min(), finite.max()) if finite.size else (0.01, 1.0)
    if math.log10(high / low) >= 2:
        return axis | {"dtick": 1, "exponentformat": "power", "minor": {"ticks": "outside", "showgrid": True}}
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    for steps in _LOG_STEPS:
        ticks = [m * 10.0**e for e in decades for m in steps if low / 1.1 <= m * 10.0**e <= high * 1.1]
        if len(ticks) >= 3:
            break
    return axis | {"tickmode": "array", "tickvals": ticks, "ticktext": [f"{t:.3g}" for t in ticks]}


# --- figures ------------------------------------------------------------------------------------------


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
