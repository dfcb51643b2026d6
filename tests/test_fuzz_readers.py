"""Property-based tests (hypothesis) of every reader of a file a user hands over.

Valid files are written with the project's own writers (save_dialogues, HeadMask.save, the
locate CSV layout, ``tune --save delta``, save_tiny_model, the GGUF writer of gguf_files.py),
then mutated: truncated at a drawn byte, bytes replaced, a JSON key dropped or given a value of
a drawn wrong type, garbage lines inserted at a drawn line. A file that is no longer valid must
be refused with an SptInterpError whose message is one line naming the file (and the line where
there is one); from the CLI: exit code 2, one line "error: ..." naming the file, no traceback,
nothing at --out and no hidden ``.NAME.*`` leftover beside it. Mutations that may leave a file
valid (a replaced byte inside a string) check the weaker property: refused so, or read as the
original.

Examples per run (max_examples; the CLI ones run the command in process with CliRunner):
  dialogue JSONL  load_dialogues 50 garbage lines + 60 fields + 40 truncations + 40 bytes
                  + 40 save/load round trips; CLI tune/locate/evaluate/knockout --data 12
  head mask JSON  HeadMask.load 30 truncations + 80 fields + 30 whole-file + 30 bytes;
                  CLI tune/knockout --mask 10
  scores CSV      read_scores / from_scores 50 cells + 30 structure + 30 heads out of range
                  + 40 bytes; CLI export-mask/knockout --scores 10
  delta folder    merge 80 tuning.json + 40 delta.safetensors + 30 header bytes; CLI merge 8
  model folder    load_model / read_signature 40 weights + 30 weights header bytes
                  + 60 config.json + 40 tokenizer files, protocol_for 40 spt-interp.json;
                  CLI info/export-mask/tune/locate/knockout --model 12
  GGUF file       from_gguf 60 (truncated, wrong magic, random bytes, tensor count)
                  + 20 header bytes; CLI models from-gguf 6
That is 1048 examples, about 20 s on 2 cores. The seed is random per run (no derandomize) and
the example database is off: a failure prints the seed and a @reproduce_failure blob;
`pytest --hypothesis-seed=N` reruns a run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import string
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from gguf_files import write_tiny_llama_gguf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.common.head_scores import read_scores
from spt_interp.data import PROTOCOL_FILE, Protocol, load_dialogues, protocol_for, save_dialogues
from spt_interp.data.records import (
    DialogueRecord,
    Turn,
    parse_options,
    parse_record,
    record_to_json,
)
from spt_interp.errors import SptInterpError
from spt_interp.importers.gguf import from_gguf
from spt_interp.mask import HeadMask, ModelSignature
from spt_interp.model import load_model, read_signature
from spt_interp.model.folder import SHAPE_FIELDS
from spt_interp.model.tiny import TINY_ARCHITECTURES, save_tiny_model
from spt_interp.organism import ASSET_DIR as ORGANISM_DIR
from spt_interp.tuning import TuneConfig, merge, tune_folder

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
SAMPLE = Path(__file__).parent / "data" / "are_you_sure_sample.jsonl"
runner = CliRunner()


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --- checks every refusal must pass ----------------------------------------------------------


def refused(call, *names) -> str:
    """Return the message of the SptInterpError ``call()`` raises; check it names ``names``."""
    with pytest.raises(SptInterpError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message and "\r" not in message, message
    for name in names:
        assert str(name) in message, (str(name), message)
    return message


def refused_or_read(call, names, check_read) -> None:
    """For a mutation that may keep the file valid: refused as ``refused`` checks, or read and
    ``check_read(result)`` (which asserts it read what the unmutated file holds)."""
    try:
        result = call()
    except SptInterpError as err:
        message = str(err)
        assert "\n" not in message, message
        for name in names:
            assert str(name) in message, (str(name), message)
        return
    check_read(result)


def nothing_written(out: Path) -> None:
    assert not out.exists(), out
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == [], leftovers


def cli_refused(args, *names, out: Path | None = None) -> str:
    """Run the CLI in process; check exit 2, one "error: " line naming ``names``, no output."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, (args, result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and "\r" not in result.output
    lines = [line for line in result.output.split("\n") if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for name in names:
        assert str(name) in lines[0], (str(name), lines[0])
    if out is not None:
        nothing_written(out)
    return lines[0]


def scratch(tmp_path: Path) -> Path:
    """Return a fresh folder for one example (tmp_path is shared by a test's examples)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


# --- strategies --------------------------------------------------------------------------------

DROP = object()  # "delete this key" in a JSON edit
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(),  # NaN and infinities too: Python's json writes and reads them
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
not_str = json_values.filter(lambda v: not isinstance(v, str))  # None included
not_str_nor_none = json_values.filter(lambda v: v is not None and not isinstance(v, str))
not_dict = json_values.filter(lambda v: not isinstance(v, dict))
not_list = json_values.filter(lambda v: not isinstance(v, list))
not_int = json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
not_positive = not_int | st.integers(max_value=0)
not_number = json_values.filter(
    lambda v: v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))
)


def edit(data, path: tuple, value):
    """Set ``data[path[0]][path[1]]...`` to ``value`` (delete the key for DROP), in place."""
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value


def replace_byte(draw_data, raw: bytes, low: int = 0, high: int | None = None) -> tuple:
    """Return (mutated bytes, position): one byte in [low, high) replaced by another value."""
    high = len(raw) if high is None else high
    position = draw_data.draw(st.integers(low, high - 1), label="position")
    new = draw_data.draw(st.integers(0, 255).filter(lambda b: b != raw[position]), label="byte")
    return raw[:position] + bytes([new]) + raw[position + 1 :], position


# --- 1. dialogue JSONL (load_dialogues; --data of tune, locate, evaluate, knockout) -------------

SAMPLE_GOOD = [line for line in SAMPLE.read_text().splitlines()[:-1] if line.strip()]
BASE_LINES = DATA.read_text().splitlines() + SAMPLE_GOOD
BASE_RECORDS = [parse_record(json.loads(line), DATA, i) for i, line in enumerate(BASE_LINES, 1)]
record_choice = st.lists(st.sampled_from(range(len(BASE_RECORDS))), min_size=1, max_size=5)
# Text for generated records: any code point but surrogates (hypothesis' default), so also
# U+2028, U+0085, \x1c ... which JSON may hold unescaped.
any_text = st.text(max_size=12)


def is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text and "\r" not in text


def lone_surrogate_line(index: int, surrogate: int) -> str:
    raw = copy.deepcopy(BASE_RECORDS[index].raw)
    raw["prompt"][0]["content"] += chr(surrogate)
    return json.dumps(raw)  # ensure_ascii: written as a "\udXXX" escape


# A line that no record can be: not JSON, JSON but no object, an object with no prompt, an
# integer json refuses to convert, arrays nested past the recursion limit, a lone surrogate.
garbage_lines = st.one_of(
    st.text(min_size=1, max_size=30).filter(lambda t: one_line(t) and not is_json_object(t)),
    json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps),
    st.dictionaries(st.text(max_size=6).filter(lambda k: k != "prompt"), json_values, max_size=3)
    .map(json.dumps),
    st.integers(4301, 6000).map(lambda n: "1" * n),
    st.sampled_from([1500, 100_000]).map(lambda n: "[" * n + "]" * n),
    st.builds(lone_surrogate_line, st.sampled_from(range(len(BASE_RECORDS))),
              st.integers(0xD800, 0xDFFF)),
)  # fmt: skip


def write_records(path: Path, records: list[DialogueRecord]) -> Path:
    return save_dialogues(records, path)


@fuzz(50)
@given(chosen=record_choice, data=st.data(), garbage=garbage_lines)
def test_jsonl_garbage_line_is_refused_naming_file_and_line(tmp_path, chosen, data, garbage):
    path = write_records(scratch(tmp_path) / "d.jsonl", [BASE_RECORDS[i] for i in chosen])
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    at = data.draw(st.integers(0, len(lines)), label="line index")
    lines.insert(at, garbage)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    refused(lambda: load_dialogues(path), f"{path}:{at + 1}: ")


def field_mutations(raw: dict) -> list[tuple[tuple, st.SearchStrategy]]:
    """Return (path, values) whose every value makes the record invalid."""
    turns = range(len(raw["prompt"]))
    base = raw["base"]
    options = [
        (("prompt",), st.just(DROP) | not_list | st.just([]) | st.lists(not_dict, min_size=1)),
        (("prompt", 0, "type"), st.just(DROP) | json_values.filter(lambda v: v != "human")),
        (("base",), st.just(DROP) | not_dict),
        (("base", "question"), st.just(DROP) | not_str),
        *[(("base", key), not_str_nor_none)
          for key in ("dataset", "correct_answer", "incorrect_answer", "correct_letter")],
        (("base", "answer"), not_str_nor_none.filter(
            lambda v: not (isinstance(v, list) and all(isinstance(x, str) for x in v)))),
    ]  # fmt: skip
    for k in turns:
        options.append((("prompt", k), not_dict))
        options.append((("prompt", k, "content"), st.just(DROP) | not_str))
        options.append(
            (
                ("prompt", k, "type"),
                st.just(DROP) | json_values.filter(lambda v: v not in ("human", "ai")),
            )
        )
    if not any(key in base for key in ("answer", "answers", "correct_letter")):
        options.append((("base", "correct_answer"), st.just(DROP)))
    if "correct_letter" in base and "correct_answer" not in base:
        # Options text with no "(X) ..." line: the letter names no answer.
        options.append((("base", "answers"), any_text.filter(lambda t: not parse_options(t))))
    return options


@fuzz(60)
@given(chosen=record_choice, data=st.data())
def test_jsonl_record_with_a_wrong_field_is_refused_naming_file_and_line(tmp_path, chosen, data):
    records = [BASE_RECORDS[i] for i in chosen]
    at = data.draw(st.integers(0, len(records) - 1), label="record")
    raw = copy.deepcopy(records[at].raw)
    path_in_record, values = data.draw(st.sampled_from(field_mutations(raw)), label="field")
    edit(raw, path_in_record, data.draw(values, label="value"))
    records[at] = dataclasses.replace(records[at], raw=raw)
    path = write_records(scratch(tmp_path) / "d.jsonl", records)
    refused(lambda: load_dialogues(path), f"{path}:{at + 1}: ")


unicode_records = st.lists(
    st.builds(
        lambda question, content, answer, dataset: DialogueRecord(
            question=question, dataset=dataset or "unknown",
            prompt=[Turn("human", content)], correct_answer=answer,
        ),
        any_text, any_text, any_text, any_text,
    ),
    min_size=1, max_size=4,
)  # fmt: skip


@fuzz(40)
@given(records=unicode_records)
def test_jsonl_save_then_load_round_trips_any_text(tmp_path, records):
    # U+2028, U+0085, \x1c ... used to split a saved record in two (str.splitlines).
    path = write_records(scratch(tmp_path) / "d.jsonl", records)
    assert [r.raw for r in load_dialogues(path)] == [record_to_json(r) for r in records]


@fuzz(40)
@given(records=unicode_records, chosen=record_choice, data=st.data())
def test_jsonl_truncated_file_is_refused_at_its_last_line(tmp_path, records, chosen, data):
    records = [BASE_RECORDS[i] for i in chosen] + records
    path = write_records(scratch(tmp_path) / "d.jsonl", records)
    raw = path.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    path.write_bytes(raw[:cut])
    kept, partial = raw[:cut].count(b"\n"), raw[:cut].rsplit(b"\n", 1)[-1]
    if partial == b"" or partial == raw.split(b"\n")[kept]:  # cut at a line's end
        if kept == 0 and partial == b"":
            refused(lambda: load_dialogues(path), f"{path} holds no records")
        else:
            loaded = load_dialogues(path)
            assert len(loaded) == kept + (partial != b"")
    else:  # a record cut short, or a character cut in two: named by its line
        refused(lambda: load_dialogues(path), f"{path}:{kept + 1}: ")


@fuzz(40)
@given(records=unicode_records, chosen=record_choice, data=st.data())
def test_jsonl_replaced_byte_is_refused_at_its_line_or_read(tmp_path, records, chosen, data):
    path = write_records(scratch(tmp_path) / "d.jsonl", [BASE_RECORDS[i] for i in chosen] + records)
    mutated, position = replace_byte(data, path.read_bytes())
    path.write_bytes(mutated)
    line = mutated[:position].count(b"\n") + 1
    try:
        load_dialogues(path)
    except SptInterpError as err:
        message = str(err)
        # A new line break splits the line: the error may be in either half.
        assert message.startswith((f"{path}:{line}: ", f"{path}:{line + 1}: ")), message
        assert "\n" not in message


@pytest.fixture(scope="module")
def llama(tmp_path_factory, bpe_tokenizer):
    """A tiny Llama (context 256, like test_tuning_cli's) and a head mask for it."""
    root = tmp_path_factory.mktemp("fuzz_llama")
    folder = save_tiny_model("llama", root / "llama", tokenizer=bpe_tokenizer, n_ctx=256)
    HeadMask.from_heads(ModelSignature.of_folder(folder), [(0, 1), (1, 2)]).save(root / "mask.json")
    return folder


@pytest.fixture(scope="module")
def llama_mask(llama):
    return llama.parent / "mask.json"


@fuzz(12)
@given(chosen=record_choice, data=st.data(), garbage=garbage_lines)
def test_jsonl_cli_commands_refuse_a_bad_data_file(
    tmp_path, llama, llama_mask, chosen, data, garbage
):
    folder = scratch(tmp_path)
    path = write_records(folder / "d.jsonl", [BASE_RECORDS[i] for i in chosen])
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    at = data.draw(st.integers(0, len(lines)), label="line index")
    lines.insert(at, garbage)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = folder / "out"
    command = data.draw(st.sampled_from(["tune", "locate", "evaluate", "evaluate --general",
                                         "knockout"]), label="command")  # fmt: skip
    args = {
        "tune": ["tune", "--data", path, "--mask", llama_mask, "--device", "cpu", "--out", out],
        "locate": ["locate", "--data", path, "--device", "cpu", "--out", out],
        "evaluate": ["evaluate", "--data", path, "--device", "cpu", "--out", out],
        "evaluate --general": ["evaluate", "--data", DATA, "--general", path, "--out", out],
        "knockout": ["knockout", "--data", path, "--mask", llama_mask, "--out", out],
    }[command]
    cli_refused([*args, "--model", llama], f"{path}:{at + 1}: ", out=out)


# --- 2. head mask JSON (HeadMask.load; tune --mask, knockout --mask) ---------------------------


def not_a_component(value) -> bool:
    return not (isinstance(value, str) and value.strip().lower() in ("q", "k", "v", "o"))


def mask_fields(data: dict) -> list[tuple[tuple, st.SearchStrategy]]:
    """Return (path, values) whose every value makes the mask invalid (dropping included)."""
    model = data["model"]
    heads = range(len(data["heads"]))
    options = [
        (("format",), st.just(DROP) | json_values),  # the drawn value is never the format
        (("version",), st.just(DROP) | json_values.filter(lambda v: v != 1)),
        (("model",), st.just(DROP) | not_dict),
        (("heads",), st.just(DROP) | not_list | st.just([])),
        (("components",), st.just(DROP) | not_list | st.just([])
         | st.lists(json_values.filter(not_a_component), min_size=1)),
        (("source",), st.just(DROP) | not_dict),
        *[(("model", k), st.just(DROP) | not_str) for k in ("architecture", "fingerprint")],
        *[(("model", k), st.just(DROP) | not_positive)
          for k in ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model")],
        *[(("source", k), st.just(DROP) | not_str) for k in ("method", "metric", "created")],
        (("source", "data_file_hash"), not_str_nor_none),
    ]  # fmt: skip
    for i in heads:
        options += [
            (("heads", i), not_dict),
            (("heads", i, "layer"), st.just(DROP) | not_int | st.integers(max_value=-1)
             | st.integers(min_value=model["n_layers"])),
            (("heads", i, "head"), st.just(DROP) | not_int | st.integers(max_value=-1)
             | st.integers(min_value=model["n_heads"])),
            (("heads", i, "score"), not_number | st.integers(min_value=2**1024)),
        ]  # fmt: skip
    return options


def assume_not_format(value) -> bool:
    return value != "spt-interp/head-mask"


@fuzz(80)
@given(data=st.data())
def test_mask_with_a_wrong_field_is_refused_naming_the_file(tmp_path, llama_mask, data):
    path = scratch(tmp_path) / "mask.json"
    mask = json.loads(llama_mask.read_text())
    field, values = data.draw(st.sampled_from(mask_fields(mask)), label="field")
    value = data.draw(values.filter(assume_not_format), label="value")
    edit(mask, field, value)
    heads = mask.get("heads")
    if isinstance(heads, list) and heads and data.draw(st.booleans(), label="repeat a head"):
        heads.append(copy.deepcopy(heads[0]))
    path.write_text(json.dumps(mask))
    refused(lambda: HeadMask.load(path), path)


@fuzz(30)
@given(data=st.data())
def test_mask_truncated_is_refused_naming_the_file(tmp_path, llama_mask, data):
    path = scratch(tmp_path) / "mask.json"
    text = llama_mask.read_bytes()
    path.write_bytes(text[: data.draw(st.integers(0, len(text.rstrip()) - 1), label="cut")])
    refused(lambda: HeadMask.load(path), path)


whole_file_garbage = st.one_of(
    st.binary(max_size=200),
    json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps).map(str.encode),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3).map(json.dumps).map(str.encode),
    st.sampled_from([b"1" * 5000, b"[" * 100_000, b"{}", b"\xef\xbb\xbf{}"]),
)


@fuzz(30)
@given(content=whole_file_garbage)
def test_mask_garbage_file_is_refused_naming_the_file(tmp_path, content):
    path = scratch(tmp_path) / "mask.json"
    path.write_bytes(content)
    refused(lambda: HeadMask.load(path), path)


@fuzz(30)
@given(data=st.data())
def test_mask_replaced_byte_is_refused_or_read(tmp_path, llama_mask, data):
    path = scratch(tmp_path) / "mask.json"
    path.write_bytes(replace_byte(data, llama_mask.read_bytes())[0])
    refused_or_read(lambda: HeadMask.load(path), [path], lambda mask: None)


@fuzz(10)
@given(data=st.data())
def test_mask_cli_commands_refuse_a_bad_mask(tmp_path, llama, llama_mask, data):
    folder = scratch(tmp_path)
    path, out = folder / "mask.json", folder / "out"
    mask = json.loads(llama_mask.read_text())
    field, values = data.draw(st.sampled_from(mask_fields(mask)), label="field")
    edit(mask, field, data.draw(values.filter(assume_not_format), label="value"))
    path.write_text(json.dumps(mask))
    if data.draw(st.booleans(), label="tune"):
        args = ["tune", "--data", DATA, "--mask", path, "--device", "cpu", "--out", out]
    else:
        args = ["knockout", "--data", DATA, "--mask", path, "--out", out]
    cli_refused([*args, "--model", llama], path, out=out)


# --- 3. scores CSV (read_scores, HeadMask.from_scores; export-mask / knockout --scores) --------


def scores_table(locate_layout: bool) -> pd.DataFrame:
    """A 2 x 4 heads table: locate's scores.csv columns, or export-mask's test layout."""
    rows = [{"layer": layer, "head": head, "score": (layer * 4 + head) * 0.1 - 0.3}
            for layer in range(2) for head in range(4)]  # fmt: skip
    table = pd.DataFrame(rows)
    if locate_layout:
        table["apology_effect"] = -table.score
        table["rank"] = table.score.rank(ascending=False, method="first").astype(int)
    else:
        table["method"], table["metric"] = "path_patching", "log_odds"
    return table


def write_scores(path: Path, table: pd.DataFrame) -> Path:
    path.write_text(table.to_csv(index=False))  # as viz.locate_report writes scores.csv
    return path


def is_integer_value(value) -> bool:
    return (
        isinstance(value, float)
        and math.isfinite(value)
        and value == int(value)
        and abs(value) < 2**63
    )


# Cells that no integer column may hold (letters only: no digits that could make a number).
not_integer_cells = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "", "1.5", "-0.25", "1e30", "99999999999999999999",
                     "True", "1_0", "0x1", "L3"]),
    st.text(alphabet=string.ascii_letters + " !?#@_/", max_size=6),
    st.floats().filter(lambda x: not is_integer_value(x)),
)  # fmt: skip
not_number_cells = st.text(alphabet=string.ascii_letters + " !?#@_/", max_size=6).filter(
    lambda t: t.strip().lower() not in ("inf", "infinity")
)


