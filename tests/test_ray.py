"""The Ray executor on a real two-node Ray cluster started on this machine (never a mock).

The head node offers no CPUs, so every run lands on the second node, which was started without
CHARGPT_DATA_DIR and with an empty cache: a run there cannot read the driver's corpora by path.
One cluster serves the whole module (Ray is heavy on 2 cores); its processes are ended by id.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_helpers import run_here
from test_runner import TINY_BASE, main, read_csv, wait_for, write_study

from chargpt.corpus import SHAKESPEARE_SHA256
from chargpt.study.spec import load_study

ray = pytest.importorskip("ray", reason='the ray extra is not installed (pip install -e ".[ray]")')
pytestmark = pytest.mark.slow  # a real two-node cluster: minutes, not seconds

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "studies" / "smoke.yaml"
# What may differ between two executions of the same run: clocks, memory, the host and the
# FLOP/s probe (and MFU, which divides by it).
TIMING = {
    "train_s",
    "eval_s",
    "compile_s",
    "wall_s",
    "tokens_per_s",
    "peak_rss_mb",
    "peak_gpu_mb",
    "peak_flops",
    "mfu",
    "hostname",
}
# 'raises' and 'fine' end on their own in about 1 s of wall each (measured idle): 6x that
# leaves room for a loaded machine; only 'slow' must reach it.
TIMEOUT_S = 6


def env(**extra: str) -> dict[str, str]:
    # One torch thread per run (a shared 2-core machine); a local cluster needs no auth token.
    out = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO))
    out.update(extra)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], environ: dict[str, str]) -> str:
    proc = subprocess.run(
        # the `ray` command of this Python, whatever PATH holds
        # (no log monitor: the runs' logs come back as files, and drivers use log_to_driver=False)
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--disable-usage-stats"]
        + ["--include-log-monitor=false", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _stop_cluster(base: Path, address: str | None) -> None:
    """End this cluster's processes only (by id): those naming its temp dir or address, and
    their descendants; `ray stop` would end every Ray on the machine."""
    ours: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if str(base) in cmdline or (address and address in cmdline):
            try:
                for q in [p, *p.children(recursive=True)]:
                    ours[q.pid] = q
            except psutil.NoSuchProcess:
                pass
    for q in ours.values():
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(ours.values()), timeout=10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head (no CPUs) and one worker node with 2 CPUs and no access to the driver's data."""
    base = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths
    address = None
    try:
        out = _ray_start(
            [
                "--head",
                "--port=0",
                f"--ray-client-server-port={_free_port()}",
                "--num-cpus=0",
                "--include-dashboard=false",
                f"--temp-dir={base / 'head'}",
            ],
            env(),
        )
        found = re.search(r"--address='([^']+)'", out)
        assert found, out
        address = found.group(1)
        node_env = env(XDG_CACHE_HOME=str(base / "empty-cache"), CHARGPT_NO_DOWNLOAD="1")
        node_env.pop("CHARGPT_DATA_DIR", None)
        _ray_start(
            [f"--address={address}", "--num-cpus=2", f"--temp-dir={base / 'node'}"], node_env
        )
        yield address
    finally:
        _stop_cluster(base, address)


def run_driver(*args: Any) -> subprocess.CompletedProcess[str]:
    """`run_study.py ARGS` as a Ray driver in this process (run_here): a fresh interpreter
    would add ~2 CPU-s of imports a study. Tests that kill or interrupt a driver start one."""
    return run_here(*args, RAY_AUTH_MODE="disabled")


def training_pids(marker: str) -> list[int]:
    """Live worker processes (`chargpt.study.worker`) whose command line contains marker."""
    pids = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if "chargpt.study.worker" in cmdline and marker in cmdline:
            if p.info["status"] != psutil.STATUS_ZOMBIE:
                pids.append(p.pid)
    return pids


# ----- the same study under both executors ---------------------------------------------


