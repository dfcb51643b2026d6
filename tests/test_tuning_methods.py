"""Tuning methods behind one interface: a method registered here alone tunes and saves; tuning
in memory gives the command's delta bit for bit."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import spt_interp as spt
from spt_interp.data import build_training_examples, load_dialogues, protocol_for
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask
from spt_interp.model import load_base, load_model, load_tokenizer
from spt_interp.model.tiny import save_tiny_model
from spt_interp.tuning import (
    MethodConfig,
    TrainingArguments,
    TuneConfig,
    TunedModel,
    TuningMethod,
    register_method,
    tune_folder,
)
from spt_interp.tuning.methods import registry
from spt_interp.tuning.save import read_delta
from spt_interp.tuning.updates import TrainedWeights

pytestmark = pytest.mark.numeric

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
HEADS = [(0, 1), (1, 3)]


class NormOnly(TuningMethod):
    """A toy method: only the RMSNorm weights train, in place; the rest stays frozen."""

    trained_noun = "norm weights"

    def _norms(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if n.endswith("norm.weight")}

    def parameters(self) -> list[torch.Tensor]:
        return list(self._norms().values())

    def state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().clone() for name, p in self._norms().items()}

    def load_state(self, state: Any) -> None:
        with torch.no_grad():
            for name, parameter in self._norms().items():
                parameter.copy_(state[name])

    def _finish(self) -> TrainedWeights:
        norms = self._norms()
        return TrainedWeights(dict(norms), tuple(norms))


@pytest.fixture
def norm_only(monkeypatch):
    """NormOnly registered as "norm-only" for one test (the registry is put back after)."""
    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))
    return register_method("norm-only")(NormOnly)


@pytest.fixture(scope="module")
def llama(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("methods")
    return save_tiny_model("llama", root / "llama", tokenizer=bpe_tokenizer, n_ctx=256)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def examples_for(folder: Path, config: TuneConfig) -> list:
    """The training examples the command builds from the data file, for the same settings:
    with the folder's own tokenizer (the bridge's puts a BOS token first)."""
    return build_training_examples(load_dialogues(DATA), load_tokenizer(folder),
                                   protocol_for(folder), config.seed,
                                   loss_on=config.loss_on)  # fmt: skip


def test_the_settings_split_into_the_methods_and_the_trainers_and_record_as_before():
    method = MethodConfig("lora-heads", lora_rank=4)
    training = TrainingArguments(lr=1e-2, steps=5, seed=1)
    config = TuneConfig.of(method, training)
    assert config == TuneConfig(mode="lora-heads", lr=1e-2, steps=5, seed=1, lora_rank=4)
    assert config.method == method and config.training == training
    # The recorded hyperparameters: the fields and order runs were always recorded with.
    assert list(config.as_dict()) == [
        "mode", "lr", "steps", "batch_size", "micro_batch_size", "warmup_steps", "weight_decay",
        "max_grad_norm", "seed", "lora_rank", "lora_alpha", "loss_on", "optimizer"]  # fmt: skip
    assert config.as_dict()["lora_alpha"] == 8.0  # twice the rank
    assert "lora_rank" not in TuneConfig(mode="spt").as_dict()
    assert TuneConfig(mode="lora").lora_rank == 16 and TuneConfig(mode="lora-heads").lora_rank == 8
    with pytest.raises(SptInterpError, match="--mode 'full' is not one of spt, sft, lora"):
        MethodConfig("full")
    with pytest.raises(SptInterpError, match="--lr must be a positive number"):
        TrainingArguments(lr=0)


def test_a_method_registered_in_a_test_tunes_and_saves(norm_only, llama, tmp_path):
    assert "norm-only" in spt.tuning.method_names()
    config = TuneConfig(mode="norm-only", lr=1e-2, steps=3, batch_size=4)
    assert "lora_rank" not in config.as_dict()  # a setting the method does not read
    model = load_base(llama)
    # Counted from the model's modules, not from the method's own parameter list.
    norms = [m for m in model.plain_model.modules() if type(m).__name__ == "LlamaRMSNorm"]
    tuned = spt.tune(model, examples_for(llama, config), None, config, progress=False)
    assert tuned.record["mode"] == "norm-only" and tuned.record["mask"] is None
    assert tuned.record["trainable_parameters"] == sum(m.weight.numel() for m in norms) > 0
    assert len(tuned.record["losses"]) == 3
    record = tuned.save(tmp_path / "out")
    assert record["kind"] == "full" and "verification" not in record
    base, written = weights(llama), weights(tmp_path / "out")
    assert set(base) == set(written)
    for key in base:
        if key.endswith("norm.weight"):
            assert not torch.equal(base[key], written[key]), key  # every norm trained
            assert torch.equal(written[key], model.hf_parameters[key])  # as held in memory
        else:
            assert torch.equal(base[key], written[key]), key  # nothing else moved
    with pytest.raises(SptInterpError, match="--mode norm-only changes every layer"):
        tuned.save(tmp_path / "delta", save="delta")
    assert not (tmp_path / "delta").exists()
    # The command takes the registered method too, and writes the same bytes.
    tune_folder(llama, DATA, tmp_path / "command", config, progress=False)
    for name in ("model.safetensors",):
        ours, theirs = (tmp_path / "out" / name).read_bytes(), (tmp_path / "command" / name)
        assert hashlib.sha256(ours).digest() == hashlib.sha256(theirs.read_bytes()).digest()


@pytest.mark.parametrize("mode", ["spt", "lora-heads", "random"])
def test_tuning_in_memory_gives_the_commands_delta_bit_for_bit(mode, llama, tmp_path):
    mask = HeadMask.from_heads(load_base(llama), HEADS).save(tmp_path / "mask.json")
    config = TuneConfig(mode=mode, lr=1e-2, steps=3, batch_size=4, seed=2)
    tune_folder(llama, DATA, tmp_path / "command", config, mask=mask, save="delta",
                progress=False)  # fmt: skip
    hooked = load_model(llama)  # the bridge over the model, as a notebook loads it
    tuned = spt.tune(hooked, examples_for(llama, config), HeadMask.load(mask), config,
                     progress=False)  # fmt: skip
    record, command = read_delta(tmp_path / "command")
    ours = tuned.update.compact()
    assert [piece for piece, _ in ours] == [piece for piece, _ in command]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(ours, command, strict=True))
    assert tuned.record["losses"] == record["losses"]
    for key in ("heads", "components"):  # the same heads trained (a random draw: the seed's)
        assert tuned.record["mask"][key] == record["mask"][key]
    assert tuned.record["verification"]["outside_mask_identical"]
    # Saved from memory: the command's file, byte for byte.
    tuned.save(tmp_path / "memory", save="delta")
    delta = "delta.safetensors"
    assert (tmp_path / "memory" / delta).read_bytes() == (tmp_path / "command" / delta).read_bytes()
    # Loaded onto a fresh copy of the base, the saved delta gives the tuned weights bit for bit.
    loaded = TunedModel.load(tmp_path / "memory", load_base(llama))
    assert all(
        torch.equal(p, hooked.hf_parameters[n]) for n, p in loaded.model.hf_parameters.items()
    )
    assert loaded.method.name == mode and loaded.mask.head_set == tuned.mask.head_set
    # The model in memory computes with the merged slices; restore puts the base back.
    reference = load_model(llama)
    changed = [n for n, p in hooked.hf_parameters.items()
               if not torch.equal(p, reference.hf_parameters[n])]  # fmt: skip
    assert changed and set(changed) <= {piece.parameter for piece, _ in ours}
    tuned.restore(reference.hf_parameters)
    assert all(torch.equal(p, reference.hf_parameters[n]) for n, p in hooked.hf_parameters.items())
    assert tuned.update is None


@pytest.mark.parametrize("mode", ["sft", "lora"])
def test_whole_model_methods_in_memory_save_the_commands_files(mode, llama, tmp_path):
    config = TuneConfig(mode=mode, lr=1e-3, steps=2, batch_size=4, lora_rank=2)
    tune_folder(llama, DATA, tmp_path / "command", config, progress=False)
    model = load_base(llama)
    tuned = spt.tune(model, examples_for(llama, config), None, config, progress=False)
    tuned.save(tmp_path / "memory")
    name = "model.safetensors"
    assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "command" / name).read_bytes()
    with pytest.raises(SptInterpError, match=f"--mode {mode} changes every layer"):
        tuned.save(tmp_path / "delta", save="delta")


def test_a_masked_method_without_a_mask_is_refused_before_training(llama):
    model = load_base(llama)
    config = TuneConfig(mode="spt", steps=1, batch_size=4)
    with pytest.raises(SptInterpError, match="--mode spt needs --mask"):
        spt.tune(model, examples_for(llama, config), None, config, progress=False)
    assert not any(p.grad is not None for p in model.plain_model.parameters())


def test_a_saved_delta_is_refused_by_a_model_of_another_shape(llama, tmp_path, bpe_tokenizer):
    model = load_base(llama)
    config = TuneConfig(mode="spt", lr=1e-2, steps=1, batch_size=4)
    tuned = spt.tune(model, examples_for(llama, config), HeadMask.from_heads(model, HEADS), config,
                     progress=False)  # fmt: skip
    tuned.save(tmp_path / "delta", save="delta")
    other = save_tiny_model("llama", tmp_path / "mha", tokenizer=bpe_tokenizer, n_kv_heads=4)
    with pytest.raises(SptInterpError, match="delta was made for another model"):
        TunedModel.load(tmp_path / "delta", load_base(other))
