"""--jobs auto's placement (measured figures where this machine has them, else by size), the
measurement behind it (chargpt.study.pack_probe) and its benchmark (bench.packing)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import statistics
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import run_here
from test_runner import TINY_BASE, read_csv, write_study

from bench import packing as bench_packing
from chargpt import machine_cache
from chargpt.config import RunConfig
from chargpt.study import pack_record, packing, placement
from chargpt.study.pack_group import measure_group
from chargpt.study.pack_probe import Copies, PackSpeed, ProbeError, measure_speed
from chargpt.study.pack_record import cached_speed, figures_for, measure_and_record, speed_key
from chargpt.study.packing import (
    MIN_GAIN,
    SMALL_STEP_FLOPS,
    RunLoad,
    Slot,
    auto_placements,
    run_load,
    usable_cores,
)
from chargpt.study.spec import load_study

SMALL, LARGE = SMALL_STEP_FLOPS / 10, SMALL_STEP_FLOPS * 10
PAIR, ALONE = Slot(jobs=2, threads=1), Slot(jobs=1, threads=2)
TINY = RunConfig.from_dict(TINY_BASE)
VOCAB = 32  # any vocabulary: the measurement steps on random tokens
two_cores = pytest.mark.skipif(usable_cores() < 2, reason="packing needs 2 cores")


def load(
    flops: float = SMALL, steps: int | None = 100, max_seconds: float | None = None
) -> RunLoad:
    return RunLoad(flops, steps, max_seconds)


def speed(alone_s: float, beside_s: float, cores: int = 2) -> PackSpeed:
    return PackSpeed(
        alone_s=alone_s, beside_s=beside_s, relative=(alone_s / beside_s,), cores=cores
    )


def slots(
    loads: list[RunLoad], cores: int, speeds: list[PackSpeed | None] | None = None
) -> list[Slot]:
    figures = speeds or [None] * len(loads)
    groups = auto_placements(loads, cores, lambda i: figures[i])
    assert [i for g in groups for i in g.runs] == list(range(len(loads)))  # each once, in order
    return [g.slot for g in groups for _ in g.runs]


# ----- placement by size (nothing measured) ---------------------------------------------------


def test_unmeasured_groups_go_by_size() -> None:
    """Consecutive groups of `cores`: all small side by side, otherwise one at a time on every
    core; the runs left over share the cores when small, and one alone gets them all."""
    small, large = load(SMALL), load(LARGE)
    assert slots([small, small], cores=2) == [PAIR, PAIR]
    assert slots([large, large], cores=2) == [ALONE, ALONE]
    assert slots([small, small, small, large], cores=2) == [PAIR, PAIR, ALONE, ALONE]
    # A small run beside a large one trains alone: side by side the large one would get one
    # thread; and the small run after it has no partner, so it gets both cores.
    assert slots([small, large, small], cores=2) == [ALONE, ALONE, ALONE]
    assert slots([small] * 3, cores=4) == [Slot(jobs=3, threads=1)] * 3
    assert slots([small] * 6, cores=4) == [Slot(jobs=4, threads=1)] * 4 + [Slot(2, 2)] * 2
    assert slots([small, large], cores=1) == [Slot(jobs=1, threads=1)] * 2


def test_the_reason_says_it_was_not_measured() -> None:
    (group,) = auto_placements([load(), load()], 2, lambda i: None)
    assert "no packing figures for them on this machine (python -m bench.packing)" in group.reason


def test_one_unmeasured_run_sends_its_group_by_size() -> None:
    figures = [speed(1.0, 1.0), None]  # measured, the pair would gain 2x
    assert slots([load(LARGE), load(LARGE)], 2, figures) == [ALONE, ALONE]


# ----- placement by measurement -----------------------------------------------------------


def test_measured_groups_pack_only_when_predicted_to_finish_sooner() -> None:
    """Large runs pack when the figures say so, small ones stay apart when they say not."""
    fast_beside, slow_beside = speed(0.10, 0.15), speed(0.10, 0.25)  # 1.33x and 0.8x the work
    assert slots([load(LARGE)] * 2, 2, [fast_beside] * 2) == [PAIR, PAIR]
    assert slots([load(SMALL)] * 2, 2, [slow_beside] * 2) == [ALONE, ALONE]


def test_the_prediction_takes_the_longest_run_side_by_side() -> None:
    """1.6x the work a second side by side, but one run is ten times as long: one after the
    other takes 1,000 + 100 steps of 1 s, side by side the long run's 1,000 steps of 1.25 s."""
    long, short = load(steps=1000), load(steps=100)
    placements = auto_placements([long, short], 2, lambda i: speed(1.0, 1.25))
    assert placements[0].slot == ALONE
    assert "1,250 s against 1,100 s one at a time (0.880x)" in placements[0].reason
    even = auto_placements([long, long], 2, lambda i: speed(1.0, 1.25))
    assert even[0].slot == PAIR
    assert "1,250 s against 2,000 s one at a time (1.600x)" in even[0].reason


