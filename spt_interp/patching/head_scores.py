"""Build the HeadScores a locate run returns from the patched metric values and baselines."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from spt_interp.common.head_scores import HeadScores, apology_effect, with_ranks
from spt_interp.data import PromptPair
from spt_interp.errors import SptInterpError
from spt_interp.patching.scoring import PatchMetric


def build_scores(
    heads: list[tuple[int, int]],
    values: Float[Tensor, "variant prompt"],
    r_vals: Tensor,
    c_vals: Tensor,
    pairs: list[PromptPair],
    metric: PatchMetric,
    *,
    method: str,
    position: str,
    direction: str,
    per_prompt: bool,
    n_layers: int,
    n_heads: int,
    settings: dict[str, Any],
) -> HeadScores:
    """Return the scores of ``heads``: each one's mean over prompts of ``values`` (the patched
    metric minus the unpatched one, per variant and prompt), signed and ranked by the rule of
    ``spt_interp.common.head_scores``, with the unpatched baselines ``r_vals`` and ``c_vals``."""
    score = values.double().mean(dim=1).numpy()
    table = pd.DataFrame(
        {
            "layer": [layer for layer, _ in heads],
            "head": [head for _, head in heads],
            "score": score,
            "apology_effect": apology_effect(score, direction),
        }
    )
    table = with_ranks(table)  # rank 1 = drives the apology most
    prompt_table = None
    if per_prompt:
        n = values.shape[1]
        prompt_table = pd.DataFrame(
            {
                "layer": np.repeat(table["layer"].to_numpy(), n),
                "head": np.repeat(table["head"].to_numpy(), n),
                "prompt": np.tile([p.index for p in pairs], len(heads)),
                "record_id": np.tile([p.record_id for p in pairs], len(heads)),
                "value": values.double().flatten().numpy(),
            }
        )
    baseline = {"X_r": summary(r_vals), "X_c": summary(c_vals)}
    baseline["gap"] = baseline["X_r"]["mean"] - baseline["X_c"]["mean"]
    if any(math.isnan(v) for v in (baseline["X_r"]["mean"], baseline["X_c"]["mean"])):
        raise SptInterpError(f"metric {metric.name!r} gave NaN on the unpatched prompts")
    return HeadScores(
        table=table,
        per_prompt=prompt_table,
        baseline=baseline,
        method=method,
        position=position,
        direction=direction,
        metric=metric.name,
        metric_description=metric.description,
        n_layers=n_layers,
        n_heads=n_heads,
        n_prompts=len(pairs),
        settings=settings,
    )


def summary(values: Tensor) -> dict[str, Any]:
    data = values.tolist()
    mean = sum(data) / len(data)
    return {"mean": mean, "values": data}
