"""The local executor: each run in a worker process of its own, with progress lines, timeouts,
kill (a fork of a warm zygote here, see forked.py; a fresh interpreter on Ray nodes)."""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from chargpt.measure import oom_kill_count
from chargpt.schema import ERROR, KILLED, OOM, TIMEOUT

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
# How the processes chargpt forks from its zygote are named; by it the zygote (zygote.py)
# knows them from any other process the caller forks from the same forkserver.
PROCESS_PREFIX = "chargpt-"


def die_with_parent() -> None:
    """In a run's process (Linux): get SIGKILL when its parent dies, so no orphan keeps
    training into a directory that a resumed runner is about to reuse."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the worker also polls its parent at every progress report


def read_progress(
    run_id: str, lines: Iterable[str], events: queue.Queue[tuple[str, dict[str, Any]]]
) -> None:
    """A run's progress: each JSON line its worker prints, as an event for the runner."""
    for line in lines:
        try:
            events.put((run_id, json.loads(line)))
        except ValueError:
            pass  # a stray print in the worker is not progress


class RunProcess:
    """What every local run's process has: a timeout, OOM evidence, its elapsed time."""

    timeout_s: float | None
    killed_for_timeout: bool
    oom_kills_before: int | None
    started: float
    _reader: threading.Thread

    def returncode(self) -> int | None:
        """The exit code, None while it runs (no waiting)."""
        raise NotImplementedError

    def stop(self, grace_s: float = 5.0) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """Free what the ended process held (log, descriptors)."""

    def poll(self) -> int | None:
        """The exit code once the run has ended (killing it first if it ran past its time)."""
        code = self.returncode()
        if code is None and self.timeout_s is not None and self.elapsed() > self.timeout_s:
            self.killed_for_timeout = True
            self.stop()
            code = self.returncode()
        if code is not None:
            self._reader.join(timeout=5)
            self.release()
        return code

    def oom_kills(self) -> int | None:
        """How far the cgroup's OOM-kill counter rose since this run started (None: unknown)."""
        now = oom_kill_count()
        if now is None or self.oom_kills_before is None:
            return None
        return now - self.oom_kills_before

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def worker_argv(
    run_dir: Path, label: str, threads: int | None, compile_shared_by: int = 1
) -> list[str]:
    """The arguments of chargpt.study.worker for one run (a fresh or a forked worker)."""
    argv = [str(run_dir), "--label", label]
    if threads:
        argv += ["--threads", str(threads)]
    if compile_shared_by > 1:
        argv += ["--compile-shared-by", str(compile_shared_by)]
    return argv


class WorkerProcess(RunProcess):
    """A running `python -m chargpt.study.worker` for one run."""

    def __init__(
        self,
        run_id: str,
        label: str,
        run_dir: Path,
        threads: int | None,
        timeout_s: float | None,
        events: queue.Queue[tuple[str, dict[str, Any]]],
        extra_args: Sequence[str] = (),
        compile_shared_by: int = 1,
    ) -> None:
        self.run_id = run_id
        self.hostname = socket.gethostname()  # where it runs: this machine
        self.timeout_s = timeout_s
        self.killed_for_timeout = False
        cmd = [sys.executable, "-m", "chargpt.study.worker"]
        cmd += worker_argv(run_dir, label, threads, compile_shared_by) + list(extra_args)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])
        )
        self.log_path = run_dir / "worker.log"
        self._log = open(self.log_path, "w")
        self.oom_kills_before = oom_kill_count()
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops workers
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.started = time.monotonic()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=read_progress, args=(run_id, self.proc.stdout, events), daemon=True
        )
        self._reader.start()

    def returncode(self) -> int | None:
        return self.proc.poll()

    def release(self) -> None:
        self._log.close()

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it does not end within grace_s."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class LocalExecutor:
    """Runs each run on this machine, forked from a warm zygote (the runner's default executor);
    WorkerProcess (a fresh interpreter per run) stays for the Ray executor's nodes."""

    def __init__(self) -> None:
        from chargpt.study.forked import ForkedWorker, start_zygote

        start_zygote()  # it imports torch while the runner describes the study
        self.worker = ForkedWorker

    def close(self) -> None:
        pass  # the zygote stays for this process's next study (it ends with the process)


class FreshExecutor:
    """Each run in a fresh interpreter (`python -m chargpt.study.worker`), as before the zygote:
    what bench.startup_overhead compares the zygote against."""

    worker = WorkerProcess

    def close(self) -> None:
        pass  # nothing held between runs


def failure(
    code: int,
    killed_for_timeout: bool,
    timeout_s: float | None,
    oom_kills: int | None,
    log_path: Path,
) -> tuple[str, str]:
    """(status, error) for a worker that ended without writing its result.

    oom_kills is how much the cgroup's OOM-kill counter rose while the worker ran (None if
    unknown): only that rise makes a kill `oom`; any other signal is `killed`.
    """
    if killed_for_timeout:
        return TIMEOUT, f"run exceeded its timeout of {timeout_s:g} s and was stopped"
    if code < 0:
        name = signal.Signals(-code).name
        if oom_kills:
            return OOM, (
                f"worker was killed by {name}: the kernel's OOM killer killed "
                f"{oom_kills} process(es) in this cgroup meanwhile (see {log_path})"
            )
        return KILLED, f"worker was killed by signal {name} (see {log_path})"
    return ERROR, f"worker exited with code {code} without writing a result (see {log_path})"
