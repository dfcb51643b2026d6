"""Reading what a user hands over: a JSON file, and a field of the type it must have.

Each reader names its file in the message; these are the checks they share, so that every
reader refuses the same defects the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spt_interp.errors import SptInterpError

KIND_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list"}


def json_reason(err: ValueError | RecursionError) -> str:
    """Return why json refused a text: its message, or "nested too deeply" for a RecursionError.

    json raises ValueError (JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits)
    and, for arrays or objects nested too deeply, RecursionError.
    """
    return "nested too deeply" if isinstance(err, RecursionError) else str(err)


def read_json(path: Path, label: str | None = None) -> Any:
    """Return the parsed UTF-8 JSON file; raise SptInterpError "<label> is not valid JSON: ..."
    (``label`` defaults to the path)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:
        raise SptInterpError(f"{label or path} is not valid JSON: {json_reason(err)}") from None


def typed(value: Any, kind: type, label: str, *, positive: bool = False) -> Any:
    """Return ``value`` if it is of ``kind`` (a bool is no integer); raise SptInterpError
    "<label> must be <kind>, got <value>" if not, or if ``positive`` and it is below 1.

    Checked, not converted: str([1]) or float("1.5") would turn a wrong field into a value.
    """
    if isinstance(value, bool) or not isinstance(value, kind):
        raise SptInterpError(f"{label} must be {KIND_NAMES[kind]}, got {value!r}")
    if positive and value < 1:
        raise SptInterpError(f"{label} must be a positive integer, got {value!r}")
    return value


def jsonl_rows(path: Path, missing: str) -> Iterator[tuple[int, Any]]:
    """Yield (line number, decoded value) of each non-blank line of a JSON Lines file.

    Raises SptInterpError "``missing`` <path> does not exist" for a missing file, and
    "<path>:<line>: ..." for a line that is not UTF-8, does not decode, or holds a lone
    surrogate escape (valid JSON, not text: a tokenizer fails on it long after reading).
    """
    if not path.is_file():
        raise SptInterpError(f"{missing} {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = raw[: err.start].count(b"\n") + 1
        raise SptInterpError(f"{path}:{line_no}: not UTF-8 text ({err.reason})") from None
    # JSON Lines ends lines with \n (or \r\n); str.splitlines would also split on U+2028,
    # U+0085, \x1c ..., which JSON strings may hold unescaped, and cut such a row in two.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as err:
            raise SptInterpError(f"{path}:{line_no}: invalid JSON ({json_reason(err)})") from None
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise SptInterpError(
                f"{path}:{line_no}: holds a lone surrogate escape (\\ud800-\\udfff)"
            ) from None
        yield line_no, value
