"""Show a plotly figure in a notebook so that it is interactive in Jupyter and visible on GitHub.

GitHub's notebook viewer runs no JavaScript, so an interactive plotly output shows there as a
blank cell. ``figure_bundle`` puts the figure's plotly JSON (rendered interactively by JupyterLab,
Notebook 7 and VS Code) and a static PNG (drawn by kaleido through a local Chromium) in one
output; viewers that do not know the plotly type fall back to the PNG. Without Chromium, or when
kaleido fails, the PNG is left out and an HTML rendering (plotly.js from its CDN) stands in.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from spt_interp.viz.plots import find_chromium

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def png_bytes(figure: Any, scale: float = 1.0) -> tuple[bytes | None, str]:
    """Return (the figure as PNG bytes, "") or (None, why no PNG could be drawn)."""
    browser = find_chromium()
    if browser is None:
        return None, "no Chromium found: static PNG skipped"
    os.environ.setdefault("BROWSER_PATH", browser)
    try:
        return figure.to_image(format="png", scale=scale), ""
    except Exception as err:  # kaleido's failures are many and opaque; the figure stands alone.
        return None, f"PNG export failed ({type(err).__name__}: {err})"


def figure_bundle(figure: Any, *, png: bool = True, scale: float = 1.0) -> dict[str, Any]:
    """Return a display bundle: plotly JSON + PNG, or plotly JSON + HTML when no PNG is drawn."""
    bundle: dict[str, Any] = {
        # Through JSON: the figure's numpy arrays become lists a notebook file can hold.
        PLOTLY_MIME: json.loads(figure.to_json()),
        "text/plain": f"<plotly figure: {figure.layout.title.text or 'untitled'}>",
    }
    image, why = png_bytes(figure, scale) if png else (None, "PNG not requested")
    if image is not None:
        bundle["image/png"] = base64.b64encode(image).decode("ascii")
    else:
        bundle["text/html"] = figure.to_html(include_plotlyjs="cdn", full_html=False)
        bundle["text/plain"] += f" ({why})"
    return bundle


def show_figure(figure: Any, *, png: bool = True, scale: float = 1.0) -> None:
    """Return None after displaying the figure's bundle (see ``figure_bundle``) in IPython."""
    from IPython.display import display

    display(figure_bundle(figure, png=png, scale=scale), raw=True)
