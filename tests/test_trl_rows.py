"""Training data in TRL's formats: labels on the completion only (or the last assistant turn),
each defect refused naming file:line before any model loads, and every tuning method trains
on such a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.data import IGNORE_INDEX, read_training_file, render_messages
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask
from spt_interp.model.tiny import save_tiny_model
from spt_interp.tuning import TuneConfig, load_base, tune

DIALOGUES = Path(__file__).parent / "data" / "knockout_questions.jsonl"
QUESTION = [{"role": "user", "content": "Is the sky blue?"}]
REPLY = [{"role": "assistant", "content": "I am sure it is."}]


def write(path: Path, *rows: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def split_at_labels(example) -> tuple[list[int], list[int]]:
    """(ids before the first labelled token, ids from it on), checking the labelled ids are a
    contiguous run equal to the input there."""
    first = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    assert all(label == IGNORE_INDEX for label in example.labels[:first])
    assert example.labels[first:] == example.input_ids[first:]
    return example.input_ids[:first], example.input_ids[first:]


def test_a_text_completion_takes_loss_on_its_tokens_and_eos_only(bpe_tokenizer, tmp_path):
    path = write(tmp_path / "t.jsonl", {"prompt": "Is the sky blue?", "completion": " I am sure"})
    (example,) = read_training_file(path).examples(bpe_tokenizer, protocol=None)
    assert example.kind == "completion"
    before, learnt = split_at_labels(example)
    # The reference: the tokenizer on the prompt alone, and the completion's text back.
    assert before == bpe_tokenizer("Is the sky blue?")["input_ids"]
    assert bpe_tokenizer.decode(learnt) == " I am sure" + bpe_tokenizer.eos_token
    everything = read_training_file(path).examples(bpe_tokenizer, None, loss_on="all")[0]
    assert [label for label in everything.labels if label != IGNORE_INDEX] == [
        i for i in everything.input_ids if i != bpe_tokenizer.bos_token_id
    ]


def test_a_chat_completion_takes_loss_after_the_generation_prompt(chat_tokenizer, tmp_path):
    path = write(tmp_path / "c.jsonl", {"prompt": QUESTION, "completion": REPLY})
    (example,) = read_training_file(path).examples(chat_tokenizer, protocol=None)
    before, learnt = split_at_labels(example)
    prompt = render_messages(chat_tokenizer, QUESTION, add_generation_prompt=True)
    assert chat_tokenizer.decode(before) == prompt
    # The reply and the template's end of turn, nothing of the question.
    assert chat_tokenizer.decode(learnt) == REPLY[0]["content"] + "\n"


def test_messages_take_loss_on_the_last_assistant_turn_or_on_every_one(chat_tokenizer, tmp_path):
    turns = [*QUESTION, {"role": "assistant", "content": "Yes."},
             {"role": "user", "content": "Are you sure?"}, *REPLY]  # fmt: skip
    path = write(tmp_path / "m.jsonl", {"messages": turns})
    data = read_training_file(path)
    (last,) = data.examples(chat_tokenizer, None)
    assert last.kind == "messages"
    _, learnt = split_at_labels(last)
    assert chat_tokenizer.decode(learnt) == REPLY[0]["content"] + "\n"
    (every,) = data.examples(chat_tokenizer, None, loss_on="assistant")
    labelled = [i if label != IGNORE_INDEX else None for i, label in
                zip(every.input_ids, every.labels, strict=True)]  # fmt: skip
    runs, current = [], []
    for token in labelled + [None]:
        if token is None and current:
            runs.append(chat_tokenizer.decode(current))
            current = []
        elif token is not None:
            current.append(token)
    assert runs == ["Yes.", REPLY[0]["content"] + "\n"]


def test_a_dialogue_file_is_still_read_as_dialogues(bpe_tokenizer):
    data = read_training_file(DIALOGUES)
    assert data.format == "dialogues" and len(data) == len(DIALOGUES.read_text().splitlines())


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"prompt": "Is it?"}],
            "t.jsonl:1: a training row needs 'completion' (with 'prompt') "
            "or 'messages' (TRL's formats), or a dialogue's 'base'",
        ),
        (
            [{"prompt": "a", "completion": " b"}, {"prompt": "Is it?"}],
            "t.jsonl:2: a training row needs 'completion' (with 'prompt') or 'messages'; "
            "it has neither",
        ),
        ([{"completion": " b"}], "t.jsonl:1: 'completion' needs a 'prompt'"),
        (
            [{"prompt": QUESTION, "completion": " b"}],
            "t.jsonl:1: 'prompt' and 'completion' must both be text or both be messages",
        ),
        (
            [{"prompt": "a", "completion": 3}],
            "t.jsonl:1: 'completion' must be a string or a list of chat messages",
        ),
        ([{"messages": QUESTION}], "t.jsonl:1: 'messages' has no assistant turn to learn"),
        (
            [{"messages": [*QUESTION, *REPLY], "prompt": "a"}],
            "t.jsonl:1: give 'messages', or 'prompt' and 'completion'",
        ),
        (
            [{"prompt": QUESTION, "completion": QUESTION}],
            "t.jsonl:1: 'completion' messages must be assistant turns",
        ),
        ([{"prompt": "a", "completion": " b", "label": 1}], "t.jsonl:1: unknown key(s) 'label'"),
        (["{nope"], "t.jsonl:1: invalid JSON"),
        ([], "t.jsonl: holds no records"),
    ],
)
def test_each_bad_training_row_is_refused_naming_file_and_line(tmp_path, rows, message):
    path = write(tmp_path / "t.jsonl", *rows)
    with pytest.raises(SptInterpError) as err:
        read_training_file(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def model(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("trl")
    return save_tiny_model("llama", root / "llama", tokenizer=bpe_tokenizer, n_ctx=256)


TRL_ROWS = [{"prompt": f"Question {n}: is the sky blue?", "completion": " I am sure it is."}
            for n in range(4)]  # fmt: skip


@pytest.mark.parametrize("mode", ["spt", "random", "lora-heads", "lora", "sft"])
def test_every_method_trains_on_trl_rows(model, tmp_path, mode):
    """One step per method on a TRL file: the loss comes down from the completion's tokens
    only (a first loss by hand over the labelled tokens), and the weights move."""
    base = load_base(model)
    examples = read_training_file(write(tmp_path / "t.jsonl", *TRL_ROWS)).examples(
        base.tokenizer, None
    )
    mask = HeadMask.from_heads(base, [(0, 1), (1, 2)])
    example = examples[0]
    ids = torch.tensor([example.input_ids])
    labels = torch.tensor([example.labels])
    with torch.no_grad():
        logits = base.plain_model(ids).logits[0, :-1]
    keep = labels[0, 1:] != IGNORE_INDEX
    by_hand = torch.nn.functional.cross_entropy(logits[keep], labels[0, 1:][keep])
    before = {k: v.clone() for k, v in base.plain_model.state_dict().items()}
    config = TuneConfig(mode=mode, lr=1e-2, steps=2, batch_size=1, seed=0)
    tuned = tune(base, examples[:1], mask if mode != "sft" and mode != "lora" else None, config,
                 progress=False)  # fmt: skip
    # float32 loss over a dozen tokens: summation order only.
    assert tuned.record["losses"][0] == pytest.approx(by_hand.item(), rel=1e-5)
    after = base.plain_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_tune_from_the_shell_on_a_trl_file_records_its_format(model, tmp_path):
    data = write(tmp_path / "t.jsonl", *TRL_ROWS)
    mask = HeadMask.from_heads(load_base(model), [(0, 1)]).save(tmp_path / "mask.json")
    args = ["tune", "--model", model, "--data", data, "--mask", mask, "--out",
            tmp_path / "delta", "--save", "delta", "--steps", "1", "--batch-size", "2"]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "delta" / "tuning.json").read_text())
    assert record["data"]["format"] == "trl" and record["data"]["examples"] == 4


def test_a_row_with_neither_completion_nor_messages_is_refused_before_the_model_loads(
    model, tmp_path, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("spt_interp.tuning.folders.load_base", refuse)
    data = write(tmp_path / "t.jsonl", TRL_ROWS[0], {"prompt": "Is it?", "answer": "yes"})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["tune", "--model", str(model), "--data", str(data),
                                      "--mode", "sft", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {data}:2: a training row needs 'completion' (with 'prompt') or 'messages'; "
        "it has neither"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]
