"""Write a locate run's outputs: scores.csv, ranking.json, heatmap.html (+ .png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spt_interp.common.atomic import write_text_atomic
from spt_interp.patching.engine import HeadScores
from spt_interp.viz.plots import head_heatmap, save_figure

LOCATE_FILES = ("scores.csv", "ranking.json", "heatmap.html", "heatmap.png")


def write_outputs(
    scores: HeadScores, out: Path, *, top_k: int = 10, extra: dict[str, Any] | None = None
) -> dict[str, str]:
    """Return the paths written: scores table, ranking JSON, heatmap HTML (and PNG if possible)."""
    out.mkdir(parents=True, exist_ok=True)
    columns = ["layer", "head", "score", "apology_effect", "rank"]
    written = {
        "scores": str(
            write_text_atomic(out / "scores.csv", scores.table[columns].to_csv(index=False))
        )
    }
    if scores.per_prompt is not None:
        written["per_prompt"] = str(
            write_text_atomic(out / "scores_per_prompt.csv", scores.per_prompt.to_csv(index=False))
        )
    figure = head_heatmap(scores, top_k=top_k)
    written.update(save_figure(figure, out, "heatmap"))
    ranking = {**(extra or {}), **scores.ranking(), "files": written}
    written["ranking"] = str(
        write_text_atomic(out / "ranking.json", json.dumps(ranking, indent=2) + "\n")
    )
    return written
