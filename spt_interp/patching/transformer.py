"""A minimal decoder forward over the Hugging Face weights, built for patched runs.

The fast patching engine computes only what a patch can change: a batch of "variant" residual
streams (one per patched head) at a few query positions, attending to keys and values cached
from the unpatched run. The bridge cannot run a forward on one position against a foreign
cache, so this module re-implements the decoder of the architectures the toolkit supports
(Llama / Mistral / Qwen2 with RMSNorm, rotary and grouped-query attention; GPT-2 with
LayerNorm, learned positions and the fused Conv1D ``c_attn``) from the very tensors the bridge
computes with (``HookedModel.hf_parameters``). Tests hold it to the bridge's logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from spt_interp.common.families import FAMILIES, family_of
from spt_interp.errors import SptInterpError
from spt_interp.model.hf_internals import activation

# The families whose ``fast_engine`` entry in the architecture table is True.
FAST_FAMILIES = tuple(family.name for family in FAMILIES if family.fast_engine)


@dataclass(frozen=True)
class Norm:
    """RMSNorm (``bias`` None, ``rms`` True) or LayerNorm over the last dimension."""

    weight: Tensor
    bias: Tensor | None
    eps: float
    rms: bool

    def __call__(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        if not self.rms:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        # HF's RMSNorm: normalise in float32, scale in the input dtype.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


@dataclass(frozen=True)
class LayerParams:
    """One decoder layer's weights as ``F.linear`` wants them ([out, in])."""

    ln1: Norm
    ln2: Norm
    w_q: Tensor
    b_q: Tensor | None
    w_k: Tensor
    b_k: Tensor | None
    w_v: Tensor
    b_v: Tensor | None
    w_o: Tensor
    b_o: Tensor | None
    w_gate: Tensor | None
    w_up: Tensor
    b_up: Tensor | None
    w_down: Tensor
    b_down: Tensor | None


@dataclass(frozen=True)
class ModelParams:
    """Everything the minimal forward needs: weights, geometry, activation, rotary tables."""

    model_type: str
    n_heads: int
    n_kv_heads: int
    d_head: int
    scaling: float
    embed: Tensor
    pos_embed: Tensor | None
    layers: list[LayerParams]
    final_norm: Norm
    unembed: Tensor
    act: Callable[[Tensor], Tensor]
    rotary: Any | None
    sliding_window: int | None

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def head_out_weight(self, layer: int, head: int) -> Float[Tensor, "d_model d_head"]:
        """Return the columns of the output projection that read head ``head``'s z."""
        return self.layers[layer].w_o[:, head * self.d_head : (head + 1) * self.d_head]


def _get(parameters: dict[str, Tensor], name: str) -> Tensor | None:
    return parameters.get(name)


def _llama_params(hooked: Any) -> ModelParams:
    p = hooked.hf_parameters
    config = hooked.config
    g = hooked.geometry
    eps = float(config.rms_norm_eps)
    layers = []
    for i in range(g.n_layers):
        pre = f"model.layers.{i}"
        layers.append(
            LayerParams(
                ln1=Norm(p[f"{pre}.input_layernorm.weight"], None, eps, True),
                ln2=Norm(p[f"{pre}.post_attention_layernorm.weight"], None, eps, True),
                w_q=p[f"{pre}.self_attn.q_proj.weight"],
                b_q=_get(p, f"{pre}.self_attn.q_proj.bias"),
                w_k=p[f"{pre}.self_attn.k_proj.weight"],
                b_k=_get(p, f"{pre}.self_attn.k_proj.bias"),
                w_v=p[f"{pre}.self_attn.v_proj.weight"],
                b_v=_get(p, f"{pre}.self_attn.v_proj.bias"),
                w_o=p[f"{pre}.self_attn.o_proj.weight"],
                b_o=_get(p, f"{pre}.self_attn.o_proj.bias"),
                w_gate=p[f"{pre}.mlp.gate_proj.weight"],
                w_up=p[f"{pre}.mlp.up_proj.weight"],
                b_up=_get(p, f"{pre}.mlp.up_proj.bias"),
                w_down=p[f"{pre}.mlp.down_proj.weight"],
                b_down=_get(p, f"{pre}.mlp.down_proj.bias"),
            )
        )

    embed = p["model.embed_tokens.weight"]
    window = getattr(config, "sliding_window", None)
    use_window = getattr(config, "use_sliding_window", True) and window is not None
    return ModelParams(
        model_type=config.model_type,
        n_heads=g.n_heads,
        n_kv_heads=g.n_kv_heads,
        d_head=g.d_head,
        scaling=g.d_head**-0.5,
        embed=embed,
        pos_embed=None,
        layers=layers,
        final_norm=Norm(p["model.norm.weight"], None, eps, True),
        unembed=p.get("lm_head.weight", embed),
        act=activation(config.hidden_act),
        rotary=hooked.hf_model.model.rotary_emb,
        sliding_window=int(window) if use_window else None,
    )


