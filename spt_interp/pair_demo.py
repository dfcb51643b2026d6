"""The whole loop on a behaviour of one's own: a folder of pair files (and TRL training rows).

    DIR/test.jsonl          pair file: knockout and the held-out decision (required)
    DIR/validation.jsonl    pair file: locate, and each mode's rate (optional; test otherwise)
    DIR/train_trl.jsonl     TRL rows: what each mode tunes on (optional; no tune stage without)

(``spt-interp data answer`` writes this layout; ``data ioi`` writes one pair file, which goes in
as DIR/test.jsonl.) Stages: locate (path patching at END, log-odds), knockout (top-K against
random-K), mask (the top K heads), tune (each mode at each rate of the grid, the rate chosen on
the validation pairs: the largest share where the alternative wins, then the lowest mean
log-odds), and each chosen run's decision on the test pairs before and after, beside the
neutral-text KL and the suite. Writes DIR/summary.json and DIR/report.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.outputs import check_out, staged_folder
from spt_interp.errors import SptInterpError

PAIR_STAGES = ("model", "locate", "knockout", "mask", "tune", "report")


@dataclass(frozen=True)
class PairInputs:
    """The checked files of a pair folder (nothing tokenized yet)."""

    model: Path
    test: Path
    validation: Path | None
    train: Path | None
    neutral_text: Path | None = None
    suite: Path | None = None


def check_pair_inputs(
    model: Path, folder: Path, neutral_text: Path | None = None, suite: Path | None = None
) -> PairInputs:
    """Return the folder's files, each line checked, and the model folder checked; no model
    is loaded (the tokenizer alone, to refuse chat prompts a model cannot render)."""
    from spt_interp.data import read_pair_file, read_training_file
    from spt_interp.data.pair_file import check_renderable
    from spt_interp.evaluation.shift import load_neutral_text
    from spt_interp.evaluation.suite import load_suite
    from spt_interp.model import check_architecture, check_model_folder
    from spt_interp.model.loading import load_tokenizer

    if not folder.is_dir():
        raise SptInterpError(f"--pairs {folder} is not a folder with test.jsonl (pairs)")
    test = folder / "test.jsonl"
    if not test.is_file():
        raise SptInterpError(f"--pairs {folder} has no test.jsonl (a pair file)")
    validation = folder / "validation.jsonl"
    train = folder / "train_trl.jsonl"
    pair_files = [test] + ([validation] if validation.is_file() else [])
    rows = [row for path in pair_files for row in read_pair_file(path)]
    if train.is_file() and read_training_file(train).format != "trl":
        raise SptInterpError(f"{train}: expected TRL rows (prompt/completion or messages)")
    if neutral_text is not None:
        load_neutral_text(neutral_text)
    if suite is not None:
        load_suite(suite)
    checked = check_model_folder(model)
    check_architecture(checked)
    check_renderable(rows, load_tokenizer(checked), str(checked))
    return PairInputs(checked, test, validation if validation.is_file() else None,
                      train if train.is_file() else None, neutral_text, suite)  # fmt: skip


def choose_rate(results: dict[float, dict[str, Any]]) -> float:
    """Return the rate whose validation pairs the alternative wins most (then: the lowest mean
    log-odds)."""
    return max(results, key=lambda lr: (results[lr]["alternative_wins"]["value"],
                                        -results[lr]["decision_log_odds"]["value"]))  # fmt: skip


def run_pair_demo(
    out: str | Path,
    *,
    model: str | Path,
    pairs: str | Path,
    settings: Any,
    neutral_text: str | Path | None = None,
    suite: str | Path | None = None,
    force: bool = False,
    say: Callable[[str], None] = print,
    progress: bool = True,
    device: Any = "cpu",
    dtype: Any = None,
) -> dict[str, Any]:
    """Run the loop on a pair folder into ``out`` (staged, renamed at the end); return the
    summary report.md is rendered from. ``settings``: the demo's ``DemoSettings``."""
    optional = [Path(p) if p is not None else None for p in (neutral_text, suite)]
    inputs = check_pair_inputs(Path(model), Path(pairs), *optional)
    reads = [Path(model), Path(pairs), *[p for p in optional if p is not None]]
    out = Path(out)
    check_out(out, force=force, reads=reads, create_parents=True)
    with staged_folder(out) as staging:
        summary = _stages(staging, inputs, settings, say, progress, device, dtype)
        say(f"[6/{len(PAIR_STAGES)}] report: report.md, summary.json")
        write_text_atomic(staging / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_text_atomic(staging / "report.md", pair_report(summary))
    say(f"report: {out / 'report.md'}")
    return summary


def _stages(
    root: Path, inputs: PairInputs, settings: Any, say: Callable, progress: bool, device, dtype
) -> dict[str, Any]:
    import torch

    from spt_interp.data import load_pairs
    from spt_interp.knockout import knockout_curve, knockout_summary, prepare_knockout
    from spt_interp.mask import HeadMask, MaskSource
    from spt_interp.model import load_model
    from spt_interp.patching import decision_metric, locate_heads
    from spt_interp.viz.knockout_report import write_knockout
    from spt_interp.viz.locate_report import write_outputs

    timings: dict[str, float] = {}
    started = time.perf_counter()
    say(f"[1/{len(PAIR_STAGES)}] model: {inputs.model}")
    weights = dtype if dtype is not None else torch.float32
    hooked = load_model(inputs.model, device=device, dtype=weights)
    every_test = load_pairs(inputs.test, hooked.tokenizer, str(inputs.model))
    test = every_test[: settings.test_limit]
    located_on = inputs.validation or inputs.test
    held = (
        load_pairs(located_on, hooked.tokenizer, str(inputs.model))
        if inputs.validation
        else every_test
    )
    timings["model"] = time.perf_counter() - started

    started = time.perf_counter()
    locate_pairs = held[: settings.locate_pairs]
    say(f"[2/{len(PAIR_STAGES)}] locate: path patching on {len(locate_pairs)} pairs of "
        f"{located_on.name}")  # fmt: skip
    metric = decision_metric("log-odds", hooked.tokenizer, locate_pairs)
    scores = locate_heads(hooked, locate_pairs, metric, method="path", progress=progress)
    locate_files = write_outputs(scores, root / "locate", top_k=settings.top_k)
    timings["locate"] = time.perf_counter() - started

    started = time.perf_counter()
    ranking = scores.ranked()
    ks = [k for k in settings.knockout_ks if k <= len(ranking)]
    say(f"[3/{len(PAIR_STAGES)}] knockout: top-K vs random-K on {len(test)} test pairs, K {ks}")
    prepared = prepare_knockout(hooked, test, method="mean")
    table = knockout_curve(hooked, prepared, ranking, ks, random_seeds=settings.knockout_seeds,
                           progress=progress)  # fmt: skip
    knockout_files = write_knockout(table, root / "knockout", title="Mean ablation of top-K heads")
    timings["knockout"] = time.perf_counter() - started

    say(f"[4/{len(PAIR_STAGES)}] mask: top {settings.top_k} heads")
    mask = HeadMask.from_scores(hooked, scores, top_k=settings.top_k,
                                source=MaskSource(method="path", metric="log-odds"))  # fmt: skip
    mask.save(root / "mask.json")
    summary: dict[str, Any] = {
        "model": str(inputs.model),
        "files": {k: str(v) if v else None for k, v in asdict(inputs).items()},
        "located_on": located_on.name,
        "top_heads": [{"layer": layer, "head": head} for layer, head in ranking[: settings.top_k]],
        "knockout": {k: knockout_summary(table, k) for k in ks},
        "mask": {"heads": [list(h) for h in mask.head_set], "components": list(mask.components)},
        "outputs": {"locate": locate_files, "knockout": knockout_files},
    }
    if inputs.train is None:
        say(f"[5/{len(PAIR_STAGES)}] tune: skipped (no train_trl.jsonl)")
    else:
        started = time.perf_counter()
        summary["tune"] = _tune(hooked, inputs, mask, held, test, settings, say, progress,
                                device, weights)  # fmt: skip
        timings["tune"] = time.perf_counter() - started
    summary["timings"] = timings
    return summary


def _tune(hooked, inputs, mask, validation, test, settings, say, progress, device, weights):
    from spt_interp.data import read_training_file
    from spt_interp.evaluation.behaviour import evaluate_pairs
    from spt_interp.evaluation.shift import load_neutral_text
    from spt_interp.evaluation.suite import load_suite
    from spt_interp.experiments.trained_run import applied, base_parameters, train_run
    from spt_interp.model import load_model
    from spt_interp.tuning import TuneConfig

    reference = load_model(inputs.model, device=device, dtype=weights)
    base_state = base_parameters(hooked, reference)
    examples = read_training_file(inputs.train).examples(hooked.tokenizer, None)
    neutral = load_neutral_text(inputs.neutral_text) if inputs.neutral_text else None
    suite = load_suite(inputs.suite) if inputs.suite else None
    rows = {"base": evaluate_pairs(hooked, test, suite=suite)}
    say(f"[5/{len(PAIR_STAGES)}] tune: {', '.join(settings.modes)} x lr {list(settings.lrs)} on "
        f"{len(examples)} TRL rows, each rate's validation decision")  # fmt: skip
    chosen = {}
    for mode in settings.modes:
        sweep, best = {}, None  # only the best run so far is kept: an SFT update is a whole model
        for lr in settings.lrs:
            config = TuneConfig(mode=mode, lr=lr, steps=settings.steps,
                                batch_size=settings.batch_size, seed=settings.seed)  # fmt: skip
            run = train_run(hooked, mask if config.method.method.uses_mask else None, examples,
                            config, base_state, progress)  # fmt: skip
            with applied(hooked, run, base_state):
                sweep[lr] = evaluate_pairs(hooked, validation)["metrics"]
            if choose_rate(sweep) == lr:
                best = run
        with applied(hooked, best, base_state):
            rows[mode] = evaluate_pairs(hooked, test, reference=reference, neutral=neutral,
                                        suite=suite)  # fmt: skip
        chosen[mode] = {"lr": best.lr, "validation": {f"{k:g}": v for k, v in sweep.items()},
                        "trainable": best.trainable}  # fmt: skip
    return {"examples": len(examples), "chosen": chosen, "test": rows}


def _cell(metric: dict[str, Any] | None, digits: int = 3) -> str:
    if not metric:
        return ""
    return (f"{metric['value']:.{digits}f} [{metric['low']:.{digits}f}, "
            f"{metric['high']:.{digits}f}]")  # fmt: skip


def pair_report(summary: dict[str, Any]) -> str:
    """Return report.md: the heads, knockout, and each mode's decision on the test pairs."""
    heads = ", ".join(f"L{h['layer']}.H{h['head']}" for h in summary["top_heads"])
    lines = [f"# Pair demo: {summary['model']}", "",
             f"Located on {summary['located_on']}: top heads {heads}.", "",
             "| K | share where the behaviour wins: baseline | top-K | random-K (mean) |",
             "|---|---|---|---|"]  # fmt: skip
    for k, row in summary["knockout"].items():
        lines.append(f"| {k} | {row['baseline_share']:.3f} | {row['top_share']:.3f} | "
                     f"{row['random_share_mean']:.3f} |")  # fmt: skip
    tune = summary.get("tune")
    if tune:
        lines += ["", f"Tuned on {tune['examples']} TRL rows; each mode's rate chosen on the "
                  "validation pairs.", "",
                  "| model | lr | mean log-odds (95% CI) | alternative wins | KL neutral | "
                  "suite macro acc |", "|---|---|---|---|---|---|"]  # fmt: skip
        for name, report in tune["test"].items():
            metrics = report["metrics"]
            suite = report.get("general_suite", {}).get("macro_acc")
            lr = tune["chosen"].get(name, {}).get("lr", "")
            lines.append(f"| {name} | {lr} | {_cell(metrics['decision_log_odds'])} | "
                         f"{_cell(metrics['alternative_wins'])} | "
                         f"{_cell(metrics.get('kl_neutral'), 4)} | {_cell(suite)} |")  # fmt: skip
    return "\n".join(lines) + "\n"
