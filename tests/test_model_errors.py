"""Bad model folders: one-line messages naming the path and what is missing, exit code 2."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.errors import SptInterpError
from spt_interp.model import load_model

runner = CliRunner()


def run_info(folder) -> tuple[int, str]:
    result = runner.invoke(app, ["info", "--model", str(folder)])
    return result.exit_code, result.output


@pytest.fixture
def llama_copy(tmp_path, tiny_model_dirs):
    return shutil.copytree(tiny_model_dirs["llama"], tmp_path / "llama")


def assert_refused(folder, *fragments: str) -> None:
    with pytest.raises(SptInterpError) as raised:
        load_model(folder)
    for fragment in fragments:
        assert fragment in str(raised.value)
    exit_code, output = run_info(folder)
    assert exit_code == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_path(tmp_path):
    assert_refused(tmp_path / "nowhere", str(tmp_path / "nowhere"), "does not exist")


def test_file_instead_of_folder(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_text("x")
    assert_refused(file, str(file), "not a Hugging Face model folder")


def test_folder_without_config(llama_copy):
    (llama_copy / "config.json").unlink()
    assert_refused(llama_copy, str(llama_copy), "no config.json")


def test_folder_without_weights(llama_copy):
    for weights in llama_copy.glob("*.safetensors"):
        weights.unlink()
    assert_refused(llama_copy, str(llama_copy), "no weights")


def test_folder_without_tokenizer(llama_copy):
    (llama_copy / "tokenizer.json").unlink()
    assert_refused(llama_copy, str(llama_copy), "no tokenizer")


def test_a_family_the_architecture_table_does_not_know(tmp_path, bpe_tokenizer, monkeypatch):
    from transformers import AutoModelForCausalLM, BioGptConfig

    folder = tmp_path / "biogpt"
    config = BioGptConfig(
        vocab_size=len(bpe_tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)

    def no_loading(*args, **kwargs):
        raise AssertionError("the weights were read before the refusal")

    # Refused before the model loads: from the config alone, naming the family and the table.
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_loading)
    assert_refused(
        folder, str(folder), "model family 'biogpt' (BioGptForCausalLM)",
        "is not in spt-interp's architecture table", "spt_interp/common/families.py",
    )  # fmt: skip


def test_cli_exit_code_from_a_real_process(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "spt_interp.cli", "info", "--model", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip() == f"error: model folder {tmp_path / 'none'} does not exist"


def test_info_prints_geometry_and_fingerprint(tiny_model_dirs):
    result = runner.invoke(app, ["info", "--model", str(tiny_model_dirs["qwen2"]), "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.output)
    assert report["architecture"] == "Qwen2ForCausalLM"
    assert report["n_kv_heads"] == 2 and report["fingerprint"].startswith("sha256:")
    # Read without the weights, yet the loaded model's fingerprint; --with-weights differs.
    hooked = load_model(tiny_model_dirs["qwen2"])
    assert report["fingerprint"] == hooked.fingerprint()
    weighed = runner.invoke(
        app, ["info", "--model", str(tiny_model_dirs["qwen2"]), "--json", "--with-weights"]
    )
    assert json.loads(weighed.output)["fingerprint"] == hooked.fingerprint(include_weights=True)
    assert hooked.fingerprint(include_weights=True) != hooked.fingerprint()
