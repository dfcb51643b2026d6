"""The head mask: which heads (and which of their q/k/v/o weights) the pinpoint trainer may change.

A mask is built from head scores (``HeadScores``: a locate run, or a scores CSV), saved as
versioned JSON tied to one model by its head geometry and fingerprint, and mapped to exact
slices of the Hugging Face parameters. The file::

    {"format": "spt-interp/head-mask", "version": 1,
     "model": {"architecture", "n_layers", "n_heads", "n_kv_heads", "d_head", "d_model",
               "fingerprint"},
     "heads": [{"layer", "head", "score"}],
     "components": ["q", "k", "v", "o"],
     "source": {"method", "metric", "data_file_hash", "created"}}

With grouped-query attention a head's key/value weights are shared by its whole group, so
tuning them would change heads outside the mask: grouped-query masks default to q, o.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from jaxtyping import Bool
from torch import Tensor

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.fields import read_json, typed
from spt_interp.common.head_scores import HeadScores, column_value
from spt_interp.errors import SptInterpError
from spt_interp.model import HeadGeometry
from spt_interp.model.architecture import COMPONENTS, HeadSlice, head_slices

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel

MASK_FORMAT = "spt-interp/head-mask"
MASK_VERSION = 1


# --- the mask ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSignature:
    """The shape and fingerprint of the model a mask was made for."""

    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    fingerprint: str

    @classmethod
    def of(cls, hooked: HookedModel) -> ModelSignature:
        """Return the signature of a hooked model (fingerprint without weight contents)."""
        return cls(**asdict(hooked.geometry), fingerprint=hooked.fingerprint())

    @classmethod
    def of_folder(cls, path: Any) -> ModelSignature:
        """Return the signature of a local model folder, read without loading its weights."""
        from spt_interp.model import read_signature

        geometry, fingerprint = read_signature(path)
        return cls(**asdict(geometry), fingerprint=fingerprint)

    @property
    def geometry(self) -> HeadGeometry:
        shape = {f.name: getattr(self, f.name) for f in fields(HeadGeometry)}
        return HeadGeometry(**shape)

    def describe(self) -> str:
        """Return a one-line description naming the shape and fingerprint."""
        return (
            f"{self.architecture} {self.n_layers} layers x {self.n_heads} heads "
            f"({self.n_kv_heads} kv), d_head {self.d_head}, d_model {self.d_model}, "
            f"fingerprint {self.fingerprint}"
        )


@dataclass(frozen=True)
class MaskedHead:
    """One head in the mask, with the score that put it there (None when chosen by hand)."""

    layer: int
    head: int
    score: float | None = None


@dataclass(frozen=True)
class MaskSource:
    """Where the mask came from: the scoring method and metric, the data's hash, when."""

    method: str
    metric: str
    data_file_hash: str | None = None
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )


@dataclass(frozen=True)
class MaskSlice(HeadSlice):
    """A head slice with what the mask knows of it: the weights of ``heads`` in ``layer``.

    ``heads`` has several entries only for a key/value slice of a grouped-query model, where
    one slice serves every query head of the group that is in the mask.
    """

    layer: int
    component: str
    heads: tuple[int, ...]


def default_components(signature: ModelSignature | HeadGeometry) -> tuple[str, ...]:
    """Return q, k, v, o, or q, o when key/value heads are shared (grouped-query attention)."""
    return ("q", "o") if signature.n_kv_heads < signature.n_heads else COMPONENTS


def _check_components(components: Iterable[str], origin: str) -> tuple[str, ...]:
    wanted = [str(c).strip().lower() for c in components]
    unknown = [c for c in wanted if c not in COMPONENTS]
    if unknown or not wanted:
        raise SptInterpError(
            f"{origin}: components must be a non-empty subset of q, k, v, o; got {list(components)}"
        )
    return tuple(c for c in COMPONENTS if c in wanted)


