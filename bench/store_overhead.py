"""What the runner's bookkeeping costs per run as a study grows: rebuild vs append.

    python -m bench.store_overhead [--runs 1000] [--every 100]

Builds a results folder of N finished runs (real records and curves, as tiny max_steps=1
runs leave them) and times, for each run as it finishes, the study CSV upkeep in two ways,
side by side on the same data: rebuilding runs.csv and curves.csv from every record (what
the runner did before appends) and appending the one run (what it does now). Prints the
per-run milliseconds at checkpoints and the totals.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from chargpt.cli import ArgumentParser
from chargpt.config import RunConfig
from chargpt.schema import CURVE_COLUMNS, base_record
from chargpt.study.store import StudyStore, csv_text


def finished_run(store: StudyStore, i: int) -> dict[str, object]:
    """One run's files as a 1-step run writes them: config, a two-row curve, result.json."""
    run = RunConfig.from_dict({"budget": {"max_steps": 1}, "train": {"seed": i}})
    run_id = f"{i:010d}"
    d = store.prepare_run_dir(run_id, run.to_dict())
    rows = [
        dict(zip(CURVE_COLUMNS, [s, s * 768, s * 1e9, 0.01 * s, 1e-3, 4.17, 4.16, 7e4]))
        for s in (0, 1)
    ]
    (d / "curve.csv").write_text(csv_text(rows, CURVE_COLUMNS))
    record = base_record(run_id, f"run {i}", run)
    record.update(status="ok", stop_reason="max_steps", steps=1, train_s=0.01, wall_s=1.0)
    store.write_result(run_id, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m bench.store_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="print every this many runs")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.every < 1:
        print("error: --runs and --every must be >= 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="chargpt-store-") as tmp:
        rebuild_store, append_store = StudyStore(Path(tmp) / "a"), StudyStore(Path(tmp) / "b")
        order = [f"{i:010d}" for i in range(args.runs)]
        rebuild_store.rebuild_csvs(order, {})
        append_store.rebuild_csvs(order, {})
        rebuild_ms, append_ms = [], []
        print(f"{'runs':>6} {'rebuild ms/run':>15} {'append ms/run':>14}")
        for i in range(args.runs):
            finished_run(rebuild_store, i)
            record = finished_run(append_store, i)
            t0 = time.perf_counter()
            rebuild_store.rebuild_csvs(order, {})
            t1 = time.perf_counter()
            append_store.append_run(record)
            t2 = time.perf_counter()
            rebuild_ms.append((t1 - t0) * 1e3)
            append_ms.append((t2 - t1) * 1e3)
            if (i + 1) % args.every == 0 or i + 1 == args.runs:
                window = slice(max(0, i + 1 - args.every), i + 1)
                print(
                    f"{i + 1:>6} {statistics.median(rebuild_ms[window]):>15.2f} "
                    f"{statistics.median(append_ms[window]):>14.2f}"
                )
        same = (rebuild_store.root / "runs.csv").read_text() == (
            append_store.root / "runs.csv"
        ).read_text()
    print(
        f"total over {args.runs} runs: rebuild {sum(rebuild_ms) / 1e3:.1f} s, "
        f"append {sum(append_ms) / 1e3:.2f} s; runs.csv identical: {same}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