def _gpt2_params(hooked: Any) -> ModelParams:
    p = hooked.hf_parameters
    config = hooked.config
    g = hooked.geometry
    d = g.d_model
    eps = float(config.layer_norm_epsilon)
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise SptInterpError(
            "the fast patching engine does not support GPT-2's scale_attn_by_inverse_layer_idx; "
            "use --engine loop"
        )
    layers = []
    for i in range(g.n_layers):
        pre = f"transformer.h.{i}"
        # Conv1D stores [in, out]: the transposed views are F.linear's [out, in].
        c_attn = p[f"{pre}.attn.c_attn.weight"]
        c_attn_bias = p[f"{pre}.attn.c_attn.bias"]
        layers.append(
            LayerParams(
                ln1=Norm(p[f"{pre}.ln_1.weight"], p[f"{pre}.ln_1.bias"], eps, False),
                ln2=Norm(p[f"{pre}.ln_2.weight"], p[f"{pre}.ln_2.bias"], eps, False),
                w_q=c_attn[:, :d].t(),
                b_q=c_attn_bias[:d],
                w_k=c_attn[:, d : 2 * d].t(),
                b_k=c_attn_bias[d : 2 * d],
                w_v=c_attn[:, 2 * d :].t(),
                b_v=c_attn_bias[2 * d :],
                w_o=p[f"{pre}.attn.c_proj.weight"].t(),
                b_o=p[f"{pre}.attn.c_proj.bias"],
                w_gate=None,
                w_up=p[f"{pre}.mlp.c_fc.weight"].t(),
                b_up=p[f"{pre}.mlp.c_fc.bias"],
                w_down=p[f"{pre}.mlp.c_proj.weight"].t(),
                b_down=p[f"{pre}.mlp.c_proj.bias"],
            )
        )

    embed = p["transformer.wte.weight"]
    scaled = getattr(config, "scale_attn_weights", True)
    return ModelParams(
        model_type="gpt2",
        n_heads=g.n_heads,
        n_kv_heads=g.n_heads,
        d_head=g.d_head,
        scaling=g.d_head**-0.5 if scaled else 1.0,
        embed=embed,
        pos_embed=p["transformer.wpe.weight"],
        layers=layers,
        final_norm=Norm(p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], eps, False),
        unembed=p.get("lm_head.weight", embed),
        act=activation(config.activation_function),
        rotary=None,
        sliding_window=None,
    )


def supports_fast_engine(hooked: Any) -> bool:
    """Return True when the minimal forward covers this model's family (the table says)."""
    return family_of(hooked.geometry.architecture).fast_engine


def model_params(hooked: Any) -> ModelParams:
    """Return the minimal-forward view of a hooked model's weights (no copies)."""
    family = family_of(hooked.geometry.architecture)
    if not family.fast_engine:
        raise SptInterpError(
            f"the fast patching engine supports {', '.join(FAST_FAMILIES)}, not "
            f"{family.name!r}; use --engine loop"
        )
    if family.layout.storage == "conv1d":
        return _gpt2_params(hooked)
    return _llama_params(hooked)


