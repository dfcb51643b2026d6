"""A sweep's peak memory does not grow with the number of heads it scores.

Each run is a fresh process on a tiny model with a 262,144-token vocabulary (one prompt's END
logits are 1 MiB), reading how far its peak resident memory (VmHWM, reset before each) rises
while scoring 32 heads beyond how far it rises scoring one group of heads (after a warm-up).
The control lifts the budget so that all 32 heads' END logits are held at once: the instrument
must see that.

glibc's malloc raises its mmap threshold each time a large block is freed, after which blocks
of that size come from the heap and stay resident after ``free``: the peak then depends on the
order of frees, which differs between CPUs and thread counts (a grouped sweep rose by 40 MiB on
one machine and 48 on another). A fixed ``MALLOC_MMAP_THRESHOLD_`` turns that off, so every
tensor of 64 KiB or more is mapped on allocation and unmapped when freed, and the peak is the
largest set of tensors alive at once.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spt_interp.model.tiny import build_bpe_tokenizer, tiny_config

VOCAB = 262_144
BATCH = 8
MIB = 2**20
GROUP_LOGITS = 16 * MIB
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(64 * 2**10)}

SCRIPT = f"""
import sys, torch
import spt_interp.patching.scoring as scoring
from spt_interp.data import PromptPair
from spt_interp.evaluation.metrics import log_odds
from spt_interp.model import load_model
from spt_interp.patching import PatchMetric, all_heads, locate_heads

folder, position, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
scoring.PATCHED_LOGITS_BUDGET = budget
hooked = load_model(folder)
generator = torch.Generator().manual_seed(0)
pairs = []
for i in range({BATCH}):
    ids = torch.randint(10, 300, (16,), generator=generator).tolist()
    donor = list(ids)
    donor[8] = 300 - donor[8]
    pairs.append(PromptPair(i, f"p{{i}}", "", "", ids, donor, True))
metric = PatchMetric("log-odds", lambda logits: log_odds(logits, [20], [31]))
heads = all_heads(hooked.geometry.n_layers, hooked.geometry.n_heads)
# The baseline is one group under the grouped budget, whatever budget this run scores under.
group = scoring.head_groups(heads, {BATCH}, {VOCAB}, budget={GROUP_LOGITS})[0]
def score(chosen):
    locate_heads(hooked, pairs, metric, method="path", position=position, heads=chosen,
                 batch_size={BATCH}, progress=False)
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
def growth(chosen):
    # Reset the peak (Linux clear_refs 5), so that no earlier peak (loading) hides this one.
    open("/proc/self/clear_refs", "w").write("5")
    before = status("VmRSS")
    score(chosen)
    return status("VmHWM") - before
score(group)
one_group = growth(group)
print(len(heads), growth(heads) - one_group)
"""


@pytest.fixture(scope="module")
def large_vocabulary_model(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("large_vocab") / "llama"
    config = tiny_config("llama", VOCAB, n_layers=4, n_heads=8, n_kv_heads=8, d_model=32)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    build_bpe_tokenizer().save_pretrained(folder)
    return folder


def peak_growth(folder, position: str, budget: int) -> tuple[int, int]:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), position, str(budget)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **FIXED_MMAP_THRESHOLD},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    heads, growth = completed.stdout.split()
    return int(heads), int(growth)


@pytest.mark.parametrize("position", ["end", "all"])
def test_peak_memory_does_not_grow_with_the_heads_scored(large_vocabulary_model, position):
    # 16 MiB of END logits per group: 2 heads x 8 prompts x 1 MiB. Sixteen groups go through
    # where the baseline scores one, each freed before the next: the peak is the same, and a
    # group's logits outliving its reduction would raise it by at least 16 MiB.
    heads, growth = peak_growth(large_vocabulary_model, position, GROUP_LOGITS)
    assert heads == 32
    assert growth < GROUP_LOGITS, f"peak grew by {growth / MIB:.1f} MiB"


def test_the_instrument_sees_logits_held_for_every_head(large_vocabulary_model):
    # One group of all 32 heads against one of 2: at least 30 heads x 8 MiB more held at once.
    heads, growth = peak_growth(large_vocabulary_model, "end", 2**40)
    assert heads == 32
    assert growth > 30 * 8 * MIB, f"peak grew by only {growth / MIB:.0f} MiB"
