"""The learning-rate frontier: per mode a log-spaced grid, extended until it brackets the mode;
values read off each mode's curve at matched confidence, with bootstrap intervals.

Grid: rates 10^(i / per_decade) for integers i (3 per decade by default), so every grid and
every extension shares points. A mode's grid is done when

- its best validation score is interior: some tried rate below and some above the chosen one
  (a rate whose loss diverged counts as tried and worse);
- its low end is reached: the lowest rate leaves confidence within ``low_end_confidence``
  (5 points) of the base's;
- its high end is reached: the highest rate costs more than ``high_end_general`` (5 points)
  of general ability, moves the neutral-text KL over ``high_end_kl`` (1 nat), or diverged.

Until then ``extend`` names the next rates to run (one grid step past whichever end is short).

A grid none of whose rates raises confidence more than those 5 points over the base's has no
best rate to bracket (every score ties near the base's); it goes up until a rate moves the
decision, diverges, or moves the KL past ``high_end_kl`` (see ``_unmoved_verdict``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from spt_interp.errors import SptInterpError

PER_DECADE = 3
LOW_END_CONFIDENCE = 0.05
HIGH_END_GENERAL = 0.05
HIGH_END_KL = 1.0
MAX_RATES = 16
TIE = 0.01  # validation scores within this of the best are ties (to the lower KL, lower lr)


def grid_index(lr: float, per_decade: int = PER_DECADE) -> int:
    """Return i with lr == 10^(i / per_decade); raise when lr is not on that grid."""
    index = round(math.log10(lr) * per_decade)
    if not math.isclose(grid_rate(index, per_decade), lr, rel_tol=1e-6):
        raise SptInterpError(f"lr {lr:g} is not on the grid of {per_decade} rates per decade")
    return index


def grid_rate(index: int, per_decade: int = PER_DECADE) -> float:
    """Return 10^(index / per_decade), rounded to 3 significant digits as the grid names it."""
    return float(f"{10 ** (index / per_decade):.3g}")


def log_grid(low: float, high: float, per_decade: int = PER_DECADE) -> list[float]:
    """Return the grid's rates from ``low`` to ``high`` inclusive."""
    first, last = grid_index(low, per_decade), grid_index(high, per_decade)
    return [grid_rate(i, per_decade) for i in range(first, last + 1)]


@dataclass(frozen=True)
class SearchPoint:
    """One run's numbers the grid rule reads. ``score`` None: its loss diverged."""

    lr: float
    score: float | None
    confidence: float = math.nan
    kl: float = math.nan
    general_change: float = math.nan

    @property
    def diverged(self) -> bool:
        return self.score is None


@dataclass(frozen=True)
class GridVerdict:
    """Where a mode's grid stands and which rates to run next (none when it is done)."""

    chosen: float
    interior: bool
    low_end: bool
    high_end: bool
    next_rates: tuple[float, ...]

    @property
    def done(self) -> bool:
        return not self.next_rates


def chosen_rate(points: Sequence[SearchPoint]) -> float:
    """Return the best validation score's rate (ties within 0.01 to the lower KL, lower lr)."""
    finite = [p for p in points if not p.diverged]
    best = max(p.score for p in finite)
    ties = [p for p in finite if p.score >= best - TIE]
    return min(ties, key=lambda p: (p.kl if math.isfinite(p.kl) else math.inf, p.lr)).lr


