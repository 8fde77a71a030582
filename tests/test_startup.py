"""Runs forked from the warm zygote: the same losses as in-process training, a peak RSS of
their own, and the same stop/kill behaviour as a fresh worker process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import run_here
from test_runner import REPO, TINY_BASE, read_csv, worker_pids, write_study

from chargpt import measure
from chargpt.study.spec import load_study
from chargpt.study.store import StudyStore
from chargpt.study.worker import RUNNER_GONE
from chargpt.train import train

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")


@linux
def test_reset_peak_rss_forgets_an_earlier_peak() -> None:
    """What a forked run relies on: after the reset the peak is what is resident now, not the
    high-water mark this process (or the parent it was forked from) reached before."""
    before = measure.peak_rss_mb()
    x = torch.ones(64 * 2**20)  # 256 MiB, touched
    high = measure.peak_rss_mb()
    assert high >= before + 200
    del x  # a large block goes back to the OS
    assert measure.reset_peak_rss()
    assert measure.peak_rss_mb() < high - 200


@pytest.mark.slow
def test_a_forked_run_trains_as_train_does_in_process(tmp_path: Path) -> None:
    """The study runner's forked child and train() here give bit-identical losses (one
    thread each, so float sums add up in the same order)."""
    keys = {"train.threads": 1, "model.dropout": 0.1}
    study = write_study(tmp_path / "same.yaml", "same", runs=[{"label": "one", **keys}])
    (run,) = load_study(study).runs
    proc = run_here(study, "--out", tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    (row,) = read_csv(tmp_path / "results" / "same" / "runs.csv")[1]
    here = train(run.config)
    assert row["run_id"] == here.run_id
    assert int(row["steps"]) == here.steps
    for key in ("final_train_loss", "final_val_loss", "best_val_loss"):
        assert float(row[key]) == getattr(here, key), key


@linux
@pytest.mark.slow
def test_each_forked_run_has_its_own_peak_rss(tmp_path: Path) -> None:
    """A bigger model (more weights, optimizer state, activations) peaks higher than a tiny
    one in the same study, both forked from the same zygote; and the tiny run's peak is not
    the big one's carried over (each child's high-water mark starts at its fork)."""
    big = {
        "label": "big",
        "model": {**TINY_BASE["model"], "n_layer": 2, "n_embd": 512, "block_size": 64},
        "train.batch_size": 32,
        "budget.max_steps": 2,
    }
    tiny = {"label": "tiny", "budget.max_steps": 2}
    study = write_study(tmp_path / "rss.yaml", "rss", runs=[big, tiny])
    proc = run_here(study, "--out", tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    rows = {r["label"]: r for r in read_csv(tmp_path / "results" / "rss" / "runs.csv")[1]}
    assert float(rows["big"]["peak_rss_mb"]) > float(rows["tiny"]["peak_rss_mb"]) + 50


@pytest.mark.slow
def test_a_forked_run_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    """An endless forked run: status timeout, and no process of it is left running."""
    study = write_study(
        tmp_path / "endless.yaml", "endless", runs=[{"label": "endless", "budget.max_steps": 10**8}]
    )
    (run,) = load_study(study).runs
    proc = run_here(study, "--out", tmp_path / "results", "--timeout", 3)
    assert proc.returncode == 1, proc.stderr
    (row,) = read_csv(tmp_path / "results" / "endless" / "runs.csv")[1]
    assert row["status"] == "timeout"
    assert worker_pids(tmp_path / "results" / "endless" / "runs" / run.run_id) == []


@pytest.mark.slow
def test_the_summary_line_gives_the_fixed_cost_of_the_runs_it_ran(tmp_path: Path) -> None:
    """'N runs in W s: X s per run beyond training and evaluation', counting only the runs
    this invocation trained: a resumed study that finds them all done prints none."""
    study = write_study(tmp_path / "two.yaml", "two", grid={"optim.lr": [1e-3, 2e-3]})
    proc = run_here(study, "--out", tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    line = r"(\d+) runs in [\d.]+ s: (-?[\d.]+) s per run beyond training and evaluation"
    found = re.findall(line, proc.stderr)
    assert [n for n, _ in found] == ["2"], proc.stderr
    again = run_here(study, "--out", tmp_path / "results")
    assert again.returncode == 0, again.stderr
    assert not re.findall(line, again.stderr), again.stderr


@pytest.mark.slow
def test_a_run_whose_runner_is_gone_leaves_no_result(tmp_path: Path) -> None:
    """A worker whose progress pipe is closed (the runner was killed, its SIGKILL not yet
    come) exits without result.json, so a re-run resumes the run instead of finding an
    error recorded for it (this race once failed the kill-and-resume test)."""
    study = write_study(tmp_path / "gone.yaml", "gone", runs=[{"label": "gone"}])
    (run,) = load_study(study).runs
    run_dir = StudyStore(tmp_path / "gone").prepare_run_dir(run.run_id, run.config.to_dict())
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read the progress
    with open(tmp_path / "worker.log", "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "chargpt.study.worker", str(run_dir), "--label", "gone"],
            cwd=REPO,
            stdout=write_end,
            stderr=log,
            timeout=300,
        )
    os.close(write_end)
    assert proc.returncode == RUNNER_GONE, (tmp_path / "worker.log").read_text()
    assert not (run_dir / "result.json").exists()
    assert "Traceback" not in (tmp_path / "worker.log").read_text()


def test_one_zygote_serves_this_process_until_an_import_time_variable_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Studies run one after another in a process fork from the same zygote; one started
    under another OMP_NUM_THREADS (read as torch loads OpenMP) is replaced, never reused."""
    from multiprocessing import forkserver

    from chargpt.study.forked import start_zygote

    def zygote_pid() -> int:
        pid = forkserver._forkserver._forkserver_pid  # noqa: SLF001 (the one running now)
        assert pid is not None and Path(f"/proc/{pid}").exists()
        return pid

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    start_zygote()
    first = zygote_pid()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # read by runs, not by imports
    start_zygote()
    assert zygote_pid() == first
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    start_zygote()
    assert zygote_pid() != first
    assert not Path(f"/proc/{first}").exists()  # stopped and reaped, not left behind


