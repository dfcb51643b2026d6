"""The demo: the whole loop end to end on a small setting, and its refusals of bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import patch

import pytest

from spt_interp.demo import DemoSettings, run_demo

SMALL = DemoSettings(
    locate_pairs=8,
    knockout_ks=(1, 2, 4),
    knockout_seeds=(0, 1),
    top_k=2,
    modes=("sft", "spt", "random"),
    lrs=(1e-3,),
    steps=3,
    batch_size=4,
    test_limit=16,
    general_limit=16,
    max_new_tokens=12,
)


def test_demo_end_to_end_on_a_small_setting(tmp_path, organism_dir):
    out = tmp_path / "demo"
    run_demo(
        out,
        model=organism_dir / "model",
        data=organism_dir / "data",
        settings=SMALL,
        say=lambda _: None,
        progress=False,
    )
    report = (out / "report.md").read_text()
    rows = [
        line for line in report.splitlines() if re.match(r"\| (base|SFT|SPT|random-K SPT) \|", line)
    ]
    assert {row.split("|")[1].strip() for row in rows} == {"base", "SFT", "SPT", "random-K SPT"}
    measured = [cells for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)
                if cells[1] in ("base", "chosen lr")]  # fmt: skip
    # base and every mode at its chosen lr carry numbers ("matched confidence" rows may say
    # that no run of this tiny setting reached it).
    assert {cells[0] for cells in measured} == {"base", "SFT", "SPT", "random-K SPT"}
    for cells in measured:
        for value in cells[3:8]:  # confidence, truthfulness, accuracy before/after, general
            assert re.fullmatch(r"\d\.\d{3}", value), cells
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert (out / link).is_file(), link
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["mask"]["heads"]) == 2
    assert summary["device"] == "cpu" and "on\ncpu." in report
    assert set(summary["knockout"]) == {"1", "2", "4"}
    assert not list(tmp_path.glob(".*partial"))


def run_cli(*args: str) -> tuple[int, str, float]:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "spt_interp.cli", "demo", *args], capture_output=True, text=True
    )
    return completed.returncode, completed.stderr.strip(), time.perf_counter() - started


def assert_quick_one_line_refusal(
    args: list[str], fragment: str, out: Path, *, in_a_process: bool = False
) -> None:
    """The demo refuses ``args`` with one line naming ``fragment``, exit 2, nothing written,
    before any model loads. ``in_a_process``: also as a real process, whose whole stderr (import
    warnings included) must be that one line; the in-process run checks the rest."""
    if in_a_process:
        code, stderr, _ = run_cli(*args)
        assert code == 2
        assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ")
        assert fragment in stderr and not out.exists()
    # Refused before any model loads (checked by behaviour, not by a wall-clock bound that a
    # loaded machine breaks): in process, with loading made to fail, the same refusal comes.
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from spt_interp.cli import app

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    with patch.object(AutoModelForCausalLM, "from_pretrained", no_loading):
        result = CliRunner().invoke(app, ["demo", *args])
    assert result.exit_code == 2, result.output
    stderr = result.stderr.strip()
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ") and fragment in stderr
    assert not out.exists()


def test_wrong_model_path(tmp_path, organism_dir):
    out = tmp_path / "demo"
    args = [
        "--out",
        str(out),
        "--model",
        str(tmp_path / "nowhere"),
        "--data",
        str(organism_dir / "data"),
    ]
    assert_quick_one_line_refusal(args, "does not exist", out, in_a_process=True)


def test_data_in_the_wrong_schema(tmp_path, organism_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"question": "no prompt field"}\n')
    (data / "test.jsonl").write_text('{"question": "no prompt field"}\n')
    out = tmp_path / "demo"
    args = ["--out", str(out), "--model", str(organism_dir / "model"), "--data", str(data)]
    assert_quick_one_line_refusal(args, "train.jsonl:1", out)


def test_unwritable_out(tmp_path):
    out = Path("/proc/spt-interp-demo")
    assert_quick_one_line_refusal(["--out", str(out)], "cannot write", out)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--modes", "spt,full"], "--modes: unknown mode 'full' in 'spt,full'"),
        (["--modes", "spt,spt"], "give each mode once"),
        (["--lrs", "1e-3,fast"], "--lrs: bad learning rate 'fast' in '1e-3,fast'"),
        (["--lrs", "0"], "--lrs: bad learning rate '0'"),
    ],
)
def test_bad_modes_or_rates_are_refused(tmp_path, extra, fragment):
    out = tmp_path / "demo"
    assert_quick_one_line_refusal(["--out", str(out), *extra], fragment, out)


def test_cli_defaults_are_the_demo_settings():
    import typer

    from spt_interp.cli import app
    from spt_interp.demo import parse_modes, parse_rates

    options = {p.name: p.default for p in typer.main.get_command(app).commands["demo"].params}
    assert parse_modes(options["modes"]) == DemoSettings().modes
    assert parse_rates(options["lrs"]) == DemoSettings().lrs
    assert parse_rates("1e-3, 1e-4,1e-3") == (1e-4, 1e-3)


def test_demo_cli_runs_only_the_modes_asked_for(tmp_path, organism_dir):
    from typer.testing import CliRunner

    from spt_interp.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        ["demo", "--out", str(out), "--model", str(organism_dir / "model"), "--data",
         str(organism_dir / "data"), "--modes", "spt", "--lrs", "1e-3", "--steps", "2",
         "--locate-pairs", "8", "--test-limit", "8", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, (result.output[-2000:], result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["modes"] == ["spt"] and summary["settings"]["lrs"] == [1e-3]
    assert {row["mode"] for row in summary["table"]} == {"base", "spt"}
