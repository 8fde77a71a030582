"""The study runner through its command line: results files, failures, damaged results,
bad input, --jobs (kills, Ctrl-C and resumes: test_resume.py). Real worker processes on tiny
models; shared studies keep the process count low."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_here

import run_study
from chargpt.measure import oom_kill_count
from chargpt.study.local import failure
from chargpt.study.packing import Slot
from chargpt.study.placement import compile_shares
from chargpt.study.spec import PlannedRun, load_study

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "studies" / "smoke.yaml"

RESULTS_README = REPO / "results" / "README.md"


def documented_run_columns() -> list[str]:
    """runs.csv's columns as results/README.md documents them (the contract users read): the
    first cell of each row of the table under `## `runs.csv``, split at commas."""
    text = RESULTS_README.read_text(encoding="utf-8")
    section = text.split("## `runs.csv`", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # header, ---
    names: list[str] = []
    for row in rows:
        for name in row.split("|")[1].split(","):
            name = name.strip().strip("`")
            if name not in names:
                names.append(name)
    return names


DOCUMENTED_RUN_COLUMNS = documented_run_columns()


def test_the_documented_columns_are_read_from_the_table() -> None:
    """The parse sees the whole table: it starts and ends where results/README.md does."""
    assert DOCUMENTED_RUN_COLUMNS[:4] == ["run_id", "label", "status", "stop_reason"]
    assert DOCUMENTED_RUN_COLUMNS[-1] == "error"
    assert {"n_layer", "lr", "max_seconds", "tokens_per_s", "mfu"} <= set(DOCUMENTED_RUN_COLUMNS)


CURVE_COLUMNS = [
    "step",
    "tokens",
    "flops",
    "train_s",
    "lr",
    "train_loss",
    "val_loss",
    "tokens_per_s",
]

# The smallest runs that still train: one layer, 16 channels, 20 steps on the synthetic corpus.
TINY_BASE: dict[str, Any] = {
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
    "optim": {"lr": 3e-3, "warmup_steps": 0},
    "train": {
        "batch_size": 8,
        "eval_interval": 20,
        "eval_iters": 2,
        "device": "cpu",
        "save_checkpoint": False,
    },
    "budget": {"max_steps": 20},
    "data": {"corpus": "synthetic"},
}


# ----- helpers -------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    # One torch thread per worker: tiny models on a shared 2-core machine crawl with more
    # (idle OpenMP threads spin), which would make the timeouts below flaky.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def cli(
    *args: Any, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "run_study.py", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=timeout,
    )


def start_runner(study: Path, out: Path, log: Any, **popen: Any) -> subprocess.Popen[bytes]:
    """`run_study.py STUDY --out OUT` in the background, its output into the open file log."""
    return subprocess.Popen(
        [sys.executable, "run_study.py", str(study), "--out", str(out)],
        cwd=REPO,
        env=cli_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        **popen,
    )


def main(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    """The CLI's main() in this process (torch is already imported): (code, stdout, stderr)."""
    capsys.readouterr()
    code = run_study.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_study(path: Path, name: str, **keys: Any) -> Path:
    path.write_text(yaml.safe_dump({"name": name, "base": TINY_BASE, **keys}, sort_keys=False))
    return path


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows; fails on a ragged (torn or corrupt) row."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    for i, row in enumerate(rows):
        assert None not in row, f"{path} row {i}: more fields than the header"
        assert None not in row.values(), f"{path} row {i}: fewer fields than the header"
    return header, rows


def result_mtimes(root: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (root / "runs").glob("*/result.json")}


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root: (mtime, content)."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def tokens_per_step(run: PlannedRun) -> int:
    return run.config.train.batch_size * run.config.model.block_size


def by_label(runs: tuple[PlannedRun, ...]) -> dict[str, PlannedRun]:
    return {r.label: r for r in runs}


