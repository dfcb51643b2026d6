"""The whole loop from the shell on a behaviour of one's own: a pair file and a TRL training
file through locate -> knockout -> export-mask -> tune -> evaluate, on a tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from spt_interp.cli import app

# The tiny BPE spells " the", " I" and " sure" as one token each.
PAIRS = [
    {"prompt": f"When {a} and the cat went out, the dog gave it to",
     "counterfactual": f"When {a} and one cat went out, a dog gave it to",
     "behaviour": " the", "alternative": " I"}
    for a in ("Mary", "John", "Anna", "Paul", "Rose", "Mark")
]  # fmt: skip
TRAINING = [{"prompt": row["prompt"], "completion": " I"} for row in PAIRS]


def spt_interp(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output)
    return result.output


def test_locate_knockout_mask_tune_evaluate_on_a_pair_file_and_trl_rows(tiny_model_dirs, tmp_path):
    model = tiny_model_dirs["llama"]
    pairs, training = tmp_path / "pairs.jsonl", tmp_path / "train.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    training.write_text("".join(json.dumps(r) + "\n" for r in TRAINING))

    spt_interp("locate", "--model", model, "--pairs", pairs, "--out", tmp_path / "locate",
               "--no-png")  # fmt: skip
    scores = pd.read_csv(tmp_path / "locate" / "scores.csv")
    assert len(scores) == 2 * 4 and scores["score"].notna().all()

    printed = spt_interp("knockout", "--model", model, "--pairs", pairs, "--scores",
                         tmp_path / "locate" / "scores.csv", "--out", tmp_path / "knockout",
                         "--k", "1,2", "--random-seeds", "2", "--no-png")  # fmt: skip
    curve = pd.read_csv(tmp_path / "knockout" / "knockout.csv")
    assert set(curve.selection) == {"baseline", "counterfactual", "top", "random"}
    assert "baseline: F" in printed

    # The locate folder stands for its scores.csv (as the README's quickstart passes it), and
    # the mask then records how the scores were made.
    spt_interp("export-mask", "--model", model, "--scores", tmp_path / "locate",
               "--top-k", "2", "--out", tmp_path / "mask.json")  # fmt: skip
    mask = json.loads((tmp_path / "mask.json").read_text())
    assert mask["source"]["method"] == "path"
    top_two = scores.sort_values("rank").head(2)
    assert sorted((h["layer"], h["head"]) for h in mask["heads"]) == sorted(
        zip(top_two["layer"], top_two["head"], strict=True)
    )

    spt_interp("tune", "--model", model, "--data", training, "--mask", tmp_path / "mask.json",
               "--lr", "3e-2", "--steps", "4", "--batch-size", "3", "--out",
               tmp_path / "tuned")  # fmt: skip
    record = json.loads((tmp_path / "tuned" / "tuning.json").read_text())
    assert record["data"]["format"] == "trl" and record["data"]["examples"] == len(TRAINING)
    assert record["verification"]["outside_mask_identical"] is True
    base_weights = load_file(model / "model.safetensors")
    tuned_weights = load_file(tmp_path / "tuned" / "model.safetensors")
    changed = [name for name in base_weights
               if not torch.equal(base_weights[name], tuned_weights[name])]  # fmt: skip
    assert changed and all("q_proj" in name or "o_proj" in name for name in changed)

    spt_interp("evaluate", "--model", tmp_path / "tuned", "--reference", model, "--pairs",
               pairs, "--out", tmp_path / "evaluate.json")  # fmt: skip
    report = json.loads((tmp_path / "evaluate.json").read_text())
    after = report["metrics"]["decision_log_odds"]["value"]
    before = report["before"]["decision_log_odds"]["value"]
    # The completion " I" is the alternative: tuning toward it lowers the log-odds.
    assert report["n_pairs"] == len(PAIRS) and after < before
    assert report["change"]["decision_log_odds"]["value"] == pytest.approx(after - before)
