"""`spt-interp tune` / `merge`: bad input refused before training; two processes equal one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask
from spt_interp.model.tiny import save_tiny_model
from spt_interp.tuning import TuneConfig, load_base, tune_folder

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


# float32 rounding: u = 2**-24 ~ 6e-8; a reduction over n terms is off by at most about n * u
# of the sum of its terms' magnitudes (gamma_n), with n <= ~10^3 here (batch x pos, d_model, the
# vocabulary). Splitting the batch over processes only reorders such sums, and a backward pass
# composes a few tens of them, so rounding moves a plain-SGD delta by well under 1e-3 of its norm.
# A wrong split (an example dropped or counted twice, a gradient not summed) moves it by a
# whole example's share, about a quarter of a batch of 4.
DATA_PARALLEL_RTOL = 1e-3


# Two launchers set the same torch.distributed environment: torchrun, and accelerate's own
# `accelerate launch --multi_gpu` (which runs torchrun's launcher; on CPUs the ranks use gloo).
LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
}  # fmt: skip


@pytest.mark.numeric
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_train_the_same_deltas_as_one(model, mask, tmp_path, launcher):
    # SGD, not AdamW: its update is linear in the gradient, so the tolerance follows from the
    # gradient's rounding. AdamW divides each element by its own gradient's root mean square,
    # which turns rounding of a near-cancelling element into a step-sized difference (seen: one
    # element of 256 off by 0.28% on an AMD EPYC). The optimizer is not what this test is about.
    config = TuneConfig(steps=2, batch_size=4, lr=1e-2, optimizer="sgd")
    tune_folder(model, DATA, tmp_path / "one", config, mask=mask, save="delta", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, *LAUNCHERS[launcher], "-m", "spt_interp.cli", "tune",
               "--model", str(model), "--data", str(DATA), "--mask", str(mask), "--out",
               str(tmp_path / "two"),
               "--save", "delta", "--steps", "2", "--batch-size", "4", "--lr", "1e-2",
               "--optimizer", "sgd", "--device", "cpu"]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es)" in run.stdout
    one = load_file(tmp_path / "one" / "delta.safetensors")
    two = load_file(tmp_path / "two" / "delta.safetensors")
    assert set(one) == set(two)
    for key in one:
        assert one[key].abs().max() > 0
        difference = (two[key] - one[key]).norm()
        assert difference <= DATA_PARALLEL_RTOL * one[key].norm(), (key, difference)


@pytest.mark.numeric
def test_one_sgd_step_moves_the_deltas_by_minus_lr_times_the_gradient(model, mask):
    from spt_interp.data import build_training_examples, load_dialogues, pad_token_id, protocol_for
    from spt_interp.tuning.deltas import HeadDeltas
    from spt_interp.tuning.loop import (
        collate,
        example_order,
        labelled_tokens,
        token_loss_sum,
        train,
    )
    from spt_interp.tuning.methods import create_method

    base = load_base(model)
    head_mask = HeadMask.load(mask)
    parameters = dict(base.plain_model.named_parameters())
    examples = build_training_examples(load_dialogues(DATA), base.tokenizer, protocol_for(model))
    pad_id = pad_token_id(base.tokenizer)
    config = TuneConfig(steps=1, batch_size=4, lr=1e-2, optimizer="sgd", max_grad_norm=None)
    trained = create_method(config.method, base.plain_model, head_mask, config.seed)
    train(
        base.plain_model, examples, config.training, pad_id=pad_id, method=trained, progress=False
    )

    # The same step by hand: the batch the seeded order gives, its token-mean loss, autograd.
    fresh = HeadDeltas.create(head_mask, parameters)
    batch = [examples[i] for i in example_order(len(examples), config.seed, 0, 4)]
    ids, attention, labels = collate(batch, pad_id)

    with fresh.attached(base.plain_model):
        loss = token_loss_sum(base.plain_model, ids, attention, labels) / sum(
            map(labelled_tokens, batch)
        )
    gradients = torch.autograd.grad(loss, fresh.parameters())
    for got, gradient in zip(trained.parameters(), gradients, strict=True):
        assert gradient.abs().max() > 0
        # Same batch, same reductions, one process: only the subtraction's rounding differs.
        torch.testing.assert_close(got.detach(), -1e-2 * gradient, rtol=1e-6, atol=0)


@pytest.mark.numeric
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_under_fsdp_train_the_same_sft_as_one(model, tmp_path, launcher):
    # Full SFT, plain SGD (see above), gradient clipping on: each rank holds half of every
    # weight; the gathered weights must move as the one-process run's do.
    config = TuneConfig(mode="sft", steps=2, batch_size=4, lr=1e-2, optimizer="sgd")
    tune_folder(model, DATA, tmp_path / "one", config, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # accelerate's own switch (--use_fsdp, as its config file would set) instead of --fsdp.
    sharding = ["--fsdp"] if launcher == "torchrun" else []
    launch = list(LAUNCHERS[launcher])
    if launcher == "accelerate":  # --use_fsdp takes --multi_gpu's place
        launch[launch.index("--multi_gpu")] = "--use_fsdp"
    command = [sys.executable, *launch, "-m", "spt_interp.cli", "tune", "--model", str(model),
               "--data", str(DATA), "--mode", "sft", *sharding, "--out", str(tmp_path / "two"),
               "--steps", "2", "--batch-size", "4", "--lr", "1e-2", "--optimizer", "sgd",
               "--device", "cpu"]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es)" in run.stdout
    record = json.loads((tmp_path / "two" / "tuning.json").read_text())
    assert record["fsdp"] is True
    base = load_file(model / "model.safetensors")
    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert set(one) == set(two) == set(base)
    moved = 0
    for key in base:
        change = one[key] - base[key]
        moved += int(change.abs().max() > 0)
        difference = (two[key] - one[key]).norm()
        assert difference <= DATA_PARALLEL_RTOL * change.norm(), (key, difference)
    assert moved == len(base)  # every tensor trained, none left behind by the sharding


def test_accelerate_fsdp_settings_this_trainer_does_not_do_are_refused():
    from spt_interp.tuning.sharding import accelerate_asks_for_fsdp

    assert not accelerate_asks_for_fsdp({})
    assert accelerate_asks_for_fsdp({"ACCELERATE_USE_FSDP": "true", "FSDP_OFFLOAD_PARAMS": "false"})
    with pytest.raises(SptInterpError, match="FSDP_OFFLOAD_PARAMS=true .from accelerate launch"):
        accelerate_asks_for_fsdp({"ACCELERATE_USE_FSDP": "true", "FSDP_OFFLOAD_PARAMS": "true"})
    with pytest.raises(SptInterpError, match="FSDP_SHARDING_STRATEGY=SHARD_GRAD_OP"):
        accelerate_asks_for_fsdp({"ACCELERATE_USE_FSDP": "true",
                                  "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"})  # fmt: skip


def test_fsdp_is_refused_for_a_masked_mode_and_for_one_process(model, mask, tmp_path):
    result = invoke("tune", "--model", model, "--data", DATA, "--mask", mask, "--fsdp",
                    "--out", tmp_path / "a")  # fmt: skip
    assert result.exit_code == 2 and "--fsdp shards full SFT" in result.output
    result = invoke("tune", "--model", model, "--data", DATA, "--mode", "sft", "--fsdp",
                    "--steps", "1", "--batch-size", "4", "--out", tmp_path / "b")  # fmt: skip
    assert result.exit_code == 2 and "under torchrun or accelerate launch" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