@fuzz(50)
@given(locate_layout=st.booleans(), data=st.data())
def test_scores_bad_cell_is_refused_naming_file_and_line(tmp_path, locate_layout, data):
    table = scores_table(locate_layout)
    columns = ["layer", "head"] + (["rank"] if locate_layout else ["score"])
    column = data.draw(st.sampled_from(columns), label="column")
    row = data.draw(st.integers(0, len(table) - 1), label="row")
    value = data.draw(not_number_cells if column == "score" else not_integer_cells, label="cell")
    table[column] = table[column].astype(object)
    table.at[row, column] = value
    path = write_scores(scratch(tmp_path) / "scores.csv", table)
    refused(lambda: read_scores(path), path, f"line {row + 2}")


@fuzz(30)
@given(locate_layout=st.booleans(), data=st.data())
def test_scores_missing_column_or_repeated_head_is_refused(tmp_path, locate_layout, data):
    table = scores_table(locate_layout)
    path = scratch(tmp_path) / "scores.csv"
    if data.draw(st.booleans(), label="drop a column"):
        dropped = data.draw(st.sampled_from(["layer", "head", "score"]), label="column")
        write_scores(path, table.drop(columns=dropped))
        refused(lambda: read_scores(path), path, f"lacks column(s) {dropped}")
        return
    row = data.draw(st.integers(0, len(table) - 1), label="row")
    at = data.draw(st.integers(0, len(table)), label="insert at")
    copied = pd.concat([table.iloc[:at], table.iloc[[row]], table.iloc[at:]], ignore_index=True)
    second = at if at > row else row + 1  # the later of the two equal rows
    write_scores(path, copied)
    refused(lambda: read_scores(path), path, f"twice (line {second + 2})")


