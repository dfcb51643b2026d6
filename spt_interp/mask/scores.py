"""Scores tables: one row per attention head (layer, head, score; optional rank), best first.

The patching engine writes them; knockout curves and head masks read them. A higher score means
the head drives the apology more, so it ranks first, unless a ``rank`` column says otherwise.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from spt_interp.errors import SptInterpError

SCORE_COLUMNS = ("layer", "head", "score")


def read_scores(path: str | Path) -> pd.DataFrame:
    """Return the scores CSV at ``path`` checked and ranked (see ``rank_scores``)."""
    file = Path(path)
    if not file.is_file():
        raise SptInterpError(f"scores file {file} does not exist")
    try:
        table = pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        # pandas ends some messages with a newline; the error stays one line.
        reason = " ".join(str(err).split())
        raise SptInterpError(f"{file} is not a readable CSV: {reason}") from None
    return rank_scores(table, origin=str(file))


def rank_scores(table: pd.DataFrame, origin: str = "scores table") -> pd.DataFrame:
    """Return the table's layer, head, score (and extra) columns with ``rank`` 1..n, best first.

    A ``rank`` column, where present, orders the heads; otherwise the highest score (the head
    that drives the apology most) comes first, ties broken by (layer, head).
    """
    missing = [c for c in SCORE_COLUMNS if c not in table.columns]
    if missing:
        raise SptInterpError(
            f"{origin} lacks column(s) {', '.join(missing)}; a scores table has columns "
            "layer, head, score (and optionally rank)"
        )
    if table.empty:
        raise SptInterpError(f"{origin} has no rows")
    ranked = table.copy()
    for column in ("layer", "head") + (("rank",) if "rank" in table.columns else ()):
        values = pd.to_numeric(ranked[column], errors="coerce")
        if pd.api.types.is_bool_dtype(values):  # a column of True / False cells
            values = pd.Series(float("nan"), index=values.index)
        # inf and values past int64 are no integers either: astype(int) raised
        # IntCastingNaNError on inf and wrapped 1e30 around to a negative number.
        number = values.astype("float64")
        bad = number.isna() | (number != number.round()) | (number.abs() >= 2**63)
        if bad.any():
            raise SptInterpError(
                f"{origin}: column {column} must hold integers (line {_first_line(bad)})"
            )
        ranked[column] = values.astype("int64")
    ranked["score"] = pd.to_numeric(ranked["score"], errors="coerce")
    duplicated = ranked.duplicated(["layer", "head"])
    if duplicated.any():
        first = ranked[duplicated].iloc[0]
        name = f"L{int(first['layer'])}.H{int(first['head'])}"
        raise SptInterpError(f"{origin} lists head {name} twice (line {_first_line(duplicated)})")
    if "rank" in ranked.columns:
        ranked = ranked.sort_values(["rank", "layer", "head"], kind="stable")
    else:
        if ranked["score"].isna().any():
            line = _first_line(ranked["score"].isna())
            raise SptInterpError(
                f"{origin}: column score has empty or non-numeric values (line {line})"
            )
        ranked = ranked.sort_values(
            ["score", "layer", "head"], ascending=[False, True, True], kind="stable"
        )
    ranked["rank"] = range(1, len(ranked) + 1)
    ranked = ranked.reset_index(drop=True)
    ranked.attrs["origin"] = origin  # so that a mask built from it names the file
    return ranked


def _first_line(rows: pd.Series) -> int:
    """Return the CSV line of the first True row (+2: the header is line 1, rows count from 0)."""
    return int(rows.to_numpy().argmax()) + 2


def ranked_heads(scores: pd.DataFrame) -> list[tuple[int, int]]:
    """Return the (layer, head) pairs of a ranked scores table, best first."""
    ranked = scores if _is_ranked(scores) else rank_scores(scores)
    pairs = zip(ranked.layer, ranked["head"], strict=True)
    return [(int(layer), int(head)) for layer, head in pairs]


def _is_ranked(scores: pd.DataFrame) -> bool:
    return "rank" in scores.columns and list(scores["rank"]) == list(range(1, len(scores) + 1))


def file_hash(path: str | Path) -> str:
    """Return ``sha256:<hex>`` of a file's bytes."""
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def parse_heads(text: str) -> list[tuple[int, int]]:
    """Return the heads of a list like "L3.H5,L4.H0" (or "3.5 4.0"); raise on a bad entry."""
    heads = []
    for entry in text.replace(",", " ").split():
        cleaned = entry.upper().replace("L", "").replace("H", "")
        layer, dot, head = cleaned.partition(".")
        if not dot or not layer.isdigit() or not head.isdigit():
            raise SptInterpError(f"bad head {entry!r}: write heads as L<layer>.H<head>, e.g. L3.H5")
        heads.append((int(layer), int(head)))
    if not heads:
        raise SptInterpError("the head list is empty")
    return heads
