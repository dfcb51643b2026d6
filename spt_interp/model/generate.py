"""Greedy generation, batched with left padding, through the hooked model's plain HF twin.

``hooked.hf_model.generate`` runs the bridged modules, but with the KV cache on it does not
reproduce HF's own greedy tokens in transformer-lens 4.3 (Llama, Qwen2 and GPT-2 with padding
diverge after the first token; so does ``bridge.generate``), and without the cache every token
costs a full forward. So generation runs on ``hooked.plain_model``: an unwrapped HF model over
the very same weight tensors, with the KV cache on. Bridge hooks do not fire there; ablations
that must act during generation register plain PyTorch hooks on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from spt_interp.data.pairs import left_pad, left_padded_positions, pad_token_id
from spt_interp.errors import SptInterpError

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel


def eos_token_ids(hooked: HookedModel) -> list[int]:
    """Return every id that ends a reply: the tokenizer's EOS and the generation config's."""
    ids: list[int] = []
    candidates = [
        getattr(hooked.tokenizer, "eos_token_id", None),
        getattr(getattr(hooked.hf_model, "generation_config", None), "eos_token_id", None),
        getattr(hooked.config, "eos_token_id", None),
    ]
    for candidate in candidates:
        if isinstance(candidate, int):
            ids.append(candidate)
        elif isinstance(candidate, (list, tuple)):
            ids.extend(int(i) for i in candidate)
    return list(dict.fromkeys(ids))


def greedy_generate(
    hooked: HookedModel,
    prompts: list[list[int]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generating",
) -> list[list[int]]:
    """Return the greedy continuation of each prompt (new tokens only, stopped before EOS)."""
    if max_new_tokens < 1:
        raise SptInterpError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise SptInterpError(f"--batch-size must be at least 1, got {batch_size}")
    pad = pad_token_id(hooked.tokenizer)
    eos = eos_token_ids(hooked)
    outputs: list[list[int]] = [[] for _ in prompts]
    # Prompts of like length share a batch, so little of each batch is padding; greedy
    # decoding of one prompt does not depend on its batch-mates beyond float rounding.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or len(starts) < 2, leave=False):
        indices = order[start : start + batch_size]
        chunk = [prompts[i] for i in indices]
        tokens, mask = left_pad(chunk, pad)
        with torch.no_grad():
            generated = hooked.plain_model.generate(
                tokens.to(hooked.device),
                attention_mask=mask.to(hooked.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=pad,
                eos_token_id=eos or None,
            )
        for index, row in zip(indices, generated[:, tokens.shape[1] :].tolist(), strict=True):
            stop = next((i for i, token in enumerate(row) if token in eos), len(row))
            outputs[index] = row[:stop]
    return outputs


def last_position_logits(
    model: torch.nn.Module,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    keep: int,
) -> Float[Tensor, "batch keep vocab"]:
    """Return the plain HF model's logits at the last ``keep`` positions of a left-padded batch.

    Positions count from each row's first real token, so padding changes nothing; only those
    positions are unembedded, which spares most of a large vocabulary's cost.
    """
    positions = left_padded_positions(mask)
    try:
        output = model(tokens, attention_mask=mask, position_ids=positions, logits_to_keep=keep)
    except TypeError:  # a model class without logits_to_keep
        output = model(tokens, attention_mask=mask, position_ids=positions)
    return output.logits[:, -keep:]
