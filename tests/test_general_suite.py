"""The general suite's log-likelihood scoring and the neutral-text KL, against hand computations."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import Metric, proportion
from spt_interp.evaluation.shift import load_neutral_text, neutral_kl
from spt_interp.evaluation.suite import (
    SuiteItem,
    continuation_log_likelihoods,
    encode_request,
    encode_suite,
    load_suite,
    macro_average,
    run_suite,
    score_items,
)
from spt_interp.model import load_model
from spt_interp.model.interventions import HeadOutputSite, add
from spt_interp.model.tiny import FAMILY_ARCHITECTURES
from spt_interp.tuning.deltas import restore_parameters

CONTEXTS = ["What is the capital of France? The capital of France is", "Are you sure?"]
CHOICES = [" Paris", " right", " sorry, you are right", " Yes"]


def _unpadded_log_likelihood(model, context_ids, continuation_ids) -> float:
    """The hand computation: one sequence, no padding, log-softmax read token by token."""
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    return sum(
        float(log_probs[len(context_ids) - 1 + i, token])
        for i, token in enumerate(continuation_ids)
    )


def test_encoding_splits_context_and_continuation_as_the_harness(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["llama"], hooks=False)
    tokenizer = hooked.tokenizer
    context_ids, continuation_ids = encode_request(tokenizer, "Are you ", "sure?")
    # The context's trailing space moves to the continuation; the pair is the whole's tokens.
    assert context_ids == tokenizer("Are you")["input_ids"]
    assert context_ids + continuation_ids == tokenizer("Are you sure?")["input_ids"]


def test_batched_scores_equal_one_unpadded_sequence_at_a_time(tiny_model_dir):
    hooked = load_model(tiny_model_dir, hooks=False)
    requests = [encode_request(hooked.tokenizer, c, x) for c in CONTEXTS for x in CHOICES]
    got = continuation_log_likelihoods(hooked.plain_model, requests, 0, batch_size=3,
                                       progress=False)  # fmt: skip
    want = [_unpadded_log_likelihood(hooked.plain_model, c, x) for c, x in requests]
    # float32 logits over a 320-token vocabulary, a few tokens summed: ~1e-6 relative.
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


def _shared_context_requests(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Token-id requests: contexts of 11 and 6 tokens shared by continuations of 1 to 5
    tokens, one of 5 shared by one-token continuations only, and two contexts of their own
    (one a prefix of a shared one)."""
    generator = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(10, 300, (n,), generator=generator).tolist()

    long_context, short_context, one_token_context = ids(11), ids(6), ids(5)
    return [
        *[(long_context, ids(n)) for n in (1, 3, 5, 2)],
        *[(short_context, ids(n)) for n in (2, 4)],
        *[(one_token_context, ids(1)) for _ in range(3)],
        (ids(9), ids(4)),
        (long_context[:7], ids(2)),
    ]


@pytest.mark.numeric
@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_shared_contexts_score_what_one_unpadded_sequence_gives(name, family_dirs):
    hooked = load_model(family_dirs[name], hooks=False)
    model, requests = hooked.plain_model, _shared_context_requests()
    want = [_unpadded_log_likelihood(model, c, x) for c, x in requests]
    read = []
    embeddings = model.get_input_embeddings()
    handle = embeddings.register_forward_hook(lambda m, args, out: read.append(args[0].numel()))
    # Tokens read per forward. Sharing reads the contexts once, longest first, left-padded (a
    # batch holds at most batch_size continuations, and one group at least), then the
    # continuations of more than one token but their last token, right-padded to the longest;
    # the two lone requests go as one left-padded batch of whole sequences (2 rows of 12).
    reads_by_batch_size = {
        2: [11, 3 * 4, 6, 2 * 3, 5, 2 * 12],
        16: [3 * 11, (3 + 2) * 4, 2 * 12],
    }
    try:
        for share, batch_size in ((True, 2), (True, 16), (False, 2)):
            read.clear()
            got = continuation_log_likelihoods(model, requests, 0, batch_size=batch_size,
                                               progress=False, share_contexts=share)  # fmt: skip
            # float32 logits, a few tokens summed, differently shaped batches: ~1e-6 relative.
            assert got == pytest.approx(want, rel=1e-4, abs=1e-4), (share, batch_size)
            if share:
                assert read == reads_by_batch_size[batch_size]
    finally:
        handle.remove()


