"""--jobs auto's measurement: a run's step alone on every core, and beside copies of itself.

Whether packing pays depends on the CPU as much as on the model: on a 2-core AMD EPYC (Zen 4)
two copies of each of the scaling study's shapes side by side, one thread each, did 1.06-1.43x
the work of one on both cores (minutes apart, the same shape moved by a quarter); on an Intel
Ice Lake VM its A and B side by side did 1.05x. So this measures, per
machine and shape, in short alternating rounds: the training step (chargpt.step, eager, the
run's resolved dtype, a random batch) of one process on `cores` threads, then of `cores`
processes on one thread each stepping at once. Each side is a child of the study's zygote
(chargpt.study.forked) that lives for the whole measurement, so a round costs its steps.
chargpt.study.pack_record keeps the figures per machine for --jobs auto.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import signal
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier
from typing import Any

from chargpt.config import RunConfig
from chargpt.study.local import PROCESS_PREFIX, die_with_parent

WARMUP_STEPS = 2  # untimed steps on each thread count a copy first steps with
MIN_STEPS = 2  # timed steps a side a round, however long a step takes
BARRIER_TIMEOUT_S = 300.0  # copies that cannot all start stepping within this are a failure
CLOSE_GRACE_S = 5.0  # copies told to stop that have not within this are killed


class ProbeError(RuntimeError):
    """The measurement could not be taken (a child failed); the message says why."""


@dataclass(frozen=True)
class PackSpeed:
    """One shape's step on this machine: alone on every core, and beside copies of itself."""

    alone_s: float  # seconds a step, one process on `cores` threads (median of the rounds)
    beside_s: float  # seconds a step, `cores` processes on 1 thread each (alone_s / median r)
    relative: tuple[float, ...]  # each round's alone_s / beside_s: r; cores * r is the gain
    cores: int
    alone: tuple[float, ...] = ()  # each round's seconds a step alone (where known)

    @property
    def gain(self) -> float:
        """Throughput of `cores` copies side by side over one alone on every core."""
        return self.cores * self.alone_s / self.beside_s

    @classmethod
    def from_rounds(
        cls, alone: Sequence[float], relative: Sequence[float], cores: int
    ) -> PackSpeed:
        """The figure of some rounds: the median step alone, and beside it the step alone over
        the median ratio (a ratio is taken within a round, where a slow spell hits both)."""
        alone_s = statistics.median(alone)
        return cls(
            alone_s, alone_s / statistics.median(relative), tuple(relative), cores, tuple(alone)
        )


def _child(
    config: dict[str, Any], vocab_size: int, barrier: Barrier, timed: Any, conn: Connection
) -> None:
    """One copy of the run for a measurement: build its model and step, then answer the
    parent's commands: (threads, seconds, together) steps for `seconds` on `threads` threads
    and sends back the seconds a step; None ends it. Errors are sent back as text.
    together > 1: all copies step at once, from the barrier on; a copy done timing counts
    itself in `timed` (a shared int) and steps on, untimed, until all `together` are, so no
    copy's timed steps run beside fewer copies (a group's steps differ in length)."""
    die_with_parent()  # the zygote's child: dies with it, and the zygote with the runner
    try:
        import torch

        from chargpt.heap import keep_freed_memory
        from chargpt.model import GPT
        from chargpt.precision import run_device_and_dtype
        from chargpt.run_setup import build_train_step
        from chargpt.step import random_batch, time_steps

        keep_freed_memory()  # as a training process does: no page faults for freed activations
        run = RunConfig.from_dict(config)
        device, dtype = run_device_and_dtype(run)
        model = GPT(dataclasses.replace(run.model, vocab_size=vocab_size)).to(device)
        _, step = build_train_step(model, run, device, dtype, compiled=False)
        batch = random_batch(vocab_size, run.train.batch_size, run.model.block_size, device)
        lr, warm = run.optim.lr, set[int]()
        conn.send(("ok", None))
        while (command := conn.recv()) is not None:
            threads, seconds, together = command
            torch.set_num_threads(threads)
            # The first steps on a thread count pay allocations and the thread team's start.
            for _ in range(0 if threads in warm else WARMUP_STEPS):
                step(*batch, lr)
            warm.add(threads)
            if together > 1:
                barrier.wait(BARRIER_TIMEOUT_S)
            seconds_a_step = time_steps(step, batch, lr, MIN_STEPS, seconds)[0]
            if together > 1:
                with timed.get_lock():
                    timed.value += 1
                while timed.value < together and not barrier.broken:  # broken: one failed
                    step(*batch, lr)
            conn.send(("ok", seconds_a_step))
    except BaseException as exc:  # noqa: BLE001 (reported to the parent, which raises it)
        barrier.abort()  # the other copies must not wait for this one
        why = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, threading.BrokenBarrierError):  # it has no message of its own
            why = (
                f"BrokenBarrierError: the copies did not all start within {BARRIER_TIMEOUT_S:.0f} s"
            )
        try:
            conn.send(("error", why))
        except OSError:  # the parent has gone
            pass
    finally:
        conn.close()


