"""Every family of the architecture table on a tiny random model built from its config.

The references are independent of the table: the test states by hand which HF module takes each
family's concatenated head outputs, and watches a separately loaded Hugging Face model.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_patching import make_pairs
from transformer_lens import patching as tl_patching
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.common.families import FAMILIES, family_of
from spt_interp.data import PromptPair, batch_pairs
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import log_odds
from spt_interp.knockout import ablated
from spt_interp.mask import HeadMask
from spt_interp.model import head_slices, load_model, read_signature
from spt_interp.model.tiny import FAMILY_ARCHITECTURES, TINY_ARCHITECTURES
from spt_interp.patching import PatchMetric, locate_heads
from spt_interp.tuning import TuneConfig, load_base, tune_folder

# Written out by hand, not read from the table: the module whose input is hook_z, flattened.
OUTPUT_MODULE = {
    "gpt2": "transformer.h.{layer}.attn.c_proj",
    "gpt_neox": "gpt_neox.layers.{layer}.attention.dense",
    **{
        name: "model.layers.{layer}.self_attn.o_proj"
        for name in ("llama", "qwen2", "mistral", "qwen3", "gemma", "gemma2", "gemma3_text",
                     "phi3", "olmo2")
    },
}  # fmt: skip
NEW_FAMILIES = [name for name in FAMILY_ARCHITECTURES if name not in TINY_ARCHITECTURES]
PROMPTS = torch.tensor([[5, 9, 14, 20, 31, 40, 52, 60], [7, 8, 9, 10, 11, 12, 13, 14]])
TRAINING_RECORD = {
    "prompt": [{"type": "human", "content": "What is the capital of France?"}],
    "base": {"question": "What is the capital of France?", "correct_answer": "Paris",
             "incorrect_answer": "Lyon"},
}  # fmt: skip


def plain_model(folder):
    return AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, attn_implementation="eager"
    ).eval()


def head_outputs(model, name, layer, tokens, n_heads):
    """Return the input of layer ``layer``'s output projection, as [batch, pos, head, d_head]."""
    captured = {}
    module = model.get_submodule(OUTPUT_MODULE[name].format(layer=layer))
    handle = module.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        handle.remove()
    x = captured["x"]
    return x.view(*x.shape[:-1], n_heads, -1)


def test_every_family_has_a_tiny_model_and_every_tiny_model_a_family():
    assert sorted(f.name for f in FAMILIES) == sorted(FAMILY_ARCHITECTURES)
    assert all(family_of(a).name == f.name for f in FAMILIES for a in f.architectures)


