"""--jobs: fixed jobs, the size bound, the jobs and threads columns, the warning about timings,
bad values (--jobs auto's placement itself: tests/test_packing.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_helpers import run_here
from test_runner import main, read_csv, write_study

from chargpt.study import placement
from chargpt.study.packing import SMALL_STEP_FLOPS, Slot, fixed_slot, step_flops
from chargpt.study.placement import fits
from chargpt.study.spec import load_study

WARNING = (
    "timings (train_s, tokens_per_s, mfu) are not isolated; timing studies should use --jobs 1"
)


def test_a_fixed_jobs_shares_the_cores_and_one_job_keeps_torchs_default() -> None:
    assert fixed_slot(1, cores=8) == Slot(jobs=1, threads=None)
    assert fixed_slot(2, cores=8) == Slot(jobs=2, threads=4)
    assert fixed_slot(16, cores=8) == Slot(jobs=16, threads=1)


def test_a_large_run_waits_for_the_small_ones_and_then_trains_alone() -> None:
    small, large = Slot(jobs=2, threads=1), Slot(jobs=1, threads=2)
    assert fits(small, []) and fits(small, [small])
    assert not fits(small, [small, small])  # the cores are taken
    assert not fits(large, [small]) and fits(large, [])
    assert not fits(small, [large])  # nothing beside a large run


def test_step_flops_of_the_scaling_shapes_split_at_the_bound() -> None:
    """studies/scaling.yaml: A-C (1-2k tokens a step of small models) count as small,
    D-F as large (the README's rule)."""
    study = load_study(Path(__file__).resolve().parent.parent / "studies" / "scaling.yaml")
    small = [r.label[0] for r in study.runs if step_flops(r.config, 65) < SMALL_STEP_FLOPS]
    assert small == ["A", "B", "C"]


@pytest.mark.slow
@pytest.mark.parametrize("cores", [1, 2])
def test_jobs_auto_records_jobs_and_threads_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int
) -> None:
    """Two tiny runs (no packing figures): on two cores side by side, one thread each, and a
    warning; on one core one at a time, no warning. (The cores are set: on more, two runs
    would be a group left over, which shares the cores.)"""
    monkeypatch.setattr(placement, "usable_cores", lambda: cores)
    study = write_study(tmp_path / "auto.yaml", "auto", grid={"optim.lr": [1e-3, 2e-3]})
    proc = run_here(study, "--out", tmp_path / "results", "--jobs", "auto")
    assert proc.returncode == 0, proc.stderr
    header, rows = read_csv(tmp_path / "results" / "auto" / "runs.csv")
    assert {"jobs", "threads"} <= set(header)
    assert {(r["jobs"], r["threads"]) for r in rows} == {(str(cores), "1")}
    warned = [line for line in proc.stderr.splitlines() if WARNING in line]
    assert len(warned) == (1 if cores > 1 else 0), proc.stderr
    # Each run's lines carry the number it started with, [1/2] and [2/2], whatever order
    # the two side by side end in.
    lines = re.findall(r"\[(\d)/2\] (?:start|ok) .*? \((\w{10})\)", proc.stderr)
    numbers: dict[str, set[str]] = {}
    for number, run_id in lines:
        numbers.setdefault(run_id, set()).add(number)
    assert len(lines) == 4 and sorted(numbers.values()) == [{"1"}, {"2"}], proc.stderr
    assert "; 1 of 2 done" in proc.stderr and "; 2 of 2 done" in proc.stderr


@pytest.mark.slow
def test_one_job_records_jobs_1_and_does_not_warn(tmp_path: Path) -> None:
    study = write_study(tmp_path / "one.yaml", "one", grid={"optim.lr": [1e-3, 2e-3]})
    proc = run_here(study, "--out", tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "results" / "one" / "runs.csv")[1]
    assert {r["jobs"] for r in rows} == {"1"}
    assert WARNING not in proc.stderr


@pytest.mark.parametrize("value", ["0", "many", "1.5"])
def test_a_bad_jobs_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    study = write_study(tmp_path / "bad.yaml", "bad")
    code, _, stderr = main(capsys, study, "--out", tmp_path / "results", "--jobs", value)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "--jobs" in lines[0], stderr
    assert not (tmp_path / "results").exists()
