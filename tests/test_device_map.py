"""``--device-map``: a model split by accelerate between the CPU and the disk (what this machine
has; the same hooks carry a GPU split) gives locate, knockout and evaluate the one-device
results, and bad big-model options are refused in one line before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.errors import SptInterpError
from spt_interp.knockout.ablation import ablated
from spt_interp.model import DeviceMapRequest, load_model, resolve_device_map
from spt_interp.model.dispatch import parse_max_memory, plan_device_map

# Float comparisons whose rounding may depend on the kernels' paths: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric


def split_budget(folder: Path) -> str:
    """A CPU budget of 80% of the weights: accelerate keeps the embedding and a first block
    (beside room for its largest block), offloads the rest to disk (the tests check it did)."""
    model = load_model(folder, hooks=False)
    size = sum(p.numel() * p.element_size() for p in model.hf_parameters.values())
    return f"cpu={size * 8 // 10 // 1024}KiB"


@pytest.fixture(scope="module")
def budget(targets_llama_dir):
    return split_budget(targets_llama_dir)


def split_model(folder: Path, budget: str):
    request = resolve_device_map("auto", budget, None, "auto")
    return load_model(folder, device_map=request)


def zeroed_hook_z(heads):
    """Return bridge hooks that zero each (layer, head)'s hook_z at every position."""

    def zero(z, hook, head):
        z[:, :, head] = 0.0
        return z

    return [
        (f"blocks.{layer}.attn.hook_z", lambda z, hook, head=head: zero(z, hook, head))
        for layer, head in heads
    ]


def scale(tensor: torch.Tensor) -> float:
    return 1.0 + tensor.abs().max().item()


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "gpt2"])
def test_a_cpu_disk_split_computes_what_one_device_does(tiny_model_dirs, architecture):
    folder = tiny_model_dirs[architecture]
    split, whole = split_model(folder, split_budget(folder)), load_model(folder)
    placed = set(split.hf_model.hf_device_map.values())
    assert placed == {"cpu", "disk"} and split.dispatched and not whole.dispatched
    assert split.device == torch.device("cpu")
    assert any(p.is_meta for p in split.hf_parameters.values())  # really offloaded
    tokens = torch.randint(5, 200, (2, 9))
    with torch.no_grad():
        expected = whole.logits(tokens)
        # Same operations on the same values; only a kernel's path may reorder a sum.
        bound = 1e-5 * scale(expected)
        assert (split.logits(tokens) - expected).abs().max().item() <= bound
        plain = split.plain_model(tokens).logits
        assert (plain - whole.plain_model(tokens).logits).abs().max().item() <= bound
        generated = split.plain_model.generate(tokens, max_new_tokens=6, do_sample=False)
        reference = whole.plain_model.generate(tokens, max_new_tokens=6, do_sample=False)
        # Knockout's zero ablation (the twin's head-output site) and the hooked reference (the
        # bridge's hook_z) act on the split model as on the whole one.
        heads = [(0, 1), (1, 0)]
        with ablated(split, heads, method="zero", position="all"):
            split_ablated = (
                split.plain_model(tokens).logits,
                split.run_with_hooks(tokens, zeroed_hook_z(heads)),
            )
        with ablated(whole, heads, method="zero", position="all"):
            whole_ablated = (
                whole.plain_model(tokens).logits,
                whole.run_with_hooks(tokens, zeroed_hook_z(heads)),
            )
    assert torch.equal(generated, reference)
    assert (whole_ablated[0] - expected).abs().max().item() > 1e3 * bound  # it does ablate
    for ours, theirs in zip(split_ablated, whole_ablated, strict=True):
        assert (ours - theirs).abs().max().item() <= bound


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_locate_on_a_split_model_gives_the_one_device_scores(
    targets_llama_dir, budget, sample_data_file, tmp_path
):
    common = [
        "locate",
        "--model",
        targets_llama_dir,
        "--data",
        sample_data_file,
        "--no-png",
        "--top-k",
        "3",
    ]
    whole = run(*common, "--out", tmp_path / "whole", "--device", "cpu")
    assert whole.exit_code == 0, whole.output
    split = run(*common, "--out", tmp_path / "split", "--device-map", "auto",
                "--max-memory", budget)  # fmt: skip
    assert split.exit_code == 0, split.output
    ranking = json.loads((tmp_path / "split" / "ranking.json").read_text())
    assert ranking["settings"]["engine"] == "hf"
    assert set(ranking["device_map"].values()) == {"cpu", "disk"}
    ours = pd.read_csv(tmp_path / "split" / "scores.csv")
    theirs = pd.read_csv(tmp_path / "whole" / "scores.csv")
    # The same engine on one device and split: the split changes nothing but rounding.
    gap = (ours["score"] - theirs["score"]).abs().max()
    assert gap <= 1e-5 * (1 + theirs["score"].abs().max())
    assert list(ours["rank"]) == list(theirs["rank"])


