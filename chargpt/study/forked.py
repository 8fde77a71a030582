"""Local runs forked from a warm zygote: torch and the trainer imported once, not once per run.

A fresh `python -m chargpt.study.worker` spends ~2 s importing torch before its first step.
Here a zygote (multiprocessing's forkserver, started with the first study of a process, with
the training modules preloaded) forks one child per run. The zygote only imports: it never
runs torch compute, so no OpenMP pool or other worker threads exist when it forks (forking
after them is unsafe).
Each child is still a process of its own, like a fresh worker: its own session (a timeout or
Ctrl-C stops its whole group), SIGKILL when its parent dies (the zygote, which exits when the
runner does), stderr to run_dir/worker.log, progress as JSON lines on a pipe, and a peak RSS
measured from its own start (the high-water mark is reset after the fork). The runner hands
each run its corpus by content, as the Ray executor does: the synthetic corpus alone takes
~2 s to generate in a fresh process.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import sys
import threading
import time
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from chargpt.config import RunConfig
from chargpt.corpus import corpus_fingerprint, load_corpus
from chargpt.measure import oom_kill_count, reset_peak_rss
from chargpt.study.local import (
    PROCESS_PREFIX,
    RunProcess,
    die_with_parent,
    read_progress,
    worker_argv,
)

log = logging.getLogger("chargpt.study")

# What the zygote imports before it forks: everything a run needs before its first step.
PRELOAD = [
    "chargpt.study.zygote",  # first: the zygote dies with the runner from here on
    "torch",
    "chargpt.train",
    "chargpt.study.worker",
    "chargpt.study.forked",
]
ENDED = "_ended"  # the last event of a child: its progress pipe closed (it exited)


# Environment variables read while the zygote imports (OpenMP and MKL size their thread
# pools, torch and CUDA read their settings, Python its paths) rather than when a run starts.
IMPORT_TIME_ENV = ("OMP_", "MKL_", "KMP_", "GOMP_", "TORCH", "PYTORCH", "CUDA", "PYTHON", "LD_")
_zygote_env: tuple[tuple[str, str], ...] | None = None  # what the running zygote started with


def _import_time_env() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(IMPORT_TIME_ENV)))


def start_zygote() -> None:
    """Have a zygote running (it imports in the background while the runner plans).

    One zygote serves every study this process runs (a notebook, the tests): each child takes
    the runner's environment as it is at the fork. A zygote started under other import-time
    variables (say OMP_NUM_THREADS) is replaced, since its imports have read them.
    """
    global _zygote_env
    env = _import_time_env()
    if _zygote_env is not None and env != _zygote_env:
        stop_zygote()
    if _zygote_env is None and _forkserver_alive():
        log.warning(
            "a multiprocessing forkserver this process started before its first study is "
            "running: runs fork from it, without torch imported and running this script "
            "again (a second or more each); start the study before other forkserver work"
        )
    multiprocessing.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    _zygote_env = env


def _forkserver_alive() -> bool:
    """Whether this process's forkserver (multiprocessing's one per process) is running."""
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # noqa: SLF001
    if pid is None:
        return False
    try:  # WNOWAIT: a dead one stays for multiprocessing to reap (it would fail otherwise)
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


def stop_zygote() -> None:
    """End the zygote now (the next study starts another); it also ends with this process."""
    global _zygote_env
    stop = getattr(forkserver._forkserver, "_stop", None)  # noqa: SLF001 (CPython >= 3.9)
    if stop is not None:
        stop()
    _zygote_env = None


def _child(
    argv: list[str],
    env: dict[str, str],
    progress: Connection,
    log_path: str,
    corpus: tuple[str, str, str],
) -> None:
    """The run's process, right after the fork: become a fresh worker, then run it."""
    os.setsid()  # its own session and group: stopped as a whole, deaf to the terminal's Ctrl-C
    die_with_parent()
    os.environ.clear()  # the runner's environment now, not the zygote's at its start
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    os.dup2(progress.fileno(), 1)  # the worker prints its progress lines to stdout
    progress.close()
    reset_peak_rss()  # the zygote's pages count only as far as this run keeps them resident
    from chargpt.corpus import provide_corpus
    from chargpt.study.worker import main

    provide_corpus(*corpus)  # the runner's text: not read, generated or hashed again per run

    sys.exit(main(argv))


class ForkedWorker(RunProcess):
    """One run in a child of the zygote; the same interface as local.WorkerProcess."""

    def __init__(
        self,
        run_id: str,
        label: str,
        run_dir: Path,
        threads: int | None,
        timeout_s: float | None,
        events: queue.Queue[tuple[str, dict[str, Any]]],
        compile_shared_by: int = 1,
    ) -> None:
        self.run_id = run_id
        self.hostname = socket.gethostname()
        self.timeout_s = timeout_s
        self.killed_for_timeout = False
        self.log_path = run_dir / "worker.log"
        argv = worker_argv(run_dir, label, threads, compile_shared_by)
        ctx = multiprocessing.get_context("forkserver")
        corpus = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())).data.corpus
        text = (corpus, load_corpus(corpus), corpus_fingerprint(corpus))  # the runner has both
        reader, writer = ctx.Pipe(duplex=False)
        self.oom_kills_before = oom_kill_count()
        self.proc = ctx.Process(
            target=_child,
            args=(argv, dict(os.environ), writer, str(self.log_path), text),
            name=f"{PROCESS_PREFIX}run-{run_id}",
        )
        self.proc.start()
        self.started = time.monotonic()
        self._sentinel = self.proc.sentinel
        writer.close()  # the child holds the only write end: its exit ends the reader
        self._code: int | None = None
        stream = open(os.dup(reader.fileno()), encoding="utf-8")
        reader.close()
        self._reader = threading.Thread(target=self._read, args=(stream, events), daemon=True)
        self._reader.start()

    def _read(self, stream: Any, events: queue.Queue[tuple[str, dict[str, Any]]]) -> None:
        with stream:
            read_progress(self.run_id, stream, events)
        # Its output closed as it exited: once the zygote has its exit status too, wake
        # the runner at once (not at its next poll).
        multiprocessing.connection.wait([self._sentinel], timeout=5)
        events.put((self.run_id, {ENDED: True}))

    def returncode(self) -> int | None:
        return self._code if self._code is not None else self.proc.exitcode

    def release(self) -> None:
        if self._code is None:
            self._code = self.proc.exitcode
            self.proc.close()  # its sentinel: a long study must not run out of descriptors

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to the run's process group, then SIGKILL if it does not end within grace_s."""
        if self.returncode() is not None:
            return
        self._signal(signal.SIGTERM)
        self.proc.join(grace_s)
        if self.proc.exitcode is None:
            self._signal(signal.SIGKILL)
            self.proc.join()

    def _signal(self, sig: int) -> None:
        pid = self.proc.pid
        assert pid is not None
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:  # not yet its own group (just forked): the process alone
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
