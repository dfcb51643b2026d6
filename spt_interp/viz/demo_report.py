"""Render the demo's report.md and its before/after bar chart from the demo summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from spt_interp.common.atomic import write_text_atomic

MODE_NAMES = {"base": "base", "sft": "SFT", "spt": "SPT", "random": "random-K SPT"}
MODE_NAMES["lora-heads"] = "LoRA on heads"
MODE_NAMES["lora"] = "LoRA (whole model)"
TABLE_COLUMNS = [
    ("confidence", "confidence", "{:.3f}"),
    ("truthfulness", "truthfulness", "{:.3f}"),
    ("accuracy_before", "acc. before", "{:.3f}"),
    ("accuracy_after", "acc. after", "{:.3f}"),
    ("general_accuracy", "general acc.", "{:.3f}"),
    ("suite_acc", "suite acc.", "{:.3f}"),
    ("kl", "KL shift", "{:.4f}"),
    ("trainable_parameters", "trainable params", "{:,.0f}"),
    ("train_seconds", "train s", "{:.1f}"),
]


def _cell(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return pattern.format(value)


def results_table(rows: list[dict[str, Any]]) -> str:
    """Return the paper-style markdown table: one row per mode and selection."""
    # A column no row measured (the suite, without --suite) is left out, not shown as dashes.
    columns = [c for c in TABLE_COLUMNS if any(c[0] in row for row in rows)]
    header = ["model", "selection", "lr", *[title for _, title, _ in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            MODE_NAMES.get(row["mode"], row["mode"]),
            row.get("selection") or "",
            _cell(row.get("lr"), "{:.2g}"),
            *[_cell(row.get(key), pattern) for key, _, pattern in columns],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def before_after_figure(rows: list[dict[str, Any]]):
    """Return a grouped bar chart of confidence, truthfulness and accuracies per model."""
    import plotly.graph_objects as go

    chosen = [r for r in rows if r.get("selection") in ("base", "chosen lr")]
    metrics = [(k, t) for k, t, _ in TABLE_COLUMNS[:5]]
    figure = go.Figure(
        [
            go.Bar(
                name=MODE_NAMES.get(r["mode"], r["mode"]),
                x=[title for _, title in metrics],
                y=[r.get(key) for key, _ in metrics],
            )
            for r in chosen
        ]
    )
    figure.update_layout(
        barmode="group",
        title="Before and after tuning (each mode at its chosen learning rate)",
        yaxis={"range": [0, 1.05], "title": "share"},
        template="plotly_white",
    )
    return figure


def write_report(root: Path, summary: dict[str, Any]) -> Path:
    """Write root/report.md (and root/before_after.html/.png); return the report's path."""
    from spt_interp.viz.plots import save_figure

    figure_files = save_figure(before_after_figure(summary["table"]), root, "before_after")
    summary["files"]["before_after"] = figure_files
    heads = ", ".join(f"L{h['layer']}.H{h['head']}" for h in summary["top_heads"])
    knockout_lines = [
        f"| {k} | {v['baseline_share']:.3f} | {v['top_share']:.4f} | "
        f"{v['random_share_mean']:.4f} ± {v['random_share_std']:.4f} | {v['top_cut']:.2f} | "
        f"{v['random_cut']:.2f} |"
        for k, v in summary["knockout"].items()
    ]
    timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary["timings"].items())

    def link(files: dict[str, str], kind: str) -> str:
        path = files.get("png") or files.get("html")
        return f"[{kind}]({Path(path).relative_to(root)})" if path else kind

    locate, knockout = summary["files"]["locate"], summary["files"]["knockout"]
    g = summary["geometry"]
    text = f"""# spt-interp demo report

Created {summary["created"]} on `{summary["model"]}` ({g["architecture"]}, {g["n_layers"]} layers
x {g["n_heads"]} heads, {g["n_kv_heads"]} key/value heads, d_model {g["d_model"]}).
Data: {summary["counts"]["train"]} training, {summary["counts"]["test"]} test and
{summary["counts"]["general"]} general-ability records. Stage times: {timings}, on
{summary.get("device", "cpu")}.

## Results

{results_table(summary["table"])}

Protocol: {summary["protocol"]}.
Confidence = 1 - apology rate and truthfulness = still correct after the challenge, both over
items answered correctly first (Chen et al. 2024); KL shift = mean next-token KL(base || tuned)
on {summary.get("kl_text", "general text")}.
Figures: {link(figure_files, "before/after bar chart")}.

## Located heads

Path patching (X_c head output patched into X_r at END, other heads frozen), metric: change of
the log-odds log p(syc) - log p(anti). Top heads: {heads}.
Figures: {link(locate, "heatmap")}. Scores: [scores.csv](locate/scores.csv),
[ranking.json](locate/ranking.json).

## Knockout (mean ablation with X_c means, at END)

| K | F baseline | F top-K | F random-K (mean ± sd) | cut top-K | cut random-K |
|---|---|---|---|---|---|
{chr(10).join(knockout_lines)}

Figure: {link(knockout, "knockout curve")}. Points: [knockout.csv](knockout/knockout.csv).
Mask: [mask.json](mask.json) ({", ".join(summary["mask"]["components"])} slices of
{len(summary["mask"]["heads"])} heads).
"""
    return write_text_atomic(root / "report.md", text)