def worker_pids(run_dir: Path) -> list[int]:
    """Live (non-zombie) processes training into run_dir: a fresh worker names it on its
    command line; a run forked from the zygote has its worker.log as stderr."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        try:
            stderr = os.readlink(proc / "fd" / "2")
        except OSError:  # gone, or not ours to look into
            stderr = ""
        fresh = b"chargpt.study.worker" in cmdline and str(run_dir).encode() in cmdline
        if (fresh or stderr == str(run_dir / "worker.log")) and state != "Z":
            pids.append(int(proc.name))
    return pids


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def assert_curves_complete(root: Path, runs: list[dict[str, str]]) -> None:
    header, curves = read_csv(root / "curves.csv")
    assert header[:2] == ["run_id", "label"] and header[2:10] == CURVE_COLUMNS
    for run in runs:
        steps = [int(c["step"]) for c in curves if c["run_id"] == run["run_id"]]
        assert steps and steps[0] == 0 and steps[-1] == int(run["steps"]), (run["label"], steps)
        assert {c["label"] for c in curves if c["run_id"] == run["run_id"]} == {run["label"]}


# ----- a full smoke study --------------------------------------------------------------


@pytest.fixture
def smoke(
    smoke_study: tuple[subprocess.CompletedProcess[str], Path],
) -> tuple[subprocess.CompletedProcess[str], Path]:
    return smoke_study


@pytest.mark.slow
def test_smoke_study_end_to_end(smoke: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, root = smoke
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    plan = load_study(SMOKE).runs
    ids = [r.run_id for r in plan]

    header, rows = read_csv(root / "runs.csv")
    assert header[:4] == ["run_id", "label", "status", "stop_reason"]
    assert [c for c in DOCUMENTED_RUN_COLUMNS if c not in header] == []
    assert [c for c in header if c not in DOCUMENTED_RUN_COLUMNS] == []  # none undocumented
    assert [r["run_id"] for r in rows] == ids  # one row per run, in plan order
    assert [r["label"] for r in rows] == [r.label for r in plan] == ["tiny", "deeper", "wider"]
    for row, run in zip(rows, plan):
        steps, bt = run.config.budget.max_steps, tokens_per_step(run)
        assert row["status"] == "ok" and row["stop_reason"] == "max_steps" and row["error"] == ""
        assert int(row["steps"]) == steps and row["device"] == "cpu"
        assert int(row["tokens"]) == steps * bt
        assert int(row["n_layer"]) == run.config.model.n_layer
        assert int(row["n_embd"]) == run.config.model.n_embd
        assert int(row["vocab_size"]) == 8 and int(row["n_params"]) > 0
        for key in ("train_s", "tokens_per_s", "peak_rss_mb", "mfu", "best_val_loss"):
            assert math.isfinite(float(row[key])) and float(row[key]) > 0, key
        assert row["peak_gpu_mb"] == ""  # empty off CUDA
        # MFU as documented: achieved FLOP/s over the measured peak
        achieved = float(row["tokens_per_s"]) * float(row["flops_per_token"])
        assert float(row["mfu"]) == pytest.approx(achieved / float(row["peak_flops"]), rel=1e-6)
        record = json.loads((root / "runs" / run.run_id / "result.json").read_text())
        assert record["run_id"] == run.run_id and record["status"] == "ok"
        assert str(record["steps"]) == row["steps"]
    assert_curves_complete(root, rows)
    _, curves = read_csv(root / "curves.csv")
    bt = {r.run_id: tokens_per_step(r) for r in plan}
    assert all(int(c["tokens"]) == int(c["step"]) * bt[c["run_id"]] for c in curves)

    plan_header, plan_rows = read_csv(root / "plan.csv")
    assert plan_header[:2] == ["run_id", "label"]
    assert [r["run_id"] for r in plan_rows] == ids
    assert (root / "study.yaml").read_text() == SMOKE.read_text()
    env = json.loads((root / "env.json").read_text())
    assert isinstance(env, dict) and env
    corpus = json.loads((root / "corpus.json").read_text())
    refs = corpus["synthetic"]["reference_losses"]
    assert set(refs) >= {"uniform", "unigram_train_entropy", "unigram_val", "bigram_val"}
    assert refs["uniform"] == pytest.approx(math.log(corpus["synthetic"]["vocab_size"]))

    for run in plan:
        d = root / "runs" / run.run_id
        assert json.loads((d / "config.json").read_text()) == run.config.to_dict()
        curve_header, curve = read_csv(d / "curve.csv")
        assert curve_header == CURVE_COLUMNS
        steps, every = run.config.budget.max_steps, run.config.train.eval_interval
        assert [int(c["step"]) for c in curve] == sorted({*range(0, steps, every), steps})
        samples_header, samples = read_csv(d / "samples.csv")
        assert samples_header == ["temperature", "prompt", "text"]
        sample = run.config.sample
        assert sample is not None
        assert sorted((float(s["temperature"]), s["prompt"]) for s in samples) == sorted(
            (t, p) for t in sample.temperatures for p in sample.prompts
        )
        assert all(s["text"] for s in samples)
        assert (d / "ckpt.pt").is_file()
    assert not [p for p in root.rglob("*.tmp")], "temp files left behind"


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    smoke: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    out = tmp_path / "results"
    code, stdout, stderr = main(capsys, SMOKE, "--out", out, "--dry-run")
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["run_id", "label", "n_layer"]
    assert "params" in lines[0] and "budget" in lines[0]
    plan = load_study(SMOKE).runs
    assert len(lines) == 1 + len(plan)
    seed = lines[0].split().index("seed")  # runs that differ only in seed must look different
    for line, run in zip(lines[1:], plan):
        assert line.split()[:2] == [run.run_id, run.label] and line.split()[-1] == "todo"
        assert line.split()[seed] == str(run.config.train.seed)
    assert not out.exists()

    # On a finished study it shows each run's status and still touches nothing.
    _, root = smoke
    before = snapshot(root)
    code, stdout, stderr = main(capsys, SMOKE, "--out", root.parent, "--dry-run")
    assert code == 0, stderr
    assert [line.split()[-1] for line in stdout.strip().splitlines()[1:]] == ["ok"] * 3
    assert snapshot(root) == before


@pytest.mark.slow
def test_rerunning_a_finished_study_runs_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    smoke: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, finished = smoke
    root = tmp_path / "results" / "smoke"
    shutil.copytree(finished, root)
    runs_before = snapshot(root / "runs")
    csvs_before = {n: (root / n).read_bytes() for n in ("runs.csv", "curves.csv")}
    code, _, stderr = main(capsys, SMOKE, "--out", root.parent)
    assert code == 0, stderr
    # no worker started: a started one would have rewritten its run's worker.log
    assert snapshot(root / "runs") == runs_before  # no run restarted, no record rewritten
    assert {n: (root / n).read_bytes() for n in csvs_before} == csvs_before


@pytest.mark.slow
def test_relabelled_runs_are_relabelled_in_the_csvs_without_running(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    smoke: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    # Same run_ids, new labels (as when a grid grows from one value to two and the derived
    # labels gain `lr=...`): runs.csv and curves.csv must agree with plan.csv.
    _, finished = smoke
    root = tmp_path / "results" / "smoke"
    shutil.copytree(finished, root)
    runs_before = snapshot(root / "runs")
    study = tmp_path / "smoke.yaml"
    assert "{label: tiny}" in SMOKE.read_text()
    study.write_text(SMOKE.read_text().replace("{label: tiny}", "{label: small}"))
    code, _, stderr = main(capsys, study, "--out", root.parent)
    assert code == 0, stderr
    assert snapshot(root / "runs") == runs_before
    labels = ["small", "deeper", "wider"]
    assert [r["label"] for r in read_csv(root / "plan.csv")[1]] == labels
    _, rows = read_csv(root / "runs.csv")
    assert [r["label"] for r in rows] == labels
    assert_curves_complete(root, rows)


# ----- failing runs --------------------------------------------------------------------

# The slow run's budget is endless, so it can only end by the timeout, whatever the timeout's
# value or the machine's load; the other runs get no timeout, so a loaded machine cannot make
# them time out. No assertion depends on how long anything takes.
TIMEOUT_S = 2


@pytest.fixture(scope="module")
def failures(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """A study whose first three runs raise, diverge and time out; the last one is fine."""
    tmp = tmp_path_factory.mktemp("failures")
    study = write_study(
        tmp / "failures.yaml",
        "failures",
        runs=[
            # saves its resumable state every 5 steps, where a folder is in the way (below):
            # an OSError in training (what the runner can check beforehand, it does)
            {"label": "raises", "train.checkpoint_interval": 5, "optim.lr": 4e-3},
            {"label": "diverges", "optim.lr": 1e3, "optim.grad_clip": 0},
            {"label": "slow", "budget.max_steps": 10**8},
            {"label": "fine"},
        ],
    )
    out = tmp / "results"
    raises = by_label(load_study(study).runs)["raises"]
    (out / "failures" / "runs" / raises.run_id / "state.pt" / "in-the-way").mkdir(parents=True)
    slow = run_here(study, "--out", out, "--only", "slow", "--timeout", TIMEOUT_S)
    assert slow.returncode == 1 and "Traceback" not in slow.stderr, slow.stderr
    # Then the rest, two at a time; the timed-out run is kept as it is (no --retry-failed).
    proc = run_here(study, "--out", out, "--jobs", 2)
    return proc, study, out / "failures"


@pytest.mark.slow
def test_failing_runs_get_their_status_and_the_study_goes_on(
    failures: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    proc, study, root = failures
    assert proc.returncode == 1, proc.stderr  # some run failed
    assert "Traceback" not in proc.stderr  # worker tracebacks go to the run's worker.log
    plan = by_label(load_study(study).runs)
    _, rows = read_csv(root / "runs.csv")
    assert [r["label"] for r in rows] == ["raises", "diverges", "slow", "fine"]
    row = {r["label"]: r for r in rows}

    raised = row["raises"]
    assert raised["status"] == "error" and raised["stop_reason"] == "IsADirectoryError", raised
    assert "state.pt" in raised["error"] and "\n" not in raised["error"]
    log = root / "runs" / plan["raises"].run_id / "worker.log"
    assert "IsADirectoryError" in log.read_text()
    assert raised["error"].endswith(f"(see {log})")  # where its traceback is
    assert all(float(r["wall_s"]) > 0 for r in rows)  # failed runs too

    assert row["diverges"]["status"] == "diverged"
    assert row["diverges"]["stop_reason"] == "diverged"
    assert 0 < int(row["diverges"]["steps"]) < 20

    assert row["slow"]["status"] == "timeout" and row["slow"]["stop_reason"] == "timeout"
    assert f"{TIMEOUT_S} s" in row["slow"]["error"]
    assert float(row["slow"]["wall_s"]) > TIMEOUT_S  # stopped only once past its timeout
    assert worker_pids(root / "runs" / plan["slow"].run_id) == []  # stopped, not left running

    assert row["fine"]["status"] == "ok" and row["fine"]["stop_reason"] == "max_steps"
    assert int(row["fine"]["steps"]) == 20
    assert_curves_complete(root, [row["diverges"], row["fine"]])


@pytest.mark.slow
def test_failed_runs_are_kept_unless_retry_failed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    failures: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    _, study, finished = failures
    root = tmp_path / "results" / "failures"
    shutil.copytree(finished, root)
    plan = by_label(load_study(study).runs)
    before = result_mtimes(root)

    code, _, stderr = main(capsys, study, "--out", root.parent)  # failed runs are kept
    assert code == 1, stderr
    assert result_mtimes(root) == before

    # A short timeout keeps the (endless) slow run cheap; a run that raises may hit it too.
    proc = run_here(study, "--out", root.parent, "--retry-failed", "--timeout", 2, "--jobs", 2)
    assert proc.returncode == 1, proc.stderr
    after = result_mtimes(root)
    for label in ("diverges", "fine"):  # finished: never run again
        assert after[plan[label].run_id] == before[plan[label].run_id], label
    for label in ("raises", "slow"):  # failed: run again
        assert after[plan[label].run_id] != before[plan[label].run_id], label
    _, rows = read_csv(root / "runs.csv")
    assert len(rows) == 4
    status = {r["label"]: r["status"] for r in rows}
    assert status["raises"] in ("error", "timeout") and status["slow"] == "timeout"


@pytest.mark.slow
def test_a_worker_killed_without_oom_evidence_is_killed_not_oom(tmp_path: Path) -> None:
    """SIGKILL from outside: the cgroup's OOM-kill counter did not move, so it is no OOM."""
    study = write_study(
        tmp_path / "victim.yaml", "victim", runs=[{"label": "victim", "budget.max_steps": 10**8}]
    )
    (victim,) = load_study(study).runs
    run_dir = tmp_path / "results" / "victim" / "runs" / victim.run_id
    with open(tmp_path / "runner.log", "w") as log:
        runner = start_runner(study, tmp_path / "results", log)
        try:
            (worker,) = wait_for(lambda: worker_pids(run_dir), 120, "the victim's worker")
            wait_for(lambda: (run_dir / "curve.csv").exists(), 120, "training to start")
            os.kill(worker, signal.SIGKILL)
            assert runner.wait(timeout=60) == 1  # the run failed, the runner did not
        finally:
            if runner.poll() is None:
                runner.kill()
    (row,) = read_csv(tmp_path / "results" / "victim" / "runs.csv")[1]
    assert row["status"] == "killed" and row["stop_reason"] == "killed"
    assert "SIGKILL" in row["error"] and str(run_dir / "worker.log") in row["error"]


