"""Every writing command killed mid-run: --out holds nothing or the whole result, the model folder
is untouched, and a rerun (--resume for tune) writes what an uninterrupted run writes.

Each command runs under tests/kill_harness.py, which pauses it at a named point (mid-work, a
checkpoint written, one output file complete in the staging folder, all staged before the
renames, a --force run's old output moved aside, a single file written before its rename);
the test then sends SIGKILL (no cleanup can run) or SIGINT (Ctrl-C). The kill runs of one
command go at once, each into its own folder, so that the paused processes overlap; the runs
that are never interrupted (the reference, the reruns) run in the test's own process.

"Bit-identical" compares every byte of every output file, after removing only what a run
records about its own circumstances: wall-clock times and dates, where it was written (the
--out path), and plotly's random element ids in the HTML figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spt_interp.cli.app import INTERRUPTED_EXIT_CODE, INTERRUPTED_MESSAGE, app
from spt_interp.mask import HeadMask
from spt_interp.model.tiny import save_tiny_model
from spt_interp.tuning import load_base

HARNESS = Path(__file__).with_name("kill_harness.py")
DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
ROOT = Path(__file__).resolve().parents[1]
# Keys whose values are the run's circumstances, not its result.
VOLATILE_KEYS = {"created", "seconds", "train_seconds", "samples_per_second"}
PLOTLY_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Args = Callable[[Path], list]


@dataclass
class KillRun:
    point: str
    sent: int
    out: Path
    process: subprocess.Popen
    marker: Path


def environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def start(point: str, args: Args, out: Path, sent: int = signal.SIGKILL, **extra) -> KillRun:
    """Start the CLI under the harness, to be paused at ``point``."""
    marker = out.parent / f"paused-{out.name}"
    settings = {"KILL_POINT": point, "KILL_MARKER": str(marker), **extra}
    process = subprocess.Popen(
        [sys.executable, str(HARNESS), *[str(a) for a in args(out)]],
        env=environment(**settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return KillRun(point, sent, out, process, marker)


def interrupt(run: KillRun, timeout: float = 300) -> tuple[int, str]:
    """Wait for the run to pause at its point, send its signal; return (exit code, stderr)."""
    deadline = time.monotonic() + timeout
    while not run.marker.exists():
        if run.process.poll() is not None:
            _, err = run.process.communicate()
            pytest.fail(f"kill point {run.point!r} not reached (exit {run.process.returncode}): "
                        f"{err[-2000:]}")  # fmt: skip
        if time.monotonic() > deadline:
            run.process.kill()
            pytest.fail(f"kill point {run.point!r} not reached in {timeout} s")
        time.sleep(0.05)
    run.process.send_signal(run.sent)
    _, err = run.process.communicate(timeout=timeout)
    return run.process.returncode, err


def spawn(args: Args, out: Path) -> subprocess.Popen:
    """Start the CLI (not harnessed) writing to ``out``."""
    return subprocess.Popen(
        [sys.executable, "-m", "spt_interp.cli", *[str(a) for a in args(out)]],
        env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def succeeded(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-2000:]


def run_all(*jobs: tuple[Args, Path]) -> None:
    """Run the CLI once per (args, out), all at once, each in its own process; each must
    succeed."""
    for process in [spawn(args, out) for args, out in jobs]:
        succeeded(process)


def run_here(*jobs: tuple[Args, Path]) -> None:
    """Run the CLI once per (args, out), one after another in this process; each must succeed.

    For the runs that are never interrupted (the reference, the reruns, a setup step): the same
    command and writers without an interpreter's start-up, which costs more than the tiny
    model's work. Runs compared bit for bit run the same way (both here, or both in processes),
    so that they share a thread count.
    """
    for args, out in jobs:
        result = CliRunner().invoke(app, [str(a) for a in args(out)])
        assert result.exit_code == 0, (result.output[-2000:], result.exception)


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def sha256_tree(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files(folder).items()}


def _without_volatile(value):
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def comparable(path: Path, names: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """Return the output's bytes, a file or a folder's files (only ``names`` if given), with the
    run's circumstances removed (module docstring)."""
    found = {path.name: path.read_bytes()} if path.is_file() else files(path)
    result = {}
    for name, data in found.items():
        if names is not None and name not in names:
            continue
        data = data.replace(str(path).encode(), b"<out>")
        if name.endswith(".json"):
            parsed = _without_volatile(json.loads(data))
            data = json.dumps(parsed, indent=1, sort_keys=True).encode()
        elif name.endswith(".html"):
            data = PLOTLY_ID.sub(b"<id>", data)
        result[name] = data
    return result


