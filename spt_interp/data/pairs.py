"""Prompt pairs X_r (challenged) / X_c (counterfactual), left-padded batches, END logits.

Real BPE tokenizers split "don't" into two tokens and "do" into one, so X_r and X_c usually
differ in length: pairs are aligned at their END (the last prompt token, where the reply's
first token is predicted). ``token_aligned`` pairs (same length, differing only inside the
challenge sentence) also allow all-position patching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord
from spt_interp.data.render import (
    append_reply_start,
    dialogue_messages,
    encode_prompt,
    first_answer_text,
    render_messages,
)
from spt_interp.errors import SptInterpError


@dataclass
class PromptPair:
    """One behaviour's two prompts, both ending where the continuation starts.

    X_r (``prompt``) is where the behaviour shows, X_c (``counterfactual``) the minimally
    different prompt where it does not. ``behaviour`` and ``alternative`` are continuations
    whose first tokens after X_r the decision metric compares at END (log p(behaviour) -
    log p(alternative); ``pair_targets`` reads them); ``where`` names the pair in messages.
    """

    index: int
    record_id: str
    prompt_text: str
    counterfactual_text: str
    prompt_ids: list[int]
    counterfactual_ids: list[int]
    token_aligned: bool
    behaviour: tuple[str, ...] = ()
    alternative: tuple[str, ...] = ()
    where: str = ""

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def counterfactual_len(self) -> int:
        return len(self.counterfactual_ids)


@dataclass(frozen=True)
class PairSpec:
    """One pair before tokenizing: both prompts as the text the model reads, the continuations
    whose first tokens the decision compares, and where the pair came from (for messages).

    ``differing``: the sentences X_r and X_c differ by (their last occurrences), when known;
    equal-length prompts are token-aligned only if every differing token lies inside them.
    """

    prompt: str
    counterfactual: str
    behaviour: tuple[str, ...]
    alternative: tuple[str, ...]
    label: str
    where: str
    differing: tuple[str, str] | None = None


@dataclass
class PairBatch:
    """Left-padded X_r / X_c tensors of one common width; ``end`` is the last position."""

    indices: list[int]
    prompt_tokens: Int[Tensor, "batch pos"]
    prompt_mask: Int[Tensor, "batch pos"]
    counterfactual_tokens: Int[Tensor, "batch pos"]
    counterfactual_mask: Int[Tensor, "batch pos"]

    @property
    def end(self) -> int:
        """Return the END index: after left padding every prompt's last token is at pos - 1."""
        return self.prompt_tokens.shape[1] - 1


def render_prompt(
    tokenizer: Any, record: DialogueRecord, first_answer: str, followup: str, protocol: Protocol
) -> str:
    """Return the prompt text: question, first answer, follow-up, generation prompt, prefix."""
    text = render_messages(
        tokenizer, dialogue_messages(record, first_answer, followup), add_generation_prompt=True
    )
    return append_reply_start(text, protocol.reply_prefix or "")


def _challenge_span(text: str, sentence: str) -> tuple[int, int]:
    start = text.rfind(sentence)
    return (start, start + len(sentence)) if start >= 0 else (0, len(text))


def _aligned(
    tokenizer: Any,
    text_r: str,
    text_c: str,
    ids_r: list[int],
    ids_c: list[int],
    differing: tuple[str, str] | None,
) -> bool:
    if len(ids_r) != len(ids_c):
        return False
    changed = [i for i, (a, b) in enumerate(zip(ids_r, ids_c, strict=True)) if a != b]
    if not changed or differing is None:
        return True
    try:
        offsets_r = _offsets(tokenizer, text_r, len(ids_r))
        offsets_c = _offsets(tokenizer, text_c, len(ids_c))
    except (NotImplementedError, ValueError, KeyError):
        # Slow tokenizers have no offsets: equal length is the best evidence available.
        return True
    span_r = _challenge_span(text_r, differing[0])
    span_c = _challenge_span(text_c, differing[1])
    return all(
        span_r[0] <= offsets_r[i][0]
        and offsets_r[i][1] <= span_r[1]
        and span_c[0] <= offsets_c[i][0]
        and offsets_c[i][1] <= span_c[1]
        for i in changed
    )


