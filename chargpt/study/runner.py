"""Run a study: plan, skip what is done, execute each run in a worker, record, report progress."""

from __future__ import annotations

import json
import logging
import queue
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import Timeout

from chargpt.config import DataConfig
from chargpt.files import write_atomic, write_json
from chargpt.schema import DIVERGED, FAILED, FINISHED, OK, base_record
from chargpt.study import spec
from chargpt.study.forked import ENDED
from chargpt.study.local import LocalExecutor, WorkerProcess, failure
from chargpt.study.packing import (
    Placement,
    RunLoad,
    Slot,
    auto_placements,
    fixed_slot,
    run_load,
    usable_cores,
)
from chargpt.study.progress import LogReporter
from chargpt.study.store import ResultsUnwritable, StudyStore, csv_text

if TYPE_CHECKING:
    from chargpt.study.pack_probe import PackSpeed

log = logging.getLogger("chargpt.study")


class InputError(ValueError):
    """Bad input found before anything is written (exit code 2)."""


class RunNotStarted(RuntimeError):
    """A run's process could not be started (fork or pipe failed): the study stops (exit 1)."""


EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    out: Path = Path("results")
    dry_run: bool = False
    only: tuple[str, ...] = ()
    fresh: bool = False
    retry_failed: bool = False
    jobs: int | str = 1  # runs at once, or "auto" (chargpt.study.packing)
    timeout_s: float | None = None
    reprobe: bool = False  # measure the peak FLOP/s again; drop the packing figures
    executor: str = "local"  # local: worker processes here; ray: Ray tasks on a cluster
    ray_address: str | None = None  # None: start a local Ray; auto or HOST:PORT: join one


def corpus_facts(data: DataConfig) -> dict[str, Any]:
    """Size, vocabulary and reference losses of a corpus (for corpus.json and the plan)."""
    from chargpt.data import load_splits, reference_losses

    splits = load_splits(data)
    vocab_size = splits.tokenizer.vocab_size
    return {
        "n_chars": splits.n_chars,
        "vocab_size": vocab_size,
        "train_tokens": len(splits.train),
        "val_tokens": len(splits.val),
        "val_fraction": data.val_fraction,
        "reference_losses": reference_losses(splits.train.numpy(), splits.val.numpy(), vocab_size),
    }


def check_inputs(study: spec.Study, opts: Options) -> tuple[list[spec.PlannedRun], dict[str, Any]]:
    """Everything that can be wrong before a run starts; raises InputError (nothing written)."""
    from chargpt.data import CorpusError
    from chargpt.measure import resolve_device

    source = str(study.path or study.name)
    if isinstance(opts.jobs, str) and opts.jobs != "auto":
        raise InputError(f"--jobs must be a number >= 1 or auto, got {opts.jobs}")
    if isinstance(opts.jobs, int) and opts.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {opts.jobs}")
    if opts.timeout_s is not None and opts.timeout_s <= 0:
        raise InputError(f"--timeout must be > 0 seconds, got {opts.timeout_s:g}")
    if opts.executor not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {opts.executor}")
    if opts.ray_address is not None and opts.executor != "ray":
        raise InputError("--ray-address needs --executor ray")
    runs = list(study.runs)
    if opts.only:
        wanted = set(opts.only)
        runs = [r for r in runs if r.run_id in wanted or r.label in wanted]
        known = {r.run_id for r in study.runs} | {r.label for r in study.runs}
        missing = sorted(wanted - known)
        if missing:
            labels = ", ".join(sorted({r.label for r in study.runs}))
            raise InputError(
                f"{source}: --only {missing[0]}: no run with that run_id or label "
                f"(labels: {labels})"
            )
    corpora: dict[str, Any] = {}
    for run in runs:
        key = run.config.data.corpus
        if key in corpora:
            continue
        try:
            corpora[key] = corpus_facts(run.config.data)
        except CorpusError as exc:
            raise InputError(f"{source}: data.corpus: {exc}") from None
        vocab = run.config.model.vocab_size
        if vocab is not None and vocab != corpora[key]["vocab_size"]:
            raise InputError(
                f"{source}: model.vocab_size: {vocab} does not match corpus "
                f"{key!r} ({corpora[key]['vocab_size']} characters)"
            )
    # A plan made for a GPU still prints on a laptop: only a real run needs the device.
    for device in [] if opts.dry_run else sorted({r.config.train.device for r in runs}):
        try:
            resolve_device(device)
        except ValueError as exc:
            raise InputError(f"{source}: {exc}") from None
    return runs, corpora


