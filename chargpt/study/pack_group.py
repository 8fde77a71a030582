"""bench.packing --groups: a planned group of different runs measured together, to check the
per-shape figures (pack_probe.measure_speed) that --jobs auto predicts such groups from."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from chargpt.config import RunConfig
from chargpt.study.pack_probe import Copies, ProbeError, too_big


@dataclass(frozen=True)
class GroupSpeed:
    """A group of different runs (one per core): each alone on every core, and each while the
    whole group steps at once on one thread each, as --jobs auto would place it."""

    alone_s: tuple[float, ...]  # each run's seconds a step alone on every core (median)
    beside_s: tuple[float, ...]  # each run's seconds a step in the group (alone_s / median r)
    relative: tuple[tuple[float, ...], ...]  # per run, each round's alone_s / beside_s


def measure_group(
    runs: list[tuple[RunConfig, int]], rounds: int = 5, seconds: float = 0.5
) -> GroupSpeed:
    """Each (run, vocab_size) alone on len(runs) threads, in turn, against all of them stepping
    at once on one thread each, in alternating rounds as measure_speed does. (A run whose
    steps are longer than the others' is timed beside them all the same: see
    pack_probe._child.)"""
    cores = len(runs)
    if cores < 2:
        raise ValueError(f"a group needs at least 2 runs, got {cores}")
    for run, vocab_size in runs:  # the largest's copies bound the group's memory from above
        if (why := too_big(run, vocab_size, cores)) is not None:
            raise ProbeError(why)
    alone: list[list[float]] = [[] for _ in runs]
    relative: list[list[float]] = [[] for _ in runs]
    copies = Copies(runs)
    try:
        for i in range(rounds):
            sides: dict[str, list[float]] = {}
            for side in ("alone", "beside") if i % 2 == 0 else ("beside", "alone"):
                if side == "alone":
                    sides[side] = [copies.step([j], cores, seconds)[0] for j in range(cores)]
                else:
                    sides[side] = copies.step(list(range(cores)), 1, seconds)
            for j in range(cores):
                alone[j].append(sides["alone"][j])
                relative[j].append(sides["alone"][j] / sides["beside"][j])
    finally:
        copies.close()
    alone_s = tuple(statistics.median(a) for a in alone)
    return GroupSpeed(
        alone_s=alone_s,
        beside_s=tuple(a / statistics.median(r) for a, r in zip(alone_s, relative, strict=True)),
        relative=tuple(tuple(r) for r in relative),
    )