class Copies:
    """One process per (run, vocab_size), each holding that run's model and step (copies of
    one run, or a group's runs): children of the study's zygote, so each starts in ~0.1 s
    with torch imported. A copy that fails, or dies outright (the OOM killer), ends the
    measurement with its own error; close() ends every copy."""

    def __init__(self, runs: list[tuple[RunConfig, int]]) -> None:
        from chargpt.study.forked import start_zygote

        start_zygote()
        ctx = multiprocessing.get_context("forkserver")
        self.barrier = ctx.Barrier(len(runs))
        self.timed = ctx.Value("i", 0)  # copies done timing in a round side by side
        self.procs: list[BaseProcess] = []
        self.conns: list[Connection] = []
        try:
            for run, vocab_size in runs:
                parent, child = ctx.Pipe(duplex=True)
                self.conns.append(parent)
                proc = ctx.Process(
                    target=_child,
                    args=(run.to_dict(), vocab_size, self.barrier, self.timed, child),
                    name=f"{PROCESS_PREFIX}pack-probe",
                )
                proc.start()
                child.close()
                self.procs.append(proc)
            self._answers(list(range(len(runs))))  # each has built its model
        except BaseException:
            self.close()
            raise

    def step(self, which: list[int], threads: int, seconds: float) -> list[float]:
        """Seconds a step of the copies in `which`, stepping at once on `threads` threads."""
        self.timed.value = 0  # no copy is stepping now: each has answered the last command
        for i in which:
            try:
                self.conns[i].send((threads, seconds, len(which)))
            except OSError:  # it has died: _answers says how, once the barrier is broken
                self.barrier.abort()
        return [float(v) for v in self._answers(which)]

    def _answers(self, which: list[int]) -> list[Any]:
        """Each copy's answer, in the order of `which`, read as they come; a copy that dies
        instead breaks the barrier (the others stop waiting) and is reported by how it died."""
        pending = {self.procs[i].sentinel: i for i in which}
        pending.update({self.conns[i].fileno(): i for i in which})
        answers: dict[int, Any] = {}
        while pending:
            for ready in multiprocessing.connection.wait(list(pending)):
                i = pending.get(ready)  # type: ignore[call-overload]
                if i is None:  # the copy's other handle, already dealt with in this pass
                    continue
                try:
                    if not self.conns[i].poll():
                        raise EOFError  # only its sentinel is ready: it ended without a word
                    answers[i] = self.conns[i].recv()
                except (EOFError, OSError):  # closed, or reset by a copy killed mid-send
                    self.barrier.abort()
                    answers[i] = ("error", _how_it_ended(self.procs[i]))
                pending = {key: j for key, j in pending.items() if j != i}
        errors = [str(answers[i][1]) for i in which if answers[i][0] != "ok"]
        if errors:
            # A copy that failed aborts the barrier, so the others report BrokenBarrierError:
            # the first real error is the one to show.
            real = [e for e in errors if not e.startswith("BrokenBarrierError")] or errors
            raise ProbeError(real[0])
        return [answers[i][1] for i in which]

    def close(self) -> None:
        """End every copy: told to stop, then killed if it has not within a few seconds."""
        self.barrier.abort()  # none may be left waiting for the others
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:  # that copy has gone
                pass
        deadline = time.monotonic() + CLOSE_GRACE_S
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                proc.kill()
                proc.join()
            proc.close()  # its sentinel: a long session must not run out of descriptors
        for conn in self.conns:
            conn.close()


