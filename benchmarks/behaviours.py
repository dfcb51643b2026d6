"""Two behaviours besides "are you sure" on a real model, each step a shell command.

    python benchmarks/behaviours.py --model-dir runs/smollm2 --name smollm2 \
        --benchmarks runs/benchmarks --work runs/behaviours/smollm2

Indirect-object identification: `data ioi`, `locate --pairs` (time and top heads), `knockout
--pairs` (top-K against random-K on the decision), and the top heads' attention from END to
the IO and S tokens (spt.end_attention). Answer sycophancy: `data answer`, `locate` on the
validation pairs, `knockout` on test pairs, `export-mask`, then SPT and SFT `tune`d on the TRL
rows with the same steps, batch and data (default rates: SPT 4.64e-4 and SFT 1e-5, where both
reach confidence 0.7-0.9 on the SmolLM2 "are you sure" frontier), each `evaluate`d on the
test pairs before and after, beside the neutral-text KL and the general suite.

Every step's command line, its seconds and what it printed go into
benchmarks/results/NAME/behaviours.json (a step already done in --work is read back, not
run again); the table goes to behaviours.md and the figures to figures/NAME_{ioi,answer}_*.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="holds model/")
    parser.add_argument("--name", required=True, help="results go to benchmarks/results/NAME")
    parser.add_argument("--benchmarks", type=Path, required=True, help="data pull benchmarks")
    parser.add_argument("--work", type=Path, required=True, help="folder for the steps' outputs")
    parser.add_argument("--ioi-n", type=int, default=128)
    parser.add_argument("--locate-limit", type=int, default=64, help="answer pairs located")
    parser.add_argument("--test-limit", type=int, default=200, help="answer pairs evaluated")
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--spt-lr", type=float, default=4.64e-4)
    parser.add_argument("--sft-lr", type=float, default=1e-5)
    parser.add_argument("--suite-limit", type=int, default=12)
    parser.add_argument("--neutral-limit", type=int, default=40)
    parser.add_argument("--attention-heads", type=int, default=8)
    parser.add_argument("--only-ioi", action="store_true",
                        help="report IOI alone (answer sycophancy not run)")  # fmt: skip
    return parser.parse_args(argv)


class StepLog(dict):
    """The finished steps by key, written to ``path`` after each one (a killed run resumes)."""

    def __init__(self, path: Path):
        super().__init__(json.loads(path.read_text()) if path.is_file() else {})
        self.path = path

    def record(self, key: str, entry: dict[str, Any]) -> None:
        self[key] = entry
        self.path.write_text(json.dumps(self, indent=2) + "\n")


def step(log: StepLog, key: str, args: list[Any], done: Path) -> dict[str, Any]:
    """Run `spt-interp ARGS` unless ``done`` exists (then read the step back from the log)."""
    command = ["spt-interp", *map(str, args)]
    if done.exists() and key in log:
        return log[key]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "spt_interp.cli", *map(str, args)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{result.stderr[-2000:]}")
    entry = {
        "command": shlex.join(command),
        "seconds": round(time.perf_counter() - started, 1),
        "printed": result.stdout.strip().split("\n"),
    }
    log.record(key, entry)
    print(f"{key}: {entry['seconds']} s\n  " + "\n  ".join(entry["printed"][-8:]), flush=True)
    return entry


def top_heads(scores_csv: Path, n: int) -> list[dict[str, Any]]:
    import spt_interp as spt

    scores = spt.read_scores(scores_csv)
    by_head = scores.score_by_head()
    return [
        {"layer": layer, "head": head, "score": round(float(by_head[(layer, head)]), 4)}
        for layer, head in scores.ranked()[:n]
    ]


def knockout_points(csv: Path, k: int) -> dict[str, Any]:
    import pandas as pd

    import spt_interp as spt

    table = pd.read_csv(csv)
    summary = spt.knockout_summary(table, k)
    logit = table.groupby("selection").log_odds
    return {
        **{key: round(value, 4) for key, value in summary.items() if key != "k"},
        "k": k,
        "log_odds_baseline": round(float(logit.first()["baseline"]), 3),
        "log_odds_counterfactual": round(float(logit.first()["counterfactual"]), 3),
        "log_odds_top": round(
            float(table[(table.selection == "top") & (table.k == k)].log_odds.iloc[0]), 3
        ),
        "log_odds_random_mean": round(
            float(table[(table.selection == "random") & (table.k == k)].log_odds.mean()), 3
        ),
    }


def attention(model: Path, pairs: Path, heads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import spt_interp as spt

    hooked = spt.load_model(model)
    loaded = spt.load_pairs(pairs, hooked.tokenizer)
    table = spt.end_attention(hooked, loaded, [(h["layer"], h["head"]) for h in heads])
    return [
        {
            "layer": int(r.layer),
            "head": int(r.head),
            "to_io": round(float(r.behaviour), 4),
            "to_s": round(float(r.alternative), 4),
            "pairs": int(r.n_behaviour),
        }
        for r in table.itertuples()
    ]


def ioi(args: argparse.Namespace, log: dict, model: Path, work: Path) -> dict[str, Any]:
    pairs = work / "ioi.jsonl"
    step(
        log,
        "ioi_data",
        ["data", "ioi", "--model", model, "--out", pairs, "--n", args.ioi_n, "--force"],
        pairs,
    )
    located = step(
        log,
        "ioi_locate",
        ["locate", "--model", model, "--pairs", pairs, "--out", work / "ioi-locate", "--force"],
        work / "ioi-locate" / "scores.csv",
    )
    step(
        log,
        "ioi_knockout",
        [
            "knockout",
            "--model",
            model,
            "--pairs",
            pairs,
            "--scores",
            work / "ioi-locate" / "scores.csv",
            "--out",
            work / "ioi-knockout",
            "--force",
        ],
        work / "ioi-knockout" / "knockout.csv",
    )
    heads = top_heads(work / "ioi-locate" / "scores.csv", args.top_k)
    if "ioi_attention" not in log:
        started = time.perf_counter()
        table = attention(model, pairs, heads[: args.attention_heads])
        log.record(
            "ioi_attention", {"seconds": round(time.perf_counter() - started, 1), "heads": table}
        )
    return {
        "locate_seconds": located["seconds"],
        "top_heads": heads,
        "knockout": knockout_points(work / "ioi-knockout" / "knockout.csv", args.top_k),
        "attention": log["ioi_attention"]["heads"],
    }


def answer(args: argparse.Namespace, log: dict, model: Path, work: Path) -> dict[str, Any]:
    data = work / "answer"
    step(
        log,
        "answer_data",
        [
            "data",
            "answer",
            "--model",
            model,
            "--benchmarks",
            args.benchmarks,
            "--out",
            data,
            "--force",
        ],
        data / "manifest.json",
    )
    located = step(
        log,
        "answer_locate",
        [
            "locate",
            "--model",
            model,
            "--pairs",
            data / "validation.jsonl",
            "--limit",
            args.locate_limit,
            "--out",
            work / "answer-locate",
            "--force",
        ],
        work / "answer-locate" / "scores.csv",
    )
    scores = work / "answer-locate" / "scores.csv"
    test_pairs = ["--pairs", data / "test.jsonl", "--limit", args.test_limit]
    knockout = ["knockout", "--model", model, *test_pairs, "--scores", scores]
    step(log, "answer_knockout", [*knockout, "--out", work / "answer-knockout", "--force"],
         work / "answer-knockout" / "knockout.csv")  # fmt: skip
    mask = work / "answer-mask.json"
    step(
        log,
        "answer_mask",
        ["export-mask", "--model", model, "--scores", scores, "--top-k", args.top_k, "--out", mask]
        + ["--force"],
        mask,
    )
    suite = ["--suite", args.benchmarks / "general_suite.jsonl", "--suite-limit", args.suite_limit]
    base_report = work / "answer-base-evaluate.json"
    step(log, "answer_evaluate_base",
         ["evaluate", "--model", model, *test_pairs, *suite, "--out", base_report],
         base_report)  # fmt: skip
    tuned = {"base": {"evaluation": json.loads(base_report.read_text())}}
    for mode, lr in (("spt", args.spt_lr), ("sft", args.sft_lr)):
        out = work / f"answer-{mode}"
        extra = ["--mask", mask] if mode == "spt" else []
        trained = step(
            log,
            f"answer_tune_{mode}",
            [
                "tune",
                "--model",
                model,
                "--data",
                data / "train_trl.jsonl",
                "--mode",
                mode,
                *extra,
                "--lr",
                lr,
                "--steps",
                args.steps,
                "--batch-size",
                args.batch_size,
                "--out",
                out,
                "--force",
            ],
            out / "config.json",
        )
        report = work / f"answer-{mode}-evaluate.json"
        neutral = ["--neutral-text", args.benchmarks / "neutral_text.jsonl", "--neutral-limit",
                   args.neutral_limit]  # fmt: skip
        step(log, f"answer_evaluate_{mode}",
             ["evaluate", "--model", out, "--reference", model, *test_pairs, *neutral, *suite,
              "--out", report], report)  # fmt: skip
        tuned[mode] = {
            "lr": lr,
            "train_seconds": trained["seconds"],
            "evaluation": json.loads(report.read_text()),
        }
    return {
        "locate_seconds": located["seconds"],
        "top_heads": top_heads(scores, args.top_k),
        "knockout": knockout_points(work / "answer-knockout" / "knockout.csv", args.top_k),
        "manifest": json.loads((data / "manifest.json").read_text()),
        "tuned": tuned,
    }


def copy_figures(name: str, work: Path) -> None:
    for behaviour in ("ioi", "answer"):
        for kind, source in (
            ("heatmap", work / f"{behaviour}-locate" / "heatmap.png"),
            ("knockout", work / f"{behaviour}-knockout" / "knockout.png"),
        ):
            if source.is_file():
                shutil.copyfile(source, ROOT / "figures" / f"{name}_{behaviour}_{kind}.png")


def _interval(metric: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    value, low, high = (metric[k] * scale for k in ("value", "low", "high"))
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] (n {metric['count']})"


def _heads(heads: list[dict[str, Any]], n: int = 8) -> str:
    return ", ".join(f"{h['layer']}.{h['head']} ({h['score']:+.3f})" for h in heads[:n])


def markdown(results: dict[str, Any]) -> str:
    """Return the report's tables: each number beside the step it came from."""
    ioi, answer, steps = results["ioi"], results.get("answer"), results["steps"]
    lines = [f"# Two behaviours on {results['model']}", ""]
    blocks = [("Indirect-object identification", ioi, "ioi")]
    blocks += [("Answer sycophancy", answer, "answer")] if answer else []
    for title, block, prefix in blocks:
        knock = block["knockout"]
        lines += [
            f"## {title}",
            "",
            f"- locate: {block['locate_seconds']:.0f} s (`{steps[prefix + '_locate']['command']}`)",
            f"- top heads (layer.head, score): {_heads(block['top_heads'])}",
            f"- knockout of {knock['k']} heads (`{steps[prefix + '_knockout']['command']}`): "
            f"share where the behaviour wins {knock['baseline_share']:.3f} -> top "
            f"{knock['top_share']:.3f}, random {knock['random_share_mean']:.3f} "
            f"(sd {knock['random_share_std']:.3f}, {knock['random_seeds']} sets); log-odds "
            f"{knock['log_odds_baseline']:.2f} -> top {knock['log_odds_top']:.2f}, random "
            f"{knock['log_odds_random_mean']:.2f} (X_c {knock['log_odds_counterfactual']:.2f})",
            "",
        ]
    lines += [
        "## END attention of IOI's top heads",
        "",
        "| head | to IO | to S (both) | pairs |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['layer']}.{r['head']} | {r['to_io']:.3f} | {r['to_s']:.3f} | {r['pairs']} |"
        for r in ioi["attention"]
    ]
    if not answer:
        return "\n".join([*lines, "", "Answer sycophancy: not run for this model."]) + "\n"
    lines += [
        "",
        "## Answer sycophancy: SPT and SFT on the TRL rows",
        "",
        "| model | lr | log-odds (incorrect vs correct) | correct wins | KL neutral | "
        "suite macro acc |",
        "|---|---|---|---|---|---|",
    ]
    for mode, entry in answer["tuned"].items():
        report = entry["evaluation"]
        metrics = report["metrics"]
        kl = metrics.get("kl_neutral")
        lines.append(
            f"| {mode} | {entry.get('lr', '')} | {_interval(metrics['decision_log_odds'])} | "
            f"{_interval(metrics['alternative_wins'])} | "
            f"{_interval(kl, digits=4) if kl else ''} | "
            f"{_interval(report['general_suite']['macro_acc'])} |"
        )
    lines += ["", "Commands: behaviours.json (`steps`)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = args.model_dir / "model"
    args.work.mkdir(parents=True, exist_ok=True)
    log = StepLog(args.work / "steps.json")
    results: dict[str, Any] = {
        "model": args.name,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    results["ioi"] = ioi(args, log, model, args.work)
    if not args.only_ioi:
        results["answer"] = answer(args, log, model, args.work)
    results["steps"] = dict(log)
    out = ROOT / "benchmarks" / "results" / args.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "behaviours.json").write_text(json.dumps(results, indent=2) + "\n")
    copy_figures(args.name, args.work)
    text = markdown(results)
    (out / "behaviours.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
