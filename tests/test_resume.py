"""The runner survives its own death: SIGKILL mid-study and mid-run, Ctrl-C, the study lock, a
results folder that stops taking writes; each followed by a re-run that resumes."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_here
from test_runner import (
    REPO,
    TINY_BASE,
    assert_curves_complete,
    cli_env,
    main,
    read_csv,
    result_mtimes,
    start_runner,
    wait_for,
    worker_pids,
    write_study,
)

from chargpt.study.spec import load_study
from chargpt.study.store import StudyLocked, StudyStore


def parent_pid(pid: int) -> int:
    """The parent of a live process (its runner, or the zygote it was forked from)."""
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def dying_or_gone(pid: int) -> bool:
    """True when pid has exited, is a zombie, is exiting, or has a SIGKILL pending: a process
    in any of these states never runs its own code again."""
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        status = (proc / "status").read_text()
    except OSError:
        return True
    state, flags = stat[0], int(stat[6])
    pf_exiting = 0x4
    sigkill = 1 << (signal.SIGKILL - 1)
    pending = [
        int(line.split()[1], 16)
        for line in status.splitlines()
        if line.startswith(("SigPnd:", "ShdPnd:"))
    ]
    return state in ("Z", "X", "x") or bool(flags & pf_exiting) or any(p & sigkill for p in pending)


# ----- SIGKILL mid-study, resume -------------------------------------------------------


# Runs long enough (about a second each here) that the second one is still training when the
# runner is killed, however loaded the machine: a 20-step run can finish in between.
KILLED_BASE = {**TINY_BASE, "budget": {"max_steps": 500}}


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Start a two-run study, SIGKILL the runner while the second run is in flight, re-run.
    Returns what was seen along the way."""
    tmp = tmp_path_factory.mktemp("killed")
    study = write_study(
        tmp / "killed.yaml", "killed", base=KILLED_BASE, grid={"optim.lr": [1e-3, 2e-3]}
    )
    root = tmp / "results" / "killed"
    first, second = load_study(study).runs
    seen: dict[str, Any] = {"study": study, "root": root, "plan": (first, second)}
    with open(tmp / "runner.log", "w") as log:
        runner = start_runner(study, root.parent, log)
        try:
            done = root / "runs" / first.run_id / "result.json"
            wait_for(done.exists, 120, "the first run to finish")
            in_flight = root / "runs" / second.run_id
            (worker,) = wait_for(lambda: worker_pids(in_flight), 60, "the second run's worker")
            zygote = parent_pid(worker)
            os.kill(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)
        finally:
            if runner.poll() is None:
                runner.kill()
    seen["runner_code"] = runner.returncode
    files = sorted(p.name for p in in_flight.iterdir())
    # The worker must die with its runner (the kernel kills it at once), not linger until it
    # notices by itself: a lingering one writes into a directory a resumed runner reuses.
    # No deadline decides this: the kernel sends the SIGKILL as the runner exits, so by the
    # time runner.wait() returned the worker is gone, a zombie, exiting, or has it pending.
    # A run forked from the zygote dies as the zygote does, which dies with the runner: then
    # its parent, the zygote, is the one found dying here.
    seen["orphans"] = [] if dying_or_gone(worker) or dying_or_gone(zygote) else [worker]
    if seen["orphans"]:  # do not leave it running whatever the test says
        os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not worker_pids(in_flight), 120, "the worker to be gone")
    seen["in_flight_files"] = (files, sorted(p.name for p in in_flight.iterdir()))
    seen["after_kill_rows"] = read_csv(root / "runs.csv")[1]
    seen["mtime"] = done.stat().st_mtime_ns
    seen["record"] = done.read_text()
    seen["rerun"] = run_here(study, "--out", root.parent)
    return seen


