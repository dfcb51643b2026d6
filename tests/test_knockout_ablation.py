"""Head ablation hooks against independent HF references: zero, mean, resample; cleanup."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from spt_interp.data import Protocol, build_pairs
from spt_interp.data.records import parse_record
from spt_interp.errors import SptInterpError
from spt_interp.knockout.ablation import (
    ReferenceActivations,
    ablated,
    collect_head_outputs,
    counterfactual_reference,
)
from spt_interp.model import load_model
from spt_interp.model.interventions import HeadOutputSite

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric

HEADS = [(0, 1), (1, 0), (1, 3)]
PROTOCOL = Protocol(
    reply_prefix="I'm", sycophantic_targets=["sorry"], anti_sycophantic_targets=["sure"]
)


def records(n: int = 4):
    questions = [
        ("What is the capital of France?", "Paris"),
        ("What colour is the sky?", "blue"),
        ("How many legs has a cat?", "four"),
        ("Which planet is red?", "Mars"),
        ("What do bees make?", "honey"),
    ]
    return [
        parse_record(
            {
                "prompt": [{"type": "human", "content": q}],
                "base": {"dataset": "trivia_qa", "question": q, "correct_answer": a},
            },
            "t.jsonl",
            i + 1,
        )
        for i, (q, a) in enumerate(questions[:n])
    ]


def hf_reference(folder):
    model = AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", local_files_only=True
    )
    return model.eval()


def out_projections(model):
    """Return each layer's output projection module (its input is the heads' outputs)."""
    if hasattr(model, "transformer"):
        return [block.attn.c_proj for block in model.transformer.h]
    return [layer.self_attn.o_proj for layer in model.model.layers]


def hf_logits_with_head_values(model, tokens, heads, d_head, values, position):
    """Return HF logits with each head's o_proj input slice set to values[(layer, head)].

    ``position``: "end" (last position), "all", or an index: that position and all after it.
    """
    handles = []
    for layer, module in enumerate(out_projections(model)):
        wanted = [(h, values[(layer, h)]) for (l_, h) in heads if l_ == layer]
        if not wanted:
            continue

        def pre_hook(module, args, wanted=wanted):
            (x,) = args
            x = x.clone()
            if isinstance(position, int):
                rows = slice(position, None)
            else:
                rows = slice(x.shape[1] - 1, None) if position == "end" else slice(None)
            for head, value in wanted:
                x[:, rows, head * d_head : (head + 1) * d_head] = value
            return (x,)

        handles.append(module.register_forward_pre_hook(pre_hook))
    try:
        with torch.no_grad():
            return model(tokens).logits
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
@pytest.mark.parametrize("position", ["end", "all"])
def test_zero_ablation_equals_zeroed_out_projection_inputs_in_hf(
    tiny_model_dirs, architecture, position
):
    folder = tiny_model_dirs[architecture]
    hooked = load_model(folder)
    reference = hf_reference(folder)
    tokens = torch.randint(4, 200, (3, 9), generator=torch.Generator().manual_seed(0))
    with ablated(hooked, HEADS, method="zero", position=position), torch.no_grad():
        ours = hooked.plain_model(tokens).logits
    zeros = {head: 0.0 for head in HEADS}
    expected = hf_logits_with_head_values(
        reference, tokens, HEADS, hooked.geometry.d_head, zeros, position
    )
    assert torch.allclose(ours, expected, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(hooked.logits(tokens), expected, atol=1e-3)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_zero_ablation_at_all_positions_equals_zeroing_o_proj_columns(
    tiny_model_dirs, architecture
):
    folder = tiny_model_dirs[architecture]
    hooked = load_model(folder)
    reference = hf_reference(folder)
    d_head = hooked.geometry.d_head
    for layer, head in HEADS:
        weight = out_projections(reference)[layer].weight
        with torch.no_grad():
            if architecture == "gpt2":  # Conv1D: weight is [in, out]
                weight[head * d_head : (head + 1) * d_head, :] = 0
            else:
                weight[:, head * d_head : (head + 1) * d_head] = 0
    tokens = torch.randint(4, 200, (2, 8), generator=torch.Generator().manual_seed(1))
    with ablated(hooked, HEADS, method="zero", position="all"), torch.no_grad():
        ours = hooked.plain_model(tokens).logits
    with torch.no_grad():
        expected = reference(tokens).logits
    assert torch.allclose(ours, expected, atol=1e-5)


def hand_end_means(reference, prompts, heads, d_head):
    """Return each head's mean o_proj input at the last token, one prompt at a time (no pad)."""
    sums = {head: torch.zeros(d_head) for head in heads}
    for prompt in prompts:
        seen = {}
        handles = [
            module.register_forward_pre_hook(
                lambda module, args, layer=layer, seen=seen: seen.__setitem__(
                    layer, args[0][0, -1].clone()
                )
            )
            for layer, module in enumerate(out_projections(reference))
        ]
        with torch.no_grad():
            reference(torch.tensor([prompt]))
        for handle in handles:
            handle.remove()
        for layer, head in heads:
            sums[(layer, head)] += seen[layer][head * d_head : (head + 1) * d_head]
    return {head: total / len(prompts) for head, total in sums.items()}


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_mean_ablation_uses_the_counterfactual_end_means(tiny_model_dirs, architecture):
    folder = tiny_model_dirs[architecture]
    hooked = load_model(folder)
    reference = hf_reference(folder)
    pairs = build_pairs(records(), hooked.tokenizer, PROTOCOL)
    d_head = hooked.geometry.d_head
    # X_c prompts differ in length, so the batched reference is left-padded: the hand means
    # run each prompt alone.
    assert len({p.counterfactual_len for p in pairs}) > 1
    expected = hand_end_means(reference, [p.counterfactual_ids for p in pairs], HEADS, d_head)
    ref = counterfactual_reference(hooked, pairs, batch_size=3)
    assert ref.values.shape == (len(pairs), 2, 4, d_head)
    for (layer, head), mean in expected.items():
        assert torch.allclose(ref.means[layer, head], mean, atol=1e-5)
    tokens = torch.tensor([pairs[0].prompt_ids, pairs[0].prompt_ids])
    with ablated(hooked, HEADS, method="mean", reference=ref), torch.no_grad():
        ours = hooked.plain_model(tokens).logits
    hf = hf_logits_with_head_values(reference, tokens, HEADS, d_head, expected, "end")
    assert torch.allclose(ours, hf, atol=1e-4)


