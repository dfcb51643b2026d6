"""The IOI generator: single-token names for the tokenizer, the templates, the ABC
counterfactual, pairs that load and are token-aligned, and the command."""

from __future__ import annotations

import json
import re

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.data import load_pairs
from spt_interp.data.ioi import NAMES, TEMPLATES, ioi_rows, single_token_names
from spt_interp.errors import SptInterpError

KNOWN = NAMES[:12]  # the names the test tokenizer learns as whole words


@pytest.fixture(scope="module")
def names_tokenizer():
    """A byte-level BPE trained on sentences of the first 12 names (and the templates' other
    words): those names are one token after a space, the rest are spelled in pieces."""
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    corpus = [t.format(first=a, second=b, subject=b, place="store", thing="drink")
              for t in TEMPLATES for a in KNOWN for b in KNOWN]  # fmt: skip
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    raw.train_from_iterator(corpus * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")


def test_names_are_those_the_tokenizer_spells_as_one_token_after_a_space(names_tokenizer):
    found = single_token_names(names_tokenizer)
    by_hand = [n for n in NAMES if len(names_tokenizer(f" {n}")["input_ids"]) == 1]
    assert found == by_hand and set(KNOWN) <= set(found) and len(found) < len(NAMES)


def test_each_pair_is_a_template_with_its_io_once_the_subject_twice_and_an_abc_counterfactual(
    names_tokenizer,
):
    rows = ioi_rows(names_tokenizer, 32, seed=3)
    names = set(single_token_names(names_tokenizer))
    for index, row in enumerate(rows):
        io, subject = row["behaviour"][1:], row["alternative"][1:]
        number = int(re.match(r"ioi-\d+-t(\d+)-", row["id"]).group(1))
        assert number == index % len(TEMPLATES)
        pattern = re.escape(TEMPLATES[number])
        for slot in ("first", "second", "subject", "place", "thing"):
            pattern = pattern.replace(rf"\{{{slot}\}}", rf"(?P<{slot}>\w+)")
        slots = re.fullmatch(pattern, row["prompt"]).groupdict()
        first, second, again = slots["first"], slots["second"], slots["subject"]
        place, thing = slots["place"], slots["thing"]
        assert again == subject and {first, second} == {io, subject} and io != subject
        assert (first == io) == (index % 2 == 0)  # ABB, then BAB
        other = re.fullmatch(pattern, row["counterfactual"]).groupdict()
        a, b, c = other["first"], other["second"], other["subject"]
        place_c, thing_c = other["place"], other["thing"]
        assert len({a, b, c}) == 3 and not {a, b, c} & {io, subject}
        assert (place_c, thing_c) == (place, thing) and {io, subject, a, b, c} <= names
    assert ioi_rows(names_tokenizer, 32, seed=3) == rows  # seeded
    assert ioi_rows(names_tokenizer, 32, seed=4) != rows


def test_the_pairs_load_token_aligned_with_one_token_names(names_tokenizer, tmp_path):
    path = tmp_path / "ioi.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ioi_rows(names_tokenizer, 16)))
    for pair in load_pairs(path, names_tokenizer):
        assert pair.token_aligned and pair.prompt_len == pair.counterfactual_len
        sides = zip(pair.prompt_ids, pair.counterfactual_ids, strict=True)
        changed = [i for i, (r, c) in enumerate(sides) if r != c]
        assert len(changed) == 3  # the three name slots, one token each


def test_a_tokenizer_with_too_few_one_token_names_is_refused(bpe_tokenizer):
    with pytest.raises(SptInterpError, match="IOI needs at least 6"):
        ioi_rows(bpe_tokenizer, 4)


def test_the_command_writes_a_pair_file_and_refuses_to_overwrite(
    names_tokenizer, tiny_model_dirs, tmp_path
):
    folder = tmp_path / "model"
    folder.mkdir()
    for item in tiny_model_dirs["llama"].iterdir():
        if not item.name.startswith("tokenizer"):
            (folder / item.name).write_bytes(item.read_bytes())
    names_tokenizer.save_pretrained(folder)
    out = tmp_path / "ioi.jsonl"
    args = ["data", "ioi", "--model", str(folder), "--out", str(out), "--n", "10"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == ioi_rows(names_tokenizer, 10)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and f"{out} exists" in again.output
