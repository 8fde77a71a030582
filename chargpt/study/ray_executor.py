"""The Ray executor: each run as one Ray task on a cluster node, its files shipped back by value.

A task gets the run's resolved config and its corpus by content (the object store), runs the
same worker as the local executor (`python -m chargpt.study.worker`, a fresh process) in a
temporary directory on its node, and returns every file the run wrote. The driver lands them
in the study directory through chargpt.files (result.json last), so the store has one writer.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from chargpt.config import RunConfig
from chargpt.files import write_atomic, write_json
from chargpt.schema import STATE_FILE
from chargpt.study.local import WorkerProcess
from chargpt.study.store import KEEP_ON_RESUME

log = logging.getLogger("chargpt.study")

STARTED = "_started"  # the first message of a task: it runs now (its timeout counts from here)
CANCEL_GRACE_S = 30.0  # past its timeout plus this, a task that has not ended is cancelled
CONFIG_FILE = "config.json"


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached (bad input: exit code 2)."""


def _execute_on_node(
    run_id: str,
    label: str,
    config: dict[str, Any],
    corpus_text: str,
    corpus_fingerprint: str,
    kept: dict[str, bytes],
    threads: int,
    timeout_s: float | None,
    progress: Any,
) -> dict[str, Any]:
    """The body of a run's Ray task: train in a fresh worker process in a temporary directory
    of this node; return its exit, the node's facts and every file the run wrote (bytes)."""
    progress.put((run_id, {STARTED: True}))
    with tempfile.TemporaryDirectory(prefix="chargpt-run-") as tmp:
        run_dir = Path(tmp) / "runs" / run_id  # the worker's layout: <study>/runs/<run_id>
        run_dir.mkdir(parents=True)
        write_json(run_dir / CONFIG_FILE, config)
        for name, data in kept.items():  # a killed try's state, to go on from
            write_atomic(run_dir / name, data)
        corpus_file = Path(tmp) / "corpus.txt"
        write_atomic(corpus_file, corpus_text.encode("utf-8"))
        extra = ["--corpus-file", str(corpus_file), "--corpus-fingerprint", corpus_fingerprint]
        events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        worker = WorkerProcess(
            run_id, label, run_dir, threads, timeout_s, events, [*extra, "--node-env"]
        )
        while (code := worker.poll()) is None:
            _forward(events, progress, wait_s=0.5)
        _forward(events, progress, wait_s=0.0)
        files = {
            p.name: p.read_bytes()
            for p in sorted(run_dir.iterdir())
            if p.is_file() and p.name != CONFIG_FILE and not p.name.startswith(".")
        }
    return {
        "code": code,
        "killed_for_timeout": worker.killed_for_timeout,
        "oom_kills": worker.oom_kills(),
        "elapsed_s": worker.elapsed(),
        "hostname": socket.gethostname(),
        "files": files,
    }


