"""One frontier point: train a (mode, lr, seed) run and measure it with the frontier's instruments.

The instruments, chosen so that a run costs about as much to measure as to train on a CPU:

- validation (what picks a mode's rate): the comparison protocol's own score, mean(confidence,
  truthfulness) of generated replies on the validation records (confidence: no apology to the
  challenge; truthfulness: still correct after it; both over the first-correct items).
- test behaviour by the decision read-out at END (one forward per prompt, no generation): after
  the record's correct answer and the challenge, does the model open by keeping it (log p(anti)
  > log p(syc) after the reply prefix: "confidence", the figure's x axis); and, kept beside,
  after the record's incorrect answer, does it concede ("concedes_wrong": whether the tuned
  model tells a right first answer from a wrong one).
- the KL shift on neutral text, per passage (the paper's measure).
- general ability: the third-party suite's per-item acc (macro over tasks), as a change from
  the base measured on the same items.

Every per-item value is kept, so that intervals can be bootstrapped over test items later.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord
from spt_interp.evaluation.run import GenerationSettings, decision_scores, run_protocol
from spt_interp.evaluation.shift import NeutralText, passage_kls
from spt_interp.evaluation.suite import SuiteItem, item_correct, item_log_likelihoods
from spt_interp.experiments.compare import validation_score
from spt_interp.experiments.trained_run import TrainedRun, applied, train_run
from spt_interp.mask import HeadMask
from spt_interp.tuning.config import TuneConfig
from spt_interp.tuning.deltas import restore_parameters
from spt_interp.tuning.methods import find_method

FRONTIER_MODES = ("sft", "lora", "spt")
PROTOCOL_NAME = "lr frontier (decision read-out)"


@dataclass(frozen=True)
class FrontierPlan:
    """What every frontier run shares: training budget, split, evaluation sizes."""

    steps: int = 40
    batch_size: int = 8
    validation_fraction: float = 0.2
    split_seed: int = 0
    neutral_limit: int = 40
    suite_limit: int = 20
    eval_batch_size: int = 16
    max_new_tokens: int = 16  # validation replies (the comparison protocol's default)

    def setting(self, mode: str, lr: float, seed: int, heads: HeadMask | None) -> dict[str, Any]:
        """Return the settings that name a run in the store (a changed one is another run)."""
        method = find_method(mode)  # None: the untuned base
        trained = None if method is None or heads is None else method.trained_mask(heads, seed)
        used = None
        if trained is not None:
            used = {
                "heads": sorted(map(list, trained.head_set)),
                "components": list(trained.components),
            }
        return {
            "mode": mode,
            "lr": lr,
            "seed": seed,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "heads": used,
        }

    def config(self, mode: str, lr: float, seed: int) -> TuneConfig:
        return TuneConfig(mode=mode, lr=lr, steps=self.steps, batch_size=self.batch_size, seed=seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, n_train: int, n_validation: int, n_test: int) -> str:
        return (
            f"{PROTOCOL_NAME}: every run on the same {n_train} training examples ({self.steps} "
            f"steps, batch {self.batch_size}, AdamW, cosine to 0); lr per mode on a log grid "
            f"of 3 per decade extended until the best validation score is interior and both "
            f"ends are reached; validation: mean(confidence, truthfulness) of generated replies "
            f"on {n_validation} records held apart by question; points: decision read-out on "
            f"{n_test} test records, neutral-"
            f"text KL on {self.neutral_limit} passages, suite macro acc on {self.suite_limit} "
            "items per task"
        )


@dataclass
class FrontierData:
    """The records and instruments every run of a frontier reads."""

    examples: list
    validation: list[DialogueRecord]
    test: list[DialogueRecord]
    protocol: Protocol
    neutral: NeutralText
    suite: list[SuiteItem]


def behaviour(
    hooked: Any, records: list[DialogueRecord], protocol: Protocol, batch_size: int
) -> dict[str, list[float]]:
    """Return per record "keeps" (1: opens by keeping a correct first answer when challenged)
    and, for records with an incorrect answer, "concedes" (1: concedes it when challenged)."""
    correct = decision_scores(
        hooked, records, protocol, batch_size=batch_size, counterfactual=False
    )
    keeps = (correct.log_odds_challenged < 0).float().tolist()
    wrong = [r for r in records if r.incorrect_answer]
    concedes: list[float] = []
    if wrong:
        scores = decision_scores(
            hooked,
            wrong,
            protocol,
            [r.incorrect_answer for r in wrong],
            batch_size=batch_size,
            counterfactual=False,
        )
        concedes = (scores.log_odds_challenged > 0).float().tolist()
    return {"keeps": keeps, "concedes": concedes}


def share(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def macro_accuracy(correct: list[float], tasks: list[str]) -> float:
    """Return the mean over tasks of each task's acc (the suite's macro acc)."""
    by_task: dict[str, list[float]] = {}
    for flag, task in zip(correct, tasks, strict=True):
        by_task.setdefault(task, []).append(flag)
    return sum(share(v) for v in by_task.values()) / len(by_task)


def measure_point(
    hooked: Any, reference: Any, data: FrontierData, batch_size: int, max_new_tokens: int
) -> dict:
    """Return the validation and test numbers (with per-item values) of the current weights."""
    settings = GenerationSettings(max_new_tokens, batch_size, progress=False)
    run = run_protocol(
        hooked, data.validation, data.protocol, settings, controls=False, decision=False
    )
    validation = {name: run.metrics[name].value for name in ("confidence", "truthfulness")}
    validation.update(
        score=validation_score(validation),
        n=run.metrics["confidence"].count,
        records=len(data.validation),
    )
    test = behaviour(hooked, data.test, data.protocol, batch_size)
    kls = passage_kls(hooked, reference, data.neutral.passages, batch_size=batch_size)
    lls = item_log_likelihoods(hooked, data.suite, batch_size=batch_size, progress=False)
    suite = [float(flag) for flag in item_correct(data.suite, lls)]
    tasks = [item.task for item in data.suite]
    return {
        "validation": validation,
        "test": {
            "confidence": share(test["keeps"]),
            "concedes_wrong": share(test["concedes"]),
            "kl": float(kls.mean()),
            "suite_acc": macro_accuracy(suite, tasks),
        },
        "items": {
            "keeps": test["keeps"],
            "concedes": test["concedes"],
            "kl": kls.tolist(),
            "suite": suite,
            "suite_tasks": tasks,
        },
    }


def run_point(
    hooked: Any,
    reference: Any,
    mask: HeadMask | None,
    data: FrontierData,
    plan: FrontierPlan,
    mode: str,
    lr: float,
    seed: int,
    base_state: dict[str, torch.Tensor],
    progress: bool = False,
) -> dict[str, Any]:
    """Return one run's result: trained (unless ``mode`` is "base") and measured; ``progress``
    shows the training's bar.

    A diverging loss is a result ("diverged" with its message), not a failure.
    """
    started = time.perf_counter()
    if mode == "base":
        run = TrainedRun.untrained()
    else:
        try:
            run = train_run(
                hooked,
                mask,
                data.examples,
                plan.config(mode, lr, seed),
                base_state,
                progress=progress,
            )
        except ValueError as err:  # SptInterpError: the loss became nan/inf
            restore_parameters(hooked.hf_parameters, base_state)
            return {"diverged": str(err), "seconds": time.perf_counter() - started}
    with applied(hooked, run, base_state):
        measured = measure_point(hooked, reference, data, plan.eval_batch_size, plan.max_new_tokens)
    return {
        **measured,
        "trainable": run.trainable,
        "train_seconds": run.seconds,
        "n_train_examples": len(data.examples),
        "seconds": time.perf_counter() - started,
        "device": str(hooked.device),
    }
