"""Layer x head heatmaps of patching scores (plotly): interactive in Jupyter, saved as HTML/PNG."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from spt_interp.common.atomic import write_bytes_atomic, write_text_atomic
from spt_interp.common.head_scores import HeadScores

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """Return the path of a Chromium/Chrome that kaleido can drive, or None."""
    configured = os.environ.get("BROWSER_PATH")
    if configured and Path(configured).is_file():
        return configured
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def head_heatmap(
    scores: HeadScores,
    *,
    column: str = "score",
    top_k: int = 10,
    title: str | None = None,
) -> Any:
    """Return a plotly Figure: layers (rows) x heads (columns), diverging colours centred at 0.

    Hover shows layer, head, ``column`` and rank (1 = drives the apology most); the ``top_k``
    highest-ranked heads are outlined.
    """
    import plotly.graph_objects as go

    values = scores.matrix(column)
    ranks = scores.matrix("rank")
    n_layers, n_heads = values.shape
    finite = values[np.isfinite(values)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    bound = bound or 1.0
    hover = np.array(
        [
            [
                f"layer {layer}<br>head {head}<br>{column} {values[layer, head]:.4g}"
                f"<br>rank {int(ranks[layer, head]) if np.isfinite(ranks[layer, head]) else '-'}"
                for head in range(n_heads)
            ]
            for layer in range(n_layers)
        ]
    )
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=list(range(n_heads)),
            y=list(range(n_layers)),
            colorscale="RdBu_r",
            zmid=0.0,
            zmin=-bound,
            zmax=bound,
            text=hover,
            hoverinfo="text",
            colorbar={"title": {"text": f"{scores.metric}<br>{column}"}},
        )
    )
    for layer, head in scores.top(min(top_k, len(scores.table))):
        figure.add_shape(
            type="rect",
            x0=head - 0.5,
            x1=head + 0.5,
            y0=layer - 0.5,
            y1=layer + 0.5,
            line={"color": "black", "width": 3},
        )
    figure.update_layout(
        title=title or default_title(scores, top_k),
        xaxis={"title": "head", "dtick": 1},
        yaxis={"title": "layer", "dtick": 1, "autorange": "reversed"},
        width=max(480, 60 * n_heads + 200),
        height=max(360, 45 * n_layers + 160),
    )
    return figure


def default_title(scores: HeadScores, top_k: int) -> str:
    """Return the heatmap's title: the patching run, or the table's metric when it has none."""
    if scores.direction is None:
        return f"{scores.method}: {scores.metric} per head; outlined: top {top_k} apology heads"
    return (
        f"{scores.method} patching ({scores.position}, {scores.direction}), "
        f"{scores.metric}, {scores.n_prompts} prompts; outlined: top {top_k} apology heads"
    )


def save_figure(
    figure: Any, out_dir: str | Path, stem: str = "heatmap", *, png: bool = True
) -> dict[str, str]:
    """Write ``stem``.html (always) and ``stem``.png (when asked and a Chromium is present).

    Returns {"html": path, "png": path} or {"html": path, "png_note": why there is no PNG}.
    """
    folder = Path(out_dir)
    # plotly.js inlined: the page works offline, as the toolkit does.
    html = write_text_atomic(folder / f"{stem}.html", figure.to_html(include_plotlyjs=True))
    written = {"html": str(html)}
    if not png:
        return written
    browser = find_chromium()
    if browser is None:
        written["png_note"] = "no Chromium found: PNG export skipped (install chromium for it)"
        return written
    os.environ.setdefault("BROWSER_PATH", browser)
    try:
        image = figure.to_image(format="png", scale=2)
    except Exception as err:  # kaleido's failures are many and opaque; HTML stands alone.
        written["png_note"] = f"PNG export failed ({type(err).__name__}: {err}); HTML written"[:300]
        return written
    written["png"] = str(write_bytes_atomic(folder / f"{stem}.png", image))
    return written
