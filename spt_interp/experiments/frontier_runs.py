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

Head steering (``steer``, and ``steer-random`` on the random head sets) is measured the same
way with nothing trained: the located heads' outputs get alpha times their mean X_c - X_r END
difference over the training records' pairs (``spt_interp.tuning.steering``); its frontier axis
is alpha where the methods' is the learning rate. A steering seed > 0 takes the vectors from a
bootstrap resample of the pairs, the analogue of a training seed; ``steer-random``'s seed draws
the head set, as ``random``'s does (the same sets).

Every per-item value is kept, so that intervals can be bootstrapped over test items later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from spt_interp.data import PromptPair
from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.measure import Instruments, macro_accuracy, measure, share
from spt_interp.evaluation.run import GenerationSettings
from spt_interp.evaluation.shift import NeutralText
from spt_interp.evaluation.suite import SuiteItem
from spt_interp.experiments.compare import validation_score
from spt_interp.experiments.trained_run import UNTRAINED, TrainedRun, applied, train_run
from spt_interp.mask import HeadMask, random_mask
from spt_interp.tuning.config import TuneConfig
from spt_interp.tuning.deltas import restore_parameters
from spt_interp.tuning.methods import find_method, method_class
from spt_interp.tuning.steering import HeadSteering

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel

FRONTIER_MODES = ("sft", "lora", "spt", "steer")
PROTOCOL_NAME = "lr frontier (decision read-out)"
# steering mode -> whether its seed draws the head set (as the random-heads method's does)
STEERING_MODES = {"steer": False, "steer-random": True}


def is_steering(mode: str) -> bool:
    return mode in STEERING_MODES


def axis(mode: str) -> str:
    """Return the name of ``mode``'s frontier axis: "alpha" for steering, else "lr"."""
    return "alpha" if is_steering(mode) else "lr"


def knob(setting: dict[str, Any]) -> float:
    """Return a stored run's position on its frontier axis: alpha for steering, else the lr."""
    return setting["alpha"] if is_steering(setting["mode"]) else setting["lr"]


def draws_heads(mode: str) -> bool:
    """Whether each seed of ``mode`` is another head set (a curve per seed)."""
    if is_steering(mode):
        return STEERING_MODES[mode]
    method = find_method(mode)
    return method is not None and method.draws_heads


def controls(mode: str) -> tuple[str, ...]:
    """Return the modes a frontier runs beside ``mode`` at its bracketing settings."""
    if mode == "steer":
        return ("steer-random",)
    return () if is_steering(mode) else method_class(mode).controls


def heads_of(mode: str, mask: HeadMask | None, seed: int) -> HeadMask | None:
    """Return the head mask ``mode`` trains or steers at ``seed`` (None: no mask)."""
    if is_steering(mode):
        return random_mask(mask, seed) if STEERING_MODES[mode] and mask is not None else mask
    method = find_method(mode)  # None: the untuned base
    return None if method is None or mask is None else method.trained_mask(mask, seed)


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

    def setting(self, mode: str, value: float, seed: int, heads: HeadMask | None) -> dict:
        """Return the settings that name a run in the store (a changed one is another run);
        ``value`` is the lr, or a steering's alpha."""
        trained = heads_of(mode, heads, seed)
        used = None
        if trained is not None:
            used = {"heads": sorted(map(list, trained.head_set))}
            if not is_steering(mode):
                used["components"] = list(trained.components)
        if is_steering(mode):
            return {"mode": mode, "alpha": value, "seed": seed, "heads": used}
        lr = value
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
    # the pairs steering vectors are taken from (the training records'), and the vectors taken
    # so far: (mode, seed) -> steering at alpha 1
    pairs: list[PromptPair] = field(default_factory=list)
    steerings: dict[tuple[str, int], HeadSteering] = field(default_factory=dict)


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


class Diverged(Exception):
    """A run's training loss became nan/inf: a result of the run, not a failure."""


