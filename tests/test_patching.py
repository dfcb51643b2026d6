"""Patching engine: the exact HF engine against one hooked bridge forward per head, against
TransformerLens's own patching function, attribution against its formula and finite differences,
and bad input refused before any patched run."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching as tl_patching

from spt_interp.data import PromptPair, batch_pairs
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import log_odds
from spt_interp.model import load_model
from spt_interp.patching import (
    PatchMetric,
    all_heads,
    custom_metric,
    hooked_attribution_effects,
    locate_heads,
)

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric

SYC, ANTI = [5, 6], [7]
PAD = 3


def log_odds_metric() -> PatchMetric:
    return PatchMetric("log-odds", lambda logits: log_odds(logits, SYC, ANTI))


def make_pairs(n: int, *, aligned: bool, seed: int = 0, length: int = 10) -> list[PromptPair]:
    """Random prompt pairs; X_c differs inside, and is one token shorter unless ``aligned``."""
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for index in range(n):
        size = length - (index % 3)  # rows of different lengths: left padding in every batch
        ids_r = torch.randint(10, 300, (size,), generator=generator).tolist()
        ids_c = list(ids_r)
        ids_c[size // 2] = (ids_c[size // 2] + 7) % 290 + 10
        if not aligned:
            del ids_c[size // 2 + 1]
        pairs.append(PromptPair(index, f"r{index}", "", "", ids_r, ids_c, aligned))
    return pairs


def equal_length(pairs: list[PromptPair], size: int = 8) -> list[PromptPair]:
    """The pairs cut to ``size`` tokens each: a batch without padding."""
    return [
        PromptPair(
            p.index,
            p.record_id,
            "",
            "",
            p.prompt_ids[:size],
            p.counterfactual_ids[:size],
            True,
        )
        for p in pairs
    ]


def reference_path_loop(hooked, pairs, metric) -> torch.Tensor:
    """Independent path patching: per head, a bridge forward on X_r with every hook_z set to
    its X_r value except the sender at END, which gets X_c's. Returns [heads, prompts]."""
    batch = batch_pairs(pairs, PAD)
    n_layers = hooked.geometry.n_layers

    def z_cache(tokens, mask):
        _, cache = hooked.run_with_cache(tokens, attention_mask=mask)
        return [cache[f"blocks.{layer}.attn.hook_z"].clone() for layer in range(n_layers)]

    z_r = z_cache(batch.prompt_tokens, batch.prompt_mask)
    z_c = z_cache(batch.counterfactual_tokens, batch.counterfactual_mask)
    base = hooked.logits(batch.prompt_tokens, batch.prompt_mask)[:, -1]
    rows = []
    for layer, head in all_heads(n_layers, hooked.geometry.n_heads):
        hooks = []
        for other in range(n_layers):
            value = z_r[other].clone()
            if other == layer:
                value[:, -1, head] = z_c[layer][:, -1, head]
            hooks.append((f"blocks.{other}.attn.hook_z", lambda z, hook, v=value: v))
        with torch.no_grad():
            logits = hooked.run_with_hooks(
                batch.prompt_tokens, hooks, attention_mask=batch.prompt_mask
            )[:, -1]
        rows.append(metric.fn(logits) - metric.fn(base))
    return torch.stack(rows)


@pytest.fixture(scope="module")
def models(tiny_model_dirs):
    return {arch: load_model(tiny_model_dirs[arch]) for arch in ("gpt2", "llama", "qwen2")}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "different-lengths"])
