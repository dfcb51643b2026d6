"""Atomic file writes: a reader never sees a half-written output file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Return ``path`` after writing ``text`` to a temp file beside it, then renaming it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target so that the rename stays on one filesystem (atomic on POSIX).
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target