@pytest.mark.numeric
def test_shared_contexts_keep_an_edit_at_every_position(tiny_model_dirs):
    """Steering adds to the heads' outputs at every position, the cached context's included."""
    hooked = load_model(tiny_model_dirs["llama"], hooks=False)
    model, requests = hooked.plain_model, _shared_context_requests(seed=3)
    vector = torch.randn(2, hooked.geometry.d_head, generator=torch.Generator().manual_seed(0))
    site = HeadOutputSite(model, hooked.geometry)
    with site.edited({1: add([0, 3], 2.0 * vector, position="all")}):
        want = [_unpadded_log_likelihood(model, c, x) for c, x in requests]
        got = continuation_log_likelihoods(model, requests, 0, progress=False)
    plain = continuation_log_likelihoods(model, requests, 0, progress=False)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert max(abs(a - b) for a, b in zip(got, plain, strict=True)) > 1e-2


def test_acc_and_acc_norm_by_hand():
    items = [
        SuiteItem("t", "0", (("c", " ab"), ("c", " abcdefgh")), 1, 1),
        SuiteItem("t", "1", (("c", " a"), ("c", " bb")), 0, 2),
        SuiteItem("u", "2", (("c", " a"), ("c", " b")), 1, 3),
    ]
    # Item 0: sums -3 vs -4 -> acc picks 0 (wrong); per char -1.0 vs -0.444 -> norm picks 1.
    # Item 1: -1 vs -0.5 -> acc picks 1 (wrong); per char -0.5 vs -0.167 -> norm picks 1.
    # Item 2: -2 vs -1 -> both pick 1 (right).
    tasks, flags = score_items(items, [[-3.0, -4.0], [-1.0, -0.5], [-2.0, -1.0]])
    assert flags == {"t": [False, False], "u": [True]}
    assert tasks["t"].acc == proportion([False, False])
    assert tasks["t"].acc_norm == proportion([True, False])
    assert tasks["u"].acc.value == tasks["u"].acc_norm.value == 1.0
    macro = macro_average([Metric(0.5, 100, 0, 1), Metric(0.8, 400, 0, 1)])
    half = 1.959963984540054 * math.sqrt(0.25 / 100 + 0.16 / 400) / 2
    assert macro.value == pytest.approx(0.65)
    assert (macro.low, macro.high) == pytest.approx((0.65 - half, 0.65 + half))


def _suite_file(path, items):
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def test_run_suite_reports_what_the_hand_scores_give(tiny_model_dirs, tmp_path):
    hooked = load_model(tiny_model_dirs["llama"], hooks=False)
    rows = [
        {"task": "a", "requests": [{"context": CONTEXTS[0], "continuation": x} for x in CHOICES],
         "label": k}
        for k in range(4)
    ] + [{"task": "b", "requests": [{"context": c, "continuation": " Yes"} for c in CONTEXTS],
          "label": 1}]  # fmt: skip
    items = load_suite(_suite_file(tmp_path / "suite.jsonl", rows))
    report = run_suite(hooked, items, batch_size=4, progress=False)
    encoded = encode_suite(hooked.tokenizer, items)
    hand = [
        [_unpadded_log_likelihood(hooked.plain_model, c, x) for c, x in rows_] for rows_ in encoded
    ]
    best = [max(range(len(lls)), key=lls.__getitem__) for lls in hand]
    expected_a = sum(best[k] == k for k in range(4)) / 4
    assert report["tasks"]["a"]["acc"]["value"] == pytest.approx(expected_a)
    assert report["tasks"]["a"]["n"] == 4
    assert report["tasks"]["b"]["acc"]["value"] == float(best[4] == 1)
    assert report["macro_acc"]["value"] == pytest.approx((expected_a + float(best[4] == 1)) / 2)


