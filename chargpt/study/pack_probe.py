"""--jobs auto's measurement: a run's step alone on every core, and beside copies of itself.

Whether packing pays depends on the CPU as much as on the model: on a 2-core AMD EPYC (Zen 4)
two copies of the scaling study's shapes side by side, one thread each, did 0.98-1.12x the
work of one on both cores; on an Intel Ice Lake the A+B pair did 1.05x. So this measures, per
machine and shape, in short alternating rounds: the training step (chargpt.step, eager, the
run's resolved dtype, a random batch) of one process on `cores` threads, then of `cores`
processes on one thread each stepping at once. Each side is a child of the study's zygote
(chargpt.study.forked) that lives for the whole measurement, so a round costs its steps.
`python -m bench.packing STUDY` measures a study's shapes; the figures are kept per machine
(`packing.json` in chargpt's cache directory) for every later `--jobs auto` to use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from chargpt.config import RunConfig
from chargpt.files import read_json_object, write_json

PROBE_VERSION = 1  # bump when the measurement changes: cached figures are measured again
MAX_AGE_DAYS = 30.0  # a cached figure older than this is measured again
LOCK_TIMEOUT_S = 600.0  # another process measuring holds the cache this long at most
WARMUP_STEPS = 2  # untimed steps on each thread count a copy first steps with
BARRIER_TIMEOUT_S = 300.0  # copies that cannot all start stepping within this are a failure


class ProbeError(RuntimeError):
    """The measurement could not be taken (a child failed); the message says why."""


@dataclass(frozen=True)
class PackSpeed:
    """One shape's step on this machine: alone on every core, and beside copies of itself."""

    alone_s: float  # seconds a step, one process on `cores` threads (median of the rounds)
    beside_s: float  # seconds a step, `cores` processes on 1 thread each (alone_s / median r)
    relative: tuple[float, ...]  # each round's alone_s / beside_s: r; cores * r is the gain
    cores: int

    @property
    def gain(self) -> float:
        """Throughput of `cores` copies side by side over one alone on every core."""
        return self.cores * self.alone_s / self.beside_s


def _child(config: dict[str, Any], vocab_size: int, barrier: Any, conn: Connection) -> None:
    """One copy of the run for a measurement: build its model and step, then answer the
    parent's commands: (threads, seconds, together) steps for `seconds` on `threads` threads
    (at the barrier first when `together`, so all copies step at once) and sends back the
    seconds a step; None ends it. Errors are sent back as text."""
    try:
        import torch

        from chargpt.heap import keep_freed_memory
        from chargpt.model import GPT
        from chargpt.precision import run_device_and_dtype
        from chargpt.train import build_train_step

        keep_freed_memory()  # as a training process does: no page faults for freed activations
        run = RunConfig.from_dict(config)
        device, dtype = run_device_and_dtype(run)
        model = GPT(dataclasses.replace(run.model, vocab_size=vocab_size)).to(device)
        _, step = build_train_step(model, run, device, dtype, compiled=False)
        shape = (run.train.batch_size, run.model.block_size)
        x = torch.randint(0, vocab_size, shape, device=device)
        y = torch.randint(0, vocab_size, shape, device=device)
        lr, warm = run.optim.lr, set()
        conn.send(("ok", None))
        while (command := conn.recv()) is not None:
            threads, seconds, together = command
            torch.set_num_threads(threads)
            # The first steps on a thread count pay allocations and the thread team's start.
            for _ in range(0 if threads in warm else WARMUP_STEPS):
                step(x, y, lr)
            warm.add(threads)
            if together:
                barrier.wait(BARRIER_TIMEOUT_S)
            t0, n = time.perf_counter(), 0
            while n < 2 or time.perf_counter() - t0 < seconds:
                step(x, y, lr).item()  # .item(): the step has finished (a sync on any device)
                n += 1
            conn.send(("ok", (time.perf_counter() - t0) / n))
    except BaseException as exc:  # noqa: BLE001 (reported to the parent, which raises it)
        barrier.abort()  # the other copies must not wait for this one
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:  # the parent has gone
            pass
    finally:
        conn.close()


class _Copies:
    """`n` processes, each holding the run's model and step (children of the study's zygote,
    so each starts in ~0.1 s with torch imported)."""

    def __init__(self, run: RunConfig, vocab_size: int, n: int) -> None:
        from chargpt.study.forked import start_zygote

        start_zygote()
        ctx = multiprocessing.get_context("forkserver")
        self.barrier = ctx.Barrier(n)
        self.procs, self.conns = [], []
        for _ in range(n):
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=_child,
                args=(run.to_dict(), vocab_size, self.barrier, child),
                name="chargpt-pack-probe",
            )
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        self._answers(self.conns)  # each has built its model

    def step(self, which: list[int], threads: int, seconds: float) -> list[float]:
        """Seconds a step of the copies in `which`, stepping at once on `threads` threads."""
        conns = [self.conns[i] for i in which]
        for conn in conns:
            conn.send((threads, seconds, len(which) > 1))
        return [float(v) for v in self._answers(conns)]

    def _answers(self, conns: list[Connection]) -> list[Any]:
        answers = []
        for conn in conns:
            try:
                answers.append(conn.recv())
            except EOFError:
                answers.append(("error", "the process ended without an answer"))
        errors = [str(value) for status, value in answers if status != "ok"]
        if errors:
            # A copy that failed aborts the barrier, so the others report BrokenBarrierError:
            # the first real error is the one to show.
            real = [e for e in errors if not e.startswith("BrokenBarrierError")] or errors
            raise ProbeError(real[0])
        return [value for _, value in answers]

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self.procs:
            proc.join(BARRIER_TIMEOUT_S)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()


