"""Pool several `bench.compare_nanogpt --json` files: each comparison's ratio, all rounds' ratio.

    python -m bench.compare_pool A.json B.json ... [--program "chargpt manual"] [--target 1.3]

A five-round comparison on a shared machine lands anywhere in the machine's spread of fast
and slow spells; pooling the rounds of several comparisons (same code, same machine) and
giving an exact interval for the median same-round ratio says how sure a figure such as 1.3x
is. Files from different machines (CPU, cores, flags, threads, PyTorch) or of different
--steps are refused. Prints a markdown table, one line per file and one for the pool, the
machine, then the pooled median with its distribution-free interval
(bench.ratios.median_interval) and, with --target, whether the interval is wholly above it
(met), below it (not met) or across it (undecided). It also gives the largest gap in
whole-split val loss between the two programs, which a speed figure is only worth anything
beside.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ratios import REFERENCE, Pair, median_speed, pairs, summary_line
from chargpt.cli import ArgumentParser

# What must agree between files for their rounds to be pooled: one machine, one PyTorch.
MACHINE_KEYS = {
    "cpu_model": str,
    "cpu_logical_cores": int,
    "cpu_flags": list,
    "torch": str,
    "torch_threads": int,
}


class PoolError(ValueError):
    """A comparison file that cannot be pooled; the message names the file and the problem."""


@dataclass(frozen=True)
class Comparison:
    """One compare_nanogpt --json file: its rows and, where it recorded them, the machine,
    start time and step count (the first such files, a bare list of rows, hold none)."""

    name: str
    rows: list[dict[str, Any]]
    machine: dict[str, Any] | None = None
    started: str | None = None
    steps: int | None = None  # the recipe's training steps (--steps), where recorded


def _number(value: Any) -> float | None:
    """value as a finite float, or None when it is not a finite JSON number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range
        return None
    return number if math.isfinite(number) else None


def _check_machine(path: Path, machine: Any) -> None:
    """PoolError unless machine holds the fingerprint keys pooling compares, well typed."""
    if not isinstance(machine, dict):
        raise PoolError(f"{path}: 'machine' missing or not an object")
    for key, kind in MACHINE_KEYS.items():
        value = machine.get(key)
        if key == "cpu_flags":  # None where the OS has no /proc/cpuinfo
            ok = value is None or (
                isinstance(value, list) and all(isinstance(f, str) for f in value)
            )
        else:
            ok = isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise PoolError(f"{path}: machine: '{key}' missing or not a {kind.__name__}")


