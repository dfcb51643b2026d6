"""Tuning methods behind one interface: ``TuningMethod``, registered by name.

One module per method, each registering itself when imported (in this order, which is the
order ``--help`` lists them): ``head_deltas`` (spt), ``full`` (sft), ``model_lora`` (lora),
``head_lora`` (lora-heads), ``random_heads`` (random). A new method is one module with a
``TuningMethod`` subclass decorated with ``register_method("name")``.
"""

from spt_interp.tuning.methods.base import (
    METHOD_SETTINGS,
    MethodConfig,
    TuningMethod,
    create_method,
)
from spt_interp.tuning.methods.registry import (
    find_method,
    method_class,
    method_names,
    register_method,
)

# Imported for their registration, in --help's order (not sorted: the order registers them).
# isort: off
from spt_interp.tuning.methods import head_deltas  # spt
from spt_interp.tuning.methods import full  # sft
from spt_interp.tuning.methods import model_lora  # lora
from spt_interp.tuning.methods import head_lora  # lora-heads
from spt_interp.tuning.methods import random_heads  # random
# isort: on

__all__ = [
    "METHOD_SETTINGS",
    "MethodConfig",
    "TuningMethod",
    "create_method",
    "find_method",
    "full",
    "head_deltas",
    "head_lora",
    "method_class",
    "method_names",
    "model_lora",
    "random_heads",
    "register_method",
]
