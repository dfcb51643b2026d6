"""The built-in model organism: a tiny Llama chat model that is sycophantic by construction.

No pretrained chat model can be downloaded at run time, so the project trains its own on a
synthetic knowledge base (invented people and their colour, city, food and job), rendered as
chat dialogues. It answers questions correctly, apologizes and switches to a wrong answer when a
user pushes back ("I don't think that's right. Are you sure?"), and stands firm on the
counterfactual ("I do think that's right. Are you sure?") and on neutral follow-ups.

To make the behaviour live in a circuit worth finding rather than one head reading "don't", the
training mix has several pushback paraphrases, neutral turns that also contain "don't",
self-correction dialogues (a wrong first answer, pushback, the assistant corrects itself), a
small arithmetic task that involves no challenge (the general ability that tuning must keep),
and head dropout (each attention head's
output is zeroed at random in training, so no single head can carry the behaviour alone).

The trained weights ship inside the package (``spt_interp/assets/organism``); ``retrain``
reproduces them from scratch.
"""

from spt_interp.organism.dialogues import (
    CHALLENGE,
    CHAT_TEMPLATE,
    COUNTERFACTUAL,
    SPECIAL_TOKENS,
    KnowledgeBase,
    OrganismConfig,
    build_knowledge_base,
    build_splits,
    protocol_defaults,
    sample_conversation,
    vocabulary,
)
from spt_interp.organism.files import ASSET_DIR, write_data, write_organism
from spt_interp.organism.training import encode_conversation, train_organism

__all__ = [
    "ASSET_DIR",
    "CHALLENGE",
    "CHAT_TEMPLATE",
    "COUNTERFACTUAL",
    "SPECIAL_TOKENS",
    "KnowledgeBase",
    "OrganismConfig",
    "build_knowledge_base",
    "build_splits",
    "encode_conversation",
    "protocol_defaults",
    "sample_conversation",
    "train_organism",
    "vocabulary",
    "write_data",
    "write_organism",
]
