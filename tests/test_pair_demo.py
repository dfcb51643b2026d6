"""`spt-interp demo --pairs DIR`: the loop on a pair folder (as `data answer` writes it), each
stage's output consistent with the others and the base's decision read by hand."""

from __future__ import annotations

import json

import pandas as pd
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.data import encode_prompt, load_pairs, pair_targets
from spt_interp.model.loading import load_tokenizer

# The tiny BPE spells " the", " I" and " sure" as one token each.
NAMES = ("Mary", "John", "Anna", "Paul", "Rose", "Mark", "Lily", "Adam")
PAIRS = [{"prompt": f"When {a} and the cat went out, the dog gave it to",
          "counterfactual": f"When {a} and one cat went out, a dog gave it to",
          "behaviour": " the", "alternative": " I"} for a in NAMES]  # fmt: skip


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_pair_demo_locates_knocks_out_tunes_and_reads_the_test_pairs(tiny_model_dirs, tmp_path):
    model = tiny_model_dirs["llama"]
    folder = tmp_path / "pairs"
    folder.mkdir()
    write(folder / "test.jsonl", PAIRS[:5])
    write(folder / "validation.jsonl", PAIRS[5:])
    write(folder / "train_trl.jsonl", [{"prompt": r["prompt"], "completion": " I"} for r in PAIRS])
    result = CliRunner().invoke(app, ["demo", "--model", str(model), "--pairs", str(folder),
                                      "--out", str(tmp_path / "out"), "--modes", "spt,sft",
                                      "--lrs", "1e-2,3e-2", "--steps", "2", "--top-k", "2",
                                      "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["located_on"] == "validation.jsonl"
    scores = pd.read_csv(tmp_path / "out" / "locate" / "scores.csv").sort_values("rank")
    top = [[int(r.layer), int(r.head)] for r in scores.head(2).itertuples()]
    assert summary["mask"]["heads"] == sorted(top) or summary["mask"]["heads"] == top
    assert (tmp_path / "out" / "knockout" / "knockout.csv").is_file()
    tune = summary["tune"]
    for mode in ("spt", "sft"):
        sweep = tune["chosen"][mode]["validation"]
        best = max(sweep, key=lambda lr: (sweep[lr]["alternative_wins"]["value"],
                                          -sweep[lr]["decision_log_odds"]["value"]))  # fmt: skip
        assert f"{tune['chosen'][mode]['lr']:g}" == best
        change = tune["test"][mode]["change"]["decision_log_odds"]["value"]
        after = tune["test"][mode]["metrics"]["decision_log_odds"]["value"]
        before = tune["test"][mode]["before"]["decision_log_odds"]["value"]
        assert abs(change - (after - before)) < 1e-5
    # The base's decision on the test pairs, by hand from HF's own logits.
    tokenizer = load_tokenizer(model)
    targets = pair_targets(load_pairs(folder / "test.jsonl", tokenizer), tokenizer)
    hf = AutoModelForCausalLM.from_pretrained(model).eval()
    values = []
    for row, (behaviour, alternative) in zip(PAIRS[:5], targets, strict=True):
        with torch.no_grad():
            logits = hf(torch.tensor([encode_prompt(tokenizer, row["prompt"])])).logits[0, -1]
        logp = torch.log_softmax(logits.double(), -1)
        values.append(float(logp[behaviour[0]] - logp[alternative[0]]))
    base = tune["test"]["base"]["metrics"]["decision_log_odds"]["value"]
    # float32 logits of a tiny model: a few float32 steps of log-probabilities near 6.
    assert abs(base - sum(values) / 5) < 1e-4
    assert "| spt |" in (tmp_path / "out" / "report.md").read_text()


def test_the_pair_demo_refuses_bad_folders_and_writes_nothing(tiny_model_dirs, tmp_path):
    model = tiny_model_dirs["llama"]
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    write(bad / "test.jsonl", [PAIRS[0], {"prompt": "x"}])
    cases = [
        (["--pairs", tmp_path / "empty"], "has no test.jsonl (a pair file)"),
        (["--pairs", bad], f"{bad / 'test.jsonl'}:2: missing 'counterfactual'"),
        (["--pairs", bad, "--data", bad], "--pairs goes with --model, not with --data"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(app, ["demo", "--model", str(model), "--out",
                                          str(tmp_path / "out"), *map(str, extra)])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not (tmp_path / "out").exists()
