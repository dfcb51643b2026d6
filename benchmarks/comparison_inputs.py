"""What the tuning benchmarks load from a model folder: the model twice, its protocol, its splits.

A folder written by `spt-interp organism` or `spt-interp models pull` holds model/ and
data/{train,test,general}.jsonl. The benchmarks tune one copy in place and keep the other as
the untouched reference for the KL shift, as the comparison protocol does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spt_interp.common.head_scores import HeadScores


@dataclass
class ComparisonInputs:
    hooked: Any
    reference: Any
    protocol: Any
    train: list
    test: list
    general: list


def load_comparison_inputs(model_dir: Path, device: str = "cpu") -> ComparisonInputs:
    """Return the model (twice), its protocol and the train / test / general records."""
    from spt_interp.data import load_dialogues, protocol_for
    from spt_interp.model import load_model

    hooked = load_model(model_dir / "model", device=device)
    reference = load_model(model_dir / "model", device=device)
    splits = [load_dialogues(model_dir / "data" / f"{name}.jsonl")
              for name in ("train", "test", "general")]  # fmt: skip
    return ComparisonInputs(hooked, reference, protocol_for(hooked), *splits)


def located_mask(
    hooked: Any,
    scores: str | Path | HeadScores,
    top_k: int,
    components: tuple[str, ...] | None = None,
):
    """Return the head mask of the ``top_k`` best heads of locate's scores (a path or HeadScores),
    with the path-patching source the demo records."""
    from spt_interp.common.head_scores import read_scores
    from spt_interp.mask import HeadMask, MaskSource

    head_scores = read_scores(scores) if isinstance(scores, (str, Path)) else scores
    source = MaskSource(method="path", metric="log-odds", data_file_hash=None)
    return HeadMask.from_scores(
        hooked, head_scores, top_k=top_k, components=components, source=source
    )
