"""Where a study's runs train: each run's slot (runs at once, threads), by --jobs N or by this
machine's packing figures (--jobs auto), and the compile shares that follow from it."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from chargpt.study import spec
from chargpt.study.packing import (
    Placement,
    RunLoad,
    Slot,
    auto_placements,
    fixed_slot,
    run_load,
    usable_cores,
)

if TYPE_CHECKING:
    from chargpt.study.pack_probe import PackSpeed

log = logging.getLogger("chargpt.study")


def slots_for(
    runs: list[spec.PlannedRun], jobs: int | str, vocab: dict[str, int]
) -> dict[str, Slot]:
    """Each run's placement: --jobs N for all alike, or --jobs auto by this machine's packing
    figures where it has them, else by size (packing.auto_placements); auto logs each group's
    choice and why."""
    cores = usable_cores()
    if jobs != "auto":
        return {r.run_id: fixed_slot(int(jobs), cores) for r in runs}
    slots = {}
    for group in auto_plan(runs, vocab, cores)[1]:
        log.info("--jobs auto: %s: %s", " + ".join(runs[i].label for i in group.runs), group.reason)
        slots.update({runs[i].run_id: group.slot for i in group.runs})
    return slots


def auto_plan(
    runs: list[spec.PlannedRun], vocab: dict[str, int], cores: int
) -> tuple[list[RunLoad], list[Placement]]:
    """--jobs auto's placement of these runs (in plan order) on this machine: each run's
    load, and the groups by this machine's packing figures where it has them, else by size
    (the runner trains by it; bench.packing prints it)."""
    from chargpt.study.pack_record import figures_for

    loads = [run_load(r.config, vocab[r.config.data.corpus]) for r in runs]

    def speed_of(i: int) -> PackSpeed | None:
        return figures_for(runs[i].config, vocab[runs[i].config.data.corpus], cores)

    return loads, auto_placements(loads, cores, speed_of)


def compile_shares(runs: list[spec.PlannedRun], slots: dict[str, Slot]) -> dict[str, int]:
    """For `train.compile: auto` runs that build one graph to one budget (same model, batch,
    dtype, device, corpus and budget, so the same predicted saving): the first run's count
    of the runs its cold compile would turn warm (chargpt.compiling.choose_compile). Runs
    that start beside it (--jobs) find no cache yet, so they are not counted."""
    groups: dict[str, list[str]] = {}
    for r in runs:
        d = r.config.to_dict()
        if d["train"]["compile"] != "auto":
            continue
        t = d["train"]
        graph = [d["model"], t["batch_size"], t["dtype"], t["device"], d["data"], d["budget"]]
        groups.setdefault(json.dumps(graph, sort_keys=True), []).append(r.run_id)
    shares = {}
    for ids in groups.values():
        beside = slots[ids[0]].jobs - 1  # started with the first, before its cache exists
        if len(ids) - beside > 1:
            shares[ids[0]] = len(ids) - beside
    return shares


def fits(slot: Slot, active: list[Slot]) -> bool:
    """Whether a run may start now: fewer runs train than it and each of them allow."""
    return len(active) < min([slot.jobs, *(a.jobs for a in active)])
