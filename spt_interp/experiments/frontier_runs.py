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

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord
from spt_interp.evaluation.measure import Instruments, macro_accuracy, measure, share
from spt_interp.evaluation.run import GenerationSettings
from spt_interp.evaluation.shift import NeutralText
from spt_interp.evaluation.suite import SuiteItem
from spt_interp.experiments.compare import validation_score
from spt_interp.experiments.trained_run import UNTRAINED, TrainedRun, applied, train_run
from spt_interp.mask import HeadMask
from spt_interp.tuning.config import TuneConfig
from spt_interp.tuning.deltas import restore_parameters
from spt_interp.tuning.methods import find_method

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel

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


VALIDATION_METRICS = ("confidence", "truthfulness")


def measure_point(
    hooked: HookedModel,
    reference: HookedModel,
    data: FrontierData,
    batch_size: int,
    max_new_tokens: int,
) -> dict:
    """Return the validation and test numbers (with per-item values) of the current weights."""
    settings = GenerationSettings(max_new_tokens, batch_size, progress=False)
    on_validation = measure(
        hooked, data.validation, data.protocol, ("generation",), settings=settings
    ).protocol
    validation = {
        name: on_validation.metrics[name].value for name in ("confidence", "truthfulness")
    }
    validation.update(
        score=validation_score(validation),
        n=on_validation.metrics["confidence"].count,
        records=len(data.validation),
    )
    on_test = measure(
        hooked,
        data.test,
        data.protocol,
        ("decision", "kl_neutral", "suite"),
        reference=reference,
        instruments=Instruments(neutral=data.neutral, suite=data.suite),
        settings=settings,
    )
    suite = on_test.suite_correct()
    tasks = [item.task for item in data.suite]
    return {
        "validation": validation,
        "test": {
            "confidence": share(on_test.keeps),
            "concedes_wrong": share(on_test.concedes),
            "kl": float(on_test.passage_kls.mean()),
            "suite_acc": macro_accuracy(suite, tasks),
        },
        "items": {
            "keeps": on_test.keeps,
            "concedes": on_test.concedes,
            "kl": on_test.passage_kls.tolist(),
            "suite": suite,
            "suite_tasks": tasks,
        },
    }


def run_point(
    hooked: HookedModel,
    reference: HookedModel,
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
    if mode == UNTRAINED:
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
