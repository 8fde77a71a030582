"""--jobs: how many runs train at once and how many torch threads each run gets."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from chargpt.config import RunConfig

# The rule of --jobs auto. A run whose training step is below SMALL_STEP_FLOPS trains with one
# thread, as many such runs at once as there are cores; a larger run trains alone with every
# core. Why: a small model's step is many small ops (matmuls of a few hundred rows, layer
# norms, the optimizer's per-tensor updates, Python between them) whose fork/join of a thread
# team costs about as much as the work it splits, so a second thread speeds one small run up
# little, while a second run on the second core doubles the study's throughput. A large step's
# matmuls split well over threads, and two large runs side by side would compete for the
# caches and memory bandwidth as well as the cores. 1e10 FLOPs (~0.1 s per step on one core at
# ~80 GFLOP/s) puts the first three shapes of studies/scaling.yaml (3e9-9e9) on one thread each
# and the last three (3.6e10-4.5e10) on all cores.
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


def auto_slot(step_flops: float, cores: int) -> Slot:
    """--jobs auto for a run whose training step costs step_flops (see SMALL_STEP_FLOPS)."""
    if step_flops < SMALL_STEP_FLOPS and cores > 1:
        return Slot(jobs=cores, threads=1)
    return Slot(jobs=1, threads=cores)


def auto_slots(flops: list[float], cores: int) -> list[Slot]:
    """--jobs auto for a study's runs in plan order (their step FLOPs): small runs side by side
    in whole groups of `cores`, one thread each; the k small runs left over (k < cores, the
    last ones) share the cores as k jobs of cores // k threads. Measured on
    studies/scaling.yaml (2 cores): A and B side by side, then C alone on one thread, left a
    core idle for C's 237 s while D-F waited, and the study took longer than with --jobs 1."""
    slots = [auto_slot(f, cores) for f in flops]
    small = [i for i, slot in enumerate(slots) if slot.jobs > 1]
    left = small[len(small) // cores * cores :]
    for i in left:
        slots[i] = Slot(jobs=len(left), threads=cores // len(left))
    return slots


def step_flops(run: RunConfig, vocab_size: int) -> float:
    """Training FLOPs of one step of a run: flops_per_token x batch_size x block_size."""
    from chargpt.model import count_params

    model = dataclasses.replace(run.model, vocab_size=vocab_size)
    tokens = run.train.batch_size * model.block_size
    return float(count_params(model)["flops_per_token"]) * tokens