SCRIPT = """
import sys
from pathlib import Path
from chargpt.study.runner import Options, run_study
with open(sys.argv[1], "a") as f:  # once per process that runs this body
    f.write("ran\\n")
sys.exit(run_study(sys.argv[2], Options(out=Path(sys.argv[3]))))
"""

GUARDED = """
import multiprocessing, os, signal, sys
from multiprocessing import forkserver
from pathlib import Path
from chargpt.study.runner import Options, run_study
with open(sys.argv[1], "a") as f:
    f.write(__name__ + "\\n")

def square(x):  # found by the caller's own forkserver children only if they run this script
    return x * x

if __name__ == "__main__":
    out = Path(sys.argv[3])
    if sys.argv[4] == "pool-first":
        with multiprocessing.get_context("forkserver").Pool(1) as pool:
            assert pool.map(square, [2]) == [4]
    assert run_study(sys.argv[2], Options(out=out / "first")) == 0
    if sys.argv[4] == "kill-zygote":  # started again, as it was, by the next study
        pid = forkserver._forkserver._forkserver_pid
        os.kill(pid, signal.SIGKILL)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead (multiprocessing reaps it)
        assert run_study(sys.argv[2], Options(out=out / "second")) == 0
        with multiprocessing.get_context("forkserver").Pool(1) as pool:
            assert pool.map(square, [3]) == [9]
"""


def _run_script(
    tmp_path: Path, text: str, how: str = "path", *extra: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `text` as pkg/script.py (by path or as a module) on a two-run study: the process
    and the __name__ of each process that ran the script's body, in order."""
    study = write_study(
        tmp_path / "two.yaml",
        "two",
        runs=[{"label": "a", "train.seed": 1}, {"label": "b", "train.seed": 2}],
    )
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "script.py").write_text(text)
    bodies = tmp_path / "bodies.txt"
    bodies.touch()
    target = [str(pkg / "script.py")] if how == "path" else ["-m", "pkg.script"]
    proc = subprocess.run(
        [sys.executable, *target, str(bodies), str(study), str(tmp_path / "results"), *extra],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, bodies.read_text().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["path", "module"])
def test_runs_do_not_run_the_callers_script_again(tmp_path: Path, how: str) -> None:
    """A script that runs a study from Python, with no `if __name__ == "__main__":` guard:
    its body runs once, not once more in each run's process (multiprocessing's default for
    a forkserver's children), and the study trains. Both ways Python names a main script:
    by path (python script.py) and by module (python -m pkg.script)."""
    proc, bodies = _run_script(tmp_path, SCRIPT, how)
    assert proc.returncode == 0, proc.stderr
    assert bodies == ["ran"]
    rows = read_csv(tmp_path / "results" / "two" / "runs.csv")[1]
    assert [r["status"] for r in rows] == ["ok", "ok"]


@pytest.mark.slow
def test_the_callers_own_forkserver_children_still_run_its_script(tmp_path: Path) -> None:
    """The forkserver is one per process: after its studies, the caller's own processes
    forked from it run the script as multiprocessing promises (a function defined there is
    found), and a zygote that died is started again with the same behaviour."""
    proc, bodies = _run_script(tmp_path, GUARDED, "path", "kill-zygote")
    assert proc.returncode == 0, proc.stderr
    assert bodies == ["__main__", "__mp_main__"]  # the caller, then its pool's one worker
    for study in ("first", "second"):
        rows = read_csv(tmp_path / "results" / study / "two" / "runs.csv")[1]
        assert [r["status"] for r in rows] == ["ok", "ok"]


@pytest.mark.slow
def test_a_forkserver_started_before_the_first_study_is_named_in_a_warning(
    tmp_path: Path,
) -> None:
    """multiprocessing's forkserver, started by the caller before any study, cannot become
    the zygote (its imports are done): the study runs from it, slower, and says so."""
    proc, _ = _run_script(tmp_path, GUARDED, "path", "pool-first")
    assert proc.returncode == 0, proc.stderr
    assert "forkserver this process started before its first study" in proc.stderr


@pytest.mark.slow
def test_a_zygote_that_cannot_fork_stops_the_study_with_one_line(tmp_path: Path) -> None:
    """A fork that fails in the zygote (EAGAIN: out of processes) ends the zygote: the study
    stops with one line naming the run, exit 1, not a traceback."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import errno, os\n"
        "def _fork():\n"
        "    raise BlockingIOError(errno.EAGAIN, 'Resource temporarily unavailable')\n"
        "os.fork = _fork  # only the zygote forks with os.fork\n"
    )
    study = write_study(tmp_path / "s.yaml", "s")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_study.py"), str(study), "--out", str(tmp_path / "r")],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{site}:{REPO}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run ") and "its process could not start" in last, last