@dataclass(frozen=True)
class HeadMask:
    """A set of heads and the components of them that may be tuned, tied to one model.

    Build with ``from_scores`` or ``from_heads``, write with ``save``, read with ``load``,
    check against a model with ``validate``, and map to HF weights with ``hf_slices`` or
    ``gradient_masks``. ``origin`` (the file it was loaded from) only names it in messages.
    """

    model: ModelSignature
    heads: tuple[MaskedHead, ...]
    components: tuple[str, ...]
    source: MaskSource
    origin: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = self.origin or "head mask"
        if not self.heads:
            raise SptInterpError(f"{where} has no heads")
        seen = set()
        for h in self.heads:
            if not (0 <= h.layer < self.model.n_layers and 0 <= h.head < self.model.n_heads):
                raise SptInterpError(
                    f"{where}: head L{h.layer}.H{h.head} is out of range for its model "
                    f"({self.model.n_layers} layers x {self.model.n_heads} heads)"
                )
            if (h.layer, h.head) in seen:
                raise SptInterpError(f"{where} lists head L{h.layer}.H{h.head} twice")
            seen.add((h.layer, h.head))
        object.__setattr__(self, "components", _check_components(self.components, where))

    # -- building

    @classmethod
    def from_heads(
        cls,
        model: HookedModel | ModelSignature,
        heads: Sequence[tuple[int, int] | tuple[int, int, float | None]],
        *,
        components: Iterable[str] | None = None,
        source: MaskSource | None = None,
    ) -> HeadMask:
        """Return a mask of the listed (layer, head[, score]) for a hooked model or signature."""
        signature = model if isinstance(model, ModelSignature) else ModelSignature.of(model)
        entries = tuple(
            MaskedHead(int(h[0]), int(h[1]), None if len(h) < 3 or h[2] is None else float(h[2]))
            for h in heads
        )
        return cls(
            signature,
            entries,
            tuple(components) if components is not None else default_components(signature),
            source or MaskSource(method="manual", metric="none"),
        )

    @classmethod
    def from_scores(
        cls,
        model: HookedModel | ModelSignature,
        scores: HeadScores,
        *,
        top_k: int | None = None,
        top_frac: float | None = None,
        heads: Sequence[tuple[int, int]] | None = None,
        components: Iterable[str] | None = None,
        source: MaskSource | None = None,
    ) -> HeadMask:
        """Return a mask of the top ``top_k`` heads, the top ``top_frac`` of all heads, or the
        listed ``heads`` (with their scores), from ``scores``, best first by its ranking."""
        chosen = [x is not None for x in (top_k, top_frac, heads)]
        if sum(chosen) != 1:
            raise SptInterpError("choose exactly one of top_k, top_frac or an explicit head list")
        signature = model if isinstance(model, ModelSignature) else ModelSignature.of(model)
        # A head outside the model is the fault of the file the scores came from.
        where = scores.origin
        ranked = scores.ranked_table()
        total = signature.n_layers * signature.n_heads
        if top_frac is not None:
            if not 0 < top_frac <= 1:
                raise SptInterpError(f"top fraction must be in (0, 1], got {top_frac}")
            top_k = max(1, math.ceil(top_frac * total - 1e-9))
        if top_k is not None:
            if not 1 <= top_k <= len(ranked):
                raise SptInterpError(
                    f"top-k must be between 1 and the {len(ranked)} heads in the scores, "
                    f"got {top_k}"
                )
            rows = ranked.head(top_k)
        else:
            wanted = {(int(layer), int(head)) for layer, head in heads}
            keys = list(zip(ranked.layer, ranked["head"], strict=True))
            missing = sorted(wanted - set(keys))
            if missing:
                names = ", ".join(f"L{layer}.H{head}" for layer, head in missing)
                raise SptInterpError(f"head(s) {names} are not in the scores table")
            rows = ranked[[key in wanted for key in keys]]
        entries = [
            (int(r.layer), int(r.head), None if pd.isna(r.score) else float(r.score))
            for r in rows.itertuples()
        ]
        for layer, head, _ in entries:
            # Checked here, not left to the mask, whose message cannot name the scores file.
            if not (0 <= layer < signature.n_layers and 0 <= head < signature.n_heads):
                raise SptInterpError(
                    f"{where}: head L{layer}.H{head} is out of range for the model "
                    f"({signature.n_layers} layers x {signature.n_heads} heads)"
                )
        if source is None:
            hash_ = column_value(scores.table, "data_file_hash")
            source = MaskSource(scores.method, scores.metric, hash_)
        return cls.from_heads(signature, entries, components=components, source=source)

    # -- file format

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready mask in the versioned file format."""
        return {
            "format": MASK_FORMAT,
            "version": MASK_VERSION,
            "model": asdict(self.model),
            "heads": [asdict(h) for h in self.heads],
            "components": list(self.components),
            "source": asdict(self.source),
        }

    @classmethod
    def from_dict(cls, data: Any, origin: str = "head mask") -> HeadMask:
        """Return the mask in ``data`` (parsed JSON); raise naming ``origin`` on any defect."""
        if not isinstance(data, dict) or data.get("format") != MASK_FORMAT:
            raise SptInterpError(f"{origin} is not a head mask (format is not {MASK_FORMAT!r})")
        if data.get("version") != MASK_VERSION:
            raise SptInterpError(
                f"{origin} has head-mask version {data.get('version')!r}; this spt-interp "
                f"reads version {MASK_VERSION}"
            )
        try:
            model = _typed(data["model"], dict, "model", origin)
            signature = ModelSignature(
                _typed(model["architecture"], str, "model.architecture", origin),
                *(
                    _typed(model[k], int, f"model.{k}", origin, positive=True)
                    for k in ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model")
                ),
                _typed(model["fingerprint"], str, "model.fingerprint", origin),
            )
            heads = tuple(
                MaskedHead(
                    _typed(h["layer"], int, "heads[].layer", origin),
                    _typed(h["head"], int, "heads[].head", origin),
                    _score(_typed(h, dict, "heads[]", origin).get("score"), origin),
                )
                for h in _typed(data["heads"], list, "heads", origin)
            )
            source = _typed(data["source"], dict, "source", origin)
            hash_ = source.get("data_file_hash")
            mask_source = MaskSource(
                *(_typed(source[k], str, f"source.{k}", origin) for k in ("method", "metric")),
                None if hash_ is None else _typed(hash_, str, "source.data_file_hash", origin),
                _typed(source["created"], str, "source.created", origin),
            )
            components = _typed(data["components"], list, "components", origin)
            components = [_typed(c, str, "components[]", origin) for c in components]
        except (KeyError, TypeError, AttributeError) as err:
            raise SptInterpError(f"{origin} lacks or misformats field {err}") from None
        return cls(signature, heads, tuple(components), mask_source, origin=origin)

    def save(self, path: str | Path) -> Path:
        """Return ``path`` after writing the mask there atomically."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> HeadMask:
        """Return the mask saved at ``path``; raise naming the file when it is not one."""
        file = Path(path)
        if not file.is_file():
            raise SptInterpError(f"head mask {file} does not exist")
        return cls.from_dict(read_json(file, f"head mask {file}"), origin=str(file))

    # -- using it

    @property
    def head_set(self) -> list[tuple[int, int]]:
        """Return the masked (layer, head) pairs in the mask's order (best first)."""
        return [(h.layer, h.head) for h in self.heads]

    def validate(self, hooked: HookedModel) -> None:
        """Return None when ``hooked`` is the model this mask was made for; raise otherwise.

        The message names the mask's shape and fingerprint and the model's.
        """
        actual = ModelSignature.of(hooked)
        if actual != self.model:
            mask = f"head mask {self.origin}" if self.origin else "the head mask"
            model = f"the model {hooked.path}" if getattr(hooked, "path", None) else "the model"
            raise SptInterpError(
                f"{mask} was made for {self.model.describe()}, but {model} is {actual.describe()}"
            )

    def hf_slices(self, hf_parameters: dict[str, Tensor]) -> list[MaskSlice]:
        """Return the distinct HF parameter slices of the masked heads' components.

        A key/value slice of a grouped-query model appears once per group, listing every
        masked head that shares it; weight and bias slices are separate entries.
        """
        geometry = self.model.geometry
        slices: dict[tuple[str, int, int, int], list[Any]] = {}
        for layer, head in self.head_set:
            for component in self.components:
                for s in head_slices(geometry, hf_parameters, layer, head, component):
                    if s.parameter not in hf_parameters:
                        raise SptInterpError(f"the model has no parameter {s.parameter}")
                    key = (s.parameter, s.dim, s.start, s.stop)
                    slices.setdefault(key, [layer, component, []])[2].append(head)
        return [
            MaskSlice(name, dim, start, stop, layer, component, tuple(sorted(heads)))
            for (name, dim, start, stop), (layer, component, heads) in slices.items()
        ]

    def gradient_masks(self, hf_parameters: dict[str, Tensor]) -> dict[str, Bool[Tensor, "*dims"]]:
        """Return, per touched HF parameter, a boolean tensor of its shape: True = may change."""
        masks: dict[str, Tensor] = {}
        for s in self.hf_slices(hf_parameters):
            parameter = hf_parameters[s.parameter]
            if s.parameter not in masks:
                masks[s.parameter] = torch.zeros(
                    parameter.shape, dtype=torch.bool, device=parameter.device
                )
            s.index(masks[s.parameter]).fill_(True)
        return masks


def _typed(value: Any, kind: type, name: str, origin: str, *, positive: bool = False) -> Any:
    # Fields are checked for their type, not converted (a negative d_head used to load).
    return typed(value, kind, f"{origin}: {name}", positive=positive)


def _score(value: Any, origin: str) -> float | None:
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, int) and abs(value) > sys.float_info.max)
    ):
        raise SptInterpError(f"{origin}: heads[].score must be a number or null, got {value!r}")
    return None if value is None else float(value)