@pytest.fixture(scope="module")
def llama_signature(llama):
    return ModelSignature.of_folder(llama)


@fuzz(30)
@given(locate_layout=st.booleans(), data=st.data())
def test_scores_head_outside_the_model_is_refused_naming_the_file(
    tmp_path, llama_signature, locate_layout, data
):
    table = scores_table(locate_layout)
    column = data.draw(st.sampled_from(["layer", "head"]), label="column")
    limit = {"layer": llama_signature.n_layers, "head": llama_signature.n_heads}[column]
    table.at[data.draw(st.integers(0, len(table) - 1), label="row"), column] = data.draw(
        st.integers(-(10**6), -1) | st.integers(limit, 10**6), label="value"
    )
    path = write_scores(scratch(tmp_path) / "scores.csv", table)
    # read_scores cannot know the model; the mask built from the table names the file.
    refused(lambda: HeadMask.from_scores(llama_signature, read_scores(path), top_frac=1.0), path)


@fuzz(40)
@given(locate_layout=st.booleans(), data=st.data())
def test_scores_truncated_replaced_or_random_bytes_are_refused_or_read(
    tmp_path, locate_layout, data
):
    path = write_scores(scratch(tmp_path) / "scores.csv", scores_table(locate_layout))
    raw = path.read_bytes()
    how = data.draw(st.sampled_from(["truncate", "byte", "random"]), label="mutation")
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    elif how == "byte":
        raw = replace_byte(data, raw)[0]
    else:
        raw = data.draw(st.binary(max_size=300), label="bytes")
    path.write_bytes(raw)
    refused_or_read(lambda: read_scores(path), [path], lambda table: None)


