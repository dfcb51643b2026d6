"""Jupyter: knock heads out by clicking them on the scores heatmap and watch F move.

``knockout_explorer(model, pairs, scores)`` returns an ipywidgets box: a plotly FigureWidget
heatmap of the head scores (click a cell to add or remove that head from the knockout set), a
readout of the live F and log-odds against the baseline, and a button that saves the set as a
head mask. All of its logic is in ``KnockoutSession`` and ``click_heads``, which tests drive
without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_interp.common.head_scores import HeadScores
from spt_interp.common.outputs import check_out
from spt_interp.data.pairs import PromptPair
from spt_interp.errors import SptInterpError
from spt_interp.knockout import KnockoutData, Reading, measure, prepare_knockout
from spt_interp.knockout.ablation import Head, check_heads
from spt_interp.mask import HeadMask, MaskSource
from spt_interp.model.loading import HookedModel


@dataclass
class KnockoutSession:
    """The explorer's state: the heads knocked out, the baseline and the current reading."""

    hooked: HookedModel
    data: KnockoutData
    scores: HeadScores
    baseline: Reading
    current: Reading
    selected: list[Head] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        hooked: HookedModel,
        pairs: Sequence[PromptPair],
        scores: HeadScores,
        *,
        method: str = "mean",
        position: str = "end",
        batch_size: int = 8,
    ) -> KnockoutSession:
        """Return a session with nothing knocked out (the baseline measured once).

        At END each batch's prefix is cached, so a click costs one END step per batch
        (``knockout.end_steps``); ablating at all positions re-runs full forwards.
        """
        check_heads(scores.ranked(), hooked.geometry.n_layers, hooked.geometry.n_heads)
        data = prepare_knockout(
            hooked,
            pairs,
            method=method,
            position=position,
            batch_size=batch_size,
            end_steps=True,
        )
        baseline = measure(hooked, data)
        return cls(hooked, data, scores, baseline, baseline)

    def toggle(self, layer: int, head: int) -> Reading:
        """Return the new reading after adding (layer, head) to the set, or removing it."""
        g = self.hooked.geometry
        (key,) = check_heads([(layer, head)], g.n_layers, g.n_heads)
        if key in self.selected:
            self.selected.remove(key)
        else:
            self.selected.append(key)
        return self.recompute()

    def set_heads(self, heads: Sequence[Head]) -> Reading:
        """Return the reading with exactly ``heads`` knocked out."""
        g = self.hooked.geometry
        self.selected = list(dict.fromkeys(check_heads(heads, g.n_layers, g.n_heads)))
        return self.recompute()

    def recompute(self) -> Reading:
        """Return (and keep) F and log-odds with the selected heads ablated."""
        if self.selected:
            self.current = measure(self.hooked, self.data, self.selected)
        else:
            self.current = self.baseline
        return self.current

    def readout(self) -> str:
        """Return one line: the set's size, F and log-odds now against the baseline."""
        b, c = self.baseline, self.current
        change = (c.apology_share - b.apology_share) / b.apology_share if b.apology_share else 0.0
        return (
            f"{len(self.selected)} head(s) knocked out ({self.data.method} ablation at "
            f"{self.data.position}): F {c.apology_share:.3f} (baseline {b.apology_share:.3f}, "
            f"{change:+.0%}); log-odds {c.log_odds:.2f} (baseline {b.log_odds:.2f})"
        )

    def to_mask(self, components: Sequence[str] | None = None) -> HeadMask:
        """Return the knocked-out set as a head mask (scores from the table where it has them)."""
        if not self.selected:
            raise SptInterpError("the knockout set is empty: click heads to add them first")
        score_of = self.scores.score_by_head()
        # Best first, as in a mask built from the scores; heads they do not rank go last.
        rank_of = {head: place for place, head in enumerate(self.scores.ranked())}
        order = sorted(self.selected, key=lambda h: rank_of.get(h, len(rank_of)))
        return HeadMask.from_heads(
            self.hooked,
            [(layer, head, score_of.get((layer, head))) for layer, head in order],
            components=components,
            source=MaskSource(method="interactive_knockout", metric="apology_share"),
        )

    def export(
        self, path: str | Path, *, components: Sequence[str] | None = None, force: bool = False
    ) -> Path:
        """Return ``path`` after saving the set as a head mask (overwrites only with force)."""
        target = Path(path)
        check_out(target, force=force, create_parents=True)
        return self.to_mask(components).save(target)


def click_heads(xs: Sequence[Any], ys: Sequence[Any]) -> list[Head]:
    """Return the (layer, head) cells of a heatmap click (x = head, y = layer)."""
    return [(int(y), int(x)) for x, y in zip(xs, ys, strict=True)]


def heatmap_figure(session: KnockoutSession) -> Any:
    """Return a FigureWidget: the session's scores heatmap (``spt_interp.viz.plots.head_heatmap``)
    and a marker trace over the knocked-out heads."""
    import plotly.graph_objects as go

    from spt_interp.viz.plots import head_heatmap

    figure = go.FigureWidget(head_heatmap(session.scores))
    figure.add_trace(
        go.Scatter(
            x=[],
            y=[],
            mode="markers",
            name="knocked out",
            hoverinfo="skip",
            marker={"symbol": "x", "size": 14, "color": "black"},
        )
    )
    figure.update_layout(title="Click a head to knock it out (outlined: top heads)")
    return figure


def show_selection(figure: Any, session: KnockoutSession) -> None:
    """Return None after drawing the session's knocked-out heads as markers on the figure."""
    with figure.batch_update():
        figure.data[1].x = [head for _, head in session.selected]
        figure.data[1].y = [layer for layer, _ in session.selected]


def knockout_explorer(
    model: HookedModel,
    pairs: Sequence[PromptPair],
    scores: HeadScores,
    *,
    method: str = "mean",
    position: str = "end",
    batch_size: int = 8,
    mask_path: str = "head_mask.json",
) -> Any:
    """Return the explorer widget (a VBox; its ``session`` attribute holds the state).

    ``scores`` ranks the heads (``locate_heads``' result, or ``read_scores`` of a scores CSV);
    the readout compares each pair's own behaviour and alternative.
    """
    import ipywidgets as widgets

    session = KnockoutSession.start(
        model,
        pairs,
        scores,
        method=method,
        position=position,
        batch_size=batch_size,
    )
    figure = heatmap_figure(session)
    readout = widgets.HTML(value=session.readout())
    path_box = widgets.Text(value=mask_path, description="mask file")
    export_button = widgets.Button(description="Export mask")
    overwrite = widgets.Checkbox(value=False, description="overwrite")
    clear_button = widgets.Button(description="Clear")
    status = widgets.HTML(value="")

    def refresh() -> None:
        show_selection(figure, session)
        readout.value = session.readout()

    def on_click(trace: Any, points: Any, selector: Any) -> None:
        for layer, head in click_heads(points.xs, points.ys):
            session.toggle(layer, head)
        refresh()

    def on_export(_: Any) -> None:
        try:
            written = session.export(path_box.value, force=overwrite.value)
        except SptInterpError as err:
            status.value = f"<b>not exported:</b> {err}"
        else:
            status.value = f"saved {len(session.selected)} head(s) to {written}"

    def on_clear(_: Any) -> None:
        session.set_heads([])
        refresh()

    figure.data[0].on_click(on_click)
    export_button.on_click(on_export)
    clear_button.on_click(on_clear)
    box = widgets.VBox(
        [figure, readout, widgets.HBox([path_box, overwrite, export_button, clear_button]), status]
    )
    box.session = session
    box.figure = figure
    box.on_heatmap_click = on_click
    return box
