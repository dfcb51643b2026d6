"""END attention to the prompt's behaviour and alternative tokens: the HF model's eager weights
against the TransformerLens bridge's hook_pattern, and the positions read by hand."""

from __future__ import annotations

import json

import pytest
import torch

from spt_interp.data import load_pairs
from spt_interp.evaluation.attention import end_attention, end_patterns, target_positions
from spt_interp.model import load_model

# The tiny BPE spells " the", " I" and " sure" as one token each.
ROW = {"prompt": "When I and the cat went out, the dog gave it to",
       "counterfactual": "When sure and the cat went out, the dog gave it to",
       "behaviour": " I", "alternative": " the"}  # fmt: skip


@pytest.fixture(scope="module")
def setting(tiny_model_dirs, tmp_path_factory):
    path = tmp_path_factory.mktemp("att") / "pairs.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "behaviour": " sure"}) + "\n")
    hooked = load_model(tiny_model_dirs["llama"])
    return hooked, load_pairs(path, hooked.tokenizer)


def test_end_patterns_equal_the_bridges_hook_pattern(setting):
    hooked, pairs = setting
    patterns = end_patterns(hooked, pairs[0])
    _, cache = hooked.bridge.run_with_cache(torch.tensor([pairs[0].prompt_ids]))
    for layer in range(hooked.geometry.n_layers):
        reference = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, -1, :]
        # float32 softmax over a few tens of keys, two code paths: rounding only.
        torch.testing.assert_close(patterns[layer], reference.float(), atol=1e-6, rtol=1e-5)
    assert torch.allclose(patterns.sum(-1), torch.ones(patterns.shape[:2]), atol=1e-5)


def test_positions_and_shares_are_those_read_by_hand(setting):
    hooked, pairs = setting
    tokenizer = hooked.tokenizer
    tokens = [tokenizer.decode([i]) for i in pairs[0].prompt_ids]
    by_hand = {"behaviour": [i for i, t in enumerate(tokens[:-1]) if t == " I"],
               "alternative": [i for i, t in enumerate(tokens[:-1]) if t == " the"]}  # fmt: skip
    assert len(by_hand["alternative"]) == 2 and len(by_hand["behaviour"]) == 1
    ids_i, ids_the = tokenizer(" I")["input_ids"][-1], tokenizer(" the")["input_ids"][-1]
    assert target_positions(pairs[0], ((ids_i,), (ids_the,))) == by_hand
    table = end_attention(hooked, pairs, [(0, 1), (1, 3)]).set_index(["layer", "head"])
    patterns = end_patterns(hooked, pairs[0])
    # " sure" is not in the second pair's prompt: the behaviour share averages the first only.
    assert table.loc[(1, 3), "n_behaviour"] == 1 and table.loc[(1, 3), "n_alternative"] == 2
    expected = float(patterns[1, 3, by_hand["behaviour"]].sum())
    assert table.loc[(1, 3), "behaviour"] == pytest.approx(expected, rel=1e-6)
    both = float(patterns[0, 1, by_hand["alternative"]].sum())
    assert table.loc[(0, 1), "alternative"] == pytest.approx(both, rel=1e-6)
