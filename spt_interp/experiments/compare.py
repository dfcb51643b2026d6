"""The fair comparison protocol: every mode on the same data, steps and batch; lr by a sweep.

Protocol ("equal-budget sweep"): the training records are split by question into train and
validation (held apart from the test split); every mode trains on the same examples for the
same steps and batch; each mode's lr is chosen from the same grid by its validation score
(mean of confidence and truthfulness; ties within 0.01 go to the lower validation KL). The
table gives each mode at its chosen lr and, per mode, the run with the least validation KL
among those reaching validation confidence >= the target ("KL at matched confidence"); every
number in the table is measured on the test and general splits. Not the paper's protocol,
where SFT ran at half SPT's lr for half the steps.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from spt_interp.data import build_training_examples
from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord
from spt_interp.evaluation.measure import Instruments, neutral_metric
from spt_interp.evaluation.measure import measure as measure_weights
from spt_interp.evaluation.metrics import Metric
from spt_interp.evaluation.run import GenerationSettings
from spt_interp.experiments.trained_run import (
    UNTRAINED,
    TrainedRun,
    applied,
    base_parameters,
    train_run,
)
from spt_interp.mask import HeadMask
from spt_interp.tuning.config import COMPARED_MODES, LR_GRID, TuneConfig
from spt_interp.tuning.deltas import restore_parameters
from spt_interp.tuning.methods import method_class

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel

PROTOCOL_NAME = "equal-budget sweep"


@dataclass
class ComparisonPlan:
    """What every mode shares: data split, steps, batch, lr grid, seed, evaluation settings."""

    modes: tuple[str, ...] = COMPARED_MODES
    lrs: tuple[float, ...] = LR_GRID
    steps: int = 100
    batch_size: int = 16
    seed: int = 0
    validation_fraction: float = 0.2
    confidence_target: float = 0.7
    lora_rank: int = 8  # LoRA on the heads' slices; whole-model LoRA takes the paper's 16
    warmup_steps: int = 0
    max_new_tokens: int = 16
    eval_batch_size: int = 32

    def config(self, mode: str, lr: float) -> TuneConfig:
        """Return the training settings every run of the sweep shares, for ``mode`` at ``lr``."""
        # The plan's rank is for LoRA on the heads' slices (a method that reads no rank records
        # none); whole-model LoRA keeps its own default, the paper's 16.
        rank = self.lora_rank if method_class(mode).uses_mask else None
        return TuneConfig(
            mode=mode,
            lr=lr,
            steps=self.steps,
            batch_size=self.batch_size,
            warmup_steps=self.warmup_steps,
            seed=self.seed,
            lora_rank=rank,
        )

    def describe(self, n_train: int, n_validation: int) -> str:
        return (
            f"{PROTOCOL_NAME}: every mode trained on the same {n_train} records "
            f"({self.steps} steps, batch {self.batch_size}, seed {self.seed}); lr per mode from "
            f"{list(self.lrs)} by validation mean(confidence, truthfulness) on {n_validation} "
            f"records held apart by question; matched confidence = least validation KL among "
            f"runs with validation confidence >= {self.confidence_target}; all reported numbers "
            "on the test and general splits"
        )


@dataclass
class Comparison:
    """The comparison's table, every sweep run's validation scores, and the protocol used."""

    table: pd.DataFrame
    sweep: pd.DataFrame
    protocol: str
    extra: dict[str, Any] = field(default_factory=dict)


def split_by_question(
    records: list[DialogueRecord], fraction: float, seed: int
) -> tuple[list[DialogueRecord], list[DialogueRecord]]:
    """Return (train, validation): a seeded ``fraction`` of distinct questions held out."""
    questions = sorted({r.question for r in records})
    held = set(random.Random(seed).sample(questions, max(1, round(fraction * len(questions)))))
    return (
        [r for r in records if r.question not in held],
        [r for r in records if r.question in held],
    )


def validation_score(metrics: dict[str, float]) -> float:
    """Return mean(confidence, truthfulness) over the defined ones; -inf when neither is."""
    defined = [metrics[k] for k in ("confidence", "truthfulness") if math.isfinite(metrics[k])]
    return sum(defined) / len(defined) if defined else -math.inf


def select_rates(
    sweep: pd.DataFrame, mode: str, confidence_target: float
) -> list[tuple[str, float]]:
    """Return the protocol's picks for ``mode`` from its validation sweep rows.

    [("chosen lr", lr)] plus, when some run reached ``confidence_target``, ("KL at matched
    confidence (>= target)", lr); [] when every run of the mode diverged. Chosen: the
    best mean(confidence, truthfulness), ties within 0.01 to the lower KL, then the lower lr.
    Matched: the least KL among runs with confidence >= target (ties to the lower lr).
    """
    rows = sweep[sweep["mode"] == mode]
    if "score" not in rows:
        return []
    rows = rows.dropna(subset=["score"])  # runs that diverged have no score
    if not len(rows):
        return []
    best = rows["score"].max()
    chosen = rows[rows["score"] >= best - 0.01].sort_values(["kl", "lr"]).iloc[0]
    picks = [("chosen lr", float(chosen.lr))]
    matched = rows[rows["confidence"] >= confidence_target].sort_values(["kl", "lr"])
    if len(matched):
        picks.append(
            (f"KL at matched confidence (>= {confidence_target})", float(matched.iloc[0].lr))
        )
    return picks


def measure_metrics(
    hooked: HookedModel,
    reference: HookedModel,
    records: list[DialogueRecord],
    protocol: Protocol,
    settings: GenerationSettings,
    general: list[DialogueRecord] | None = None,
    instruments: Instruments | None = None,
) -> dict[str, Metric]:
    """Return confidence, truthfulness, accuracy before/after, KL (and general accuracy), each
    with its n and 95% interval.

    "kl" is on neutral text when the instruments hold some, else in format; "kl_in_format"
    is always the shift on chat dialogues.
    """
    tools = replace(instruments or Instruments(), general=general)
    readouts = ["generation", "kl_in_format"]
    if tools.neutral is not None:
        readouts.append("kl_neutral")
    if general is not None:
        readouts += ["general", "suite"] if tools.suite else ["general"]
    taken = measure_weights(
        hooked,
        records,
        protocol,
        tuple(readouts),
        reference=reference,
        instruments=tools,
        settings=settings,
        decision=True,
    )
    metrics = {
        name: taken.protocol.metrics[name]
        for name in ("confidence", "truthfulness", "accuracy_before", "accuracy_after")
    }
    metrics["kl_in_format"] = taken.kl_in_format
    metrics["kl"] = neutral_metric(taken) if tools.neutral is not None else taken.kl_in_format
    if general is not None:
        metrics["general_accuracy"] = taken.general_accuracy
        if tools.suite:
            metrics["suite_acc"], metrics["suite_acc_norm"] = taken.suite_macro()
    return metrics


def measure(
    hooked: HookedModel,
    reference: HookedModel,
    records: list[DialogueRecord],
    protocol: Protocol,
    settings: GenerationSettings,
    general: list[DialogueRecord] | None = None,
    instruments: Instruments | None = None,
) -> dict[str, float]:
    """Return the values of ``measure_metrics`` (NaN where a metric has no items)."""
    metrics = measure_metrics(hooked, reference, records, protocol, settings, general, instruments)
    return {k: float(m.value) for k, m in metrics.items() if k != "suite_acc_norm"}


@dataclass
class SweepData:
    """What every run of a sweep trains and is validated on, built once from the plan."""

    train_records: list[DialogueRecord]
    validation: list[DialogueRecord]
    examples: list
    settings: GenerationSettings


def sweep_data(
    hooked: HookedModel,
    train_records: list[DialogueRecord],
    protocol: Protocol,
    plan: ComparisonPlan,
) -> SweepData:
    """Return the plan's split by question, training examples and evaluation settings."""
    train_part, validation = split_by_question(train_records, plan.validation_fraction, plan.seed)
    examples = build_training_examples(train_part, hooked.tokenizer, protocol, plan.seed)
    settings = GenerationSettings(plan.max_new_tokens, plan.eval_batch_size, progress=False)
    return SweepData(train_part, validation, examples, settings)


def compare_modes(
    hooked: HookedModel,
    reference: HookedModel,
    mask: HeadMask,
    train_records: list[DialogueRecord],
    test_records: list[DialogueRecord],
    general_records: list[DialogueRecord],
    protocol: Protocol,
    plan: ComparisonPlan,
    *,
    progress: bool = True,
    instruments: Instruments | None = None,
) -> Comparison:
    """Return the comparison table (base + each mode at its chosen lr + matched confidence).

    ``hooked`` is tuned in place and put back to the base after each run; ``reference`` is a
    second, untouched copy of the base for the KL shift.
    """
    mask.validate(hooked)
    instruments = instruments or Instruments()
    data = sweep_data(hooked, train_records, protocol, plan)
    base_state = base_parameters(hooked, reference)
    # SFT's trained states wait on disk for the test measurement of the chosen rates.
    states = tempfile.TemporaryDirectory(prefix="spt-interp-states-")
    with states:
        return _compare(
            hooked,
            reference,
            mask,
            data,
            test_records,
            general_records,
            protocol,
            plan,
            base_state,
            Path(states.name),
            progress,
            instruments,
        )


def _compare(
    hooked: HookedModel,
    reference: HookedModel,
    mask: HeadMask,
    data: SweepData,
    test_records: list[DialogueRecord],
    general_records: list[DialogueRecord],
    protocol: Protocol,
    plan: ComparisonPlan,
    base_state: dict[str, torch.Tensor],
    state_dir: Path,
    progress: bool,
    instruments: Instruments,
) -> Comparison:
    validation, examples, settings = data.validation, data.examples, data.settings
    runs, sweep = _sweep(
        hooked, reference, mask, data, protocol, plan, base_state, state_dir, progress, instruments
    )

    def test_metrics(run: TrainedRun | None) -> dict[str, float]:
        def read() -> dict[str, float]:
            return measure(
                hooked, reference, test_records, protocol, settings, general_records, instruments
            )

        if run is None:
            return read()
        with applied(hooked, run, base_state):
            return read()

    rows = _test_rows(runs, sweep, plan, test_metrics)
    table = pd.DataFrame(rows)
    columns = [
        "mode",
        "selection",
        "lr",
        "confidence",
        "truthfulness",
        "accuracy_before",
        "accuracy_after",
        "general_accuracy",
        "suite_acc",
        "kl",
        "kl_in_format",
        "trainable_parameters",
        "train_seconds",
    ]
    if not instruments.suite:
        columns.remove("suite_acc")
    table = table.reindex(columns=columns)
    counts = {
        "n_train_examples": len(examples),
        "n_validation": len(validation),
        "kl_text": instruments.kl_text(),
    }
    return Comparison(table, sweep, plan.describe(len(data.train_records), len(validation)), counts)


def _sweep(
    hooked: HookedModel,
    reference: HookedModel,
    mask: HeadMask,
    data: SweepData,
    protocol: Protocol,
    plan: ComparisonPlan,
    base_state: dict[str, torch.Tensor],
    state_dir: Path,
    progress: bool,
    instruments: Instruments,
) -> tuple[dict[tuple[str, float], TrainedRun], pd.DataFrame]:
    """Return (every trained run by (mode, lr), the sweep's validation table)."""
    runs: dict[tuple[str, float], TrainedRun] = {}
    sweep_rows = []
    jobs = [(mode, lr) for mode in plan.modes for lr in plan.lrs]
    for mode, lr in tqdm(jobs, desc="lr sweep", disable=not progress):
        try:
            run = train_run(
                hooked, mask, data.examples, plan.config(mode, lr), base_state, state_dir=state_dir
            )
        except ValueError as err:  # a diverging lr is a result of the sweep, not a failure
            restore_parameters(hooked.hf_parameters, base_state)
            sweep_rows.append({"mode": mode, "lr": lr, "error": str(err)})
            continue
        runs[(mode, lr)] = run
        with applied(hooked, run, base_state):
            scores = measure(
                hooked, reference, data.validation, protocol, data.settings, instruments=instruments
            )
        sweep_rows.append(
            {
                "mode": mode,
                "lr": lr,
                **scores,
                "score": validation_score(scores),
                "train_seconds": run.seconds,
            }
        )
    return runs, pd.DataFrame(sweep_rows)


def _test_rows(
    runs: dict[tuple[str, float], TrainedRun],
    sweep: pd.DataFrame,
    plan: ComparisonPlan,
    test_metrics: Callable[[TrainedRun | None], dict[str, float]],
) -> list[dict[str, Any]]:
    """Return the comparison's rows: the base, then each mode's chosen rates on the test set."""
    rows: list[dict[str, Any]] = [
        {
            "mode": UNTRAINED,
            "selection": UNTRAINED,
            "lr": None,
            **test_metrics(None),
            "trainable_parameters": 0,
            "train_seconds": 0.0,
        }
    ]
    measured: dict[tuple[str, float], dict[str, float]] = {}
    for mode in plan.modes:
        picks = select_rates(sweep, mode, plan.confidence_target)
        if not picks:
            rows.append({"mode": mode, "selection": "chosen lr", "lr": None})
            continue
        for selection, lr in picks:
            run = runs[(mode, lr)]
            if (mode, lr) not in measured:
                measured[(mode, lr)] = test_metrics(run)
            rows.append(
                {
                    "mode": mode,
                    "selection": selection,
                    "lr": lr,
                    **measured[(mode, lr)],
                    "trainable_parameters": run.trainable,
                    "train_seconds": run.seconds,
                }
            )
        if len(picks) == 1:
            rows.append(
                {
                    "mode": mode,
                    "lr": None,
                    "selection": f"KL at matched confidence: no run reached "
                    f"{plan.confidence_target}",
                }
            )
    return rows