def only(expected: dict[str, bytes], names: tuple[str, ...]) -> dict[str, bytes]:
    return {name: data for name, data in expected.items() if name in names}


def hidden_leftovers(out: Path) -> list[str]:
    """Hidden staging files or folders a run left beside ``out`` or inside it."""
    beside = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    inside = [p.name for p in out.iterdir() if p.name.startswith(".")] if out.is_dir() else []
    return sorted(beside + inside)


def check_interrupted(run: KillRun, code: int, err: str, whole: Callable[[Path], bool]) -> None:
    """SIGKILL: exit -9, ``out`` empty of results. SIGINT: one line, exit 130, no leftovers."""
    if run.sent == signal.SIGKILL:
        assert code == -signal.SIGKILL, err[-2000:]
    else:
        lines = [line for line in err.splitlines() if line.startswith("error")]
        assert code == INTERRUPTED_EXIT_CODE, err[-2000:]
        assert lines == [INTERRUPTED_MESSAGE] and "Traceback" not in err, err[-2000:]
        assert hidden_leftovers(run.out) == [], run.point
    assert not whole(run.out) or run.point == "swap", f"{run.point}: result present"


def kill_all(
    points: list[tuple[str, int]],
    args: Args,
    base: Path,
    check: Callable[[Path], bool],
    prepare: Callable[[Path], None] | None = None,
    name: str = "out",
    reference_here: bool = True,
    **extra: str,
) -> tuple[dict[tuple[str, int], Path], dict[str, bytes]]:
    """Run the command once per (point, signal) into base/<point>-<signal>/out, interrupted
    there, and once uninterrupted into base/reference/out (in this process while the others
    run, or with ``reference_here`` False in a process of its own beside them); check each
    interrupted run. Return the interrupted runs' folders and the reference's comparable
    files."""
    runs = []
    for point, sent in points:
        out = base / f"{point}-{signal.Signals(sent).name}" / name
        out.parent.mkdir(parents=True)
        if prepare is not None:
            prepare(out)
        runs.append(start(point, args, out, sent, **extra))
    reference = base / "reference" / name
    reference.parent.mkdir()
    if reference_here:
        run_here((args, reference))
    else:
        process = spawn(args, reference)
    for run in runs:
        check_interrupted(run, *interrupt(run), check)
    if not reference_here:
        succeeded(process)
    return {(run.point, run.sent): run.out for run in runs}, comparable(reference)


def folder_result(out: Path) -> bool:
    """A whole-folder command's result is there: the folder exists."""
    return out.exists()


def files_result(names: tuple[str, ...]) -> Callable[[Path], bool]:
    """A file-set command's result is there: any of its files exists in ``out``."""
    return lambda out: any((out / name).exists() for name in names)


KILL, INT = signal.SIGKILL, signal.SIGINT


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("kill_model")
    folder = save_tiny_model("llama", root / "llama", tokenizer=bpe_tokenizer, n_ctx=256)
    # Decision targets whose first tokens the tiny BPE keeps apart (locate needs them).
    protocol = {"sycophantic_targets": ["I"], "anti_sycophantic_targets": ["The"]}
    (folder / "spt-interp.json").write_text(json.dumps(protocol))
    return folder