def position_ids(mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Return positions counted over real tokens (left padding), as the bridge derives them."""
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)


def rotary_tables(
    params: ModelParams, positions: Int[Tensor, "batch pos"], dtype: torch.dtype
) -> tuple[Float[Tensor, "batch pos d_head"], Float[Tensor, "batch pos d_head"]] | None:
    """Return (cos, sin) at ``positions`` from the model's own rotary module, or None."""
    if params.rotary is None:
        return None
    probe = torch.zeros(1, device=positions.device, dtype=dtype)
    cos, sin = params.rotary(probe, positions)
    return cos, sin


def _rotate(
    x: Float[Tensor, "variant batch q heads d_head"],
    tables: tuple[Tensor, Tensor] | None,
) -> Float[Tensor, "variant batch q heads d_head"]:
    if tables is None:
        return x
    cos, sin = (t[None, :, :, None, :] for t in tables)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def embed(
    params: ModelParams, tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos d_model"]:
    """Return the residual stream entering layer 0."""
    x = F.embedding(tokens, params.embed)
    if params.pos_embed is not None:
        x = x + F.embedding(positions, params.pos_embed)
    return x


@dataclass
class KeyValues:
    """Rotated keys and values of the cached (unpatched) positions of one layer."""

    keys: Float[Tensor, "batch kv_heads prefix d_head"]
    values: Float[Tensor, "batch kv_heads prefix d_head"]
    mask: Bool[Tensor, "batch prefix"]


def attention(
    params: ModelParams,
    layer: int,
    normed: Float[Tensor, "variant batch q d_model"],
    tables: tuple[Tensor, Tensor] | None,
    query_mask: Bool[Tensor, "batch q"],
    prefix: KeyValues | None,
) -> tuple[Float[Tensor, "variant batch q heads d_head"], KeyValues]:
    """Return per-head outputs z of the query positions, and their own keys/values.

    Queries attend causally to each other and to every unmasked ``prefix`` position; the
    prefix is shared by all variants (it is computed once, unpatched), so it enters as a
    plain matmul with the variants folded into the query axis: no copy per variant.
    """
    w = params.layers[layer]
    n_variants, batch, n_q, _ = normed.shape
    kv_heads, d_head = params.n_kv_heads, params.d_head
    group = params.n_heads // kv_heads
    q = _rotate(F.linear(normed, w.w_q, w.b_q).view(n_variants, batch, n_q, -1, d_head), tables)
    k = _rotate(F.linear(normed, w.w_k, w.b_k).view(n_variants, batch, n_q, -1, d_head), tables)
    v = F.linear(normed, w.w_v, w.b_v).view(n_variants, batch, n_q, -1, d_head)
    # [batch, kv_heads, group, variant, q, d_head]: query heads grouped under their kv head.
    q_grouped = q.view(n_variants, batch, n_q, kv_heads, group, d_head).permute(1, 3, 4, 0, 2, 5)
    own = torch.einsum("bkgvqd,vbskd->bkgvqs", q_grouped, k)
    causal = torch.ones(n_q, n_q, dtype=torch.bool, device=normed.device).tril()
    own_allowed = causal[None] & query_mask[:, None, :]
    scores = [own]
    allowed = [own_allowed[:, None, None, None]]
    if prefix is not None and prefix.keys.shape[2] > 0:
        flat_q = q_grouped.reshape(batch, kv_heads, group * n_variants * n_q, d_head)
        cached = flat_q @ prefix.keys.transpose(-1, -2)
        scores.insert(0, cached.view(batch, kv_heads, group, n_variants, n_q, -1))
        allowed.insert(0, prefix.mask[:, None, None, None, None, :])
    logits = torch.cat(scores, dim=-1) * params.scaling
    mask = torch.cat([a.expand(*logits.shape[:-1], a.shape[-1]) for a in allowed], dim=-1)
    # Softmax in float32 as HF and the bridge do; the float32 minimum, not -inf, so that a
    # fully masked (pad) query row stays finite.
    logits = logits.float().masked_fill(~mask, torch.finfo(torch.float32).min)
    weights = torch.softmax(logits, dim=-1).to(q.dtype)
    n_prefix = weights.shape[-1] - n_q
    out = torch.einsum("bkgvqs,vbskd->bkgvqd", weights[..., n_prefix:], v)
    if n_prefix > 0:
        flat_w = weights[..., :n_prefix].reshape(batch, kv_heads, -1, n_prefix)
        out = out + (flat_w @ prefix.values).view(out.shape)
    z = out.permute(3, 0, 4, 1, 2, 5).reshape(n_variants, batch, n_q, params.n_heads, d_head)
    own_kv = KeyValues(
        keys=k[0].permute(0, 2, 1, 3), values=v[0].permute(0, 2, 1, 3), mask=query_mask
    )
    return z, own_kv


def attention_out(
    params: ModelParams, layer: int, z: Float[Tensor, "... heads d_head"]
) -> Float[Tensor, "... d_model"]:
    """Return the attention block's output (o_proj of the concatenated heads)."""
    w = params.layers[layer]
    return F.linear(z.flatten(-2), w.w_o, w.b_o)


def mlp(params: ModelParams, layer: int, x: Float[Tensor, "... d_model"]) -> Tensor:
    """Return the MLP block's output for residual stream ``x`` (its norm included)."""
    w = params.layers[layer]
    h = w.ln2(x)
    if w.w_gate is not None:
        hidden = params.act(F.linear(h, w.w_gate)) * F.linear(h, w.w_up, w.b_up)
    else:
        hidden = params.act(F.linear(h, w.w_up, w.b_up))
    return F.linear(hidden, w.w_down, w.b_down)


def unembed(params: ModelParams, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]:
    """Return logits of residual stream ``x`` (final norm included)."""
    return F.linear(params.final_norm(x), params.unembed)


def check_window(params: ModelParams, width: int) -> None:
    """Raise when a prompt is longer than a sliding attention window (not reproduced here)."""
    if params.sliding_window is not None and width > params.sliding_window:
        raise SptInterpError(
            f"prompts of {width} tokens exceed the model's sliding window of "
            f"{params.sliding_window}; the fast engine does not model it: use --engine loop"
        )