def test_a_choice_that_does_not_tokenize_is_refused_before_the_model_loads(
    tiny_model_dirs, tmp_path
):
    rows = [
        {"task": "a", "requests": [{"context": "Q", "continuation": " x"},
                                   {"context": "Q", "continuation": ""}], "label": 0}
    ]  # fmt: skip
    suite = _suite_file(tmp_path / "suite.jsonl", rows)
    model = tiny_model_dirs["llama"]
    with pytest.raises(SptInterpError, match=r"suite.jsonl:1: a item 1 choice 1 \(''\)"):
        encode_suite(load_model(model, hooks=False).tokenizer, load_suite(suite), suite)
    data = tmp_path / "d.jsonl"
    record = {"prompt": [{"type": "human", "content": "Q?"}],
              "base": {"question": "Q?", "correct_answer": "x"}}  # fmt: skip
    data.write_text(json.dumps(record) + "\n")
    result = CliRunner().invoke(
        app, ["evaluate", "--model", str(model), "--data", str(data), "--suite", str(suite)]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {suite}:1: a item 1 choice 1 ('') tokenizes to no tokens after its context"
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"task": "a", "requests": [], "label": 0}', "requests must be a list of at least 2"),
        ('{"task": "a", "requests": [{"context": "q", "continuation": "x"},'
         ' {"context": "q", "continuation": "y"}], "label": 2}', "label must be a choice index"),
        ("{not json", "invalid JSON"),
    ],
)  # fmt: skip
def test_bad_suite_lines_name_file_and_line(tmp_path, line, reason):
    path = tmp_path / "suite.jsonl"
    path.write_text("\n" + line + "\n")
    with pytest.raises(SptInterpError, match=rf"suite.jsonl:2: {reason}"):
        load_suite(path)


def test_neutral_kl_matches_a_per_passage_loop(tiny_model_dirs, tmp_path):
    folder = tiny_model_dirs["qwen2"]
    reference = load_model(folder, hooks=False)
    tuned = load_model(folder, hooks=False)
    base = {n: p.detach().clone() for n, p in tuned.hf_parameters.items()}
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in tuned.hf_parameters.values():
            parameter.add_(0.05 * torch.randn_like(parameter))
    passages = [
        "I do think that's right. " * 9,
        "The capital of France is Paris.",
        "Yes, I'm sure.",
    ]
    path = tmp_path / "neutral.jsonl"
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))
    neutral = load_neutral_text(path)
    got = neutral_kl(tuned, reference, neutral.passages, max_tokens=16, batch_size=2)
    values = []
    for passage in passages:
        ids = torch.tensor([tuned.tokenizer(passage)["input_ids"][:16]])
        with torch.no_grad():
            log_p = torch.log_softmax(reference.plain_model(ids).logits[0].double(), -1)
            log_q = torch.log_softmax(tuned.plain_model(ids).logits[0].double(), -1)
        values.append((log_p.exp() * (log_p - log_q)).sum(-1).mean().item())
    # One value per passage (positions within a passage are not independent samples).
    assert got.count == len(passages)
    # float32 logits, differences of log-probabilities: ~1e-6 relative.
    assert got.value == pytest.approx(sum(values) / len(values), rel=1e-4)
    spread = torch.tensor(values).std().item() * 4.3027 / len(values) ** 0.5  # t_0.975, 2 df
    assert got.high - got.value == pytest.approx(spread, rel=1e-3)
    restore_parameters(tuned.hf_parameters, base)
    assert neutral_kl(tuned, reference, neutral.passages, max_tokens=16).value == pytest.approx(
        0.0, abs=1e-9
    )


def test_the_demo_refuses_neutral_text_and_suite_without_a_model(tmp_path):
    from spt_interp.demo import run_demo

    neutral = tmp_path / "neutral.jsonl"
    neutral.write_text(json.dumps({"text": "Some prose."}) + "\n")
    with pytest.raises(SptInterpError, match="--neutral-text and --suite go with --model"):
        run_demo(tmp_path / "out", neutral_text=neutral)
    assert not (tmp_path / "out").exists()
