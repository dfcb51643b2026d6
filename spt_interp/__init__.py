"""spt-interp: find the attention heads behind a chat model's sycophancy, fix them by tuning
only those heads (supervised pinpoint tuning, Chen et al., ICML 2024).

The public API, one name per step of the loop::

    import spt_interp as spt

    hooked = spt.load_model("runs/demo/organism/model")
    protocol = spt.protocol_for(hooked)
    records = spt.load_dialogues("runs/demo/organism/data/test.jsonl")[:64]
    pairs = spt.locate_pairs(hooked, records, protocol)
    scores = spt.locate_heads(hooked, pairs, spt.decision_metric("log-odds", hooked.tokenizer,
                                                                 pairs, protocol))
    spt.head_heatmap(scores)

Names are imported on first use, so ``import spt_interp`` stays fast (no torch until needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it (the one place it lives).
_PUBLIC = {
    # model
    "load_model": "spt_interp.model",
    "load_base": "spt_interp.model",
    "read_signature": "spt_interp.model",
    "HookedModel": "spt_interp.model",
    "HeadGeometry": "spt_interp.model",
    "load_tokenizer": "spt_interp.model",
    # data
    "load_dialogues": "spt_interp.data",
    "save_dialogues": "spt_interp.data",
    "protocol_for": "spt_interp.data",
    "Protocol": "spt_interp.data",
    "DialogueRecord": "spt_interp.data",
    "build_pairs": "spt_interp.data",
    "load_pairs": "spt_interp.data",
    "read_pair_file": "spt_interp.data",
    "read_training_file": "spt_interp.data",
    "PromptPair": "spt_interp.data",
    "batch_pairs": "spt_interp.data",
    "pad_token_id": "spt_interp.data",
    "build_training_examples": "spt_interp.data",
    "write_ioi": "spt_interp.data.ioi",
    # scores
    "HeadScores": "spt_interp.common.head_scores",
    "read_scores": "spt_interp.common.head_scores",
    # patching
    "locate_pairs": "spt_interp.patching.inputs",
    "locate_heads": "spt_interp.patching",
    "decision_metric": "spt_interp.patching",
    # mask
    "HeadMask": "spt_interp.mask",
    "MaskSource": "spt_interp.mask",
    # knockout
    "prepare_knockout": "spt_interp.knockout",
    "knockout_curve": "spt_interp.knockout",
    "knockout_summary": "spt_interp.knockout",
    "measure": "spt_interp.knockout",
    "ablated": "spt_interp.knockout",
    # tuning
    "TuneConfig": "spt_interp.tuning",
    "tune": "spt_interp.tuning",
    "tune_folder": "spt_interp.tuning",
    "merge": "spt_interp.tuning",
    # evaluation
    "evaluate": "spt_interp.evaluation",
    "run_protocol": "spt_interp.evaluation",
    "evaluate_pairs": "spt_interp.evaluation.behaviour",
    "end_attention": "spt_interp.evaluation.attention",
    "GenerationSettings": "spt_interp.evaluation",
    # organism, pictures, the whole loop
    "write_organism": "spt_interp.organism",
    "pull_model": "spt_interp.importers.gguf",
    "head_heatmap": "spt_interp.viz.plots",
    "knockout_explorer": "spt_interp.viz.widgets",
    "KnockoutSession": "spt_interp.viz.widgets",
    "click_heads": "spt_interp.viz.widgets",
    "show_selection": "spt_interp.viz.widgets",
    "knockout_figure": "spt_interp.viz.knockout_report",
    "show_figure": "spt_interp.viz.notebook_figures",
    "run_demo": "spt_interp.demo",
    "SptInterpError": "spt_interp.errors",
}

# The stages, one package each, in the order a lower one never imports a higher one
# (tests/test_layout.py checks it): ``spt.knockout.knockout_curve`` and so on.
STAGES = (
    "common",
    "data",
    "model",
    "evaluation",
    "patching",
    "mask",
    "knockout",
    "tuning",
    "experiments",
    "importers",
    "organism",
    "viz",
)

__all__ = sorted(_PUBLIC) + list(STAGES)

if TYPE_CHECKING:  # the same names, eagerly, for IDEs and type checkers (a test compares)
    from spt_interp import (
        common,
        data,
        evaluation,
        experiments,
        importers,
        knockout,
        mask,
        model,
        organism,
        patching,
        tuning,
        viz,
    )
    from spt_interp.common.head_scores import HeadScores, read_scores
    from spt_interp.data import (
        DialogueRecord,
        PromptPair,
        Protocol,
        batch_pairs,
        build_pairs,
        build_training_examples,
        load_dialogues,
        load_pairs,
        pad_token_id,
        protocol_for,
        read_pair_file,
        read_training_file,
        save_dialogues,
    )
    from spt_interp.data.ioi import write_ioi
    from spt_interp.demo import run_demo
    from spt_interp.errors import SptInterpError
    from spt_interp.evaluation import GenerationSettings, evaluate, run_protocol
    from spt_interp.evaluation.attention import end_attention
    from spt_interp.evaluation.behaviour import evaluate_pairs
    from spt_interp.importers.gguf import pull_model
    from spt_interp.knockout import (
        ablated,
        knockout_curve,
        knockout_summary,
        measure,
        prepare_knockout,
    )
    from spt_interp.mask import HeadMask, MaskSource
    from spt_interp.model import (
        HeadGeometry,
        HookedModel,
        load_base,
        load_model,
        load_tokenizer,
        read_signature,
    )
    from spt_interp.organism import write_organism
    from spt_interp.patching import decision_metric, locate_heads
    from spt_interp.patching.inputs import locate_pairs
    from spt_interp.tuning import TuneConfig, merge, tune, tune_folder
    from spt_interp.viz.knockout_report import knockout_figure
    from spt_interp.viz.notebook_figures import show_figure
    from spt_interp.viz.plots import head_heatmap
    from spt_interp.viz.widgets import (
        KnockoutSession,
        click_heads,
        knockout_explorer,
        show_selection,
    )


def __getattr__(name: str) -> Any:
    if name in STAGES:
        return importlib.import_module(f"spt_interp.{name}")
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'spt_interp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
