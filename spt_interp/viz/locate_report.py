"""Write a locate run's outputs: scores.csv, ranking.json, heatmap.html (+ .png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.outputs import final_paths, staged_files
from spt_interp.patching.engine import HeadScores
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
    columns = ["layer", "head", "score", "apology_effect", "rank"]
    with staged_files(out) as staging:
        table = scores.table[columns].to_csv(index=False)
        written = {"scores": write_text_atomic(staging / "scores.csv", table)}
        if scores.per_prompt is not None:
            written["per_prompt"] = write_text_atomic(
                staging / "scores_per_prompt.csv", scores.per_prompt.to_csv(index=False)
            )
        figure = head_heatmap(scores, top_k=top_k)
        written.update(save_figure(figure, staging, "heatmap", png=png))
        # Paths as they will be once the files are in place (ranking.json lists them).
        final = final_paths(written, staging, out)
        ranking = {**(extra or {}), **scores.ranking(), "files": final}
        write_text_atomic(staging / "ranking.json", json.dumps(ranking, indent=2) + "\n")
    return {**final, "ranking": str(Path(out) / "ranking.json")}
