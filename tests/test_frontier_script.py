"""benchmarks/frontier.py on the organism: runs go to the store as they end, resume, report."""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest.mock import patch

import torch

from spt_interp.model import load_base

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "frontier.py"
PASSAGE = ("The river rises in the northern hills and runs south for two hundred miles. Farmers "
           "along its banks grow wheat and barley in the dry season.")  # fmt: skip


def inputs(organism_dir: Path, tmp_path: Path) -> list[str]:
    neutral = tmp_path / "neutral.jsonl"
    neutral.write_text("".join(json.dumps({"text": f"{PASSAGE} Part {i}."}) + "\n"
                               for i in range(3)))  # fmt: skip
    suite = tmp_path / "suite.jsonl"
    items = [{"task": task, "requests": [{"context": f"Q{i}: one or two?", "continuation": c}
                                         for c in (" one", " two")], "label": i % 2}
             for task in ("a", "b") for i in range(2)]  # fmt: skip
    suite.write_text("".join(json.dumps(item) + "\n" for item in items))
    geometry = load_base(organism_dir / "model").geometry
    scores = tmp_path / "scores.csv"
    with scores.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "head", "score", "apology_effect", "rank"])
        heads = [(layer, head) for layer in range(geometry.n_layers)
                 for head in range(geometry.n_heads)]  # fmt: skip
        for rank, (layer, head) in enumerate(heads, start=1):
            score = 1.0 / rank
            writer.writerow([layer, head, score, -score, rank])
    return ["--model-dir", str(organism_dir), "--scores", str(scores), "--top-k", "2",
            "--neutral-text", str(neutral), "--suite", str(suite), "--steps", "2",
            "--batch-size", "4", "--modes", "spt", "--quiet"]  # fmt: skip


def frontier_process(*args: str) -> subprocess.CompletedProcess:
    """Run `python benchmarks/frontier.py ARGS` as a user does."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "frontier.py"), *args],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip


@functools.cache
def script_module():
    """The script, loaded once (its module-level values are constants; main() reads its
    arguments afresh on every call)."""
    spec = importlib.util.spec_from_file_location("frontier_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def frontier(*args: str) -> subprocess.CompletedProcess:
    """Run the script's main() with ARGS in this process, as the script runs it (its folder on
    sys.path, an exit message on stderr with status 1): an interpreter's start-up takes longer
    than a run of the organism. The script sets torch's thread count; it is put back after."""
    threads = torch.get_num_threads()
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    with (
        patch.object(sys, "argv", [str(SCRIPT), *args]),
        patch.object(sys, "path", [str(SCRIPT.parent), *sys.path]),
        redirect_stdout(stdout),
        redirect_stderr(stderr),
    ):
        try:
            script_module().main()
        except SystemExit as exit_:
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            torch.set_num_threads(threads)
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def test_the_script_keeps_finished_runs_resumes_without_redoing_them_and_reports(
    organism_dir, tmp_path
):
    common = inputs(organism_dir, tmp_path) + ["--store", str(tmp_path / "store")]
    first = frontier_process(*common, "--max-runs", "2")  # once as a script; then in process
    assert first.returncode == 0, first.stderr[-2000:]
    ran = [line for line in first.stdout.splitlines() if line.startswith("run ")]
    assert ran == ["run base lr 0 seed 0", "run spt lr 0.000464 seed 0"]
    assert "stopping: budget reached" in first.stdout
    assert len(list((tmp_path / "store" / "runs").glob("*.json"))) == 2

    second = frontier(*common, "--max-runs", "1")
    assert second.returncode == 0, second.stderr[-2000:]
    assert [line for line in second.stdout.splitlines() if line.startswith("run ")] == [
        "run spt lr 0.001 seed 0"
    ]  # base and 4.64e-4 came from the store

    report = frontier(*common, "--report", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-2000:]
    with (tmp_path / "report" / "points.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["mode"], float(r["lr"])) for r in rows) == [
        ("base", 0.0), ("spt", 4.64e-4), ("spt", 1e-3)]  # fmt: skip
    written = json.loads((tmp_path / "report" / "frontier.json").read_text())
    assert written["protocol"].startswith("lr frontier (decision read-out)")
    assert written["grids"]["spt"]["rates"] == [4.64e-4, 1e-3]

    steering = frontier(*common, "--modes", "steer", "--max-runs", "1")
    assert steering.returncode == 0, steering.stderr[-2000:]
    assert [line for line in steering.stdout.splitlines() if line.startswith("run ")] == [
        "run steer alpha 1 seed 0"
    ]
    report = frontier(*common, "--report", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-2000:]
    with (tmp_path / "report" / "points.csv").open() as handle:
        rows = {(r["mode"], r["axis"], float(r["lr"])) for r in csv.DictReader(handle)}
    assert ("steer", "alpha", 1.0) in rows and ("spt", "lr", 1e-3) in rows
    written = json.loads((tmp_path / "report" / "frontier.json").read_text())
    assert written["grids"]["steer"]["rates"] == [1.0]
    # Neither grid moves confidence off the base's 0 yet and both stay under KL 1 nat: each
    # grows up by one grid step (steering's next alpha, SPT's next rate), not down.
    with (tmp_path / "report" / "points.csv").open() as handle:
        tuned = [row for row in csv.DictReader(handle) if row["mode"] != "base"]
    assert {(float(r["test_confidence"]), float(r["test_kl"]) < 1) for r in tuned} == {(0.0, True)}
    assert written["missing"][-2:] == [
        "spt: grid not bracketed (next: 0.00215)",
        "steer: grid not bracketed (next: 2.15)",
    ]

    wide = ["--wide-suite", "2", "--wide-store", str(tmp_path / "wide")]
    remade = frontier(*common, "--modes", "spt", "steer", *wide)
    assert remade.returncode == 0, remade.stderr[-2000:]
    lines = [json.loads(line) for line in remade.stdout.splitlines() if line.startswith("{")]
    # The base, spt's run nearest 0.7 trained again with its seed, and the steering: each gives
    # the stored run's test decisions back exactly.
    assert [(line["mode"], line["remade_exactly"]) for line in lines] == [
        ("base", True), ("spt", True), ("steer", True)]  # fmt: skip
    report = frontier(*common, *wide, "--report", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-2000:]
    written = json.loads((tmp_path / "report" / "frontier.json").read_text())["wide_suite"]
    assert written["items_per_task"] == {"a": 2, "b": 2}
    assert set(written["modes"]) == {"spt", "steer"}
    alone = frontier(*common, "--wide-suite", "2")
    assert alone.returncode != 0
    assert alone.stderr.strip().splitlines()[-1] == (
        "error: --wide-suite N and --wide-store PATH go together")  # fmt: skip

    diverging = frontier(*inputs(organism_dir, tmp_path), "--store", str(tmp_path / "nan"),
                         "--grid", "spt:1e37:2.15e37")  # fmt: skip
    assert diverging.returncode != 0
    assert diverging.stderr.strip().splitlines()[-1] == (
        "error: spt: every rate of the grid diverged (1e+37, 2.15e+37): the grid cannot be "
        "extended; start it lower"
    )

    changed = inputs(organism_dir, tmp_path)
    changed[changed.index("--neutral-text") + 1] = str(tmp_path / "suite.jsonl")
    refused = frontier(*changed, "--store", str(tmp_path / "store"), "--max-runs", "0")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "written for another neutral_text" in refused.stderr


