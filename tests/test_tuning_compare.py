"""The fair comparison protocol: splits by question, lr chosen on validation, weights restored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spt_interp.data import load_dialogues, protocol_for
from spt_interp.experiments.compare import (
    ComparisonPlan,
    compare_modes,
    select_rates,
    split_by_question,
)
from spt_interp.mask import HeadMask
from spt_interp.model import load_model
from spt_interp.model.tiny import save_tiny_model

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"


def test_split_holds_whole_questions_apart():
    records = load_dialogues(DATA) * 2  # every question twice
    train, validation = split_by_question(records, 0.4, seed=0)
    assert len(validation) == 4 and len(train) == 6
    assert not {r.question for r in train} & {r.question for r in validation}


def test_comparison_picks_the_best_validation_lr_and_restores_the_base(tmp_path, bpe_tokenizer):
    folder = save_tiny_model("llama", tmp_path / "m", tokenizer=bpe_tokenizer, n_ctx=256)
    hooked, reference = load_model(folder), load_model(folder)
    before = {name: p.detach().clone() for name, p in hooked.hf_parameters.items()}
    mask = HeadMask.from_heads(hooked, [(0, 1), (1, 0)])
    records = load_dialogues(DATA)
    plan = ComparisonPlan(modes=("spt", "sft"), lrs=(1e-3, 3e-2), steps=2, batch_size=4,
                          max_new_tokens=3, validation_fraction=0.4)  # fmt: skip
    result = compare_modes(hooked, reference, mask, records, records, records,
                           protocol_for(folder), plan, progress=False)  # fmt: skip

    assert all(torch.equal(before[n], p) for n, p in hooked.hf_parameters.items())
    assert len(result.sweep) == 4 and "equal-budget sweep" in result.protocol
    table = result.table
    assert table.iloc[0]["mode"] == "base" and table.iloc[0]["kl"] == 0
    for mode in ("spt", "sft"):
        runs = result.sweep[result.sweep["mode"] == mode]
        chosen = table[(table["mode"] == mode) & (table["selection"] == "chosen lr")].iloc[0]
        assert runs.loc[runs["lr"] == chosen["lr"], "score"].iloc[0] >= runs["score"].max() - 0.01
    spt = table[(table["mode"] == "spt") & (table["selection"] == "chosen lr")].iloc[0]
    sft = table[(table["mode"] == "sft") & (table["selection"] == "chosen lr")].iloc[0]
    assert spt["trainable_parameters"] == 2 * 8 * 32 * 2
    assert sft["trainable_parameters"] == sum(p.numel() for p in hooked.hf_parameters.values())


def _sweep(rows):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["mode", "lr", "confidence", "truthfulness", "kl"])
    frame["score"] = (frame["confidence"] + frame["truthfulness"]) / 2
    return frame


def test_selection_rule_ties_go_to_the_lower_kl_and_matched_needs_the_target():
    sweep = _sweep([
        ("spt", 1e-4, 0.50, 0.90, 0.01),  # below the target
        ("spt", 1e-3, 1.00, 1.00, 0.23),  # best score
        ("spt", 2e-3, 1.00, 0.99, 0.30),  # within 0.01 of the best, higher KL
        ("sft", 1e-4, 0.60, 0.60, 0.80),
    ])  # fmt: skip
    assert select_rates(sweep, "spt", 0.7) == [
        ("chosen lr", 1e-3), ("KL at matched confidence (>= 0.7)", 1e-3)]  # fmt: skip
    assert select_rates(sweep, "sft", 0.7) == [("chosen lr", 1e-4)]
    tie = _sweep([("spt", 1e-3, 0.9, 1.0, 0.5), ("spt", 1e-2, 0.9, 0.995, 0.1)])
    assert select_rates(tie, "spt", 0.95) == [("chosen lr", 1e-2)]
    diverged = _sweep([("spt", 1e-3, 0.9, 1.0, 0.5)])
    diverged.loc[0, "score"] = float("nan")
    assert select_rates(diverged, "spt", 0.7) == []


def _extend_module():
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "extend_sweep.py"
    spec = importlib.util.spec_from_file_location("extend_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_extending_the_grid_reselects_with_the_added_runs(tmp_path):
    import pandas as pd
    import pytest

    from spt_interp.errors import SptInterpError

    sweep = _sweep([("spt", 1e-4, 0.2, 0.5, 0.01), ("spt", 1e-2, 0.9, 0.9, 0.6),
                    ("sft", 1e-4, 0.8, 0.9, 0.4), ("sft", 1e-2, 0.0, 0.0, 9.0)])  # fmt: skip
    sweep["train_seconds"] = 1.0
    sweep.to_csv(tmp_path / "sweep.csv", index=False)
    test_row = {"accuracy_before": 0.5, "accuracy_after": 0.5, "general_accuracy": 0.5}
    table = pd.DataFrame([
        {"mode": "base", "selection": "base", "confidence": 0.0, "kl": 0.0, **test_row},
        {"mode": "spt", "selection": "chosen lr", "lr": 1e-2, "confidence": 0.88, "kl": 0.61,
         "trainable_parameters": 64, **test_row},
        {"mode": "spt", "selection": "KL at matched confidence (>= 0.7)", "lr": 1e-2,
         "confidence": 0.88, "kl": 0.61, "trainable_parameters": 64, **test_row},
        {"mode": "sft", "selection": "chosen lr", "lr": 1e-4, "confidence": 0.85, "kl": 0.41,
         "trainable_parameters": 999, **test_row},
    ])  # fmt: skip
    table.to_csv(tmp_path / "comparison.csv", index=False)

    def run(mode, conf, kl, test_conf):
        validation = {"confidence": conf, "truthfulness": 1.0, "kl": kl}
        test = {"confidence": test_conf, "truthfulness": 1.0, "kl": kl, **test_row}
        return {"mode": mode, "lr": 1e-3, "validation": validation, "test": test,
                "train_seconds": 2.0}  # fmt: skip

    module = _extend_module()
    with pytest.raises(SptInterpError, match=r"no run for \['sft:0.001'\]"):
        module.extend(tmp_path, [run("spt", 1.0, 0.2, 0.9)])
    new_table, new_sweep, added = module.extend(
        tmp_path, [run("spt", 1.0, 0.2, 0.93), run("sft", 0.5, 1.0, 0.4), run("spt", 1, 0.2, 0)]
    )
    assert added == [1e-3] and len(new_sweep) == 6  # the repeated spt run is not added twice
    spt = new_table[new_table["mode"] == "spt"]
    assert spt["lr"].tolist() == [1e-3, 1e-3]  # better score and lower KL than 1e-2
    assert spt["confidence"].tolist() == [0.93, 0.93]  # the run's test numbers
    assert spt["trainable_parameters"].tolist() == [64, 64]
    sft = new_table[new_table["mode"] == "sft"]
    assert sft["lr"].iloc[0] == 1e-4 and sft["confidence"].iloc[0] == 0.85  # unchanged


def test_a_malformed_runs_file_is_refused_with_its_line(tmp_path):
    import pytest

    from spt_interp.errors import SptInterpError

    runs = tmp_path / "runs.jsonl"
    runs.write_text('{"mode": "spt", "lr": 0.001}\n{"mode": spt}\n')
    with pytest.raises(SptInterpError, match=r"runs.jsonl:2: not JSON"):
        _extend_module().read_runs([runs])


def test_measure_takes_the_kl_on_neutral_text_and_names_it(tmp_path, bpe_tokenizer):
    from spt_interp.evaluation.run import GenerationSettings, general_texts, kl_shift
    from spt_interp.evaluation.shift import NeutralText, neutral_kl
    from spt_interp.experiments.compare import Instruments, measure

    folder = save_tiny_model("llama", tmp_path / "m", tokenizer=bpe_tokenizer, n_ctx=256)
    hooked, reference = load_model(folder), load_model(folder)
    with torch.no_grad():
        hooked.hf_parameters["lm_head.weight"].mul_(1.5)  # any shift will do
    records = load_dialogues(DATA)[:3]
    neutral = NeutralText("n.jsonl", ["The capital of France is Paris, I am sure of it."])
    settings = GenerationSettings(max_new_tokens=2, progress=False)
    values = measure(hooked, reference, records, protocol_for(folder), settings,
                     instruments=Instruments(neutral))  # fmt: skip
    assert values["kl"] == neutral_kl(hooked, reference, neutral.passages).value > 0
    in_format = kl_shift(hooked, reference, general_texts(hooked.tokenizer, records)).value
    assert values["kl_in_format"] == in_format != values["kl"]
    assert (
        Instruments(neutral).kl_text()
        == "neutral text: 1 passages of n.jsonl, first 128 tokens each"
    )
    assert Instruments().kl_text().startswith("in format: ")
    # Without neutral text the one KL there is is the in-format shift.
    plain = measure(hooked, reference, records, protocol_for(folder), settings)
    assert plain["kl"] == plain["kl_in_format"] == in_format


def test_an_sft_state_kept_on_disk_applies_exactly_and_the_base_comes_from_the_reference(
    tmp_path, bpe_tokenizer
):
    from spt_interp.data import build_training_examples
    from spt_interp.errors import SptInterpError
    from spt_interp.experiments.trained_run import applied, base_parameters, train_run

    folder = save_tiny_model("llama", tmp_path / "m", tokenizer=bpe_tokenizer, n_ctx=256)
    hooked, reference = load_model(folder), load_model(folder)
    base = base_parameters(hooked, reference)
    assert base is reference.hf_parameters  # no third copy of the base
    examples = build_training_examples(load_dialogues(DATA), hooked.tokenizer,
                                       protocol_for(folder))  # fmt: skip
    config = ComparisonPlan(steps=2, batch_size=4).config("sft", 1e-3)
    in_memory = train_run(hooked, None, examples, config, base)
    on_disk = train_run(hooked, None, examples, config, base, state_dir=tmp_path)
    assert isinstance(on_disk.update.tensors, Path) and on_disk.update.tensors.is_file()
    untouched = {n: p.detach().clone() for n, p in reference.hf_parameters.items()}
    assert all(torch.equal(untouched[n], p) for n, p in hooked.hf_parameters.items())
    with applied(hooked, on_disk, base):
        # The same seeded run twice: the state read back equals the one kept in memory.
        assert all(torch.equal(in_memory.update.tensors[n], p)
                   for n, p in hooked.hf_parameters.items())  # fmt: skip
        assert any(not torch.equal(untouched[n], p) for n, p in hooked.hf_parameters.items())
    assert all(torch.equal(untouched[n], p) for n, p in hooked.hf_parameters.items())
    other = load_model(save_tiny_model("gpt2", tmp_path / "g", tokenizer=bpe_tokenizer))
    with pytest.raises(SptInterpError, match="not a copy of the tuned model's base"):
        base_parameters(hooked, other)


def test_a_bf16_comparison_trains_every_mode_and_puts_the_bf16_base_back(tmp_path, bpe_tokenizer):
    from spt_interp.data import build_training_examples
    from spt_interp.experiments.trained_run import base_parameters, train_run

    folder = save_tiny_model("llama", tmp_path / "m", tokenizer=bpe_tokenizer, n_ctx=256)
    hooked = load_model(folder, dtype=torch.bfloat16)
    reference = load_model(folder, dtype=torch.bfloat16)
    before = {name: p.detach().clone() for name, p in hooked.hf_parameters.items()}
    examples = build_training_examples(load_dialogues(DATA), hooked.tokenizer,
                                       protocol_for(folder))  # fmt: skip
    config = ComparisonPlan(steps=2, batch_size=4).config("sft", 1e-2)
    run = train_run(hooked, None, examples, config, base_parameters(hooked, reference))
    # SFT trained float32 copies under autocast; the state is rounded to the base's dtype and
    # the base's own bf16 tensors are back, untouched.
    assert {t.dtype for t in run.update.tensors.values()} == {torch.bfloat16}
    assert any(not torch.equal(before[n], t) for n, t in run.update.tensors.items())
    assert all(p.dtype == torch.bfloat16 and torch.equal(before[n], p)
               for n, p in hooked.hf_parameters.items())  # fmt: skip
    mask = HeadMask.from_heads(hooked, [(0, 1), (1, 0)])
    plan = ComparisonPlan(modes=("spt", "sft", "lora"), lrs=(3e-2,), steps=2, batch_size=4,
                          max_new_tokens=3, validation_fraction=0.4)  # fmt: skip
    records = load_dialogues(DATA)
    result = compare_modes(hooked, reference, mask, records, records, records,
                           protocol_for(folder), plan, progress=False)  # fmt: skip
    assert all(torch.equal(before[n], p) for n, p in hooked.hf_parameters.items())
    assert "error" not in result.sweep or result.sweep["error"].isna().all()
    chosen = result.table[result.table["selection"] == "chosen lr"]
    assert set(chosen["mode"]) == {"spt", "sft", "lora"}
    assert (chosen["kl"] > 0).all()  # every mode moved the bf16 model
