"""--device on the commands that load a model: a device this machine lacks is refused in one
line, before anything loads or is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spt_interp.cli import app

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric

QUESTIONS = Path(__file__).parent / "data" / "knockout_questions.jsonl"


@pytest.fixture()
def scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    rows = [f"{layer},{head},{layer + head / 10}" for layer in range(2) for head in range(4)]
    path.write_text("layer,head,score\n" + "\n".join(rows) + "\n")
    return path


def command_args(command: str, model: Path, out: Path, scores: Path) -> list[str]:
    data = str(QUESTIONS)
    return {
        "locate": ["locate", "--model", str(model), "--data", data, "--out", str(out)],
        "knockout": ["knockout", "--model", str(model), "--data", data, "--scores", str(scores),
                     "--out", str(out)],
        "demo": ["demo", "--out", str(out)],
    }[command]  # fmt: skip


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
@pytest.mark.parametrize("command", ["locate", "knockout", "demo"])
@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", "error: --device cuda: no CUDA device is available here"),
        ("cuda:3", "error: --device cuda:3: no CUDA device is available here"),
        ("gpu0", "error: --device 'gpu0': not a device name (auto, cpu, cuda, cuda:1, ...)"),
    ],
)
def test_a_device_this_machine_lacks_is_refused_before_loading(
    command, device, message, tiny_model_dirs, tmp_path, scores_csv
):
    out = tmp_path / "out"
    args = command_args(command, tiny_model_dirs["llama"], out, scores_csv)
    result = CliRunner().invoke(app, [*args, "--device", device])
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]  # no staging folder either


@pytest.mark.parametrize("command", ["locate", "knockout", "evaluate"])
def test_a_dtype_that_is_not_offered_is_refused_before_loading(
    command, tiny_model_dirs, tmp_path, scores_csv
):
    out = tmp_path / "out"
    if command == "evaluate":
        args = ["evaluate", "--model", str(tiny_model_dirs["llama"]), "--data", str(QUESTIONS),
                "--out", str(out)]  # fmt: skip
    else:
        args = command_args(command, tiny_model_dirs["llama"], out, scores_csv)
    result = CliRunner().invoke(app, [*args, "--dtype", "float64"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "error: --dtype 'float64': not one of float32, bfloat16, float16"
    )
    assert not out.exists()


@pytest.fixture(scope="module")
def organism(organism_dir):
    return organism_dir


def locate_scores(organism: Path, out: Path, dtype: str) -> tuple[list[float], dict]:
    import json

    import pandas as pd

    result = CliRunner().invoke(
        app,
        ["locate", "--model", str(organism / "model"), "--data",
         str(organism / "data" / "test.jsonl"), "--limit", "16", "--out", str(out),
         "--device", "cpu", "--dtype", dtype],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "scores.csv").sort_values(["layer", "head"])
    return table["score"].tolist(), json.loads((out / "ranking.json").read_text())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_locate_in_half_precision_matches_float32(organism, tmp_path, dtype):
    reference, _ = locate_scores(organism, tmp_path / "fp32", "float32")
    half, ranking = locate_scores(organism, tmp_path / dtype, dtype)
    assert ranking["dtype"] == dtype
    scale = max(abs(v) for v in reference)
    # Scores are differences of ~20-logit log-odds: bf16 (8-bit mantissa) rounds logits that
    # size in steps of 0.06-0.12, a few % of the largest score here; float16 (11 bits) 8x less.
    tolerance = 0.05 if dtype == "bfloat16" else 0.005
    assert max(abs(a - b) for a, b in zip(half, reference, strict=True)) <= tolerance * scale
    top = sorted(range(len(reference)), key=lambda i: reference[i])[:4]
    assert sorted(range(len(half)), key=lambda i: half[i])[:4] == top


def test_evaluate_in_bfloat16_gives_the_float32_metrics_on_the_organism(organism, tmp_path):
    import json

    reports = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.json"
        result = CliRunner().invoke(
            app,
            ["evaluate", "--model", str(organism / "model"), "--data",
             str(organism / "data" / "test.jsonl"), "--general",
             str(organism / "data" / "general.jsonl"), "--limit", "24", "--max-new-tokens", "16",
             "--no-controls", "--device", "cpu", "--dtype", dtype, "--out", str(out)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        reports[dtype] = json.loads(out.read_text())
    assert reports["bfloat16"]["dtype"] == "bfloat16"
    # The organism holds its answers and apologies by several logits: greedy replies, and so
    # every generated metric, are the same in bf16.
    for name in ("accuracy_before", "apology_rate", "confidence", "truthfulness",
                 "accuracy_after", "general_accuracy"):  # fmt: skip
        assert reports["bfloat16"]["metrics"][name] == reports["float32"]["metrics"][name], name


def test_knockout_in_bfloat16_matches_float32_on_the_organism(organism, tmp_path):
    import pandas as pd

    scores = tmp_path / "scores.csv"
    rows = [f"{layer},{head},{-(layer * 8 + head)}" for layer in range(6) for head in range(8)]
    scores.write_text("layer,head,score\n" + "\n".join(rows) + "\n")
    tables = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        result = CliRunner().invoke(
            app,
            ["knockout", "--model", str(organism / "model"), "--data",
             str(organism / "data" / "test.jsonl"), "--scores", str(scores), "--k", "1,8,16",
             "--random-seeds", "1", "--limit", "16", "--no-png", "--device", "cpu", "--dtype",
             dtype, "--out", str(out)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        tables[dtype] = pd.read_csv(out / "knockout.csv")
    full, half = tables["float32"], tables["bfloat16"]
    assert list(half.heads) == list(full.heads)
    assert (full.apology_share.max() - full.apology_share.min()) > 0.5  # the curve moves
    assert (half.apology_share - full.apology_share).abs().max() <= 0.02
