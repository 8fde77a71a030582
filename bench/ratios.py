"""Same-round speed ratios of compare_nanogpt's rows, and an exact interval for their median."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

REFERENCE = "nanoGPT"  # the program every ratio divides by


@dataclass(frozen=True)
class Pair:
    """One round's chargpt run against the nanoGPT run of the same round (same source)."""

    source: str  # which comparison (file) the round belongs to
    round: int
    ratio: float  # chargpt tokens/s / nanoGPT tokens/s
    loss_gap: float  # chargpt whole-split val loss minus nanoGPT's


def pairs(rows: list[dict[str, Any]], program: str, source: str = "") -> list[Pair]:
    """Every round that ran both `program` and nanoGPT, in round order.

    ValueError names a round that ran any program twice (rows from two comparisons mixed
    under one source).
    """
    by_round: dict[tuple[int, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["round"], r["program"])
        if key in by_round:
            raise ValueError(f"{source or 'rows'}: round {r['round']} ran {r['program']} twice")
        by_round[key] = r
    out = []
    for rnd in sorted({rnd for rnd, _ in by_round}):
        mine, ref = by_round.get((rnd, program)), by_round.get((rnd, REFERENCE))
        if mine is None or ref is None:
            continue
        out.append(
            Pair(
                source,
                rnd,
                mine["tokens_per_s"] / ref["tokens_per_s"],
                mine["full_val_loss"] - ref["full_val_loss"],
            )
        )
    return out


def median_speed(rows: list[dict[str, Any]], program: str) -> float:
    """The median tokens/s of one program's rows."""
    return statistics.median(r["tokens_per_s"] for r in rows if r["program"] == program)


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, coverage): the narrowest pair of order statistics that holds the
    population median with probability `coverage` >= level, or the widest one (min, max),
    with the coverage it has, when n is too small to reach level.

    Distribution-free, for independent draws of a continuous quantity: each value falls
    below the median with probability 1/2, so the number below is Binomial(n, 1/2), and
    [x_(k), x_(n+1-k)] misses the median with probability 2 * P(Binomial <= k-1). No
    resampling, no normality: fit for 3 to 30 noisy rounds. (Rounds run back to back on a
    machine with slow and fast spells are not quite independent: read the interval as a
    little narrower than the truth.)
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    xs = sorted(values)

    def miss(k: int) -> float:  # P(interval [x_(k), x_(n+1-k)] misses the median)
        return 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1  # [min, max] misses only if all n fall on one side
    while k + 1 <= (n + 1) // 2 and miss(k + 1) <= 1 - level:
        k += 1
    return xs[k - 1], xs[n - k], 1 - miss(k)


def verdict(low: float, high: float, target: float) -> str:
    """'met' when the whole interval is at or above the target, 'not met' when it lies below,
    'undecided' when it straddles it."""
    if low >= target:
        return "met"
    if high < target:
        return "not met"
    return "undecided"


def summary_line(ps: list[Pair], target: float | None = None) -> str:
    """Median of the same-round ratios with its interval (from 3 rounds on), and a verdict
    against target."""
    ratios = [p.ratio for p in ps]
    low, high, coverage = median_interval(ratios)
    line = f"median same-round ratio {statistics.median(ratios):.2f} over {len(ps)} rounds, "
    if len(ps) < 3:
        line += "too few for an interval"
    else:  # coverage rounded down, never claiming more than it has
        line += f"{math.floor(coverage * 1000) / 10:g}% interval {low:.2f}-{high:.2f}"
    if target is not None:
        judged = verdict(low, high, target) if len(ps) >= 3 else "undecided"
        line += f"; target {target:g}x: {judged}"
    return line