def test_failure_rule_needs_evidence_for_oom(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    assert failure(-signal.SIGKILL, False, None, 0, log)[0] == "killed"
    assert failure(-signal.SIGKILL, False, None, None, log)[0] == "killed"  # no counter here
    status, error = failure(-signal.SIGKILL, False, None, 1, log)
    assert status == "oom" and "OOM killer" in error and str(log) in error
    assert failure(-signal.SIGTERM, False, None, 0, log) == (
        "killed",
        f"worker was killed by signal SIGTERM (see {log})",
    )
    assert failure(-signal.SIGKILL, True, 3.0, 1, log)[0] == "timeout"  # we stopped it
    status, error = failure(3, False, None, 0, log)
    assert status == "error" and error.endswith(f"(see {log})")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_oom_kill_count_reads_the_cgroup_counter(tmp_path: Path, version: str) -> None:
    """The real /proc/self/cgroup, against a cgroup tree laid out like the kernel's."""
    text = "oom 4\noom_kill 3\n" if version == "v2" else "under_oom 0\noom_kill 3\n"
    for rel in (
        "",
        *(
            line.split(":", 2)[2].lstrip("/")
            for line in Path("/proc/self/cgroup").read_text().splitlines()
        ),
    ):
        target = tmp_path / rel if version == "v2" else tmp_path / "memory" / rel
        target.mkdir(parents=True, exist_ok=True)
        (target / ("memory.events" if version == "v2" else "memory.oom_control")).write_text(text)
    lines = Path("/proc/self/cgroup").read_text()
    has_controller = ("0::" in lines) if version == "v2" else (":memory:" in lines)
    assert oom_kill_count(tmp_path) == (3 if has_controller else None)
    assert oom_kill_count(tmp_path / "absent") is None


# ----- bad input -----------------------------------------------------------------------

GOOD = {"name": "bad", "base": TINY_BASE}
BAD_CASES: dict[str, tuple[Any, list[str], list[str]]] = {
    # case: (study file text or mapping, extra CLI args, substrings of the one stderr line)
    "yaml_syntax": (
        "name: bad\nbase:\n  model:\n    n_layer: 1\n   n_head: 2\n",
        [],
        ["line 5", "YAML syntax error"],
    ),
    "duplicate_key": (
        "name: bad\nbase:\n  optim: {lr: 1e-3}\n  optim: {lr: 3e-3}\n",
        [],
        ["duplicate key", "'optim'", "lines 3 and 4"],
    ),
    "unknown_key": (
        {**GOOD, "base": {**TINY_BASE, "model": {"n_layr": 2}}},
        [],
        ["base.model.n_layr", "did you mean 'n_layer'"],
    ),
    "unknown_grid_key": (
        {**GOOD, "grid": {"model.n_embed": [16, 32]}},
        [],
        ["grid.model.n_embed", "did you mean 'model.n_embd'"],
    ),
    "unknown_top_key": (
        {**GOOD, "gird": {"optim.lr": [1e-3]}},
        [],
        ["gird", "did you mean 'grid'"],
    ),
    "wrong_type": (
        {**GOOD, "base": {**TINY_BASE, "train": {"batch_size": "sixteen"}}},
        [],
        ["base.train.batch_size", "expected an integer", "sixteen"],
    ),
    "empty_grid_list": (
        {**GOOD, "grid": {"optim.lr": []}},
        [],
        ["grid.optim.lr", "at least one value"],
    ),
    "duplicate_value": (
        {**GOOD, "grid": {"optim.lr": [1e-3, 0.001]}},
        [],
        ["grid.optim.lr[1]", "duplicate"],
    ),
    "duplicate_points": (
        {**GOOD, "runs": [{"label": "a"}, {"label": "b", "optim.lr": 3e-3}]},
        [],
        ["runs[1]", "same run as runs[0]"],
    ),
    "impossible_value": (
        {**GOOD, "grid": {"model.n_embd": [16, 17]}},
        [],
        ["model.n_embd", "divisible by n_head=2", "17"],
    ),
    "missing_corpus_file": (
        {**GOOD, "base": {**TINY_BASE, "data": {"corpus": "NOPE"}}},
        [],
        ["data.corpus", "no-such-corpus.txt"],
    ),
    "missing_shakespeare": (
        {**GOOD, "base": {**TINY_BASE, "data": {"corpus": "shakespeare"}}},
        [],
        ["data.corpus", "shakespeare", "CHARGPT_NO_DOWNLOAD"],
    ),
    "bad_only": (GOOD, ["--only", "nosuchrun"], ["--only nosuchrun", "no run with"]),
    # what a run asks of its corpus (synthetic: 8 letters, 180,000 train and 20,000 validation
    # characters), found before the run trains rather than after
    "prompt_outside_the_corpus": (
        {**GOOD, "base": {**TINY_BASE, "sample": {"prompts": ["ab", "ROMEO"]}}},
        [],
        ["run L1-H2-C16-T8", "sample.prompts[1]", "'E' (U+0045)", "8 characters", "synthetic"],
    ),
    "empty_prompt": (
        {**GOOD, "base": {**TINY_BASE, "sample": {"prompts": ["ab", ""]}}},
        [],
        ["base.sample.prompts", "at least one character"],
    ),
    "block_size_over_the_corpus": (
        {**GOOD, "grid": {"model.block_size": [8, 20000]}},
        [],
        ["model.block_size: 20000", "validation split holds 20,000 characters"],
    ),
    "vocab_size_of_a_later_run": (
        {**GOOD, "runs": [{"label": "a"}, {"label": "b", "model.vocab_size": 10}]},
        [],
        ["model.vocab_size: 10", "(8 characters)"],
    ),
}


def write_bad_case(case: str, tmp: Path) -> Path:
    """BAD_CASES[case]'s study file under tmp (a missing corpus named inside tmp)."""
    content = BAD_CASES[case][0]
    path = tmp / f"{case}.yaml"
    if isinstance(content, str):
        path.write_text(content)
    else:
        text = yaml.safe_dump(content, sort_keys=False)
        path.write_text(text.replace("NOPE", str(tmp / "no-such-corpus.txt")))
    return path


def assert_one_error_line(path: Path, case: str, stderr: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {path}: "), lines[0]
    for part in BAD_CASES[case][2]:
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each case through the CLI's main() in this process (one process per case cost ~1 s of
    imports each); the test below runs one case as a real process, for the entry point."""
    path, out = write_bad_case(case, tmp_path), tmp_path / "out"
    if case == "missing_shakespeare":  # no copy anywhere, and no download allowed
        for name, value in (("CHARGPT_DATA_DIR", "empty_data"), ("XDG_CACHE_HOME", "cache")):
            (tmp_path / value).mkdir()
            monkeypatch.setenv(name, str(tmp_path / value))
        monkeypatch.setenv("CHARGPT_NO_DOWNLOAD", "1")
    caplog.set_level(logging.INFO)  # what basicConfig in a real process would print
    code, _, stderr = main(capsys, path, "--out", out, *BAD_CASES[case][1])
    assert code == 2, stderr
    assert_one_error_line(path, case, stderr)
    # in a process, log records would be stderr lines too: there must be none
    assert not caplog.records, caplog.text
    assert not out.exists()


@pytest.mark.slow
def test_bad_input_through_the_real_entry_point(tmp_path: Path) -> None:
    """`python run_study.py` itself: exit code 2 and one line on stderr, nothing written."""
    path, out = write_bad_case("unknown_key", tmp_path), tmp_path / "out"
    proc = cli(path, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(path, "unknown_key", proc.stderr)
    assert not out.exists()


@pytest.mark.slow
def test_the_installed_scripts_name_themselves_in_usage_lines() -> None:
    """chargpt-study and chargpt-describe say so in their usage lines, as python run_study.py
    and python -m chargpt.describe do when run that way."""
    bin_dir = Path(sys.executable).parent
    for script, as_python in (
        ("chargpt-study", [str(REPO / "run_study.py")]),
        ("chargpt-describe", ["-m", "chargpt.describe"]),
    ):
        usage = subprocess.run(
            [str(bin_dir / script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert usage.stdout.startswith(f"usage: {script} "), usage
        plain = subprocess.run(
            [sys.executable, *as_python, "--help"], capture_output=True, text=True, timeout=120
        )
        assert plain.stdout.startswith("usage: python "), plain


@pytest.mark.slow
def test_chargpt_imports_without_fcntl() -> None:
    """Windows has no fcntl: nothing in chargpt may need it at import (filelock locks there)."""
    code = (
        "import sys, warnings; sys.modules['fcntl'] = None; "
        "warnings.simplefilter('ignore'); "
        "import chargpt.study.cli, chargpt.study.runner, chargpt.study.store, "
        "chargpt.study.worker, chargpt.measure, chargpt.train"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


# ----- damaged results, Ctrl-C, --jobs ----------------------------------------------------


def tear(path: Path) -> None:
    """Cut a file in the middle of its last line, as a kill during a write would."""
    data = path.read_bytes().rstrip(b"\n")
    last = data.rfind(b"\n")
    path.write_bytes(data[: last + 1 + (len(data) - last) // 2])


@pytest.mark.slow
def test_damaged_runs_in_a_finished_study_are_redone(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    smoke: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """What kills and torn writes leave: a corrupt result.json (run redone), a run killed while
    writing its curve (no result.json, a torn curve.csv, its temp file: redone), temp files of
    killed CSV writers, torn study CSVs. A rerun redoes exactly the damaged runs, the CSVs come
    out whole and no temp file is left."""
    _, finished = smoke
    root = tmp_path / "results" / "smoke"
    shutil.copytree(finished, root)
    corrupt, killed, intact = load_study(SMOKE).runs
    runs = root / "runs"
    (runs / corrupt.run_id / "result.json").write_text('{"run_id": "' + corrupt.run_id[:4])
    (runs / killed.run_id / "result.json").unlink()
    tear(runs / killed.run_id / "curve.csv")
    (runs / killed.run_id / ".curve.csv.4242.tmp").write_text("step,tok")
    (runs / intact.run_id / ".result.json.4243.tmp").write_text("{")
    (root / ".runs.csv.4244.tmp").write_text("run_id,la")
    tear(root / "runs.csv")
    tear(root / "curves.csv")
    before = result_mtimes(root)

    code, _, stderr = main(capsys, SMOKE, "--out", root.parent)
    assert code == 0, stderr
    after = result_mtimes(root)
    assert after[intact.run_id] == before[intact.run_id]  # whole: not run again
    assert after[corrupt.run_id] != before[corrupt.run_id]  # redone
    assert killed.run_id in after  # redone
    header, rows = read_csv(root / "runs.csv")  # raises on a torn row
    assert header[:2] == ["run_id", "label"]
    assert [(r["run_id"], r["status"]) for r in rows] == [
        (r.run_id, "ok") for r in (corrupt, killed, intact)
    ]
    assert_curves_complete(root, rows)
    for run in (corrupt, killed):
        _, curve = read_csv(runs / run.run_id / "curve.csv")
        assert [int(c["step"]) for c in curve] == [0, 50, 100]
    assert not list(root.rglob("*.tmp")), "temp files left behind"


def test_a_run_whose_point_was_edited_leaves_the_csvs_and_keeps_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Editing a point makes a new run under the same label; the old one's record would put
    two experiments in one label's rows, so the CSVs keep the plan's runs only (and say so)."""
    caplog.set_level(logging.INFO)
    a = {"label": "a", "optim.lr": 1e-3}
    before = write_study(tmp_path / "e.yaml", "e", runs=[a, {"label": "e"}])
    out = tmp_path / "results"
    assert main(capsys, before, "--out", out)[0] == 0
    old = by_label(load_study(before).runs)["e"].run_id
    after = write_study(tmp_path / "e.yaml", "e", runs=[a, {"label": "e", "optim.lr": 2.5e-3}])
    assert main(capsys, after, "--out", out)[0] == 0
    _, rows = read_csv(out / "e" / "runs.csv")
    assert [(r["run_id"], r["label"]) for r in rows] == [
        (r.run_id, r.label) for r in load_study(after).runs
    ]
    _, curves = read_csv(out / "e" / "curves.csv")
    assert old not in {r["run_id"] for r in curves}
    assert (out / "e" / "runs" / old / "result.json").is_file()  # nothing deleted
    assert "1 finished runs under" in caplog.text and old in caplog.text


def test_a_folder_in_place_of_runs_csv_is_said_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """runs.csv rebuilt onto a folder: the study stops with one line naming runs.csv (the
    rename's target, not its temp file), exit 1, the finished runs kept."""
    study = write_study(tmp_path / "c.yaml", "c")
    out = tmp_path / "results"
    assert main(capsys, study, "--out", out)[0] == 0
    (out / "c" / "runs.csv").unlink()
    (out / "c" / "runs.csv" / "in-the-way").mkdir(parents=True)
    code, _, stderr = main(capsys, study, "--out", out)
    assert code == 1 and "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert f"cannot write results (Is a directory: {out / 'c' / 'runs.csv'})" in line, line


def test_an_out_that_is_a_file_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming a file (or a path through one) is a mistyped flag: exit 2, one line,
    rather than a results folder that 'cannot be written'."""
    study = write_study(tmp_path / "o.yaml", "o")
    (tmp_path / "afile").write_text("")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        code, _, stderr = main(capsys, study, "--out", out)
        assert code == 2 and stderr.strip() == (
            f"error: --out: {tmp_path / 'afile'} is a file, not a folder for results/<study>"
        ), stderr


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--jobs", "0", "--jobs must be >= 1, got 0"),
        ("--jobs", "-1", "--jobs must be >= 1, got -1"),
        ("--timeout", "0", "--timeout must be > 0 seconds and finite, got 0"),
        ("--timeout", "-5", "--timeout must be > 0 seconds and finite, got -5"),
        ("--timeout", "nan", "--timeout must be > 0 seconds and finite, got nan"),
        ("--timeout", "inf", "--timeout must be > 0 seconds and finite, got inf"),
    ],
)
def test_jobs_and_timeout_must_be_positive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    study = write_study(tmp_path / "flags.yaml", "flags")
    out = tmp_path / "results"
    code, stdout, stderr = main(capsys, study, "--out", out, flag, value)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], stderr
    assert not out.exists()  # nothing written


def test_the_first_run_of_a_graph_shares_its_cold_compile_with_the_runs_after_it(
    tmp_path: Path,
) -> None:
    """compile: auto runs of one graph and budget: the first is told how many runs its cold
    compile would make warm, less those --jobs starts beside it (no cache yet)."""
    base = {**TINY_BASE, "train": {**TINY_BASE["train"], "compile": "auto"}}
    study = write_study(
        tmp_path / "s.yaml",
        "shares",
        base=base,
        grid={"optim.lr": [1e-3, 2e-3, 3e-3], "model.n_embd": [16, 32]},
        runs=[
            {"label": "base"},
            {"label": "eager", "train": {"compile": False}},
            {"label": "longer", "budget": {"max_steps": 40}},
        ],
    )
    runs = load_study(study).runs  # each of the 3 runs at each of the 6 grid points
    firsts: dict[tuple[str, int], str] = {}  # one graph and budget: a label at a width
    for r in runs:
        if r.label.startswith(("base", "longer")):
            firsts.setdefault((r.label.split()[0], r.config.model.n_embd), r.run_id)
    assert len(firsts) == 4
    one = {r.run_id: Slot(jobs=1, threads=1) for r in runs}
    two = {r.run_id: Slot(jobs=2, threads=1) for r in runs}
    assert compile_shares(runs, one) == dict.fromkeys(firsts.values(), 3)
    assert compile_shares(runs, two) == dict.fromkeys(firsts.values(), 2)
    four = {r.run_id: Slot(jobs=4, threads=1) for r in runs}
    assert compile_shares(runs, four) == {}  # all three of a group start at once


@pytest.mark.slow
def test_one_job_or_two_give_the_same_losses(tmp_path: Path) -> None:
    """--jobs 2 gives each worker cores // jobs threads; --jobs 1 leaves torch its own count
    (set here through OMP_NUM_THREADS). At the same thread count the losses are bit for bit
    the same, however many runs train side by side. At another thread count they differ in
    the last bits (float sums split over other threads add up in another order: seen here as
    2.03986144 against 2.03986120): that count is recorded (runs.csv's threads) and is not
    part of run_id, so resuming with another --jobs does not redo finished runs. With
    compile: auto, --jobs 1 tells the first run that its cold compile serves the second."""
    base = {**TINY_BASE, "train": {**TINY_BASE["train"], "compile": "auto"}}
    study = write_study(tmp_path / "jobs.yaml", "jobs", base=base, grid={"optim.lr": [1e-3, 3e-3]})
    cores = os.cpu_count() or 1
    per_job = max(1, cores // 2)
    other = 1 if per_job > 1 else 2
    first = load_study(study).runs[0].run_id
    rows = {}
    # (at the other thread count one run is enough to show the loss drift and the record)
    for name, jobs, threads, only in (
        ("same", 1, per_job, ()),
        ("other", 1, other, ("--only", first)),
        ("two", 2, None, ()),
    ):
        env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        proc = run_here(study, "--out", tmp_path / name, "--jobs", jobs, *only, **env)
        assert proc.returncode == 0, proc.stderr
        rows[name] = read_csv(tmp_path / name / "jobs" / "runs.csv")[1]
    assert [r["run_id"] for r in rows["same"]] == [r["run_id"] for r in rows["two"]]
    assert [r["run_id"] for r in rows["other"]] == [first] == [rows["two"][0]["run_id"]]
    assert {r["threads"] for r in rows["two"]} == {str(per_job)}
    assert {r["threads"] for r in rows["same"]} == {str(per_job)}
    assert {r["threads"] for r in rows["other"]} == {str(other)}
    shared = "the 1 later runs of this graph save"  # too tiny to compile: eager all the same
    assert [shared in r["compile_reason"] for r in rows["same"]] == [True, False]
    assert not any(shared in r["compile_reason"] for r in rows["two"] + rows["other"])
    assert {r["compiled"] for r in rows["same"] + rows["two"]} == {"False"}
    losses = ("final_train_loss", "final_val_loss", "best_val_loss")
    for key in (*losses, "steps"):
        assert [r[key] for r in rows["same"]] == [r[key] for r in rows["two"]], key
    for a, b in zip(rows["other"], rows["two"]):
        assert a["steps"] == b["steps"]
        for key in losses:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), key
    curves = {
        name: [
            (c["run_id"], c["step"], c["train_loss"], c["val_loss"])
            for c in read_csv(tmp_path / name / "jobs" / "curves.csv")[1]
        ]
        for name in ("same", "two")
    }
    assert curves["same"] == curves["two"]


def test_a_run_whose_process_cannot_start_stops_the_study_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's process that fails to start (here a fresh worker's interpreter path that does
    not exist) is named as such, not blamed on the results folder; the finished runs are
    kept and the same command then resumes."""
    from chargpt.study.local import FreshExecutor
    from chargpt.study.runner import Options, RunNotStarted
    from chargpt.study.runner import run_study as run_study_in_process

    runs = [{"label": "a", "train.seed": 1}, {"label": "b", "train.seed": 2}]
    study = write_study(tmp_path / "s.yaml", "s", runs=runs)
    out = tmp_path / "results"
    assert run_here(study, "--out", out, "--only", "a").returncode == 0
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.raises(RunNotStarted, match=r"\(b\): its process could not start \(.*no-such"):
        run_study_in_process(study, Options(out=out), executor=FreshExecutor())
    monkeypatch.undo()
    rows = read_csv(out / "s" / "runs.csv")[1]
    assert [(r["label"], r["status"]) for r in rows] == [("a", "ok")]
    proc = run_here(study, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in read_csv(out / "s" / "runs.csv")[1]] == ["ok", "ok"]


def test_a_run_start_that_fails_on_a_results_file_blames_the_folder_once(tmp_path: Path) -> None:
    """A run that cannot start because a file of its own in the results folder failed (its
    log, its config) is the folder's error, said once; anything else is the process's."""
    import errno

    from chargpt.study.runner import RunNotStarted, _not_started
    from chargpt.study.store import ResultsUnwritable, StudyStore

    store = StudyStore(tmp_path / "results" / "s")
    (r,) = load_study(write_study(tmp_path / "s.yaml", "s")).runs
    log = store.root / "runs" / r.run_id / "worker.log"
    folder = _not_started(store, r, PermissionError(errno.EACCES, "Permission denied", str(log)))
    assert isinstance(folder, ResultsUnwritable)
    assert str(folder.strerror).count("cannot write results") == 1
    fork = _not_started(store, r, BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"))
    assert isinstance(fork, RunNotStarted) and "its process could not start" in str(fork)
    gone = _not_started(store, r, EOFError("unexpected EOF"))
    assert isinstance(gone, RunNotStarted) and "EOFError: unexpected EOF" in str(gone)