def _offsets(tokenizer: Any, text: str, expected: int) -> list[tuple[int, int]]:
    from spt_interp.data.render import has_chat_template

    encoded = tokenizer(
        text, add_special_tokens=not has_chat_template(tokenizer), return_offsets_mapping=True
    )
    offsets = [tuple(o) for o in encoded["offset_mapping"]]
    if len(offsets) != expected:
        raise ValueError("offsets do not match the tokens")
    return offsets


def make_pairs(specs: list[PairSpec], tokenizer: Any) -> list[PromptPair]:
    """Return the tokenized pairs of ``specs``: the one path every producer of pairs (a pair
    file, the sycophancy dialogues, the built-in behaviours) goes through."""
    pairs = []
    for index, spec in enumerate(specs):
        ids_r = encode_prompt(tokenizer, spec.prompt)
        ids_c = encode_prompt(tokenizer, spec.counterfactual)
        aligned = _aligned(tokenizer, spec.prompt, spec.counterfactual, ids_r, ids_c,
                           spec.differing)  # fmt: skip
        pairs.append(PromptPair(index, spec.label, spec.prompt, spec.counterfactual, ids_r, ids_c,
                                aligned, spec.behaviour, spec.alternative, spec.where))  # fmt: skip
    return pairs


def pair_targets(
    pairs: list[PromptPair], tokenizer: Any
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Return per pair (behaviour first tokens, alternative first tokens), read after X_r.

    A continuation that merges with the prompt's last token or starts with the unknown token,
    and a pair whose two sides share a first token, are refused naming the pair."""
    targets = []
    for pair in pairs:
        where = pair.where or f"pair {pair.index} ({pair.record_id})"
        if not pair.behaviour or not pair.alternative:
            raise SptInterpError(f"{where}: no behaviour or alternative continuation to compare")
        behaviour = first_tokens(tokenizer, pair.prompt_text, pair.behaviour, where)
        alternative = first_tokens(tokenizer, pair.prompt_text, pair.alternative, where)
        shared = sorted(set(behaviour) & set(alternative))
        if shared:
            words = ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in shared)
            raise SptInterpError(
                f"{where}: the behaviour and the alternative share first token(s) {words}; "
                "the decision needs continuations that differ at their first token"
            )
        targets.append((behaviour, alternative))
    return targets


def first_tokens(
    tokenizer: Any, prompt_text: str, continuations: tuple[str, ...], where: str
) -> tuple[int, ...]:
    """Return the distinct first tokens of ``continuations`` after ``prompt_text`` (read in
    context); raise naming ``where`` when one merges with the prompt or is the unknown token."""
    prompt_ids = encode_prompt(tokenizer, prompt_text)
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = []
    for text in continuations:
        full = encode_prompt(tokenizer, append_reply_start(prompt_text, text))
        if full[: len(prompt_ids)] != prompt_ids or len(full) <= len(prompt_ids):
            raise SptInterpError(
                f"{where}: continuation {text!r} is not a token of its own after the prompt "
                "(it merges with the prompt's last token); move the space or choose another"
            )
        if unk is not None and full[len(prompt_ids)] == unk:
            raise SptInterpError(
                f"{where}: continuation {text!r} starts with the unknown token: the tokenizer "
                "cannot spell it"
            )
        ids.append(full[len(prompt_ids)])
    return tuple(dict.fromkeys(ids))


def sycophancy_specs(
    records: list[DialogueRecord],
    tokenizer: Any,
    protocol: Protocol,
    first_answers: list[str] | None = None,
) -> list[PairSpec]:
    """Return one pair per dialogue record: the first answer challenged (X_r) against the
    protocol's counterfactual follow-up (X_c); the behaviour is an apology's opening, the
    alternative standing by.

    ``first_answers`` (the model's own first answers, one per record, continuing any ai
    prefill) replace the records' correct answers as the assistant's first turn.
    """
    if first_answers is not None and len(first_answers) != len(records):
        raise SptInterpError(
            f"first_answers has {len(first_answers)} entries for {len(records)} records"
        )
    specs = []
    for index, record in enumerate(records):
        generated = first_answers[index] if first_answers is not None else None
        answer = first_answer_text(record, generated)
        specs.append(
            PairSpec(
                prompt=render_prompt(tokenizer, record, answer, protocol.challenge, protocol),
                counterfactual=render_prompt(
                    tokenizer, record, answer, protocol.counterfactual, protocol
                ),
                behaviour=tuple(protocol.sycophantic_targets),
                alternative=tuple(protocol.anti_sycophantic_targets),
                label=record.label,
                where=f"record {index} ({record.label})",
                differing=(protocol.challenge, protocol.counterfactual),
            )
        )
    return specs


def build_pairs(
    records: list[DialogueRecord],
    tokenizer: Any,
    protocol: Protocol,
    first_answers: list[str] | None = None,
) -> list[PromptPair]:
    """Return one X_r / X_c pair per dialogue record (``sycophancy_specs``, tokenized)."""
    return make_pairs(sycophancy_specs(records, tokenizer, protocol, first_answers), tokenizer)


def left_pad(
    sequences: list[list[int]], pad_id: int, width: int | None = None
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Return (tokens, attention_mask) with every sequence right-aligned at ``width``."""
    if not sequences:
        raise SptInterpError("cannot pad an empty batch")
    width = width or max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            tokens[row, width - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
            mask[row, width - len(sequence) :] = 1
    return tokens, mask


def left_padded_positions(mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Return each column's position counted from its row's first real token (0 on padding),
    so that a left-padded row is read at the positions it has alone."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def batch_pairs(pairs: list[PromptPair], pad_id: int) -> PairBatch:
    """Return the pairs left-padded to one common width, so END is the last column for all."""
    width = max(max(p.prompt_len, p.counterfactual_len) for p in pairs) if pairs else 0
    challenged, prompt_mask = left_pad([p.prompt_ids for p in pairs], pad_id, width)
    counterfactual, counterfactual_mask = left_pad(
        [p.counterfactual_ids for p in pairs], pad_id, width
    )
    return PairBatch(
        indices=[p.index for p in pairs],
        prompt_tokens=challenged,
        prompt_mask=prompt_mask,
        counterfactual_tokens=counterfactual,
        counterfactual_mask=counterfactual_mask,
    )


def require_token_aligned(pairs: list[PromptPair]) -> None:
    """Return None when every pair is token-aligned; else raise naming the first that is not."""
    for pair in pairs:
        if not pair.token_aligned:
            raise SptInterpError(
                f"record {pair.index} ({pair.record_id}): X_r has {pair.prompt_len} tokens "
                f"and X_c {pair.counterfactual_len}; all-position patching needs token-aligned "
                "pairs"
            )


def pad_token_id(tokenizer: Any) -> int:
    """Return the tokenizer's pad id, else its EOS id (padding is masked either way)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def target_token_ids(tokenizer: Any, prompt_text: str, targets: list[str]) -> list[int]:
    """Return the distinct first tokens of ``targets`` as continuations of ``prompt_text``.

    The first token is read in context (prompt + target, minus the prompt's tokens), so a
    tokenizer that writes "▁Sorry" after "[/INST]" or " sorry" after a reply prefix counts
    the token the model would really emit.
    """
    prompt_ids = encode_prompt(tokenizer, prompt_text)
    ids = []
    for target in targets:
        full = encode_prompt(tokenizer, append_reply_start(prompt_text, target))
        common = 0
        while common < min(len(prompt_ids), len(full)) and prompt_ids[common] == full[common]:
            common += 1
        if common >= len(full):
            raise SptInterpError(f"target {target!r} adds no token to the prompt")
        ids.append(full[common])
    return list(dict.fromkeys(ids))


def decision_token_ids(
    tokenizer: Any, prompt_text: str, protocol: Protocol
) -> tuple[list[int], list[int]]:
    """Return (sycophantic ids, anti-sycophantic ids); raise if the two sets share a token."""
    syc = target_token_ids(tokenizer, prompt_text, protocol.sycophantic_targets)
    anti = target_token_ids(tokenizer, prompt_text, protocol.anti_sycophantic_targets)
    shared = sorted(set(syc) & set(anti))
    if shared:
        words = ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in shared)
        raise SptInterpError(
            f"sycophantic and anti-sycophantic targets share first token(s) {words}; "
            "choose targets that differ at their first token or set a reply_prefix"
        )
    return syc, anti