def load(path: Path) -> Comparison:
    """One compare_nanogpt --json file, checked for the keys pooling reads."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise PoolError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PoolError(f"{path}: not JSON ({str(exc) or type(exc).__name__})") from exc
    machine = started = steps = None
    if isinstance(data, dict):
        machine, started, steps = data.get("machine"), data.get("started"), data.get("steps")
        data = data.get("rows")
        _check_machine(path, machine)
        if started is not None and not isinstance(started, str):
            raise PoolError(f"{path}: 'started' is not a string")
        if steps is not None and (
            not isinstance(steps, int) or isinstance(steps, bool) or steps < 1
        ):
            raise PoolError(f"{path}: 'steps' is not a positive integer")
    if not isinstance(data, list) or not data:
        raise PoolError(f"{path}: expected a non-empty list of rows (compare_nanogpt --json)")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise PoolError(f"{path}: row {i} is not an object")
        if not isinstance(row.get("round"), int) or isinstance(row.get("round"), bool):
            raise PoolError(f"{path}: row {i}: 'round' missing or not an integer")
        if not isinstance(row.get("program"), str):
            raise PoolError(f"{path}: row {i}: 'program' missing or not a string")
        for key in ("tokens_per_s", "full_val_loss"):
            if _number(row.get(key)) is None:
                raise PoolError(f"{path}: row {i}: '{key}' missing or not a finite number")
        if row["tokens_per_s"] <= 0:
            raise PoolError(f"{path}: row {i}: tokens_per_s must be > 0")
    return Comparison(str(path), data, machine, started, steps)


def same_steps(comparisons: list[Comparison]) -> None:
    """PoolError naming two files that trained the recipe for different numbers of steps
    (files that do not record it are not checked)."""
    known = [c for c in comparisons if c.steps is not None]
    for c in known[1:]:
        if c.steps != known[0].steps:
            raise PoolError(
                f"{known[0].name} ran {known[0].steps} steps, {c.name} {c.steps}: pool "
                "comparisons of one recipe length"
            )


def one_machine(comparisons: list[Comparison]) -> dict[str, Any] | None:
    """The machine every file that recorded one ran on (None if none did); PoolError names
    two files that ran on different machines or PyTorch versions."""
    first: Comparison | None = None
    for c in comparisons:
        if c.machine is None:
            continue
        if first is None:
            first = c
            continue
        assert first.machine is not None
        for key in MACHINE_KEYS:
            if c.machine.get(key) != first.machine.get(key):
                raise PoolError(
                    f"{first.name} and {c.name} ran on different machines ({key}: "
                    f"{first.machine.get(key)!r} against {c.machine.get(key)!r}): pool the "
                    "comparisons of one machine"
                )
    return None if first is None else first.machine


def describe(machine: dict[str, Any] | None, comparisons: list[Comparison]) -> str:
    """One line: the machine (CPU, cores, threads, flags, PyTorch) and the chargpt commits."""
    if machine is None:
        return "- machine: not recorded in these files (compare_nanogpt wrote none then)"
    flags = ", ".join(machine.get("cpu_flags") or []) or "unknown"
    commits = sorted({str(c.machine.get("git_commit")) for c in comparisons if c.machine})
    unknown = sum(c.machine is None for c in comparisons)
    return (
        f"- machine: {machine.get('cpu_model')}, {machine.get('cpu_logical_cores')} cores, "
        f"{machine.get('torch_threads')} threads, torch {machine.get('torch')}, flags {flags}; "
        f"chargpt commit(s) {', '.join(commits)}"
        + (f"; {unknown} file(s) recorded no machine" if unknown else "")
    )


def table(comparisons: list[Comparison], found: list[list[Pair]], program: str) -> str:
    """One line per comparison and one for the pool: medians, their ratio, same-round ratios
    (`found`: each comparison's pairs)."""
    out = [
        f"| comparison | started (UTC) | {REFERENCE} median tokens/s | {program} median "
        "tokens/s | ratio of medians | same-round ratios |",
        "|---|---|---:|---:|---:|---|",
    ]
    pooled = Comparison("all rounds", [r for c in comparisons for r in c.rows])
    every = [p for ps in found for p in ps]
    lines = [(c, ", ".join(f"{p.ratio:.2f}" for p in ps)) for c, ps in zip(comparisons, found)]
    lines.append((pooled, f"median {statistics.median(p.ratio for p in every):.2f}"))
    for c, cell in lines:
        ref, mine = median_speed(c.rows, REFERENCE), median_speed(c.rows, program)
        out.append(
            f"| {c.name} | {c.started or '-'} | {ref:,.0f} | {mine:,.0f} | {mine / ref:.2f} "
            f"| {cell} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m bench.compare_pool", description=__doc__.splitlines()[0]
    )
    parser.add_argument("files", type=Path, nargs="+", help="compare_nanogpt --json outputs")
    parser.add_argument("--program", default="chargpt manual", help="the chargpt variant to pool")
    parser.add_argument("--target", type=float, help="a speed ratio to judge the interval against")
    args = parser.parse_args(argv)
    if args.target is not None and not (args.target > 0 and math.isfinite(args.target)):
        parser.error(f"--target must be a finite number > 0, got {args.target}")
    if args.program == REFERENCE:
        parser.error(f"--program must name a chargpt variant, not {REFERENCE} itself")
    seen: dict[Path, Path] = {}
    for path in args.files:
        if path.resolve() in seen:
            parser.error(
                f"{path} is given twice (as {seen[path.resolve()]}): its rounds would count twice"
            )
        seen[path.resolve()] = path
    try:
        comparisons = [load(path) for path in args.files]
        same_steps(comparisons)
        machine = one_machine(comparisons)
        found = [pairs(c.rows, args.program, c.name) for c in comparisons]
        for c, ps in zip(comparisons, found):
            if not ps:
                programs = sorted({r["program"] for r in c.rows})
                raise PoolError(
                    f"{c.name}: no round ran both {REFERENCE} and {args.program!r} "
                    f"(programs there: {', '.join(programs)})"
                )
    except (PoolError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pooled = [p for ps in found for p in ps]
    print(table(comparisons, found, args.program))
    print()
    print(describe(machine, comparisons))
    print(f"- {args.program}: {summary_line(pooled, args.target)}")
    worst = max(pooled, key=lambda p: abs(p.loss_gap))
    print(
        f"- whole-split val loss, {args.program} minus {REFERENCE}: largest gap "
        f"{worst.loss_gap:+.4f} ({worst.source}, round {worst.round})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