def measure_speed(
    run: RunConfig, vocab_size: int, cores: int, rounds: int = 5, seconds: float = 0.5
) -> PackSpeed:
    """The run's step alone on `cores` threads and as one of `cores` copies stepping at once
    on one thread each: `rounds` rounds of about `seconds` of steps each way, alternating
    which goes first (a slow spell of a shared machine then hits both). The copies live for
    the whole measurement, so a round costs its steps, not a start or a model."""
    if cores < 2:
        raise ValueError(f"packing needs at least 2 cores, got {cores}")
    copies = _Copies(run, vocab_size, cores)
    alone, relative = [], []
    try:
        for i in range(rounds):
            sides: dict[str, float] = {}
            for side in ("alone", "beside") if i % 2 == 0 else ("beside", "alone"):
                if side == "alone":
                    sides[side] = copies.step([i % cores], cores, seconds)[0]
                else:
                    sides[side] = statistics.mean(copies.step(list(range(cores)), 1, seconds))
            alone.append(sides["alone"])
            relative.append(sides["alone"] / sides["beside"])
    finally:
        copies.close()
    alone_s = statistics.median(alone)
    return PackSpeed(
        alone_s=alone_s,
        beside_s=alone_s / statistics.median(relative),
        relative=tuple(relative),
        cores=cores,
    )


def speed_key(run: RunConfig, vocab_size: int, cores: int) -> str:
    """What decides the measurement: torch, the processor (its name and flags: VMs of two
    generations can share a name such as "AMD EPYC"), the cores, model shape, batch and dtype
    (as the run resolves it), and this probe's version."""
    import torch

    from chargpt.measure import cpu_flags, cpu_model
    from chargpt.precision import resolve_dtype

    blob = json.dumps(
        {
            "v": PROBE_VERSION,
            "torch": torch.__version__,
            "cpu": cpu_model(),
            "cpu_flags": cpu_flags(),
            "cores": cores,
            "model": dataclasses.asdict(dataclasses.replace(run.model, vocab_size=vocab_size)),
            "batch_size": run.train.batch_size,
            "dtype": resolve_dtype(torch.device("cpu"), run.train.dtype),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cache_file() -> Path:
    from chargpt.data import cache_dir

    return cache_dir() / "packing.json"


def _from_entry(entry: Any, cores: int) -> PackSpeed | None:
    """A cached entry as a PackSpeed; None when it is malformed or too old."""
    try:
        age_days = (time.time() - float(entry["measured_at"])) / 86400
        speed = PackSpeed(
            alone_s=float(entry["alone_s"]),
            beside_s=float(entry["beside_s"]),
            relative=tuple(float(r) for r in entry["relative"]),
            cores=cores,
        )
    except (KeyError, TypeError, ValueError):
        return None
    fresh = 0 <= age_days <= MAX_AGE_DAYS and speed.alone_s > 0 and speed.beside_s > 0
    return speed if fresh else None


def cached_speed(run: RunConfig, vocab_size: int, cores: int) -> PackSpeed | None:
    """The run's PackSpeed as this machine last measured it; None when it has not (or the
    figure is too old, or was taken on another number of cores)."""
    entries = read_json_object(_cache_file())
    return _from_entry(entries.get(speed_key(run, vocab_size, cores)), cores)


def measure_and_record(
    run: RunConfig,
    vocab_size: int,
    cores: int,
    label: str = "",
    rounds: int = 5,
    seconds: float = 0.5,
) -> PackSpeed:
    """Measure the run's PackSpeed (measure_speed) and keep it for --jobs auto. The cache is
    written under a file lock, which is also held while measuring, so two measurements never
    run at once (which would slow both)."""
    path = _cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise ProbeError(
            f"{path}.lock: held by another measurement for {LOCK_TIMEOUT_S:.0f} s"
        ) from None
    try:
        speed = measure_speed(run, vocab_size, cores, rounds, seconds)
        entries = read_json_object(path)
        entries[speed_key(run, vocab_size, cores)] = {
            "label": label,
            "model": f"L{run.model.n_layer} H{run.model.n_head} C{run.model.n_embd} "
            f"T{run.model.block_size} B{run.train.batch_size}",
            "cores": cores,
            "alone_s": speed.alone_s,
            "beside_s": speed.beside_s,
            "relative": list(speed.relative),
            "gain": speed.gain,
            "measured_at": time.time(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
        write_json(path, entries)
        return speed
    finally:
        lock.release()


def forget_packing_speeds() -> None:
    """Drop every cached figure (run_study.py --reprobe), so each is measured again."""
    path = _cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S):
        path.unlink(missing_ok=True)