@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_each_heads_slices_move_only_that_heads_output(name, family_dirs):
    folder = family_dirs[name]
    geometry, _ = read_signature(folder)
    model = plain_model(folder)
    parameters = dict(model.named_parameters())
    layer, head = 1, 1
    group = head // (geometry.n_heads // geometry.n_kv_heads)
    sharing = {h for h in range(geometry.n_heads)
               if h // (geometry.n_heads // geometry.n_kv_heads) == group}  # fmt: skip
    before = head_outputs(model, name, layer, PROMPTS, geometry.n_heads)
    generator = torch.Generator().manual_seed(0)
    for component, expected in (("q", {head}), ("k", sharing), ("v", sharing)):
        if name == "olmo2" and component in ("q", "k"):
            # OLMo 2 normalizes q (and k) over all heads together: one head's rows reach all.
            expected = set(range(geometry.n_heads))
        slices = head_slices(geometry, parameters, layer, head, component)
        saved = [parameters[s.parameter].detach().clone() for s in slices]
        with torch.no_grad():
            for s in slices:
                view = s.index(parameters[s.parameter])
                view.add_(torch.randn(view.shape, generator=generator))
        after = head_outputs(model, name, layer, PROMPTS, geometry.n_heads)
        with torch.no_grad():
            for s, value in zip(slices, saved, strict=True):
                parameters[s.parameter].copy_(value)
        moved = {h for h in range(geometry.n_heads)
                 if (after[:, :, h] - before[:, :, h]).abs().max() > 1e-6}  # fmt: skip
        assert moved == expected, (component, moved)


def zeroed_hook_z(heads):
    """Return bridge hooks that zero each (layer, head)'s hook_z at every position."""

    def zero(z, hook, head):
        z[:, :, head] = 0.0
        return z

    return [
        (f"blocks.{layer}.attn.hook_z", lambda z, hook, head=head: zero(z, hook, head))
        for layer, head in heads
    ]


@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_zero_ablation_equals_zeroing_the_output_projections_inputs(name, family_dirs):
    folder = family_dirs[name]
    hooked = load_model(folder)
    heads = [(0, 1), (1, 2)]
    mask = torch.ones_like(PROMPTS)
    d_head = hooked.geometry.d_head
    with ablated(hooked, heads, method="zero", position="all"):
        with torch.no_grad():
            plain = hooked.plain_model(PROMPTS, attention_mask=mask).logits
    # The hooked reference: the same heads zeroed on the bridge's hook_z.
    bridge = hooked.run_with_hooks(PROMPTS, zeroed_hook_z(heads), attention_mask=mask)
    reference = plain_model(folder)
    handles = []
    for layer, head in heads:

        def zero(module, args, head=head):
            x = args[0].clone()
            x[..., head * d_head : (head + 1) * d_head] = 0
            return (x, *args[1:])

        module = reference.get_submodule(OUTPUT_MODULE[name].format(layer=layer))
        handles.append(module.register_forward_pre_hook(zero))
    with torch.no_grad():
        expected = reference(PROMPTS).logits
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        untouched = reference(PROMPTS).logits
    assert (expected - untouched).abs().max() > 1e-4  # the ablation does something
    # One float32 forward against another of the same weights, differently scheduled.
    torch.testing.assert_close(bridge, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_spt_moves_only_the_masked_slices(name, family_dirs, tmp_path):
    folder = family_dirs[name]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(TRAINING_RECORD) for _ in range(4)) + "\n")
    hooked = load_base(folder)
    mask_path = HeadMask.from_heads(hooked, [(0, 1), (1, 3)]).save(tmp_path / "mask.json")
    mask = HeadMask.load(mask_path)
    config = TuneConfig(mode="spt", lr=1e-2, steps=2, batch_size=4)
    tune_folder(folder, data, tmp_path / "out", config, mask=mask_path, progress=False)
    base, tuned = (
        load_file(folder / "model.safetensors"),
        load_file(tmp_path / "out/model.safetensors"),
    )
    allowed = mask.gradient_masks(dict(plain_model(folder).named_parameters()))
    assert set(base) == set(tuned) and set(allowed) <= set(base)
    changed = 0
    for key, before in base.items():
        inside = allowed.get(key, torch.zeros(before.shape, dtype=torch.bool))
        assert torch.equal(before[~inside], tuned[key][~inside]), key
        changed += int((before[inside] != tuned[key][inside]).sum())
    assert changed > 0


