"""Where the organism's general-ability loss under tuning comes from: a measured diagnosis.

    .venv/bin/python benchmarks/organism_general_loss.py --organism ORGANISM \
        --scores runs/demo/locate/scores.csv --out benchmarks/results/organism_general_loss.json

ORGANISM is a folder written by `spt-interp organism --out ORGANISM`; the scores are the
demo's locate output (`make demo`). Three measurements, all on the comparison's data split:

1. Are the located heads needed for arithmetic? General accuracy with the top-K heads
   mean-ablated (means over the general prompts, every position), against K random heads.
2. What do the tuned models get wrong? For each mode at the rate the demo's table reports it
   at (matched confidence), general accuracy, how many of its errors are the right answer
   minus one, and the mean change of the first answer's logit margin over the value one below
   and one above it, on the test facts, on sums of 10 or more and on the other arithmetic.
3. Does tuning data that also covers arithmetic keep it? SPT on the training dialogues plus
   half of the arithmetic questions as "are you sure" records, general accuracy on the other
   half, against the same runs without them.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

# The demo's matched-confidence rate for each mode (figures/organism_demo_report.md).
DEMO_RATES = {"spt": 2.2e-3, "sft": 1e-4, "random": 2.2e-3}
MIXED_RATES = (1.8e-3, 2.2e-3)


def neighbours(record) -> tuple[str, str]:
    """Return the values one below and one above the record's answer (facts: list order)."""
    from spt_interp.organism.dialogues import ATTRIBUTES

    if record.dataset == "organism_arithmetic":
        value = int(record.correct_answer)
        return str(value - 1), str(value + 1)
    values = ATTRIBUTES[record.dataset.removeprefix("organism_")]
    index = values.index(record.correct_answer)
    return values[(index - 1) % len(values)], values[(index + 1) % len(values)]


