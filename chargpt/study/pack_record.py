"""--jobs auto's figures: each shape's PackSpeed as this machine measured it, kept in
`packing.json` in chargpt's cache directory (chargpt.machine_cache) by `python -m bench.packing`
for every later study on the machine to use."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from filelock import FileLock, Timeout

from chargpt import machine_cache
from chargpt.config import RunConfig
from chargpt.files import read_json_object, write_json
from chargpt.study.pack_group import measure_group
from chargpt.study.pack_probe import PackSpeed, ProbeError, measure_speed, too_big

PROBE_VERSION = 2  # bump when the measurement changes: figures taken before are not used
# A shape's figure is the median of its latest rounds over measurements, not of the last
# measurement alone: on a shared VM one measurement of five rounds can land in a slow spell
# (on a Zen 5, A's step alone read 32.5 ms, then 45.6 ms three minutes later), which flips
# auto's choice for groups near MIN_GAIN. Three measurements' worth; rounds older than
# machine_cache.MAX_AGE_DAYS drop out, and run_study.py --reprobe drops them all.
POOL_ROUNDS = 15
LOCK_TIMEOUT_S = 600.0  # how long to wait for another measurement holding the cache's lock
CACHE_NAME = "packing.json"


def speed_key(run: RunConfig, vocab_size: int, cores: int) -> str:
    """What decides the measurement: torch, the processor (its name and flags: VMs of two
    generations can share a name such as "AMD EPYC"), the cores, model shape, batch and dtype
    setting (`auto` resolves alike on one machine), and this probe's version."""
    import torch

    from chargpt.measure import cpu_flags, cpu_model

    blob = json.dumps(
        {
            "v": PROBE_VERSION,
            "torch": torch.__version__,
            "cpu": cpu_model(),
            "cpu_flags": cpu_flags(),
            "cores": cores,
            "model": dataclasses.asdict(dataclasses.replace(run.model, vocab_size=vocab_size)),
            "batch_size": run.train.batch_size,
            "dtype": run.train.dtype,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_speed(run: RunConfig, vocab_size: int, cores: int) -> PackSpeed | None:
    """The run's PackSpeed as this machine last measured it; None when it has not, or the
    figure is older than machine_cache.MAX_AGE_DAYS, or was taken on another number of cores."""
    entry = read_json_object(machine_cache.cache_file(CACHE_NAME)).get(
        speed_key(run, vocab_size, cores)
    )
    if not machine_cache.taken_recently(entry):
        return None
    try:
        speed = PackSpeed(
            alone_s=float(entry["alone_s"]),
            beside_s=float(entry["beside_s"]),
            relative=tuple(float(r) for r in entry["relative"]),
            cores=cores,
        )
    except (KeyError, TypeError, ValueError):
        return None
    return speed if speed.alone_s > 0 and speed.beside_s > 0 else None


def figures_for(run: RunConfig, vocab_size: int, cores: int) -> PackSpeed | None:
    """The figures --jobs auto may place the run by: this machine's (cached_speed), and only
    for a run that trains as they were taken (on the CPU, not `compile: true`, on the threads
    auto gives it) and of which `cores` copies fit in memory at once; else None (by size)."""
    from chargpt.measure import resolve_device

    train = run.train
    if train.compile is True or train.threads is not None:
        return None
    if resolve_device(train.device).type != "cpu" or too_big(run, vocab_size, cores):
        return None
    return cached_speed(run, vocab_size, cores)


def measure_and_record(
    run: RunConfig,
    vocab_size: int,
    cores: int,
    label: str = "",
    rounds: int = 5,
    seconds: float = 0.5,
) -> tuple[PackSpeed, PackSpeed]:
    """Measure the run's PackSpeed (pack_probe.measure_speed), pool its rounds with the
    recent ones kept (POOL_ROUNDS) and keep that for --jobs auto; returns (this
    measurement, what is kept). OSError: the cache cannot be written."""
    path = machine_cache.cache_file(CACHE_NAME)
    key = speed_key(run, vocab_size, cores)
    with _measuring():
        speed = measure_speed(run, vocab_size, cores, rounds, seconds)
        entries = read_json_object(path)
        pooled = _pool(entries.get(key), speed)
        kept = PackSpeed.from_rounds([a for a, _, _ in pooled], [r for _, r, _ in pooled], cores)
        entries[key] = {
            "label": label,
            "model": f"L{run.model.n_layer} H{run.model.n_head} C{run.model.n_embd} "
            f"T{run.model.block_size} B{run.train.batch_size}",
            "cores": cores,
            "alone_s": kept.alone_s,
            "beside_s": kept.beside_s,
            "relative": list(kept.relative),
            "gain": kept.gain,
            "rounds": pooled,  # [alone_s, alone_s / beside_s, measured_at] each
            "measurements": len({at for _, _, at in pooled}),
            **machine_cache.stamp(),
        }
        write_json(path, entries)
        return speed, kept


def _pool(entry: Any, speed: PackSpeed) -> list[list[float]]:
    """The entry's rounds still recent, then this measurement's, the last POOL_ROUNDS of them
    ([alone_s, relative, measured_at] each); a damaged entry counts as none."""
    rounds: list[list[float]] = []
    if machine_cache.taken_recently(entry) and isinstance(entry.get("rounds"), list):
        for item in entry["rounds"]:
            try:
                alone_s, relative, at = (float(x) for x in item)
            except (TypeError, ValueError):
                continue
            if alone_s > 0 and relative > 0 and machine_cache.taken_recently({"measured_at": at}):
                rounds.append([alone_s, relative, at])
    now = time.time()
    rounds += [[a, r, now] for a, r in zip(speed.alone, speed.relative, strict=True)]
    return rounds[-POOL_ROUNDS:]


def measure_group_alone(
    runs: list[tuple[RunConfig, int]], rounds: int = 5, seconds: float = 0.5
) -> list[PackSpeed]:
    """A group's runs together (pack_group.measure_group), with no other measurement running;
    a check on the figures' prediction, so nothing is kept."""
    with _measuring():
        return measure_group(runs, rounds, seconds)


@contextmanager
def _measuring() -> Iterator[None]:
    """Hold the cache's lock while measuring, so two measurements never run at once (each
    would slow the other). OSError: the cache's folder cannot be written."""
    path = machine_cache.cache_file(CACHE_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise ProbeError(
            f"{path}.lock: another measurement held it {LOCK_TIMEOUT_S:.0f} s"
        ) from None
    try:
        yield
    finally:
        lock.release()


def forget_packing_speeds() -> None:
    """Drop every figure (run_study.py --reprobe): auto goes by size until bench.packing
    measures again."""
    machine_cache.forget(machine_cache.cache_file(CACHE_NAME), LOCK_TIMEOUT_S)
