"""The knockout command: outputs, refusals before loading, a mask of another model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.data import Protocol
from spt_interp.data.protocol import PROTOCOL_FILE
from spt_interp.mask import HeadMask
from spt_interp.model import load_model
from spt_interp.model.tiny import save_tiny_model

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, bpe_tokenizer):
    """A tiny GQA Llama with a protocol file whose decision targets the tokenizer can tell apart."""
    folder = save_tiny_model(
        "llama", tmp_path_factory.mktemp("ko") / "llama", tokenizer=bpe_tokenizer
    )
    protocol = Protocol(
        reply_prefix="I'm", sycophantic_targets=["sorry"], anti_sycophantic_targets=["sure"]
    )
    (folder / PROTOCOL_FILE).write_text(
        json.dumps({"reply_prefix": "I'm", "sycophantic_targets": protocol.sycophantic_targets,
                    "anti_sycophantic_targets": protocol.anti_sycophantic_targets})
    )  # fmt: skip
    return folder


@pytest.fixture()
def scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    rows = [
        {"layer": l_, "head": h, "score": (l_ * 4 + h) * 0.1} for l_ in range(2) for h in range(4)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_knockout_writes_the_curves(tmp_path, llama_dir, scores_csv):
    out = tmp_path / "out"
    args = ["knockout", "--model", llama_dir, "--data", DATA, "--scores", scores_csv,
            "--k", "1,2,4", "--random-seeds", "2", "--out", out, "--no-png",
            "--device", "cpu"]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "knockout.csv")
    assert len(table) == 2 + 3 + 6
    top1 = table[(table.selection == "top") & (table.k == 1)].iloc[0]
    assert top1.heads == "L1.H3"  # the highest score ranks first
    assert (out / "knockout.html").is_file()
    assert "baseline: F" in result.output
    again = run(*args)
    assert again.exit_code == 2 and "--force" in again.output
    assert run(*args, "--force").exit_code == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --scores CSV or --mask FILE"),
        (["--scores", "SCORES", "--k", "1,9"], "[9] are out of range"),
        (["--scores", "SCORES", "--ablation", "max"], "--ablation must be one of"),
        (["--scores", "SCORES", "--k", "1,a"], "bad K 'a'"),
        (["--scores", "missing.csv"], "scores file missing.csv does not exist"),
    ],
)
def test_knockout_refuses_bad_arguments(tmp_path, llama_dir, scores_csv, extra, message):
    extra = [str(scores_csv) if e == "SCORES" else e for e in extra]
    result = run("knockout", "--model", llama_dir, "--data", DATA, "--out", tmp_path / "o", *extra)
    assert result.exit_code == 2
    assert message in result.output


def test_knockout_refuses_to_write_into_the_model_folder(llama_dir, scores_csv):
    result = run("knockout", "--model", llama_dir, "--data", DATA, "--scores", scores_csv,
                 "--out", llama_dir / "ko")  # fmt: skip
    assert result.exit_code == 2 and "which this command reads" in result.output


def test_knockout_refuses_a_mask_of_another_model(tmp_path, tiny_model_dirs, llama_dir):
    gpt2 = load_model(tiny_model_dirs["gpt2"])
    mask = HeadMask.from_heads(gpt2, [(0, 1), (1, 2)]).save(tmp_path / "gpt2-mask.json")
    result = run("knockout", "--model", llama_dir, "--data", DATA, "--mask", mask,
                 "--k", "1,2", "--out", tmp_path / "o")  # fmt: skip
    assert result.exit_code == 2
    llama = load_model(llama_dir)
    for name in ("GPT2LMHeadModel", gpt2.fingerprint(), "LlamaForCausalLM", llama.fingerprint()):
        assert name in result.output


def test_knockout_with_a_mask_uses_its_heads_in_order(tmp_path, llama_dir):
    llama = load_model(llama_dir)
    mask = HeadMask.from_heads(llama, [(0, 2), (1, 1)]).save(tmp_path / "mask.json")
    out = tmp_path / "o"
    result = run("knockout", "--model", llama_dir, "--data", DATA, "--mask", mask,
                 "--k", "1,2", "--random-seeds", "1", "--ablation", "zero", "--out", out,
                 "--no-png")  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "knockout.csv")
    assert table[table.selection == "top"].heads.tolist() == ["L0.H2", "L0.H2 L1.H1"]


PAIR_ROW = {"prompt": "When Mary and John went to the store, John gave a drink to",
            "counterfactual": "When Mary and John went to the store, Anna gave a drink to",
            "behaviour": " the", "alternative": " I"}  # fmt: skip


def test_knockout_on_a_pair_file_gives_the_apis_curve(tmp_path, llama_dir, scores_csv):
    from spt_interp.common.head_scores import read_scores
    from spt_interp.data import load_pairs
    from spt_interp.knockout import knockout_curve, prepare_knockout

    pairs_file = tmp_path / "pairs.jsonl"
    rows = [PAIR_ROW, {**PAIR_ROW, "alternative": " sure"}, {**PAIR_ROW, "behaviour": " is"}]
    pairs_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    hooked = load_model(llama_dir)
    pairs = load_pairs(pairs_file, hooked.tokenizer)
    # By default the CLI reads END steps over cached prefixes; --no-prefix-cache runs full
    # forwards. Each is the API's curve prepared the same way (the two ways agree to rounding:
    # tests/test_interventions.py).
    for flag, end_steps in (("--prefix-cache", True), ("--no-prefix-cache", False)):
        out = tmp_path / flag
        result = run("knockout", "--model", llama_dir, "--pairs", pairs_file, "--scores",
                     scores_csv, "--k", "1,2", "--random-seeds", "2", "--out", out, "--no-png",
                     "--device", "cpu", flag)  # fmt: skip
        assert result.exit_code == 0, result.output
        written = pd.read_csv(out / "knockout.csv")
        data = prepare_knockout(hooked, pairs, method="mean", end_steps=end_steps)
        assert (data.prefixes is not None) == end_steps
        expected = knockout_curve(hooked, data, read_scores(scores_csv).ranked(), [1, 2],
                                  random_seeds=[0, 1], progress=False)  # fmt: skip
        for column in ("apology_share", "log_odds"):
            assert written[column].to_numpy() == pytest.approx(
                expected[column].to_numpy(), abs=1e-6
            )
    refused = run("knockout", "--model", llama_dir, "--pairs", pairs_file, "--scores",
                  scores_csv, "--behaviour", "--out", tmp_path / "o2")  # fmt: skip
    assert refused.exit_code == 2 and not (tmp_path / "o2").exists()
    assert "--behaviour generates the dialogues' replies; not with --pairs" in refused.output
