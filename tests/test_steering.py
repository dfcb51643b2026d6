"""Head steering: vectors against a hand computation on the bridge, alpha 0 is the base bit for
bit, steering equals adding to hook_z by hand, and a file for another model is refused."""

from __future__ import annotations

import json

import pytest
import torch

from spt_interp.data import PromptPair
from spt_interp.errors import SptInterpError
from spt_interp.model import load_model
from spt_interp.model.loading import position_ids
from spt_interp.tuning.steering import HeadSteering, steering_vectors

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric

HEADS = [(0, 1), (1, 0), (1, 3)]


def pairs_of_lengths(n: int, seed: int = 0) -> list[PromptPair]:
    """Random pairs of different lengths (left padding in a batch), X_c one token changed."""
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for index in range(n):
        size = 9 - index % 3
        ids_r = torch.randint(10, 300, (size,), generator=generator).tolist()
        ids_c = list(ids_r)
        ids_c[size // 2] = (ids_c[size // 2] + 7) % 290 + 10
        pairs.append(PromptPair(index, f"r{index}", "", "", ids_r, ids_c, True))
    return pairs


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    return load_model(tiny_model_dirs["llama"])


def test_vectors_are_the_mean_end_difference_of_hook_z_per_pair(llama):
    pairs = pairs_of_lengths(5)
    ours = steering_vectors(llama, pairs, HEADS, batch_size=2)

    def end_z(ids: list[int]) -> list[torch.Tensor]:  # one prompt alone: no padding at all
        _, cache = llama.run_with_cache(torch.tensor([ids]))
        return [cache[f"blocks.{layer}.attn.hook_z"][0, -1].double() for layer in range(2)]

    expected = torch.zeros(len(HEADS), llama.geometry.d_head, dtype=torch.float64)
    for pair in pairs:
        r, c = end_z(pair.prompt_ids), end_z(pair.counterfactual_ids)
        for index, (layer, head) in enumerate(HEADS):
            expected[index] += c[layer][head] - r[layer][head]
    expected /= len(pairs)
    assert expected.abs().max() > 1e-3  # the pairs move these heads: not a vacuous equality
    torch.testing.assert_close(ours.double(), expected, atol=1e-6, rtol=0)


def logits(model, steering: HeadSteering | None = None) -> torch.Tensor:
    tokens = torch.tensor([[11, 40, 99, 7, 250, 31], [3, 3, 12, 80, 5, 17]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        if steering is None:
            return model.plain_model(tokens, attention_mask=mask,
                                     position_ids=position_ids(mask)).logits  # fmt: skip
        with steering.applied(model):
            return model.plain_model(tokens, attention_mask=mask,
                                     position_ids=position_ids(mask)).logits  # fmt: skip


def test_alpha_zero_is_the_base_bit_for_bit_and_alpha_one_is_not(llama):
    steering = HeadSteering.from_pairs(llama, pairs_of_lengths(4), HEADS, alpha=0.0)
    base = logits(llama)
    assert torch.equal(logits(llama, steering), base)
    assert not torch.equal(logits(llama, steering.with_alpha(1.0)), base)
    assert torch.equal(logits(llama), base)  # nothing stays installed after the block


def test_steering_equals_adding_to_hook_z_on_the_bridge(llama):
    steering = HeadSteering.from_pairs(llama, pairs_of_lengths(4), HEADS, alpha=2.5)
    tokens = torch.tensor([[11, 40, 99, 7, 250, 31]])

    def added(layer: int):
        def hook(z: torch.Tensor, hook) -> torch.Tensor:
            z = z.clone()
            for index, (at, head) in enumerate(HEADS):
                if at == layer:
                    z[:, :, head] += 2.5 * steering.vectors[index]
            return z

        return hook

    hooks = [(f"blocks.{layer}.attn.hook_z", added(layer)) for layer in range(2)]
    with torch.no_grad():
        expected = llama.run_with_hooks(tokens, fwd_hooks=hooks)
        with steering.applied(llama):
            ours = llama.plain_model(tokens).logits
    assert (expected - llama.logits(tokens)).abs().max() > 1e-3
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_a_saved_steering_loads_equal_and_is_refused_on_another_model(
    llama, tiny_model_dirs, tmp_path
):
    steering = HeadSteering.from_pairs(llama, pairs_of_lengths(3), HEADS, alpha=1.5,
                                       source={"data": "pairs.jsonl"})  # fmt: skip
    path = steering.save(tmp_path / "steering.json")
    loaded = HeadSteering.load(path)
    assert loaded.heads == steering.heads and loaded.alpha == 1.5
    assert torch.equal(loaded.vectors, steering.vectors)
    assert loaded.source["pairs"] == 3 and loaded.source["data"] == "pairs.jsonl"
    other = load_model(tiny_model_dirs["qwen2"], hooks=False)
    refusal = r"steering .*steering.json was made for LlamaForCausalLM .* is Qwen2ForCausalLM"
    with pytest.raises(SptInterpError, match=refusal):
        with loaded.applied(other):
            pytest.fail("steered another model")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="head-mask"), "not a steering file"),
        (lambda d: d["heads"][0].pop("vector"), "malformed steering file"),
        (lambda d: d["heads"][0].update(vector=[1.0, 2.0]), "finite vectors of d_head"),
        (lambda d: d.update(alpha="strong"), "malformed steering file"),
    ],
)
def test_a_malformed_steering_file_is_refused_naming_it(llama, tmp_path, edit, message):
    data = HeadSteering.from_pairs(llama, pairs_of_lengths(2), HEADS).to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SptInterpError, match=f"bad.json: .*{message}|bad.json: {message}"):
        HeadSteering.load(path)


