"""Per-head patching scores: the table every locate run returns, its ranking and baselines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from spt_interp.data import PromptPair
from spt_interp.errors import SptInterpError
from spt_interp.patching.scoring import PatchMetric


@dataclass
class HeadScores:
    """Per-head patching scores: ``table`` has layer, head, score, apology_effect, rank.

    ``score`` is the mean over prompts of metric(patched) - metric(base) (relative for
    apology-share). ``apology_effect`` is signed so that positive means "this head drives the
    apology": -score when X_c's output is patched into X_r, +score the other way round.
    """

    table: pd.DataFrame
    per_prompt: pd.DataFrame | None
    baseline: dict[str, Any]
    method: str
    position: str
    direction: str
    metric: str
    metric_description: str
    n_layers: int
    n_heads: int
    n_prompts: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def drives_apology(self) -> str:
        if self.direction == "c_into_r":
            return (
                "negative score: patching the head's X_c output into X_r lowers the apology "
                f"{self.metric}, so the head carries the challenge's push toward apologizing"
            )
        return (
            "positive score: patching the head's X_r output into X_c raises the apology "
            f"{self.metric}, so the head carries the challenge's push toward apologizing"
        )

    def matrix(self, column: str = "score") -> np.ndarray:
        """Return [n_layers, n_heads] of ``column`` (NaN where a head was not scored)."""
        grid = np.full((self.n_layers, self.n_heads), np.nan)
        grid[self.table["layer"].to_numpy(), self.table["head"].to_numpy()] = self.table[column]
        return grid

    def top(self, k: int) -> list[tuple[int, int]]:
        """Return the k heads that drive the apology most, strongest first."""
        ranked = self.table.sort_values("rank")
        return [(int(r.layer), int(r.head)) for r in ranked.head(k).itertuples()]

    def ranking(self) -> dict[str, Any]:
        """Return the JSON-ready ranking: heads by apology effect, with the baselines."""
        ranked = self.table.sort_values("rank")
        return {
            "method": self.method,
            "position": self.position,
            "direction": self.direction,
            "metric": self.metric,
            "metric_description": self.metric_description,
            "drives_apology": self.drives_apology,
            "n_prompts": self.n_prompts,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "baseline": self.baseline,
            "settings": self.settings,
            "heads": [
                {
                    "rank": int(r.rank),
                    "layer": int(r.layer),
                    "head": int(r.head),
                    "score": float(r.score),
                    "apology_effect": float(r.apology_effect),
                }
                for r in ranked.itertuples()
            ],
        }


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
    sign = -1.0 if direction == "c_into_r" else 1.0
    score = values.double().mean(dim=1).numpy()
    table = pd.DataFrame(
        {
            "layer": [layer for layer, _ in heads],
            "head": [head for _, head in heads],
            "score": score,
            "apology_effect": sign * score,
        }
    )
    # Rank 1 = drives the apology most; ties broken by (layer, head) for a stable order.
    order = table.sort_values(
        ["apology_effect", "layer", "head"], ascending=[False, True, True]
    ).index
    table["rank"] = 0
    table.loc[order, "rank"] = np.arange(1, len(table) + 1)
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
