"""Where heads look from END: attention to the prompt's tokens of the behaviour and the
alternative.

For indirect-object identification the behaviour is the indirect object's name and the
alternative the subject's, both written in the prompt: a name mover (Wang et al. 2022) attends
from END to the IO and copies it; an S-inhibition head reads the repeated subject. For answer
sycophancy the suggested answer is in the prompt, and a head that attends to it is one a
reviewer would want to see. A continuation whose first token is absent from the prompt gives
no row (its share is undefined, not zero).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.data.pairs import PromptPair, pair_targets
from spt_interp.model import HookedModel

Head = tuple[int, int]


def target_positions(pair: PromptPair, targets: tuple[tuple[int, ...], tuple[int, ...]]) -> dict:
    """Return {"behaviour": [positions], "alternative": [positions]} in X_r (before END) where
    the prompt holds a first token of that side's continuations."""
    ids = pair.prompt_ids[:-1]
    return {
        side: [position for position, token in enumerate(ids) if token in tokens]
        for side, tokens in zip(("behaviour", "alternative"), targets, strict=True)
    }


@torch.no_grad()
def end_patterns(hooked: HookedModel, pair: PromptPair) -> Float[Tensor, "layer head key"]:
    """Return every head's attention from X_r's last token over its positions (the HF model's
    eager attention weights)."""
    model = hooked.plain_model
    device = next(model.parameters()).device
    ids = torch.tensor([pair.prompt_ids], device=device)
    outputs = model(input_ids=ids, output_attentions=True)
    return torch.stack([layer[0, :, -1, :].float().cpu() for layer in outputs.attentions])


def end_attention(
    hooked: HookedModel, pairs: Sequence[PromptPair], heads: Sequence[Head]
) -> pd.DataFrame:
    """Return per head the mean attention from END to the behaviour's and the alternative's
    prompt tokens (summed over each side's positions), over the pairs that hold them.

    Columns: layer, head, behaviour, alternative, n_behaviour, n_alternative."""
    targets = pair_targets(list(pairs), hooked.tokenizer)
    sums = {head: {"behaviour": [], "alternative": []} for head in heads}
    for pair, pair_tokens in zip(pairs, targets, strict=True):
        positions = target_positions(pair, pair_tokens)
        patterns = end_patterns(hooked, pair)
        for layer, head in heads:
            for side, where in positions.items():
                if where:
                    sums[(layer, head)][side].append(float(patterns[layer, head, where].sum()))
    rows = []
    for (layer, head), sides in sums.items():
        row = {"layer": layer, "head": head}
        for side, values in sides.items():
            row[side] = sum(values) / len(values) if values else float("nan")
            row[f"n_{side}"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows)
