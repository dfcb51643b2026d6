"""The donor run on the base's cached common start equals the donor's full run, every family."""

from __future__ import annotations

import pytest
import torch
from test_patching import make_pairs

from spt_interp.data.pairs import left_pad
from spt_interp.evaluation.metrics import log_odds
from spt_interp.model import load_model
from spt_interp.model.tiny import FAMILY_ARCHITECTURES
from spt_interp.patching import PatchMetric, locate_heads
from spt_interp.patching.donor_prefix import common_start, donor_continuation
from spt_interp.patching.end_position import PrefixRun, end_head_outputs

# Families whose tiny model has a sliding window (4 tokens) narrower than these prompts.
NARROW_WINDOW = ("gemma2", "gemma3_text")


def prompt_pairs(seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Pairs that share a start of different lengths, with X_c longer, shorter or as long, and
    one pair sharing nothing."""
    generator = torch.Generator().manual_seed(seed)
    base, donor = [], []
    for length, common, extra in ((20, 16, 1), (14, 10, 0), (25, 21, -2), (9, 5, 3), (12, 0, 0)):
        ids = torch.randint(10, 300, (length,), generator=generator).tolist()
        tail = [(t + 7) % 290 + 10 for t in ids[common : length + extra]]
        tail += torch.randint(10, 300, (length + extra - common - len(tail),),
                              generator=generator).tolist()  # fmt: skip
        base.append(ids)
        donor.append(ids[:common] + tail)
    return base, donor


def padded(base, donor):
    width = max(len(s) for s in base + donor)
    return (*left_pad(base, 3, width), *left_pad(donor, 3, width))


def test_common_start_counts_the_shared_real_tokens():
    base, donor = prompt_pairs()
    donor[1] = list(base[1])  # identical: all but END shared
    got = common_start(*padded(base, donor)).tolist()
    expected = []
    for b, d in zip(base, donor, strict=True):
        n = 0
        while n < min(len(b), len(d)) - 1 and b[n] == d[n]:
            n += 1
        expected.append(n)
    assert got == expected
    assert expected[1] == len(base[1]) - 1 and expected[4] == 0


def test_the_continuation_holds_each_rows_donor_tokens_after_the_cut():
    base, donor = prompt_pairs()
    base_t, base_m, donor_t, donor_m = padded(base, donor)
    plan = donor_continuation(base_t, base_m, donor_t, donor_m)
    assert plan is not None and plan.tokens.shape[1] < donor_t.shape[1]
    for row, (b, d) in enumerate(zip(base, donor, strict=True)):
        cached = base_m[row, : plan.cached_columns].bool()
        reused = base_t[row, : plan.cached_columns][cached].tolist()
        new = plan.mask[row, plan.cached_columns :].bool()
        rest = plan.tokens[row][new].tolist()
        assert reused + rest == d and reused == b[: len(reused)]
        assert plan.positions[row][new].tolist() == list(range(len(reused), len(d)))


def test_nothing_is_planned_where_no_column_is_shared():
    base, donor = prompt_pairs()
    # The longest row shares nothing: the cut would fall at its first real column.
    donor[2] = [(t + 7) % 290 + 10 for t in base[2]]
    assert donor_continuation(*padded(base, donor)) is None


def aligned_pairs(seed: int = 2) -> tuple[list[list[int]], list[list[int]]]:
    """Token-aligned pairs (X_c as long as X_r, one token changed): the continuation lays the
    donor's tokens in their own columns, so a narrow sliding window shares too."""
    generator = torch.Generator().manual_seed(seed)
    base, donor = [], []
    for length in (20, 14, 25):
        ids = torch.randint(10, 300, (length,), generator=generator).tolist()
        changed = list(ids)
        changed[length - 5] = (ids[length - 5] + 7) % 290 + 10
        base.append(ids)
        donor.append(changed)
    return base, donor


@pytest.mark.numeric
@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
@pytest.mark.parametrize("layout", ["unaligned", "aligned"])
def test_the_donor_on_the_shared_cache_equals_its_full_run(name, layout, family_dirs):
    hooked = load_model(family_dirs[name])
    pairs = prompt_pairs(seed=1) if layout == "unaligned" else aligned_pairs()
    base_t, base_m, donor_t, donor_m = padded(*pairs)
    run = PrefixRun(hooked, base_t, base_m, donor=(donor_t, donor_m))
    # A narrow sliding window falls back to the full run where the continuation's padding
    # would move columns in and out of it; every other case reads the cache.
    shares = layout == "aligned" or name not in NARROW_WINDOW
    assert (run.plan is not None) == shares
    full_z, full_logits = end_head_outputs(hooked, donor_t, donor_m)
    gaps = []
    for attempt in range(2):
        # The cached start is handed over once; the second run is the full one.
        assert (run.donor_cache is not None) == (shares and attempt == 0)
        z, logits = end_head_outputs(hooked, donor_t, donor_m, shared_with=run)
        # The same arithmetic on differently shaped batches: float32 rounding only.
        torch.testing.assert_close(logits, full_logits, atol=1e-5, rtol=0)
        for ours, full in zip(z, full_z, strict=True):
            torch.testing.assert_close(ours, full, atol=1e-5, rtol=0)
        z_gap = max((a - b).abs().max().item() for a, b in zip(z, full_z, strict=True))
        gaps.append(max((logits - full_logits).abs().max().item(), z_gap))
    print(f"{name} {layout}: donor on the shared cache vs full run, max |difference| {gaps[0]:.1e}")
    # The base's own run, cut where the common start ends, is the uncut one.
    uncut = PrefixRun(hooked, base_t, base_m)
    torch.testing.assert_close(run.end_logits, uncut.end_logits, atol=1e-5, rtol=0)
    for cut, whole in zip(run.z, uncut.z, strict=True):
        torch.testing.assert_close(cut, whole, atol=1e-5, rtol=0)


def amplified(folder, out, factor: float = 4.0):
    """Return a copy of the tiny model at ``folder`` with every weight matrix x ``factor``: its
    heads then move the metric by ~0.1, far above bf16's rounding (random tiny models move it
    by ~0.01, of the order of that rounding)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.mul_(factor)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return out


# Both read the donor's start from the cache: qwen3 across lengths, gemma2's narrow window on
# token-aligned pairs.
@pytest.mark.numeric
@pytest.mark.parametrize(("name", "aligned"), [("qwen3", False), ("gemma2", True)])
def test_hf_engine_in_bf16_passes_its_check_and_tracks_float32(name, aligned, family_dirs,
                                                                   tmp_path):  # fmt: skip
    """In bf16 the donor's cached start and its full run round differently: the engine's
    runtime check (one patched run against the bf16 loop) must still pass, and the scores
    follow float32's."""
    folder = amplified(family_dirs[name], tmp_path / name)
    pairs = make_pairs(6, aligned=aligned, seed=3)
    metric = PatchMetric("log-odds", lambda logits: log_odds(logits.float(), [5, 6], [7]))
    scores = {
        dtype: locate_heads(load_model(folder, dtype=dtype), pairs, metric, method="path",
                            engine="hf", batch_size=3, progress=False)
        for dtype in (torch.float32, torch.bfloat16)
    }  # fmt: skip
    reference = torch.tensor(scores[torch.float32].matrix())
    half = torch.tensor(scores[torch.bfloat16].matrix())
    largest = float(reference.abs().max())
    gap = float((half - reference).abs().max())
    print(f"{name}: bf16 scores vs float32, max |difference| {gap:.1e} of largest {largest:.2f}")
    # A score is the difference of a patched and an unpatched run that round alike up to the
    # sender, so bf16 (8 significant bits) moves it by a few of its 2**-8 steps of the
    # effect's size and of the logits it rides on: measured 2.5% and 4.5% of the largest
    # effect here. A quarter leaves room for other CPUs' bf16 kernels; an engine that patched
    # nothing is off by 100%, one with the donor's start misplaced by O(1).
    assert largest > 0.02
    assert gap <= 0.25 * largest


def test_a_mask_with_a_hole_is_not_planned():
    base, donor = prompt_pairs()
    base_t, base_m, donor_t, donor_m = padded(base, donor)
    assert donor_continuation(base_t, base_m, donor_t, donor_m) is not None
    holed = donor_m.clone()
    holed[0, -3] = 0  # not left padding: the continuation's layout would misread it
    assert donor_continuation(base_t, base_m, donor_t, holed) is None
