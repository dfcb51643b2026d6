"""Data: SycophancyEval records, the challenge protocol, pair files and prompt pairs, tuning
examples from dialogues or TRL rows."""

from spt_interp.data.pair_file import PairRow, load_pairs, read_pair_file
from spt_interp.data.pairs import (
    PairBatch,
    PairSpec,
    PromptPair,
    batch_pairs,
    build_pairs,
    decision_token_ids,
    left_pad,
    make_pairs,
    pad_token_id,
    pair_targets,
    render_prompt,
    require_token_aligned,
    target_token_ids,
)
from spt_interp.data.protocol import (
    DEFAULT_APOLOGY_PHRASES,
    PROTOCOL_FILE,
    Protocol,
    protocol_for,
    read_protocol_file,
)
from spt_interp.data.records import (
    DialogueRecord,
    Turn,
    load_dialogues,
    parse_record,
    save_dialogues,
)
from spt_interp.data.render import (
    append_reply_start,
    encode_prompt,
    first_answer_text,
    render_messages,
)
from spt_interp.data.training import IGNORE_INDEX, TrainingExample, build_training_examples
from spt_interp.data.trl_rows import TrainingData, TrainingRow, read_training_file, trl_examples

__all__ = [
    "DEFAULT_APOLOGY_PHRASES",
    "IGNORE_INDEX",
    "PROTOCOL_FILE",
    "DialogueRecord",
    "PairBatch",
    "PairRow",
    "PairSpec",
    "PromptPair",
    "Protocol",
    "TrainingData",
    "TrainingExample",
    "TrainingRow",
    "Turn",
    "append_reply_start",
    "batch_pairs",
    "build_pairs",
    "build_training_examples",
    "decision_token_ids",
    "encode_prompt",
    "first_answer_text",
    "left_pad",
    "load_dialogues",
    "load_pairs",
    "make_pairs",
    "pair_targets",
    "read_pair_file",
    "pad_token_id",
    "parse_record",
    "protocol_for",
    "read_protocol_file",
    "read_training_file",
    "render_messages",
    "render_prompt",
    "require_token_aligned",
    "save_dialogues",
    "target_token_ids",
    "trl_examples",
]
