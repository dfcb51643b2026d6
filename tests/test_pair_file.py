"""Pair files: text and chat prompts, each defect refused naming file:line, the sycophancy
dialogues through the same path, and a decision metric that reads each pair's own tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spt_interp.data import (
    Protocol,
    build_pairs,
    encode_prompt,
    load_pairs,
    pair_targets,
    read_pair_file,
    render_prompt,
)
from spt_interp.data.records import parse_record
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import log_odds
from spt_interp.patching import decision_metric, locate_heads

# The tiny BPE of the tests spells " the", " I" and " sure" as one token each (and " there"
# starts with " the"'s token); real tokenizers spell the names as one.
IOI = {"prompt": "When Mary and John went to the store, John gave a drink to",
       "counterfactual": "When Mary and John went to the store, Anna gave a drink to",
       "behaviour": " the", "alternative": " I"}  # fmt: skip


def write(path: Path, *rows: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def first_token(tokenizer, prompt: str, continuation: str) -> int:
    """The continuation's first token by hand: the ids the joined text adds to the prompt's."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    joined = encode_prompt(tokenizer, prompt + continuation)
    assert joined[: len(prompt_ids)] == prompt_ids
    return joined[len(prompt_ids)]


def test_a_text_pair_is_the_tokenizers_own_ids_and_its_continuations_first_tokens(
    bpe_tokenizer, tmp_path
):
    path = write(tmp_path / "pairs.jsonl", {**IOI, "id": "ioi-0"},
                 {**IOI, "behaviour": [" the", " sure"]})  # fmt: skip
    first, second = load_pairs(path, bpe_tokenizer)
    assert first.record_id == "ioi-0" and second.record_id == "2"  # no id: the line number
    # A model without a chat template: the tokenizer adds what it usually adds.
    expected = bpe_tokenizer(IOI["prompt"])["input_ids"]
    assert first.prompt_ids == expected and first.prompt_text == IOI["prompt"]
    assert first.counterfactual_ids == bpe_tokenizer(IOI["counterfactual"])["input_ids"]
    ((behaviour, alternative), (both, _)) = pair_targets([first, second], bpe_tokenizer)
    assert behaviour == (first_token(bpe_tokenizer, IOI["prompt"], " the"),)
    assert alternative == (first_token(bpe_tokenizer, IOI["prompt"], " I"),)
    assert both == (behaviour[0], first_token(bpe_tokenizer, IOI["prompt"], " sure"))