def test_the_steer_command_writes_what_the_library_computes(
    targets_llama_dir, sample_data_file, tmp_path
):
    from typer.testing import CliRunner

    from spt_interp.cli import app
    from spt_interp.data import build_pairs, load_dialogues, protocol_for
    from spt_interp.mask import HeadMask

    model = load_model(targets_llama_dir, hooks=False)
    mask = HeadMask.from_heads(model, HEADS).save(tmp_path / "mask.json")
    out = tmp_path / "steering.json"
    args = ["steer", "--model", str(targets_llama_dir), "--data", str(sample_data_file),
            "--mask", str(mask), "--out", str(out), "--alpha", "0.5", "--batch-size", "2",
            "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = HeadSteering.load(out)
    pairs = build_pairs(load_dialogues(sample_data_file), model.tokenizer,
                        protocol_for(targets_llama_dir))  # fmt: skip
    expected = steering_vectors(model, pairs, HEADS, batch_size=5)
    assert written.alpha == 0.5 and written.heads == tuple(HEADS)
    torch.testing.assert_close(written.vectors, expected, atol=1e-6, rtol=0)
    assert f"{len(HEADS)} heads, alpha 0.5, from {len(pairs)} pairs" in result.stdout
    again = CliRunner().invoke(app, args)  # an existing --out without --force: one line
    assert again.exit_code != 0 and "--force" in again.output
    bad = CliRunner().invoke(app, [*args[:-2], "--alpha", "nan", "--force"])
    assert bad.exit_code != 0 and "--alpha must be a finite number" in bad.output


def test_evaluate_runs_under_a_steering_and_alpha_zero_changes_nothing(
    targets_llama_dir, tiny_model_dirs, sample_data_file, tmp_path
):
    from typer.testing import CliRunner

    from spt_interp.cli import app
    from spt_interp.data import build_pairs, load_dialogues, protocol_for

    model = load_model(targets_llama_dir, hooks=False)
    pairs = build_pairs(load_dialogues(sample_data_file), model.tokenizer,
                        protocol_for(targets_llama_dir))  # fmt: skip
    steering = HeadSteering.from_pairs(model, pairs, HEADS, alpha=0.0)
    files = {alpha: steering.with_alpha(alpha).save(tmp_path / f"s{alpha}.json")
             for alpha in (0.0, 50.0)}  # fmt: skip
    qwen2 = load_model(tiny_model_dirs["qwen2"], hooks=False)
    elsewhere = HeadSteering.from_pairs(qwen2, pairs, HEADS).save(tmp_path / "qwen2.json")
    neutral = tmp_path / "neutral.jsonl"
    neutral.write_text(json.dumps({"text": "The capital of France is Paris, as ever."}) + "\n")
    folder = str(targets_llama_dir)
    common = ["evaluate", "--model", folder, "--data", str(sample_data_file), "--reference",
              folder, "--neutral-text", str(neutral), "--max-new-tokens", "3",
              "--no-controls"]  # fmt: skip

    def report(name: str, *extra: str) -> dict:
        out = tmp_path / f"{name}.json"
        result = CliRunner().invoke(app, [*common, *extra, "--out", str(out)])
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    plain = report("plain")
    zero = report("zero", "--steering", str(files[0.0]))
    strong = report("strong", "--steering", str(files[50.0]))
    assert zero["metrics"] == plain["metrics"]  # alpha 0 is the base: every metric equal
    assert "steering" not in plain
    assert zero["steering"]["alpha"] == 0.0
    assert zero["steering"]["heads"] == ["L0.H1", "L1.H0", "L1.H3"]
    # The model against itself is no shift; steered, both KLs see it (the in-format one too:
    # it runs where the steering acts).
    assert plain["metrics"]["kl_in_format"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert strong["metrics"]["kl_in_format"]["value"] > 1e-4
    assert strong["metrics"]["kl_neutral"]["value"] > 1e-4
    refused = CliRunner().invoke(app, [*common, "--steering", str(elsewhere)])
    assert refused.exit_code != 0
    assert "qwen2.json was made for Qwen2ForCausalLM" in refused.output