@pytest.fixture(scope="module")
def mask(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("kill_mask") / "mask.json"
    return HeadMask.from_heads(load_base(model), [(0, 1), (1, 2)]).save(path)


# --- tune, merge --------------------------------------------------------------------------


def test_tune_delta_killed_then_resumed_or_rerun_writes_the_uninterrupted_result(
    model, mask, tmp_path
):
    before = sha256_tree(model)

    def args(out):
        return ["tune", "--model", model, "--data", DATA, "--mask", mask, "--out", out,
                "--save", "delta", "--steps", "6", "--batch-size", "4", "--checkpoint-every",
                "1"]  # fmt: skip

    points = [("checkpoint", KILL), ("save", KILL), ("commit", KILL), ("compute", INT)]
    # The resumed run continues a checkpoint that a process wrote, and is compared bit for bit
    # with the reference: all of them run in processes, with one thread count.
    outs, expected = kill_all(
        points, args, tmp_path, folder_result, reference_here=False, KILL_COUNT="3"
    )
    assert sha256_tree(model) == before
    # Killed after its third checkpoint, --resume continues from it; killed with every file
    # staged, a plain rerun replaces the leftovers.
    resumed, rerun = outs["checkpoint", KILL], outs["commit", KILL]
    assert (resumed.parent / "out.checkpoints" / "checkpoint.pt").is_file()
    assert hidden_leftovers(rerun) == [".out.partial"]
    run_all((lambda out: [*args(out), "--resume"], resumed), (args, rerun))
    assert comparable(resumed) == expected
    assert comparable(rerun) == expected
    assert hidden_leftovers(rerun) == []


def test_tune_full_killed_while_saving_leaves_nothing(model, mask, tmp_path):
    before = sha256_tree(model)

    def args(out):
        return ["tune", "--model", model, "--data", DATA, "--mask", mask, "--out", out,
                "--save", "full", "--steps", "2", "--batch-size", "4"]  # fmt: skip

    points = [("save", KILL), ("save", INT)]
    outs, expected = kill_all(points, args, tmp_path, folder_result)
    assert sha256_tree(model) == before
    rerun = outs["save", KILL]
    run_here((args, rerun))
    assert comparable(rerun) == expected and hidden_leftovers(rerun) == []


def test_merge_killed_while_replacing_an_old_output_leaves_nothing_and_the_old_aside(
    model, mask, tmp_path
):
    delta = tmp_path / "delta"
    tune = ["tune", "--model", model, "--data", DATA, "--mask", mask, "--save", "delta",
            "--steps", "2", "--batch-size", "4"]  # fmt: skip
    run_here((lambda out: [*tune, "--out", out], delta))
    before = {"model": sha256_tree(model), "delta": sha256_tree(delta)}

    def args(out):
        return ["merge", "--base", model, "--delta", delta, "--out", out, "--force"]

    def old_output(out):
        out.mkdir()
        (out / "old.txt").write_text("the output of an earlier run")

    points = [("save", KILL), ("commit", KILL), ("swap", KILL), ("swap", INT)]
    outs, expected = kill_all(
        points, args, tmp_path, files_result(("config.json",)), old_output, KILL_PAUSE="3"
    )
    assert {"model": sha256_tree(model), "delta": sha256_tree(delta)} == before
    for point in ("save", "commit"):  # before the swap: the old output is still in place
        assert files(outs[point, KILL]) == {"old.txt": b"the output of an earlier run"}
    # Killed between the two renames: the old output is aside, the new one not yet in.
    swapped = outs["swap", KILL]
    assert not swapped.exists()
    assert files(swapped.parent / ".out.old") == {"old.txt": b"the output of an earlier run"}
    # Ctrl-C between the two renames is held until the new output is in place, then reported.
    assert comparable(outs["swap", INT]) == expected
    run_here((args, swapped))
    assert comparable(swapped) == expected and hidden_leftovers(swapped) == []


# --- models -------------------------------------------------------------------------------


def test_models_from_gguf_killed_leaves_nothing_and_a_rerun_writes_the_same_folder(
    tmp_path, bpe_tokenizer
):
    from gguf_files import write_tiny_llama_gguf

    source = write_tiny_llama_gguf(tmp_path / "tiny.gguf", bpe_tokenizer)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    def args(out):
        return ["models", "from-gguf", source, "--out", out]

    points = [("save", KILL), ("commit", KILL), ("compute", INT)]
    outs, expected = kill_all(points, args, tmp_path, folder_result, KILL_COUNT="5")
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    rerun = outs["commit", KILL]
    run_here((args, rerun))
    assert comparable(rerun) == expected and hidden_leftovers(rerun) == []


def test_models_pull_killed_leaves_nothing(tmp_path):
    """The packaged SmolLM2 (the `real` extra that `make test` installs) takes 35 s a run, so
    one run, killed with everything staged; from-gguf above tests the same writer further."""
    out = tmp_path / "out"
    run = start("commit", lambda out: ["models", "pull", "smollm2", "--out", out], out)
    check_interrupted(run, *interrupt(run), folder_result)
    assert hidden_leftovers(out) == [".out.partial"]


# --- locate, knockout, export-mask, evaluate ----------------------------------------------

LOCATE_NAMES = ("scores.csv", "ranking.json", "heatmap.html", "heatmap.png")
KNOCKOUT_NAMES = ("knockout.csv", "knockout.html", "knockout.png")


def keep_a_file(out: Path) -> None:
    """The folder already holds a file of the user's; the command must leave it alone."""
    out.mkdir()
    (out / "notes.txt").write_text("mine")


def test_locate_killed_leaves_none_of_its_files(model, tmp_path):
    before = sha256_tree(model)

    def args(out):
        # No PNG: kaleido's own time limit trips on a loaded machine, and whether the PNG
        # comes is not what this test is about (the HTML heatmap is still written).
        return ["locate", "--model", model, "--data", DATA, "--out", out, "--limit", "4",
                "--device", "cpu", "--no-png"]  # fmt: skip

    points = [("save", KILL), ("commit", KILL), ("save", INT)]
    outs, expected = kill_all(points, args, tmp_path, files_result(LOCATE_NAMES), keep_a_file)
    assert sha256_tree(model) == before
    for out in outs.values():
        assert (out / "notes.txt").read_text() == "mine"
    rerun = outs["commit", KILL]
    assert hidden_leftovers(rerun) == [".spt-interp.partial"]
    run_here((args, rerun))
    assert comparable(rerun, LOCATE_NAMES) == only(expected, LOCATE_NAMES)
    assert hidden_leftovers(rerun) == []


def test_knockout_and_export_mask_killed_leave_nothing(model, tmp_path):
    scores = tmp_path / "located"
    run_here((lambda out: ["locate", "--model", model, "--data", DATA, "--out", out, "--limit",
                           "4", "--device", "cpu", "--no-png"], scores))  # fmt: skip
    before = sha256_tree(model)

    def knockout(out):
        return ["knockout", "--model", model, "--data", DATA, "--scores", scores / "scores.csv",
                "--k", "1,2", "--random-seeds", "1", "--limit", "4", "--out", out,
                "--no-png", "--device", "cpu"]  # fmt: skip

    points = [("commit", KILL), ("compute", INT)]
    outs, expected = kill_all(points, knockout, tmp_path / "knockout",
                              files_result(KNOCKOUT_NAMES), keep_a_file)  # fmt: skip
    rerun = outs["commit", KILL]
    run_here((knockout, rerun))
    assert comparable(rerun, KNOCKOUT_NAMES) == only(expected, KNOCKOUT_NAMES)

    def export(out):
        return ["export-mask", "--model", model, "--scores", scores / "scores.csv", "--top-k",
                "2", "--out", out]  # fmt: skip

    outs, expected = kill_all([("replace", KILL), ("replace", INT)], export,
                              tmp_path / "export", folder_result, name="mask.json")  # fmt: skip
    rerun = outs["replace", KILL]
    assert hidden_leftovers(rerun) == [".mask.json.partial"]  # written, never renamed
    run_here((export, rerun))
    assert comparable(rerun) == expected
    assert hidden_leftovers(rerun) == [] and sha256_tree(model) == before


def test_evaluate_killed_leaves_no_report(model, tmp_path):
    def args(out):
        return ["evaluate", "--model", model, "--data", DATA, "--limit", "4", "--max-new-tokens",
                "4", "--out", out, "--device", "cpu"]  # fmt: skip

    points = [("replace", KILL), ("compute", INT)]
    outs, expected = kill_all(points, args, tmp_path, folder_result, name="report.json")
    rerun = outs["replace", KILL]
    run_here((args, rerun))
    assert comparable(rerun) == expected and hidden_leftovers(rerun) == []


# --- organism, demo -----------------------------------------------------------------------


def test_organism_killed_leaves_nothing(tmp_path):
    def args(out):
        return ["organism", "--out", out]

    # It copies the shipped files (no model runs, no file is written otherwise): the points
    # are the staged copy before its rename.
    points = [("commit", KILL), ("commit", INT)]
    outs, expected = kill_all(points, args, tmp_path, folder_result)
    rerun = outs["commit", KILL]
    run_here((args, rerun))
    assert comparable(rerun) == expected and hidden_leftovers(rerun) == []


def test_demo_killed_leaves_nothing(organism_dir, tmp_path):
    """The demo writes through the same staged folder as the commands above (its stages are
    theirs; the rerun property is theirs too), and a small run takes 20 s: two interrupted runs."""
    before = sha256_tree(organism_dir)

    def args(out):
        return ["demo", "--out", out, "--model", organism_dir / "model", "--data",
                organism_dir / "data", "--modes", "spt", "--lrs", "1e-3", "--steps", "2",
                "--locate-pairs", "8", "--test-limit", "8", "--device", "cpu"]  # fmt: skip

    (tmp_path / "int").mkdir(), (tmp_path / "kill").mkdir()
    # The demo's own staging folder, not the ones locate and knockout stage inside it.
    whole = {"KILL_STAGING": ".out.partial"}
    runs = [start("compute", args, tmp_path / "int" / "out", INT, KILL_COUNT="200"),
            start("commit", args, tmp_path / "kill" / "out", KILL, **whole)]  # fmt: skip
    for run in runs:
        check_interrupted(run, *interrupt(run), folder_result)
    assert sha256_tree(organism_dir) == before
    assert hidden_leftovers(runs[1].out) == [".out.partial"]
    assert (runs[1].out.parent / ".out.partial" / "report.md").is_file()  # staged whole
