"""Per-sample figures: their data, not their pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlib import viz


def test_reliability_figure_from_a_stored_table_reports_the_ece():
    table = np.zeros((10, 3))
    table[6] = [2, 1.3, 1]  # two samples, mean confidence .65, accuracy .5
    fig = viz.reliability_figure(table)
    assert "ECE 15.0%" in fig.layout.title.text
    assert list(fig.data[0].y) == [0.5]


def test_rescaling_figure_places_samples_by_difficulty():
    samples = pd.DataFrame({"prev_p_true": [0.9, 0.2], "p_true_student": [0.95, 0.3], "grad_scale_true": [0.0, 0.43]})
    fig = viz.rescaling_figure(samples, selected=1)
    assert np.allclose(fig.data[0].x, [0.1, 0.8]) and list(fig.data[0].y) == [0.0, 0.43]
    assert fig.data[1].name == "sample 1"


def test_soft_label_weights_and_bias_variance_figures():
    samples = pd.DataFrame(
        {"p_true_teacher": [0.9, 0.3], "p_true_student": [0.5, 0.6], "weight": [0.8, 0.3], "reg_sample": [0.0, 1.0]}
    )
    fig = viz.soft_label_weights_figure(samples)
    assert np.allclose(fig.data[0].x, [-0.3]) and np.allclose(fig.data[1].x, [0.4])  # yes first, then no
    frame = pd.DataFrame({"bias": [0.5, 0.1], "variance": [0.02, 0.3], "loss": [0.52, 0.4]})
    fig = viz.bias_variance_figure(frame, color=samples.reg_sample.rename("regularization sample"))
    assert list(fig.data[0].x) == [0.3] and list(fig.data[1].x) == [0.02]


def test_yes_no_values_get_two_colours_and_a_legend_not_a_colour_bar():
    samples = pd.DataFrame(
        {"p_true_teacher": [0.9, 0.3, 0.2], "p_true_student": [0.5, 0.6, 0.7], "weight": [0.8, 0.3, 0.2]}
    )
    for fig in (
        viz.soft_label_weights_figure(samples.assign(reg_sample=[0.0, 1.0, 1.0])),
        viz.soft_label_weights_figure(samples),  # no stored flag: the teacher below the student
        viz.per_sample_scatter_figure(
            samples.assign(reg_sample=[False, True, True]),
            "weight",
            "p_true_student",
            "reg_sample",
            labels={"reg_sample": "regularization sample"},
        ),
    ):
        points = [t for t in fig.data if t.customdata is not None]
        assert [t.name for t in points] == ["regularization sample: yes", "regularization sample: no"]
        assert [len(t.x) for t in points] == [2, 1]
        assert len({t.marker.color for t in points}) == 2 and all(t.marker.showscale is None for t in points)
        assert all(isinstance(t.marker.color, str) for t in points)


def test_wsl_weight_and_the_regularization_flag_never_share_a_colour():
    """In the WSL lesson a high weight (the map's top colour) must not be the colour of a regularization sample."""
    grid = np.linspace(0.01, 0.99, 5)
    weight_map = viz.wsl_weight_map_figure(grid, grid, np.random.rand(5, 5))
    samples = pd.DataFrame({"p_true_teacher": [0.9, 0.3], "p_true_student": [0.5, 0.6], "weight": [0.8, 0.3]})
    flags = viz.soft_label_weights_figure(samples)
    scale_colors = {c.lower() for _, c in weight_map.data[0].colorscale}
    flag_colors = {t.marker.color.lower() for t in flags.data[:2]}
    assert not scale_colors & flag_colors
    # the weight has one scale wherever it colours points
    per_sample = viz.per_sample_scatter_figure(samples, "p_true_student", "p_true_teacher", "weight")
    assert [c for _, c in per_sample.data[0].marker.colorscale] == [c for _, c in weight_map.data[0].colorscale]


def test_a_quantity_keeps_its_colour_across_figures():
    teacher = viz.top_classes_figure({"teacher": np.array([0.1, 0.9]), "student": np.array([0.4, 0.6])})
    domain = viz.domain_confidence_figure({"source": {"student": np.random.rand(9), "teacher": np.random.rand(9)}})
    layout = pd.DataFrame({"who": ["teacher", "student"], "epoch": [1, 1], "x": [0, 1], "y": [0, 1]})
    route = viz.route_map_figure(layout)
    trajectory = viz.trajectory_figure(
        {"p_true_teacher": pd.Series([0.2, 0.5]), "p_true_student": pd.Series([0.1, 0.3])}
    )
    for role in ("teacher", "student"):
        colors = {
            next(t.marker.color for t in teacher.data if t.name == role),
            next(t.marker.color for t in domain.data if t.name == role),
            next(t.line.color for t in route.data if t.name == role),
            next(t.line.color for t in trajectory.data if role in t.name),
        }
        assert colors == {viz.ROLE_COLORS[role]}


def test_known_values_reach_legends_axes_and_hover_by_their_labels():
    labels = {"logit_grad_ratio_true": "true-class gradient / CE's", "p_true_student": "p(true) student"}
    samples = pd.DataFrame({"p_true_student": [0.9, 0.2], "logit_grad_ratio_true": [0.1, 0.8]})
    fig = viz.rescaling_figure(samples, labels=labels)
    fig = viz.per_sample_scatter_figure(samples, "p_true_student", "logit_grad_ratio_true", labels=labels)
    texts = [fig.layout.xaxis.title.text, fig.layout.yaxis.title.text, *(t.hovertemplate for t in fig.data)]
    assert not [t for t in texts if "logit_grad_ratio_true" in t or "p_true_student" in t]
    fig = viz.trajectory_figure({"logit_grad_ratio_true": pd.Series([0.1, 0.2])}, labels=labels)
    assert fig.data[0].name == "true-class gradient / CE's"
    both = viz.trajectory_figure({"p_true": pd.Series([0.1, 0.2]), "confidence": pd.Series([0.3, 0.2])})
    assert both.data[0].line.color == both.data[1].line.color and both.data[0].line.dash != both.data[1].line.dash


def test_user_names_are_shown_as_text_in_titles_legends_and_ticks():
    hostile = "<b>cat</b> & <a href='x'>dog</a>"
    fig = viz.top_classes_figure({"teacher": np.array([0.1, 0.9])}, class_names=["a", hostile], title=hostile)
    fig2 = viz.sample_input_figure(np.random.rand(1, 40), title=f"its input · label {hostile}")
    fig3 = viz.compare_curves_figure({hostile: pd.DataFrame({"test.acc": [0.5]})}, "test.acc", title=hostile)
    texts = [fig.layout.title.text, fig.data[0].x[0], fig2.layout.title.text, fig3.layout.title.text, fig3.data[0].name]
    assert all("<" not in t and "&lt;b&gt;cat&lt;/b&gt; &amp; " in t for t in texts), texts
    assert viz.style.plain("&lt;b&gt;") == "&lt;b&gt;"  # text made plain already stays as it is


def test_route_figures():
    layout = pd.DataFrame(
        {
            "who": ["teacher", "teacher", "student"],
            "epoch": [1, 2, 1],
            "x": [0, 1, 0.5],
            "y": [0, 0, 1],
            "anchor": [False, True, False],
            "current": [False, True, False],
        }
    )
    fig = viz.route_map_figure(layout)
    assert {t.name for t in fig.data} == {"teacher", "student", "anchors", "current anchor"}
    epochs = pd.DataFrame({"route_kl.0001": [0.5, 0.2], "route_kl.0002": [0.9, 0.4], "anchor_epoch": [1, 2]})
    fig = viz.route_distance_figure(epochs)
    assert list(fig.data[-1].y) == [0.5, 0.4]  # KL to the anchor of each epoch


def test_trajectory_image_and_top_classes_figures():
    fig = viz.trajectory_figure({"p_true_student": pd.Series([0.2, 0.5], index=[0, 1])}, epoch=1)
    assert list(fig.data[0].y) == [0.2, 0.5]
    assert viz.sample_image_figure(np.random.rand(1, 8, 8)).data[0].z.shape == (8, 8)
    fig = viz.top_classes_figure({"teacher": np.array([0.1, 0.7, 0.2]), "student": np.array([0.3, 0.4, 0.3])}, k=2)
    assert list(fig.data[0].x) == ["1", "2"]


def test_search_weights_and_head_figures():
    search = pd.DataFrame({"dfa.alpha.stage1.0": [0.5, 0.7], "dfa.alpha.stage1.1": [0.5, 0.3]}, index=[0, 10])
    assert len(viz.search_weights_figure(search).data) == 2
    heads = pd.DataFrame({"head 1": [0.3, 0.5], "final": [0.4, 0.8]})
    assert len(viz.head_accuracy_figure(heads).data) == 2


def test_sample_input_figure_draws_images_signals_and_points():
    assert viz.sample_input_figure(np.random.rand(1, 8, 8)).data[0].type == "heatmap"
    assert viz.sample_input_figure(np.random.rand(3, 8, 8)).data[0].type == "image"
    assert len(viz.sample_input_figure(np.random.rand(1, 40)).data[0].y) == 40
    fig = viz.sample_input_figure(np.array([0.5, -1.0]), np.random.rand(20, 2), np.arange(20) % 2)
    assert len(fig.data[0].x) == 20 and list(fig.data[1].x) == [0.5] and fig.data[1].name == "this sample"


def test_anchor_schedule_and_route_profile_figures():
    epochs = pd.DataFrame(
        {"route_kl.0001": [0.2, 0.4], "route_kl.0002": [0.6, 0.3], "anchor_epoch": [1.0, 2.0]}, index=[0, 1]
    )
    fig = viz.anchor_schedule_figure(epochs, epoch=1)
    assert list(fig.data[0].y) == [1.0, 2.0] and fig.data[0].line.shape == "hv"
    assert "no anchors" in viz.anchor_schedule_figure(epochs.drop(columns="anchor_epoch")).layout.annotations[0].text
    fig = viz.route_profile_figure(epochs, [0, 1], anchors=[1, 2], selected=1)
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[0].y) == [0.2, 0.6]
    assert fig.data[1].line.width == 3 and list(fig.data[2].y) == [0.4, 0.3]  # anchors on the selected epoch
    assert "No route distances" in viz.route_profile_figure(pd.DataFrame(), [0]).layout.annotations[0].text


def test_domain_confidence_and_lesson_figures():
    confidence = {"source": {"student": np.array([0.9, 0.8])}, "target": {"student": np.array([0.5, 0.6])}}
    fig = viz.domain_confidence_figure(confidence)
    assert [t.type for t in fig.data] == ["histogram", "histogram"] and list(fig.data[1].x) == [0.5, 0.6]
    assert viz.domain_confidence_figure({}).layout.annotations
    grid = np.linspace(0, 0.9, 10)
    fig = viz.pskd_rescaling_curve_figure(grid, {"a": 1 - grid}, point=(0.5, 0.5))
    assert list(fig.data[-1].x) == [0.5] and len(fig.data) == 2
    fig = viz.wsl_weight_map_figure(grid, grid, np.zeros((10, 10)), point=(0.3, 0.2))
    assert fig.data[0].z.shape == (10, 10) and list(fig.data[-1].y) == [0.2]


def test_top_classes_keep_class_names_as_labels():
    fig = viz.top_classes_figure({"student": np.array([0.1, 0.2, 0.7])}, ["0", "1", "2"])
    assert list(fig.data[0].x) == ["2", "1", "0"] and fig.layout.xaxis.type == "category"
