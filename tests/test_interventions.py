"""The head-output site on Hugging Face models, knockout through it against the bridge's hook_z,
and knockout's END steps on cached prefixes against full forwards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_families import OUTPUT_MODULE
from transformers import AutoModelForCausalLM

from spt_interp.data import Protocol, build_pairs, load_dialogues
from spt_interp.data.pairs import left_pad
from spt_interp.errors import SptInterpError
from spt_interp.knockout import measure, prepare_knockout
from spt_interp.knockout.ablation import ablated, ablation_edits, collect_head_outputs
from spt_interp.knockout.end_steps import end_logits
from spt_interp.model import load_model, read_signature, z_hook_name
from spt_interp.model.generate import last_position_logits
from spt_interp.model.interventions import SITE, HeadOutputSite, add, write
from spt_interp.model.tiny import FAMILY_ARCHITECTURES

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
PROTOCOL = Protocol(
    reply_prefix="I'm", sycophantic_targets=["sorry"], anti_sycophantic_targets=["sure"]
)
TOKENS = torch.tensor([[5, 9, 14, 20, 31, 40, 52, 60], [7, 8, 9, 10, 11, 12, 13, 14]])
HEADS = [(0, 1), (1, 0), (1, 3)]
EPS = torch.finfo(torch.float32).eps


def hf_model(folder):
    return AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, attn_implementation="eager"
    ).eval()


def hand_logits(model, name, layer, change):
    """Return logits with ``change(x)`` applied to layer ``layer``'s output-projection input,
    the module named by hand (``OUTPUT_MODULE``), not read from the architecture table."""
    module = model.get_submodule(OUTPUT_MODULE[name].format(layer=layer))

    def pre_hook(module, args):
        x = args[0].clone()
        change(x)
        return (x, *args[1:])

    handle = module.register_forward_pre_hook(pre_hook)
    try:
        with torch.no_grad():
            return model(TOKENS).logits
    finally:
        handle.remove()


@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_the_site_reads_writes_and_adds_at_the_output_projections_input(name, family_dirs):
    folder = family_dirs[name]
    geometry, _ = read_signature(folder)
    model = hf_model(folder)
    site = HeadOutputSite(model, geometry)
    assert site.name == SITE == "head_attention_value_output"
    d_head, n_heads = geometry.d_head, geometry.n_heads
    seen = {}
    module = model.get_submodule(OUTPUT_MODULE[name].format(layer=1))
    handle = module.register_forward_pre_hook(lambda m, args: seen.update(x=args[0].clone()))
    with torch.no_grad(), site.captured("all") as every, site.captured("end", [1]) as end:
        untouched = model(TOKENS).logits
    handle.remove()
    expected = seen["x"].view(*seen["x"].shape[:-1], n_heads, d_head)
    assert sorted(every) == list(range(geometry.n_layers)) and list(end) == [1]
    assert torch.equal(every[1], expected) and torch.equal(end[1], expected[:, -1])

    value = torch.randn(d_head, generator=torch.Generator().manual_seed(0))
    columns = slice(2 * d_head, 3 * d_head)

    def replaced(x):
        x[:, -1, columns] = value

    def added(x):
        x[..., columns] += value

    for edit, change, position in (
        (write([2], value), replaced, "end"),
        (add([2], value, "all"), added, "all"),
    ):
        with torch.no_grad(), site.edited({1: edit}), site.captured(position, [1]) as after:
            ours = model(TOKENS).logits
        reference = hand_logits(model, name, 1, change)
        assert (reference - untouched).abs().max() > 1e-4  # the edit does something
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
        # A read inside the edit sees the edited values; the other heads are untouched.
        at = after[1] if position == "all" else after[1][:, None]
        changed = expected[:, -at.shape[1] :].clone()
        changed[..., 2, :] = value if position == "end" else changed[..., 2, :] + value
        torch.testing.assert_close(at, changed, atol=1e-6, rtol=0)
    assert all(not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(TOKENS).logits, untouched)


def test_the_site_refuses_bad_layers_and_positions_and_cleans_up_on_errors(tiny_model_dirs):
    folder = tiny_model_dirs["llama"]
    geometry, _ = read_signature(folder)
    site = HeadOutputSite(hf_model(folder), geometry)
    with pytest.raises(SptInterpError, match=r"layers \[2\] are out of range"):
        with site.edited({2: write([0], torch.zeros(()))}):
            pass
    with pytest.raises(SptInterpError, match="unknown position 'middle'"):
        with site.captured("middle"):
            pass
    with pytest.raises(RuntimeError), site.edited({0: write([0], torch.zeros(()))}):
        raise RuntimeError("inside the block")
    assert all(not m._forward_pre_hooks for m in site.model.modules())


def bridge_hooks(hooked, heads, method, position, reference, seed):
    """Return hook_z forward hooks on the bridge that ablate ``heads``: the hooked reference,
    written here from the ablation's definition (zero, the reference mean, or the reference
    rows drawn per (row, position) with a generator seeded by ``seed`` each forward)."""
    hooks = []
    for layer in sorted({layer for layer, _ in heads}):
        index = torch.tensor(sorted(h for l_, h in heads if l_ == layer))

        def hook(z, hook, layer=layer, index=index):
            at = slice(z.shape[1] - 1, None) if position == "end" else slice(None)
            if method == "zero":
                z[:, at, index] = 0.0
            elif method == "mean":
                z[:, at, index] = reference.means[layer, index]
            else:
                width = z[:, at].shape[1]
                rows = reference.values.shape[0]
                draws = torch.randint(
                    0, rows, (z.shape[0], width), generator=torch.Generator().manual_seed(seed)
                )
                z[:, at, index] = reference.values[:, layer][:, index][draws]
            return z

        hooks.append((z_hook_name(layer), hook))
    return hooks


def bridge_hook_count(hooked):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hooked.bridge.modules())


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_knockout_on_the_plain_model_equals_the_bridge_hook_z_reference(
    tiny_model_dirs, architecture
):
    hooked = load_model(tiny_model_dirs[architecture])
    prompts = [[5 + i, 9, 30 + i, 41, 7 * i + 3, 12][: 4 + i % 3] for i in range(6)]
    tokens, mask = left_pad(prompts, 0)
    # The reference activations read at the site equal the bridge's hook_z at END.
    reference = collect_head_outputs(hooked, prompts, batch_size=4)
    with torch.no_grad():
        _, cache = hooked.run_with_cache(tokens, attention_mask=mask)
    bridge_z = torch.stack([cache[z_hook_name(layer)][:, -1] for layer in range(2)], dim=1)
    torch.testing.assert_close(reference.values, bridge_z, atol=1e-5, rtol=0)
    for method in ("zero", "mean", "resample"):
        for position in ("end", "all"):
            # The bridge keeps hooks of its own (GPT-2's after a first run); knockout adds none.
            before = bridge_hook_count(hooked)
            with ablated(
                hooked, HEADS, method=method, position=position, reference=reference, seed=3
            ):
                assert bridge_hook_count(hooked) == before  # nothing on the bridge
                with torch.no_grad():
                    ours = hooked.plain_model(
                        tokens, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
                    ).logits
            hooks = bridge_hooks(hooked, HEADS, method, position, reference, 3)
            with torch.no_grad():
                expected = hooked.run_with_hooks(tokens, hooks, attention_mask=mask)
                untouched = hooked.logits(tokens, mask)
            real = mask.bool()
            assert (expected - untouched)[real].abs().max() > 1e-4
            # One float32 forward against another of the same weights (today's bound).
            torch.testing.assert_close(ours[real], expected[real], atol=1e-5, rtol=0)


def full_forward_logits(hooked, data, edits):
    """Return each batch's END logits of a full forward with ``edits`` at the site."""
    site = HeadOutputSite(hooked.plain_model, hooked.geometry)
    logits = []
    with torch.no_grad(), site.edited(edits):
        for batch in data.batches:
            tokens, mask = batch.prompt_tokens, batch.prompt_mask
            logits.append(last_position_logits(hooked.plain_model, tokens, mask, 1)[:, -1])
    return logits


