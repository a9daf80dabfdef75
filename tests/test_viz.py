"""Figure builders: the data in each figure, not its pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kdlib import viz


def epochs_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": [10, 20, 30],
            "lr": [0.01, 0.01, 0.01],
            "train.loss": [1.0, 0.8, 0.6],
            "train.loss_kd": [0.5, 0.4, 0.3],
            "temperature": [4.0, 3.0, 2.0],
            "w_kd": [0.9, 0.9, 0.9],
            "test.acc": [0.5, 0.6, 0.7],
            "test.ece": [0.1, 0.08, 0.05],
            "val.nll": [0.9, 0.8, 0.7],
            "route_kl.0002": [0.3, 0.2, 0.1],
        },
        index=pd.Index([0, 1, 2], name="epoch"),
    )


def test_schedule_figure_has_one_panel_per_coefficient_with_its_values():
    fig = viz.schedule_figure({"temperature": [8.0, 5.0, 2.0], "w_kd": [0.9, 0.9, 0.9]})
    assert [t.name for t in fig.data] == ["temperature", "w_kd"]
    assert list(fig.data[0].x) == [0, 1, 2] and list(fig.data[0].y) == [8.0, 5.0, 2.0]
    assert fig.data[0].xaxis == "x" and fig.data[1].xaxis == "x2"


def test_schedule_figure_without_schedules_says_so():
    fig = viz.schedule_figure({})
    assert not fig.data and "no coefficients" in fig.layout.annotations[0].text


def test_method_scalars_are_coefficients_and_loss_terms_not_common_metrics_or_probes():
    assert viz.method_scalar_columns(epochs_frame()) == ["train.loss_kd", "temperature", "w_kd"]


def test_scalars_figure_plots_each_chosen_column_against_epoch():
    fig = viz.scalars_figure(epochs_frame())
    assert [t.name for t in fig.data] == ["train loss: kd term", "temperature", "w_kd"]
    assert [a.text for a in fig.layout.annotations] == [t.name for t in fig.data]  # the panels' titles
    assert list(fig.data[1].y) == [4.0, 3.0, 2.0] and list(fig.data[1].x) == [0, 1, 2]
    assert [t.name for t in viz.scalars_figure(epochs_frame(), ["w_kd", "missing"]).data] == ["w_kd"]
    assert not viz.scalars_figure(epochs_frame()[["step", "train.loss"]]).data


def test_scalars_figure_lays_out_many_columns():
    frame = pd.DataFrame({f"c{i}": [float(i)] for i in range(22)})
    assert len(viz.scalars_figure(frame).data) == 22


def test_compare_curves_overlays_one_line_per_run_that_has_the_metric():
    other = epochs_frame().assign(**{"test.acc": [0.4, 0.5, 0.9]})
    fig = viz.compare_curves_figure({"a": epochs_frame(), "b": other, "c": pd.DataFrame()}, "test.acc")
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[1].y) == [0.4, 0.5, 0.9]
    assert not viz.compare_curves_figure({"c": pd.DataFrame()}, "test.acc").data


def summary_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["r1", "r2", "r3"],
            "name": ["a", "b", "c"],
            "status": ["done"] * 3,
            "method": ["kd", "kd", "ce"],
            "student": ["mlp hidden=[4]"] * 3,
            "teacher": ["mlp", "mlp", None],
            "data": ["toy2d"] * 3,
            "epochs": [30, 30, 30],
            "lr": [0.01, 0.01, 0.01],
            "temperature": [1.0, 4.0, np.nan],
            "test_acc": [0.8, 0.9, 0.7],
            "test_ece": [0.05, 0.03, 0.1],
        }
    )


def test_parallel_coordinates_has_hyperparameter_and_outcome_axes():
    fig = viz.parallel_coordinates_figure(summary_frame())
    dims = {d.label: d for d in fig.data[0].dimensions}
    # constant recipe columns are left out; method and student always stay; teacher differs so it stays
    assert list(dims) == [
        "method",
        "student",
        "teacher",
        "temperature",
        "test accuracy",
        "test ECE (calibration error)",
    ]
    assert list(dims["method"].ticktext) == ["ce", "kd"] and list(dims["method"].values) == [1, 1, 0]
    assert list(dims["test accuracy"].values) == [0.8, 0.9, 0.7]
    assert list(fig.data[0].line.color) == [0.8, 0.9, 0.7]
    assert fig.data[0].line.colorbar.title.text == "test accuracy"


def test_parallel_coordinates_puts_missing_values_on_an_na_tick_below_the_axis():
    temperature = {d.label: d for d in viz.parallel_coordinates_figure(summary_frame()).data[0].dimensions}[
        "temperature"
    ]
    missing = temperature["values"][2]
    assert missing < 1.0 and temperature.tickvals[0] == missing and temperature.ticktext[0] == "n/a"
    assert list(temperature["values"][:2]) == [1.0, 4.0]


def test_parallel_coordinates_of_nothing_is_an_empty_figure():
    assert not viz.parallel_coordinates_figure(pd.DataFrame()).data


def grid(num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-2, 2, 4)
    probs = np.random.default_rng(0).dirichlet(np.ones(num_classes), (len(ys), len(xs)))
    return xs, ys, probs


def test_two_class_boundary_shows_p_class_1_the_half_contour_and_label_groups():
    xs, ys, probs = grid(2)
    points, labels = np.array([[0.0, 0.0], [0.5, 1.0], [-0.5, -1.0]]), np.array([0, 1, 1])
    fig = viz.decision_boundary_figure(xs, ys, probs, points, labels, "label", title="student")
    heatmap, contour, *groups = fig.data
    assert heatmap.type == "heatmap" and np.allclose(np.asarray(heatmap.z), probs[..., 1])
    assert contour.type == "contour" and contour.contours.start == 0.5 == contour.contours.end
    assert [g.name for g in groups] == ["label 0", "label 1"]
    assert list(groups[1].x) == [0.5, -0.5]
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.title.text == "student"


def test_boundary_points_coloured_by_probability_share_the_background_scale():
    xs, ys, probs = grid(2)
    points, soft = np.array([[0.0, 0.0], [0.5, 1.0]]), np.array([0.2, 0.9])
    fig = viz.decision_boundary_figure(xs, ys, probs, points, soft, "probability")
    scatter = fig.data[-1]
    assert list(scatter.marker.color) == [0.2, 0.9] and (scatter.marker.cmin, scatter.marker.cmax) == (0, 1)


def test_multiclass_boundary_shows_the_predicted_class():
    xs, ys, probs = grid(3)
    fig = viz.decision_boundary_figure(xs, ys, probs, np.zeros((2, 2)), np.array([0, 2]))
    assert np.array_equal(np.asarray(fig.data[0].z), probs.argmax(-1))
    assert [t.name for t in fig.data[1:]] == ["label 0", "label 2"]


def test_softmax_temperature_figure_has_a_bar_group_per_temperature():
    table = pd.DataFrame(
        {"temperature": [1, 1, 4, 4], "class": ["a", "b", "a", "b"], "probability": [0.9, 0.1, 0.6, 0.4]}
    )
    fig = viz.softmax_temperature_figure(table)
    assert [t.name for t in fig.data] == ["T = 1", "T = 4"]
    assert list(fig.data[1].x) == ["a", "b"] and list(fig.data[1].y) == [0.6, 0.4]
    assert fig.layout.barmode == "group"


def test_entropy_figure_marks_the_chosen_temperature_and_the_uniform_limit():
    curve = pd.DataFrame({"temperature": [1.0, 2.0, 4.0], "entropy": [0.1, 0.4, 0.6]})
    fig = viz.entropy_figure(curve, temperature=3.0, num_classes=2)
    line, marker = fig.data
    assert list(line.y) == [0.1, 0.4, 0.6]
    assert list(marker.x) == [3.0] and list(marker.y) == pytest.approx([0.5])
    assert fig.layout.shapes[0].y0 == pytest.approx(np.log(2))


def test_epoch_axes_show_whole_numbers_only():
    """A run of 3 epochs drawn with plotly's automatic ticks shows 0.5, 1.5: every epoch axis ticks on integers."""
    epochs = epochs_frame()
    route = epochs.assign(anchor_epoch=[1.0, 2.0, 2.0])
    figures = {
        "curves": (
            viz.training_curves_figure(pd.DataFrame({"train.loss": [1.0, 0.5]}, index=[1, 2]), epochs),
            "xaxis2",
        ),
        "scalars": (viz.scalars_figure(epochs), "xaxis"),
        "schedule": (viz.schedule_figure({"temperature": [4.0, 2.0]}), "xaxis"),
        "compare": (viz.compare_curves_figure({"a": epochs}, "test.acc"), "xaxis"),
        "trajectory": (viz.trajectory_figure({"p_true_student": pd.Series([0.2, 0.5])}), "xaxis"),
        "anchors": (viz.anchor_schedule_figure(route), "xaxis"),
        "route distance": (viz.route_distance_figure(route), "xaxis"),
        "route profile": (viz.route_profile_figure(route, [0, 2]), "xaxis"),
        "heads": (viz.head_accuracy_figure(pd.DataFrame({"head 1": [0.3, 0.5]})), "xaxis"),
    }
    for name, (fig, axis) in figures.items():
        axis = fig.layout[axis]
        assert axis.tickformat == "d" and axis.dtick >= 1 and float(axis.dtick).is_integer(), name
    long = viz.compare_curves_figure({"a": pd.DataFrame({"test.acc": np.linspace(0, 1, 200)})}, "test.acc")
    assert long.layout.xaxis.dtick in (20, 25, 50)  # about eight ticks over 200 epochs, still whole numbers


