"""Reduced precision and memory: bf16 pinpoint tuning with float32 deltas, autocast SFT,
train mode without dropout, gradient checkpointing.

bfloat16 keeps 8 significant bits: one rounding is off by at most u = 2**-8 relative. A run in
bf16 differs from the float32 run through the rounding of every activation, so plain-SGD deltas
(linear in the gradients) agree with float32's to a small multiple of u; the bound used, 8u
(3.1%), allows a random walk of ~60 roundings along the forward and backward of the two-layer
model. AdamW is not compared that way: its per-element normalisation turns rounding in tiny
gradients into sign flips (the reason the data-parallel test uses SGD too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spt_interp.mask import HeadMask
from spt_interp.model.tiny import save_tiny_model
from spt_interp.tuning import HeadDeltas, TuneConfig, load_base, tune_folder
from spt_interp.tuning.deltas import merge_slice
from spt_interp.tuning.save import read_delta, read_weights
from spt_interp.tuning.train_mode import training_mode

pytestmark = pytest.mark.numeric

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
HEADS = [(0, 1), (1, 3)]
BF16_UNIT = 2.0**-8


@pytest.fixture(scope="module")
def models(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("precision_models")
    folders = {
        "gqa": save_tiny_model("llama", root / "gqa", tokenizer=bpe_tokenizer, n_ctx=256,
                               n_kv_heads=2),
        "gpt2": save_tiny_model("gpt2", root / "gpt2", tokenizer=bpe_tokenizer, n_ctx=256),
    }  # fmt: skip
    for folder in folders.values():
        HeadMask.from_heads(load_base(folder), HEADS).save(folder.parent / f"{folder.name}.json")
    return folders


def mask_of(folder: Path) -> Path:
    return folder.parent / f"{folder.name}.json"


def sgd(**kwargs) -> TuneConfig:
    values = {"mode": "spt", "lr": 1e-1, "steps": 6, "batch_size": 4, "optimizer": "sgd",
              "max_grad_norm": None, **kwargs}  # fmt: skip
    return TuneConfig(**values)


def relative_difference(a: list, b: list) -> float:
    num = sum(float(((x - y) ** 2).sum()) for (_, x), (_, y) in zip(a, b, strict=True))
    den = sum(float((x**2).sum()) for _, x in a)
    return (num / den) ** 0.5


def test_a_delta_below_one_bf16_step_still_changes_the_forward_pass(models):
    base = load_base(models["gqa"], dtype=torch.bfloat16)
    deltas = HeadDeltas.create(HeadMask.load(mask_of(models["gqa"])), base.hf_parameters)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for delta in deltas.deltas:
            weight = delta.slice.index(base.hf_parameters[delta.slice.parameter])
            # A fifth of the weight's bf16 spacing (2**(e - 7) for |w| in [2**e, 2**(e+1))):
            # under half the spacing on either side, so w + delta rounds back to w.
            spacing = torch.exp2(torch.floor(torch.log2(weight.float().abs())) - 7)
            signs = torch.randint(0, 2, weight.shape, generator=generator) * 2 - 1
            delta.full.copy_(0.2 * spacing * signs)
            assert torch.equal(merge_slice(weight, delta.full), weight)  # merged: no change
    tokens = torch.randint(10, 300, (4, 24), generator=generator)
    with torch.no_grad():
        plain = base.plain_model(tokens).logits
        with deltas.attached(base.plain_model):
            moved = base.plain_model(tokens).logits
    assert moved.dtype == torch.bfloat16
    changed = float((moved != plain).float().mean())
    assert changed > 0.05, f"only {changed:.3f} of the logits moved"
    assert all(not m._forward_hooks for m in base.plain_model.modules())  # hooks taken off


@pytest.mark.parametrize("name", ["gqa", "gpt2"])
def test_bf16_spt_lowers_the_loss_keeps_the_rest_and_tracks_float32(name, models, tmp_path):
    folder = models[name]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        runs[dtype] = tune_folder(folder, DATA, tmp_path / dtype, sgd(), mask=mask_of(folder),
                                  save="delta", dtype=dtype, progress=False)  # fmt: skip
    bf16 = runs["bfloat16"]
    assert "base frozen in bfloat16" in bf16["precision"]
    _, values = read_delta(tmp_path / "bfloat16")
    assert all(change.dtype == torch.float32 for _, change in values)
    _, reference = read_delta(tmp_path / "float32")
    assert relative_difference(reference, values) < 8 * BF16_UNIT
    for ours, theirs in zip(bf16["losses"], runs["float32"]["losses"], strict=True):
        assert abs(ours - theirs) <= BF16_UNIT * theirs

    adamw = tune_folder(
        folder,
        DATA,
        tmp_path / "full",
        TuneConfig(mode="spt", lr=1e-2, steps=6, batch_size=4),
        mask=mask_of(folder),
        dtype="bfloat16",
        progress=False,
    )
    assert adamw["losses"][-1] < adamw["losses"][0]
    # verify_outside_mask read the written files back: bit-identical outside the mask.
    assert adamw["verification"]["outside_mask_identical"]
    assert adamw["verification"]["changed_elements_inside_mask"] > 0
    written = read_weights(tmp_path / "full")
    assert {t.dtype for tensors in written.values() for t in tensors.values()} == {torch.float32}


def test_sft_in_bf16_keeps_float32_weights_under_autocast(models, tmp_path):
    record = tune_folder(models["gqa"], DATA, tmp_path / "sft", TuneConfig(mode="sft", lr=1e-3,
                         steps=4, batch_size=4), dtype="bfloat16", progress=False)  # fmt: skip
    assert record["precision"] == "float32 weights and optimizer, forward under bfloat16 autocast"
    assert record["losses"][-1] < record["losses"][0]
    reference = tune_folder(models["gqa"], DATA, tmp_path / "sft32", TuneConfig(mode="sft", lr=1e-3,
                            steps=4, batch_size=4), progress=False)  # fmt: skip
    # The first loss is one bf16 forward of the same weights: within u of float32's.
    assert abs(record["losses"][0] - reference["losses"][0]) <= BF16_UNIT * reference["losses"][0]
    assert record["losses"] != reference["losses"]  # autocast really ran in bf16


def test_train_mode_without_dropout_equals_eval_mode(models):
    base = load_base(models["gpt2"])  # GPT-2's config has dropout 0.1 on three paths
    dropouts = [m for m in base.plain_model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.1 for m in dropouts)
    tokens = torch.randint(10, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    base.plain_model.eval()
    with torch.no_grad():
        evaluated = base.plain_model(tokens).logits
        with training_mode(base.plain_model):
            assert base.plain_model.training
            trained = base.plain_model(tokens).logits
    torch.testing.assert_close(trained, evaluated, rtol=0, atol=1e-6)
    assert not base.plain_model.training and all(m.p == 0.1 for m in dropouts)


@pytest.mark.parametrize("mode", ["spt", "sft"])
def test_gradient_checkpointing_recomputes_and_gives_the_same_run(mode, models, tmp_path):
    folder = models["gqa"]
    calls = []
    original = torch.nn.Linear.forward

    def counting(self, x):
        calls.append(1)
        return original(self, x)

    runs = {}
    for checkpointing in (False, True):
        calls.clear()
        torch.nn.Linear.forward = counting
        try:
            runs[checkpointing] = tune_folder(
                folder, DATA, tmp_path / str(checkpointing), sgd(mode=mode, steps=2),
                mask=mask_of(folder) if mode == "spt" else None,
                save="delta" if mode == "spt" else "full",
                gradient_checkpointing=checkpointing, progress=False,
            )  # fmt: skip
        finally:
            torch.nn.Linear.forward = original
        runs[checkpointing]["linear_calls"] = len(calls)
    # Every decoder layer's linears run again in the backward; the head (lm_head) does not.
    assert runs[True]["linear_calls"] > 1.5 * runs[False]["linear_calls"]
    assert runs[True]["gradient_checkpointing"] is True
    # The recomputation repeats the same operations: the same losses, the same result.
    assert runs[True]["losses"] == runs[False]["losses"]
    if mode == "spt":
        (_, a), (_, b) = read_delta(tmp_path / "False"), read_delta(tmp_path / "True")
        assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))
    else:
        a, b = read_weights(tmp_path / "False"), read_weights(tmp_path / "True")
        assert all(torch.equal(a[f][k], b[f][k]) for f in a for k in a[f])


def test_the_scale_benchmark_runs_every_mode_and_its_sweep_matches_the_loop(tmp_path):
    root = Path(__file__).parents[1]
    out = tmp_path / "scale.json"
    completed = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "scale.py"), "--shapes", "tiny", "--dtype",
         "float32", "--steps", "1", "--batch", "2", "--tokens", "16", "--sweep-pairs", "2",
         "--loop-heads", "2", "--gradient-checkpointing", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(root / "benchmarks")},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    costs = {m["mode"]: m for m in row["modes"]}
    assert set(costs) == {"spt32", "spt64", "lora-heads", "lora", "sft"}
    assert all(m["samples_per_second"] > 0 and m["peak_bytes"] > 0 for m in costs.values())
    # tiny: 4 layers x 8 heads (GQA: q,o), d_head 16, d_model 128; K is capped at 32 heads.
    assert costs["spt32"]["trainable_parameters"] == 2 * 16 * 128 * 32
    assert costs["sft"]["trainable_parameters"] == row["parameters"]
    assert costs["sft"]["speed_vs_sft"] == 1.0
    sweep = row["sweep"]
    assert sweep["heads"] == 32 and sweep["max_abs_diff"] < 1e-4  # float32: the loop's logits


def test_the_cli_takes_dtype_and_checkpointing_and_refuses_an_unknown_dtype(models, tmp_path):
    from typer.testing import CliRunner

    from spt_interp.cli import app

    args = ["tune", "--model", str(models["gpt2"]), "--data", str(DATA), "--mask",
            str(mask_of(models["gpt2"])), "--steps", "2", "--batch-size", "4",
            "--lr", "1e-2"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--dtype",
                                      "bfloat16", "--gradient-checkpointing"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "precision: base frozen in bfloat16; head deltas and optimizer state float32" in (
        result.output
    )
    record = json.loads((tmp_path / "out" / "tuning.json").read_text())
    assert record["gradient_checkpointing"] is True
    assert record["verification"]["outside_mask_identical"]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), "--dtype", "bf8"])
    assert refused.exit_code == 2 and "--dtype 'bf8'" in refused.output
    assert not (tmp_path / "bad").exists()


def test_the_demo_refuses_an_unknown_dtype_before_it_writes(tmp_path):
    from typer.testing import CliRunner

    from spt_interp.cli import app

    refused = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "run"), "--dtype", "x"])
    assert refused.exit_code == 2 and "--dtype 'x'" in refused.output
    assert not (tmp_path / "run").exists()