def plan_table(
    study: spec.Study, runs: list[spec.PlannedRun], vocab: dict[str, int], store: StudyStore | None
) -> str:
    """The expanded plan as an aligned text table (for --dry-run)."""
    from chargpt.model import count_params

    header = [
        "run_id",
        "label",
        "n_layer",
        "n_head",
        "n_embd",
        "block_size",
        "batch_size",
        "lr",
        "params",
        "FLOPs/token",
        "budget",
        "status",
    ]
    rows = [header]
    for r in runs:
        m, t = r.config.model, r.config.train
        counts = count_params(
            m.__class__(**{**m.to_dict(), "vocab_size": vocab[r.config.data.corpus]})
        )
        status = (store.status(r.run_id) if store else None) or "todo"
        rows.append(
            [
                r.run_id,
                r.label,
                m.n_layer,
                m.n_head,
                m.n_embd,
                m.block_size,
                t.batch_size,
                f"{r.config.optim.lr:g}",
                f"{counts['n_params']:,}",
                f"{counts['flops_per_token']:.3g}",
                spec.budget_str(r.config.budget),
                status,
            ]
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows
    )


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
    if opts.dry_run:
        print(plan_table(study, runs, vocab, store if root.exists() else None))
        for where, reason in study.skipped:
            print(f"skipped (invalid): {where}: {reason}")
        return 0

    reporter = reporter or LogReporter()
    executor = executor or _executor(opts)
    try:
        store.lock()
    except OSError as exc:
        raise _unwritable(store, exc) from None
    try:
        if opts.fresh and root.exists():
            for child in root.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        if opts.reprobe:
            from chargpt.measure import forget_peak_flops
            from chargpt.study.pack_record import forget_packing_speeds

            try:
                forget_peak_flops()
                forget_packing_speeds()
            except (OSError, Timeout) as exc:  # the figures stay; the study can still run
                log.warning("--reprobe: cached measurements not dropped (%s)", exc)
        try:
            _describe_study(study, store, corpora)
        except OSError as exc:
            raise _unwritable(store, exc) from None
        return _execute(study, runs, store, opts, reporter, executor, vocab)
    finally:
        reporter.close()
        store.unlock()
        executor.close()


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


def _describe_study(study: spec.Study, store: StudyStore, corpora: dict[str, Any]) -> None:
    """study.yaml, plan.csv, env.json and corpus.json, each written atomically."""
    import torch

    from chargpt import measure

    if study.path is not None:
        write_atomic(store.root / "study.yaml", study.path.read_text(encoding="utf-8"))
    plan = spec.plan_rows(
        study, next(iter(corpora.values()))["vocab_size"] if len(corpora) == 1 else None
    )
    write_atomic(store.root / "plan.csv", csv_text(plan, ["run_id", "label"]))
    device = measure.resolve_device(study.runs[0].config.train.device)
    env = measure.fingerprint(device)
    env["peak_flops_float32"] = measure.measure_peak_flops(device, torch.float32)
    if device.type == "cuda" or any(r.config.train.dtype != "float32" for r in study.runs):
        env["peak_flops_bfloat16"] = measure.measure_peak_flops(device, torch.bfloat16)
    write_json(store.root / "env.json", env)
    write_json(store.root / "corpus.json", corpora)


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
    store.remove_temp_files()
    store.rebuild_csvs(order, labels)  # on every start (a resume): whole, in plan order
    todo = [r for r in runs if _should_run(store.status(r.run_id), opts)]
    reporter.start(len(runs), len(runs) - len(todo))
    if any(store.status(r.run_id) in FAILED for r in runs) and not opts.retry_failed:
        log.info("failed runs are kept as they are; --retry-failed runs them again")
    slots = _slots(todo, opts, vocab)
    shares = _compile_shares(todo, slots)
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
    # are not in todo, and runs that left no train_s (failures) are not averaged.
    started, fixed_s = time.monotonic(), []
    ctrl_c, restore = _catch_ctrl_c()
    try:
        while pending or active:
            if ctrl_c.is_set():
                raise KeyboardInterrupt
            while pending and _fits(slots[pending[0].run_id], [slots[i] for i in active]):
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
                if record.get("train_s") is not None:
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
        raise _unwritable(store, exc) from None
    finally:
        restore()
    store.rebuild_csvs(order, labels)  # plan order again, now that all have finished
    if todo:
        log.info(
            "%d runs in %.1f s: %s s per run beyond training and evaluation",
            len(todo),
            time.monotonic() - started,
            f"{sum(fixed_s) / len(fixed_s):.2f}" if fixed_s else "?",
        )
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
        return _unwritable(store, exc)
    why = f"{type(exc).__name__}: {exc}" if isinstance(exc, EOFError) else str(exc)
    return RunNotStarted(
        f"run {r.run_id} ({r.label}): its process could not start ({why}); finished runs are "
        "kept: run the same command to resume"
    )


def _unwritable(store: StudyStore, exc: OSError) -> ResultsUnwritable:
    """One line for a results directory that refuses writes: what, where, what to do."""
    where = f": {exc.filename}" if exc.filename else ""
    return ResultsUnwritable(
        exc.errno,
        f"{store.root}: cannot write results ({exc.strerror or exc}{where}); "
        "finished runs are kept: free space or fix the folder, then run the same command to "
        "resume",
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


def _slots(runs: list[spec.PlannedRun], opts: Options, vocab: dict[str, int]) -> dict[str, Slot]:
    """Each run's placement: --jobs N for all alike, or --jobs auto by this machine's packing
    figures where it has them, else by size (packing.auto_placements); auto logs each group's
    choice and why."""
    cores = usable_cores()
    if opts.jobs != "auto":
        return {r.run_id: fixed_slot(int(opts.jobs), cores) for r in runs}
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


def _compile_shares(runs: list[spec.PlannedRun], slots: dict[str, Slot]) -> dict[str, int]:
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


def _fits(slot: Slot, active: list[Slot]) -> bool:
    """Whether a run may start now: fewer runs train than it and each of them allow."""
    return len(active) < min([slot.jobs, *(a.jobs for a in active)])


def _record(
    store: StudyStore,
    r: spec.PlannedRun,
    worker: WorkerProcess,
    code: int,
    opts: Options,
    jobs: int,
) -> dict[str, Any]:
    """The run's result.json, or the failure record the runner writes when there is none;
    either way with the jobs it ran among (the runner's placement, unknown to the worker)."""
    record = store.result(r.run_id)
    if record is not None and record.get("jobs") != jobs:
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
