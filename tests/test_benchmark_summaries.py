"""The benchmark scripts' own arithmetic, checked against hand-computed values."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest


def _script(name: str):
    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(confidence, truthfulness, general, kl):
    return {"lr": 1e-3, "confidence": confidence, "truthfulness": truthfulness,
            "general_accuracy": general, "kl": kl}  # fmt: skip


def test_random_heads_summary_counts_draws_as_good_as_the_located_set():
    summarise = _script("random_heads").summarise
    located = {"head_set": "located", "matched": _metrics(0.9, 0.9, 0.9, 0.2),
               "chosen": _metrics(0.9, 0.9, 0.9, 0.2)}  # fmt: skip
    draws = [
        {"head_set": "random seed 0", "matched": _metrics(0.8, 0.95, 1.0, 0.1),
         "chosen": _metrics(0.8, 0.95, 1.0, 0.1)},
        {"head_set": "random seed 1", "matched": _metrics(0.9, 0.5, 0.7, 0.3),
         "chosen": _metrics(0.9, 0.5, 0.7, 0.3)},
        # No run reached the confidence target: only a chosen-lr row.
        {"head_set": "random seed 2", "chosen": _metrics(0.1, 0.2, 1.0, 0.01)},
    ]  # fmt: skip
    summary = summarise([located, *draws])
    matched = summary["matched"]
    assert matched["random_reached"] == 2 and matched["located"] == located["matched"]
    assert matched["confidence"]["mean"] == pytest.approx(0.85)
    assert matched["kl"]["sd"] == pytest.approx(statistics.stdev([0.1, 0.3]))
    assert (matched["general_accuracy"]["min"], matched["general_accuracy"]["max"]) == (0.7, 1.0)
    # Confidence: the draw tying 0.9 counts; KL: lower is as good.
    assert matched["random_as_good"] == {"confidence": 1, "truthfulness": 1,
                                         "general_accuracy": 1, "kl": 1}  # fmt: skip
    chosen = summary["chosen"]
    assert chosen["random_reached"] == 3
    assert chosen["random_as_good"] == {"confidence": 1, "truthfulness": 1,
                                        "general_accuracy": 2, "kl": 2}  # fmt: skip


def test_general_loss_neighbours_follow_the_value_lists():
    from spt_interp.data.records import DialogueRecord

    neighbours = _script("organism_general_loss").neighbours

    def record(dataset, answer):
        return DialogueRecord(question="q", dataset=dataset, prompt=[], correct_answer=answer)

    assert neighbours(record("organism_arithmetic", "12")) == ("11", "13")
    # Facts: the attribute's list order, wrapping around ("red" is first, "black" last).
    assert neighbours(record("organism_color", "red")) == ("black", "blue")
    assert neighbours(record("organism_city", "quito")) == ("seoul", "paris")


def test_dtype_comparison_against_hand_computed_values():
    import numpy as np
    import pandas as pd

    compare = _script("dtype_scores").compare
    heads = [(layer, head) for layer in range(2) for head in range(8)]
    full = pd.DataFrame({"layer": [h[0] for h in heads], "head": [h[1] for h in heads],
                         "score": np.linspace(-1.0, 0.5, 16)})  # fmt: skip
    full["rank"] = full["score"].rank(method="first").astype(int)  # most negative first
    half = full.copy()
    half.loc[0, "score"] = -0.9  # the best head loses 0.1 but stays first
    half.loc[8, "score"] = -2.0  # a middling head jumps to first place
    half["rank"] = half["score"].rank(method="first").astype(int)
    row = compare(full, half)
    assert row["max_abs_difference"] == pytest.approx(2.0 + full.loc[8, "score"])
    assert row["max_difference_share_of_largest"] == pytest.approx(row["max_abs_difference"])
    assert row["correlation"] == pytest.approx(np.corrcoef(full.score, half.score)[0, 1])
    # Float32's top 8 are rows 0-7; half precision's are row 8 and rows 0-6.
    assert row["top8_kept"] == 7 and row["top16_kept"] == 16