def _how_it_ended(proc: BaseProcess) -> str:
    proc.join(1.0)
    code = proc.exitcode
    if code is None:
        return "a copy stopped answering"
    if code < 0:
        oom = " (SIGKILL: out of memory?)" if -code == signal.SIGKILL else ""
        return f"a copy was killed by signal {-code}{oom}"
    return f"a copy exited with code {code} without an answer"


def too_big(run: RunConfig, vocab_size: int, copies: int) -> str | None:
    """Why `copies` of the run's step at once would not fit this machine's memory (the claims
    probe's rough estimate against 40% of the available RAM), or None when they fit."""
    import torch

    from chargpt.claims.probe import estimate_mb, memory_budget_mb

    sized = dataclasses.replace(run, model=dataclasses.replace(run.model, vocab_size=vocab_size))
    need, budget = (
        copies * estimate_mb(sized, run.train.batch_size),
        memory_budget_mb(torch.device("cpu")),
    )
    if need <= budget:
        return None
    return (
        f"{copies} copies would need ~{need:,.0f} MiB, over 40% of the free memory ({budget:,.0f})"
    )


def measure_speed(
    run: RunConfig, vocab_size: int, cores: int, rounds: int = 5, seconds: float = 0.5
) -> PackSpeed:
    """The run's step alone on `cores` threads and as one of `cores` copies stepping at once
    on one thread each: `rounds` rounds of about `seconds` of steps each way, alternating
    which goes first (a slow spell of a shared machine then hits both). The copies live for
    the whole measurement, so a round costs its steps, not a start or a model."""
    if cores < 2:
        raise ValueError(f"packing needs at least 2 cores, got {cores}")
    if (why := too_big(run, vocab_size, cores)) is not None:
        raise ProbeError(why)
    copies = Copies([(run, vocab_size)] * cores)  # on failure it ends its copies itself
    try:
        alone, relative = alternate_rounds(
            rounds,
            alone=lambda i: [copies.step([i % cores], cores, seconds)[0]],
            beside=lambda: [statistics.mean(copies.step(list(range(cores)), 1, seconds))],
        )
    finally:
        copies.close()
    return PackSpeed.from_rounds(alone[0], relative[0], cores)


def alternate_rounds(
    rounds: int, alone: Callable[[int], list[float]], beside: Callable[[], list[float]]
) -> tuple[list[list[float]], list[list[float]]]:
    """`rounds` rounds of both sides, alternating which goes first (a slow spell of a shared
    machine then hits both): alone(round) and beside() each give seconds a step for the same
    runs, in the same order. Per run: each round's seconds alone, and alone / beside."""
    alone_s: list[list[float]] = []
    relative: list[list[float]] = []
    for i in range(rounds):
        if i % 2 == 0:
            a, b = alone(i), beside()
        else:
            b = beside()
            a = alone(i)
        if not alone_s:
            alone_s, relative = [[] for _ in a], [[] for _ in a]
        for j, (x, y) in enumerate(zip(a, b, strict=True)):
            alone_s[j].append(x)
            relative[j].append(x / y)
    return alone_s, relative
