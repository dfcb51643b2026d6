"""What the mask commands read besides a scores table: a file's hash, a written list of heads.

Scores tables themselves are ``spt_interp.common.head_scores.HeadScores``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from spt_interp.errors import SptInterpError


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
