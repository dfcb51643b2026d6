"""The tuning methods by name: ``register_method`` adds one, ``method_class`` finds one.

The only place a mode name ("spt", "sft", ...) is looked up: every other module asks the
method class what it needs (a mask, a compact delta, float32 weights) instead of naming modes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from spt_interp.errors import SptInterpError

if TYPE_CHECKING:
    from spt_interp.tuning.methods.base import TuningMethod

Method = TypeVar("Method", bound="type[TuningMethod]")

# name -> method class, in the order the methods were registered (the order --help lists).
METHODS: dict[str, type[TuningMethod]] = {}


def register_method(name: str) -> Callable[[Method], Method]:
    """Return a class decorator registering a ``TuningMethod`` subclass under ``name``.

    The class's ``name`` is set to it; a name already taken is refused.
    """

    def register(cls: Method) -> Method:
        from spt_interp.tuning.methods.base import TuningMethod

        if not (isinstance(cls, type) and issubclass(cls, TuningMethod)):
            raise TypeError(f"{cls!r} is not a TuningMethod subclass")
        if name in METHODS:
            raise SptInterpError(f"a tuning method is already registered as {name!r}")
        cls.name = name
        METHODS[name] = cls
        return cls

    return register


def method_names() -> tuple[str, ...]:
    """Return the registered methods' names, in registration order."""
    return tuple(METHODS)


def find_method(name: str) -> type[TuningMethod] | None:
    """Return the method registered as ``name``, or None (the untuned base of a comparison)."""
    return METHODS.get(name)


def method_class(name: str) -> type[TuningMethod]:
    """Return the method registered as ``name``; SptInterpError naming --mode if there is none."""
    method = METHODS.get(name)
    if method is None:
        raise SptInterpError(f"--mode {name!r} is not one of {', '.join(METHODS)}")
    return method
