"""Where a command's prompt pairs come from: sycophancy dialogues (``--data``) or a pair file
of any behaviour (``--pairs``). Both are read and checked before the model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spt_interp.errors import SptInterpError

if TYPE_CHECKING:
    from spt_interp.data import PromptPair, Protocol
    from spt_interp.model import HookedModel

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data", help="SycophancyEval-style JSONL of questions (the 'are you sure' pairs)."
    ),
]
PairsOption = Annotated[
    Path | None,
    typer.Option(
        "--pairs",
        help="Pair file of any behaviour: JSONL of prompt, counterfactual, behaviour, "
        "alternative (see the pair format).",
    ),
]


@dataclass
class PairSource:
    """The checked input of one command: dialogue records, or a pair file's rows."""

    path: Path
    records: list | None = None
    rows: list | None = None

    @classmethod
    def read(
        cls, data: Path | None, pairs: Path | None, limit: int | None, folder: Path
    ) -> PairSource:
        """Return the input, read before the model loads (and before ``folder`` is checked:
        a bad line is named first); a pair file of chat messages for a model without a chat
        template is refused here (the folder's tokenizer alone is read)."""
        from spt_interp.data import load_dialogues, read_pair_file
        from spt_interp.data.pair_file import check_renderable
        from spt_interp.model.loading import load_tokenizer

        if (data is None) == (pairs is None):
            raise SptInterpError("give one of --data (dialogues) or --pairs (a pair file)")
        if data is not None:
            return cls(data, records=load_dialogues(data)[:limit])
        rows = read_pair_file(pairs)[:limit]
        check_renderable(rows, load_tokenizer(folder), str(folder))
        return cls(pairs, rows=rows)

    @property
    def is_pair_file(self) -> bool:
        return self.rows is not None

    def pairs(
        self,
        hooked: HookedModel,
        protocol: Protocol,
        *,
        own_answers: bool = False,
        batch_size: int = 8,
        progress: bool = True,
    ) -> list[PromptPair]:
        """Return the prompt pairs for the loaded model (``own_answers``: dialogues only)."""
        from spt_interp.data import make_pairs, pair_targets
        from spt_interp.data.pair_file import pair_specs
        from spt_interp.patching.inputs import locate_pairs

        if self.rows is None:
            return locate_pairs(hooked, self.records, protocol, own_answers=own_answers,
                                batch_size=batch_size, progress=progress)  # fmt: skip
        pairs = make_pairs(pair_specs(self.rows, hooked.tokenizer), hooked.tokenizer)
        pair_targets(pairs, hooked.tokenizer)
        return pairs

    def describe(self) -> dict[str, Any]:
        """Return what a run's record says of its input."""
        kind = "pair file" if self.is_pair_file else "dialogues"
        return {"data": str(self.path), "input": kind}
