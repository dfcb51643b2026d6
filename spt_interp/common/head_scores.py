"""Per-head scores: the one table that locate returns, masks and knockout read, and the heatmap
draws, with the files it is saved as (scores.csv, scores_per_prompt.csv, ranking.json).

The sign rule lives here and nowhere else. ``score`` is what a ranking measured per head (for
patching: the mean of metric(patched) - metric(base)); ``apology_effect`` is the same number
signed so that positive means "this head drives the apology" (the function ``apology_effect``);
rank 1 is the largest apology effect, ties broken by (layer, head) (``rank_order``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.fields import read_json, typed
from spt_interp.errors import SptInterpError

# Patching directions: X_c's head output into X_r (the default), or X_r's into X_c.
DIRECTIONS = ("c_into_r", "r_into_c")
SCORES_FILE, PER_PROMPT_FILE, RANKING_FILE = "scores.csv", "scores_per_prompt.csv", "ranking.json"
# The columns of scores.csv, in the order locate writes them.
FILE_COLUMNS = ("layer", "head", "score", "apology_effect", "rank")
REQUIRED_COLUMNS = ("layer", "head", "score")
# ranking.json's fields that describe the run (its heads come from scores.csv).
RUN_FIELDS = {
    "method": str,
    "position": str,
    "direction": str,
    "metric": str,
    "metric_description": str,
    "n_prompts": int,
    "n_layers": int,
    "n_heads": int,
    "baseline": dict,
    "settings": dict,
}


def apology_effect(score: Any, direction: str | None) -> Any:
    """Return ``score`` signed so that a positive value means the head drives the apology.

    Patching X_c's head output into X_r ("c_into_r") lowers the apology where the head carries
    the challenge's push, so the effect is -score; "r_into_c" raises it, so it is +score. A table
    that names no direction (one written by hand, or a ranking of another kind such as
    single-head ablation) already holds apology effects: a higher score drives the apology more.
    """
    if direction is not None and direction not in DIRECTIONS:
        raise SptInterpError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return -score if direction == "c_into_r" else score


def rank_order(table: pd.DataFrame) -> pd.Index:
    """Return the table's index, best head first: by its ``rank`` column where it has one, else
    by the largest ``apology_effect``; ties broken by (layer, head)."""
    if "rank" in table.columns:
        return table.sort_values(["rank", "layer", "head"], kind="stable").index
    return table.sort_values(
        ["apology_effect", "layer", "head"], ascending=[False, True, True], kind="stable"
    ).index


def with_ranks(table: pd.DataFrame) -> pd.DataFrame:
    """Return ``table`` (rows in their order) with ``rank`` 1..n set by ``rank_order``."""
    ranked = table.copy()
    ranked["rank"] = 0
    ranked.loc[rank_order(table), "rank"] = np.arange(1, len(table) + 1)
    return ranked


@dataclass(eq=False)
class HeadScores:
    """Per-head scores: ``table`` has layer, head, score, apology_effect, rank (one row a head).

    ``direction`` is the patching direction ("c_into_r" or "r_into_c"), or None for a table that
    came without one (see ``apology_effect``). ``origin`` names where the table came from (its
    file), so that a refusal later on can name it. Build with ``from_table``, read with ``load``
    (or ``read_scores``), write with ``save``.
    """

    table: pd.DataFrame
    per_prompt: pd.DataFrame | None
    baseline: dict[str, Any]
    method: str
    position: str | None
    direction: str | None
    metric: str
    metric_description: str
    n_layers: int
    n_heads: int
    n_prompts: int
    settings: dict[str, Any] = field(default_factory=dict)
    origin: str = "scores table"

    # -- reading the scores

    @property
    def drives_apology(self) -> str:
        """Return which sign of ``score`` marks a head that drives the apology, in words."""
        if self.direction == "c_into_r":
            return (
                "negative score: patching the head's X_c output into X_r lowers the apology "
                f"{self.metric}, so the head carries the challenge's push toward apologizing"
            )
        if self.direction == "r_into_c":
            return (
                "positive score: patching the head's X_r output into X_c raises the apology "
                f"{self.metric}, so the head carries the challenge's push toward apologizing"
            )
        return f"higher apology_effect: the head drives the apology more ({self.metric})"

    def ranked_table(self) -> pd.DataFrame:
        """Return the table sorted best head first (rank 1 first), with a fresh index."""
        return self.table.sort_values("rank", kind="stable").reset_index(drop=True)

    def ranked(self) -> list[tuple[int, int]]:
        """Return every (layer, head), the one that drives the apology most first."""
        ranked = self.ranked_table()
        pairs = zip(ranked.layer, ranked["head"], strict=True)
        return [(int(layer), int(head)) for layer, head in pairs]

    def top(self, k: int) -> list[tuple[int, int]]:
        """Return the k heads that drive the apology most, strongest first."""
        return self.ranked()[:k]

    def score_by_head(self) -> dict[tuple[int, int], float | None]:
        """Return each head's score (None where the table has no number)."""
        rows = zip(self.table.layer, self.table["head"], self.table.score, strict=True)
        return {
            (int(layer), int(head)): None if pd.isna(score) else float(score)
            for layer, head, score in rows
        }

    def matrix(self, column: str = "score") -> np.ndarray:
        """Return [n_layers, n_heads] of ``column`` (NaN where a head was not scored)."""
        grid = np.full((self.n_layers, self.n_heads), np.nan)
        grid[self.table["layer"].to_numpy(), self.table["head"].to_numpy()] = self.table[column]
        return grid

    def ranking(self) -> dict[str, Any]:
        """Return the JSON-ready ranking: heads by apology effect, with the baselines."""
        ranked = self.ranked_table()
        return {
            "method": self.method,
            "position": self.position,
            "direction": self.direction,
            "metric": self.metric,
            "metric_description": self.metric_description,
            "drives_apology": self.drives_apology,
            "n_prompts": self.n_prompts,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "baseline": self.baseline,
            "settings": self.settings,
            "heads": [
                {
                    "rank": int(r.rank),
                    "layer": int(r.layer),
                    "head": int(r.head),
                    "score": float(r.score),
                    "apology_effect": float(r.apology_effect),
                }
                for r in ranked.itertuples()
            ],
        }

    # -- building, saving and loading

    @classmethod
    def from_table(
        cls,
        table: pd.DataFrame,
        *,
        origin: str = "scores table",
        direction: str | None = None,
        n_layers: int | None = None,
        n_heads: int | None = None,
    ) -> HeadScores:
        """Return the scores of a table with columns layer, head, score (and optionally
        apology_effect, rank, method, metric), checked and ranked; raise naming ``origin``.

        Without an apology_effect column it is ``apology_effect(score, direction)``. Without a
        rank column the heads rank by apology effect, as locate ranks them. A single-valued
        method or metric column names the scores' method or metric. The shape defaults to the
        largest layer and head in the table.
        """
        checked = checked_table(table, origin, direction)
        return cls(
            table=checked,
            per_prompt=None,
            baseline={},
            method=column_value(checked, "method") or "scores",
            position=None,
            direction=direction,
            metric=column_value(checked, "metric") or "score",
            metric_description="",
            n_layers=int(checked.layer.max()) + 1 if n_layers is None else n_layers,
            n_heads=int(checked["head"].max()) + 1 if n_heads is None else n_heads,
            n_prompts=0,
            origin=origin,
        )

    @classmethod
    def load(cls, path: str | Path) -> HeadScores:
        """Return the scores saved at ``path``: a scores CSV, or a folder ``save`` wrote (its
        scores.csv with the run that ranking.json and scores_per_prompt.csv describe, where
        present). Raise SptInterpError naming the file (and line) on any defect."""
        given = Path(path)
        folder = given if given.is_dir() else None
        file = given / SCORES_FILE if folder is not None else given
        if not file.is_file():
            raise SptInterpError(f"scores file {file} does not exist")
        raw = _read_csv(file)
        run = _read_run(folder / RANKING_FILE) if folder is not None else {}
        if not run:
            return cls.from_table(raw, origin=str(file))
        scores = cls(
            table=checked_table(raw, str(file), run["direction"]),
            per_prompt=None,
            origin=str(file),
            **run,
        )
        _check_shape(scores)
        per_prompt = folder / PER_PROMPT_FILE
        if per_prompt.is_file():
            scores.per_prompt = _read_per_prompt(per_prompt)
        return scores

    def save(
        self,
        folder: str | Path,
        *,
        extra: dict[str, Any] | None = None,
        files: dict[str, str] | None = None,
        final_folder: str | Path | None = None,
    ) -> dict[str, str]:
        """Return the paths written into ``folder``: scores.csv, scores_per_prompt.csv (when
        per-prompt values were kept) and ranking.json, each written atomically.

        ranking.json starts with ``extra``, then the run and its heads best first, then
        "files": these tables and ``files`` (other outputs beside them, such as a heatmap).
        ``final_folder``: where the files will be once ``folder`` (a staging folder) has been
        moved into place, so that ranking.json lists them there.
        """
        target = Path(folder)
        listed_in = Path(final_folder) if final_folder is not None else target
        columns = list(FILE_COLUMNS) + [c for c in self.table.columns if c not in FILE_COLUMNS]
        table = self.table[columns].to_csv(index=False)
        written = {"scores": str(write_text_atomic(target / SCORES_FILE, table))}
        if self.per_prompt is not None:
            text = self.per_prompt.to_csv(index=False)
            written["per_prompt"] = str(write_text_atomic(target / PER_PROMPT_FILE, text))
        listed = {key: str(listed_in / Path(value).name) for key, value in written.items()}
        ranking = {**(extra or {}), **self.ranking(), "files": {**listed, **(files or {})}}
        text = json.dumps(ranking, indent=2) + "\n"
        written["ranking"] = str(write_text_atomic(target / RANKING_FILE, text))
        return written


