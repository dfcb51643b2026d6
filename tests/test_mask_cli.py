"""The export-mask command: the mask it writes, components, refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.mask import HeadMask
from spt_interp.mask.scores import file_hash
from spt_interp.model import load_model


@pytest.fixture()
def scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    rows = [
        {"layer": l_, "head": h, "score": (l_ * 4 + h) * 0.1, "method": "path_patching",
         "metric": "log_odds"}
        for l_ in range(2) for h in range(4)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_export_mask_top_k(tmp_path, tiny_model_dirs, scores_csv):
    out = tmp_path / "mask.json"
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    result = run("export-mask", "--model", tiny_model_dirs["llama"], "--scores", scores_csv,
                 "--top-k", "3", "--out", out, "--data", data)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 heads (q,o): L1.H3 L1.H2 L1.H1" in result.output
    mask = HeadMask.load(out)
    hooked = load_model(tiny_model_dirs["llama"])
    mask.validate(hooked)
    assert mask.source.method == "path_patching" and mask.source.metric == "log_odds"
    assert mask.source.data_file_hash == file_hash(data)
    assert [h.score for h in mask.heads] == pytest.approx([0.7, 0.6, 0.5])
    again = run("export-mask", "--model", tiny_model_dirs["llama"], "--scores", scores_csv,
                "--top-k", "3", "--out", out)  # fmt: skip
    assert again.exit_code == 2 and "exists; pass --force" in again.output


def test_export_mask_fraction_and_components(tmp_path, tiny_model_dirs, scores_csv):
    out = tmp_path / "mask.json"
    result = run("export-mask", "--model", tiny_model_dirs["gpt2"], "--scores", scores_csv,
                 "--top-frac", "0.5", "--components", "q,o", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["components"] == ["q", "o"] and len(data["heads"]) == 4
    assert data["model"]["architecture"] == "GPT2LMHeadModel"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--top-k", "2", "--top-frac", "0.5"], "exactly one of --top-k, --top-frac or --heads"),
        (["--top-k", "9"], "between 1 and the 8 heads"),
        (["--heads", "L5.H0"], "L5.H0 are not in the scores table"),
        (["--top-k", "2", "--components", "q,z"], "components must be a non-empty subset"),
    ],
)
def test_export_mask_refusals(tmp_path, tiny_model_dirs, scores_csv, extra, message):
    result = run("export-mask", "--model", tiny_model_dirs["gpt2"], "--scores", scores_csv,
                 "--out", tmp_path / "m.json", *extra)  # fmt: skip
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "qwen2", "mistral"])
def test_the_weight_free_signature_is_the_loaded_models(tiny_model_dirs, architecture):
    from spt_interp.mask import ModelSignature

    folder = tiny_model_dirs[architecture]
    assert ModelSignature.of_folder(folder) == ModelSignature.of(load_model(folder))


def test_the_weight_free_signature_of_the_organism(tmp_path):
    from spt_interp.mask import ModelSignature
    from spt_interp.organism import ASSET_DIR

    loaded = ModelSignature.of(load_model(ASSET_DIR))
    assert ModelSignature.of_folder(ASSET_DIR) == loaded
    assert (loaded.n_layers, loaded.n_heads, loaded.n_kv_heads) == (6, 8, 2)


def test_export_mask_does_not_read_the_weights(tmp_path, tiny_model_dirs, scores_csv):
    import shutil

    # The same folder with its weights file emptied: only the config and shapes are read.
    folder = tmp_path / "llama"
    shutil.copytree(tiny_model_dirs["llama"], folder)
    for weights in folder.glob("*.safetensors"):
        weights.write_bytes(b"")
    out = tmp_path / "mask.json"
    result = run("export-mask", "--model", folder, "--scores", scores_csv, "--top-k", "2",
                 "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    HeadMask.load(out).validate(load_model(tiny_model_dirs["llama"]))