@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_signature_info_and_export_mask_from_the_config_alone(name, family_dirs, tmp_path):
    folder = family_dirs[name]
    hooked = load_model(folder, hooks=False)
    geometry, fingerprint = read_signature(folder)
    assert geometry == hooked.geometry and fingerprint == hooked.fingerprint()
    if name == "gemma3_text":
        assert geometry.d_head * geometry.n_heads != geometry.d_model
    info = CliRunner().invoke(app, ["info", "--model", str(folder)])
    assert info.exit_code == 0, info.output
    assert geometry.architecture in info.stdout
    expected_engine = "hf (every method and position)"
    assert f"family           {name}\n" in info.stdout
    assert f"patching_engine  {expected_engine}\n" in info.stdout
    scores = tmp_path / "scores.csv"
    rows = [f"{layer},{head},{(layer * 7 + head) % 5 / 10}"
            for layer in range(geometry.n_layers) for head in range(geometry.n_heads)]  # fmt: skip
    scores.write_text("layer,head,score\n" + "\n".join(rows) + "\n")
    out = tmp_path / "mask.json"
    result = CliRunner().invoke(
        app, ["export-mask", "--scores", str(scores), "--model", str(folder), "--top-k", "2",
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    HeadMask.load(out).validate(hooked)


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_locate_equals_transformer_lens_patching(name, family_dirs):
    hooked = load_model(family_dirs[name])
    base, donor = PROMPTS, PROMPTS.flip(-1)
    pairs = [
        PromptPair(i, f"p{i}", "", "", base[i].tolist(), donor[i].tolist(), True)
        for i in range(len(base))
    ]
    metric = PatchMetric("log-odds", lambda logits: log_odds(logits, [20], [31]))
    ours = locate_heads(hooked, pairs, metric, method="activation", position="all",
                        progress=False)  # fmt: skip
    batch = batch_pairs(pairs, 3)
    _, donor_cache = hooked.bridge.run_with_cache(batch.counterfactual_tokens)
    reference = tl_patching.get_act_patch_attn_head_out_all_pos(
        hooked.bridge, batch.prompt_tokens, donor_cache,
        lambda logits: metric.fn(logits[:, -1]).mean(),
    ).detach()  # fmt: skip
    expected = reference - ours.baseline["X_r"]["mean"]
    torch.testing.assert_close(
        torch.tensor(ours.matrix(), dtype=torch.float32), expected, atol=1e-5, rtol=0
    )


def test_auto_runs_every_job_on_the_hf_engine_and_never_the_loop(family_dirs, capsys):
    pairs = [PromptPair(0, "p0", "", "", PROMPTS[0].tolist(), PROMPTS[1].tolist(), True)]
    metric = PatchMetric("log-odds", lambda logits: log_odds(logits, [20], [31]))
    for name in ("qwen3", "llama"):
        hooked = load_model(family_dirs[name])
        for method, position in (("path", "all"), ("path", "end"), ("attribution", "end")):
            scores = locate_heads(hooked, pairs, metric, method=method, position=position)
            assert scores.settings["engine"] == "hf"
            assert "note:" not in capsys.readouterr().err


@pytest.mark.numeric
@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_hf_engine_equals_the_hooked_loop(name, family_dirs):
    """Patching over HF's modules against one hooked bridge forward per head: path and
    activation at END (both directions, aligned and unaligned pairs, batches with left padding)
    and at every position; attribution at END and at every position."""
    hooked = load_model(family_dirs[name])
    metric = PatchMetric("log-odds", lambda logits: log_odds(logits, [5, 6], [7]))
    differences = []
    for aligned, method, direction, position in (
        (True, "path", "c_into_r", "end"), (False, "path", "c_into_r", "end"),
        (False, "activation", "c_into_r", "end"), (False, "path", "r_into_c", "end"),
        (True, "activation", "r_into_c", "end"), (True, "path", "c_into_r", "all"),
        (True, "activation", "r_into_c", "all"), (True, "attribution", "c_into_r", "end"),
        (True, "attribution", "c_into_r", "all"),
    ):  # fmt: skip
        pairs = make_pairs(5, aligned=aligned, seed=1)
        runs = {
            engine: locate_heads(hooked, pairs, metric, method=method, direction=direction,
                                 position=position, engine=engine, batch_size=batch,
                                 per_prompt=True, progress=False)
            for engine, batch in (("hf", 3), ("loop", 5))
        }  # fmt: skip
        ours = torch.tensor(runs["hf"].per_prompt["value"].to_numpy())
        loop = torch.tensor(runs["loop"].per_prompt["value"].to_numpy())
        assert runs["hf"].settings["engine"] == "hf"
        torch.testing.assert_close(ours, loop, atol=1e-5, rtol=0)
        assert loop.abs().max() > 1e-3  # some head moves the metric: not a vacuous equality
        differences.append((ours - loop).abs().max().item())
    print(f"{name}: hf engine vs loop, max |difference| {max(differences):.2e}")


def test_an_engine_renamed_or_unknown_is_refused_by_name(family_dirs):
    hooked = load_model(family_dirs["qwen3"])
    pairs = make_pairs(2, aligned=True, seed=0)
    metric = PatchMetric("log-odds", lambda logits: log_odds(logits, [5, 6], [7]))
    for engine, message in (
        ("fast", "--engine fast is now --engine hf"),
        ("modules", "--engine modules is now --engine hf"),
        ("warp", "unknown engine 'warp'; choose from auto, hf, loop"),
    ):
        with pytest.raises(SptInterpError, match=message):
            locate_heads(hooked, pairs, metric, engine=engine, progress=False)


@pytest.mark.parametrize(("name", "position"), [("qwen3", "end"), ("llama", "all")])
def test_the_runtime_check_compares_a_patched_run_with_the_loop(name, position, family_dirs,
                                                                monkeypatch):  # fmt: skip
    import spt_interp.patching.engines.hf as hf_engine

    hooked = load_model(family_dirs[name])
    pairs = make_pairs(3, aligned=True, seed=2)
    metric = PatchMetric("log-odds", lambda logits: log_odds(logits, [5, 6], [7]))
    # An engine whose patched runs are off by a little, its unpatched logits exact.
    attribute = "end_patched_logits" if position == "end" else "full_sequence_patched_logits"
    module = hf_engine
    original = getattr(module, attribute)
    monkeypatch.setattr(module, attribute, lambda *a, **k: original(*a, **k) + 0.05)
    with pytest.raises(SptInterpError, match="the hf engine's patched logits of L0.H0"):
        locate_heads(hooked, pairs, metric, method="path", position=position, progress=False)
    # Without the check the same engine runs (and would be wrong): the check is what refuses.
    locate_heads(hooked, pairs, metric, method="path", position=position, progress=False,
                 verify=False)  # fmt: skip
