"""results/claims/: one JSON record per claim per check, claims.csv rebuilt from them, env.json."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from chargpt.files import write_atomic, write_json

LEVELS = ("arithmetic", "probe", "full")
COLUMNS = [
    "claim_id",
    "level",
    "status",
    "verdict",
    "verdict_reason",
    "reason",
    "hardware_kind",
    "hardware_model",
    "device_count",
    "claimed_peak_flops",
    "precision",
    "dataset",
    "data",
    "count_eval",
    "claimed_time_s",
    "claimed_loss",
    "loss_kind",
    "loss_tol",
    "n_params",
    "flops_per_token",
    "tokens_per_step",
    "steps",
    "tokens",
    "train_flops",
    "eval_flops",
    "total_flops",
    "implied_tokens_per_s",
    "implied_flops_per_s",
    "implied_mfu",
    "mfu_class",
    "device",
    "hardware",
    "peak_flops",
    "compile",
    "threads",
    "memory_budget_mb",
    "micro_batch",
    "probe_steps",
    "step_s",
    "tokens_per_s",
    "flops_per_s",
    "mfu",
    "peak_rss_mb",
    "peak_gpu_mb",
    "predicted_here_s",
    "predicted_claimed_s",
    "train_s",
    "eval_s",
    "wall_s",
    "final_val_loss",
    "best_val_loss",
    "compare_s",
    "compare_kind",
    "time_ratio",
    "check_key",
    "checked_at",
    "git_commit",
    "torch",
    "cpu_count",
    "load_avg_1m",
]


class ClaimsStore:
    """The results folder of claim checks; a check is done when its record is on disk."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def record_path(self, claim_id: str, level: str) -> Path:
        return self.root / "checks" / claim_id / f"{level}.json"

    def load(self, claim_id: str, level: str) -> dict[str, Any] | None:
        """The stored record of a check, None if there is none or it is unreadable."""
        try:
            data = json.loads(self.record_path(claim_id, level).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def done(self, claim_id: str, level: str, key: str) -> dict[str, Any] | None:
        """A finished (status ok) record for this very check, else None: it is (re)done."""
        record = self.load(claim_id, level)
        if record is None or record.get("status") != "ok" or record.get("check_key") != key:
            return None
        return record

    def save(self, claim_id: str, level: str, record: dict[str, Any]) -> None:
        write_json(self.record_path(claim_id, level), record)

    def write_csv(self, rows: list[dict[str, Any]]) -> Path:
        """claims.csv, whole (atomic): one row per claim per check."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        path = self.root / "claims.csv"
        write_atomic(path, buf.getvalue())
        return path

    def write_env(self, env: dict[str, Any]) -> None:
        write_json(self.root / "env.json", env)