def read_scores(path: str | Path) -> HeadScores:
    """Return the scores saved at ``path``, a scores CSV or a folder (``HeadScores.load``)."""
    return HeadScores.load(path)


# --- checking what a user hands over -----------------------------------------------------------


def checked_table(table: pd.DataFrame, origin: str, direction: str | None) -> pd.DataFrame:
    """Return ``table`` (rows in their order) with integer layer and head, numeric score and
    apology_effect, and ``rank`` 1..n; raise naming ``origin`` and the CSV line on a defect."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise SptInterpError(
            f"{origin} lacks column(s) {', '.join(missing)}; a scores table has columns "
            "layer, head, score (and optionally apology_effect, rank)"
        )
    if table.empty:
        raise SptInterpError(f"{origin} has no rows")
    checked = table.reset_index(drop=True)
    for column in ("layer", "head") + (("rank",) if "rank" in table.columns else ()):
        checked[column] = _integers(checked[column], column, origin)
    for column in ("layer", "head"):
        negative = checked[column] < 0
        if negative.any():
            raise SptInterpError(
                f"{origin}: column {column} must not be negative (line {_first_line(negative)})"
            )
    duplicated = checked.duplicated(["layer", "head"])
    if duplicated.any():
        first = checked[duplicated].iloc[0]
        name = f"L{int(first['layer'])}.H{int(first['head'])}"
        raise SptInterpError(f"{origin} lists head {name} twice (line {_first_line(duplicated)})")
    checked["score"] = pd.to_numeric(checked["score"], errors="coerce")
    if "apology_effect" in checked.columns:
        checked["apology_effect"] = pd.to_numeric(checked["apology_effect"], errors="coerce")
        key = "apology_effect"
    else:
        checked["apology_effect"] = apology_effect(checked["score"], direction)
        key = "score"
    if "rank" not in checked.columns and checked["apology_effect"].isna().any():
        line = _first_line(checked["apology_effect"].isna())
        raise SptInterpError(
            f"{origin}: column {key} has empty or non-numeric values (line {line})"
        )
    return with_ranks(checked)


def _integers(values: pd.Series, column: str, origin: str) -> pd.Series:
    """Return ``values`` as int64; raise naming the line of the first cell that is no integer."""
    numbers = pd.to_numeric(values, errors="coerce")
    if pd.api.types.is_bool_dtype(numbers):  # a column of True / False cells
        numbers = pd.Series(float("nan"), index=numbers.index)
    # inf and values past int64 are no integers either: astype(int) raised
    # IntCastingNaNError on inf and wrapped 1e30 around to a negative number.
    number = numbers.astype("float64")
    bad = number.isna() | (number != number.round()) | (number.abs() >= 2**63)
    if bad.any():
        raise SptInterpError(
            f"{origin}: column {column} must hold integers (line {_first_line(bad)})"
        )
    return numbers.astype("int64")


def _first_line(rows: pd.Series) -> int:
    """Return the CSV line of the first True row (+2: the header is line 1, rows count from 0)."""
    return int(rows.to_numpy().argmax()) + 2


def column_value(table: pd.DataFrame, column: str) -> str | None:
    """Return the one value a column holds in every row (None: no such column, or several)."""
    if column not in table.columns:
        return None
    values = table[column].dropna().unique()
    return str(values[0]) if len(values) == 1 else None


def _read_csv(file: Path) -> pd.DataFrame:
    """Return the CSV at ``file``; raise a one-line SptInterpError naming it if it is none."""
    try:
        return pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        # pandas ends some messages with a newline; the error stays one line.
        reason = " ".join(str(err).split())
        raise SptInterpError(f"{file} is not a readable CSV: {reason}") from None


def _read_run(file: Path) -> dict[str, Any]:
    """Return ranking.json's description of the run ({} when there is no such file)."""
    if not file.is_file():
        return {}
    data = read_json(file)
    if not isinstance(data, dict):
        raise SptInterpError(f"{file} is not a locate ranking (not a JSON object)")
    run = {}
    for name, kind in RUN_FIELDS.items():
        if name not in data:
            raise SptInterpError(f"{file} lacks the field {name!r} of a locate ranking")
        run[name] = typed(data[name], kind, f"{file}: {name}", positive=name.startswith("n_"))
    if run["direction"] not in DIRECTIONS:
        raise SptInterpError(f"{file}: direction must be one of {', '.join(DIRECTIONS)}")
    return run


def _check_shape(scores: HeadScores) -> None:
    """Raise naming the scores file if a head lies outside the run's layers x heads."""
    table = scores.table
    outside = (table.layer >= scores.n_layers) | (table["head"] >= scores.n_heads)
    if outside.any():
        row = table[outside].iloc[0]
        raise SptInterpError(
            f"{scores.origin}: head L{int(row.layer)}.H{int(row['head'])} (line "
            f"{_first_line(outside)}) is outside the run's {scores.n_layers} layers x "
            f"{scores.n_heads} heads"
        )


def _read_per_prompt(file: Path) -> pd.DataFrame:
    """Return the per-prompt values locate saved (layer, head, prompt, record_id, value)."""
    table = _read_csv(file)
    missing = [c for c in ("layer", "head", "prompt", "record_id", "value") if c not in table]
    if missing:
        raise SptInterpError(f"{file} lacks column(s) {', '.join(missing)}")
    return table
