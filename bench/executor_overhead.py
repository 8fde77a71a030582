"""What a run costs beyond its training under each executor: local worker processes vs Ray.

    python -m bench.executor_overhead [--study studies/smoke.yaml] [--rounds 3]
                                      [--ray-address auto|HOST:PORT]

Runs the study afresh under the local executor and under `--executor ray` in turn (alternating,
same session), and times each run from the driver's side: from the runner starting it to the
runner holding its record. Overhead per run = that wall minus the run's own train_s (process
start, imports, data, evaluation, checkpoint, samples, FLOP/s probe; for Ray also scheduling,
the object store and shipping files back). Prints the per-run overheads, their median per
executor, and each study's whole wall time (which for Ray without an address includes
starting a local Ray).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from chargpt.cli import ArgumentParser
from chargpt.study.progress import LogReporter
from chargpt.study.runner import Options, run_study


class TimingReporter(LogReporter):
    """Notes when the runner starts each run and when it has its record."""

    def __init__(self) -> None:
        super().__init__(verbose=False)
        self.started: dict[str, float] = {}
        self.walls: dict[str, tuple[float, float]] = {}  # run_id -> (driver wall, train_s)

    def run_started(self, run_id: str, label: str) -> None:
        self.started[run_id] = time.perf_counter()

    def run_finished(self, run_id: str, label: str, record: dict[str, Any]) -> None:
        wall = time.perf_counter() - self.started[run_id]
        self.walls[run_id] = (wall, float(record.get("train_s") or 0.0))


def one_study(study: Path, out: Path, executor: str, address: str | None) -> tuple[float, list]:
    """(whole wall time, [(driver wall, train_s) per run]) of one fresh run of the study."""
    reporter = TimingReporter()
    opts = Options(out=out, fresh=True, executor=executor, ray_address=address)
    start = time.perf_counter()
    code = run_study(study, opts, reporter)
    total = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{study} under {executor} ended with code {code}")
    return total, list(reporter.walls.values())


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.executor_overhead", description=__doc__)
    p.add_argument("--study", type=Path, default=Path("studies/smoke.yaml"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ray-address", default=None)
    args = p.parse_args(argv)
    overheads: dict[str, list[float]] = {"local": [], "ray": []}
    totals: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for executor in ("local", "ray"):  # alternating: both see the same machine load
                address = args.ray_address if executor == "ray" else None
                total, walls = one_study(args.study, Path(tmp) / executor, executor, address)
                totals[executor].append(total)
                per_run = [wall - train_s for wall, train_s in walls]
                overheads[executor] += per_run
                print(
                    f"round {i + 1} {executor:5}: study {total:6.1f} s; per run wall - train_s: "
                    + ", ".join(f"{x:.2f}" for x in per_run),
                    flush=True,
                )
    for executor in ("local", "ray"):
        print(
            f"{executor:5}: median overhead per run {statistics.median(overheads[executor]):.2f} s "
            f"({len(overheads[executor])} runs), median study wall "
            f"{statistics.median(totals[executor]):.1f} s"
        )
    extra = statistics.median(overheads["ray"]) - statistics.median(overheads["local"])
    print(f"ray - local: {extra:+.2f} s per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
