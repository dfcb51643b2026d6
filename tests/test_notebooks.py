"""The four notebooks run top to bottom (the first three on the organism, the fourth on the
packaged SmolLM2 with 8 IOI pairs instead of its 64), and their results hold up.

Each notebook is executed with nbclient in a fresh kernel started from this interpreter (the
ipykernel "python3" spec that ipykernel itself provides, so no kernelspec has to be installed and
no kernel from another environment is picked up). A check cell appended to the notebook's copy
reads the kernel's variables and prints them as JSON, which the test then compares with
independent recomputations. The committed copies are also checked to carry their outputs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = (
    "01_head_heatmaps",
    "02_interactive_knockout",
    "03_pinpoint_tuning",
    "04_your_own_behaviour",
)
MARKER = "NOTEBOOK-CHECK "

CHECKS = {
    "01_head_heatmaps": """
ranks = scores.matrix("rank")
print(MARKER + json.dumps({
    "n_heads": len(scores.table),
    "gap": scores.baseline["gap"],
    "x_r": scores.baseline["X_r"]["mean"],
    "x_c": scores.baseline["X_c"]["mean"],
    "spearman": dict(zip(agreement["method"], agreement["spearman_vs_path"])),
    "share": share.tolist(),
    "share_changed": share_changed.tolist(),
    "top_heads": [list(h) for h in top_heads],
    "summary": attention_summary[challenge_column].tolist()[:3],
}))
""",
    "02_interactive_knockout": """
top4 = curve[(curve.selection == "top") & (curve.k == 4)].iloc[0]
print(MARKER + json.dumps({
    "summary": summary.to_dict("records"),
    "session_heads": [list(h) for h in session.selected],
    "session_share": session.current.apology_share,
    "session_log_odds": session.current.log_odds,
    "curve_top4_share": float(top4.apology_share),
    "curve_top4_log_odds": float(top4.log_odds),
    "readings": readings,
    "ranking": [list(h) for h in ranking[:4]],
    "exported_heads": [list(h) for h in reloaded.head_set],
}))
""",
    "04_your_own_behaviour": """
print(MARKER + json.dumps({
    "n_pairs": len(pairs),
    "aligned": all(p.token_aligned for p in pairs),
    "summary": summary.to_dict("records"),
    "top_heads": [list(h) for h in top_heads],
    "mask_heads": [list(h) for h in mask.head_set],
    "attention": attention[["layer", "head", "behaviour", "alternative"]].to_dict("records"),
}))
""",
    "03_pinpoint_tuning": """
print(MARKER + json.dumps({
    "table": table.to_dict("records"),
    "spt": {key: spt_record[key] for key in ("trainable_parameters", "verification", "mask")},
    "mask_heads": [list(h) for h in mask.head_set],
}, default=str))
""",
}


def run_notebook(name: str, workdir: Path) -> tuple[nbformat.NotebookNode, dict]:
    """Return the executed notebook and the values its appended check cell printed."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    check = f"import json\nMARKER = {MARKER!r}\n" + CHECKS[name]
    notebook.cells.append(nbformat.v4.new_code_cell(check))
    # kernel_dirs=[]: only ipykernel's own spec, which launches sys.executable (this venv).
    manager = KernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[])
    )
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=600,
        resources={"metadata": {"path": str(workdir)}},
        store_widget_state=False,
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    printed = "".join(
        output.get("text", "")
        for output in notebook.cells[-1].outputs
        if output.output_type == "stream"
    )
    line = next(row for row in printed.splitlines() if row.startswith(MARKER))
    return notebook, json.loads(line[len(MARKER) :])


def figure_outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [
        output.data
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "display_data"
        and "application/vnd.plotly.v1+json" in output.get("data", {})
    ]


def test_kernel_runs_this_interpreter():
    spec = KernelSpecManager(kernel_dirs=[]).get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable


