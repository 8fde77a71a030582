"""Run a study: plan, skip what is done, execute each run in a worker, record, report progress."""

from __future__ import annotations

import logging
import queue
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import Timeout

from chargpt.schema import DIVERGED, FAILED, FINISHED, OK, base_record
from chargpt.study import spec
from chargpt.study.forked import ENDED
from chargpt.study.local import LocalExecutor, WorkerProcess, failure
from chargpt.study.placement import compile_shares, fits, slots_for
from chargpt.study.plan import InputError, Options, check_inputs, describe_study, plan_table
from chargpt.study.progress import LogReporter
from chargpt.study.store import ResultsUnwritable, StudyStore

__all__ = ["InputError", "Options", "RunNotStarted", "run_study"]

log = logging.getLogger("chargpt.study")


class RunNotStarted(RuntimeError):
    """A run's process could not be started (fork or pipe failed): the study stops (exit 1)."""


def run_study(
    study_path: str | Path,
    opts: Options,
    reporter: LogReporter | None = None,
    executor: Any = None,
) -> int:
    """Run (or resume) a study. Returns 0 when every planned run finished ok or diverged,
    1 when some failed; raises spec.StudyError / InputError for bad input (nothing written),
    ResultsUnwritable when the results folder fails mid-study and RunNotStarted when a run's
    process cannot be started (both keep the finished runs).
    executor: what starts the runs instead of the one opts names (benchmarks compare two)."""
    study = spec.load_study(study_path)
    runs, corpora = check_inputs(study, opts)
    vocab = {name: facts["vocab_size"] for name, facts in corpora.items()}
    root = opts.out / study.name
    store = StudyStore(root)
    if opts.dry_run:  # --fresh would start every listed run anew: none is done yet
        print(plan_table(study, runs, vocab, store if root.exists() and not opts.fresh else None))
        for where, reason in study.skipped:
            print(f"skipped (invalid): {where}: {reason}")
        return 0

    reporter = reporter or LogReporter()
    executor = executor or _executor(opts)
    try:
        store.lock()
    except OSError as exc:
        raise store.unwritable(exc) from None
    try:
        if opts.fresh and root.exists():
            _start_afresh(store, [r.run_id for r in runs] if opts.only else None)
        if opts.reprobe:
            from chargpt.measure import forget_peak_flops
            from chargpt.study.pack_record import forget_packing_speeds

            try:
                forget_peak_flops()
                forget_packing_speeds()
            except (OSError, Timeout) as exc:  # the figures stay; the study can still run
                log.warning("--reprobe: cached measurements not dropped (%s)", exc)
        try:
            describe_study(study, store, corpora)
        except OSError as exc:
            raise store.unwritable(exc) from None
        return _execute(study, runs, store, opts, reporter, executor, vocab)
    finally:
        reporter.close()
        store.unlock()
        executor.close()


def _start_afresh(store: StudyStore, run_ids: list[str] | None) -> None:
    """--fresh: delete the study's results (its lock aside), or with --only just those runs'
    folders (runs.csv and curves.csv are rebuilt without them when the study starts)."""
    if run_ids is None:
        for child in store.root.iterdir():
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        return
    for run_id in run_ids:
        if store.run_dir(run_id).exists():
            shutil.rmtree(store.run_dir(run_id))


def _executor(opts: Options) -> Any:
    """What starts the runs: worker processes here, or Ray tasks (connected before anything is
    written, so a missing Ray or an unreachable cluster is bad input)."""
    if opts.executor == "local":
        return LocalExecutor()
    from chargpt.study.ray_executor import RayExecutor, RayUnavailable

    try:
        return RayExecutor(opts.ray_address)
    except RayUnavailable as exc:
        raise InputError(str(exc)) from None