@fuzz(10)
@given(data=st.data())
def test_scores_cli_commands_refuse_a_bad_scores_file(tmp_path, llama, llama_mask, data):
    folder = scratch(tmp_path)
    table = scores_table(locate_layout=True)
    column = data.draw(st.sampled_from(["layer", "head", "rank"]), label="column")
    row = data.draw(st.integers(0, len(table) - 1), label="row")
    table[column] = table[column].astype(object)
    table.at[row, column] = data.draw(not_integer_cells, label="cell")
    path = write_scores(folder / "scores.csv", table)
    if data.draw(st.booleans(), label="export-mask"):
        out = folder / "mask.json"
        args = ["export-mask", "--scores", path, "--top-frac", "1", "--out", out]
    else:
        out = folder / "out"
        args = ["knockout", "--scores", path, "--data", DATA, "--out", out]
    cli_refused([*args, "--model", llama], path, f"line {row + 2}", out=out)


def test_export_mask_names_the_scores_file_of_a_head_outside_the_model(tmp_path, llama):
    table = scores_table(locate_layout=True)
    table.at[3, "layer"] = 7
    path = write_scores(tmp_path / "scores.csv", table)
    out = tmp_path / "mask.json"
    cli_refused(["export-mask", "--model", llama, "--scores", path, "--top-frac", "1", "--out",
                 out], path, "L7.H3 is out of range", out=out)  # fmt: skip


