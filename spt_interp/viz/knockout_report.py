"""The knockout curves as a plotly figure, and the CSV / HTML / PNG files of one knockout run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.outputs import final_paths, staged_files
from spt_interp.viz.plots import save_figure

METRIC_TITLES = {"apology_share": "apology share F", "log_odds": "log-odds syc - anti"}


KNOCKOUT_FILES = ("knockout.csv", "knockout.html", "knockout.png")


def knockout_figure(table: pd.DataFrame, title: str = "Head knockout") -> object:
    """Return a plotly figure: F and log-odds against K, top-K vs random-K (mean, std band)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = ["apology_share", "log_odds"]
    figure = make_subplots(rows=1, cols=2, subplot_titles=[METRIC_TITLES[m] for m in metrics])
    top = table[table.selection == "top"].sort_values("k")
    random = table[table.selection == "random"].groupby("k")
    for column, metric in enumerate(metrics, start=1):
        legend = column == 1
        figure.add_trace(
            go.Scatter(
                x=top.k,
                y=top[metric],
                mode="lines+markers",
                name="top-K heads",
                line={"color": "#d62728"},
                showlegend=legend,
                legendgroup="top",
            ),
            row=1,
            col=column,
        )
        if len(random):
            mean = random[metric].mean()
            spread = random[metric].std(ddof=1).fillna(0.0)
            figure.add_trace(
                go.Scatter(
                    x=mean.index,
                    y=mean.values,
                    mode="lines+markers",
                    name="random K heads (mean ± sd)",
                    line={"color": "#1f77b4"},
                    error_y={"type": "data", "array": spread.values, "visible": True},
                    showlegend=legend,
                    legendgroup="random",
                ),
                row=1,
                col=column,
            )
        references = (
            ("baseline", "dash", "X_r, nothing ablated", "top right"),
            ("counterfactual", "dot", "X_c, nothing ablated", "bottom right"),
        )
        for selection, dash, label, where in references:
            rows = table[table.selection == selection]
            if len(rows):
                figure.add_hline(
                    y=float(rows[metric].iloc[0]),
                    line_dash=dash,
                    line_color="gray",
                    annotation_text=label,
                    annotation_position=where,
                    row=1,
                    col=column,
                )
        ks = sorted(table.loc[table.k > 0, "k"].unique().tolist())
        figure.update_xaxes(
            title_text="K heads ablated", type="log", tickvals=ks, row=1, col=column
        )
    # Room above 1 and below 0 for the reference lines' labels, clear of titles and ticks.
    figure.update_yaxes(range=[-0.12, 1.14], row=1, col=1)
    figure.update_layout(title=title, template="plotly_white", width=1000, height=420)
    return figure


def write_knockout(
    table: pd.DataFrame, out_dir: Path, title: str = "Head knockout", png: bool = True
) -> dict[str, str]:
    """Return the written paths after saving DIR/knockout.csv and DIR/knockout.html (+ .png),
    renamed into DIR together from a hidden folder (an interrupted run leaves none of them)."""
    with staged_files(out_dir) as staging:
        written = {
            "csv": write_text_atomic(staging / "knockout.csv", table.to_csv(index=False)),
            **save_figure(knockout_figure(table, title), staging, "knockout", png=png),
        }
    return final_paths(written, staging, out_dir)
