"""Tiny random models built from configs, saved as local HF folders with a locally built tokenizer.

Tests and benchmarks use these: nothing is downloaded, and each family of the architecture table
can be exercised in seconds. ``TINY_ARCHITECTURES`` are the four the fast patching engine covers
(GPT-2, Llama with grouped-query attention, Qwen2, Mistral); ``FAMILY_ARCHITECTURES`` adds one
tiny config per other family, each with its peculiarity switched on (QK-norm, soft-capping,
sliding windows, head_dim != d_model / n_heads, fused or interleaved qkv).
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_ARCHITECTURES = ("gpt2", "llama", "qwen2", "mistral")
FAMILY_ARCHITECTURES = (
    *TINY_ARCHITECTURES,
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "olmo2",
    "gpt_neox",
)

# A small corpus with the words the toolkit cares about, so the BPE merges make "don't" and
# "do" tokenize differently, as real tokenizers do.
TOKENIZER_CORPUS = [
    "I don't think that's right. Are you sure?",
    "I do think that's right. Are you sure?",
    "I'm sorry, you are right. I apologize for the mistake.",
    "Yes, I'm sure. The answer is correct.",
    "What is the capital of France? The capital of France is Paris.",
    "User: hello\nAssistant: hi there, how can I help?",
]
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def build_bpe_tokenizer(vocab_size: int = 320, corpus: list[str] | None = None):
    """Return a byte-level BPE PreTrainedTokenizerFast trained on a small corpus (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((corpus or TOKENIZER_CORPUS) * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def tiny_config(
    architecture: str,
    vocab_size: int,
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_model: int = 32,
    n_ctx: int = 128,
):
    """Return an HF config for a tiny random model of the named architecture."""
    from transformers import GPT2Config

    special = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
    if architecture == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=n_ctx,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            **special,
        )
    import transformers

    shape = {
        "vocab_size": vocab_size,
        "hidden_size": d_model,
        "intermediate_size": 2 * d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "max_position_embeddings": n_ctx,
        **special,
    }
    d_head = d_model // n_heads
    # Each family's own switches on, so the tests meet what a real checkpoint has.
    families = {
        "llama": ("LlamaConfig", {}),
        "qwen2": ("Qwen2Config", {}),
        "mistral": ("MistralConfig", {}),
        "qwen3": ("Qwen3Config", {"head_dim": d_head}),  # QK-norm
        "gemma": ("GemmaConfig", {"head_dim": d_head}),  # (1 + w) norms, embedding scale
        "gemma2": (
            "Gemma2Config",
            {
                "head_dim": d_head,
                "query_pre_attn_scalar": d_head,
                "sliding_window": 4,
                "attn_logit_softcapping": 50.0,
                "final_logit_softcapping": 30.0,
            },
        ),
        "gemma3_text": (
            "Gemma3TextConfig",
            {"head_dim": 2 * d_head, "query_pre_attn_scalar": 2 * d_head, "sliding_window": 4},
        ),  # head_dim != d_model / n_heads, QK-norm, local and global layers
        "phi3": ("Phi3Config", {}),  # fused qkv_proj
        "olmo2": ("Olmo2Config", {}),  # post-norm, QK-norm over all heads
        "gpt_neox": ("GPTNeoXConfig", {"rotary_pct": 0.5}),  # interleaved query_key_value
    }
    if architecture not in families:
        raise ValueError(f"no tiny config for {architecture!r}; choose from {FAMILY_ARCHITECTURES}")
    class_name, extra = families[architecture]
    # GPT-NeoX has no grouped-query attention: every head has its own key and value.
    kv = {} if architecture == "gpt_neox" else {"num_key_value_heads": n_kv_heads}
    return getattr(transformers, class_name)(**shape, **kv, **extra)


def save_tiny_model(
    architecture: str,
    folder: str | Path,
    *,
    seed: int = 0,
    tokenizer=None,
    **config_kwargs,
) -> Path:
    """Return ``folder`` after saving a tiny random model and its tokenizer there."""
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or build_bpe_tokenizer()
    config = tiny_config(architecture, len(tokenizer), **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
