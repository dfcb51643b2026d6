"""The reliability page's table of refusals is checked against the tests: each message it quotes
is one that some test triggers and asserts."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## What each command refuses"


def quoted_messages() -> list[str]:
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split(HEADING, 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    messages = []
    for row in rows[1:]:  # the first row is the header
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        messages += re.findall(r"`([^`]+)`", cells[-1])
    return messages


def test_every_refusal_the_docs_quote_is_asserted_by_a_test():
    messages = quoted_messages()
    assert len(messages) >= 30  # the table was found and read
    this = Path(__file__).name
    tests = "\n".join(
        path.read_text() for path in (ROOT / "tests").glob("test_*.py") if path.name != this
    )
    missing = [message for message in messages if message not in tests]
    assert missing == []