def test_knockout_names_the_scores_file_of_a_head_outside_the_model(tmp_path, llama):
    table = scores_table(locate_layout=True)
    table.at[3, "layer"] = 7
    path = write_scores(tmp_path / "scores.csv", table)
    cli_refused(["knockout", "--model", llama, "--scores", path, "--data", DATA, "--k", "1",
                 "--random-seeds", "0", "--no-png", "--out", tmp_path / "out"], path)  # fmt: skip


# --- 4. delta folders (read_delta via merge; merge --delta) ------------------------------------


@pytest.fixture(scope="module")
def delta(llama, llama_mask):
    """A `tune --save delta` folder of the tiny Llama, and the merged weights it gives."""
    folder = llama.parent / "delta"
    config = TuneConfig(steps=1, batch_size=2)
    tune_folder(llama, DATA, folder, config, mask=llama_mask, save="delta", progress=False)
    merge(llama, folder, llama.parent / "merged")
    return folder


@pytest.fixture(scope="module")
def merged_weights(delta):
    return load_file(delta.parent / "merged" / "model.safetensors")


def delta_fields(record: dict) -> list[tuple[tuple, st.SearchStrategy]]:
    slices = record["slices"]
    keys = {entry["key"] for entry in slices}
    options = [
        (("format",), st.just(DROP) | json_values),
        (("kind",), st.just(DROP) | json_values.filter(lambda v: v != "delta")),
        (("base",), st.just(DROP) | not_dict),
        *[(("base", k), st.just(DROP) | not_str) for k in ("fingerprint", "weights_hash")],
        (("base", "weights_hash"), st.text(max_size=20)),  # another base's
        (("slices",), st.just(DROP) | not_list | st.just([])),
    ]  # fmt: skip
    for i, entry in enumerate(slices):
        options += [
            (("slices", i), not_dict),
            (("slices", i, "key"), st.just(DROP) | not_str
             | st.text().filter(lambda k: k not in keys)),
            (("slices", i, "parameter"), st.just(DROP) | not_str | st.text(max_size=12)),
            (("slices", i, "component"), st.just(DROP) | not_str
             | st.text().filter(lambda c: c not in ("q", "k", "v", "o"))),
            (("slices", i, "heads"), st.just(DROP) | not_list | st.just([])
             | st.lists(not_int | st.integers(max_value=-1), min_size=1, max_size=2)),
            (("slices", i, "layer"), st.just(DROP) | not_int | st.integers(max_value=-1)),
            *[(("slices", i, k), st.just(DROP) | not_int
               | st.integers(-100, 100).filter(lambda v, old=entry[k]: v != old))
              for k in ("dim", "start", "stop")],
        ]  # fmt: skip
    # Two slices' tensors swapped: q rows [8, 32] for o columns [32, 8].
    options.append((("slices", 0, "key"), st.just(slices[1]["key"])))
    return options