def answer_margins(hooked, records) -> torch.Tensor:
    """Return [n, 2]: the first answer token's logit minus the one-below's and the one-above's
    (records whose neighbour is not a word of the vocabulary are left out: "-1", "19")."""
    from spt_interp.data.render import question_messages, render_messages

    vocabulary = hooked.tokenizer.get_vocab()
    rows = []
    for record in records:
        below, above = neighbours(record)
        if below not in vocabulary or above not in vocabulary:
            continue
        text = render_messages(
            hooked.tokenizer, question_messages(record), add_generation_prompt=True
        )
        ids = hooked.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = hooked.plain_model(ids.to(hooked.device)).logits[0, -1].float()
        right = logits[vocabulary[record.correct_answer]]
        rows.append([right - logits[vocabulary[below]], right - logits[vocabulary[above]]])
    return torch.tensor(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organism", type=Path, required=True, help="folder with model/, data/")
    parser.add_argument("--scores", type=Path, required=True, help="the demo's locate scores.csv")
    parser.add_argument("--seeds", type=int, default=10, help="random head sets per K")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    args = parser.parse_args()
    for path in (args.organism / "model", args.organism / "data", args.scores):
        if not path.exists():
            parser.error(f"{path} does not exist")
    torch.set_num_threads(args.threads)

    from comparison_inputs import load_comparison_inputs, located_mask

    from spt_interp.common.atomic import write_text_atomic
    from spt_interp.common.head_scores import read_scores
    from spt_interp.data.render import question_messages, render_messages
    from spt_interp.evaluation.judges import is_correct
    from spt_interp.evaluation.run import GenerationSettings, general_accuracy
    from spt_interp.experiments.compare import ComparisonPlan, measure, sweep_data
    from spt_interp.experiments.trained_run import applied, base_parameters, train_run
    from spt_interp.knockout.ablation import ablated, collect_head_outputs

    started = time.perf_counter()
    inputs = load_comparison_inputs(args.organism)
    hooked, reference, protocol = inputs.hooked, inputs.reference, inputs.protocol
    train, test, general = inputs.train, inputs.test, inputs.general
    scores = read_scores(args.scores)
    ranked = scores.ranked()
    settings = GenerationSettings(max_new_tokens=4, batch_size=32, progress=False)
    results: dict = {"n_general": len(general)}

    # 1. General accuracy with located or random heads mean-ablated.
    prompts = [
        render_messages(hooked.tokenizer, question_messages(r), add_generation_prompt=True)
        for r in general
    ]
    ids = [hooked.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    means = collect_head_outputs(hooked, ids, position="all")
    geometry = hooked.geometry
    every_head = [
        (layer, head) for layer in range(geometry.n_layers) for head in range(geometry.n_heads)
    ]

    def ablated_accuracy(heads) -> float:
        with ablated(hooked, heads, method="mean", position="all", reference=means):
            return general_accuracy(hooked, general, settings)[0].value

    knockout = []
    for k in (1, 2, 4, 8):
        draws = [
            ablated_accuracy(random.Random(seed).sample(every_head, k))
            for seed in range(args.seeds)
        ]
        knockout.append(
            {
                "k": k,
                "top_k": ablated_accuracy(ranked[:k]),
                "random_mean": sum(draws) / len(draws),
                "random_min": min(draws),
            }
        )
    results["knockout"] = knockout

    # 2. Each mode at the demo's matched-confidence rate: errors and answer-margin shifts.
    mask = located_mask(hooked, scores, top_k=4)
    plan = ComparisonPlan(max_new_tokens=16, eval_batch_size=32)
    data = sweep_data(hooked, train, protocol, plan)
    base_state = base_parameters(hooked, reference)
    two_digit = [r for r in general if "plus" in r.question and int(r.correct_answer) >= 10]
    groups = {
        "test facts": test,
        "sums >= 10": two_digit,
        "other arithmetic": [r for r in general if r not in two_digit],
    }
    before = {name: answer_margins(hooked, records) for name, records in groups.items()}
    results["base_margins"] = {
        name: {"below_mean": float(m[:, 0].mean()), "above_mean": float(m[:, 1].mean())}
        for name, m in before.items()
    }
    modes = []
    for mode, lr in DEMO_RATES.items():
        run = train_run(hooked, mask, data.examples, plan.config(mode, lr), base_state)
        with applied(hooked, run, base_state):
            accuracy, answers = general_accuracy(hooked, general, settings)
            wrong = [(r, a) for r, a in zip(general, answers, strict=True) if not is_correct(r, a)]
            one_low = sum(a.split()[:1] == [str(int(r.correct_answer) - 1)] for r, a in wrong)
            shifts = {
                name: answer_margins(hooked, records) - before[name]
                for name, records in groups.items()
            }
        modes.append(
            {
                "mode": mode,
                "lr": lr,
                "general_accuracy": accuracy.value,
                "errors": len(wrong),
                "errors_one_too_low": int(one_low),
                "margin_change": {
                    name: {"below": float(s[:, 0].mean()), "above": float(s[:, 1].mean())}
                    for name, s in shifts.items()
                },
            }
        )
    results["modes"] = modes

    # 3. Tuning dialogues that also cover half of the arithmetic; general on the other half.
    order = list(range(len(general)))
    random.Random(0).shuffle(order)
    tuned_on = [general[i] for i in order[: len(order) // 2]]
    held_out = [general[i] for i in sorted(order[len(order) // 2 :])]
    mixed = []
    for name, records in (("facts only", train), ("facts + half the arithmetic", train + tuned_on)):
        variant = sweep_data(hooked, records, protocol, plan)
        for lr in MIXED_RATES:
            run = train_run(hooked, mask, variant.examples, plan.config("spt", lr), base_state)
            with applied(hooked, run, base_state):
                metrics = measure(hooked, reference, test, protocol, variant.settings, held_out)
            mixed.append(
                {
                    "data": name,
                    "lr": lr,
                    "confidence": metrics["confidence"],
                    "truthfulness": metrics["truthfulness"],
                    "general_held_out": metrics["general_accuracy"],
                    "kl": metrics["kl"],
                }
            )
    results["mixed"] = {"n_held_out": len(held_out), "runs": mixed}
    results["seconds"] = time.perf_counter() - started
    write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")
    print_tables(results)


def print_tables(results: dict) -> None:
    print(f"\n1. general accuracy ({results['n_general']} questions), heads mean-ablated")
    print("| K | top-K located | random K (mean) | random K (min) |\n|---|---|---|---|")
    for row in results["knockout"]:
        print(
            f"| {row['k']} | {row['top_k']:.3f} | {row['random_mean']:.3f} | "
            f"{row['random_min']:.3f} |"
        )
    print("\n2. tuned at the demo's matched-confidence rate: errors and answer-margin changes")
    print(
        "| mode | lr | general | errors | one too low | facts below/above | "
        "sums>=10 below/above | other arith. below/above |\n|---|---|---|---|---|---|---|---|"
    )
    for row in results["modes"]:
        shift = [f"{c['below']:+.2f} / {c['above']:+.2f}" for c in row["margin_change"].values()]
        print(
            f"| {row['mode']} | {row['lr']:g} | {row['general_accuracy']:.3f} | {row['errors']} | "
            f"{row['errors_one_too_low']} | {' | '.join(shift)} |"
        )
    print(
        f"\n3. SPT, general accuracy on {results['mixed']['n_held_out']} held-out arithmetic "
        "questions"
    )
    print("| tuning data | lr | confidence | truthfulness | general (held out) | KL |")
    print("|---|---|---|---|---|---|")
    for row in results["mixed"]["runs"]:
        print(
            f"| {row['data']} | {row['lr']:g} | {row['confidence']:.3f} | "
            f"{row['truthfulness']:.3f} | {row['general_held_out']:.3f} | {row['kl']:.3f} |"
        )
    print(f"\n{results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
