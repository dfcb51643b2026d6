"""The pinpoint trainer: only the mask's slices change, counts, save/merge, resume, NaN."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spt_interp.data import build_training_examples, load_dialogues, protocol_for
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask
from spt_interp.model import load_model
from spt_interp.model.tiny import save_tiny_model
from spt_interp.tuning import HeadDeltas, TuneConfig, apply_deltas, load_base, merge, tune_folder
from spt_interp.tuning.loop import collate, example_order, make_schedule, token_loss_sum

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
HEADS = [(0, 1), (1, 3)]


@pytest.fixture(scope="module")
def models(tmp_path_factory, bpe_tokenizer):
    """Llama without GQA (4 kv heads), Llama with GQA (2 kv heads), GPT-2.

    256 positions: the byte-level BPE training dialogues run past the fixtures' 128.
    """
    root = tmp_path_factory.mktemp("tuning_models")
    return {
        name: save_tiny_model(architecture, root / name, tokenizer=bpe_tokenizer, n_ctx=256,
                              **extra)
        for name, architecture, extra in (
            ("llama", "llama", {"n_kv_heads": 4}),
            ("gqa", "llama", {"n_kv_heads": 2}),
            ("gpt2", "gpt2", {}),
        )
    }  # fmt: skip


def mask_file(folder: Path, tmp_path: Path, heads=HEADS, name="mask.json") -> Path:
    return HeadMask.from_heads(load_base(folder), heads).save(tmp_path / name)


def safetensors_of(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def quick(mode="spt", **kwargs) -> TuneConfig:
    values = {"mode": mode, "lr": 1e-2, "steps": 3, "batch_size": 4, **kwargs}
    return TuneConfig(**values)


@pytest.mark.parametrize("name", ["llama", "gqa", "gpt2"])
def test_spt_changes_only_the_mask_slices_and_counts_match_the_paper(name, models, tmp_path):
    folder = models[name]
    base_bytes = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}
    mask = HeadMask.load(mask_file(folder, tmp_path))
    record = tune_folder(folder, DATA, tmp_path / "out", quick(), mask=tmp_path / "mask.json",
                         progress=False)  # fmt: skip

    base, tuned = safetensors_of(folder), safetensors_of(tmp_path / "out")
    assert set(base) == set(tuned)
    # Reference for "inside the mask": the boolean gradient masks (a separate code path).
    allowed = mask.gradient_masks(load_base(folder).hf_parameters)
    changed_inside = 0
    for key, before in base.items():
        name_in_model = key if key in allowed else next(
            (n for n in allowed if n.endswith("." + key)), None)  # fmt: skip
        inside = allowed.get(name_in_model, torch.zeros(before.shape, dtype=torch.bool))
        assert torch.equal(before[~inside], tuned[key][~inside]), key
        changed_inside += int((before[inside] != tuned[key][inside]).sum())
    assert changed_inside > 0

    g = load_base(folder).geometry
    k = len(HEADS)
    if name == "gqa":
        assert mask.components == ("q", "o")
        expected_weights = 2 * g.d_head * g.d_model * k
    else:
        assert mask.components == ("q", "k", "v", "o")
        expected_weights = 4 * g.d_head * g.d_model * k
    biases = 3 * g.d_head * k if name == "gpt2" else 0  # GPT-2's c_attn has q/k/v biases
    assert record["paper_formula"]["value"] == expected_weights
    assert record["trainable_parameters"] == expected_weights + biases
    assert record["optimizer_state_bytes"] == 2 * 4 * record["trainable_parameters"]
    assert record["verification"]["outside_mask_identical"]
    # The base folder is never written; the output opens in HF and in the hooked model.
    assert {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()} == base_bytes
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "out", local_files_only=True)
    hooked = load_model(tmp_path / "out")
    mask.validate(hooked)  # a tuned model keeps its base's shape fingerprint


def test_delta_then_merge_reproduces_full_save_exactly(models, tmp_path):
    folder = models["gqa"]
    mask_file(folder, tmp_path)
    config = quick(steps=2)
    tune_folder(
        folder, DATA, tmp_path / "full", config, mask=tmp_path / "mask.json", progress=False
    )
    tune_folder(
        folder,
        DATA,
        tmp_path / "delta",
        config,
        mask=tmp_path / "mask.json",
        save="delta",
        progress=False,
    )
    assert sorted(p.name for p in (tmp_path / "delta").iterdir()) == [
        "delta.safetensors", "head-mask.json", "tuning.json"]  # fmt: skip
    merge(folder, tmp_path / "delta", tmp_path / "merged")
    full, merged = safetensors_of(tmp_path / "full"), safetensors_of(tmp_path / "merged")
    assert set(full) == set(merged)
    for key in full:
        assert full[key].dtype == merged[key].dtype
        assert torch.equal(full[key].view(torch.int32), merged[key].view(torch.int32)), key
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_merge_refuses_another_base(models, tmp_path):
    mask_file(models["gqa"], tmp_path)
    tune_folder(
        models["gqa"],
        DATA,
        tmp_path / "delta",
        quick(steps=1),
        mask=tmp_path / "mask.json",
        save="delta",
        progress=False,
    )
    other = save_tiny_model("llama", tmp_path / "other", seed=1)
    with pytest.raises(SptInterpError, match="not the base this delta was trained on"):
        merge(other, tmp_path / "delta", tmp_path / "merged")


def test_resumed_run_equals_an_uninterrupted_one(models, tmp_path):
    folder = models["gpt2"]
    mask_file(folder, tmp_path)
    config = quick(steps=4, warmup_steps=1)
    whole = tune_folder(folder, DATA, tmp_path / "whole", config, mask=tmp_path / "mask.json",
                        save="delta", progress=False)  # fmt: skip
    stopped = tune_folder(folder, DATA, tmp_path / "resumed", config, mask=tmp_path / "mask.json",
                          save="delta", stop_after=2, progress=False)  # fmt: skip
    assert "stopped" in stopped and not (tmp_path / "resumed").exists()
    resumed = tune_folder(folder, DATA, tmp_path / "resumed", config, mask=tmp_path / "mask.json",
                          save="delta", resume=True, progress=False)  # fmt: skip
    assert resumed["losses"] == whole["losses"]
    a = load_file(tmp_path / "whole" / "delta.safetensors")
    b = load_file(tmp_path / "resumed" / "delta.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not (tmp_path / "resumed.checkpoints" / "checkpoint.pt").exists()


def test_resume_refuses_a_checkpoint_of_another_run(models, tmp_path):
    folder = models["gpt2"]
    mask_file(folder, tmp_path)
    tune_folder(folder, DATA, tmp_path / "run", quick(steps=4), mask=tmp_path / "mask.json",
                stop_after=1, progress=False)  # fmt: skip
    with pytest.raises(SptInterpError, match="different run.*hyperparameters"):
        tune_folder(
            folder,
            DATA,
            tmp_path / "run",
            quick(steps=4, lr=1e-3),
            mask=tmp_path / "mask.json",
            resume=True,
            progress=False,
        )


def test_nan_loss_stops_with_a_clear_error_and_writes_nothing(models, tmp_path):
    mask_file(models["gqa"], tmp_path)
    with pytest.raises(SptInterpError, match="loss became (nan|inf)"):
        tune_folder(
            models["gqa"],
            DATA,
            tmp_path / "out",
            quick(lr=1e37, steps=4, max_grad_norm=None),
            mask=tmp_path / "mask.json",
            progress=False,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.json"]


def test_sft_changes_everything_and_lora_and_random_stay_in_their_heads(models, tmp_path):
    folder = models["llama"]
    mask = HeadMask.load(mask_file(folder, tmp_path))
    base = safetensors_of(folder)

    tune_folder(folder, DATA, tmp_path / "sft", quick("sft"), progress=False)
    sft = safetensors_of(tmp_path / "sft")
    assert all(not torch.equal(base[k], sft[k]) for k in base if "norm" not in k)

    lora = tune_folder(folder, DATA, tmp_path / "lora", quick("lora-heads", lora_rank=2),
                       mask=tmp_path / "mask.json", progress=False)  # fmt: skip
    g = load_base(folder).geometry
    # One (A, B) pair per weight slice, each slice d_head x d_model: r x (d_head + d_model).
    assert lora["trainable_parameters"] == 4 * len(HEADS) * 2 * (g.d_head + g.d_model)
    assert lora["verification"]["outside_mask_identical"]

    random_run = tune_folder(folder, DATA, tmp_path / "random", quick("random", seed=3),
                             mask=tmp_path / "mask.json", progress=False)  # fmt: skip
    used = HeadMask.load(tmp_path / "random" / "head-mask.json")
    assert len(used.heads) == len(mask.heads) and used.components == mask.components
    assert used.head_set != mask.head_set
    assert random_run["trainable_parameters"] == 4 * g.d_head * g.d_model * len(HEADS)
    assert random_run["verification"]["outside_mask_identical"]


def test_optimizer_memory_scales_with_the_number_of_heads(models, tmp_path):
    folder = models["gqa"]
    sizes = []
    for k, heads in ((1, HEADS[:1]), (2, HEADS)):
        mask_file(folder, tmp_path, heads, f"mask{k}.json")
        record = tune_folder(
            folder,
            DATA,
            tmp_path / f"out{k}",
            quick(steps=1),
            mask=tmp_path / f"mask{k}.json",
            save="delta",
            progress=False,
        )
        sizes.append(record["optimizer_state_bytes"])
    assert sizes[1] == 2 * sizes[0] > 0


def test_delta_forward_equals_the_merged_weights_forward(models):
    base = load_base(models["gpt2"])
    mask = HeadMask.from_heads(base, HEADS)
    deltas = HeadDeltas.create(mask, base.hf_parameters)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in deltas.parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    tokens = torch.tensor([[5, 9, 20, 33, 41, 7]])
    with deltas.attached(base.plain_model):
        hooked = base.plain_model(tokens).logits
    apply_deltas(base.hf_parameters, deltas.values())
    merged = base.plain_model(tokens).logits
    torch.testing.assert_close(hooked, merged, rtol=0, atol=1e-5)


def test_loss_is_the_hf_token_mean_cross_entropy(models):
    base = load_base(models["gqa"])
    examples = build_training_examples(load_dialogues(DATA), base.tokenizer,
                                       protocol_for(models["gqa"]), 0)  # fmt: skip
    ids, mask, labels = collate(examples[:1], 0)
    ours = token_loss_sum(base.plain_model, ids, mask, labels)
    n = int((labels[:, 1:] != -100).sum())
    hf = base.plain_model(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(ours / n, hf, rtol=1e-5, atol=1e-6)


def schedule_rates(warmup: int, steps: int) -> list[float]:
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = make_schedule(optimizer, TuneConfig(steps=steps, warmup_steps=warmup))
    rates = []
    for _ in range(steps + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_schedule_warms_up_then_decays_to_zero_and_data_order_is_seeded():
    # By hand: step s of T without warmup has rate 0.5 * (1 + cos(pi * s / T)).
    assert schedule_rates(0, 10) == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * s / 10)) for s in range(11)], abs=1e-12
    )
    factors = schedule_rates(2, 10)
    assert factors[0] < factors[1] < factors[2] == 1.0
    assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False))
    assert factors[10] == pytest.approx(0.0)
    first = example_order(7, seed=1, start=0, count=14)
    assert sorted(first[:7]) == list(range(7)) and sorted(first[7:]) == list(range(7))
    assert example_order(7, seed=1, start=5, count=4) == first[5:9]
    assert example_order(7, seed=2, start=0, count=7) != first[:7]


def test_plain_base_has_the_hooked_models_geometry_and_fingerprint(tiny_model_dir):
    hooked, base = load_model(tiny_model_dir), load_base(tiny_model_dir)
    assert base.geometry == hooked.geometry
    assert base.fingerprint() == hooked.fingerprint()