def extend(
    points: Sequence[SearchPoint],
    base_confidence: float,
    *,
    mode: str = "mode",
    per_decade: int = PER_DECADE,
    low_end_confidence: float = LOW_END_CONFIDENCE,
    high_end_general: float = HIGH_END_GENERAL,
    high_end_kl: float = HIGH_END_KL,
    max_rates: int = MAX_RATES,
) -> GridVerdict:
    """Return the verdict on a mode's grid: chosen rate, which conditions hold, rates to add.

    Raises when every rate diverged (no lower rate can be proposed that the grid's own
    evidence supports) or when the grid would grow past ``max_rates``.
    """
    if not points:
        raise SptInterpError(f"{mode}: no runs to judge the grid by")
    ordered = sorted(points, key=lambda p: p.lr)
    if all(p.diverged for p in ordered):
        rates = ", ".join(f"{p.lr:g}" for p in ordered)
        raise SptInterpError(
            f"{mode}: every rate of the grid diverged ({rates}): the grid cannot be extended; "
            "start it lower"
        )
    chosen = chosen_rate(ordered)
    lowest, highest = ordered[0], ordered[-1]
    if not lowest.diverged and not moves_confidence(ordered, base_confidence, low_end_confidence):
        return _unmoved_verdict(ordered, chosen, per_decade, high_end_kl, max_rates, mode)
    interior = lowest.lr < chosen < highest.lr
    low_end = not lowest.diverged and lowest.confidence - base_confidence <= low_end_confidence
    high_end = highest.diverged or (
        highest.general_change < -high_end_general or highest.kl > high_end_kl
    )
    below = grid_rate(grid_index(lowest.lr, per_decade) - 1, per_decade)
    above = grid_rate(grid_index(highest.lr, per_decade) + 1, per_decade)
    wanted = []
    if lowest.diverged or chosen == lowest.lr or not low_end:
        wanted.append(below)
    if not highest.diverged and (chosen == highest.lr or not high_end):
        wanted.append(above)
    if len(ordered) + len(wanted) > max_rates:
        raise SptInterpError(
            f"{mode}: the grid is not bracketed within {max_rates} rates "
            f"({lowest.lr:g} .. {highest.lr:g}; interior {interior}, low end {low_end}, "
            f"high end {high_end})"
        )
    return GridVerdict(chosen, interior, low_end, high_end, tuple(wanted))


def moves_confidence(
    points: Sequence[SearchPoint], base_confidence: float, margin: float = LOW_END_CONFIDENCE
) -> bool:
    """Return whether any finished point raises confidence more than ``margin`` over the base."""
    return any(not p.diverged and p.confidence - base_confidence > margin for p in points)


def _unmoved_verdict(
    ordered: Sequence[SearchPoint],
    chosen: float,
    per_decade: int,
    high_end_kl: float,
    max_rates: int,
    mode: str,
) -> GridVerdict:
    """The verdict on a grid none of whose rates moves confidence off the base's.

    Every score then ties near the base's, and the tie-break (lower KL) picks the lowest rate,
    so the bracketing rule would walk down for ever towards the base. Such a grid goes up
    instead, until a rate moves the decision (then the usual rule takes over), diverges, or
    moves the neutral-text KL past ``high_end_kl``. General ability is not a stop here: with no
    confidence gained there is nothing to read at a matched confidence, and the suite's few
    items per task cannot tell a 5-point loss from noise.
    """
    highest = ordered[-1]
    high_end = highest.diverged or highest.kl > high_end_kl
    if high_end:
        return GridVerdict(chosen, False, True, True, ())
    if len(ordered) + 1 > max_rates:
        raise SptInterpError(
            f"{mode}: confidence does not move within {max_rates} rates "
            f"({ordered[0].lr:g} .. {highest.lr:g}; the KL stays under {high_end_kl:g})"
        )
    above = grid_rate(grid_index(highest.lr, per_decade) + 1, per_decade)
    return GridVerdict(chosen, False, True, False, (above,))


def bracket_grid(
    start: tuple[float, float],
    run_at: Callable[[float], bool],
    points_of: Callable[[], Sequence[SearchPoint]],
    base_confidence: float,
    *,
    mode: str = "mode",
    per_decade: int = PER_DECADE,
    report: Callable[[GridVerdict], None] = lambda verdict: None,
) -> GridVerdict | None:
    """Run a mode's grid until it is bracketed and return the final verdict.

    ``start``: the starting grid's ends (every grid value between them runs first);
    ``run_at(value)`` runs the mode at one grid value, or finds it already run, and returns
    False when the budget stops it (then None is returned); ``points_of()`` returns every
    point of the mode run so far (earlier extensions included), which ``extend`` judges after
    each round; ``report`` sees each verdict. The axis is any positive knob: a learning rate,
    or a steering's alpha.
    """
    for value in log_grid(*start, per_decade):
        if not run_at(value):
            return None
    while True:
        verdict = extend(points_of(), base_confidence, mode=mode, per_decade=per_decade)
        report(verdict)
        if verdict.done:
            return verdict
        for value in verdict.next_rates:
            if not run_at(value):
                return None