@pytest.mark.parametrize("name", ["llama", "gpt2", "qwen3", "gemma2", "phi3", "gpt_neox"])
def test_end_steps_on_cached_prefixes_equal_full_forwards(name, family_dirs):
    hooked = load_model(family_dirs[name], hooks=False)  # knockout needs no bridge
    pairs = build_pairs(load_dialogues(DATA), hooked.tokenizer, PROTOCOL)
    worst = 0.0
    for method in ("zero", "mean", "resample"):
        cached = prepare_knockout(hooked, pairs, method=method, batch_size=3, end_steps=True)
        full = prepare_knockout(
            hooked, pairs, method=method, batch_size=3, reference=cached.reference
        )
        assert cached.prefixes is not None and full.prefixes is None
        for heads in ([(1, 2)], [(0, 3), (1, 0), (1, 2)]):
            edits = ablation_edits(
                heads, method=method, reference=cached.reference, seed=5, n_layers=2, n_heads=4
            )
            # Per prompt, in pair order (the two are batched differently).
            steps = torch.cat(end_logits(hooked, cached.prefixes, edits))
            forwards = torch.cat(full_forward_logits(hooked, full, edits))
            gap = (steps - forwards).abs().max().item()
            scale = 1.0 + forwards.abs().max().item()
            # The same float32 operations in another order (attention over the cached prefix,
            # one row instead of a batch of positions): a few roundings per layer, each at most
            # one unit in the last place of the logits' scale. 32 of them bound it.
            bound = 32 * EPS * scale
            assert gap <= bound, (method, heads, gap, bound)
            # log-odds = logsumexp(syc) - logsumexp(anti): each moves by at most the largest
            # logit change, so it moves by at most twice that; F = sigmoid(log-odds): a quarter.
            ours = measure(hooked, cached, heads, seed=5)
            theirs = measure(hooked, full, heads, seed=5)
            assert abs(ours.log_odds - theirs.log_odds) <= 2 * bound
            assert abs(ours.apology_share - theirs.apology_share) <= 0.5 * bound
            unablated = torch.cat([run.end_logits for run in cached.prefixes])
            moved = (steps - unablated).abs().max().item()
            assert moved > 100 * bound  # the ablation does something
            worst = max(worst, gap / bound)
    print(f"{name}: END steps vs full forwards, largest gap {worst:.2f} of the bound")


def test_end_steps_are_refused_where_the_cached_prefix_disagrees(tiny_model_dirs, monkeypatch):
    from spt_interp.knockout import end_steps

    hooked = load_model(tiny_model_dirs["llama"], hooks=False)
    pairs = build_pairs(load_dialogues(DATA), hooked.tokenizer, PROTOCOL)
    original = end_steps.PrefixRun.__init__

    def broken(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.end_logits = self.end_logits + 1.0

    monkeypatch.setattr(end_steps.PrefixRun, "__init__", broken)
    with pytest.raises(SptInterpError, match="differ from the full forward"):
        prepare_knockout(hooked, pairs, method="zero", end_steps=True)
