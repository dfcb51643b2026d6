"""The fair comparison protocol: splits by question, lr chosen on validation, weights restored."""

from __future__ import annotations

from pathlib import Path

import torch

from spt_interp.data import load_dialogues, protocol_for
from spt_interp.mask import HeadMask
from spt_interp.model import load_model
from spt_interp.tiny import save_tiny_model
from spt_interp.tuning.compare import ComparisonPlan, compare_modes, split_by_question

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"


def test_split_holds_whole_questions_apart():
    records = load_dialogues(DATA) * 2  # every question twice
    train, validation = split_by_question(records, 0.4, seed=0)
    assert len(validation) == 4 and len(train) == 6
    assert not {r.question for r in train} & {r.question for r in validation}


def test_comparison_picks_the_best_validation_lr_and_restores_the_base(tmp_path, bpe_tokenizer):
    folder = save_tiny_model("llama", tmp_path / "m", tokenizer=bpe_tokenizer, n_ctx=256)
    hooked, reference = load_model(folder), load_model(folder)
    before = {name: p.detach().clone() for name, p in hooked.hf_parameters.items()}
    mask = HeadMask.from_heads(hooked, [(0, 1), (1, 0)])
    records = load_dialogues(DATA)
    plan = ComparisonPlan(modes=("spt", "sft"), lrs=(1e-3, 3e-2), steps=2, batch_size=4,
                          max_new_tokens=3, validation_fraction=0.4)  # fmt: skip
    result = compare_modes(hooked, reference, mask, records, records, records,
                           protocol_for(folder), plan, progress=False)  # fmt: skip

    assert all(torch.equal(before[n], p) for n, p in hooked.hf_parameters.items())
    assert len(result.sweep) == 4 and "equal-budget sweep" in result.protocol
    table = result.table
    assert table.iloc[0]["mode"] == "base" and table.iloc[0]["kl"] == 0
    for mode in ("spt", "sft"):
        runs = result.sweep[result.sweep["mode"] == mode]
        chosen = table[(table["mode"] == mode) & (table["selection"] == "chosen lr")].iloc[0]
        assert runs.loc[runs["lr"] == chosen["lr"], "score"].iloc[0] >= runs["score"].max() - 0.01
    spt = table[(table["mode"] == "spt") & (table["selection"] == "chosen lr")].iloc[0]
    sft = table[(table["mode"] == "sft") & (table["selection"] == "chosen lr")].iloc[0]
    assert spt["trainable_parameters"] == 2 * 8 * 32 * 2
    assert sft["trainable_parameters"] == sum(p.numel() for p in hooked.hf_parameters.values())