def _execute(
    study: spec.Study,
    runs: list[spec.PlannedRun],
    store: StudyStore,
    opts: Options,
    reporter: LogReporter,
    executor: Any,
    vocab: dict[str, int],
) -> int:
    order = [r.run_id for r in study.runs]
    labels = {r.run_id: r.label for r in study.runs}
    try:
        store.remove_temp_files()
        store.rebuild_csvs(order, labels)  # on every start (a resume): whole, in plan order
    except OSError as exc:
        raise store.unwritable(exc) from None
    left_out = store.unplanned_records(order)
    if left_out:
        log.warning(
            "%d finished runs under %s are not in the study any more (its points changed): "
            "left out of runs.csv and curves.csv, their folders kept (%s)",
            len(left_out),
            store.runs_dir,
            ", ".join(sorted(left_out)[:5]) + (", ..." if len(left_out) > 5 else ""),
        )
    todo = [r for r in runs if _should_run(store.status(r.run_id), opts)]
    reporter.start(len(runs), len(runs) - len(todo))
    if any(store.status(r.run_id) in FAILED for r in runs) and not opts.retry_failed:
        log.info("failed runs are kept as they are; --retry-failed runs them again")
    slots = slots_for(todo, opts.jobs, vocab)
    shares = compile_shares(todo, slots)
    if len(todo) > 1 and any(slot.jobs > 1 for slot in slots.values()):
        log.warning(
            "--jobs %s: runs train side by side, so their timings (train_s, tokens_per_s, "
            "mfu) are not isolated; timing studies should use --jobs 1",
            opts.jobs,
        )
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    active: dict[str, tuple[spec.PlannedRun, WorkerProcess]] = {}
    pending = list(todo)
    # The summary line: each run's wall time on the runner's clock (from starting it to holding
    # its record) minus its train_s and eval_s is that run's fixed cost; runs skipped as done
    # are not in todo, and runs that left no train_s (failures) are not averaged, nor are
    # resumed ones (their train_s spans the processes before this one).
    started, fixed_s = time.monotonic(), []
    ctrl_c, restore = _catch_ctrl_c()
    try:
        while pending or active:
            if ctrl_c.is_set():
                raise KeyboardInterrupt
            while pending and fits(slots[pending[0].run_id], [slots[i] for i in active]):
                r = pending.pop(0)
                run_dir = store.prepare_run_dir(r.run_id, r.config.to_dict())
                threads = slots[r.run_id].threads
                timeout_s = opts.timeout_s
                try:
                    worker = executor.worker(
                        r.run_id,
                        r.label,
                        run_dir,
                        threads,
                        timeout_s,
                        events,
                        compile_shared_by=shares.get(r.run_id, 1),
                    )
                except (OSError, EOFError) as exc:
                    raise _not_started(store, r, exc) from exc
                active[r.run_id] = (r, worker)
                reporter.run_started(r.run_id, r.label)
            _drain(events, active, reporter, wait_s=0.2)
            for run_id, (r, worker) in list(active.items()):
                code = worker.poll()
                if code is None:
                    continue
                _drain(events, active, reporter, wait_s=0.0)
                del active[run_id]
                record = _record(store, r, worker, code, opts, slots[run_id].jobs)
                store.append_run(record)
                reporter.run_finished(run_id, r.label, record)
                if record.get("train_s") is not None and not record.get("resumes"):
                    fixed_s.append(worker.elapsed() - record["train_s"] - record["eval_s"])
    except KeyboardInterrupt:
        restore()
        _stop(active)
        store.rebuild_csvs(order, labels)
        log.warning(
            "interrupted: finished runs are kept; run the same command to resume "
            "(%d in flight will start again)",
            len(active),
        )
        return 130
    except RunNotStarted:
        _stop(active)
        store.rebuild_csvs(order, labels)
        raise
    except ResultsUnwritable:  # said already (a run's file in the results folder failed)
        _stop(active)
        raise
    except OSError as exc:  # results can no longer be written: stop, keep what is on disk
        _stop(active)
        raise store.unwritable(exc) from None
    finally:
        restore()
    store.rebuild_csvs(order, labels)  # plan order again, now that all have finished
    if todo:
        wall = f"{len(todo)} runs in {time.monotonic() - started:.1f} s"
        if fixed_s:
            per_run = f"{sum(fixed_s) / len(fixed_s):.2f} s per run beyond training and evaluation"
            left_out = len(todo) - len(fixed_s)
            log.info(
                "%s: %s%s",
                wall,
                per_run,
                f" ({left_out} resumed or failed left out)" * bool(left_out),
            )
        else:
            log.info("%s (none trained start to end here: no fixed cost per run to report)", wall)
    statuses = [store.status(r.run_id) for r in runs]
    bad = sum(s not in FINISHED for s in statuses)
    log.info(
        "study %s: %d runs, %d ok, %d diverged, %d failed; results in %s",
        study.name,
        len(runs),
        statuses.count(OK),
        statuses.count(DIVERGED),
        bad,
        store.root,
    )
    return 1 if bad else 0


