"""The general-ability suite: multiple choice scored by log-likelihood, as lm-evaluation-harness.

For each choice, the summed log-probability of its continuation tokens given its context.
acc: the choice with the highest sum is the label; acc_norm: the highest sum per character of
the continuation. Tokenization follows the harness: the continuation's tokens are those of
context + continuation past the context's own tokens, so a word split across the seam is
scored as the model would read it. Choices with the same context tokens read the context
once, on its key/value cache; edits to the model that act at every position (tuned weights,
steering, ablation at every position) score the same either way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from spt_interp.common.fields import jsonl_rows
from spt_interp.data.pairs import left_pad, left_padded_positions, pad_token_id
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import Z_95, Metric, proportion
from spt_interp.model import hf_internals as hf
from spt_interp.model.dispatch import model_input_device
from spt_interp.model.generate import last_position_logits

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel


@dataclass(frozen=True)
class SuiteItem:
    """One multiple-choice item: (context, continuation) per choice and the correct index."""

    task: str
    item_id: str
    requests: tuple[tuple[str, str], ...]
    label: int
    line_no: int


@dataclass(frozen=True)
class TaskScore:
    """One task's acc and acc_norm over its items."""

    task: str
    acc: Metric
    acc_norm: Metric

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.acc.count, "acc": self.acc.as_dict(), "acc_norm": self.acc_norm.as_dict()}


def _item(data: Any, path: Path, line_no: int) -> SuiteItem:
    where = f"{path}:{line_no}"
    if not isinstance(data, dict):
        raise SptInterpError(f"{where}: an item must be a JSON object")
    task, requests, label = data.get("task"), data.get("requests"), data.get("label")
    if not isinstance(task, str) or not task:
        raise SptInterpError(f"{where}: missing task name")
    if not isinstance(requests, list) or len(requests) < 2:
        raise SptInterpError(f"{where}: requests must be a list of at least 2 choices")
    pairs = []
    for i, request in enumerate(requests):
        if not isinstance(request, dict) or not all(
            isinstance(request.get(k), str) for k in ("context", "continuation")
        ):
            raise SptInterpError(f"{where}: requests[{i}] needs string context and continuation")
        pairs.append((request["context"], request["continuation"]))
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(pairs):
        raise SptInterpError(f"{where}: label must be a choice index 0..{len(pairs) - 1}")
    return SuiteItem(task, str(data.get("id", line_no)), tuple(pairs), label, line_no)


def load_suite(path: str | Path, limit_per_task: int | None = None) -> list[SuiteItem]:
    """Return the items of a general_suite.jsonl (the first ``limit_per_task`` of each task)."""
    source = Path(path)
    items, per_task = [], defaultdict(int)
    for line_no, data in jsonl_rows(source, "suite file"):
        item = _item(data, source, line_no)
        if limit_per_task is None or per_task[item.task] < limit_per_task:
            per_task[item.task] += 1
            items.append(item)
    if not items:
        raise SptInterpError(f"{source} holds no suite items")
    return items