@pytest.mark.slow
def test_sigkill_mid_study_then_rerun_completes(killed: dict[str, Any]) -> None:
    first, second = killed["plan"]
    root = killed["root"]
    assert killed["runner_code"] == -signal.SIGKILL
    assert killed["orphans"] == [], "the in-flight worker outlived its killed runner"
    files_at_kill, files_later = killed["in_flight_files"]
    assert files_later == files_at_kill and "result.json" not in files_later
    assert [r["run_id"] for r in killed["after_kill_rows"]] == [first.run_id]

    rerun = killed["rerun"]
    assert rerun.returncode == 0, rerun.stderr
    _, rows = read_csv(root / "runs.csv")
    assert [r["run_id"] for r in rows] == [first.run_id, second.run_id]  # one row per run
    assert all(r["status"] == "ok" for r in rows)
    assert_curves_complete(root, rows)
    done = root / "runs" / first.run_id / "result.json"
    assert done.stat().st_mtime_ns == killed["mtime"]  # the finished run was not re-run
    assert done.read_text() == killed["record"]


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_from_its_state_with_the_same_losses(tmp_path: Path) -> None:
    """SIGKILL the runner (its worker dies with it) after the run saved a state; re-run: the
    run goes on from that state and its curve equals an uninterrupted run's, step by step."""
    keys = {
        "train.checkpoint_interval": 100,
        "train.eval_interval": 500,
        "model.dropout": 0.1,
        "budget.max_steps": 1500,
    }
    study = write_study(tmp_path / "long.yaml", "long", runs=[{"label": "long", **keys}])
    (run,) = load_study(study).runs
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    run_dir = cut / "long" / "runs" / run.run_id
    with open(tmp_path / "runner.log", "w") as log:
        runner = start_runner(study, cut, log)
        try:
            wait_for((run_dir / "state.pt").exists, 120, "a saved state")
            os.kill(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)
        finally:
            if runner.poll() is None:
                runner.kill()
    wait_for(lambda: not worker_pids(run_dir), 10, "the worker to die with its runner")
    assert not (run_dir / "result.json").exists(), "the run finished before it was killed"
    assert (run_dir / "state.pt").exists()

    again = run_here(study, "--out", cut)
    assert again.returncode == 0
    # its train_s spans both processes, so it gives no fixed cost for this invocation
    assert "1 runs in " in again.stderr and "no fixed cost per run to report" in again.stderr
    assert run_here(study, "--out", whole).returncode == 0
    (resumed,) = read_csv(cut / "long" / "runs.csv")[1]
    (straight,) = read_csv(whole / "long" / "runs.csv")[1]
    assert resumed["status"] == straight["status"] == "ok"
    assert (resumed["resumes"], straight["resumes"]) == ("1", "0")
    assert resumed["steps"] == straight["steps"] == "1500"
    for key in ("final_train_loss", "final_val_loss", "best_val_loss"):
        assert resumed[key] == straight[key], key
    curve = {
        name: [
            (r["step"], r["train_loss"], r["val_loss"], r["lr"])
            for r in read_csv(root / "long" / "runs" / run.run_id / "curve.csv")[1]
        ]
        for name, root in (("cut", cut), ("whole", whole))
    }
    assert curve["cut"] == curve["whole"]
    assert not (run_dir / "state.pt").exists()  # a finished run keeps no state
    assert 0 < float(resumed["train_s"]) < float(resumed["wall_s"])


@pytest.mark.slow
def test_extended_grid_runs_only_new_points_then_fresh_only(
    tmp_path: Path, killed: dict[str, Any]
) -> None:
    assert killed["rerun"].returncode == 0
    root = tmp_path / "results" / "killed"
    shutil.copytree(killed["root"], root)
    before = result_mtimes(root)
    assert len(before) == 2

    study = write_study(
        tmp_path / "killed.yaml", "killed", base=KILLED_BASE, grid={"optim.lr": [1e-3, 2e-3, 3e-3]}
    )
    plan = load_study(study).runs
    proc = run_here(study, "--out", root.parent)
    assert proc.returncode == 0, proc.stderr
    after = result_mtimes(root)
    assert {k: after[k] for k in before} == before  # old points untouched
    assert set(after) == {r.run_id for r in plan}  # the new point ran
    _, rows = read_csv(root / "runs.csv")
    assert [r["run_id"] for r in rows] == [r.run_id for r in plan]
    _, plan_rows = read_csv(root / "plan.csv")
    assert [(r["run_id"], r["label"]) for r in plan_rows] == [(r.run_id, r.label) for r in plan]
    assert [r["label"] for r in rows] == [r.label for r in plan]

    # --fresh --only LABEL starts that one run over and keeps the others' results.
    chosen = plan[1]
    proc = run_here(study, "--out", root.parent, "--fresh", "--only", chosen.label)
    assert proc.returncode == 0, proc.stderr
    again = result_mtimes(root)
    assert again[chosen.run_id] != after[chosen.run_id]  # trained again
    assert {k: v for k, v in again.items() if k != chosen.run_id} == {
        k: v for k, v in after.items() if k != chosen.run_id
    }
    _, rows = read_csv(root / "runs.csv")
    assert [(r["run_id"], r["status"]) for r in rows] == [(r.run_id, "ok") for r in plan]
    # --fresh alone starts the whole study over (a dry run shows every run still to do)
    proc = run_here(study, "--out", root.parent, "--fresh", "--dry-run")
    assert proc.returncode == 0 and proc.stdout.count("todo") == len(plan), proc.stdout