def truncated_or_random(data, raw: bytes) -> bytes:
    """Return ``raw`` cut at a drawn byte, or drawn random bytes instead (half the time each)."""
    if data.draw(st.booleans(), label="truncate"):
        return raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    return data.draw(st.binary(max_size=600), label="bytes")


def copy_delta(delta: Path, tmp_path: Path) -> tuple[Path, Path]:
    folder = scratch(tmp_path)
    return Path(shutil.copytree(delta, folder / "delta")), folder / "merged"


@fuzz(80)
@given(data=st.data())
def test_delta_record_with_a_wrong_field_is_refused_naming_the_delta(tmp_path, llama, delta, data):
    folder, out = copy_delta(delta, tmp_path)
    record_file = folder / "tuning.json"
    record = json.loads(record_file.read_text())
    how = data.draw(st.sampled_from(["field", "truncate", "garbage"]), label="mutation")
    if how == "field":
        field, values = data.draw(st.sampled_from(delta_fields(record)), label="field")
        edit(
            record,
            field,
            data.draw(values.filter(lambda v: v != "spt-interp/tuning"), label="value"),
        )
        record_file.write_text(json.dumps(record))
    elif how == "truncate":
        raw = record_file.read_bytes()
        record_file.write_bytes(raw[: data.draw(st.integers(0, len(raw.rstrip()) - 1))])
    else:
        record_file.write_bytes(data.draw(whole_file_garbage, label="content"))
    refused(lambda: merge(llama, folder, out), folder)
    nothing_written(out)


@fuzz(40)
@given(data=st.data())
def test_delta_tensors_truncated_or_random_are_refused_naming_the_file(
    tmp_path, llama, delta, data
):
    folder, out = copy_delta(delta, tmp_path)
    tensors = folder / "delta.safetensors"
    raw = tensors.read_bytes()
    raw = truncated_or_random(data, raw)
    tensors.write_bytes(raw)
    refused(lambda: merge(llama, folder, out), folder)
    nothing_written(out)


def header_end(raw: bytes) -> int:
    """Return where a safetensors file's JSON header ends (8-byte length, then the header)."""
    return 8 + int.from_bytes(raw[:8], "little")


def same_tensors(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key


@fuzz(30)
@given(data=st.data())
def test_delta_tensors_header_byte_is_refused_or_merged_alike(
    tmp_path, llama, delta, merged_weights, data
):
    folder, out = copy_delta(delta, tmp_path)
    tensors = folder / "delta.safetensors"
    raw = tensors.read_bytes()
    tensors.write_bytes(replace_byte(data, raw, 0, header_end(raw))[0])

    def merged_alike(record) -> None:  # e.g. a byte of the "format": "pt" metadata
        same_tensors(load_file(out / "model.safetensors"), merged_weights)

    refused_or_read(lambda: merge(llama, folder, out), [folder], merged_alike)


@fuzz(8)
@given(data=st.data())
def test_delta_cli_merge_refuses_a_bad_delta(tmp_path, llama, delta, data):
    folder, out = copy_delta(delta, tmp_path)
    if data.draw(st.booleans(), label="record"):
        record = json.loads((folder / "tuning.json").read_text())
        field, values = data.draw(st.sampled_from(delta_fields(record)), label="field")
        edit(record, field, data.draw(values.filter(lambda v: v != "spt-interp/tuning")))
        (folder / "tuning.json").write_text(json.dumps(record))
    else:
        raw = (folder / "delta.safetensors").read_bytes()
        (folder / "delta.safetensors").write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
    cli_refused(["merge", "--base", llama, "--delta", folder, "--out", out], folder, out=out)


# --- 5. model folders (check_model_folder, read_signature, load_model; every --model) ----------

architectures = st.sampled_from(TINY_ARCHITECTURES)
_reference_parameters: dict[str, dict[str, torch.Tensor]] = {}


def reference_parameters(folder: Path, architecture: str) -> dict[str, torch.Tensor]:
    if architecture not in _reference_parameters:
        hooked = load_model(folder)
        _reference_parameters[architecture] = {
            name: p.detach().clone() for name, p in hooked.hf_parameters.items()
        }
    return _reference_parameters[architecture]


def copy_model(tiny_model_dirs, architecture: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dirs[architecture], scratch(tmp_path) / "model"))


def weights_of(folder: Path) -> Path:
    return next(folder.glob("*.safetensors"))


@fuzz(40)
@given(architecture=architectures, data=st.data())
def test_model_weights_truncated_or_random_are_refused_naming_the_folder(
    tmp_path, tiny_model_dirs, architecture, data
):
    folder = copy_model(tiny_model_dirs, architecture, tmp_path)
    weights = weights_of(folder)
    raw = weights.read_bytes()
    raw = truncated_or_random(data, raw)
    weights.write_bytes(raw)
    refused(lambda: load_model(folder), folder)