def test_smoke_study_is_the_same_under_both_executors(
    cluster: str, tmp_path: Path, smoke_study: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    """The local side is the session's smoke study (the same CLI, one torch thread per run),
    not a second local run of it."""
    local, finished = smoke_study
    assert local.returncode == 0, local.stderr
    shutil.copytree(finished, tmp_path / "local" / "smoke")
    args = ("--out", tmp_path / "ray", "--executor", "ray", "--ray-address", cluster)
    remote = run_driver(SMOKE, *args)
    assert remote.returncode == 0, remote.stderr

    header_l, rows_l = read_csv(tmp_path / "local" / "smoke" / "runs.csv")
    header_r, rows_r = read_csv(tmp_path / "ray" / "smoke" / "runs.csv")
    assert header_l == header_r and "hostname" in header_r
    assert len(rows_l) == len(rows_r) == 3
    for a, b in zip(rows_l, rows_r):
        assert {k: v for k, v in a.items() if k not in TIMING} == {
            k: v for k, v in b.items() if k not in TIMING
        }
        assert a["status"] == "ok" and a["best_val_loss"] == b["best_val_loss"]
        assert a["hostname"] == b["hostname"] == socket.gethostname()  # one machine here
        assert float(b["peak_flops"]) > 0  # probed on the node (its cache is empty)

    _, curves_l = read_csv(tmp_path / "local" / "smoke" / "curves.csv")
    _, curves_r = read_csv(tmp_path / "ray" / "smoke" / "curves.csv")
    losses = ("run_id", "step", "train_loss", "val_loss", "lr")
    assert [tuple(r[k] for k in losses) for r in curves_l] == [
        tuple(r[k] for k in losses) for r in curves_r
    ]
    assert len(curves_r) == 3 * 3  # steps 0, 50, 100 of each run

    for row in rows_r:  # every file a local run writes came back, plus the node's env.json
        local_dir = tmp_path / "local" / "smoke" / "runs" / row["run_id"]
        ray_dir = tmp_path / "ray" / "smoke" / "runs" / row["run_id"]
        assert sorted(p.name for p in ray_dir.iterdir()) == sorted(
            [p.name for p in local_dir.iterdir()] + ["env.json"]
        )
        assert (ray_dir / "samples.csv").read_bytes() == (local_dir / "samples.csv").read_bytes()
        node_env = (ray_dir / "env.json").read_text()
        assert '"hostname"' in node_env and '"cpu_model"' in node_env


# ----- nothing is read from the driver's files -----------------------------------------


def test_runs_get_the_corpus_by_content_not_by_path(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Control: on the worker node, the driver's corpus cannot be found by its name.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address=cluster, log_to_driver=False)
    try:

        @ray.remote(num_cpus=1, max_retries=0)
        def read_by_name() -> str:
            from chargpt.corpus import CorpusError, load_corpus

            try:
                load_corpus("shakespeare")
            except CorpusError as exc:
                return f"refused: {exc}"
            return "read"

        assert ray.get(read_by_name.remote()).startswith("refused: tiny shakespeare not found")
    finally:
        ray.shutdown()
    assert os.environ.get("CHARGPT_DATA_DIR"), "the driver needs the corpus for this test"

    study = write_study(
        tmp_path / "remote.yaml",
        "remote",
        base={**TINY_BASE, "data": {"corpus": "shakespeare"}},
        runs=[{"label": "a"}],
    )
    out = tmp_path / "results"
    proc = run_driver(study, "--out", out, "--executor", "ray", "--ray-address", cluster)
    assert proc.returncode == 0, proc.stderr
    (row,) = read_csv(tmp_path / "results" / "remote" / "runs.csv")[1]
    assert row["status"] == "ok" and row["corpus"] == "shakespeare"
    assert row["corpus_sha256"] == SHAKESPEARE_SHA256  # the driver's text, sent by content
    assert row["run_id"] == load_study(study).runs[0].run_id  # the planned id, same corpus


# ----- failing runs ----------------------------------------------------------------------


def test_a_run_that_raises_and_a_run_that_times_out(cluster: str, tmp_path: Path) -> None:
    study = write_study(
        tmp_path / "failures.yaml",
        "failures",
        runs=[
            # a batch no node can hold: torch raises at its first allocation (the runner
            # checks what it can beforehand; the memory of a node is not among that)
            {"label": "raises", "train.batch_size": 2**40},
            {"label": "slow", "budget.max_steps": 10**8},
            {"label": "fine"},
        ],
    )
    root = tmp_path / "results" / "failures"
    proc = run_driver(
        study,
        *("--out", root.parent, "--timeout", TIMEOUT_S, "--jobs", 2),
        *("--executor", "ray", "--ray-address", cluster),
    )
    assert proc.returncode == 1, proc.stderr  # some runs failed, the study did not
    plan = {r.label: r for r in load_study(study).runs}
    row = {r["label"]: r for r in read_csv(root / "runs.csv")[1]}

    assert row["raises"]["status"] == "error" and row["raises"]["stop_reason"] == "RuntimeError"
    assert "allocate" in row["raises"]["error"]
    log = root / "runs" / plan["raises"].run_id / "worker.log"
    assert "RuntimeError" in log.read_text()  # the traceback, shipped back from the node
    assert row["raises"]["error"].endswith(f"(see {log})")

    slow_dir = root / "runs" / plan["slow"].run_id
    assert row["slow"]["status"] == "timeout" and f"{TIMEOUT_S} s" in row["slow"]["error"]
    # stopped at its timeout, not before; no upper bound: a loaded machine stops it later
    assert float(row["slow"]["wall_s"]) >= TIMEOUT_S
    assert row["slow"]["hostname"] == socket.gethostname()  # failed rows say where, too
    assert (slow_dir / "curve.csv").is_file()  # what it wrote before the stop came back
    assert training_pids(plan["slow"].run_id) == []  # stopped on its node, not left running

    assert row["fine"]["status"] == "ok" and int(row["fine"]["steps"]) == 20


def test_a_task_whose_process_dies_is_killed_and_not_retried(cluster: str, tmp_path: Path) -> None:
    """Ray retries a task whose worker died unless told not to: the run must fail once."""
    study = write_study(
        tmp_path / "dies.yaml", "dies", runs=[{"label": "long", "budget.max_steps": 10**8}]
    )
    (run,) = load_study(study).runs
    root = tmp_path / "results" / "dies"
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "run_study.py", str(study), "--out", str(root.parent)]
            + ["--executor", "ray", "--ray-address", cluster],
            cwd=REPO,
            env=env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            (pid,) = wait_for(lambda: training_pids(run.run_id), 120, "the run's worker")
            task = psutil.Process(pid).parent()  # the Ray worker executing the task
            assert task is not None and "ray" in " ".join(task.cmdline()).lower()
            task.kill()
            assert driver.wait(timeout=120) == 1
        finally:
            if driver.poll() is None:
                driver.kill()
    (row,) = read_csv(root / "runs.csv")[1]
    assert row["status"] == "killed" and "SIGKILL" in row["error"]
    assert "Ray task failed" in (root / "runs" / run.run_id / "worker.log").read_text()
    wait_for(lambda: not training_pids(run.run_id), 10, "the orphaned worker to die")


# ----- Ctrl-C ----------------------------------------------------------------------------


def test_ctrl_c_cancels_the_cluster_work(cluster: str, tmp_path: Path) -> None:
    study = write_study(
        tmp_path / "stop.yaml", "stop", runs=[{"label": "long", "budget.max_steps": 10**8}]
    )
    (run,) = load_study(study).runs
    root = tmp_path / "results" / "stop"
    driver = subprocess.Popen(
        [sys.executable, "run_study.py", str(study), "--out", str(root.parent)]
        + ["--executor", "ray", "--ray-address", cluster],
        cwd=REPO,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: training_pids(run.run_id), 120, "the run's worker")
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, stderr
    assert "interrupted: finished runs are kept" in stderr
    assert "Traceback" not in stderr
    wait_for(lambda: not training_pids(run.run_id), 30, "the cancelled run's worker to end")
    assert not (root / "runs" / run.run_id / "result.json").exists()  # runs again on resume


# ----- the driver killed, then resumed ---------------------------------------------------


def test_driver_killed_then_resumed(cluster: str, tmp_path: Path) -> None:
    study = write_study(
        tmp_path / "killed.yaml",
        "killed",
        runs=[{"label": "first"}, {"label": "second", "budget.max_steps": 400}],
    )
    first, second = load_study(study).runs
    root = tmp_path / "results" / "killed"
    args = [str(study), "--out", str(root.parent), "--executor", "ray", "--ray-address", cluster]
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "run_study.py", *args],
            cwd=REPO,
            env=env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            done = root / "runs" / first.run_id / "result.json"
            wait_for(done.exists, 180, "the first run to finish")
            wait_for(lambda: training_pids(second.run_id), 120, "the second run's worker")
            driver.kill()
            driver.wait(timeout=10)
        finally:
            if driver.poll() is None:
                driver.kill()
    # Ray ends a dead driver's tasks; the run's worker dies with its task.
    wait_for(lambda: not training_pids(second.run_id), 60, "the in-flight run to stop")
    assert not (root / "runs" / second.run_id / "result.json").exists()
    record, mtime = done.read_text(), done.stat().st_mtime_ns

    rerun = run_driver(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 already done, 1 to run" in rerun.stderr
    rows = read_csv(root / "runs.csv")[1]
    assert [(r["label"], r["status"]) for r in rows] == [("first", "ok"), ("second", "ok")]
    assert done.read_text() == record and done.stat().st_mtime_ns == mtime  # kept, not re-run


# ----- bad input -----------------------------------------------------------------------


# (in this process: main() is what the entry point runs, and none of these starts a run)


def test_executor_ray_without_ray_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    out = tmp_path / "results"
    code, _, stderr = main(capsys, SMOKE, "--out", out, "--executor", "ray")
    assert code == 2
    assert stderr.strip().splitlines() == [
        'error: --executor ray: Ray is not installed; pip install -e ".[ray]"'
    ]
    assert not out.exists()  # nothing written


def test_ray_address_needs_executor_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = main(capsys, SMOKE, "--out", tmp_path, "--ray-address", "auto")
    assert code == 2
    assert stderr.strip() == "error: --ray-address needs --executor ray"
    assert not (tmp_path / "smoke").exists()


def test_unreachable_cluster_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--out", tmp_path, "--executor", "ray", "--ray-address", "127.0.0.1:9")
    code, _, stderr = main(capsys, SMOKE, *args)
    assert code == 2, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: --ray-address 127.0.0.1:9: cannot reach a Ray cluster there")
    assert not (tmp_path / "smoke").exists()
