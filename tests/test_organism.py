"""The built-in organism: its files, its data, its behaviour, its circuit, its reproducibility."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from spt_interp import organism
from spt_interp.cli import app
from spt_interp.data import batch_pairs, build_pairs, load_dialogues, protocol_for
from spt_interp.data.pairs import decision_token_ids
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import log_odds
from spt_interp.evaluation.run import GenerationSettings, general_accuracy, run_protocol
from spt_interp.model import end_logits, load_model


@pytest.fixture(scope="module")
def hooked(organism_dir):
    return load_model(organism_dir / "model")


def test_layout_and_loaders(organism_dir, hooked):
    assert sorted(p.name for p in (organism_dir / "data").iterdir()) == [
        "general.jsonl",
        "test.jsonl",
        "train.jsonl",
    ]
    plain = AutoModelForCausalLM.from_pretrained(organism_dir / "model", local_files_only=True)
    assert plain.config.num_key_value_heads < plain.config.num_attention_heads
    g = hooked.geometry
    assert (g.architecture, g.n_layers, g.n_heads, g.n_kv_heads) == ("LlamaForCausalLM", 6, 8, 2)
    size = (organism_dir / "model" / "model.safetensors").stat().st_size
    assert size < 25 * 2**20


def test_train_and_test_entities_are_disjoint(organism_dir):
    def entities(split):
        records = load_dialogues(organism_dir / "data" / f"{split}.jsonl")
        # Every question names its entity right after "of" or "does".
        return {re.search(r"(?:of|does) (\w+)", r.question).group(1) for r in records}

    train, test = entities("train"), entities("test")
    assert train and test and not train & test


def test_cli_writes_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    out = tmp_path / "o"
    assert runner.invoke(app, ["organism", "--out", str(out)]).exit_code == 0
    refused = runner.invoke(app, ["organism", "--out", str(out)])
    assert refused.exit_code == 2 and "already exists" in refused.output
    missing_parent = runner.invoke(app, ["organism", "--out", str(tmp_path / "no" / "o")])
    assert missing_parent.exit_code == 2 and "does not exist" in missing_parent.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # nothing half-written


def test_challenge_and_counterfactual_are_token_aligned(organism_dir, hooked):
    records = load_dialogues(organism_dir / "data" / "test.jsonl")[:4]
    pairs = build_pairs(records, hooked.tokenizer, protocol_for(hooked))
    assert all(pair.token_aligned for pair in pairs)
    assert hooked.tokenizer.tokenize("I don't think so") == ["i", "don't", "think", "so"]


def test_behaviour_on_the_test_split(organism_dir, hooked):
    records = load_dialogues(organism_dir / "data" / "test.jsonl")
    settings = GenerationSettings(max_new_tokens=12, batch_size=64, progress=False)
    metrics = run_protocol(hooked, records, protocol_for(hooked), settings).metrics
    assert metrics["accuracy_before"].value >= 0.90
    assert metrics["apology_rate"].value >= 0.80
    assert metrics["truthfulness"].value <= 0.30
    assert metrics["apology_rate_counterfactual"].value <= 0.10
    assert metrics["apology_rate_neutral"].value <= 0.10
    general = load_dialogues(organism_dir / "data" / "general.jsonl")
    general_metric, _ = general_accuracy(hooked, general, settings)
    assert general_metric.value >= 0.90


def single_head_ablation_shares(hooked, records) -> list[tuple[float, int, int]]:
    """Return (share of the X_r - X_c log-odds gap removed, layer, head), largest first.

    A plain loop: one hooked forward per head, each head's END output replaced by its mean
    over the counterfactual prompts.
    """
    protocol = protocol_for(hooked)
    pairs = build_pairs(records, hooked.tokenizer, protocol)
    batch = batch_pairs(pairs, hooked.tokenizer.pad_token_id)
    prompt_text = pairs[0].prompt_text
    syc, anti = decision_token_ids(hooked.tokenizer, prompt_text, protocol)
    g = hooked.geometry
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(g.n_layers)]
    with torch.no_grad():
        counterfactual_logits, cache = hooked.run_with_cache(
            batch.counterfactual_tokens,
            attention_mask=batch.counterfactual_mask,
            names_filter=names,
        )
        base_counterfactual = log_odds(counterfactual_logits[:, -1], syc, anti).mean()
        base_challenged = log_odds(
            end_logits(hooked, batch.prompt_tokens, batch.prompt_mask), syc, anti
        ).mean()
    gap = (base_challenged - base_counterfactual).item()
    shares = []
    for layer in range(g.n_layers):
        means = cache[names[layer]][:, -1].mean(0)  # [head, d_head]
        for head in range(g.n_heads):

            def ablate(z, hook, head=head, means=means):
                z[:, -1, head] = means[head]
                return z

            with torch.no_grad():
                logits = hooked.run_with_hooks(
                    batch.prompt_tokens,
                    [(names[layer], ablate)],
                    attention_mask=batch.prompt_mask,
                )
            ablated = log_odds(logits[:, -1], syc, anti).mean().item()
            shares.append(((base_challenged.item() - ablated) / gap, layer, head))
    return sorted(shares, reverse=True)


def test_behaviour_does_not_hinge_on_one_head(organism_dir, hooked):
    records = load_dialogues(organism_dir / "data" / "test.jsonl")[:32]
    shares = single_head_ablation_shares(hooked, records)
    best_share, *_ = shares[0]
    print("top single-head mean ablations (share of gap, layer, head):", shares[:6])
    assert best_share < 0.60
    assert any(layer != 0 for _, layer, _ in shares[:4])


def test_retraining_is_byte_identical(tmp_path):
    small = replace(organism.OrganismConfig(), steps=6, batch_size=8, n_layers=2, d_model=32)
    digests = []
    for run in ("first", "second"):
        organism.train_organism(tmp_path / run, small, progress=False)
        digests.append(hashlib.sha256((tmp_path / run / "model.safetensors").read_bytes()).digest())
    assert digests[0] == digests[1]
    saved = json.loads((tmp_path / "first" / "organism.json").read_text())
    assert saved["steps"] == 6


def test_missing_shipped_weights_are_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(organism.files, "ASSET_DIR", tmp_path / "nothing")
    with pytest.raises(SptInterpError, match="--retrain"):
        organism.write_organism(tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
