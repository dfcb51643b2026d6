"""Tiny GGUF files written with the gguf package's writer (no download): a random tiny Llama in
llama.cpp's tensor names with a byte-level BPE tokenizer, or metadata of another architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<s>' + message['role'] + '\\n' + message['content'] + "
    "'</s>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<s>assistant\\n' }}{% endif %}"
)


def _add_tokenizer(writer, tokenizer) -> None:
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in special else 1 for token in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def write_tiny_llama_gguf(path: Path, tokenizer, *, seed: int = 0, n_layers: int = 2) -> Path:
    """Return ``path`` after writing a random tiny Llama (4 heads, 2 kv, d_model 32) as F32 GGUF."""
    import gguf

    d_model, n_heads, n_kv, d_ff = 32, 4, 2, 64
    vocab = len(tokenizer)
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int) -> np.ndarray:
        return (0.2 * torch.randn(*shape, generator=generator)).numpy().astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(n_layers)
    writer.add_context_length(128)
    writer.add_embedding_length(d_model)
    writer.add_feed_forward_length(d_ff)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_rope_dimension_count(d_model // n_heads)
    _add_tokenizer(writer, tokenizer)
    writer.add_tensor("token_embd.weight", random(vocab, d_model))
    writer.add_tensor("output_norm.weight", 1 + random(d_model))
    writer.add_tensor("output.weight", random(vocab, d_model))
    d_kv = d_model // n_heads * n_kv
    for layer in range(n_layers):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", 1 + random(d_model))
        writer.add_tensor(f"{block}.attn_q.weight", random(d_model, d_model))
        writer.add_tensor(f"{block}.attn_k.weight", random(d_kv, d_model))
        writer.add_tensor(f"{block}.attn_v.weight", random(d_kv, d_model))
        writer.add_tensor(f"{block}.attn_output.weight", random(d_model, d_model))
        writer.add_tensor(f"{block}.ffn_norm.weight", 1 + random(d_model))
        writer.add_tensor(f"{block}.ffn_gate.weight", random(d_ff, d_model))
        writer.add_tensor(f"{block}.ffn_up.weight", random(d_ff, d_model))
        writer.add_tensor(f"{block}.ffn_down.weight", random(d_model, d_ff))
    _finish(writer)
    return path


def write_metadata_gguf(path: Path, architecture: str) -> Path:
    """Return ``path`` after writing a GGUF of ``architecture`` with a few fields, one tensor."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name(f"tiny-{architecture}")
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    _finish(writer)
    return path


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