def encode_request(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Return (context ids, continuation ids) as lm-evaluation-harness splits them."""
    # Trailing context spaces belong to the continuation, as in the harness.
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = list(tokenizer(context + continuation)["input_ids"])
    context_ids = list(tokenizer(context)["input_ids"])
    return whole[: len(context_ids)], whole[len(context_ids) :]


def encode_suite(
    tokenizer: Any, items: list[SuiteItem], path: str | Path = "suite"
) -> list[list[tuple[list[int], list[int]]]]:
    """Return every item's encoded requests; raise naming the line of a choice with no tokens."""
    encoded = []
    for item in items:
        rows = []
        for index, (context, continuation) in enumerate(item.requests):
            context_ids, continuation_ids = encode_request(tokenizer, context, continuation)
            if not continuation_ids:
                raise SptInterpError(
                    f"{path}:{item.line_no}: {item.task} item {item.item_id} choice {index} "
                    f"({continuation!r}) tokenizes to no tokens after its context"
                )
            if not context_ids:
                # Nothing to condition the first continuation token on.
                raise SptInterpError(
                    f"{path}:{item.line_no}: {item.task} item {item.item_id} choice {index} "
                    "has an empty context"
                )
            rows.append((context_ids, continuation_ids))
        encoded.append(rows)
    return encoded


Request = tuple[list[int], list[int]]


def continuation_log_likelihoods(
    model: torch.nn.Module,
    requests: list[Request],
    pad_id: int,
    *,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "general suite",
    share_contexts: bool = True,
) -> list[float]:
    """Return each request's summed log-probability of its continuation given its context.

    With ``share_contexts``, requests whose context tokens are the same (the choices of most
    multiple-choice items) read that context once and score their continuations on its
    key/value cache, one row per continuation: on the general suite the model then reads about
    40% of the tokens. Each score is the same sum either way, up to float rounding. Requests
    with a context of their own are batched, left-padded, as without it.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (context, _) in enumerate(requests):
        groups.setdefault(tuple(context), []).append(index)
    shared = [indices for indices in groups.values() if share_contexts and len(indices) > 1]
    in_shared = {index for indices in shared for index in indices}
    # Longest first, so a batch's rows are alike in length and padding stays small.
    shared.sort(key=lambda indices: -len(requests[indices[0]][0]))
    alone = sorted(
        (index for index in range(len(requests)) if index not in in_shared),
        key=lambda i: -sum(map(len, requests[i])),
    )
    # A batch of shared contexts holds at most batch_size continuations (one group at least).
    shared_batches: list[list[list[int]]] = []
    for indices in shared:
        if not shared_batches or sum(map(len, shared_batches[-1])) + len(indices) > batch_size:
            shared_batches.append([])
        shared_batches[-1].append(indices)
    batches = [alone[start : start + batch_size] for start in range(0, len(alone), batch_size)]
    totals = [0.0] * len(requests)
    steps = len(shared_batches) + len(batches)
    with tqdm(total=steps, desc=desc, disable=not progress or steps < 2, leave=False) as bar:
        for batch in shared_batches:
            scores = _shared_context_scores(
                model, [[requests[i] for i in indices] for indices in batch], pad_id
            )
            for index, score in zip(sum(batch, []), sum(scores, []), strict=True):
                totals[index] = score
            bar.update()
        for chunk in batches:
            scores = _padded_batch_scores(model, [requests[i] for i in chunk], pad_id)
            for index, score in zip(chunk, scores, strict=True):
                totals[index] = score
            bar.update()
    return totals


def _padded_batch_scores(
    model: torch.nn.Module, requests: list[Request], pad_id: int
) -> list[float]:
    """Score requests as one left-padded batch of whole sequences."""
    # The model reads context + continuation without its last token; the last
    # len(continuation) positions predict the continuation.
    inputs = [(context + continuation)[:-1] for context, continuation in requests]
    keep = max(len(continuation) for _, continuation in requests)
    tokens, mask = left_pad(inputs, pad_id)
    device = model_input_device(model)
    with torch.no_grad():
        logits = last_position_logits(model, tokens.to(device), mask.to(device), keep)
    log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()
    return [
        _summed(log_probs[row, -len(continuation) :], continuation)
        for row, (_, continuation) in enumerate(requests)
    ]


def _shared_context_scores(
    model: torch.nn.Module, groups: list[list[Request]], pad_id: int
) -> list[list[float]]:
    """Score groups of requests, each group sharing one context: the contexts once, as one
    left-padded batch (each one's last position predicts its continuations' first tokens),
    then every continuation of more than one token, but its last token, on its context's
    cache row, right-padded: under the causal mask no real token sees a pad after it."""
    device = model_input_device(model)
    context_tokens, context_mask = left_pad([group[0][0] for group in groups], pad_id)
    with torch.no_grad():
        output = model(
            context_tokens.to(device),
            attention_mask=context_mask.to(device),
            position_ids=left_padded_positions(context_mask).to(device),
            use_cache=True,
            logits_to_keep=1,
        )
    first = torch.log_softmax(output.logits[:, -1].float(), dim=-1).cpu()
    scores = [[float(first[g, c[0]]) for _, c in group] for g, group in enumerate(groups)]
    longer = [(g, k) for g, group in enumerate(groups) for k, (_, c) in enumerate(group)
              if len(c) > 1]  # fmt: skip
    if not longer:  # every continuation is one token
        return scores
    continuations = [groups[g][k][1] for g, k in longer]
    width = max(len(c) for c in continuations) - 1
    rows = torch.tensor([g for g, _ in longer])
    tokens = torch.tensor([c[:-1] + [pad_id] * (width + 1 - len(c)) for c in continuations])
    # The context's mask (left padding) then the continuation's columns; positions run on
    # from each context's last real token.
    mask = torch.cat([context_mask[rows], torch.ones(len(longer), width, dtype=torch.long)], 1)
    positions = context_mask[rows].sum(-1, keepdim=True) + torch.arange(width)
    # Row indices stay on the CPU: a dispatched model's cache layers sit on several devices.
    cache = hf.cache_rows(hf.output_cache(model, output), rows)
    with torch.no_grad():
        logits = model(
            tokens.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=True,
            **hf.cache_arguments(model, cache),
        ).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()
    for row, ((g, k), continuation) in enumerate(zip(longer, continuations, strict=True)):
        scores[g][k] += _summed(log_probs[row, : len(continuation) - 1], continuation[1:])
    return scores


def _summed(log_probs: Float[Tensor, "n vocab"], tokens: list[int]) -> float:
    """Return the summed log-probability of ``tokens``, the i-th read from row i."""
    return float(log_probs[torch.arange(len(tokens)), torch.tensor(tokens, dtype=torch.long)].sum())


def macro_average(scores: list[Metric]) -> Metric:
    """Return the mean of task proportions with a normal 95% interval from their variances."""
    if not scores:
        return Metric(math.nan, 0, math.nan, math.nan)
    value = sum(s.value for s in scores) / len(scores)
    variance = sum(s.value * (1 - s.value) / s.count for s in scores) / len(scores) ** 2
    half = Z_95 * math.sqrt(variance)
    return Metric(value, sum(s.count for s in scores), value - half, value + half)


def score_items(
    items: list[SuiteItem], log_likelihoods: list[list[float]]
) -> tuple[dict[str, TaskScore], dict[str, list[bool]]]:
    """Return per-task (acc, acc_norm) scores and the per-item acc flags of each task."""
    correct: dict[str, list[bool]] = defaultdict(list)
    correct_norm: dict[str, list[bool]] = defaultdict(list)
    for item, lls in zip(items, log_likelihoods, strict=True):
        normed = [ll / max(1, len(c)) for ll, (_, c) in zip(lls, item.requests, strict=True)]
        correct[item.task].append(max(range(len(lls)), key=lls.__getitem__) == item.label)
        correct_norm[item.task].append(
            max(range(len(normed)), key=normed.__getitem__) == item.label
        )
    tasks = {
        task: TaskScore(task, proportion(correct[task]), proportion(correct_norm[task]))
        for task in correct
    }
    return tasks, dict(correct)


def item_log_likelihoods(
    hooked: HookedModel,
    items: list[SuiteItem],
    *,
    batch_size: int = 16,
    progress: bool = True,
    path: str | Path = "suite",
    share_contexts: bool = True,
) -> list[list[float]]:
    """Return every item's continuation log-likelihoods, one per choice, in item order
    (``share_contexts``: as ``continuation_log_likelihoods``)."""
    encoded = encode_suite(hooked.tokenizer, items, path)
    flat = [request for rows in encoded for request in rows]
    totals = continuation_log_likelihoods(
        hooked.plain_model,
        flat,
        pad_token_id(hooked.tokenizer),
        batch_size=batch_size,
        progress=progress,
        share_contexts=share_contexts,
    )
    per_item, start = [], 0
    for rows in encoded:
        per_item.append(totals[start : start + len(rows)])
        start += len(rows)
    return per_item


def item_correct(items: list[SuiteItem], log_likelihoods: list[list[float]]) -> list[bool]:
    """Return each item's acc (its best-scoring choice is the label), in item order."""
    return [
        max(range(len(lls)), key=lls.__getitem__) == item.label
        for item, lls in zip(items, log_likelihoods, strict=True)
    ]


def run_suite(
    hooked: HookedModel,
    items: list[SuiteItem],
    *,
    batch_size: int = 16,
    progress: bool = True,
    path: str | Path = "suite",
) -> dict[str, Any]:
    """Return the suite's report: per task n, acc, acc_norm (95% intervals), macro averages."""
    per_item = item_log_likelihoods(
        hooked, items, batch_size=batch_size, progress=progress, path=path
    )
    return suite_report(items, per_item)


def suite_report(items: list[SuiteItem], per_item: list[list[float]]) -> dict[str, Any]:
    """Return ``run_suite``'s report from every item's continuation log-likelihoods."""
    tasks, _ = score_items(items, per_item)
    return {
        "tasks": {task: score.as_dict() for task, score in tasks.items()},
        "macro_acc": macro_average([s.acc for s in tasks.values()]).as_dict(),
        "macro_acc_norm": macro_average([s.acc_norm for s in tasks.values()]).as_dict(),
        "scoring": "log-likelihood of each choice's continuation (lm-evaluation-harness style); "
        "acc_norm divides by the continuation's length in characters; 0-shot",
    }
