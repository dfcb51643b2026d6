"""The patching engines: one module per engine behind one signature, chosen from a table.

An engine turns one batch of prompt pairs into every requested head's patching effect
(``ChunkEffects``). ``locate_heads`` is the one driver: it batches, splits heads over ranks,
gathers and builds the scores table; the engine only says which jobs (method x position) it
does and does them.

- ``hf``: exact, over the Hugging Face model's own modules, every family of the architecture
  table: END patching as one END step per head against a shared prefix cache
  (``end_position``), all-position patching as each sender layer's variants run from that layer
  on (``full_sequence``), attribution as one forward and backward.
- ``loop``: one hooked TransformerBridge forward per head: the definition the others are held
  to, and the path for a model the HF engine cannot run (``auto`` never picks it silently).
"""

from __future__ import annotations

from spt_interp.errors import SptInterpError
from spt_interp.patching.engines.base import ChunkEffects, Engine, Job, Sides
from spt_interp.patching.engines.hf import HF_ENGINE
from spt_interp.patching.engines.loop import LOOP_ENGINE

ENGINE_TABLE: dict[str, Engine] = {engine.name: engine for engine in (HF_ENGINE, LOOP_ENGINE)}
# "auto" takes the first engine of the table that does the job.
ENGINES = ("auto", *ENGINE_TABLE)
# Names the engines had before they were named after what they run.
RENAMED = {"fast": "hf", "modules": "hf"}


def choose_engine(name: str, job: Job) -> Engine:
    """Return the engine ``name`` ("auto": the first of the table that does ``job``)."""
    if name in RENAMED:
        raise SptInterpError(
            f"--engine {name} is now --engine {RENAMED[name]} (engines are named after what "
            f"they run); choose from {', '.join(ENGINES)}"
        )
    if name == "auto":
        return next(engine for engine in ENGINE_TABLE.values() if engine.does(job) is None)
    if name not in ENGINE_TABLE:
        raise SptInterpError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    engine = ENGINE_TABLE[name]
    reason = engine.does(job)
    if reason is not None:
        raise SptInterpError(f"--engine {name} {reason}; use --engine auto")
    return engine


__all__ = [
    "ENGINES",
    "ENGINE_TABLE",
    "ChunkEffects",
    "Engine",
    "Job",
    "Sides",
    "choose_engine",
]