def test_log_axes_label_decades_not_every_minor_tick():
    wide = pd.DataFrame({"route_kl.0001": [1e-4, 1e-3], "route_kl.0002": [2.0, 0.5]}, index=[0, 1])
    narrow = pd.DataFrame({"route_kl.0001": [0.2, 0.3], "route_kl.0002": [0.9, 0.4]}, index=[0, 1])
    for make in (viz.route_distance_figure, lambda e: viz.route_profile_figure(e, [0, 1])):
        assert make(wide).layout.yaxis.type == "log" and make(wide).layout.yaxis.dtick == 1  # one label a decade
        narrow_axis = make(narrow).layout.yaxis
        assert list(narrow_axis.ticktext) == ["0.2", "0.3", "0.4", "0.5", "0.7"]  # plain numbers, not every digit
        assert make(wide).layout.yaxis.minor.ticks == "outside" and make(wide).layout.yaxis.minor.showgrid


def test_stored_scalar_names_reach_axes_as_words():
    fig = viz.compare_curves_figure({"a": epochs_frame()}, "test.acc")
    assert fig.layout.yaxis.title.text == "test accuracy"
    assert viz.scalar_label("train.loss_kd") == "train loss: kd term"
    assert viz.scalar_label("route_kl.0003") == "KL to teacher epoch 3"
    assert viz.scalar_label("my.custom") == "my.custom"


def test_runs_of_one_method_share_its_colour_and_differ_by_dash():
    curves = {"a": epochs_frame(), "b": epochs_frame(), "c": epochs_frame()}
    fig = viz.compare_curves_figure(curves, "test.acc", methods={"a": "kd", "b": "kd", "c": "wsl"})
    assert [t.line.color for t in fig.data] == [viz.METHOD_COLORS["kd"]] * 2 + [viz.METHOD_COLORS["wsl"]]
    assert fig.data[0].line.dash != fig.data[1].line.dash
    assert viz.method_color("my_method") == viz.method_color("my_method")


def test_a_temperature_has_one_colour_on_the_bars_and_the_entropy_curve():
    table = pd.DataFrame(
        {"temperature": [1.0, 1.0, 4.0, 4.0], "class": [0, 1, 0, 1], "probability": [0.9, 0.1, 0.6, 0.4]}
    )
    bars = viz.softmax_temperature_figure(table)
    curve = pd.DataFrame({"temperature": [0.5, 1.0, 4.0, 8.0], "entropy": [0.1, 0.3, 0.6, 0.68]})
    marked = viz.entropy_figure(curve, temperature=4.0)
    assert bars.data[1].marker.color == marked.data[1].marker.color != bars.data[0].marker.color