@fuzz(30)
@given(architecture=architectures, data=st.data())
def test_model_weights_header_byte_is_refused_or_loaded_alike(
    tmp_path, tiny_model_dirs, architecture, data
):
    expected = reference_parameters(tiny_model_dirs[architecture], architecture)
    folder = copy_model(tiny_model_dirs, architecture, tmp_path)
    weights = weights_of(folder)
    raw = weights.read_bytes()
    weights.write_bytes(replace_byte(data, raw, 0, header_end(raw))[0])

    def loaded_alike(hooked) -> None:  # a renamed tensor used to load as fresh random values
        same_tensors({n: p.detach() for n, p in hooked.hf_parameters.items()}, expected)

    refused_or_read(lambda: load_model(folder), [folder], loaded_alike)


def config_mutation(data, config: dict) -> tuple[str, bool]:
    """Mutate ``config`` in place; return (what, whether the config is now surely invalid)."""
    shape_fields = [name for name in SHAPE_FIELDS if config.get(name) is not None]
    how = data.draw(st.sampled_from(["shape field", "other field", "drop"]), label="mutation")
    if how == "shape field":
        name = data.draw(st.sampled_from(shape_fields), label="field")
        config[name] = data.draw(not_positive.filter(lambda v: v is not None), label="value")
        return name, True
    name = data.draw(st.sampled_from(sorted(config)), label="field")
    if how == "drop":
        del config[name]
    else:
        config[name] = data.draw(json_values.filter(lambda v: type(v) is not type(config[name])))
    return name, name in ("model_type", "architectures") and how == "other field"


@fuzz(60)
@given(architecture=architectures, data=st.data())
def test_model_config_mutated_is_refused_naming_the_file_or_read(
    tmp_path, tiny_model_dirs, architecture, data
):
    folder = copy_model(tiny_model_dirs, architecture, tmp_path)
    config_file = folder / "config.json"
    how = data.draw(st.sampled_from(["field", "truncate", "garbage"]), label="how")
    if how == "field":
        config = json.loads(config_file.read_text())
        _, invalid = config_mutation(data, config)
        config_file.write_text(json.dumps(config))
    elif how == "truncate":
        raw = config_file.read_bytes()
        config_file.write_bytes(raw[: data.draw(st.integers(0, len(raw.rstrip()) - 1))])
        invalid = True
    else:
        config_file.write_bytes(data.draw(whole_file_garbage, label="content"))
        invalid = True
    names = [config_file] if how != "field" or invalid else [folder]
    for reader in (read_signature, load_model):
        if invalid:
            refused(lambda reader=reader: reader(folder), *names)
        else:  # a dropped or retyped field transformers may default or ignore
            refused_or_read(lambda reader=reader: reader(folder), names, lambda result: None)


def tokenizer_mutation(data, folder: Path) -> bool:
    """Mutate a tokenizer file of ``folder``; return whether it is now surely invalid."""
    spec_file = folder / "tokenizer.json"
    how = data.draw(st.sampled_from(["truncate", "field", "config field"]), label="how")
    if how == "truncate":
        raw = spec_file.read_bytes()
        spec_file.write_bytes(raw[: data.draw(st.integers(0, len(raw.rstrip()) - 1))])
        return True
    name = "tokenizer.json" if how == "field" else "tokenizer_config.json"
    spec = json.loads((folder / name).read_text())
    key = data.draw(st.sampled_from(sorted(spec)), label="key")
    # Values the tokenizers library refuses for any top-level field (null and [] may be valid).
    spec[key] = data.draw(
        st.one_of(
            st.integers(),
            st.floats(),
            st.booleans(),
            st.text(min_size=1, max_size=8).filter(lambda t: t != spec[key]),
            st.lists(st.integers(), min_size=1, max_size=3),
            st.dictionaries(st.text(min_size=1, max_size=4), st.integers(), min_size=1, max_size=2),
        ),
        label="value",
    )
    (folder / name).write_text(json.dumps(spec))
    return how == "field"


@fuzz(40)
@given(architecture=architectures, data=st.data())
def test_model_tokenizer_files_mutated_are_refused_naming_the_folder(
    tmp_path, tiny_model_dirs, architecture, data
):
    folder = copy_model(tiny_model_dirs, architecture, tmp_path)
    if tokenizer_mutation(data, folder):
        refused(lambda: load_model(folder), folder)
    else:  # tokenizer_config.json: many fields are free-form
        refused_or_read(lambda: load_model(folder), [folder], lambda hooked: None)


PROTOCOL_FIELDS = {f.name: f.type for f in dataclasses.fields(Protocol)}
bad_templates = st.sampled_from(
    [
        "{opener} {answer} {x}",
        "{opener} {answer} {0}",
        "{opener} {answer} {",
        "{opener} {answer} }",
        "{opener}",
        "{opener.real} {answer}",
        "{opener!z} {answer}",
        "{answer}",
    ]
)
protocol_values = {
    "list[str]": not_list | st.lists(not_str, min_size=1, max_size=2),
    "str": not_str | st.sampled_from(["", "  "]),
    "str | None": not_str_nor_none,
}  # fmt: skip


def protocol_mutation(data, path: Path) -> None:
    """Write a mutated copy of the organism's spt-interp.json (the project's own) at ``path``."""
    raw = (ORGANISM_DIR / PROTOCOL_FILE).read_bytes()
    how = data.draw(st.sampled_from(["field", "template", "truncate", "garbage"]), label="how")
    if how == "truncate":
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw.rstrip()) - 1), label="cut")])
    elif how == "garbage":
        path.write_bytes(data.draw(whole_file_garbage.filter(lambda b: b != b"{}"), label="file"))
    else:
        fields = json.loads(raw)
        if how == "template":
            name = data.draw(st.sampled_from(["stand_by_template", "correction_template"]))
            fields[name] = data.draw(bad_templates, label="template")
        else:
            name = data.draw(st.sampled_from(sorted(PROTOCOL_FIELDS)), label="field")
            fields[name] = data.draw(protocol_values[PROTOCOL_FIELDS[name]], label="value")
        path.write_text(json.dumps(fields))


