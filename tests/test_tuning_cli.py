"""`spt-interp tune` / `merge`: bad input refused before training; two processes equal one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.mask import HeadMask
from spt_interp.tiny import save_tiny_model
from spt_interp.tuning import TuneConfig, load_base, tune

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"


@pytest.fixture(scope="module")
def model(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("tune_cli")
    return save_tiny_model("llama", root / "llama", tokenizer=bpe_tokenizer, n_ctx=256)


@pytest.fixture
def mask(model, tmp_path):
    return HeadMask.from_heads(load_base(model), [(0, 1), (1, 2)]).save(tmp_path / "mask.json")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def no_training(monkeypatch):
    """Make any training attempt fail loudly: refusals must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("spt_interp.tuning.run.train", refuse)


def test_cli_tune_delta_and_merge_report_counts_and_verification(model, mask, tmp_path):
    result = invoke("tune", "--model", model, "--data", DATA, "--mask", mask, "--out",
                    tmp_path / "delta", "--save", "delta", "--steps", "2",
                    "--batch-size", "4")  # fmt: skip
    assert result.exit_code == 0, result.output
    g = load_base(model).geometry
    assert f"trainable parameters: {2 * g.d_head * g.d_model * 2}" in result.output
    assert "bit-identical" in result.output
    merged = invoke("merge", "--base", model, "--delta", tmp_path / "delta", "--out",
                    tmp_path / "merged")  # fmt: skip
    assert merged.exit_code == 0, merged.output
    assert (tmp_path / "merged" / "config.json").is_file()


def test_bad_inputs_are_refused_before_training(model, mask, tmp_path, no_training, bpe_tokenizer):
    other = save_tiny_model("gpt2", tmp_path / "gpt2", tokenizer=bpe_tokenizer)
    other_mask = HeadMask.from_heads(load_base(other), [(0, 1)]).save(tmp_path / "other.json")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(DATA.read_text().splitlines()[0] + "\n{not json\n")
    (tmp_path / "taken").mkdir()
    cases = [
        (["--data", DATA, "--mask", other_mask, "--out", tmp_path / "a"], "was made for"),
        (["--data", empty, "--mask", mask, "--out", tmp_path / "b"], "holds no records"),
        (["--data", broken, "--mask", mask, "--out", tmp_path / "c"], "broken.jsonl:2"),
        (["--data", DATA, "--mask", mask, "--out", tmp_path / "taken"], "pass --force"),
        (["--data", DATA, "--mask", mask, "--out", model, "--force"], "is the model folder"),
        (["--data", DATA, "--out", tmp_path / "d"], "needs --mask"),
        (["--data", DATA, "--mode", "sft", "--save", "delta", "--out", tmp_path / "e"],
         "--save delta"),
    ]  # fmt: skip
    for args, message in cases:
        result = invoke("tune", "--model", model, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (message, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["gpt2", "other.json", "mask.json", "empty.jsonl", "broken.jsonl", "taken"])  # fmt: skip


def test_two_processes_train_the_same_deltas_as_one(model, mask, tmp_path):
    config = TuneConfig(steps=2, batch_size=4, lr=1e-2)
    tune(model, DATA, tmp_path / "one", config, mask=mask, save="delta", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "spt_interp.cli", "tune", "--model", str(model),
               "--data", str(DATA), "--mask", str(mask), "--out", str(tmp_path / "two"),
               "--save", "delta", "--steps", "2", "--batch-size", "4", "--lr", "1e-2",
               "--device", "cpu"]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es)" in run.stdout
    one = load_file(tmp_path / "one" / "delta.safetensors")
    two = load_file(tmp_path / "two" / "delta.safetensors")
    assert set(one) == set(two)
    for key in one:
        assert one[key].abs().max() > 0
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)
