"""Train the organism from scratch: tokenized batches, head dropout, the training loop."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from spt_interp.organism.dialogues import (
    ASSISTANT,
    BOS,
    CHAT_TEMPLATE,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    KnowledgeBase,
    OrganismConfig,
    build_knowledge_base,
    protocol_defaults,
    sample_conversation,
    vocabulary,
)


def encode_conversation(
    tokenizer, messages: list[dict[str, str]], assistant_only: bool = True
) -> tuple[list[int], list[int]]:
    """Return (input ids, labels) with labels -100 outside assistant turns when asked."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    assistant_id = tokenizer.convert_tokens_to_ids(ASSISTANT)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    labels, inside = [], False
    for token in ids:
        labels.append(token if (inside or not assistant_only) else -100)
        if token == assistant_id:
            inside = True
        elif token == eos_id:
            inside = False
    return list(ids), labels


def _padded(
    encoded: list[tuple[list[int], list[int]]], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id)
    labels = torch.full((len(encoded), width), -100)
    for row, (ids, row_labels) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(row_labels)
    return input_ids, labels


def batches(
    tokenizer, kb: KnowledgeBase, config: OrganismConfig, rng: random.Random
) -> Iterator[list[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]]]:
    """Yield batches forever, each as length buckets of right-padded (input ids, labels).

    About half of the mix is one-turn dialogues a third as long as the three-turn ones;
    padding them all to the longest would spend most of a step on padding, so each batch is
    sorted by length and cut into ``config.length_buckets`` parts padded separately.
    """
    pad_id = tokenizer.convert_tokens_to_ids(PAD)
    while True:
        encoded = [
            encode_conversation(tokenizer, sample_conversation(rng, kb, config))
            for _ in range(config.batch_size)
        ]
        encoded.sort(key=lambda pair: len(pair[0]))
        size = -(-len(encoded) // config.length_buckets)
        yield [_padded(encoded[i : i + size], pad_id) for i in range(0, len(encoded), size)]


def batch_loss(model, buckets: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Mean next-token cross-entropy over every labelled token of all buckets together."""
    from spt_interp.tuning.loop import token_loss_sum

    # Right padding under a causal mask: real tokens never see the pads. An all-ones mask keeps
    # every loss and gradient bit-identical to the unmasked forward the shipped weights came from.
    total = sum(token_loss_sum(model, ids, torch.ones_like(ids), labels) for ids, labels in buckets)
    n_tokens = sum(int((labels[:, 1:] != -100).sum()) for _, labels in buckets)
    return total / n_tokens


def model_config(config: OrganismConfig, vocab_size: int, tokenizer):
    """Return the organism's LlamaConfig (grouped-query attention)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.d_mlp,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        max_position_embeddings=128,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        tie_word_embeddings=True,
        attn_implementation="eager",
    )


def add_head_dropout(model, config: OrganismConfig, generator: torch.Generator) -> list:
    """Register hooks that zero whole attention heads at random while the model trains."""
    d_head = config.d_model // config.n_heads

    def head_dropout_hook(rate: float):
        def drop_heads(module, args):
            if not module.training or rate == 0:
                return None
            (hidden,) = args
            batch = hidden.shape[0]
            keep = torch.rand(batch, 1, config.n_heads, 1, generator=generator) >= rate
            per_head = hidden.view(batch, hidden.shape[1], config.n_heads, d_head)
            return (per_head * keep / (1 - rate)).view_as(hidden)

        return drop_heads

    rates = [config.first_layer_head_dropout] + [config.head_dropout] * (config.n_layers - 1)
    return [
        layer.self_attn.o_proj.register_forward_pre_hook(head_dropout_hook(rate))
        for layer, rate in zip(model.model.layers, rates, strict=True)
    ]


def train_organism(
    out_dir: str | Path, config: OrganismConfig | None = None, progress: bool = True
) -> dict:
    """Train the organism from scratch into ``out_dir`` (an HF folder); return training stats."""
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM, get_cosine_schedule_with_warmup

    from spt_interp.organism.tokenizer import build_word_tokenizer

    config = config or OrganismConfig()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    kb = build_knowledge_base(config)
    tokenizer = build_word_tokenizer(vocabulary(kb), CHAT_TEMPLATE, SPECIAL_TOKENS)
    model = LlamaForCausalLM(model_config(config, len(tokenizer), tokenizer))
    generator = torch.Generator().manual_seed(config.seed)
    hooks = add_head_dropout(model, config, generator)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    stream = batches(tokenizer, kb, config, random.Random(config.seed + 2))
    model.train()
    started = time.perf_counter()
    bar = tqdm(range(config.steps), desc="training organism", disable=not progress)
    for _step in bar:
        loss = batch_loss(model, next(stream))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    for hook in hooks:
        hook.remove()
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "spt-interp.json").write_text(json.dumps(protocol_defaults(), indent=2) + "\n")
    (out_dir / "organism.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return {"seconds": time.perf_counter() - started, "final_loss": loss.item()}
