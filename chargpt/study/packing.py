"""--jobs: how many runs train at once and how many torch threads each run gets."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chargpt.config import RunConfig

if TYPE_CHECKING:
    from chargpt.study.pack_probe import PackSpeed

# The size rule, for the groups --jobs auto has no measured figures for (see MIN_GAIN).
# A run whose training step is below SMALL_STEP_FLOPS trains with one thread, as many such
# runs at once as there are cores; a larger run trains alone with every core. Why: a small
# model's step is many small ops (matmuls of a few hundred rows, layer norms, the optimizer's
# per-tensor updates, Python between them) whose fork/join of a thread team costs about as
# much as the work it splits, while a second run on the second core nearly doubles the
# study's throughput; and short runs side by side also overlap their start-up and sampling.
# A large step's matmuls split better over threads. How much better is the CPU's business:
# the scaling study's D (3.6e10 FLOPs a step) still did 1.12-1.13x the work two at a time on
# a 2-core Zen 4 VM, which is why measured figures, where there are some, decide. 1e10 FLOPs
# (~0.1 s a step on one core at ~80 GFLOP/s) puts studies/scaling.yaml's A-C (3e9-9e9) below
# it and D-F (3.6e10-4.5e10) above.
SMALL_STEP_FLOPS = 1e10


@dataclass(frozen=True)
class Slot:
    """How one run is placed: at most `jobs` runs at once while it trains, `threads` each
    (None: torch's own default, which OMP_NUM_THREADS sets)."""

    jobs: int
    threads: int | None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset set)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fixed_slot(jobs: int, cores: int) -> Slot:
    """--jobs N: N runs at once sharing the cores evenly; one run keeps torch's default."""
    return Slot(jobs=jobs, threads=max(1, cores // jobs) if jobs > 1 else None)


# --jobs auto goes by measurement where there is one. The runs still to do are taken in plan
# order in groups of `cores`; when this machine has measured every shape of a group
# (python -m bench.packing, kept by chargpt.study.pack_record), the group trains side by side
# only if the figures predict it finishing MIN_GAIN sooner than one run after the other on
# every core; otherwise the size rule above places it. A study does not measure by itself: on
# the 2-core Zen 4 VM the six shapes of studies/scaling.yaml took ~60 s to measure, more than
# placing them well saves there, so measuring is a separate, deliberate step whose figures
# every later study on the machine reuses.
MIN_GAIN = 1.05  # below this a prediction is within what the short measurement resolves


@dataclass(frozen=True)
class RunLoad:
    """What --jobs auto knows of a run before it starts."""

    step_flops: float  # training FLOPs of one step
    steps: int | None  # what its budget allows; None: only max_seconds bounds it
    max_seconds: float | None


@dataclass(frozen=True)
class Placement:
    """Where --jobs auto puts a group of consecutive runs (their indices), and why (the
    runner logs it)."""

    runs: list[int]
    slot: Slot
    reason: str


def auto_placements(
    loads: list[RunLoad], cores: int, speed_of: Callable[[int], PackSpeed | None]
) -> list[Placement]:
    """--jobs auto for a study's runs still to do, in plan order: groups of `cores`
    consecutive runs, each side by side on one thread each or one after the other on every
    core. speed_of(i): run i's measured PackSpeed, None where there is none to go by."""
    placements: list[Placement] = []
    for start in range(0, len(loads), max(cores, 1)):
        idx = list(range(start, min(start + cores, len(loads))))
        group = [loads[i] for i in idx]
        if cores < 2:
            slot, reason = Slot(jobs=1, threads=1), "one core: one run at a time"
        elif len(idx) < cores:
            slot, reason = _left_over(group, cores)
        else:
            speeds = [speed_of(i) for i in idx]
            measured = [s for s in speeds if s is not None]
            if len(measured) == len(speeds):
                slot, reason = _by_measure(group, measured, cores)
            else:
                slot, reason = _by_size(group, cores)
        placements.append(Placement(idx, slot, reason))
    return placements


def _by_size(group: list[RunLoad], cores: int) -> tuple[Slot, str]:
    """All small (SMALL_STEP_FLOPS): side by side on one thread each; else each alone."""
    why = "no packing figures for them on this machine (python -m bench.packing), by size"
    if all(load.step_flops < SMALL_STEP_FLOPS for load in group):
        return Slot(jobs=cores, threads=1), f"side by side, 1 thread each: {why}"
    return Slot(jobs=1, threads=cores), f"one at a time on {cores} threads: {why}"


def _left_over(group: list[RunLoad], cores: int) -> tuple[Slot, str]:
    """The k < cores runs at the end share the cores when all are small (k jobs of cores // k
    threads); one alone gets them all. One thread would leave cores idle for its whole run.
    The figures (cores copies on one thread each) do not describe k runs, so size decides."""
    k = len(group)
    if k > 1 and all(load.step_flops < SMALL_STEP_FLOPS for load in group):
        return Slot(jobs=k, threads=cores // k), f"the last {k}: small, sharing the cores"
    return Slot(jobs=1, threads=cores), f"the last {k}: one at a time on {cores} threads"


def _by_measure(group: list[RunLoad], speeds: list[PackSpeed], cores: int) -> tuple[Slot, str]:
    """Side by side when the measured steps predict the group finishing MIN_GAIN sooner:
    one after the other takes the sum of each run's steps x alone_s, side by side the longest
    steps x beside_s (pessimistic: a run whose neighbours have finished speeds up). A run with
    a max_seconds limit may stop on the clock rather than its steps, and stopping sooner is
    not finishing sooner: with one in the group the criterion is the work done a second."""
    gain, what = predicted_gain(group, [s.alone_s for s in speeds], [s.beside_s for s in speeds])
    if gain >= MIN_GAIN:
        return Slot(jobs=cores, threads=1), f"side by side, 1 thread each: measured, {what}"
    return (
        Slot(jobs=1, threads=cores),
        f"one at a time on {cores} threads: measured, side by side {what}, below {MIN_GAIN}x",
    )


def predicted_gain(
    group: list[RunLoad], alone_s: list[float], beside_s: list[float]
) -> tuple[float, str]:
    """How much sooner the group finishes side by side, from each run's seconds a step alone
    on every core and side by side (see _by_measure), and the sentence that says so."""
    if any(load.steps is None or load.max_seconds is not None for load in group):
        gain = sum(a / b for a, b in zip(alone_s, beside_s, strict=True))
        return gain, f"{gain:.3f}x the work a second"
    steps = [load.steps or 0 for load in group]
    one_by_one = sum(n * a for n, a in zip(steps, alone_s, strict=True))
    side_by_side = max(n * b for n, b in zip(steps, beside_s, strict=True))
    gain = one_by_one / side_by_side
    return gain, (
        f"{_seconds(side_by_side)} against {_seconds(one_by_one)} one at a time ({gain:.3f}x)"
    )


def _seconds(s: float) -> str:
    """Seconds for a log line: whole ones, or two decimals below ten."""
    return f"{s:,.0f} s" if s >= 10 else f"{s:.2f} s"


def run_load(run: RunConfig, vocab_size: int) -> RunLoad:
    """A run's RunLoad: its step FLOPs and the steps its budget allows."""
    from chargpt.schedule import budget_steps

    flops = step_flops(run, vocab_size)
    tokens = run.train.batch_size * run.model.block_size
    return RunLoad(flops, budget_steps(run.budget, tokens, flops), run.budget.max_seconds)


def step_flops(run: RunConfig, vocab_size: int) -> float:
    """Training FLOPs of one step of a run: flops_per_token x batch_size x block_size."""
    from chargpt.model import count_params

    model = dataclasses.replace(run.model, vocab_size=vocab_size)
    tokens = run.train.batch_size * model.block_size
    return float(count_params(model)["flops_per_token"]) * tokens
