"""The results directory of a study: run records, the study CSVs (appended per run, rebuilt
whole at the start and end of a study), and the study lock."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from chargpt.files import append_whole, write_atomic, write_json
from chargpt.schema import RESULT_COLUMNS, STATE_FILE, STUDY_CURVE_COLUMNS

log = logging.getLogger("chargpt.study")

KEEP_ON_RESUME = (STATE_FILE, "ckpt_best.pt")  # what a killed run's next try goes on from


class StudyLocked(RuntimeError):
    """Another runner holds the study directory."""


class ResultsUnwritable(OSError):
    """The results directory cannot be written (disk full, read-only, too large, no access)."""


def csv_text(rows: Iterable[dict[str, Any]], columns: list[str], header: bool = True) -> str:
    """CSV text with the given columns first and any extra keys after them, in order seen."""
    rows = list(rows)
    extra: list[str] = []
    for row in rows:
        extra += [k for k in row if k not in columns and k not in extra]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns + extra, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    """The well-formed rows of a CSV file (a row torn by a kill is left out)."""
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if None not in row and None not in row.values()]


def _header(path: Path) -> list[str] | None:
    try:
        with open(path, newline="") as f:
            return next(csv.reader(f), None)
    except OSError:
        return None


class StudyStore:
    """Reads and writes results/<study>/ following the documented layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs_dir = root / "runs"
        self._lock: FileLock | None = None
        self._order: list[str] | None = None  # the plan, as the last rebuild was given it
        self._labels: dict[str, str] | None = None
        self._garbled: set[str] = set()  # result.json files said to be garbled (once each)

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def unwritable(self, exc: OSError) -> ResultsUnwritable:
        """One line for a results directory that refuses writes: what, where, what to do."""
        # a failed rename names its temp file first and the file it was to replace second
        name = getattr(exc, "filename2", None) or exc.filename
        where = f": {name}" if name else ""
        return ResultsUnwritable(
            exc.errno,
            f"{self.root}: cannot write results ({exc.strerror or exc}{where}); "
            "finished runs are kept: free space or fix the folder, then run the same command "
            "to resume",
        )

    # ----- lock ------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the study's lock; the OS drops it when this process dies, however it dies."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        try:  # read before trying: some filelock versions truncate the file on every try
            holder = path.read_text().strip()
        except OSError:
            holder = ""
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise StudyLocked(
                f"{self.root}: another runner (pid {holder or 'unknown'}) is "
                "working on this study; wait for it or stop it first"
            ) from None
        try:  # who holds it, for the message above (best effort: the lock is what counts)
            path.write_text(str(os.getpid()))
        except OSError:
            pass
        self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ----- records ---------------------------------------------------------------------
    def result(self, run_id: str) -> dict[str, Any] | None:
        """A run's result.json, or None if the run never finished (missing or unreadable)."""
        path = self.run_dir(run_id) / "result.json"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return self._garbled_result(path, f"{type(exc).__name__}: {exc}")
        if not isinstance(record, dict) or record.get("run_id") != run_id:
            # written whole and renamed, so only a hand edit or a damaged disk gets here
            return self._garbled_result(path, f"not the record of run {run_id}")
        return record

    def _garbled_result(self, path: Path, why: str) -> None:
        """A result.json that cannot be read as its run's record: the run counts as not
        finished (it trains again, the file replaced), and the user hears so once."""
        if str(path) not in self._garbled:
            self._garbled.add(str(path))
            log.warning("%s: %s; the run counts as not finished and trains again", path, why)
        return None

    def status(self, run_id: str) -> str | None:
        record = self.result(run_id)
        return None if record is None else record.get("status")

    def prepare_run_dir(self, run_id: str, config: dict[str, Any]) -> Path:
        """A clean directory for a run that is about to start: the leftovers of a killed try
        go, except its resumable state (and the best weights up to it), to go on from."""
        d = self.run_dir(run_id)
        if d.exists():
            for child in d.iterdir():
                if child.name in KEEP_ON_RESUME:
                    continue
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", config)
        return d

    def write_result(self, run_id: str, record: dict[str, Any]) -> None:
        """result.json is written last: its presence means the run's record is complete."""
        write_json(self.run_dir(run_id) / "result.json", record)

    def records(self) -> list[dict[str, Any]]:
        """Every complete run record, in run_id order."""
        if not self.runs_dir.is_dir():
            return []
        out = []
        for d in sorted(self.runs_dir.iterdir()):
            record = self.result(d.name)
            if record is not None:
                out.append(record)
        return out

    def rebuild_csvs(
        self, order: list[str] | None = None, labels: dict[str, str] | None = None
    ) -> None:
        """Rebuild runs.csv and curves.csv from the run records, each atomically.

        labels (run_id -> label in the current plan) wins over the label a record was written
        with: extending a grid can change derived labels (`L1-...` becomes `L1-... lr=0.001`)
        without changing run_ids, and the CSVs must agree with plan.csv. The plan (order and
        labels) is kept for append_run.
        """
        self._order, self._labels = order, labels
        records = self.records()
        if order:  # the plan's runs only (see unplanned_records), in plan order
            rank = {rid: i for i, rid in enumerate(order)}
            records = sorted(
                (r for r in records if r["run_id"] in rank), key=lambda r: rank[r["run_id"]]
            )
        for record in records:
            if labels and record["run_id"] in labels:
                record["label"] = labels[record["run_id"]]
        write_atomic(self.root / "runs.csv", csv_text(records, RESULT_COLUMNS))
        curves = [row for record in records for row in self._curve_rows(record)]
        write_atomic(self.root / "curves.csv", csv_text(curves, STUDY_CURVE_COLUMNS))

    def unplanned_records(self, order: list[str]) -> list[str]:
        """run_ids of finished runs the plan no longer has (a point of the study file was
        edited or removed): kept on disk, left out of the CSVs, where the label they share
        with the edited point would mix two experiments in one line of every figure."""
        planned = set(order)
        return [r["run_id"] for r in self.records() if r["run_id"] not in planned]

    def append_run(self, record: dict[str, Any]) -> None:
        """Add one finished run to runs.csv and curves.csv: time independent of the study's
        size. A run whose columns the files lack (or missing files) gets a full rebuild."""
        record = dict(record)
        if self._labels and record["run_id"] in self._labels:
            record["label"] = self._labels[record["run_id"]]
        curve = self._curve_rows(record)
        runs_header = _header(self.root / "runs.csv")
        curves_header = _header(self.root / "curves.csv")
        if (
            runs_header is None
            or curves_header is None
            or any(k not in runs_header for k in record)
            or any(k not in curves_header for row in curve for k in row)
        ):
            self.rebuild_csvs(self._order, self._labels)
            return
        append_whole(self.root / "runs.csv", csv_text([record], runs_header, header=False))
        if curve:
            append_whole(self.root / "curves.csv", csv_text(curve, curves_header, header=False))

    def _curve_rows(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        path = self.run_dir(record["run_id"]) / "curve.csv"
        if not path.is_file():
            return []
        return [
            {"run_id": record["run_id"], "label": record.get("label", ""), **row}
            for row in read_rows(path)
        ]

    def remove_temp_files(self) -> None:
        """Temp files a killed writer left behind (`.NAME.PID.tmp`), in the study and runs."""
        for pattern in (".*.tmp", "runs/*/.*.tmp"):
            for path in self.root.glob(pattern):
                path.unlink(missing_ok=True)
