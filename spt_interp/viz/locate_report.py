"""Write a locate run's outputs: scores.csv, ranking.json, heatmap.html (+ .png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt_interp.common.head_scores import HeadScores
from spt_interp.common.outputs import final_paths, staged_files
from spt_interp.viz.plots import head_heatmap, save_figure

LOCATE_FILES = ("scores.csv", "ranking.json", "heatmap.html", "heatmap.png")


def write_outputs(
    scores: HeadScores,
    out: Path,
    *,
    top_k: int = 10,
    extra: dict[str, Any] | None = None,
    png: bool = True,
) -> dict[str, str]:
    """Return the paths written: scores table, ranking JSON, heatmap HTML (and PNG if possible).

    The files are written into a hidden folder inside ``out`` and renamed into it together, so
    an interrupted run leaves none of them there.
    """
    with staged_files(out) as staging:
        figure = save_figure(head_heatmap(scores, top_k=top_k), staging, "heatmap", png=png)
        # Paths as they will be once the files are in place (ranking.json lists them).
        figure_files = final_paths(figure, staging, out)
        tables = final_paths(
            scores.save(staging, extra=extra, files=figure_files, final_folder=out), staging, out
        )
    ranking = tables.pop("ranking")
    return {**tables, **figure_files, "ranking": ranking}
