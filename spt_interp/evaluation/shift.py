"""The KL shift of a tuned model from its base, on neutral text (the paper's measure).

KL(base || tuned) of the next-token distributions, averaged over every position of every
passage, each passage cut to its first ``max_tokens`` tokens (the paper: 1,000 OpenWebText
passages of 128 tokens). Neutral text is prose that no mode trains on; the in-format shift on
chat dialogues (``run.kl_shift`` over ``general_texts``) measures how far the answer format
moved and is reported under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from spt_interp.common.fields import jsonl_rows
from spt_interp.data.pairs import left_pad, left_padded_positions, pad_token_id
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import Metric, kl_divergence, mean
from spt_interp.model.dispatch import model_input_device

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel

NEUTRAL_TOKENS = 128


@dataclass(frozen=True)
class NeutralText:
    """Passages for the KL shift and where they came from."""

    path: str
    passages: list[str]

    def describe(self, max_tokens: int = NEUTRAL_TOKENS) -> str:
        return (
            f"neutral text: {len(self.passages)} passages of {self.path}, "
            f"first {max_tokens} tokens each"
        )


def load_neutral_text(path: str | Path, limit: int | None = None) -> NeutralText:
    """Return the "text" of each JSONL line (the first ``limit``); raise naming file:line."""
    source = Path(path)
    passages = []
    for line_no, data in jsonl_rows(source, "neutral text file"):
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise SptInterpError(f"{source}:{line_no}: needs a non-empty string field 'text'")
        passages.append(text)
        if limit is not None and len(passages) >= limit:
            break
    if not passages:
        raise SptInterpError(f"{source} holds no passages")
    return NeutralText(str(source), passages)


def passage_tokens(tokenizer: Any, passages: list[str], max_tokens: int) -> list[list[int]]:
    """Return each passage's first ``max_tokens`` token ids (with the tokenizer's own BOS)."""
    encoded = [list(tokenizer(p)["input_ids"])[:max_tokens] for p in passages]
    short = sum(len(ids) < 2 for ids in encoded)
    if short:
        raise SptInterpError(f"{short} passage(s) tokenize to fewer than 2 tokens")
    return encoded


def neutral_kl(
    hooked: HookedModel,
    reference: HookedModel,
    passages: list[str],
    *,
    max_tokens: int = NEUTRAL_TOKENS,
    batch_size: int = 8,
    progress: bool = False,
) -> Metric:
    """Return the mean of ``passage_kls``: the mean over passages of each passage's mean
    KL(reference || hooked) over its positions, with a t interval over the passages (its count
    is the number of passages).

    Positions within a passage are not independent, so the interval is taken over passages, the
    units sampled; with every passage cut to ``max_tokens`` the value equals the mean over all
    positions. Runs the plain HF models (no hooks), left-padded with positions counted from
    each passage's first token, so padding changes nothing.
    """
    return mean(
        passage_kls(
            hooked,
            reference,
            passages,
            max_tokens=max_tokens,
            batch_size=batch_size,
            progress=progress,
        )
    )


def passage_kls(
    hooked: HookedModel,
    reference: HookedModel,
    passages: list[str],
    *,
    max_tokens: int = NEUTRAL_TOKENS,
    batch_size: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """Return each passage's mean KL(reference || hooked) over its positions, in order."""
    if hooked.config.vocab_size != reference.config.vocab_size:
        raise SptInterpError(
            f"the reference has vocabulary {reference.config.vocab_size}, the model "
            f"{hooked.config.vocab_size}: KL needs the same tokenizer"
        )
    encoded = passage_tokens(hooked.tokenizer, passages, max_tokens)
    pad = pad_token_id(hooked.tokenizer)
    values = []
    starts = range(0, len(encoded), batch_size)
    for start in tqdm(
        starts, desc="KL shift", disable=not progress or len(starts) < 2, leave=False
    ):
        tokens, mask = left_pad(encoded[start : start + batch_size], pad)
        positions = left_padded_positions(mask)
        with torch.no_grad():
            tuned = plain_logits(hooked.plain_model, tokens, mask, positions)
            base = plain_logits(reference.plain_model, tokens, mask, positions)
        per_position = kl_divergence(base, tuned)  # [batch * pos], padding included
        per_position = per_position.view(mask.shape) * mask
        values.append(per_position.sum(-1) / mask.sum(-1))
    return torch.cat(values)


def plain_logits(model: torch.nn.Module, tokens, mask, positions) -> torch.Tensor:
    """Return every position's logits of a plain HF model, on the CPU in float32."""
    device = model_input_device(model)
    output = model(
        tokens.to(device), attention_mask=mask.to(device), position_ids=positions.to(device)
    )
    return output.logits.float().cpu()
