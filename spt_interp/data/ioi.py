"""Indirect-object identification (Wang et al. 2022) as a pair file, for any tokenizer.

The task the patching literature checks its engines on: "When Mary and John went to the store,
John gave a drink to" -> " Mary". The prompt (X_r) names the indirect object (IO) once and the
subject (S) twice; the model should continue with the IO, not the subject: ``behaviour`` is
" IO", ``alternative`` " S". The counterfactual (X_c) is the paper's "ABC" distribution: the
same sentence with its three name slots filled by three other names, all different, so that no
name is repeated and nothing singles out an indirect object.

Names are drawn from those the tokenizer spells as one token after a space (so the decision
reads a whole name, and X_r and X_c have equally many tokens: the pairs are token-aligned and
all-position patching applies). Half the prompts name the IO first (ABB), half the subject
first (BAB).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from spt_interp.common.atomic import write_text_atomic
from spt_interp.errors import SptInterpError

# The templates' shapes follow the paper's: two people introduced, the subject repeated, the
# sentence ending where the indirect object's name comes. {first} and {second} are the two
# names introduced (one of them the subject), {subject} the repetition.
TEMPLATES = (
    "When {first} and {second} went to the {place}, {subject} gave a {thing} to",
    "Then, {first} and {second} went to the {place}. {subject} gave a {thing} to",
    "After {first} and {second} went to the {place}, {subject} gave a {thing} to",
    "While {first} and {second} were working at the {place}, {subject} gave a {thing} to",
    "When {first} and {second} got a {thing} at the {place}, {subject} decided to give it to",
    "Then, {first} and {second} were working at the {place}. {subject} decided to give a "
    "{thing} to",
    "Friends {first} and {second} found a {thing} at the {place}. {subject} gave it to",
    "The {place} was busy when {first} and {second} arrived, so {subject} handed the {thing} to",
)
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "station", "park",
          "market", "library")  # fmt: skip
THINGS = ("drink", "ring", "book", "basket", "letter", "snack", "bottle", "necklace", "key",
          "ticket")  # fmt: skip
NAMES = (
    "Mary", "John", "Tom", "James", "Anna", "Paul", "Sarah", "David", "Michael", "Lisa",
    "Mark", "Laura", "Peter", "Emma", "Daniel", "Kate", "Alice", "Robert", "Linda", "Jack",
    "Susan", "Kevin", "Helen", "Brian", "Amy", "George", "Karen", "Steve", "Rachel", "Eric",
    "Nancy", "Frank", "Julia", "Sam", "Grace", "Adam", "Claire", "Ben", "Rose", "Alex",
    "Victoria", "Jason", "Emily", "Chris", "Jessica", "Andrew", "Megan", "Ryan", "Amanda",
    "Matthew", "Sophie", "Richard", "Anne", "Joe", "Lucy", "Henry", "Diana", "Luke", "Jane",
    "Carl", "Ruth", "Simon", "Kelly", "Scott", "Martin", "Patrick", "Jennifer", "William",
)  # fmt: skip
MIN_NAMES = 6


def single_token_names(tokenizer: Any, names: tuple[str, ...] = NAMES) -> list[str]:
    """Return the names the tokenizer spells as one token after a space (" Mary"), the
    unknown token not counted."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    spelled = {name: _ids(tokenizer, f" {name}") for name in names}
    return [name for name, ids in spelled.items() if len(ids) == 1 and ids[0] != unknown]


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def ioi_rows(tokenizer: Any, n: int, seed: int = 0) -> list[dict[str, str]]:
    """Return ``n`` IOI pairs as pair-file rows (prompt, counterfactual, behaviour,
    alternative, id), drawn with ``seed``."""
    if n < 1:
        raise SptInterpError(f"--n must be at least 1, got {n}")
    names = single_token_names(tokenizer)
    if len(names) < MIN_NAMES:
        raise SptInterpError(
            f"the tokenizer spells only {len(names)} of the {len(NAMES)} names as one token "
            f"after a space ({', '.join(names) or 'none'}); IOI needs at least {MIN_NAMES}"
        )
    draw = random.Random(seed)
    rows = []
    for index in range(n):
        number = index % len(TEMPLATES)
        template = TEMPLATES[number]
        place, thing = draw.choice(PLACES), draw.choice(THINGS)
        io, subject, *others = draw.sample(names, 5)
        io_first = index % 2 == 0  # ABB and BAB alternate
        first, second = (io, subject) if io_first else (subject, io)
        prompt = template.format(first=first, second=second, subject=subject, place=place,
                                 thing=thing)  # fmt: skip
        counterfactual = template.format(first=others[0], second=others[1], subject=others[2],
                                         place=place, thing=thing)  # fmt: skip
        rows.append({"prompt": prompt, "counterfactual": counterfactual, "behaviour": f" {io}",
                     "alternative": f" {subject}",
                     "id": f"ioi-{index}-t{number}-{'abb' if io_first else 'bab'}"})  # fmt: skip
    return rows


def write_ioi(tokenizer: Any, out: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` IOI pairs as a pair file (JSONL), atomically; return its path."""
    rows = ioi_rows(tokenizer, n, seed)
    return write_text_atomic(out, "".join(json.dumps(row) + "\n" for row in rows))
