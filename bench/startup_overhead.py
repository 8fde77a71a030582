"""The fixed cost of a run, forked from the warm zygote against a fresh interpreter per run.

    python -m bench.startup_overhead [--study studies/startup.yaml] [--runs 10] [--rounds 3]

Runs the first --runs runs of the study afresh under each way of starting a run, alternating
in the same session (both see the same machine load), and times each run from the runner's
side: from starting it to holding its record. Fixed cost per run = that wall minus the run's
train_s and eval_s (process start, imports, data, model, checkpoint, samples, teardown).
Prints each round and the median per way, and the ratio fresh / forked.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.executor_overhead import TimingReporter
from chargpt.cli import ArgumentParser
from chargpt.study.local import FreshExecutor, LocalExecutor
from chargpt.study.runner import Options, run_study
from chargpt.study.spec import load_study

WAYS = {"forked": LocalExecutor, "fresh": FreshExecutor}


class FixedCostReporter(TimingReporter):
    """TimingReporter's walls, with the run's train_s + eval_s as the time it spent working."""

    def run_finished(self, run_id: str, label: str, record: dict[str, Any]) -> None:
        super().run_finished(run_id, label, record)
        wall, _ = self.walls[run_id]
        self.walls[run_id] = (wall, float(record["train_s"]) + float(record["eval_s"]))


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.startup_overhead", description=__doc__)
    p.add_argument("--study", type=Path, default=Path("studies/startup.yaml"))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    only = tuple(r.run_id for r in load_study(args.study).runs[: args.runs])
    fixed: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for way, executor in WAYS.items():
                reporter = FixedCostReporter()
                opts = Options(out=Path(tmp) / way, fresh=True, only=only)
                if run_study(args.study, opts, reporter, executor=executor()) != 0:
                    raise SystemExit(f"{args.study}: a run failed ({way})")
                per_run = [wall - spent for wall, spent in reporter.walls.values()]
                fixed[way] += per_run
                print(
                    f"round {i + 1} {way:6}: median fixed cost "
                    f"{statistics.median(per_run):.2f} s per run",
                    flush=True,
                )
    med = {way: statistics.median(v) for way, v in fixed.items()}
    for way, m in med.items():
        print(f"{way:6}: median {m:.2f} s per run beyond training and evaluation")
    print(f"fresh / forked: {med['fresh'] / med['forked']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
