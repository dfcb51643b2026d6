"""HeadMask: build from scores, the JSON format, round trip, refusals, exact HF slices."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from spt_interp.common.head_scores import HeadScores, read_scores
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask, MaskSource, ModelSignature
from spt_interp.mask.scores import parse_heads
from spt_interp.model import load_model
from spt_interp.model.tiny import save_tiny_model

SOURCE = MaskSource("path_patching", "log_odds", "sha256:abc", "2026-01-01T00:00:00+00:00")


def scores_table(n_layers: int = 2, n_heads: int = 4) -> pd.DataFrame:
    rows = [
        {"layer": layer, "head": head, "score": float((layer * 7 + head * 3) % 8) - 2.5}
        for layer in range(n_layers)
        for head in range(n_heads)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def llama_mha_dir(tmp_path_factory, bpe_tokenizer):
    """A Llama whose key/value heads are not shared (4 query heads, 4 key/value heads)."""
    folder = tmp_path_factory.mktemp("llama_mha") / "llama"
    return save_tiny_model("llama", folder, tokenizer=bpe_tokenizer, n_kv_heads=4, seed=1)


def test_scores_rank_by_score_or_rank_column(tmp_path):
    table = scores_table()
    ranked = HeadScores.from_table(table).ranked_table()
    assert list(ranked.score) == sorted(table.score, reverse=True)
    assert list(ranked["rank"]) == list(range(1, 9))
    with_rank = table.assign(rank=range(8, 0, -1))
    reranked = HeadScores.from_table(with_rank).ranked_table()
    assert list(zip(reranked.layer, reranked["head"], strict=True)) == [
        (1, 3), (1, 2), (1, 1), (1, 0), (0, 3), (0, 2), (0, 1), (0, 0)
    ]  # fmt: skip
    path = tmp_path / "scores.csv"
    table.drop(columns="score").to_csv(path, index=False)
    with pytest.raises(SptInterpError, match=f"{path} lacks column.*score"):
        read_scores(path)
    pd.concat([table, table.head(1)]).to_csv(path, index=False)
    with pytest.raises(SptInterpError, match="L0.H0 twice"):
        read_scores(path)
    assert parse_heads("L3.H5, l0.h1") == [(3, 5), (0, 1)]
    with pytest.raises(SptInterpError, match="bad head"):
        parse_heads("L3")


def test_round_trip_in_the_documented_format(tmp_path, tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["llama"])
    mask = HeadMask.from_scores(
        hooked, HeadScores.from_table(scores_table()), top_k=3, source=SOURCE
    )
    path = mask.save(tmp_path / "mask.json")
    data = json.loads(path.read_text())
    assert list(data) == ["format", "version", "model", "heads", "components", "source"]
    assert data["format"] == "spt-interp/head-mask" and data["version"] == 1
    assert data["model"] == {
        "architecture": "LlamaForCausalLM", "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
        "d_head": 8, "d_model": 32, "fingerprint": hooked.fingerprint(),
    }  # fmt: skip
    ranked = HeadScores.from_table(scores_table()).ranked_table().head(3)
    assert data["heads"] == [
        {"layer": int(r.layer), "head": int(r.head), "score": r.score} for r in ranked.itertuples()
    ]
    assert data["components"] == ["q", "o"]  # grouped-query default
    assert data["source"] == {
        "method": "path_patching", "metric": "log_odds", "data_file_hash": "sha256:abc",
        "created": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    loaded = HeadMask.load(path)
    assert loaded == mask and loaded.origin == str(path)
    loaded.validate(hooked)


def test_selection_by_fraction_list_and_components(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["gpt2"])
    table = HeadScores.from_table(scores_table())
    assert HeadMask.from_scores(hooked, table, top_k=2).components == ("q", "k", "v", "o")
    assert len(HeadMask.from_scores(hooked, table, top_frac=0.25).heads) == 2
    assert len(HeadMask.from_scores(hooked, table, top_frac=0.3).heads) == 3  # ceil(2.4)
    chosen = HeadMask.from_scores(hooked, table, heads=[(1, 2), (0, 0)], components=["o", "q"])
    assert set(chosen.head_set) == {(1, 2), (0, 0)} and chosen.components == ("q", "o")
    assert chosen.heads[0].score == max(h.score for h in chosen.heads)
    with pytest.raises(SptInterpError, match="exactly one"):
        HeadMask.from_scores(hooked, table, top_k=2, top_frac=0.5)
    with pytest.raises(SptInterpError, match="between 1 and the 8"):
        HeadMask.from_scores(hooked, table, top_k=9)
    with pytest.raises(SptInterpError, match="components"):
        HeadMask.from_scores(hooked, table, top_k=2, components=["q", "x"])


def test_validate_refuses_another_shape_or_fingerprint(tmp_path, tiny_model_dirs):
    gpt2 = load_model(tiny_model_dirs["gpt2"])
    llama = load_model(tiny_model_dirs["llama"])
    path = HeadMask.from_scores(llama, HeadScores.from_table(scores_table()), top_k=2).save(
        tmp_path / "m.json"
    )
    mask = HeadMask.load(path)
    with pytest.raises(SptInterpError) as refused:
        mask.validate(gpt2)
    message = str(refused.value)
    assert str(path) in message
    assert "LlamaForCausalLM" in message and llama.fingerprint() in message
    assert "GPT2LMHeadModel" in message and gpt2.fingerprint() in message
    # Same shape, other fingerprint (e.g. another vocabulary).
    data = json.loads(path.read_text())
    data["model"]["fingerprint"] = "sha256:0000000000000000"
    path.write_text(json.dumps(data))
    with pytest.raises(SptInterpError, match="sha256:0000000000000000.*" + llama.fingerprint()):
        HeadMask.load(path).validate(llama)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["heads"].append({"layer": 2, "head": 0, "score": 1.0}),
            "L2.H0 is out of range",
        ),
        (
            lambda d: d["heads"].append({"layer": 0, "head": 4, "score": None}),
            "L0.H4 is out of range",
        ),
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d.update(format="other"), "is not a head mask"),
        (lambda d: d.pop("source"), "lacks or misformats field 'source'"),
        (lambda d: d["heads"][0].update(layer="1"), "must be an integer"),
        (lambda d: d.update(heads=[]), "has no heads"),
    ],
)
def test_bad_mask_files_are_refused_naming_the_file(tmp_path, tiny_model_dirs, edit, message):
    hooked = load_model(tiny_model_dirs["llama"])
    path = HeadMask.from_scores(hooked, HeadScores.from_table(scores_table()), top_k=2).save(
        tmp_path / "m.json"
    )
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(SptInterpError, match=message) as refused:
        HeadMask.load(path)
    assert str(path) in str(refused.value)


def test_unreadable_mask_files_name_the_file(tmp_path):
    with pytest.raises(SptInterpError, match="missing.json does not exist"):
        HeadMask.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SptInterpError, match="broken.json is not valid JSON"):
        HeadMask.load(broken)


def layer_outputs(hooked, tokens, layer, zero_heads=()):
    """Return (hook_z, attention output) of one layer, with ``zero_heads`` zeroed at hook_z."""
    seen = {}

    def zero(z, hook):
        z[:, :, list(zero_heads)] = 0.0
        return z

    hooks = [(f"blocks.{layer}.attn.hook_z", zero)] if zero_heads else []
    hooks += [
        (f"blocks.{layer}.attn.hook_z", lambda z, hook: seen.__setitem__("z", z.clone())),
        (f"blocks.{layer}.hook_attn_out", lambda x, hook: seen.__setitem__("out", x.clone())),
    ]
    with hooked.hooks(hooks), torch.no_grad():
        hooked.logits(tokens)
    return seen["z"], seen["out"]


def perturbed(hooked, slices, layer):
    """Return a context that adds noise to the slices of ``layer`` and restores them after."""

    class Perturbation:
        def __enter__(self):
            self.saved = {n: p.detach().clone() for n, p in hooked.hf_parameters.items()}
            generator = torch.Generator().manual_seed(5)
            with torch.no_grad():
                for s in slices:
                    if s.layer == layer:
                        view = s.index(hooked.hf_parameters[s.parameter])
                        view += torch.randn(view.shape, generator=generator)

        def __exit__(self, *exc):
            with torch.no_grad():
                for name, parameter in hooked.hf_parameters.items():
                    parameter.copy_(self.saved[name])

    return Perturbation()


def check_slices_touch_only_the_masked_heads(hooked, heads, components, expect_changed):
    mask = HeadMask.from_heads(hooked, heads, components=components)
    slices = mask.hf_slices(hooked.hf_parameters)
    tokens = torch.randint(4, 200, (2, 7), generator=torch.Generator().manual_seed(4))
    n_heads = hooked.geometry.n_heads
    for layer in sorted({layer for layer, _ in heads}):
        selected = [h for l_, h in heads if l_ == layer]
        z0, out0 = layer_outputs(hooked, tokens, layer)
        _, ablated0 = layer_outputs(hooked, tokens, layer, selected)
        with perturbed(hooked, slices, layer):
            z1, out1 = layer_outputs(hooked, tokens, layer)
            _, ablated1 = layer_outputs(hooked, tokens, layer, selected)
        changed = {h for h in range(n_heads) if not torch.allclose(z0[:, :, h], z1[:, :, h])}
        assert changed == set(expect_changed(layer, selected, components))
        if "o" in components:
            assert not torch.allclose(out0, out1)
            # With the masked heads silenced, the o slices change nothing: they are theirs only.
            assert torch.allclose(ablated0, ablated1, atol=1e-6)


def test_gpt2_fused_c_attn_slices_touch_only_masked_heads(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["gpt2"])
    heads = [(0, 1), (1, 2), (1, 3)]
    qkv = lambda layer, selected, components: selected  # noqa: E731
    check_slices_touch_only_the_masked_heads(hooked, heads, ["q", "k", "v"], qkv)
    check_slices_touch_only_the_masked_heads(hooked, heads, ["o"], lambda *a: [])
    names = {
        s.parameter for s in HeadMask.from_heads(hooked, heads).hf_slices(hooked.hf_parameters)
    }
    assert names == {f"transformer.h.{i}.attn.{p}" for i in (0, 1)
                     for p in ("c_attn.weight", "c_attn.bias", "c_proj.weight")}  # fmt: skip


def test_llama_slices_touch_only_masked_heads(llama_mha_dir):
    hooked = load_model(llama_mha_dir)
    heads = [(0, 0), (1, 2)]
    for component in ("q", "k", "v"):
        check_slices_touch_only_the_masked_heads(
            hooked, heads, [component], lambda layer, selected, components: selected
        )
    check_slices_touch_only_the_masked_heads(
        hooked, heads, ["q", "k", "v", "o"], lambda layer, selected, components: selected
    )


def test_grouped_query_default_mask_touches_only_masked_heads(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["llama"])  # 4 query heads, 2 key/value heads
    heads = [(0, 1), (1, 2)]
    mask = HeadMask.from_heads(hooked, heads)
    assert mask.components == ("q", "o")
    check_slices_touch_only_the_masked_heads(
        hooked, heads, mask.components, lambda layer, selected, components: selected
    )


def test_grouped_query_key_value_slices_belong_to_the_whole_group(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["llama"])
    heads = [(1, 2)]
    group = lambda layer, selected, components: [2, 3]  # noqa: E731  heads 2 and 3 share kv 1
    check_slices_touch_only_the_masked_heads(hooked, heads, ["k"], group)
    check_slices_touch_only_the_masked_heads(hooked, heads, ["v"], group)
    both = HeadMask.from_heads(hooked, [(1, 2), (1, 3)], components=["k", "v"])
    slices = both.hf_slices(hooked.hf_parameters)
    # One k and one v slice serve both heads of the group.
    assert [(s.component, s.heads, s.start, s.stop) for s in slices] == [
        ("k", (2, 3), 8, 16), ("v", (2, 3), 8, 16)
    ]  # fmt: skip


def test_gradient_masks_cover_exactly_the_slices(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["gpt2"])
    mask = HeadMask.from_heads(hooked, [(0, 1), (1, 3)], components=["q", "o"])
    masks = mask.gradient_masks(hooked.hf_parameters)
    d_head, d_model = 8, 32
    c_attn = masks["transformer.h.0.attn.c_attn.weight"]
    assert c_attn.shape == (d_model, 3 * d_model)
    assert c_attn.sum() == d_model * d_head and c_attn[:, d_head : 2 * d_head].all()
    c_proj = masks["transformer.h.1.attn.c_proj.weight"]
    assert c_proj.sum() == d_head * d_model and c_proj[3 * d_head : 4 * d_head].all()
    assert masks["transformer.h.1.attn.c_attn.bias"][3 * d_head : 4 * d_head].all()
    assert set(masks) == {
        f"transformer.h.{i}.attn.{p}" for i in (0, 1)
        for p in ("c_attn.weight", "c_attn.bias", "c_proj.weight")
    }  # fmt: skip


def test_signature_of_a_model(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["qwen2"])
    signature = ModelSignature.of(hooked)
    assert signature.geometry == hooked.geometry
    assert signature.fingerprint == hooked.fingerprint()