def test_chat_prompts_are_rendered_with_the_template_and_its_generation_prompt(
    chat_tokenizer, bpe_tokenizer, tmp_path
):
    messages = [{"role": "user", "content": "Who gave the drink?"}]
    other = [{"role": "user", "content": "Who got the drink?"}]
    row = {"prompt": messages, "counterfactual": other, "behaviour": " the",
           "alternative": " I"}  # fmt: skip
    path = write(tmp_path / "chat.jsonl", row)
    (pair,) = load_pairs(path, chat_tokenizer)
    assert pair.prompt_text == "<s><|user|>Who gave the drink?\n<|assistant|>"
    # The template wrote BOS: the tokenizer does not add it again.
    assert pair.prompt_ids == chat_tokenizer(pair.prompt_text, add_special_tokens=False)[
        "input_ids"]  # fmt: skip
    assert pair.prompt_ids.count(chat_tokenizer.bos_token_id) == 1
    with pytest.raises(SptInterpError) as error:
        load_pairs(path, bpe_tokenizer, "models/tiny")
    assert str(error.value) == (
        f"{path}:1: the prompts are chat messages, but models/tiny has no chat template; "
        "give them as text"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({k: v for k, v in IOI.items() if k != "behaviour"}, ":2: missing 'behaviour'"),
        ({**IOI, "prompt": 3}, ":2: 'prompt' must be a string or a list of chat messages"),
        ({**IOI, "prompt": [{"role": "user"}]}, ":2: 'prompt', message 0: expected"),
        ({**IOI, "prompt": [{"role": "robot", "content": "x"}]}, "message 0: expected"),
        ({**IOI, "counterfactual": [{"role": "user", "content": "x"}]},
         ":2: 'prompt' and 'counterfactual' must both be text or both be messages"),
        ({**IOI, "alternative": ""}, ":2: 'alternative' has an empty continuation"),
        ({**IOI, "alternative": [1]}, ":2: 'alternative' must be a string or a list of strings"),
        ({**IOI, "behavior": " the"}, ":2: unknown key(s) 'behavior'"),
        ({**IOI, "id": 1.5}, ":2: 'id' must be a string or an integer"),
        ([IOI], ":2: expected an object"),
        ("{not json", ":2: invalid JSON"),
    ],
)  # fmt: skip
def test_a_bad_line_is_refused_naming_the_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "pairs.jsonl", IOI, line)
    with pytest.raises(SptInterpError) as error:
        read_pair_file(path)
    text = str(error.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_an_empty_file_and_coinciding_first_tokens_are_refused(bpe_tokenizer, tmp_path):
    with pytest.raises(SptInterpError, match="empty.jsonl: no pairs"):
        read_pair_file(write(tmp_path / "empty.jsonl", ""))
    same = write(tmp_path / "same.jsonl", IOI, {**IOI, "alternative": " there"})
    assert first_token(bpe_tokenizer, IOI["prompt"], " there") == first_token(
        bpe_tokenizer, IOI["prompt"], " the")  # fmt: skip
    with pytest.raises(SptInterpError) as error:
        load_pairs(same, bpe_tokenizer)
    assert str(error.value).startswith(f"{same}:2: the behaviour and the alternative share")


RECORDS = [
    parse_record({"prompt": [{"type": "human", "content": q}],
                  "base": {"dataset": "trivia_qa", "question": q, "correct_answer": a}},
                 "test.jsonl", 1)
    for q, a in (("What is the capital of France?", "Paris"), ("hello", "hi there"))
]  # fmt: skip


def test_sycophancy_dialogues_are_pairs_of_the_same_path_token_for_token(chat_tokenizer, tmp_path):
    protocol = Protocol(reply_prefix="I'm", sycophantic_targets=[" sorry"],
                        anti_sycophantic_targets=[" sure"])  # fmt: skip
    pairs = build_pairs(RECORDS, chat_tokenizer, protocol)
    for record, pair in zip(RECORDS, pairs, strict=True):
        # The dialogue's prompts rendered and tokenized by hand, as the protocol defines them.
        text_r = render_prompt(chat_tokenizer, record, record.correct_answer, protocol.challenge,
                               protocol)  # fmt: skip
        text_c = render_prompt(chat_tokenizer, record, record.correct_answer,
                               protocol.counterfactual, protocol)  # fmt: skip
        assert pair.prompt_ids == encode_prompt(chat_tokenizer, text_r)
        assert pair.counterfactual_ids == encode_prompt(chat_tokenizer, text_c)
    # The same pairs written as a pair file of text prompts load to the same tokens and targets.
    rows = [{"prompt": p.prompt_text, "counterfactual": p.counterfactual_text,
             "behaviour": list(p.behaviour), "alternative": list(p.alternative),
             "id": p.record_id} for p in pairs]  # fmt: skip
    loaded = load_pairs(write(tmp_path / "syc.jsonl", *rows), chat_tokenizer)
    assert [(p.prompt_ids, p.counterfactual_ids, p.record_id) for p in loaded] == [
        (p.prompt_ids, p.counterfactual_ids, p.record_id) for p in pairs]  # fmt: skip
    assert pair_targets(loaded, chat_tokenizer) == pair_targets(pairs, chat_tokenizer)


def test_each_pair_is_scored_by_its_own_tokens_as_if_it_were_alone(
    tiny_model_dirs, bpe_tokenizer, tmp_path
):
    """A batch whose pairs compare different tokens: every head's per-pair score equals the
    score of that pair located alone (one set of tokens, no per-row binding)."""
    from spt_interp.model import load_model

    hooked = load_model(tiny_model_dirs["llama"])
    names = [(" the", " I"), (" I", " the"), (" sure", " I")]
    rows = [{**IOI, "behaviour": b, "alternative": a} for b, a in names]
    pairs = load_pairs(write(tmp_path / "pairs.jsonl", *rows), hooked.tokenizer)
    metric = decision_metric("log-odds", hooked.tokenizer, pairs)
    with pytest.raises(SptInterpError, match="compares each pair's own tokens"):
        metric.fn(torch.zeros(3, 10))
    together = locate_heads(hooked, pairs, metric, batch_size=3, per_prompt=True,
                            engine="hf", progress=False)  # fmt: skip
    table = together.per_prompt.sort_values(["prompt", "layer", "head"])
    for pair in pairs:
        alone = locate_heads(hooked, [pair], decision_metric("log-odds", hooked.tokenizer, [pair]),
                             engine="hf", per_prompt=True, progress=False)  # fmt: skip
        mine = table[table["prompt"] == pair.index]["value"].to_numpy()
        expected = alone.per_prompt.sort_values(["layer", "head"])["value"].to_numpy()
        assert abs(expected).max() > 1e-4  # patching moves this pair's decision
        torch.testing.assert_close(torch.tensor(mine), torch.tensor(expected), atol=1e-5, rtol=0)
    # The batched metric on END logits equals log_odds with each pair's tokens, by hand.
    logits = torch.randn(6, hooked.tokenizer.vocab_size)
    bound = metric.for_pairs(pairs)
    targets = pair_targets(pairs, hooked.tokenizer)
    expected = torch.stack([log_odds(logits[r : r + 1], *targets[r % 3])[0] for r in range(6)])
    torch.testing.assert_close(bound.values(logits), expected)
