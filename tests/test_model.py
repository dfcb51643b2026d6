"""The hooked model equals the HF model it wraps, shares its weights, and maps heads to weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from spt_interp.model import load_model
from spt_interp.model.architecture import head_slices

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric


def random_tokens(vocab_size: int, seed: int = 0, batch: int = 3, pos: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, pos), generator=generator)


def test_logits_equal_hf_eager_and_hook_z_has_head_axis(tiny_model_dir):
    hooked = load_model(tiny_model_dir)
    reference = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, attn_implementation="eager", local_files_only=True
    ).eval()
    tokens = random_tokens(reference.config.vocab_size)
    with torch.no_grad():
        expected = reference(tokens).logits
        logits, cache = hooked.run_with_cache(tokens)
    assert torch.allclose(logits, expected, atol=1e-5, rtol=0)
    g = hooked.geometry
    for layer in range(g.n_layers):
        assert cache[f"blocks.{layer}.attn.hook_z"].shape == (3, 12, g.n_heads, g.d_head)


def test_geometry_reads_the_config(tiny_model_dirs):
    llama = load_model(tiny_model_dirs["llama"]).geometry
    assert (llama.n_layers, llama.n_heads, llama.n_kv_heads, llama.d_head, llama.d_model) == (
        2,
        4,
        2,
        8,
        32,
    )
    assert llama.grouped_query and llama.architecture == "LlamaForCausalLM"
    gpt2 = load_model(tiny_model_dirs["gpt2"]).geometry
    assert gpt2.n_kv_heads == gpt2.n_heads and not gpt2.grouped_query


def test_hf_model_shares_storage_with_the_hooked_model(tiny_model_dir):
    hooked = load_model(tiny_model_dir)
    tokens = random_tokens(hooked.config.vocab_size, seed=1)
    with torch.no_grad():
        before = hooked.logits(tokens).clone()
        # One row of layer 0's query weights (column block for GPT-2's Conv1D c_attn).
        (q_slice, *_) = head_slices(hooked.geometry, hooked.hf_parameters, 0, 0, "q")
        weight = hooked.hf_parameters[q_slice.parameter]
        assert any(weight is p for p in hooked.hf_model.parameters())
        # Random, not constant: a constant column adds c * sum(x), which LayerNorm makes ~0.
        row = weight.narrow(q_slice.dim, q_slice.start, 1)
        row.add_(torch.randn(row.shape, generator=torch.Generator().manual_seed(0)))
        after = hooked.logits(tokens)
    assert not torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("head", [0, 3])
def test_zeroing_hook_z_equals_zeroing_o_proj_columns(tiny_model_dir, head):
    hooked = load_model(tiny_model_dir)
    layer = 1
    tokens = random_tokens(hooked.config.vocab_size, seed=2)

    def zero_head(z, hook):
        z[:, :, head, :] = 0.0
        return z

    with torch.no_grad():
        hooked_logits = hooked.run_with_hooks(tokens, [(f"blocks.{layer}.attn.hook_z", zero_head)])
        (o_slice,) = head_slices(hooked.geometry, hooked.hf_parameters, layer, head, "o")
        o_slice.index(hooked.hf_parameters[o_slice.parameter]).zero_()
        reference = AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, attn_implementation="eager", local_files_only=True
        ).eval()
        reference.load_state_dict(
            {name: p.detach() for name, p in hooked.hf_parameters.items()}, strict=False
        )
        weight_logits = reference(tokens).logits
    assert torch.allclose(hooked_logits, weight_logits, atol=1e-5, rtol=0)
    # The ablation is not a no-op: the head really contributes.
    with torch.no_grad():
        untouched = AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, attn_implementation="eager", local_files_only=True
        )(tokens).logits
    assert not torch.allclose(untouched, weight_logits, atol=1e-4)


def test_fingerprint_is_stable_and_shape_sensitive(tmp_path, tiny_model_dirs, bpe_tokenizer):
    from spt_interp.model.tiny import save_tiny_model

    first = load_model(tiny_model_dirs["llama"]).fingerprint()
    second = load_model(tiny_model_dirs["llama"]).fingerprint()
    assert first == second and first.startswith("sha256:")
    wider = save_tiny_model("llama", tmp_path / "wider", tokenizer=bpe_tokenizer, d_model=48)
    assert load_model(wider).fingerprint() != first
    deeper = save_tiny_model("llama", tmp_path / "deeper", tokenizer=bpe_tokenizer, n_layers=3)
    assert load_model(deeper).fingerprint() != first
    # Weights enter only on request: a reseeded model of the same shape keeps the shape hash.
    reseeded = save_tiny_model("llama", tmp_path / "reseeded", tokenizer=bpe_tokenizer, seed=7)
    assert load_model(reseeded).fingerprint() == first
    assert load_model(reseeded).fingerprint(include_weights=True) != load_model(
        tiny_model_dirs["llama"]
    ).fingerprint(include_weights=True)


def test_plain_model_computes_with_the_same_tensors(tiny_model_dir):
    hooked = load_model(tiny_model_dir)
    plain = hooked.plain_model
    plain_parameters = list(plain.parameters())
    assert all(any(p is q for q in plain_parameters) for p in hooked.hf_parameters.values())
    tokens = random_tokens(hooked.config.vocab_size, seed=3)
    with torch.no_grad():
        assert torch.allclose(plain(tokens).logits, hooked.logits(tokens), atol=1e-5, rtol=0)
        (o_slice,) = head_slices(hooked.geometry, hooked.hf_parameters, 0, 1, "o")
        o_slice.index(hooked.hf_parameters[o_slice.parameter]).mul_(3.0)
        # A weight edit through either view shows in both, with no reload.
        assert torch.allclose(plain(tokens).logits, hooked.logits(tokens), atol=1e-5, rtol=0)


def test_wrap_model_over_a_model_in_memory_equals_loading_the_folder(tiny_model_dir):
    from transformers import AutoTokenizer

    from spt_interp.model import wrap_model

    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    wrapped = wrap_model(hf, AutoTokenizer.from_pretrained(tiny_model_dir), tiny_model_dir)
    assert hf.config._attn_implementation == "eager"  # what the bridge needs
    assert all(p is hf.get_parameter(n) for n, p in wrapped.hf_parameters.items())  # no copy
    loaded = load_model(tiny_model_dir)
    tokens = torch.tensor([[3, 17, 42, 9, 5]])
    mask = torch.ones_like(tokens)
    torch.testing.assert_close(wrapped.logits(tokens, mask), loaded.logits(tokens, mask),
                               rtol=0, atol=0)  # fmt: skip
    assert wrapped.geometry == loaded.geometry