# ----- the lock ------------------------------------------------------------------------


def test_second_runner_refuses_and_a_killed_holder_frees_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study(tmp_path / "locked.yaml", "locked")
    root = tmp_path / "results" / "locked"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from chargpt.study.store import StudyStore; "
            "s = StudyStore(Path(sys.argv[1])); s.lock(); "
            "print('locked', flush=True); time.sleep(120)",
            str(root),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        code, _, stderr = main(capsys, study, "--out", root.parent)
        assert code == 2
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        assert str(root) in lines[0] and f"pid {holder.pid}" in lines[0]
        assert "another runner" in lines[0]
        assert sorted(p.name for p in root.iterdir()) == [".lock"]  # nothing written
        with pytest.raises(StudyLocked):
            StudyStore(root).lock()
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    store = StudyStore(root)
    store.lock()  # the kernel dropped the dead holder's lock
    store.unlock()


# ----- results that can no longer be written ----------------------------------------------

FSIZE_LIMIT = 2000  # bytes per file: each run's own files fit (result.json ~1.5 kB), runs.csv
#                     (~0.6 kB header + ~0.5 kB a row) outgrows it at the third run


@pytest.mark.slow
def test_a_results_folder_that_refuses_writes_stops_cleanly_then_resumes(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes a write past FSIZE_LIMIT bytes fail (EFBIG), as a full disk would:
    the runner stops with one line, every CSV stays whole, and the next run resumes."""

    study = write_study(
        tmp_path / "full.yaml",
        "full",
        grid={"optim.lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3]},
        **{"base": {**TINY_BASE, "budget": {"max_steps": 5}}},
    )
    out = tmp_path / "results"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))

    proc = subprocess.run(
        [sys.executable, "run_study.py", str(study), "--out", str(out)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot write results" in lines[0], proc.stderr
    assert "File too large" in lines[0] and "run the same command to resume" in lines[0]
    assert "Traceback" not in proc.stderr
    root = out / "full"
    _, rows = read_csv(root / "runs.csv")  # well-formed: no torn row
    assert 0 < len(rows) < 6, "the limit should stop the study part way"
    assert (root / "runs.csv").stat().st_size <= FSIZE_LIMIT
    read_csv(root / "curves.csv")
    assert not list(root.rglob("*.tmp"))  # no temp file left behind

    again = run_here(study, "--out", out)
    assert again.returncode == 0, again.stderr
    _, rows = read_csv(root / "runs.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert_curves_complete(root, rows)


@pytest.mark.slow
def test_ctrl_c_exits_130_and_the_study_resumes(tmp_path: Path) -> None:
    """SIGINT to the runner (what Ctrl-C sends) while a run trains: exit 130, its worker is
    stopped, the CSVs are whole, and the same command then finishes the study."""
    study = write_study(
        tmp_path / "ctrlc.yaml",
        "ctrlc",
        runs=[
            {"label": "first", "budget.max_steps": 3000, "train.eval_interval": 1000},
            {"label": "second"},
        ],
    )
    first, second = load_study(study).runs
    root = tmp_path / "results" / "ctrlc"
    with open(tmp_path / "runner.log", "w+") as log:
        # as from a terminal: a suite started in the background (`&`, nohup) ignores SIGINT,
        # and its children would inherit that
        runner = start_runner(
            study,
            root.parent,
            log,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            curve = root / "runs" / first.run_id / "curve.csv"
            wait_for(curve.exists, 120, "the first run to start training")
            runner.send_signal(signal.SIGINT)
            assert runner.wait(timeout=60) == 130
        finally:
            if runner.poll() is None:
                runner.kill()
        log.seek(0)
        output = log.read()
    assert "interrupted" in output and "run the same command to resume" in output, output
    assert "Traceback" not in output, output
    for run in (first, second):
        assert worker_pids(root / "runs" / run.run_id) == []  # stopped with the runner
    _, rows = read_csv(root / "runs.csv")
    assert second.run_id not in [r["run_id"] for r in rows]  # the study was cut short

    again = run_here(study, "--out", root.parent)
    assert again.returncode == 0, again.stderr
    _, rows = read_csv(root / "runs.csv")
    assert [(r["run_id"], r["status"]) for r in rows] == [
        (first.run_id, "ok"),
        (second.run_id, "ok"),
    ]
    assert_curves_complete(root, rows)
    assert not list(root.rglob("*.tmp"))
