"""Atomic file writes: a reader never sees a half-written output file."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """Return the process umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) while the block runs and raise KeyboardInterrupt after it, if one came.

    A commit of several renames (old output aside, new one in) must not stop half-way: an
    interrupt between two renames would leave neither the old output nor the new one in place.
    Only the main thread can install signal handlers; elsewhere the block runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Return ``path`` after writing ``data`` to a hidden file beside it, then renaming it.

    The hidden name is fixed (``.NAME.partial``), so a file left by a killed run is replaced by
    the next run's rather than piling up.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target so that the rename stays on one filesystem (atomic on POSIX).
    temp = target.parent / f".{target.name}.partial"
    try:
        # The mode an ordinary write would give (open applies the umask).
        handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Return ``path`` after writing ``text`` (UTF-8) atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))