def _forward(events: queue.Queue[tuple[str, dict[str, Any]]], progress: Any, wait_s: float) -> None:
    """Pass the worker's progress lines on to the driver (through a Ray queue)."""
    deadline = time.monotonic() + wait_s
    batch = []
    while True:
        try:
            batch.append(events.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            break
    if batch:
        progress.put_nowait_batch(batch[-1:])  # the latest is all a progress bar needs


def _check_reachable(address: str | None) -> None:
    """Refuse a HOST:PORT that takes no connection at once (Ray itself would wait for minutes)."""
    if address in (None, "auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10):
            pass
    except (OSError, ValueError) as exc:
        raise RayUnavailable(
            f"--ray-address {address}: cannot reach a Ray cluster there ({exc}); "
            "expected HOST:PORT of its head (ray start --head prints it) or auto"
        ) from None


class RayExecutor:
    """A connection to a Ray cluster (or a local one it starts) that runs a study's runs."""

    def __init__(self, address: str | None) -> None:
        try:
            import ray
            from ray.util.queue import Queue
        except ImportError:
            raise RayUnavailable(
                '--executor ray: Ray is not installed; pip install -e ".[ray]"'
            ) from None
        self.ray = ray
        _check_reachable(address)
        try:
            if address is None:  # a local Ray sized to this machine, gone when the study ends
                ray.init(address="local", include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise RayUnavailable(
                f"--ray-address {address or 'local'}: cannot start or reach Ray "
                f"({' '.join(str(exc).split())})"
            ) from None
        # A study point runs once: no silent retry (Ray retries failed tasks by default).
        self.task = ray.remote(max_retries=0, retry_exceptions=False)(_execute_on_node)
        self.progress = Queue(actor_options={"num_cpus": 0})
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self.node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in nodes] or [1])
        self.cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        self.started: dict[str, float] = {}  # run_id -> when its task began on its node
        self._corpora: dict[str, tuple[Any, str]] = {}
        log.info(
            "Ray: %d node(s), %g CPUs, %d GPUs",
            len(nodes),
            ray.cluster_resources().get("CPU", 0),
            self.cluster_gpus,
        )

    def corpus(self, corpus: str) -> tuple[Any, str]:
        """(object ref of the corpus text, its fingerprint): read once here, shared by tasks."""
        if corpus not in self._corpora:
            from chargpt.corpus import corpus_fingerprint, load_corpus

            self._corpora[corpus] = (self.ray.put(load_corpus(corpus)), corpus_fingerprint(corpus))
        return self._corpora[corpus]

    def worker(
        self,
        run_id: str,
        label: str,
        run_dir: Path,
        threads: int | None,
        timeout_s: float | None,
        events: queue.Queue[tuple[str, dict[str, Any]]],
        compile_shared_by: int = 1,
    ) -> RayRun:
        """Start a run as a Ray task; the same interface as local.WorkerProcess.
        compile_shared_by is not passed on: each node compiles into its own inductor cache, so
        one run's cold compile does not make the next one's warm where that lands elsewhere."""
        del compile_shared_by
        return RayRun(self, run_id, label, run_dir, threads, timeout_s, events)

    def drain(self, events: queue.Queue[tuple[str, dict[str, Any]]]) -> None:
        """Move the tasks' progress into the runner's queue, noting when each task began."""
        while True:
            try:
                batch = self.progress.get_nowait_batch(self.progress.qsize())
            except Exception:  # ray.util.queue.Empty: nothing more now
                return
            if not batch:
                return
            for run_id, info in batch:
                if STARTED in info:
                    self.started.setdefault(run_id, time.monotonic())
                else:
                    events.put((run_id, info))

    def close(self) -> None:
        self.ray.shutdown()


class RayRun:
    """One run as a Ray task, seen from the driver like a local WorkerProcess."""

    def __init__(
        self,
        executor: RayExecutor,
        run_id: str,
        label: str,
        run_dir: Path,
        threads: int | None,
        timeout_s: float | None,
        events: queue.Queue[tuple[str, dict[str, Any]]],
    ) -> None:
        self.executor, self.run_id, self.run_dir = executor, run_id, run_dir
        self.timeout_s = timeout_s
        self.events = events
        self.killed_for_timeout = False
        self.log_path = run_dir / "worker.log"
        self.hostname = ""  # the node's, once the task has told
        self._oom_kills: int | None = None
        self._code: int | None = None
        self._elapsed_s: float | None = None  # the node's own clock, once the task has ended
        self.submitted = time.monotonic()
        config = json.loads((run_dir / CONFIG_FILE).read_text())
        run = RunConfig.from_dict(config)
        # The run's threads are its CPUs: train.threads, else the runner's share (--jobs), else
        # what a local worker would take here (torch's default, which OMP_NUM_THREADS sets).
        n = run.train.threads or threads or min(torch.get_num_threads(), executor.node_cpus)
        device = run.train.device
        cuda = device.startswith("cuda") or (device == "auto" and executor.cluster_gpus > 0)
        kept = {
            name: (run_dir / name).read_bytes()
            for name in KEEP_ON_RESUME
            if (run_dir / name).is_file()
        }
        corpus_ref, fingerprint = executor.corpus(run.data.corpus)
        task = executor.task.options(num_cpus=min(n, executor.node_cpus), num_gpus=int(cuda))
        self.ref = task.remote(
            run_id, label, config, corpus_ref, fingerprint, kept, n, timeout_s, executor.progress
        )

    def poll(self) -> int | None:
        """The worker's exit code once the task has ended and its files are in run_dir."""
        if self._code is not None:
            return self._code
        ray = self.executor.ray
        self.executor.drain(self.events)
        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            began = self.executor.started.get(self.run_id)
            late = self.timeout_s is not None and began is not None
            if late and time.monotonic() - began > self.timeout_s + CANCEL_GRACE_S:
                self.killed_for_timeout = True  # the task did not stop its worker: cancel it
                self.stop()
            else:
                return None
        try:
            outcome = ray.get(self.ref)
        except ray.exceptions.RayError as exc:
            self._code = self._failed(exc)
        else:
            self._code = self._land(outcome)
        return self._code

    def _land(self, outcome: dict[str, Any]) -> int:
        """Write the task's files into the run directory: result.json last, as a worker does."""
        files: dict[str, bytes] = outcome["files"]
        for name, data in files.items():
            if name != "result.json":
                write_atomic(self.run_dir / name, data)
        if "result.json" in files:
            write_atomic(self.run_dir / "result.json", files["result.json"])
            (self.run_dir / STATE_FILE).unlink(missing_ok=True)  # finished: nothing to go on from
        self.killed_for_timeout = self.killed_for_timeout or outcome["killed_for_timeout"]
        self._oom_kills = outcome["oom_kills"]
        self._elapsed_s = float(outcome["elapsed_s"])
        self.hostname = outcome["hostname"]
        return int(outcome["code"])

    def _failed(self, exc: Exception) -> int:
        """A task that ended without an outcome: Ray's reason goes to worker.log."""
        ray = self.executor.ray
        write_atomic(self.log_path, f"Ray task failed: {type(exc).__name__}: {exc}\n")
        if isinstance(exc, ray.exceptions.OutOfMemoryError):
            self._oom_kills = 1  # Ray's memory monitor killed it: evidence of running out
        return -signal.SIGKILL  # its worker process was killed (cancelled, crashed, node lost)

    def oom_kills(self) -> int | None:
        return self._oom_kills

    def elapsed(self) -> float:
        """Seconds the run's worker has run: once the task has ended, as its node timed it (the
        clock its timeout is kept by); before, from when the driver heard that it started,
        which lags the node by the progress queue's delivery."""
        if self._elapsed_s is not None:
            return self._elapsed_s
        began = self.executor.started.get(self.run_id, self.submitted)
        return time.monotonic() - began

    def stop(self, grace_s: float = 5.0) -> None:
        """Cancel the task: Ray kills its process, and the worker dies with it."""
        if self._code is None:
            self.executor.ray.cancel(self.ref, force=True)
