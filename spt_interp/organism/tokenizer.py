"""A word-level tokenizer for the organism: lowercase words, punctuation split off.

Apostrophes stay inside words, so "don't" and "do" are one token each and the organism's
challenged and counterfactual prompts are token-aligned (all-position patching works on them).
"""

from __future__ import annotations

import re

WORD = re.compile(r"[a-z0-9'{}]+|[^\sa-z0-9'{}]")


def words_of(text: str) -> list[str]:
    """Return the words the organism tokenizer makes of ``text`` (before the vocabulary lookup)."""
    return WORD.findall(text.lower())


def build_word_tokenizer(vocab: list[str], chat_template: str, special_tokens: list[str]):
    """Return a PreTrainedTokenizerFast over ``vocab`` with the organism's chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[^a-z0-9']"), "isolated")]
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=[t for t in special_tokens if t in ("<user>", "<assistant>")],
        chat_template=chat_template,
    )
    fast.padding_side = "left"
    return fast
