"""Notebook figure bundles: plotly JSON plus a PNG, or plotly JSON plus HTML without Chromium."""

from __future__ import annotations

import base64
import json

import plotly.graph_objects as go
import pytest

import spt_interp.viz.notebook_figures as notebook_figures
from spt_interp.viz.notebook_figures import PLOTLY_MIME, figure_bundle, show_figure

FAKE_PNG = b"\x89PNG\r\n\x1a\nnot really an image"


@pytest.fixture
def figure():
    figure = go.Figure(go.Heatmap(z=[[1.0, -2.0], [0.5, 3.0]]))
    figure.update_layout(title="scores")
    return figure


@pytest.fixture(autouse=True)
def browser_path(monkeypatch):
    # png_bytes sets BROWSER_PATH; setenv first so that monkeypatch restores the original
    # state (unset included) afterwards: delenv alone records nothing when the name is unset.
    monkeypatch.setenv("BROWSER_PATH", "placeholder")
    monkeypatch.delenv("BROWSER_PATH")


def test_png_and_plotly_json_with_chromium(monkeypatch, figure):
    monkeypatch.setattr(notebook_figures, "find_chromium", lambda: "/usr/bin/some-chromium")
    calls = []
    monkeypatch.setattr(type(figure), "to_image", lambda self, **kw: calls.append(kw) or FAKE_PNG)
    bundle = figure_bundle(figure, scale=2.0)
    assert base64.b64decode(bundle["image/png"]) == FAKE_PNG
    assert calls == [{"format": "png", "scale": 2.0}]
    assert "text/html" not in bundle  # HTML would win over the PNG on GitHub's viewer
    assert bundle[PLOTLY_MIME] == json.loads(figure.to_json())
    assert bundle[PLOTLY_MIME]["data"][0]["z"] == [[1.0, -2.0], [0.5, 3.0]]
    json.dumps(bundle)  # a notebook file can hold it


def test_html_fallback_without_chromium(monkeypatch, figure):
    monkeypatch.setattr(notebook_figures, "find_chromium", lambda: None)
    monkeypatch.setattr(type(figure), "to_image", lambda self, **kw: pytest.fail("no browser"))
    bundle = figure_bundle(figure)
    assert "image/png" not in bundle
    assert "cdn.plot.ly" in bundle["text/html"] and "<html" not in bundle["text/html"]
    assert "no Chromium found" in bundle["text/plain"]
    assert bundle[PLOTLY_MIME] == json.loads(figure.to_json())


def test_html_fallback_when_kaleido_fails(monkeypatch, figure):
    monkeypatch.setattr(notebook_figures, "find_chromium", lambda: "/usr/bin/some-chromium")

    def broken(self, **kw):
        raise RuntimeError("browser crashed")

    monkeypatch.setattr(type(figure), "to_image", broken)
    bundle = figure_bundle(figure)
    assert "image/png" not in bundle and "text/html" in bundle
    assert "PNG export failed (RuntimeError: browser crashed)" in bundle["text/plain"]


def test_png_off_draws_nothing(monkeypatch, figure):
    monkeypatch.setattr(notebook_figures, "find_chromium", lambda: "/usr/bin/some-chromium")
    monkeypatch.setattr(type(figure), "to_image", lambda self, **kw: pytest.fail("asked for PNG"))
    bundle = figure_bundle(figure, png=False)
    assert "image/png" not in bundle and "text/html" in bundle


def test_show_figure_displays_the_bundle_raw(monkeypatch, figure):
    import IPython.display

    monkeypatch.setattr(notebook_figures, "find_chromium", lambda: None)
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw: shown.append((obj, raw)))
    show_figure(figure)
    assert len(shown) == 1
    bundle, raw = shown[0]
    assert raw is True
    assert set(bundle) == {PLOTLY_MIME, "text/html", "text/plain"}
    assert bundle[PLOTLY_MIME] == json.loads(figure.to_json())
