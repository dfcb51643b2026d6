"""One measurement function: each read-out equals the function it stands for, called alone, and
a read-out without what it needs is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spt_interp.data import load_dialogues
from spt_interp.data.protocol import Protocol
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.measure import Instruments, macro_accuracy, measure, neutral_metric
from spt_interp.evaluation.run import GenerationSettings, decision_scores, run_protocol
from spt_interp.evaluation.shift import NeutralText, neutral_kl
from spt_interp.evaluation.suite import SuiteItem, run_suite
from spt_interp.model import load_model
from spt_interp.model.tiny import save_tiny_model

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
SUITE = [
    SuiteItem("t", "0", (("The sky is", " blue"), ("The sky is", " a green cheese")), 0, 1),
    SuiteItem("t", "1", (("Two and two", " make four"), ("Two and two", " fish")), 0, 2),
    SuiteItem("u", "2", (("Water is", " dry"), ("Water is", " wet")), 1, 3),
]


@pytest.fixture(scope="module")
def shifted(tmp_path_factory, bpe_tokenizer):
    folder = save_tiny_model("llama", tmp_path_factory.mktemp("m"), tokenizer=bpe_tokenizer,
                             n_ctx=256)  # fmt: skip
    model, reference = load_model(folder, hooks=False), load_model(folder, hooks=False)
    with torch.no_grad():
        model.hf_parameters["lm_head.weight"].mul_(1.5)  # any shift will do
    # Targets whose first tokens differ under the tiny tokenizer (the decision read-out needs it).
    protocol = Protocol(
        reply_prefix="I'm", sycophantic_targets=["sorry"], anti_sycophantic_targets=["sure"]
    )
    return model, reference, protocol


def test_each_readout_equals_its_function_called_alone(shifted):
    model, reference, protocol = shifted
    records = load_dialogues(DATA)[:4]
    neutral = NeutralText("n.jsonl", ["The capital of France is Paris.", "It rained all day."])
    settings = GenerationSettings(max_new_tokens=2, batch_size=3, progress=False)
    taken = measure(
        model, records, protocol, ("generation", "decision", "kl_neutral", "suite"),
        reference=reference, instruments=Instruments(neutral=neutral, suite=SUITE),
        settings=settings,
    )  # fmt: skip
    alone = run_protocol(model, records, protocol, settings, controls=False, decision=False)
    assert {k: m.as_dict() for k, m in taken.protocol.metrics.items()} == {
        k: m.as_dict() for k, m in alone.metrics.items()
    }
    scores = decision_scores(model, records, protocol, batch_size=3, counterfactual=False)
    assert taken.keeps == (scores.log_odds_challenged < 0).float().tolist()
    assert len(taken.concedes) == sum(bool(r.incorrect_answer) for r in records)
    expected_kl = neutral_kl(model, reference, neutral.passages)
    assert neutral_metric(taken) == expected_kl and expected_kl.value > 0
    suite = run_suite(model, SUITE, progress=False)
    acc, acc_norm = taken.suite_macro()
    assert acc.as_dict() == suite["macro_acc"] and acc_norm.as_dict() == suite["macro_acc_norm"]
    correct = taken.suite_correct()
    assert macro_accuracy(correct, [i.task for i in SUITE]) == pytest.approx(acc.value, abs=0)


def test_macro_accuracy_is_the_mean_of_task_accuracies():
    # task a: 1 of 2; task b: 1 of 1 -> (0.5 + 1) / 2, not 2 of 3
    assert macro_accuracy([1.0, 0.0, 1.0], ["a", "a", "b"]) == 0.75


@pytest.mark.parametrize(
    ("readouts", "reference", "instruments", "message"),
    [
        (("generation", "vibes"), False, Instruments(), "unknown read-outs \\['vibes'\\]"),
        (("suite",), False, Instruments(), "read-outs \\['suite'\\] need instruments"),
        (("kl_in_format",), False, Instruments(), "the KL read-outs need a reference model"),
    ],
)
def test_a_readout_without_what_it_needs_is_refused(
    shifted, monkeypatch, readouts, reference, instruments, message
):
    import spt_interp.evaluation.measure as measuring

    model, base, protocol = shifted
    monkeypatch.setattr(measuring, "run_protocol", lambda *a, **k: pytest.fail("work ran"))
    with pytest.raises(SptInterpError, match=message):
        measure(model, load_dialogues(DATA)[:1], protocol, readouts,
                reference=base if reference else None, instruments=instruments)  # fmt: skip