def test_the_bound_is_min_gain() -> None:
    at, below = speed(1.0, 2.0 / MIN_GAIN), speed(1.0, 2.0 / MIN_GAIN * 1.01)
    assert slots([load(), load()], 2, [at, at]) == [PAIR, PAIR]
    placement = auto_placements([load(), load()], 2, lambda i: below)[0]
    assert placement.slot == ALONE and f"below {MIN_GAIN}x" in placement.reason


def test_a_time_budget_packs_by_the_work_done_a_second() -> None:
    """A max_seconds run takes its seconds either way: what differs is the work it does."""
    timed = load(steps=None, max_seconds=60.0)
    placement = auto_placements([timed, timed], 2, lambda i: speed(1.0, 1.5))[0]
    assert placement.slot == PAIR and "1.333x the work a second" in placement.reason
    assert slots([timed, timed], 2, [speed(1.0, 2.5)] * 2) == [ALONE, ALONE]


def test_stopping_on_the_clock_is_not_finishing_sooner() -> None:
    """1,000 steps of 1 s alone, 3 s side by side, capped at 1,000 s: side by side each run
    would stop a third of the way, which a wall-time comparison would call 2x faster."""
    capped = load(steps=1000, max_seconds=1000.0)
    placement = auto_placements([capped, capped], 2, lambda i: speed(1.0, 3.0))[0]
    assert placement.slot == ALONE and "0.667x the work a second" in placement.reason


