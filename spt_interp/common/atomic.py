"""Atomic file writes: a reader never sees a half-written output file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """Return the process umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Return ``path`` after writing ``data`` to a temp file beside it, then renaming it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target so that the rename stays on one filesystem (atomic on POSIX).
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        # mkstemp creates 0600; an output file gets the permissions an ordinary write would.
        os.chmod(temp_name, 0o666 & ~current_umask())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Return ``path`` after writing ``text`` (UTF-8) atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))