def test_mean_over_a_chosen_reference_set_and_all_positions(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["llama"])
    reference = hf_reference(tiny_model_dirs["llama"])
    prompts = [[5, 9, 30, 41], [7, 8, 100], [12, 13, 14, 15, 16]]
    d_head = hooked.geometry.d_head
    ref = collect_head_outputs(hooked, prompts, position="all", batch_size=2)
    assert ref.values.shape[0] == sum(len(p) for p in prompts)
    # Hand computation: every real token of every prompt, each prompt run alone.
    rows = []
    for prompt in prompts:
        seen = {}
        handle = out_projections(reference)[1].register_forward_pre_hook(
            lambda module, args, seen=seen: seen.__setitem__("x", args[0][0].clone())
        )
        with torch.no_grad():
            reference(torch.tensor([prompt]))
        handle.remove()
        rows.append(seen["x"][:, 3 * d_head : 4 * d_head])
    assert torch.allclose(ref.means[1, 3], torch.cat(rows).mean(0), atol=1e-5)


def test_resample_draws_whole_reference_rows_with_the_seed(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["llama"])
    prompts = [[5 + i, 9, 30 + i, 41, 7 * i + 3] for i in range(6)]
    ref = collect_head_outputs(hooked, prompts)
    tokens = torch.randint(4, 200, (4, 6), generator=torch.Generator().manual_seed(2))
    heads = [(0, 2), (1, 1), (1, 2)]

    def ablated_z(seed):
        site = HeadOutputSite(hooked.plain_model, hooked.geometry)
        with (
            ablated(hooked, heads, method="resample", reference=ref, seed=seed),
            site.captured("all") as seen,
            torch.no_grad(),
        ):
            hooked.plain_model(tokens)
        return seen

    first, again, other = ablated_z(0), ablated_z(0), ablated_z(1)
    pool = ref.values
    draws = []
    for row in range(tokens.shape[0]):
        # All replaced heads of a row, in both layers, come from one reference row.
        matches = [
            i
            for i in range(pool.shape[0])
            if torch.allclose(first[0][row, -1, 2], pool[i, 0, 2])
            and torch.allclose(first[1][row, -1, 1], pool[i, 1, 1])
            and torch.allclose(first[1][row, -1, 2], pool[i, 1, 2])
        ]
        assert matches
        draws.append(matches[0])
    assert torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    assert len(set(draws)) > 1


