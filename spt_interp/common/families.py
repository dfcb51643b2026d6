"""The architecture table: what each supported model family looks like to spt-interp.

One entry per family says where a layer's query/key/value/output weights live, how they are
stored (separate projections, one fused projection, GPT-NeoX's per-head interleaving, GPT-2's
Conv1D), which module takes the concatenated head outputs as its input, and the family's
protocol defaults. Head slices,
ablation, the mask, the trainer, ``info`` and the patching engine read this table and nothing
else, so adding a family is one entry here plus its tests (``tests/test_families.py``); a model
whose family is not here is refused before it loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from spt_interp.errors import SptInterpError

# How the query, key and value weights of one layer are stored.
#   separate:    q_proj / k_proj / v_proj, each [heads * d_head, d_model] (rows per head)
#   fused:       one [(q_heads + 2 * kv_heads) * d_head, d_model] matrix, rows q | k | v (Phi-3)
#   interleaved: one [3 * d_model, d_model] matrix whose rows run head by head, each q, k, v
#                (GPT-NeoX: the output is viewed as [heads, 3 * d_head] and chunked)
#   conv1d:      GPT-2's Conv1D c_attn stored [d_model, 3 * d_model], columns q | k | v
QkvStorage = Literal["separate", "fused", "interleaved", "conv1d"]


@dataclass(frozen=True)
class AttentionLayout:
    """Where one layer's attention weights are, as HF parameter names with ``{layer}``."""

    attention: str
    storage: QkvStorage
    # The q, k, v module names under ``attention`` (one shared name when fused).
    qkv: tuple[str, str, str]
    # The module whose input is the concatenated head outputs (hook_z, flattened).
    output: str

    def module(self, layer: int, name: str) -> str:
        return f"{self.attention.format(layer=layer)}.{name}"


@dataclass(frozen=True)
class Family:
    """One model family: its HF names, head layout and protocol defaults."""

    name: str
    architectures: tuple[str, ...]
    layout: AttentionLayout
    # Protocol fields that differ from the plain protocol for this family's chat models.
    protocol: dict[str, Any] = field(default_factory=dict)


LLAMA_STYLE = AttentionLayout(
    "model.layers.{layer}.self_attn", "separate", ("q_proj", "k_proj", "v_proj"), "o_proj"
)

FAMILIES: tuple[Family, ...] = (
    Family("llama", ("LlamaForCausalLM",), LLAMA_STYLE),
    Family("mistral", ("MistralForCausalLM",), LLAMA_STYLE),
    Family("qwen2", ("Qwen2ForCausalLM",), LLAMA_STYLE),
    Family("qwen3", ("Qwen3ForCausalLM",), LLAMA_STYLE),
    Family("gemma", ("GemmaForCausalLM",), LLAMA_STYLE),
    Family("gemma2", ("Gemma2ForCausalLM",), LLAMA_STYLE),
    Family("gemma3_text", ("Gemma3ForCausalLM",), LLAMA_STYLE),
    Family("olmo2", ("Olmo2ForCausalLM",), LLAMA_STYLE),
    Family(
        "phi3",
        ("Phi3ForCausalLM",),
        AttentionLayout("model.layers.{layer}.self_attn", "fused", ("qkv_proj",) * 3, "o_proj"),
    ),
    Family(
        "gpt_neox",
        ("GPTNeoXForCausalLM",),
        AttentionLayout(
            "gpt_neox.layers.{layer}.attention", "interleaved", ("query_key_value",) * 3, "dense"
        ),
    ),
    Family(
        "gpt2",
        ("GPT2LMHeadModel",),
        AttentionLayout("transformer.h.{layer}.attn", "conv1d", ("c_attn",) * 3, "c_proj"),
    ),
)

TABLE_FILE = "spt_interp/common/families.py"


def known_architectures() -> list[str]:
    """Return every HF class name the table covers, in table order."""
    return [a for family in FAMILIES for a in family.architectures]


def family_of(architecture: str, model_type: str | None = None) -> Family:
    """Return the family of an HF class name (``config.architectures[0]``); raise if unknown,
    naming the family (``config.model_type``, when given) and where to add it."""
    for family in FAMILIES:
        if architecture in family.architectures:
            return family
    name = f"model family {model_type!r} ({architecture})" if model_type else architecture
    raise SptInterpError(
        f"{name} is not in spt-interp's architecture table (known: "
        f"{', '.join(known_architectures())}); to add it, write its entry in {TABLE_FILE} "
        "and its tests in tests/test_families.py"
    )


def family_of_model_type(model_type: str | None) -> Family | None:
    """Return the family whose name is ``config.model_type``, or None."""
    return next((f for f in FAMILIES if f.name == model_type), None)