def test_head_heatmaps_notebook(tmp_path):
    notebook, values = run_notebook("01_head_heatmaps", tmp_path)
    assert values["n_heads"] == 48
    # The organism apologizes after the challenge and not after the counterfactual.
    assert values["x_r"] > 0 > values["x_c"]
    assert values["gap"] == pytest.approx(values["x_r"] - values["x_c"])
    assert values["spearman"]["path"] == pytest.approx(1.0)
    assert all(-1 <= rho <= 1 for rho in values["spearman"].values())
    # The printed group means are the means of the per-head matrix they summarize.
    share = values["share"]
    top = {tuple(h) for h in values["top_heads"]}
    top_mean = sum(share[layer][head] for layer, head in top) / len(top)
    rest = [
        share[layer][head] for layer in range(6) for head in range(8) if (layer, head) not in top
    ]
    assert values["summary"][0] == pytest.approx(top_mean)
    assert values["summary"][1] == pytest.approx(sum(rest) / len(rest))
    assert 0 < values["summary"][2] < 1
    for row, changed in zip(share, values["share_changed"], strict=True):
        for whole, part in zip(row, changed, strict=True):
            assert 0 <= part <= whole + 1e-6 and whole <= 1 + 1e-6  # "don't" is in the challenge
    assert len(figure_outputs(notebook)) == 3


def test_interactive_knockout_notebook(tmp_path):
    notebook, values = run_notebook("02_interactive_knockout", tmp_path)
    by_k = {row["k"]: row for row in values["summary"]}
    # Knocking out the top heads lowers the apology share, and more than random heads do.
    assert by_k[8]["top_cut"] > 0
    assert by_k[8]["top_cut"] > by_k[8]["random_cut"]
    # The explorer's session (top 4 set by clicks and set_heads) matches the curve's top-4 point.
    assert sorted(values["session_heads"]) == sorted(values["ranking"])
    assert values["session_share"] == pytest.approx(values["curve_top4_share"], abs=1e-6)
    assert values["session_log_odds"] == pytest.approx(values["curve_top4_log_odds"], abs=1e-5)
    assert values["readings"][4]["log_odds"] == pytest.approx(values["curve_top4_log_odds"])
    assert sorted(values["exported_heads"]) == sorted(values["ranking"])
    assert len(figure_outputs(notebook)) == 1


def test_pinpoint_tuning_notebook(tmp_path):
    notebook, values = run_notebook("03_pinpoint_tuning", tmp_path)
    rows = {(row["run"], row["lr"] if row["lr"] == row["lr"] else None): row
            for row in values["table"]}  # fmt: skip
    base = rows[("base", None)]
    spt = next(row for (run, _), row in rows.items() if run == "spt")
    # SPT on the located heads makes the organism stand by its answers far more often.
    assert spt["confidence"] > base["confidence"] + 0.3
    assert spt["truthfulness"] > base["truthfulness"] + 0.3
    assert base["kl_shift"] == pytest.approx(0.0, abs=1e-6)
    assert spt["kl_shift"] > 0
    # Only the 4 heads' q and o slices trained: 2 x d_head 16 x d_model 128 x 4 heads.
    assert values["spt"]["trainable_parameters"] == 2 * 16 * 128 * 4
    assert values["spt"]["verification"]["outside_mask_identical"] is True
    trained = [[h["layer"], h["head"]] for h in values["spt"]["mask"]["heads"]]
    assert sorted(trained) == sorted(values["mask_heads"])
    assert len(figure_outputs(notebook)) == 1


def test_your_own_behaviour_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("SPT_NOTEBOOK_PAIRS", "8")
    notebook, values = run_notebook("04_your_own_behaviour", tmp_path)
    assert values["n_pairs"] == 8 and values["aligned"]
    by_k = {row["k"]: row for row in values["summary"]}
    # The located heads carry the IO preference: knocking out the top 8 cuts it more than any
    # random 8 on average.
    assert by_k[8]["top_cut"] > by_k[8]["random_cut"]
    assert values["mask_heads"] == values["top_heads"]
    for row in values["attention"]:
        assert 0 <= row["behaviour"] and 0 <= row["alternative"]
        assert row["behaviour"] + row["alternative"] <= 1 + 1e-5  # distinct positions of one row
    assert len(figure_outputs(notebook)) == 3


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_import_only_the_top_level_package(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    lines = [line.strip() for cell in notebook.cells if cell.cell_type == "code"
             for line in cell.source.splitlines()]  # fmt: skip
    ours = [line for line in lines if re.match(r"(from|import) spt_interp\b", line)]
    assert ours == ["import spt_interp as spt"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_carry_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    # Every figure carries a static image for viewers without JavaScript (GitHub).
    figures = figure_outputs(notebook)
    assert figures and all("image/png" in data for data in figures)
