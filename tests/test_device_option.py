"""--device on the commands that load a model: a device this machine lacks is refused in one
line, before anything loads or is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spt_interp.cli import app

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
