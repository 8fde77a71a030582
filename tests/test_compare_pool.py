"""bench.ratios (same-round ratios, the median's exact interval) and bench.compare_pool."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from compare_rows import row  # tests/ is on sys.path (pytest's default import mode)

from bench import compare_pool
from bench.ratios import median_interval, pairs, verdict

MACHINE = {
    "cpu_model": "AMD EPYC",
    "cpu_logical_cores": 2,
    "cpu_flags": ["avx2", "avx512f"],
    "torch": "2.13.0+cpu",
    "torch_threads": 2,
    "git_commit": "abc",
}
ONE = row(1, "nanoGPT", 1.0)  # a valid row to build bad files around


@pytest.mark.parametrize(
    ("n", "ranks", "coverage"),
    [
        (1, (1, 1), 0.0),
        (2, (1, 2), 0.5),
        (5, (1, 5), 1 - 2 / 32),  # too few rounds for 95%: the widest interval, 93.75%
        (6, (1, 6), 1 - 2 / 64),
        (9, (2, 8), 1 - 2 * 10 / 512),
        (15, (4, 12), 1 - 2 * (1 + 15 + 105 + 455) / 2**15),
    ],
)
def test_the_median_interval_is_the_binomial_order_statistic_pair(
    n: int, ranks: tuple[int, int], coverage: float
) -> None:
    values = [float(v) for v in np.random.default_rng(n).permutation(n) + 1]  # 1..n shuffled
    low, high, cov = median_interval(values)
    assert (low, high) == ranks  # the values are their own ranks
    assert cov == pytest.approx(coverage)


def test_the_median_interval_covers_the_median_as_often_as_it_says() -> None:
    # 15 lognormal "ratios" a trial, 4000 trials: the claimed 96.5% must be what happens
    rng = np.random.default_rng(0)
    true_median = math.exp(0.25)
    hits, claimed = 0, 0.0
    for _ in range(4000):
        low, high, claimed = median_interval(list(rng.lognormal(0.25, 0.1, size=15)))
        hits += low <= true_median <= high
    assert abs(hits / 4000 - claimed) < 0.012  # ~4 binomial standard errors
    with pytest.raises(ValueError, match="no values"):
        median_interval([])
    with pytest.raises(ValueError, match="level must lie in"):
        median_interval([1.0, 2.0], level=1.0)


def test_verdict_needs_the_whole_interval_on_one_side() -> None:
    assert verdict(1.31, 1.40, 1.3) == "met"
    assert verdict(1.30, 1.40, 1.3) == "met"
    assert verdict(1.20, 1.29, 1.3) == "not met"
    assert verdict(1.20, 1.36, 1.3) == "undecided"


def test_pairs_match_rounds_and_skip_a_round_missing_a_program() -> None:
    rows = [
        row(1, "nanoGPT", 10_000, 1.90),
        row(1, "chargpt manual", 12_000, 1.905),
        row(2, "chargpt manual", 13_000),  # its nanoGPT run is missing
        row(3, "chargpt manual", 15_000),
        row(3, "nanoGPT", 10_000),
    ]
    found = pairs(rows, "chargpt manual", "a.json")
    assert [(p.round, p.ratio) for p in found] == [(1, 1.2), (3, 1.5)]
    assert found[0].loss_gap == pytest.approx(0.005)
    with pytest.raises(ValueError, match="b.json: round 1 ran nanoGPT twice"):
        pairs(rows + [row(1, "nanoGPT", 9_000)], "chargpt manual", "b.json")


def write(path: Path, content: list[dict] | dict) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_pooling_two_comparisons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(
        tmp_path / "a.json",
        [
            r
            for i, x in enumerate([1.1, 1.2, 1.3], 1)
            for r in (row(i, "nanoGPT", 10_000), row(i, "chargpt manual", 10_000 * x))
        ],
    )
    b = write(
        tmp_path / "b.json",
        [
            r
            for i, x in enumerate([1.4, 1.5], 1)
            for r in (row(i, "nanoGPT", 20_000), row(i, "chargpt manual", 20_000 * x, 1.92))
        ],
    )
    assert compare_pool.main([str(a), str(b), "--target", "1.3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == f"| {a} | - | 10,000 | 12,000 | 1.20 | 1.10, 1.20, 1.30 |"
    assert lines[3] == f"| {b} | - | 20,000 | 29,000 | 1.45 | 1.40, 1.50 |"
    # pooled: nanoGPT median of 10k x3, 20k x2 = 10k; chargpt 11k, 12k, 13k, 28k, 30k: 13k
    assert lines[4] == "| all rounds | - | 10,000 | 13,000 | 1.30 | median 1.30 |"
    assert lines[6] == "- machine: not recorded in these files (compare_nanogpt wrote none then)"
    assert lines[7] == (
        "- chargpt manual: median same-round ratio 1.30 over 5 rounds, 93.7% interval "
        "1.10-1.50; target 1.3x: undecided"
    )
    assert lines[8] == (
        f"- whole-split val loss, chargpt manual minus nanoGPT: largest gap +0.0200 ({b}, round 1)"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ("[]", "expected a non-empty list of rows"),
        ("[" * 100_000, "not JSON"),  # nesting deeper than the parser's recursion
        (json.dumps({"machine": MACHINE, "steps": 2000, "rows": {}}), "expected a non-empty list"),
        (json.dumps({"machine": MACHINE, "steps": 0, "rows": [ONE]}), "'steps' is not a positive"),
        (json.dumps({"machine": MACHINE, "started": [1], "rows": [ONE]}), "'started' is not a"),
        (json.dumps([ONE | {"round": "1"}]), "row 0: 'round' missing or not an integer"),
        (json.dumps([ONE | {"program": None}]), "row 0: 'program' missing or not a string"),
        (json.dumps({"rows": [ONE]}), "'machine' missing or not an object"),
        (json.dumps({"machine": {}, "rows": [ONE]}), "machine: 'cpu_model' missing or not a str"),
        (
            json.dumps({"machine": MACHINE | {"cpu_flags": 3}, "rows": [ONE]}),
            "machine: 'cpu_flags' missing or not a list",
        ),
        (
            json.dumps({"machine": MACHINE | {"cpu_flags": [1, 2]}, "rows": [ONE]}),
            "machine: 'cpu_flags' missing or not a list",
        ),
        (json.dumps([row(1, "nanoGPT", 0.0)]), "row 0: tokens_per_s must be > 0"),
        (
            json.dumps([row(1, "nanoGPT", math.nan)]),
            "row 0: 'tokens_per_s' missing or not a finite",
        ),
        (json.dumps([row(1, "nanoGPT", 10**400)]), "row 0: 'tokens_per_s' missing or not a finite"),
        (json.dumps([row(1, "nanoGPT", 1.0, math.inf)]), "'full_val_loss' missing or not a finite"),
        (
            json.dumps([row(1, "nanoGPT", 1.0), row(1, "chargpt eager", 1.0)]),
            "no round ran both nanoGPT and 'chargpt manual' (programs there: chargpt eager, "
            "nanoGPT)",
        ),
    ],
)
def test_a_bad_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    assert compare_pool.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and message in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "0"], "--target must be a finite number > 0, got 0.0"),
        (["--target", "inf"], "--target must be a finite number > 0, got inf"),
        (["--program", "nanoGPT"], "--program must name a chargpt variant, not nanoGPT itself"),
        (["{a}"], "{a} is given twice (as {a}): its rounds would count twice"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    a = str(write(tmp_path / "a.json", [ONE, row(1, "chargpt manual", 2.0)]))
    with pytest.raises(SystemExit) as exit_:
        compare_pool.main([a, *(x.format(a=a) for x in args)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == f"python -m bench.compare_pool: error: {message.format(a=a)}\n"


def test_files_with_a_machine_record_pool_only_when_they_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row(1, "nanoGPT", 10_000), row(1, "chargpt manual", 13_500)]
    a = write(
        tmp_path / "a.json",
        {"started": "2026-12-01T07:12:00+00:00", "machine": MACHINE, "steps": 2000, "rows": rows},
    )
    b = write(
        tmp_path / "b.json",
        {"started": "x", "machine": MACHINE | {"git_commit": "def"}, "steps": 2000, "rows": rows},
    )
    old = write(tmp_path / "old.json", rows)  # a bare list: no machine recorded
    assert compare_pool.main([str(a), str(b), str(old), "--target", "1.3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith(f"| {a} | 2026-12-01T07:12:00+00:00 | 10,000 | 13,500 | 1.35 |")
    assert lines[7] == (
        "- machine: AMD EPYC, 2 cores, 2 threads, torch 2.13.0+cpu, flags avx2, avx512f; "
        "chargpt commit(s) abc, def; 1 file(s) recorded no machine"
    )
    # three rounds at 1.35: [min, max] = [1.35, 1.35] lies above 1.3
    assert lines[8].endswith("75% interval 1.35-1.35; target 1.3x: met")

    other = write(
        tmp_path / "c.json",
        {"machine": MACHINE | {"cpu_flags": ["avx2"]}, "steps": 2000, "rows": rows},
    )
    assert compare_pool.main([str(a), str(other)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {a} and {other} ran on different machines (cpu_flags: ['avx2', 'avx512f'] "
        "against ['avx2']): pool the comparisons of one machine\n"
    )


def test_what_compare_nanogpt_writes_pools_with_this_machine_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import compare_nanogpt
    from chargpt.files import write_json
    from chargpt.measure import cpu_model, git_commit

    head = compare_nanogpt.header(["/src/nanoGPT", "--rounds", "1"], 2000)
    assert head["command"] == [
        "python", "-m", "bench.compare_nanogpt", "/src/nanoGPT", "--rounds", "1"
    ]  # fmt: skip
    assert head["steps"] == 2000 and head["machine"]["git_commit"] == git_commit()
    rows = [row(1, "nanoGPT", 10_000), row(1, "chargpt manual", 12_000)]
    write_json(tmp_path / "a.json", {**head, "rows": rows})
    assert compare_pool.main([str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert f"- machine: {cpu_model()}, " in out and "recorded no machine" not in out
    assert f"| {head['started']} | 10,000 | 12,000 | 1.20 | 1.20 |" in out


def test_comparisons_of_different_lengths_are_not_pooled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row(1, "nanoGPT", 10_000), row(1, "chargpt manual", 12_000)]
    old = write(tmp_path / "old.json", rows)  # a bare list: its step count is not known
    full = write(tmp_path / "full.json", {"machine": MACHINE, "steps": 2000, "rows": rows})
    short = write(tmp_path / "short.json", {"machine": MACHINE, "steps": 250, "rows": rows})
    assert compare_pool.main([str(old), str(full)]) == 0
    assert compare_pool.main([str(old), str(full), str(short)]) == 2
    assert capsys.readouterr().err == (
        f"error: {full} ran 2000 steps, {short} 250: pool comparisons of one recipe length\n"
    )