@contextmanager
def prepared(
    hooked: HookedModel,
    mask: HeadMask | None,
    data: FrontierData,
    plan: FrontierPlan,
    mode: str,
    value: float,
    seed: int,
    base_state: dict[str, torch.Tensor],
    progress: bool = False,
) -> Iterator[dict[str, Any]]:
    """Run the with-block on one frontier run: the base, a method trained at lr ``value``, or a
    steering at alpha ``value``. Yields {"trainable", "train_seconds", "n_train_examples"}
    (a steering's "training" is taking its vectors); the weights are the base's again after.

    Raises ``Diverged`` when the training loss diverges."""
    if is_steering(mode):
        if mask is None:
            raise SptInterpError(f"--modes {mode} needs the located heads (--scores)")
        started = time.perf_counter()
        steering = steering_of(hooked, mask, data, mode, seed).with_alpha(value)
        info = {"trainable": 0, "train_seconds": time.perf_counter() - started}
        with steering.applied(hooked):
            yield {**info, "n_train_examples": len(data.pairs)}
        return
    if mode == UNTRAINED:
        run = TrainedRun.untrained()
    else:
        config = plan.config(mode, value, seed)
        try:
            run = train_run(hooked, mask, data.examples, config, base_state, progress=progress)
        except ValueError as err:  # SptInterpError: the loss became nan/inf
            restore_parameters(hooked.hf_parameters, base_state)
            raise Diverged(str(err)) from None
    with applied(hooked, run, base_state):
        yield {
            "trainable": run.trainable,
            "train_seconds": run.seconds,
            "n_train_examples": len(data.examples),
        }


def run_point(
    hooked: HookedModel,
    reference: HookedModel,
    mask: HeadMask | None,
    data: FrontierData,
    plan: FrontierPlan,
    mode: str,
    value: float,
    seed: int,
    base_state: dict[str, torch.Tensor],
    progress: bool = False,
) -> dict[str, Any]:
    """Return one run's result: trained at lr ``value`` (unless ``mode`` is "base"; a steering
    mode steers at alpha ``value``) and measured; ``progress`` shows the training's bar.

    A diverging loss is a result ("diverged" with its message), not a failure.
    """
    started = time.perf_counter()
    try:
        with prepared(hooked, mask, data, plan, mode, value, seed, base_state, progress) as run:
            measured = measure_point(
                hooked, reference, data, plan.eval_batch_size, plan.max_new_tokens
            )
    except Diverged as err:
        return {"diverged": str(err), "seconds": time.perf_counter() - started}
    return {
        **measured,
        **run,
        "seconds": time.perf_counter() - started,
        "device": str(hooked.device),
    }


def wide_suite_point(
    hooked: HookedModel,
    mask: HeadMask | None,
    data: FrontierData,
    plan: FrontierPlan,
    setting: dict[str, Any],
    suite: list[SuiteItem],
    base_state: dict[str, torch.Tensor],
    progress: bool = False,
) -> dict[str, Any]:
    """Return a stored run's per-item suite correctness on a wider ``suite``, the run made
    again from its setting (trained with the same seed, or steered), with its test decisions
    ("keeps", which show whether it was made again exactly)."""
    started = time.perf_counter()
    mode, seed = setting["mode"], setting["seed"]
    with prepared(hooked, mask, data, plan, mode, knob(setting), seed, base_state, progress):
        measured = measure(
            hooked,
            data.test,
            data.protocol,
            ("decision", "suite"),
            instruments=Instruments(suite=suite),
            settings=GenerationSettings(batch_size=plan.eval_batch_size, progress=progress),
        )
    return {
        "keeps": measured.keeps,
        "suite": measured.suite_correct(),
        "suite_tasks": [item.task for item in suite],
        "seconds": time.perf_counter() - started,
        "device": str(hooked.device),
    }


def steering_of(
    hooked: HookedModel, mask: HeadMask, data: FrontierData, mode: str, seed: int
) -> HeadSteering:
    """Return ``mode``'s steering at ``seed`` (alpha 1), taking its vectors the first time."""
    key = (mode, seed)
    if key not in data.steerings:
        if not data.pairs:
            raise SptInterpError(f"--modes {mode}: the frontier has no pairs to steer by")
        heads = heads_of(mode, mask, seed)
        pairs = data.pairs
        resampled = seed > 0 and not STEERING_MODES[mode]
        if resampled:  # the analogue of a training seed: another draw of the same pairs
            picks = np.random.default_rng(seed).integers(0, len(pairs), len(pairs))
            pairs = [pairs[i] for i in picks]
        source = {"pairs_drawn": f"bootstrap resample (seed {seed})" if resampled else "all"}
        data.steerings[key] = HeadSteering.from_pairs(
            hooked, pairs, sorted(heads.head_set), 1.0, source=source
        )
    return data.steerings[key]
