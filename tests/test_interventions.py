"""The head-output site on Hugging Face models: read, write and add against hand-written hooks."""

from __future__ import annotations

import pytest
import torch
from test_families import OUTPUT_MODULE
from transformers import AutoModelForCausalLM

from spt_interp.errors import SptInterpError
from spt_interp.model import read_signature
from spt_interp.model.interventions import SITE, HeadOutputSite, add, write
from spt_interp.model.tiny import FAMILY_ARCHITECTURES

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric

TOKENS = torch.tensor([[5, 9, 14, 20, 31, 40, 52, 60], [7, 8, 9, 10, 11, 12, 13, 14]])


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
