"""The results store on its own: appends equal rebuilds, torn rows, temp files, whole appends."""

from __future__ import annotations

import csv
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chargpt.config import RunConfig
from chargpt.files import append_whole
from chargpt.schema import RESULT_COLUMNS, base_record
from chargpt.study.store import StudyStore

REPO = Path(__file__).resolve().parent.parent


def add_run(store: StudyStore, run_id: str, steps: int = 2) -> dict[str, Any]:
    """A finished run on disk: curve.csv with `steps` rows, then result.json."""
    d = store.prepare_run_dir(run_id, {})
    with open(d / "curve.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "train_loss", "val_loss"])
        for i in range(steps):
            writer.writerow([i, 3.0 - i, 3.1 - i])
    record = base_record(run_id, f"label-{run_id}", RunConfig())
    record.update(status="ok", steps=steps)
    store.write_result(run_id, record)
    return record


def test_appending_each_run_gives_what_a_rebuild_gives(tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "s")
    order = [f"r{i}" for i in range(5)]
    store.rebuild_csvs(order, {})
    for run_id in order:
        store.append_run(add_run(store, run_id))
    appended = {name: (store.root / name).read_text() for name in ("runs.csv", "curves.csv")}
    store.rebuild_csvs(order, {})
    for name, text in appended.items():
        assert (store.root / name).read_text() == text, name
    assert text.count("\n") == 1 + 5 * 2  # curves.csv: header + two rows a run


def test_append_leaves_what_is_there_untouched(tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "s")
    store.rebuild_csvs(["a", "b"], {"b": "plan label"})
    store.append_run(add_run(store, "a"))
    before = (store.root / "runs.csv").read_bytes()
    store.append_run(add_run(store, "b"))
    after = (store.root / "runs.csv").read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    rows = list(csv.DictReader(open(store.root / "runs.csv", newline="")))
    assert [r["label"] for r in rows] == ["label-a", "plan label"]  # the plan's label wins
    assert list(rows[0]) == RESULT_COLUMNS


def test_a_record_with_new_columns_rebuilds(tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "s")
    store.rebuild_csvs(["a"], {})
    record = add_run(store, "a")
    record["something_new"] = 1
    store.write_result("a", record)
    store.append_run(record)
    header = (store.root / "runs.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "something_new"


def test_torn_curve_rows_and_corrupt_records_are_left_out(tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "s")
    add_run(store, "a", steps=3)
    with open(store.run_dir("a") / "curve.csv", "a") as f:
        f.write("3,0.5")  # a row cut short by a kill
    add_run(store, "b")
    (store.run_dir("b") / "result.json").write_text('{"run_id": "b", "stat')  # torn record
    store.rebuild_csvs(["a", "b"], {})
    runs = list(csv.DictReader(open(store.root / "runs.csv", newline="")))
    curves = list(csv.DictReader(open(store.root / "curves.csv", newline="")))
    assert [r["run_id"] for r in runs] == ["a"]  # b has no complete record: it runs again
    assert [r["step"] for r in curves] == ["0", "1", "2"]
    assert store.status("b") is None


@pytest.mark.parametrize("text", ["[1, 2]", '"ok"', "null", '{"run_id": "other", "status": "ok"}'])
def test_a_record_that_is_not_the_runs_object_counts_as_not_finished(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    """Valid JSON that is not this run's record (hand-edited): the run is not finished, the
    CSVs rebuild without it, and a warning names the file, once however often it is read."""
    store = StudyStore(tmp_path / "s")
    add_run(store, "a")
    add_run(store, "b")
    (store.run_dir("b") / "result.json").write_text(text)
    assert store.status("b") is None and store.status("a") == "ok"
    store.rebuild_csvs(["a", "b"], {})
    runs = list(csv.DictReader(open(store.root / "runs.csv", newline="")))
    assert [r["run_id"] for r in runs] == ["a"]
    warned = [r.getMessage() for r in caplog.records if "result.json" in r.getMessage()]
    assert len(warned) == 1 and "trains again" in warned[0], warned


def test_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "s")
    add_run(store, "a")
    left = [store.root / ".runs.csv.123.tmp", store.run_dir("a") / ".result.json.99.tmp"]
    for path in left:
        path.write_text("half")
    store.remove_temp_files()
    assert not any(p.exists() for p in left)
    assert (store.run_dir("a") / "result.json").exists()


def test_prepare_run_dir_keeps_only_the_resumable_state(tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "s")
    d = store.prepare_run_dir("a", {"x": 1})
    for name in ("state.pt", "ckpt_best.pt", "curve.csv", "worker.log", "ckpt.pt"):
        (d / name).write_text(name)
    store.prepare_run_dir("a", {"x": 2})
    assert sorted(p.name for p in d.iterdir()) == ["ckpt_best.pt", "config.json", "state.pt"]


def test_a_failed_append_is_cut_back(tmp_path: Path) -> None:
    """A write past RLIMIT_FSIZE fails (EFBIG) part way; the file keeps its old bytes only."""
    path = tmp_path / "log.csv"
    path.write_text("a,b\n1,2\n")
    code = (
        "import sys; from pathlib import Path; from chargpt.files import append_whole\n"
        "try:\n    append_whole(Path(sys.argv[1]), '3,4\\n' * 1000)\n"
        "except OSError as exc:\n    print(exc.errno)\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=60,
        preexec_fn=limit,
    )
    assert proc.stdout.strip() == "27", proc.stderr  # EFBIG
    assert path.read_text() == "a,b\n1,2\n"
    append_whole(path, "3,4\n")  # without the limit it goes through whole
    assert path.read_text() == "a,b\n1,2\n3,4\n"


def test_append_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        append_whole(tmp_path / "missing.csv", "x\n")