@pytest.mark.parametrize("method", ["path", "activation"])
def test_hf_end_sweep_equals_hooked_loop(models, arch, aligned, method):
    hooked = models[arch]
    pairs = make_pairs(5, aligned=aligned, seed=1)
    metric = log_odds_metric()
    fast = locate_heads(
        hooked,
        pairs,
        metric,
        method=method,
        engine="hf",
        batch_size=3,
        per_prompt=True,
        progress=False,
    )
    loop = locate_heads(
        hooked,
        pairs,
        metric,
        method=method,
        engine="loop",
        batch_size=5,
        per_prompt=True,
        progress=False,
    )
    assert fast.settings["engine"] == "hf" and loop.settings["engine"] == "loop"
    torch.testing.assert_close(
        torch.tensor(fast.per_prompt["value"].to_numpy()),
        torch.tensor(loop.per_prompt["value"].to_numpy()),
        atol=1e-5,
        rtol=0,
    )
    # Not a vacuous equality: patching moves the metric for some head.
    assert fast.table["score"].abs().max() > 1e-3
    assert fast.baseline["X_r"]["mean"] == pytest.approx(loop.baseline["X_r"]["mean"], abs=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_path_patching_equals_independent_reference_loop(models, arch):
    hooked = models[arch]
    pairs = make_pairs(4, aligned=False, seed=2)
    metric = log_odds_metric()
    fast = locate_heads(hooked, pairs, metric, method="path", per_prompt=True, progress=False)
    reference = reference_path_loop(hooked, pairs, metric)
    torch.testing.assert_close(
        torch.tensor(fast.per_prompt["value"].to_numpy(), dtype=torch.float32),
        reference.flatten(),
        atol=1e-5,
        rtol=0,
    )


def test_path_differs_from_activation_where_later_heads_respond(models):
    hooked = models["llama"]
    pairs = make_pairs(4, aligned=True, seed=3)
    path = locate_heads(hooked, pairs, log_odds_metric(), method="path", progress=False)
    activation = locate_heads(hooked, pairs, log_odds_metric(), method="activation", progress=False)
    first = path.table["layer"] == 0
    last = path.table["layer"] == hooked.geometry.n_layers - 1
    # Last-layer senders have no later heads to freeze: both methods agree exactly there.
    assert (path.table["score"][last] - activation.table["score"][last]).abs().max() < 1e-6
    assert (path.table["score"][first] - activation.table["score"][first]).abs().max() > 1e-5


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_all_positions_equals_transformer_lens(models, arch):
    hooked = models[arch]
    # Equal lengths and no padding: TransformerLens's function runs without an attention mask.
    pairs = equal_length(make_pairs(4, aligned=True, seed=4))
    metric = log_odds_metric()
    ours = locate_heads(hooked, pairs, metric, method="activation", position="all", progress=False)
    batch = batch_pairs(pairs, PAD)
    assert batch.prompt_mask.all()
    _, clean_cache = hooked.bridge.run_with_cache(batch.counterfactual_tokens)
    reference = tl_patching.get_act_patch_attn_head_out_all_pos(
        hooked.bridge,
        batch.prompt_tokens,
        clean_cache,
        lambda logits: metric.fn(logits[:, -1]).mean(),
    ).detach()
    expected = reference - ours.baseline["X_r"]["mean"]
    torch.testing.assert_close(
        torch.tensor(ours.matrix(), dtype=torch.float32), expected, atol=1e-5, rtol=0
    )


def test_all_positions_refuses_pairs_that_are_not_token_aligned(models, monkeypatch):
    import spt_interp.patching.engine as engine

    monkeypatch.setattr(engine, "choose_engine", lambda *a, **k: pytest.fail("heavy work ran"))
    with pytest.raises(SptInterpError, match="token-aligned"):
        locate_heads(
            models["llama"], make_pairs(3, aligned=False), log_odds_metric(), position="all"
        )


@pytest.mark.parametrize("position", ["end", "all"])
def test_attribution_equals_gradient_formula(models, position):
    hooked = models["llama"]
    pairs = make_pairs(4, aligned=True, seed=5)
    metric = log_odds_metric()
    fast = locate_heads(
        hooked,
        pairs,
        metric,
        method="attribution",
        position=position,
        per_prompt=True,
        progress=False,
    )
    batch = batch_pairs(pairs, PAD)
    heads = all_heads(hooked.geometry.n_layers, hooked.geometry.n_heads)
    formula = hooked_attribution_effects(
        hooked,
        batch.prompt_tokens,
        batch.prompt_mask,
        batch.counterfactual_tokens,
        batch.counterfactual_mask,
        heads,
        metric,
        position,
    )
    torch.testing.assert_close(
        torch.tensor(fast.per_prompt["value"].to_numpy(), dtype=torch.float32),
        formula.flatten(),
        atol=1e-5,
        rtol=1e-4,
    )


def test_attribution_is_the_derivative_of_activation_patching(tiny_model_dirs):
    """Finite differences: scaling the patch by eps changes the metric by eps times the
    attribution score, to first order."""
    hooked = load_model(tiny_model_dirs["llama"], dtype=torch.float64)
    # No padding: the bridge's float64 forward gives NaN on left-padded rows (TL 4.3).
    pairs = equal_length(make_pairs(2, aligned=True, seed=6))
    # spt_interp.evaluation.metrics works in float32; this test needs float64 throughout.
    metric = custom_metric(
        lambda logits: (
            torch.log_softmax(logits.double(), -1)[:, 5]
            - torch.log_softmax(logits.double(), -1)[:, 7]
        )
    )
    scores = locate_heads(
        hooked, pairs, metric, method="attribution", per_prompt=True, progress=False
    )
    batch = batch_pairs(pairs, PAD)
    _, cache_r = hooked.run_with_cache(batch.prompt_tokens, attention_mask=batch.prompt_mask)
    _, cache_c = hooked.run_with_cache(
        batch.counterfactual_tokens, attention_mask=batch.counterfactual_mask
    )
    # Not smaller: RMSNorm computes in float32 even in a float64 model (as HF does).
    eps = 1e-3
    layer, head = 0, 1
    name = f"blocks.{layer}.attn.hook_z"
    step = eps * (cache_c[name][:, -1, head] - cache_r[name][:, -1, head])

    def nudge(z, hook):
        z = z.clone()
        z[:, -1, head] += step
        return z

    with torch.no_grad():
        base = metric.fn(hooked.logits(batch.prompt_tokens, batch.prompt_mask)[:, -1])
        moved = metric.fn(
            hooked.run_with_hooks(
                batch.prompt_tokens, [(name, nudge)], attention_mask=batch.prompt_mask
            )[:, -1]
        )
    rows = scores.per_prompt.query("layer == @layer and head == @head")["value"].to_numpy()
    numeric = ((moved - base) / eps).numpy()
    assert abs(numeric).max() > 1e-4
    assert numeric == pytest.approx(rows, rel=5e-3, abs=1e-6)


def test_ranking_sign_and_apology_share(models):
    hooked = models["llama"]
    pairs = make_pairs(4, aligned=True, seed=7)
    scores = locate_heads(hooked, pairs, log_odds_metric(), progress=False)
    table = scores.table.sort_values("rank")
    # X_c into X_r: the head that lowers the apology log-odds most drives the apology most.
    assert table["score"].iloc[0] == table["score"].min()
    assert (table["apology_effect"] == -table["score"]).all()
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    ranking = scores.ranking()
    assert ranking["heads"][0]["rank"] == 1 and "negative score" in ranking["drives_apology"]
    reverse = locate_heads(hooked, pairs, log_odds_metric(), direction="r_into_c", progress=False)
    assert "positive score" in reverse.ranking()["drives_apology"]
    assert reverse.baseline["X_r"]["mean"] == pytest.approx(scores.baseline["X_r"]["mean"])

    share = PatchMetric(
        "apology-share",
        lambda logits: torch.sigmoid(log_odds(logits, SYC, ANTI)),
        relative=True,
    )
    relative = locate_heads(hooked, pairs, share, per_prompt=True, progress=False)
    loop = locate_heads(hooked, pairs, share, engine="loop", per_prompt=True, progress=False)
    torch.testing.assert_close(
        torch.tensor(relative.per_prompt["value"].to_numpy()),
        torch.tensor(loop.per_prompt["value"].to_numpy()),
        atol=1e-5,
        rtol=1e-5,
    )


def test_nan_metric_is_refused_before_the_patched_runs(models, monkeypatch):
    import spt_interp.patching.end_position as end_position

    def fail(*args, **kwargs):
        pytest.fail("patched runs started")

    monkeypatch.setattr(end_position, "end_patched_logits", fail)
    nan_metric = custom_metric(lambda logits: torch.full((logits.shape[0],), float("nan")))
    with pytest.raises(SptInterpError, match="NaN"):
        locate_heads(models["llama"], make_pairs(3, aligned=True), nan_metric, progress=False)


def test_empty_pairs_and_bad_options_are_refused(models):
    with pytest.raises(SptInterpError, match="no prompt pairs"):
        locate_heads(models["llama"], [], log_odds_metric())
    with pytest.raises(SptInterpError, match="unknown method"):
        locate_heads(models["llama"], make_pairs(1, aligned=True), log_odds_metric(), method="x")


def test_targets_the_tokenizer_cannot_spell_are_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "sorry": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    from spt_interp.data.pairs import first_tokens

    assert first_tokens(tokenizer, "hello", ("sorry",), "pairs.jsonl:3") == (2,)
    with pytest.raises(
        SptInterpError, match="pairs.jsonl:3: continuation 'zebra' starts with the unknown token"
    ):
        first_tokens(tokenizer, "hello", ("zebra",), "pairs.jsonl:3")