def test_knockout_and_evaluate_on_a_split_model_equal_one_device(
    targets_llama_dir, budget, sample_data_file, tmp_path
):
    scores = tmp_path / "scores.csv"
    rows = [{"layer": layer, "head": head, "score": -float(layer + head), "rank": 0}
            for layer in range(2) for head in range(4)]  # fmt: skip
    pd.DataFrame(rows).to_csv(scores, index=False)
    split_options = ["--device-map", "auto", "--max-memory", budget]
    for placement, extra in (("whole", ["--device", "cpu"]), ("split", split_options)):
        out = tmp_path / f"k_{placement}"
        result = run("knockout", "--model", targets_llama_dir, "--data", sample_data_file,
                     "--scores", scores, "--k", "1,2", "--no-png", "--out", out,
                     *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
        result = run("evaluate", "--model", targets_llama_dir, "--data", sample_data_file,
                     "--max-new-tokens", "6", "--out", tmp_path / f"e_{placement}.json",
                     *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
    ours = pd.read_csv(tmp_path / "k_split" / "knockout.csv")
    theirs = pd.read_csv(tmp_path / "k_whole" / "knockout.csv")
    assert len(theirs) > 0 and list(ours.columns) == list(theirs.columns)
    assert ours[["selection", "k", "seed", "heads"]].equals(
        theirs[["selection", "k", "seed", "heads"]]
    )
    for column in ("apology_share", "log_odds"):
        gap = (ours[column] - theirs[column]).abs().max()
        assert gap <= 1e-5 * (1 + theirs[column].abs().max()), column
    split = json.loads((tmp_path / "e_split.json").read_text())
    whole = json.loads((tmp_path / "e_whole.json").read_text())
    assert set(split["device_map"].values()) == {"cpu", "disk"} and whole["device_map"] is None
    assert split["metrics"].keys() == whole["metrics"].keys()
    for name, metric in whole["metrics"].items():  # rates of generated replies: exact
        assert split["metrics"][name]["count"] == metric["count"], name
        assert split["metrics"][name]["value"] == pytest.approx(metric["value"], abs=1e-6), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device-map", "everywhere"], "--device-map 'everywhere': not one of auto"),
        (["--max-memory", "cpu=1GiB"], "--max-memory and --offload-folder need --device-map"),
        (["--device-map", "auto", "--max-memory", "cpu:1GiB"], "expected DEVICE=SIZE"),
        (["--device-map", "auto", "--max-memory", "gpu=1GiB"], "device 'gpu' is not 0, 1"),
        (["--device-map", "auto", "--device", "cpu"], "--device cpu and --device-map: give one"),
        (["--device-map", "auto", "--engine", "fast"], "--engine fast is now --engine hf"),
        (
            ["--device-map", "auto", "--max-memory", "cpu=1KiB", "--offload-folder", __file__],
            "--offload-folder",
        ),
    ],
)
def test_bad_big_model_options_are_refused_in_one_line(
    targets_llama_dir, sample_data_file, tmp_path, args, message
):
    result = run("locate", "--model", targets_llama_dir, "--data", sample_data_file,
                 "--out", tmp_path / "o", "--no-png", *args)  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "o" / "scores.csv").exists()


def test_max_memory_is_read_as_accelerate_takes_it():
    assert parse_max_memory("0=70GiB, 1=60GiB,cpu=200GiB") == {0: "70GiB", 1: "60GiB",
                                                              "cpu": "200GiB"}  # fmt: skip
    assert parse_max_memory(None) is None
    assert resolve_device_map(None, None, None, "cuda") is None


def test_a_plan_mixing_a_gpu_with_offload_is_refused_before_loading(targets_llama_dir, monkeypatch):
    from transformers import AutoConfig
    from transformers.integrations import accelerate as hf_accelerate

    mixed = {"model.embed_tokens": 0, "model.layers": "cpu", "model.norm": "disk", "lm_head": 0}
    monkeypatch.setattr(hf_accelerate, "_get_device_map", lambda *args: dict(mixed))
    config = AutoConfig.from_pretrained(targets_llama_dir)
    with pytest.raises(SptInterpError, match="does not fit the GPUs .part goes to cpu, disk"):
        plan_device_map(config, torch.float32, DeviceMapRequest("auto"))