def test_a_steering_point_at_alpha_zero_measures_the_base_and_its_random_sets_are_randoms(
    organism_dir, tmp_path
):
    """run_point in a steering mode: alpha 0 gives the base's every per-item number bit for bit
    (a vector added times zero), a positive alpha moves them, the vectors are taken once per
    (mode, seed), and steer-random steers the head sets the random-heads method trains."""
    from spt_interp.data import build_pairs, load_dialogues, protocol_for
    from spt_interp.evaluation.shift import load_neutral_text
    from spt_interp.evaluation.suite import load_suite
    from spt_interp.experiments.frontier_runs import FrontierData, FrontierPlan, run_point
    from spt_interp.experiments.trained_run import base_parameters
    from spt_interp.mask import HeadMask
    from spt_interp.model import load_model

    hooked, reference = (load_model(organism_dir / "model") for _ in range(2))
    records = load_dialogues(organism_dir / "data" / "train.jsonl")
    protocol = protocol_for(hooked)
    args = inputs(organism_dir, tmp_path)
    data = FrontierData([], records[:3], records[3:9], protocol,
                        load_neutral_text(args[args.index("--neutral-text") + 1]),
                        load_suite(args[args.index("--suite") + 1]),
                        pairs=build_pairs(records[9:17], hooked.tokenizer, protocol))  # fmt: skip
    mask = HeadMask.from_heads(hooked, [(0, 1), (1, 0)], components=("q", "o"))
    plan = FrontierPlan(eval_batch_size=4, max_new_tokens=4)
    state = base_parameters(hooked, reference)

    def point(mode, value, seed=0):
        return run_point(hooked, reference, mask, data, plan, mode, value, seed, state)

    base, zero, strong = point("base", 0.0), point("steer", 0.0), point("steer", 8.0)
    assert zero["items"] == base["items"] and zero["validation"] == base["validation"]
    assert strong["items"]["kl"] != base["items"]["kl"] and min(strong["items"]["kl"]) > 0
    assert set(data.steerings) == {("steer", 0)} and zero["trainable"] == 0
    point("steer", 1.0, seed=1)  # another draw of the pairs: other vectors
    resampled = data.steerings[("steer", 1)]
    assert not resampled.vectors.equal(data.steerings[("steer", 0)].vectors)
    for seed in (1, 2):
        assert plan.setting("steer-random", 1.0, seed, mask)["heads"]["heads"] == (
            plan.setting("random", 1e-3, seed, mask)["heads"]["heads"])  # fmt: skip
    heads = {"heads": [[0, 1], [1, 0]]}
    assert plan.setting("steer", 2.15, 0, mask) == {
        "mode": "steer", "alpha": 2.15, "seed": 0, "heads": heads}  # fmt: skip