def test_run_load_counts_the_budgets_steps() -> None:
    study = load_study(Path(__file__).resolve().parent.parent / "studies" / "scaling.yaml")
    a = run_load(study.runs[0].config, 65)
    assert a.steps == int(1.5e13 // a.step_flops) and a.max_seconds is None
    assert a.step_flops < SMALL_STEP_FLOPS


# ----- the measurement ----------------------------------------------------------------------


@two_cores
def test_measure_speed_times_both_sides_in_every_round() -> None:
    figures = measure_speed(TINY, VOCAB, cores=2, rounds=2, seconds=0.05)
    assert figures.alone_s > 0 and figures.beside_s > 0 and len(figures.relative) == 2
    assert figures.cores == 2
    assert figures.gain == pytest.approx(2 * figures.alone_s / figures.beside_s)


@two_cores
def test_a_recorded_figure_is_what_auto_reads_until_it_is_too_old(_test_cache: Path) -> None:
    assert cached_speed(TINY, VOCAB, 2) is None
    measured, kept = measure_and_record(TINY, VOCAB, 2, "tiny", rounds=1, seconds=0.05)
    assert kept == measured  # nothing earlier to pool with
    assert cached_speed(TINY, VOCAB, 2) == dataclasses.replace(kept, alone=())
    assert cached_speed(TINY, VOCAB, 4) is None  # measured on another number of cores
    path = _test_cache / "chargpt" / "packing.json"
    entries = json.loads(path.read_text())
    entry = entries[speed_key(TINY, VOCAB, 2)]
    assert entry["label"] == "tiny" and entry["model"] == "L1 H2 C16 T8 B8"
    entry["measured_at"] = time.time() - (machine_cache.MAX_AGE_DAYS + 1) * 86400
    path.write_text(json.dumps(entries))
    assert cached_speed(TINY, VOCAB, 2) is None


@two_cores
def test_a_figure_pools_the_latest_rounds_of_recent_measurements(
    _test_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each measurement adds its rounds to the shape's recent ones; the figure auto reads is
    the median over the last POOL_ROUNDS; rounds older than the cache's age limit drop out."""
    monkeypatch.setattr(pack_record, "POOL_ROUNDS", 3)
    path = _test_cache / "chargpt" / "packing.json"
    key = speed_key(TINY, VOCAB, 2)
    first, _ = measure_and_record(TINY, VOCAB, 2, rounds=2, seconds=0.02)
    second, kept = measure_and_record(TINY, VOCAB, 2, rounds=2, seconds=0.02)
    assert kept.relative == (first.relative[1], *second.relative)  # the latest 3 of 4
    assert kept.alone_s == statistics.median((first.alone[1], *second.alone))
    entry = json.loads(path.read_text())[key]
    assert len(entry["rounds"]) == 3 and entry["measurements"] == 2
    assert cached_speed(TINY, VOCAB, 2) == dataclasses.replace(kept, alone=())
    entries = json.loads(path.read_text())
    old = time.time() - (machine_cache.MAX_AGE_DAYS + 1) * 86400
    entries[key]["rounds"] = [[a, r, old] for a, r, _ in entries[key]["rounds"]]
    path.write_text(json.dumps(entries))
    third, kept = measure_and_record(TINY, VOCAB, 2, rounds=2, seconds=0.02)
    assert kept.relative == third.relative  # the old rounds are gone


def test_the_key_is_the_shape_not_the_learning_rate() -> None:
    other_lr = RunConfig.from_dict({**TINY_BASE, "optim": {"lr": 1e-2}})
    wider = RunConfig.from_dict({**TINY_BASE, "model": {**TINY_BASE["model"], "n_embd": 32}})
    assert speed_key(TINY, VOCAB, 2) == speed_key(other_lr, VOCAB, 2)
    assert speed_key(TINY, VOCAB, 2) != speed_key(wider, VOCAB, 2)
    assert speed_key(TINY, VOCAB, 2) != speed_key(TINY, VOCAB + 1, 2)


@two_cores
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_failing_copy_is_an_error_that_says_why() -> None:
    """A copy that fails as it sets up (here: asked for CUDA on a machine without it) stops
    the measurement with its own error, and every copy ends (the test would hang otherwise)."""
    on_cuda = RunConfig.from_dict({**TINY_BASE, "train": {**TINY_BASE["train"], "device": "cuda"}})
    with pytest.raises(ProbeError, match="ValueError: train.device: cuda was asked for"):
        measure_speed(on_cuda, VOCAB, cores=2, rounds=1, seconds=0.05)


@two_cores
def test_measure_group_times_each_run_alone_and_all_together() -> None:
    """Two different runs: each alone on both cores and both at once, every round; one run
    is not a group. (Which run's step is longer is not asserted: beside another test
    process, a tiny model's two threads can wait on each other longer than a larger
    model's step takes.)"""
    model = {"n_layer": 2, "n_head": 2, "n_embd": 128, "block_size": 32}
    larger = RunConfig.from_dict({**TINY_BASE, "model": {**TINY_BASE["model"], **model}})
    group = measure_group([(TINY, VOCAB), (larger, VOCAB)], rounds=2, seconds=0.05)
    assert len(group) == 2
    assert all(len(g.relative) == 2 and min(g.relative) > 0 for g in group)
    assert min(g.alone_s for g in group) > 0 and min(g.beside_s for g in group) > 0
    with pytest.raises(ValueError, match="at least 2 runs"):
        measure_group([(TINY, VOCAB)])


@two_cores
def test_a_copy_killed_mid_measurement_ends_it_at_once() -> None:
    """The OOM killer's way: no word from the copy. The other, waiting at the barrier to step
    beside it, is released; the error says how the copy died; close() ends what is left."""
    copies = Copies([(TINY, VOCAB)] * 2)
    pids = [proc.pid for proc in copies.procs]
    try:
        assert len(copies.step([0, 1], 1, 0.05)) == 2  # both step, side by side
        os.kill(pids[1], signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(ProbeError, match="killed by signal 9"):
            copies.step([0, 1], 1, 0.05)
        assert time.monotonic() - t0 < 30  # not the barrier's 300 s timeout
    finally:
        copies.close()
    assert all(_gone_within(pid, 10.0) for pid in pids)


def _gone_within(pid: int | None, seconds: float) -> bool:
    """Wait up to `seconds` for a process to be gone; True when it is (its reaper is the
    zygote, so a dead child can stay a zombie for a moment)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status")
        try:
            if "State:\tZ" in status.read_text():
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


# ----- the runner and the benchmark ------------------------------------------------------------


def _write_figure(
    cache: Path, run: RunConfig, vocab: int, cores: int, alone_s: float, beside_s: float
) -> None:
    """A packing.json entry as measure_and_record writes it (the machine's figures are input)."""
    path = cache / "chargpt" / "packing.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "alone_s": alone_s,
        "beside_s": beside_s,
        "relative": [alone_s / beside_s],
        "measured_at": time.time(),
    }
    path.write_text(json.dumps({speed_key(run, vocab, cores): entry}))


@pytest.mark.slow
@two_cores
def test_jobs_auto_follows_this_machines_figures(
    tmp_path: Path, _test_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny runs go side by side by size; with figures saying side by side is 4x slower a
    step, the same study trains them one at a time on every core, and says why. (Two cores,
    whatever the machine has: two runs on more would be a group left over, placed by size.)"""
    monkeypatch.setattr(placement, "usable_cores", lambda: 2)
    study = write_study(tmp_path / "fig.yaml", "fig", grid={"optim.lr": [1e-3, 2e-3]})
    cores = 2
    _write_figure(_test_cache, TINY, _synthetic_vocab(), cores, alone_s=0.01, beside_s=0.04)
    proc = run_here(study, "--out", tmp_path / "results", "--jobs", "auto")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "results" / "fig" / "runs.csv")[1]
    assert {(r["jobs"], r["threads"]) for r in rows} == {("1", str(cores))}
    assert "one at a time on" in proc.stderr and "measured, side by side" in proc.stderr
    assert "not isolated" not in proc.stderr  # nothing trained side by side


def _synthetic_vocab() -> int:
    from chargpt.corpus import load_corpus
    from chargpt.data import CharTokenizer

    return CharTokenizer.from_text(load_corpus("synthetic")).vocab_size


@pytest.mark.parametrize(
    "args, says",
    [
        (["missing.yaml"], "no such file"),
        (["STUDY", "--rounds", "0"], "--rounds: must be a finite number > 0"),
        (["STUDY", "--seconds", "-1"], "--seconds: must be a finite number > 0"),
        (["STUDY", "--seconds", "inf"], "--seconds: must be a finite number > 0"),
        (["STUDY", "--only", "nobody"], "--only nobody: no run"),
        # refused before the minute of measuring it would have recorded
        (["STUDY", "--json", "TMP"], "argument --json: TMP is a folder, not a file"),
        (["STUDY", "--json", "TMP/s.yaml/x.json"], "TMP/s.yaml is a file, not a folder"),
    ],
)
def test_bench_packing_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    study = write_study(tmp_path / "s.yaml", "s")
    args = [str(study) if a == "STUDY" else a.replace("TMP", str(tmp_path)) for a in args]
    assert _bench(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says.replace("TMP", str(tmp_path)) in err[0], err


def _bench(args: list[str]) -> int:
    """bench.packing's exit code: main's return, or argparse's usage-error exit."""
    try:
        return bench_packing.main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.slow
@two_cores
def test_bench_packing_measures_records_and_prints_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packing, "usable_cores", lambda: 2)  # a full group of two runs
    study = write_study(tmp_path / "b.yaml", "b", grid={"optim.lr": [1e-3, 2e-3]})
    out = tmp_path / "packing.json"
    code = bench_packing.main(
        [str(study), "--rounds", "1", "--seconds", "0.05", "--json", str(out)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "side by side do" in text and "--jobs auto now places them" in text
    # The plan goes by the figures just taken (one shape for both runs).
    assert "measured, " in text and "no packing figures" not in text
    report = json.loads(out.read_text())
    assert len(report["shapes"]) == 1 and len(report["shapes"][0]["labels"]) == 2
    assert "cpu_flags" in report["machine"] and report["cores"] == 2
    assert cached_speed(load_study(study).runs[0].config, _synthetic_vocab(), 2) is not None


@pytest.mark.slow
@two_cores
def test_bench_packing_groups_measures_groups_of_different_shapes_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--groups: the group of two shapes is measured together and both gains are printed
    (and written); a group of one shape is its own figure, so there is nothing to check."""
    monkeypatch.setattr(packing, "usable_cores", lambda: 2)
    mixed = write_study(tmp_path / "m.yaml", "m", grid={"model.n_embd": [16, 32]})
    out = tmp_path / "groups.json"
    args = ["--rounds", "1", "--seconds", "0.05", "--groups"]
    assert bench_packing.main([str(mixed), *args, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "--groups: 1 of different shapes, measured together:" in text
    assert "ms a step in the group" in text and "the figures said" in text
    (checked,) = json.loads(out.read_text())["groups"]
    assert len(checked["beside_s"]) == 2 and checked["measured_gain"] > 0
    same = write_study(tmp_path / "s.yaml", "s", grid={"optim.lr": [1e-3, 2e-3]})
    assert bench_packing.main([str(same), *args]) == 0
    assert "--groups: no group of different shapes" in capsys.readouterr().out


@pytest.mark.slow
def test_reprobe_drops_the_packing_figures(tmp_path: Path, _test_cache: Path) -> None:
    """run_study.py --reprobe: every cached measurement is taken again, the packing figures
    as well as the peak FLOP/s."""
    _write_figure(_test_cache, TINY, _synthetic_vocab(), 2, alone_s=0.01, beside_s=0.04)
    assert cached_speed(TINY, _synthetic_vocab(), 2) is not None
    study = write_study(tmp_path / "re.yaml", "re")
    proc = run_here(study, "--out", tmp_path / "results", "--reprobe")
    assert proc.returncode == 0, proc.stderr
    assert cached_speed(TINY, _synthetic_vocab(), 2) is None
    assert not (_test_cache / "chargpt" / "packing.json").exists()


def test_copies_that_would_not_fit_in_memory_are_not_started() -> None:
    """Ten million copies of even the tiny model: refused before a process starts."""
    with pytest.raises(ProbeError, match="copies would need ~[0-9,]+ MiB, over 40% of the free"):
        measure_speed(TINY, VOCAB, cores=10_000_000, rounds=1, seconds=0.05)


def test_figures_count_only_for_runs_that_train_as_they_were_taken(_test_cache: Path) -> None:
    """The runner and bench.packing's plan read figures through one gate: a compiled run or
    one with threads of its own trains unlike the eager copies that were measured."""
    vocab = _synthetic_vocab()
    _write_figure(_test_cache, TINY, vocab, 2, alone_s=0.01, beside_s=0.04)
    train = TINY_BASE["train"]
    compiled = RunConfig.from_dict({**TINY_BASE, "train": {**train, "compile": True}})
    threaded = RunConfig.from_dict({**TINY_BASE, "train": {**train, "threads": 1}})
    assert figures_for(TINY, vocab, 2) == cached_speed(TINY, vocab, 2) is not None
    assert cached_speed(compiled, vocab, 2) is not None  # the same shape, so the same figure
    assert figures_for(compiled, vocab, 2) is None
    assert figures_for(threaded, vocab, 2) is None
