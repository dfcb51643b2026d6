"""`spt-interp locate`: outputs, heatmap, refusals before heavy work, and a 2-process torchrun
run that gives the single-process scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.viz.plots import find_chromium, head_heatmap

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric


def locate(*args: str):
    return CliRunner().invoke(app, ["locate", *args])


@pytest.fixture(scope="module")
def llama_run(targets_llama_dir, tmp_path_factory, sample_data_file):
    out = tmp_path_factory.mktemp("locate") / "out"
    result = locate(
        "--model",
        str(targets_llama_dir),
        "--data",
        str(sample_data_file),
        "--out",
        str(out),
        "--top-k",
        "3",
        "--per-prompt",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    return out


def test_locate_writes_scores_ranking_and_heatmap(llama_run, sample_data_file):
    from spt_interp.data import load_dialogues

    n_records = len(load_dialogues(sample_data_file))
    scores = pd.read_csv(llama_run / "scores.csv")
    assert list(scores.columns) == ["layer", "head", "score", "apology_effect", "rank"]
    assert len(scores) == 2 * 4 and sorted(scores["rank"]) == list(range(1, 9))
    ranking = json.loads((llama_run / "ranking.json").read_text())
    assert ranking["method"] == "path" and ranking["metric"] == "log-odds"
    assert ranking["device"] == "cpu"
    assert ranking["n_prompts"] == n_records
    effects = [h["apology_effect"] for h in ranking["heads"]]
    assert effects == sorted(effects, reverse=True)
    assert set(ranking["baseline"]) == {"X_r", "X_c", "gap"}
    assert len(ranking["baseline"]["X_r"]["values"]) == n_records
    assert "negative score" in ranking["drives_apology"]
    per_prompt = pd.read_csv(llama_run / "scores_per_prompt.csv")
    means = per_prompt.groupby(["layer", "head"])["value"].mean().to_numpy()
    assert means == pytest.approx(scores.sort_values(["layer", "head"])["score"].to_numpy())
    assert (llama_run / "heatmap.html").stat().st_size > 1000
    if find_chromium() is not None:
        assert (llama_run / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no Chromium" in ranking["files"]["png_note"]


def test_locate_without_png_writes_the_same_scores(
    llama_run, targets_llama_dir, sample_data_file, tmp_path
):
    out = tmp_path / "out"
    result = locate("--model", str(targets_llama_dir), "--data", str(sample_data_file),
                    "--out", str(out), "--top-k", "3", "--no-png", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["heatmap.html", "ranking.json", "scores.csv"]
    assert (out / "scores.csv").read_bytes() == (llama_run / "scores.csv").read_bytes()
    assert "png" not in json.loads((out / "ranking.json").read_text())["files"]


def test_locate_refuses_to_overwrite_without_force(llama_run, targets_llama_dir, sample_data_file):
    result = locate(
        "--model", str(targets_llama_dir), "--data", str(sample_data_file), "--out", str(llama_run)
    )
    assert result.exit_code == 2 and "--force" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--position", "all"], "token-aligned"),
        (["--method", "nope"], "--method"),
        (["--metric", "nope"], "--metric"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_locate_bad_input_is_one_line_error(
    targets_llama_dir, tmp_path, sample_data_file, extra, message
):
    result = locate(
        "--model",
        str(targets_llama_dir),
        "--data",
        str(sample_data_file),
        "--out",
        str(tmp_path / "o"),
        *extra,
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "o" / "scores.csv").exists()


def test_locate_empty_data_file_is_refused(targets_llama_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = locate(
        "--model", str(targets_llama_dir), "--data", str(empty), "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 2 and "holds no records" in result.output


def test_heatmap_is_centred_with_rank_hover_and_top_heads_outlined(llama_run):
    from spt_interp.common.head_scores import HeadScores

    table = pd.read_csv(llama_run / "scores.csv")
    scores = HeadScores(table, None, {}, "path", "end", "c_into_r", "log-odds", "", 2, 4, 6)
    figure = head_heatmap(scores, top_k=3)
    heatmap = figure.data[0]
    assert heatmap.zmid == 0 and heatmap.zmin == -heatmap.zmax
    assert len(figure.layout.shapes) == 3
    best = table.sort_values("rank").iloc[0]
    text = heatmap.text[int(best.layer)][int(best["head"])]
    assert f"layer {int(best.layer)}" in text and "rank 1" in text


def test_two_torchrun_processes_give_the_single_process_scores(
    llama_run, targets_llama_dir, tmp_path, sample_data_file
):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "distributed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "spt_interp.cli",
            "locate",
            "--model",
            str(targets_llama_dir),
            "--data",
            str(sample_data_file),
            "--out",
            str(out),
            "--top-k",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["processes"] == 2
    split = pd.read_csv(out / "scores.csv")
    single = pd.read_csv(llama_run / "scores.csv")
    pd.testing.assert_frame_equal(split, single, check_exact=False, atol=1e-6, rtol=0)


PAIR_ROW = {"prompt": "When Mary and John went to the store, John gave a drink to",
            "counterfactual": "When Mary and John went to the store, Anna gave a drink to",
            "behaviour": " the", "alternative": " I"}  # fmt: skip


def test_locate_on_a_pair_file_gives_the_apis_scores(targets_llama_dir, tmp_path):
    from spt_interp.common.head_scores import HeadScores
    from spt_interp.data import load_pairs
    from spt_interp.model import load_model
    from spt_interp.patching import decision_metric, locate_heads

    pairs_file = tmp_path / "pairs.jsonl"
    rows = [PAIR_ROW, {**PAIR_ROW, "behaviour": " sure"}, {**PAIR_ROW, "alternative": " is"}]
    pairs_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = locate("--model", str(targets_llama_dir), "--pairs", str(pairs_file),
                    "--out", str(tmp_path / "out"), "--no-png", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    written = HeadScores.load(tmp_path / "out")
    hooked = load_model(targets_llama_dir)
    pairs = load_pairs(pairs_file, hooked.tokenizer)
    expected = locate_heads(hooked, pairs, decision_metric("log-odds", hooked.tokenizer, pairs),
                            progress=False)  # fmt: skip
    pd.testing.assert_frame_equal(written.table, expected.table, check_exact=False, atol=1e-6)
    ranking = json.loads((tmp_path / "out" / "ranking.json").read_text())
    assert ranking["input"] == "pair file" and ranking["data"] == str(pairs_file)


def test_locate_refuses_both_inputs_none_and_chat_pairs_without_a_template(
    targets_llama_dir, tmp_path, sample_data_file
):
    chat = tmp_path / "chat.jsonl"
    message = [{"role": "user", "content": "hi"}]
    chat.write_text(json.dumps({**PAIR_ROW, "prompt": message, "counterfactual": message}) + "\n")
    common = ["--model", str(targets_llama_dir), "--out", str(tmp_path / "o")]
    for extra, expected in (
        (["--data", str(sample_data_file), "--pairs", str(chat)], "give one of --data"),
        ([], "give one of --data"),
        (["--pairs", str(chat)], f"{chat}:1: the prompts are chat messages, but "
                                 f"{targets_llama_dir} has no chat template"),
    ):  # fmt: skip
        result = locate(*common, *extra)
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.output
        assert not (tmp_path / "o").exists()