@fuzz(40)
@given(data=st.data())
def test_model_protocol_file_mutated_is_refused_naming_the_file(tmp_path, tiny_model_dirs, data):
    folder = copy_model(tiny_model_dirs, "llama", tmp_path)
    protocol_mutation(data, folder / PROTOCOL_FILE)
    refused(lambda: protocol_for(folder), folder / PROTOCOL_FILE)


@fuzz(12)
@given(architecture=architectures, data=st.data())
def test_model_cli_commands_refuse_a_bad_model_folder(
    tmp_path, tiny_model_dirs, llama_mask, architecture, data
):
    folder = copy_model(tiny_model_dirs, architecture, tmp_path)
    out = folder.parent / "out"
    what = data.draw(st.sampled_from(["weights", "config", "tokenizer", "protocol"]))
    tune = ["tune", "--data", DATA, "--mask", llama_mask, "--device", "cpu", "--out", out]
    commands = [["info", "--with-weights"], tune]
    named = folder
    if what == "weights":
        weights = weights_of(folder)
        raw = weights.read_bytes()
        weights.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")])
    elif what == "config":
        config = json.loads((folder / "config.json").read_text())
        name = data.draw(st.sampled_from([n for n in SHAPE_FIELDS if config.get(n) is not None]))
        config[name] = data.draw(not_positive.filter(lambda v: v is not None), label="value")
        (folder / "config.json").write_text(json.dumps(config))
        named = folder / "config.json"
        # info without weights and export-mask read the config only.
        scores = write_scores(folder.parent / "scores.csv", scores_table(locate_layout=True))
        commands += [["info"], ["export-mask", "--scores", scores, "--top-k", "1", "--out", out]]
    elif what == "tokenizer":
        raw = (folder / "tokenizer.json").read_bytes()
        (folder / "tokenizer.json").write_bytes(raw[: data.draw(st.integers(0, len(raw) - 10))])
    else:  # spt-interp.json: read by the commands that run the protocol, before the model
        protocol_mutation(data, folder / PROTOCOL_FILE)
        named = folder / PROTOCOL_FILE
        commands = [["locate", "--data", DATA, "--device", "cpu", "--out", out],
                    ["knockout", "--data", DATA, "--mask", llama_mask, "--out", out]]  # fmt: skip
    args = data.draw(st.sampled_from(commands), label="command")
    cli_refused([*args, "--model", folder], named, out=out)


# --- 6. GGUF files (from_gguf; models from-gguf) ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, bpe_tokenizer):
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("fuzz_gguf") / "tiny.gguf", bpe_tokenizer)


@pytest.fixture(scope="module")
def converted_weights(tiny_gguf):
    out = tiny_gguf.parent / "converted"
    from_gguf(tiny_gguf, out)
    return load_file(out / "model.safetensors")


def mutated_gguf(data, raw: bytes) -> bytes:
    """Return ``raw`` truncated, with another magic, random, or with its tensor count lowered."""
    how = data.draw(st.sampled_from(["truncate", "magic", "random", "random after header",
                                     "fewer tensors"]), label="mutation")  # fmt: skip
    if how == "truncate":
        return raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    if how == "magic":
        return data.draw(st.binary(min_size=4, max_size=4).filter(lambda m: m != b"GGUF")) + raw[4:]
    if how == "random":
        return data.draw(st.binary(max_size=400), label="bytes")
    if how == "random after header":  # magic and version 3, then anything
        return raw[:8] + data.draw(st.binary(max_size=400), label="bytes")
    count = int.from_bytes(raw[8:16], "little")
    fewer = count - data.draw(st.integers(1, count), label="tensors fewer")
    return raw[:8] + fewer.to_bytes(8, "little") + raw[16:]


@fuzz(60)
@given(data=st.data())
def test_gguf_corrupted_is_refused_naming_the_file(tmp_path, tiny_gguf, data):
    folder = scratch(tmp_path)
    source, out = folder / "model.gguf", folder / "model"
    source.write_bytes(mutated_gguf(data, tiny_gguf.read_bytes()))
    refused(lambda: from_gguf(source, out), source)
    nothing_written(out)


@fuzz(20)
@given(data=st.data())
def test_gguf_header_byte_is_refused_or_converted_alike(
    tmp_path, tiny_gguf, converted_weights, data
):
    folder = scratch(tmp_path)
    source, out = folder / "model.gguf", folder / "model"
    # Version, tensor count and key/value count: bytes 4 to 24.
    source.write_bytes(replace_byte(data, tiny_gguf.read_bytes(), 4, 24)[0])

    def converted_alike(summary) -> None:  # e.g. version 2, whose layout is version 3's
        same_tensors(load_file(out / "model.safetensors"), converted_weights)

    refused_or_read(lambda: from_gguf(source, out), [source], converted_alike)
    if not out.exists():
        nothing_written(out)


@fuzz(6)
@given(data=st.data())
def test_gguf_cli_from_gguf_refuses_a_corrupted_file(tmp_path, tiny_gguf, data):
    folder = scratch(tmp_path)
    source, out = folder / "model.gguf", folder / "model"
    source.write_bytes(mutated_gguf(data, tiny_gguf.read_bytes()))
    cli_refused(["models", "from-gguf", source, "--out", out], source, out=out)