def interpolate_at(
    curve: Sequence[tuple[float, float, float]], target: float, *, log_y: bool = False
) -> tuple[float, float, float] | None:
    """Return (y at ``target`` confidence, lr below, lr above) off a mode's curve, or None.

    ``curve``: (lr, confidence, y) per run. Only the rising branch is read: rates up to the one
    with the highest confidence (a higher rate whose confidence falls back is a collapse, not
    another way to the same confidence). Going up in lr, the first pair of neighbouring runs
    whose confidences straddle ``target`` is interpolated linearly in confidence (in log10 y
    with ``log_y``, as for KL on a log scale).
    """
    ordered = sorted(p for p in curve if math.isfinite(p[1]))
    if not ordered:
        return None
    peak = max(range(len(ordered)), key=lambda i: (ordered[i][1], -i))
    ordered = ordered[: peak + 1]
    for (lr_a, x_a, y_a), (lr_b, x_b, y_b) in zip(ordered, ordered[1:], strict=False):
        if not (math.isfinite(x_a) and math.isfinite(x_b)) or x_a == x_b:
            continue
        if (x_a - target) * (x_b - target) > 0:
            continue
        if log_y:
            if y_a <= 0 or y_b <= 0:
                return None
            y_a, y_b = math.log10(y_a), math.log10(y_b)
        y = y_a + (target - x_a) / (x_b - x_a) * (y_b - y_a)
        return (10**y if log_y else y), lr_a, lr_b
    return None


@dataclass(frozen=True)
class Interval:
    """A statistic's value, its bootstrap 95% percentile interval and how many draws defined it."""

    value: float
    low: float
    high: float
    draws: int
    defined: int

    def as_dict(self) -> dict[str, float | None]:
        """Return the fields, None where a value is undefined (JSON has no NaN)."""

        def number(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "value": number(self.value),
            "low": number(self.low),
            "high": number(self.high),
            "draws": self.draws,
            "defined": self.defined,
        }


def bootstrap(
    statistic: Callable[[dict[str, np.ndarray]], float],
    sizes: dict[str, int],
    *,
    draws: int = 2000,
    seed: int = 0,
    strata: dict[str, np.ndarray] | None = None,
) -> Interval:
    """Return ``statistic`` on the identity resample and its bootstrap percentile interval.

    Each draw resamples, with replacement, the indices of every named item set (``sizes``:
    name -> count), within strata where given (``strata[name]``: a label per item, e.g. the
    suite's task, so each task keeps its count). ``statistic`` maps the draw's index arrays
    to a number, NaN when it is undefined for the draw (e.g. no bracketing pair); the interval
    is over the defined draws.
    """
    generator = np.random.default_rng(seed)
    identity = {name: np.arange(n) for name, n in sizes.items()}
    value = statistic(identity)
    values = []
    for _ in range(draws):
        indices = {}
        for name, n in sizes.items():
            labels = (strata or {}).get(name)
            if labels is None:
                indices[name] = generator.integers(0, n, n)
                continue
            parts = [
                generator.choice(np.flatnonzero(labels == label), (labels == label).sum())
                for label in np.unique(labels)
            ]
            indices[name] = np.concatenate(parts)
        values.append(statistic(indices))
    defined = np.array([v for v in values if math.isfinite(v)])
    if not len(defined):
        return Interval(value, math.nan, math.nan, draws, 0)
    low, high = np.percentile(defined, [2.5, 97.5])
    return Interval(value, float(low), float(high), draws, len(defined))
