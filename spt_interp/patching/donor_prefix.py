"""The donor run on the base run's keys and values of the tokens both prompts start with.

X_r and X_c are one dialogue with a different challenge sentence, so they share everything
before it (system prompt, question, first answer). The key and value of a token depend only on
the real tokens up to it and its position (counted over real tokens), so the donor's keys and
values of that common start are the base's, already in the base's prefix cache. The donor run
then only has to compute what follows: its own tokens after the common start, attending to the
base's cached columns of it.

Both prompts are left-padded to one width, and X_r and X_c usually differ in length, so the
common start ends at a different column in each row. The base's cache is cut at one column for
the whole batch (the earliest end of a common start, ``cached_columns``); each row's donor
tokens after what that cut holds of its common start are left-padded into a short continuation,
which therefore has padding between the cached columns and its tokens. Attention masks take
that as they take left padding; a sliding window, measured in columns, would not, so a model
with a window narrower than the run falls back to the full donor pass unless the pair is
token-aligned (the continuation then keeps the donor's own columns: chunked prefill).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from spt_interp.model import hf_internals as hf
from spt_interp.model.loading import position_ids


@dataclass
class DonorContinuation:
    """What the donor runs after the base's first ``cached_columns`` cached columns."""

    cached_columns: int
    tokens: Int[Tensor, "batch width"]
    mask: Int[Tensor, "batch cached_plus_width"]  # cached columns' mask, then the tokens'
    positions: Int[Tensor, "batch width"]


def common_start(
    base_t: Int[Tensor, "batch pos"],
    base_m: Int[Tensor, "batch pos"],
    donor_t: Int[Tensor, "batch pos"],
    donor_m: Int[Tensor, "batch pos"],
) -> Int[Tensor, " batch"]:
    """Return how many real tokens each row's prompts start with in common, leaving each at
    least its last token to compute (END is never taken from the cache)."""
    width = base_t.shape[1]
    base_len, donor_len = base_m.sum(1), donor_m.sum(1)
    columns = torch.arange(width, device=base_t.device)
    # Real token i of a row sits at column pad + i; read both sides' token i side by side.
    index = (columns[None] + (width - base_len)[:, None]).clamp(max=width - 1)
    donor_index = (columns[None] + (width - donor_len)[:, None]).clamp(max=width - 1)
    same = base_t.gather(1, index) == donor_t.gather(1, donor_index)
    limit = torch.minimum(base_len, donor_len) - 1
    same &= columns[None] < limit[:, None]  # so every row has a first False, at most the limit
    return (~same).int().argmax(1)


def donor_continuation(
    base_t: Int[Tensor, "batch pos"],
    base_m: Int[Tensor, "batch pos"],
    donor_t: Int[Tensor, "batch pos"],
    donor_m: Int[Tensor, "batch pos"],
) -> DonorContinuation | None:
    """Return the donor's run after the base's cached common start, or None when nothing is
    saved (no row's common start reaches a column every row shares)."""
    width = base_t.shape[1]
    base_pad = width - base_m.sum(1)
    donor_len = donor_m.sum(1)
    if not (_left_padded(base_m) and _left_padded(donor_m)):
        return None  # the layout below reads real tokens as one run at the right
    # The cut: the earliest column at which some row's common start ends.
    cached = int((base_pad + common_start(base_t, base_m, donor_t, donor_m)).min())
    if cached <= 0:
        return None
    # Row r reuses its real tokens at columns [base_pad, cached) of the base: the first
    # ``shared`` of its donor tokens (none where the cut falls inside its padding).
    shared = (cached - base_pad).clamp(min=0)
    tail = donor_len - shared
    new_width = int(tail.max())
    if new_width >= width:
        return None
    columns = torch.arange(new_width, device=donor_t.device)
    valid = columns[None] >= (new_width - tail)[:, None]
    # Continuation column j of row r holds donor real token shared + (j - (new_width - tail)).
    source = (width - donor_len + shared)[:, None] + columns[None] - (new_width - tail)[:, None]
    source = source.clamp(0, width - 1)
    tokens = torch.where(valid, donor_t.gather(1, source), torch.zeros_like(source))
    positions = torch.where(valid, position_ids(donor_m).gather(1, source), 1)
    mask = torch.cat([base_m[:, :cached], valid.long()], dim=1)
    return DonorContinuation(cached, tokens, mask, positions)


def fits_windows(
    config: Any,
    plan: DonorContinuation,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
) -> bool:
    """Return whether the donor's continuation sees what its full run sees under every
    sliding window. Windows are counted in columns: where the continuation lays the donor's
    tokens in their own columns it is chunked prefill (exact); where its padding moves them,
    a window must span every column of both runs."""
    in_place = plan.cached_columns + plan.tokens.shape[1] == tokens.shape[1] and torch.equal(
        plan.mask, mask
    )
    span = max(plan.mask.shape[1], tokens.shape[1])
    return in_place or all(
        window is None or window >= span for window in hf.sliding_windows(config)
    )


def _left_padded(mask: Int[Tensor, "batch pos"]) -> bool:
    """Return whether every row is padding, then its real tokens up to the last column."""
    columns = torch.arange(mask.shape[1], device=mask.device)
    return bool((mask.bool() == (columns[None] >= (mask.shape[1] - mask.sum(1))[:, None])).all())
