"""The study runner's command line: `python run_study.py STUDY.yaml [options]`, chargpt-study."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _jobs(text: str) -> int | str:
    """--jobs: a whole number, else the text (auto; the runner checks it with the other inputs)."""
    try:
        return int(text)
    except ValueError:
        return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from chargpt.cli import ArgumentParser, prog

    p = ArgumentParser(
        prog=prog("python run_study.py", "chargpt-study"),
        description="Train every run of a YAML study and write results/<study>/ (CSV, JSON).",
    )
    p.add_argument("study", help="study file, e.g. studies/scaling.yaml")
    p.add_argument("--out", default="results", help="results root (default: results)")
    p.add_argument("--dry-run", action="store_true", help="print the expanded plan and exit")
    p.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="RUN_ID|LABEL",
        help="run only these runs (by run_id or label)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="delete the study's previous results first (with --only: just those runs')",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run failed runs (error, oom, timeout, killed) again",
    )
    p.add_argument(
        "--jobs",
        type=_jobs,
        default=1,
        help="runs at once (default 1), or auto: by each run's size and the cores (see README)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop a run that takes longer than this (status timeout)",
    )
    p.add_argument("--quiet", action="store_true", help="plain log lines, no progress bars")
    p.add_argument(
        "--reprobe",
        action="store_true",
        help="measure the peak FLOP/s (MFU's reference) again, best on an idle machine; and drop "
        "--jobs auto's packing figures (python -m bench.packing measures them)",
    )
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: worker processes on this machine (default); ray: Ray tasks on a cluster",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="auto|HOST:PORT",
        help="the Ray cluster to run on (default: start a local one sized to this machine)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from chargpt.study.progress import LogReporter, TqdmReporter
    from chargpt.study.runner import InputError, Options, RunNotStarted, run_study
    from chargpt.study.spec import StudyError
    from chargpt.study.store import ResultsUnwritable, StudyLocked

    opts = Options(
        out=Path(args.out),
        dry_run=args.dry_run,
        only=tuple(args.only),
        fresh=args.fresh,
        retry_failed=args.retry_failed,
        jobs=args.jobs,
        timeout_s=args.timeout,
        reprobe=args.reprobe,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    bars = not args.quiet and sys.stderr.isatty()
    try:
        return run_study(args.study, opts, TqdmReporter() if bars else LogReporter())
    except (StudyError, InputError, StudyLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ResultsUnwritable as exc:  # not bad input: the disk or folder failed mid-study
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 1
    except RunNotStarted as exc:  # not bad input: the machine refused a process mid-study
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
