"""Head steering: the training-free alternative to pinpoint tuning (ITI-style).

For each head of a mask, the steering vector is the mean over prompt pairs of the difference of
its END output between X_c and X_r (the head's slice of the output projection's input, the
head-output site). Steering adds ``alpha`` times it to that head's output at every position,
through the one intervention site, in every forward pass of a with-block (prefill and each
decoding step alike). Nothing is trained and no weight changes; alpha 0 is the base model.

A steering is saved as one small JSON file: the model's signature (shape and fingerprint), the
heads, their vectors, alpha and where the vectors came from. It is refused on another model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.common.atomic import write_text_atomic
from spt_interp.data import PromptPair, batch_pairs, pad_token_id
from spt_interp.errors import SptInterpError
from spt_interp.mask.head_mask import ModelSignature
from spt_interp.model.interventions import HeadOutputSite, add
from spt_interp.patching.end_position import end_head_outputs

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel

STEERING_FORMAT = "spt-interp/head-steering"
STEERING_VERSION = 1
DIRECTION = "mean over pairs of X_c's END head output minus X_r's"


def steering_vectors(
    model: HookedModel,
    pairs: list[PromptPair],
    heads: list[tuple[int, int]],
    batch_size: int = 8,
) -> Float[Tensor, "k d_head"]:
    """Return each head's mean END output on X_c minus on X_r over ``pairs`` (float32)."""
    if not pairs:
        raise SptInterpError("no prompt pairs to take steering vectors from")
    geometry = model.geometry
    for layer, head in heads:
        geometry.check_head(layer, head)
    # Summed in float64, so the mean does not depend on the batch size beyond rounding.
    total = torch.zeros(len(heads), geometry.d_head, dtype=torch.float64)
    pad = pad_token_id(model.tokenizer)
    for start in range(0, len(pairs), batch_size):
        batch = batch_pairs(pairs[start : start + batch_size], pad)
        sides = [
            end_head_outputs(model, tokens.to(model.device), mask.to(model.device))[0]
            for tokens, mask in (
                (batch.prompt_tokens, batch.prompt_mask),
                (batch.counterfactual_tokens, batch.counterfactual_mask),
            )
        ]
        for index, (layer, head) in enumerate(heads):
            r, c = (z[layer].view(-1, geometry.n_heads, geometry.d_head)[:, head] for z in sides)
            total[index] += (c.double() - r.double()).sum(0).cpu()
    return (total / len(pairs)).float()


@dataclass(frozen=True)
class HeadSteering:
    """Vectors added to heads' outputs, ``alpha`` times, for one model."""

    model: ModelSignature
    heads: tuple[tuple[int, int], ...]
    vectors: Float[Tensor, "k d_head"]
    alpha: float
    source: dict[str, Any]
    # The file it was read from (for messages), not part of what it is.
    origin: str = field(default="", compare=False)

    @classmethod
    def from_pairs(
        cls,
        model: HookedModel,
        pairs: list[PromptPair],
        heads: list[tuple[int, int]],
        alpha: float = 1.0,
        *,
        batch_size: int = 8,
        source: dict[str, Any] | None = None,
    ) -> HeadSteering:
        """Return the steering of ``heads`` by their mean X_c - X_r END outputs over ``pairs``."""
        vectors = steering_vectors(model, pairs, heads, batch_size)
        origin = {"direction": DIRECTION, "pairs": len(pairs), **(source or {})}
        return cls(ModelSignature.of(model), tuple(heads), vectors, float(alpha), origin)

    def with_alpha(self, alpha: float) -> HeadSteering:
        return replace(self, alpha=float(alpha))

    def validate(self, model: HookedModel) -> None:
        """Raise unless ``model`` is the model these vectors were taken on."""
        actual = ModelSignature.of(model)
        if actual != self.model:
            named = f"steering {self.origin}" if self.origin else "the steering"
            raise SptInterpError(
                f"{named} was made for {self.model.describe()}, but the model "
                f"{model.path} is {actual.describe()}"
            )

    @contextmanager
    def applied(self, model: HookedModel) -> Iterator[None]:
        """Run the with-block with ``alpha`` times each vector added to its head's output at
        every position of the plain HF model (``model.plain_model``, where everything
        ``evaluate`` measures runs: generation, the END read-out, both KL shifts, the suite)."""
        self.validate(model)
        by_layer: dict[int, list[int]] = {}
        for index, (layer, _) in enumerate(self.heads):
            by_layer.setdefault(layer, []).append(index)
        edits = {
            layer: add(
                [self.heads[i][1] for i in indices],
                self.alpha * self.vectors[indices],
                position="all",
            )
            for layer, indices in by_layer.items()
        }
        with HeadOutputSite(model.plain_model, model.geometry).edited(edits):
            yield

    def summary(self) -> dict[str, Any]:
        """Return what a report says of the steering it ran under (no vectors)."""
        return {
            "file": self.origin or None,
            "alpha": self.alpha,
            "heads": [f"L{layer}.H{head}" for layer, head in self.heads],
            "source": self.source,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STEERING_FORMAT,
            "version": STEERING_VERSION,
            "model": asdict(self.model),
            "alpha": self.alpha,
            "heads": [
                {"layer": layer, "head": head, "vector": vector}
                for (layer, head), vector in zip(self.heads, self.vectors.tolist(), strict=True)
            ],
            "source": self.source,
        }

    def save(self, path: str | Path) -> Path:
        """Write the steering as JSON, atomically."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> HeadSteering:
        """Read a steering file; a malformed one is refused naming the file and the field."""
        where = str(path)
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SptInterpError(f"{where}: no such steering file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SptInterpError(f"{where}: not JSON ({err})") from None
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data: Any, where: str = "steering") -> HeadSteering:
        if not isinstance(data, dict) or data.get("format") != STEERING_FORMAT:
            raise SptInterpError(f"{where}: not a steering file (format {STEERING_FORMAT!r})")
        try:
            model = ModelSignature(**data["model"])
            entries = data["heads"]
            heads = tuple((int(e["layer"]), int(e["head"])) for e in entries)
            rows = [list(map(float, e["vector"])) for e in entries]
            alpha = float(data["alpha"])
        except (KeyError, TypeError, ValueError) as err:
            raise SptInterpError(f"{where}: malformed steering file ({err!r})") from None
        vectors = torch.tensor(rows if all(len(r) == model.d_head for r in rows) else [[]])
        if vectors.shape != (len(heads), model.d_head) or not torch.isfinite(vectors).all():
            raise SptInterpError(
                f"{where}: expected {len(heads)} finite vectors of d_head {model.d_head}"
            )
        return cls(model, heads, vectors, alpha, dict(data.get("source") or {}), where)


def steered(model: HookedModel, steering: HeadSteering | None) -> AbstractContextManager[None]:
    """Return ``steering.applied(model)``, or a block that changes nothing when None."""
    return steering.applied(model) if steering is not None else nullcontext()