def _not_started(
    store: StudyStore, r: spec.PlannedRun, exc: OSError | EOFError
) -> ResultsUnwritable | RunNotStarted:
    """The error for a run whose process failed to start: the results folder's, when a file
    in it was what failed (the run's config or log), else the process's own (a failed fork
    or pipe; EOFError: the zygote ended as it forked, e.g. on a failed fork of its own)."""
    name = getattr(exc, "filename", None)
    if (
        isinstance(exc, OSError)
        and name
        and Path(name).resolve().is_relative_to(store.root.resolve())
    ):
        return store.unwritable(exc)
    why = f"{type(exc).__name__}: {exc}" if isinstance(exc, EOFError) else str(exc)
    return RunNotStarted(
        f"run {r.run_id} ({r.label}): its process could not start ({why}); finished runs are "
        "kept: run the same command to resume"
    )


def _catch_ctrl_c() -> tuple[threading.Event, Callable[[], None]]:
    """While runs train, Ctrl-C (SIGINT) only sets an event that the runner's loop turns into
    KeyboardInterrupt at its next turn: raised inside whatever the loop was calling, Ray's
    client code can turn it into an error it handles, and the study would go on. Returns the
    event and what restores the previous handler (only the main thread may set handlers)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return event, lambda: None
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    return event, lambda: signal.signal(signal.SIGINT, previous)


def _should_run(status: str | None, opts: Options) -> bool:
    """Unfinished runs run; failed ones only with --retry-failed; finished ones never."""
    return not (status in FINISHED or (status in FAILED and not opts.retry_failed))


def _record(
    store: StudyStore,
    r: spec.PlannedRun,
    worker: WorkerProcess,
    code: int,
    opts: Options,
    jobs: int,
) -> dict[str, Any]:
    """The run's result.json, or the failure record the runner writes when there is none;
    either way with the jobs it ran among (the runner's placement, unknown to the worker),
    and a failure's error naming the worker.log that holds its traceback."""
    record = store.result(r.run_id)
    if record is not None:
        error, log_path = record.get("error"), Path(worker.log_path)
        # the worker wrote the record, so the log (its stderr) is the runner's to name
        if record.get("status") in FAILED and error and "(see " not in error:
            if log_path.is_file() and log_path.stat().st_size > 0:
                record["error"] = f"{error} (see {log_path})"
        if record.get("jobs") != jobs or record.get("error") != error:
            record["jobs"] = jobs
            store.write_result(r.run_id, record)
    if record is None:
        status, error = failure(
            code, worker.killed_for_timeout, opts.timeout_s, worker.oom_kills(), worker.log_path
        )
        record = base_record(r.run_id, r.label, r.config)
        record.update(status=status, stop_reason=status, error=error, wall_s=worker.elapsed())
        record.update(hostname=worker.hostname, jobs=jobs)
        store.write_result(r.run_id, record)
    return record


def _stop(active: dict[str, tuple[spec.PlannedRun, WorkerProcess]]) -> None:
    for _, worker in active.values():
        worker.stop()


def _drain(
    events: queue.Queue[tuple[str, dict[str, Any]]],
    active: dict[str, tuple[spec.PlannedRun, WorkerProcess]],
    reporter: LogReporter,
    wait_s: float,
) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            run_id, info = events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return
        if ENDED in info:  # a run's process ended: let the runner record it now
            return
        if run_id in active:
            reporter.progress(run_id, active[run_id][0].label, info)
