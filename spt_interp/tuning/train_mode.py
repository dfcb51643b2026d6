"""Train mode with every dropout at 0, optionally with HF's gradient checkpointing.

Hugging Face recomputes a layer in the backward only while the model is training, and
training turns dropout on. Runs here must be reproducible (resume, data parallel, the
comparison's seeds), so the model trains with each dropout probability set to 0 for the run:
``nn.Dropout`` modules and the float ``attention_dropout`` (and kin) that attention classes
pass to their kernels. Everything is put back on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from spt_interp.errors import SptInterpError

# Float attributes attention classes read as their dropout probability in training.
DROPOUT_ATTRIBUTES = ("attention_dropout", "attn_dropout", "dropout", "resid_dropout")


@contextmanager
def training_mode(model: torch.nn.Module, gradient_checkpointing: bool = False) -> Iterator[None]:
    """Run ``model`` in train mode with no dropout (and, if asked, gradient checkpointing)."""
    saved: list[tuple[torch.nn.Module, str, float]] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            saved.append((module, "p", module.p))
            continue
        for attribute in DROPOUT_ATTRIBUTES:
            value = getattr(module, attribute, None)
            if isinstance(value, float) and not isinstance(value, bool):
                saved.append((module, attribute, value))
    was_training = model.training
    enabled = False
    try:
        for module, attribute, _ in saved:
            setattr(module, attribute, 0.0)
        model.train()
        if gradient_checkpointing and not model.is_activation_checkpointing:
            if not model.supports_gradient_checkpointing:
                raise SptInterpError(
                    f"--gradient-checkpointing: {type(model).__name__} does not support it"
                )
            # Non-reentrant: the recomputation runs the modules' hooks (the head deltas) too.
            model.activation_checkpointing_enable({"use_reentrant": False})
            enabled = True
        yield
    finally:
        if enabled:
            model.activation_checkpointing_disable()
            # transformers hooks the embeddings so their output requires grad; take it off.
            model.disable_input_require_grads()
        for module, attribute, value in saved:
            setattr(module, attribute, value)
        model.train(was_training)
