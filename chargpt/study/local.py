"""The local executor: each run in a fresh worker process, with progress lines, timeouts, kill."""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from chargpt.schema import ERROR, OOM, TIMEOUT

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGKILL when the runner dies, so no orphan
    keeps training into a directory that a resumed runner is about to reuse."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the worker also polls its parent at every progress report


class WorkerProcess:
    """A running `python -m chargpt.study.worker` for one run."""

    def __init__(self, run_id: str, label: str, run_dir: Path, threads: int | None,
                 timeout_s: float | None, events: queue.Queue[tuple[str, dict[str, Any]]]
                 ) -> None:
        self.run_id = run_id
        self.timeout_s = timeout_s
        self.killed_for_timeout = False
        cmd = [sys.executable, "-m", "chargpt.study.worker", str(run_dir), "--label", label]
        if threads:
            cmd += ["--threads", str(threads)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                          env.get("PYTHONPATH")]))
        self._log = open(run_dir / "worker.log", "w")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, text=True,
            env=env, start_new_session=True,  # Ctrl-C reaches the runner, which stops workers
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._read, args=(events,), daemon=True)
        self._reader.start()

    def _read(self, events: queue.Queue[tuple[str, dict[str, Any]]]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                events.put((self.run_id, json.loads(line)))
            except ValueError:
                pass  # a stray print in the worker is not progress

    def poll(self) -> int | None:
        """The exit code once the worker has ended (killing it first if it ran past its time)."""
        code = self.proc.poll()
        if code is None and self.timeout_s is not None and self.elapsed() > self.timeout_s:
            self.killed_for_timeout = True
            self.stop()
            code = self.proc.returncode
        if code is not None:
            self._reader.join(timeout=5)
            self._log.close()
        return code

    def elapsed(self) -> float:
        return time.monotonic() - self.started

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


def failure(code: int, killed_for_timeout: bool, timeout_s: float | None) -> tuple[str, str]:
    """(status, error) for a worker that ended without writing its result."""
    if killed_for_timeout:
        return TIMEOUT, f"run exceeded its timeout of {timeout_s:g} s and was stopped"
    if code == -signal.SIGKILL:
        return OOM, "worker was killed by SIGKILL (most often the kernel's out-of-memory killer)"
    if code < 0:
        return ERROR, f"worker was killed by signal {signal.Signals(-code).name}"
    return ERROR, f"worker exited with code {code} without writing a result (see worker.log)"
