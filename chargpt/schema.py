"""The results schema, defined once: run statuses, what a run measures, and the CSV columns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from chargpt.config import RunConfig

# ----- run statuses (result.json "status", the runs.csv column) ------------------------------
OK = "ok"  # trained to its budget
DIVERGED = "diverged"  # stopped early: NaN/inf loss, or far above its starting loss
OOM = "oom"  # out of memory
ERROR = "error"  # raised, or its process ended without a result
TIMEOUT = "timeout"  # stopped by the runner's --timeout
KILLED = "killed"  # ended by a signal with no sign of running out of memory

FINISHED = (OK, DIVERGED)  # done: never run again
FAILED = (OOM, ERROR, TIMEOUT, KILLED)  # run again only when asked (--retry-failed)


@dataclass
class RunResult:
    """What one run did and measured: the measurement columns of its runs.csv row."""

    run_id: str
    status: str  # ok | diverged (the runner records the failures)
    stop_reason: str
    n_params: int
    n_params_non_embedding: int
    flops_per_token: float
    steps: int
    tokens: int
    train_flops: float
    train_s: float
    eval_s: float
    compiled: bool  # whether it trained torch.compile'd (train.compile with `auto` resolved)
    compile_reason: str  # why: `auto`'s predicted saving against the compile time
    compile_s: float  # torch.compile's first-call compilation, kept out of train_s
    wall_s: float  # the whole run, summed over the processes that trained it
    resumes: int  # how often it went on from a saved state after its process was killed
    tokens_per_s: float
    peak_rss_mb: float
    peak_gpu_mb: float | None
    peak_flops: float
    mfu: float
    final_train_loss: float
    final_val_loss: float
    best_val_loss: float
    best_step: int
    vocab_size: int
    corpus_sha256: str  # of the text it trained on: which corpus, whatever its path
    device: str  # what it ran on: train.device, with `auto` resolved
    dtype: str  # what it trained in: train.dtype, with `auto` resolved
    hardware: str
    hostname: str = ""  # the machine (cluster node) that trained it
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


STATE_FILE = "state.pt"  # a run's resumable training state, in its directory until it ends

# One row of a run's curve.csv, written at every evaluation.
CURVE_COLUMNS = [
    "step",
    "tokens",
    "flops",
    "train_s",
    "lr",
    "train_loss",
    "val_loss",
    "tokens_per_s",
]
# curves.csv: every run's curve rows, each with the run it belongs to.
STUDY_CURVE_COLUMNS = ["run_id", "label", *CURVE_COLUMNS]


def _result_columns() -> list[str]:
    """runs.csv: identity and status, the resolved config, then what the run measured and how
    the runner placed it (jobs; threads is the config column, filled in with what it used)."""
    head = ["run_id", "label", "status", "stop_reason"]
    # The config's device may be "auto"; the device column is the one the run really used.
    config = [k for k in RunConfig().to_flat_dict() if k != "device"]
    measured = [f.name for f in dataclasses.fields(RunResult)]
    measured.insert(measured.index("error"), "jobs")  # the runner's placement (--jobs)
    return head + config + [c for c in measured if c not in head and c not in config]


RESULT_COLUMNS = _result_columns()


def base_record(run_id: str, label: str, run: RunConfig) -> dict[str, Any]:
    """The config part of a runs.csv row; measurements are added when (if) they exist."""
    record: dict[str, Any] = {"run_id": run_id, "label": label, "status": "", "stop_reason": ""}
    record.update(run.to_flat_dict())
    record.pop("device", None)  # the config's "auto" is not a device; the run fills it in
    record.update(error="")
    return record