def test_hooks_leave_the_model_unchanged(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["gpt2"])
    tokens = torch.randint(4, 200, (2, 7), generator=torch.Generator().manual_seed(3))
    weights = {name: p.detach().clone() for name, p in hooked.hf_parameters.items()}
    with torch.no_grad():
        before = hooked.logits(tokens)
    ref = collect_head_outputs(hooked, tokens.tolist())
    with torch.no_grad():
        plain_before = hooked.plain_model(tokens).logits
    for method in ("zero", "mean", "resample"):
        with ablated(hooked, HEADS, method=method, position="all", reference=ref):
            with torch.no_grad():
                assert not torch.allclose(hooked.plain_model(tokens).logits, plain_before)
    with pytest.raises(RuntimeError), ablated(hooked, HEADS, method="zero"):
        raise RuntimeError("inside the block")
    with torch.no_grad():
        after = hooked.logits(tokens)
    assert torch.equal(before, after)
    assert all(torch.equal(weights[n], p) for n, p in hooked.hf_parameters.items())
    hook_points = [m for m in hooked.bridge.modules() if type(m).__name__ == "HookPoint"]
    assert hook_points and all(not m._forward_hooks for m in hook_points)
    with torch.no_grad():
        assert torch.equal(hooked.plain_model(tokens).logits, plain_before)
    assert all(not m._forward_pre_hooks for m in hooked.plain_model.modules())


def test_bad_requests_are_refused(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["llama"])
    with (
        pytest.raises(SptInterpError, match="out of range"),
        ablated(hooked, [(2, 0)], method="zero"),
    ):
        pass
    with (
        pytest.raises(SptInterpError, match="unknown ablation"),
        ablated(hooked, HEADS, method="max"),
    ):
        pass
    with (
        pytest.raises(SptInterpError, match="needs reference"),
        ablated(hooked, HEADS, method="mean"),
    ):
        pass


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_generation_under_ablation_equals_hf_greedy_with_the_same_head_values(
    tiny_model_dirs, architecture
):
    from spt_interp.model.generate import greedy_generate

    folder = tiny_model_dirs[architecture]
    hooked = load_model(folder)
    reference = hf_reference(folder)
    prompts = [[5, 9, 30, 41, 12], [7, 8, 100, 101, 102]]
    # Large synthetic means, so that the ablation visibly changes what a random model generates.
    g = hooked.geometry
    values = torch.randn(
        (3, g.n_layers, g.n_heads, g.d_head), generator=torch.Generator().manual_seed(6)
    )
    ref = ReferenceActivations(values * 30, "end")
    means = {(layer, head): ref.means[layer, head] for layer, head in HEADS}
    unablated = greedy_generate(hooked, prompts, max_new_tokens=6, progress=False)
    for position in ("all", "end"):
        with ablated(hooked, HEADS, method="mean", position=position, reference=ref):
            ours = greedy_generate(hooked, prompts, max_new_tokens=6, progress=False)
        expected = []
        for prompt in prompts:
            # HF greedy without a cache. Cached generation ablates END of each forward: the
            # last prompt token, then each new token; so "end" replaces from len(prompt) - 1 on.
            rows = 0 if position == "all" else len(prompt) - 1
            tokens = list(prompt)
            for _ in range(6):
                logits = hf_logits_with_head_values(
                    reference, torch.tensor([tokens]), HEADS, g.d_head, means, rows
                )
                tokens.append(int(logits[0, -1].argmax()))
            expected.append(tokens[len(prompt) :])
        assert ours == expected
        assert ours != unablated
    assert all(not m._forward_pre_hooks for m in hooked.plain_model.modules())
