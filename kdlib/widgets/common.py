"""What every widget here shares: plotly figures as widgets updated in place, the label width, errors as HTML."""

from __future__ import annotations

import html

import plotly.graph_objects as go

LABEL = {"description_width": "90px"}


def figure_widget(fig: go.Figure) -> go.FigureWidget:
    return go.FigureWidget(fig)


def sync_figure(widget: go.FigureWidget, fresh: go.Figure) -> None:
    """Make `widget` show `fresh`: traces with the same names get their data updated in place (no redraw
    from scratch); otherwise the traces are replaced. The layout follows `fresh` (titles, marks)."""
    same = [t.name for t in widget.data] == [t.name for t in fresh.data]
    with widget.batch_update():
        if same:
            for old, new in zip(widget.data, fresh.data, strict=True):
                old.update({k: v for k, v in new.to_plotly_json().items() if k not in ("type", "uid")})
        else:
            widget.data = []
            widget.add_traces(list(fresh.data))
    layout = fresh.layout.to_plotly_json()
    if layout != getattr(widget, "_kdlib_layout", None):  # assigning the layout redraws axes and drops the zoom
        # the browser merges a new layout into the old one: first remove what is gone (an "empty" note)
        gone = set(widget.layout.to_plotly_json()) - set(layout)
        if gone:
            widget.plotly_relayout({key: None for key in gone})
        widget.layout, widget._kdlib_layout = fresh.layout, layout


def error_html(lines: list[str]) -> str:
    items = "".join(
        f"<li><b>{html.escape(path)}</b>: {html.escape(text)}</li>" if text else f"<li>{html.escape(path)}</li>"
        for path, _, text in (line.partition(": ") for line in lines)
    )
    return f"<div style='color:#b00020'><b>Not started:</b><ul style='margin:2px 0 0 16px;padding:0'>{items}</ul></div>"
