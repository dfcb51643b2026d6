"""The docs are tested like the code: every Python block of the README and the docs pages runs;
the site builds strictly (broken links and unresolved API names fail it); every public name has
an API entry; every number in a results table is one of the numbers of the files it names."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import spt_interp as spt

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Pages whose tables quote measured numbers; each table names its source files.
RESULT_PAGES = [
    ROOT / "README.md",
    *sorted((DOCS / "results").glob("*.md")),
    DOCS / "performance.md",
]


def python_blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


@pytest.fixture(scope="module")
def organism_workdir(tmp_path_factory):
    """A working folder holding the organism where the demo writes it (runs/demo/organism), as
    the pages' examples assume after `make demo`."""
    work = tmp_path_factory.mktemp("docs")
    (work / "runs" / "demo").mkdir(parents=True)
    spt.write_organism(work / "runs" / "demo" / "organism")
    return work


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_of_the_page_runs(page, organism_workdir, monkeypatch):
    # The blocks of one page run in order in one namespace, as a reader would paste them.
    monkeypatch.chdir(organism_workdir)
    namespace: dict = {"__name__": "__docs__"}
    started = time.perf_counter()
    for number, block in enumerate(python_blocks(page), start=1):
        try:
            exec(compile(block, f"{page.name}, block {number}", "exec"), namespace)  # noqa: S102
        except Exception as err:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{page.relative_to(ROOT)}: Python block {number} raised {err!r}")
    print(f"{page.relative_to(ROOT)}: {number} blocks in {time.perf_counter() - started:.1f} s")


def test_there_are_python_blocks_to_run():
    blocks = sum(len(python_blocks(page)) for page in PAGES)
    print(f"{blocks} Python blocks on {len(PAGES_WITH_CODE)} pages")
    assert ROOT / "README.md" in PAGES_WITH_CODE and blocks >= 5


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", tmp_path / "site"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    # The CLI reference is generated: every command and its options are on the page.
    for command in ("locate", "knockout", "export-mask", "tune", "evaluate", "steer", "demo"):
        assert f"spt-interp {command}" in cli
    assert "--prefix-cache" in cli and "--top-k" in cli


def test_every_public_name_has_an_api_entry():
    entries = set(re.findall(r"^::: spt_interp\.(\w+)$", (DOCS / "api.md").read_text(), re.M))
    assert sorted(set(spt.__all__) - entries) == []
    assert sorted(entries - set(spt.__all__)) == []


# --- Results tables ---------------------------------------------------------------------------

# A number standing alone (not part of a name such as SmolLM2-135M or Llama-2-13B; a trailing
# "x" is a ratio and is checked).
NUMBER = re.compile(
    r"(?<![\w.])(?<!\w-)([-+−]?)(\d+(?:\.\d+)?)(?:[eE]([-+−]?\d+))?(%?)(?![A-Za-wyz\d])"
)
SOURCE = re.compile(r"`(benchmarks/results/[^`]+\.(?:json|jsonl|csv))`")


def numbers_in(value) -> list[float]:
    """Every number anywhere in a parsed JSON value (numeric strings included)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)] if math.isfinite(value) else []
    if isinstance(value, str):
        try:
            return [float(value)]
        except ValueError:
            return []
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers_in(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers_in(item)]
    return []


def source_numbers(path: Path) -> list[float]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return numbers_in(json.loads(text))
    if path.suffix == ".jsonl":
        return [
            n for line in text.splitlines() if line.strip() for n in numbers_in(json.loads(line))
        ]
    return [n for row in csv.reader(io.StringIO(text)) for n in numbers_in(row)]


def tables(page: Path) -> list[tuple[int, list[str], str]]:
    """(line number, the table's body rows, the nearest non-blank line above it) per table."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|"):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            # Python-Markdown renders a table only after a blank line.
            assert start == 0 or not lines[start - 1].strip(), (
                f"{page.name}:{start + 1}: a table needs a blank line above it to render"
            )
            found.append((start + 1, lines[start + 2 : i], above))
        i += 1
    return found


def quoted_numbers(row: str) -> list[tuple[float, float, bool]]:
    """(value, half a unit of its last shown digit, shown as a percentage) per number in a
    table row, outside code spans (head names, commands and files go in those)."""
    quoted = []
    # Code spans and link targets are not quoted numbers.
    text = re.sub(r"\]\([^)]*\)", "]", re.sub(r"`[^`]*`", " ", row))
    for match in NUMBER.finditer(text):
        sign, digits, exponent, percent = match.groups()
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        scale = 10.0 ** int(exponent.replace("−", "-")) if exponent else 1.0
        value = float(digits) * scale * (-1 if sign == "−" or sign == "-" else 1)
        quoted.append((value, 0.5 * 10.0**-decimals * scale, bool(percent)))
    return quoted


def matches(value: float, half_unit: float, percent: bool, candidates: list[float]) -> bool:
    slack = half_unit * (1 + 1e-9) + 1e-12
    scales = (1.0, 100.0) if percent else (1.0,)
    return any(abs(value - c * s) <= slack for c in candidates for s in scales)


@pytest.mark.parametrize("page", RESULT_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_number_in_a_results_table_is_in_the_files_it_names(page):
    found = tables(page)
    for line, rows, above in found:
        sources = SOURCE.findall(above)
        assert above.startswith("Source") and sources, (
            f"{page.name}:{line}: a results table needs a 'Source: `benchmarks/results/...`' line "
            "right above it"
        )
        for source in sources:
            assert (ROOT / source).is_file(), f"{page.name}:{line}: {source} does not exist"
        candidates = [n for source in sources for n in source_numbers(ROOT / source)]
        for offset, row in enumerate(rows):
            for value, half_unit, percent in quoted_numbers(row):
                assert matches(abs(value), half_unit, percent, [abs(c) for c in candidates]), (
                    f"{page.name}:{line + 2 + offset}: {value:g} is in none of {sources}"
                )


def test_the_table_check_catches_a_number_that_is_not_in_its_file(tmp_path):
    # The check itself against a hand-made page: one number in the file, one not.
    assert matches(0.85, 0.005, False, [0.8512]) and not matches(0.86, 0.005, False, [0.8512])
    assert matches(49.1, 0.05, True, [0.4912]) and not matches(49.1, 0.05, False, [0.4912])
    row = "| `L23.H3` | [SmolLM2-135M](r.md) | 0.85 [0.67, 94] | 1e-3 | −0.04 | 12x | Llama-2-13B |"
    assert [q[0] for q in quoted_numbers(row)] == [0.85, 0.67, 94.0, 0.001, -0.04, 12.0]


# --- No history in what users read ------------------------------------------------------------

ISSUE_REFERENCE = re.compile(r"issues? ?#?[0-9]|#[0-9]{2}\b", re.IGNORECASE)


def test_nothing_in_the_repository_refers_to_issue_numbers():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    hits = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png", ".safetensors", ".gguf", ".bin"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [f"{name}: {m.group(0)}" for m in ISSUE_REFERENCE.finditer(text)]
    assert hits == []
