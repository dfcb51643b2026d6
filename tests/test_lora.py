"""Whole-model LoRA through peft: only LoRA factors train, and the update merges back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from spt_interp.data import build_training_examples, load_dialogues, pad_token_id, protocol_for
from spt_interp.errors import SptInterpError
from spt_interp.experiments.compare import ComparisonPlan
from spt_interp.experiments.trained_run import applied, train_run
from spt_interp.model import load_model
from spt_interp.model.tiny import save_tiny_model
from spt_interp.tuning import TuneConfig, load_base, tune_folder
from spt_interp.tuning.loop import train
from spt_interp.tuning.lora import LoraFactors
from spt_interp.tuning.methods import create_method

pytestmark = pytest.mark.numeric

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"


@pytest.fixture(scope="module")
def models(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("lora_models")
    return {name: save_tiny_model(name, root / name, tokenizer=bpe_tokenizer, n_ctx=256)
            for name in ("llama", "gpt2")}  # fmt: skip


def weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def linear_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """(fan_in, fan_out) of every Linear/Conv1D below the output head, found independently."""
    from transformers.pytorch_utils import Conv1D

    shapes = {}
    for name, module in model.named_modules():
        if name.endswith("lm_head"):
            continue
        if isinstance(module, torch.nn.Linear):
            shapes[name + ".weight"] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):
            shapes[name + ".weight"] = tuple(module.weight.shape)  # Conv1D: (in, out)
    return shapes


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_lora_trains_only_its_factors_and_merges_into_every_linear_weight(name, models, tmp_path):
    folder = models[name]
    base = weights(folder)
    rank = 2
    record = tune_folder(folder, DATA, tmp_path / "out", TuneConfig(mode="lora", lr=1e-2, steps=3,
                         batch_size=4, lora_rank=rank), progress=False)  # fmt: skip
    tuned = weights(tmp_path / "out")
    shapes = linear_shapes(load_base(folder).plain_model)
    assert shapes and record["lora"]["layers"] == len(shapes)
    assert record["trainable_parameters"] == sum(rank * (i + o) for i, o in shapes.values())
    assert record["lora"]["alpha"] == 2 * rank
    assert set(tuned) == set(base)
    for key in base:
        if key in shapes:
            assert not torch.equal(tuned[key], base[key]), key  # every adapted weight moved
        else:
            assert torch.equal(tuned[key], base[key]), key  # embeddings, norms, biases: not


def test_factors_applied_by_hand_equal_peft_merge_and_unload(models):
    folder = models["gpt2"]  # Conv1D: the update is transposed (fan_in_fan_out)
    base = load_base(folder)
    original = {n: p.detach().clone() for n, p in base.plain_model.named_parameters()}
    examples = build_training_examples(load_dialogues(DATA), base.tokenizer, protocol_for(folder))
    config = TuneConfig(mode="lora", lr=1e-2, steps=2, batch_size=4, lora_rank=2)
    method = create_method(config.method, base.plain_model, None, seed=0)  # rank 2, alpha 4.0
    method.attach()  # stays on after the run: the test takes it off itself
    train(base.plain_model, examples, config.training, pad_id=pad_token_id(base.tokenizer),
          method=method, progress=False)  # fmt: skip
    lora = method.lora
    wrapped = [(n, p.detach().clone()) for n, p in base.plain_model.named_parameters()
               if ".base_layer." in n]  # fmt: skip
    # The frozen base under peft's wrappers did not move.
    assert wrapped and all(
        torch.equal(v, original[n.replace(".base_layer", "")]) for n, v in wrapped
    )
    factors = lora.factors()
    merged = {n: p.detach().clone() for n, p in lora.merge_and_detach().named_parameters()}
    by_hand = {n: v.clone() for n, v in original.items()}
    factors.apply(by_hand)
    assert set(merged) == set(original)
    for key in merged:
        # Same float32 products, summed in either order: within a few ulps of the weights.
        torch.testing.assert_close(by_hand[key], merged[key], rtol=1e-6, atol=1e-6)
    assert any(not torch.equal(merged[k], original[k]) for k in factors.parameters())


def test_a_comparison_run_takes_lora_off_again_and_applies_it_exactly(models, tmp_path):
    folder = models["llama"]
    hooked = load_model(folder)
    before = {n: p.detach().clone() for n, p in hooked.hf_parameters.items()}
    plan = ComparisonPlan(steps=2, batch_size=4)
    examples = build_training_examples(load_dialogues(DATA), hooked.tokenizer, protocol_for(folder))
    run = train_run(hooked, None, examples, plan.config("lora", 1e-2), before)
    assert run.trainable > 0 and isinstance(run.update, LoraFactors)
    assert not any(isinstance(m, LoraLayer) for m in hooked.plain_model.modules())
    assert all(torch.equal(before[n], p) for n, p in hooked.hf_parameters.items())
    ids = torch.tensor([examples[0].input_ids])
    with applied(hooked, run, before):
        tuned_logits = hooked.plain_model(input_ids=ids).logits
    expected = {n: v.clone() for n, v in before.items()}
    for factor in run.update.factors:
        expected[factor.parameter] += factor.delta()
    reference = load_model(folder).plain_model
    reference.load_state_dict(expected, strict=False)
    torch.testing.assert_close(tuned_logits, reference(input_ids=ids).logits, rtol=0, atol=1e-5)
    assert all(torch.equal(before[n], p) for n, p in hooked.hf_parameters.items())


def test_lora_refuses_a_delta_save(models, tmp_path):
    with pytest.raises(SptInterpError, match="--mode lora changes every layer: use --save full"):
        tune_folder(models["llama"], DATA, tmp_path / "out", TuneConfig(mode="lora"), save="delta",
                    progress=False)  # fmt: skip


def test_the_cli_tunes_lora_without_a_mask_and_records_its_rank(models, tmp_path):
    from typer.testing import CliRunner

    from spt_interp.cli import app

    args = ["tune", "--model", str(models["llama"]), "--data", str(DATA), "--out",
            str(tmp_path / "out"), "--mode", "lora", "--steps", "1", "--batch-size", "4",
            "--lr", "1e-3"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "tuning.json").read_text())
    assert record["mode"] == "lora" and record["mask"] is None
    assert record["lora"]["rank"] == 16 and record["lora"]["alpha"] == 32.0
    refused = CliRunner().invoke(app, [*args[:6], str(tmp_path / "again"), "--mode", "lora",
                                       "--save", "delta"])  # fmt: skip
    assert refused.exit_code == 2
    assert "--mode lora changes every layer: use --save full" in refused.output
