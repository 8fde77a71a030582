"""Level 3: train a claim's whole recipe through the normal training engine, in its own process."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from chargpt.config import RunConfig
from chargpt.study.local import PROJECT_ROOT


def full_run(run: RunConfig, device_name: str, out_dir: str) -> dict[str, Any]:
    """chargpt.train.train on the run (device set), its curve in out_dir/curve.csv; returns the
    RunResult's figures."""
    from chargpt.train import CSVSink, train

    run = dataclasses.replace(
        run, train=dataclasses.replace(run.train, device=device_name, save_checkpoint=False)
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sink = CSVSink(out / "curve.csv")
    try:
        result = train(run, sinks=[sink], out_dir=out)
    finally:
        sink.close()
    keep = (
        "status steps tokens train_flops train_s eval_s compile_s wall_s tokens_per_s "
        "peak_rss_mb peak_gpu_mb peak_flops mfu final_val_loss best_val_loss device hardware"
    ).split()
    figures = dataclasses.asdict(result)
    return {k: figures[k] for k in keep}


def full_study(study_file: str, out_root: str) -> dict[str, Any]:
    """`python run_study.py STUDY --fresh --jobs 1` into out_root, timed end to end as a user
    runs it (interpreter start to exit); the study's figures, summed over its runs."""
    from chargpt.study.spec import load_study

    name = load_study(study_file).name
    cmd = [sys.executable, str(PROJECT_ROOT / "run_study.py"), study_file, "--out", out_root]
    cmd += ["--fresh", "--jobs", "1", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # its progress, to stderr: stdout is the claims command's (--json)
        sys.stderr.write(line)
    code = proc.wait()
    wall_s = time.perf_counter() - start
    runs_csv = Path(out_root) / name / "runs.csv"
    if not runs_csv.is_file():
        return {"status": "error", "reason": f"run_study exited {code} without {runs_csv}"}
    with open(runs_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    bad = [f"{r['label']}: {r['status']}" for r in rows if r["status"] != "ok"]
    if code != 0 or bad:
        return {"status": "error", "reason": f"run_study exited {code}; " + ", ".join(bad)}

    def total(key: str) -> float:
        return sum(float(r[key] or 0) for r in rows)

    train_s, peak = total("train_s"), float(rows[0]["peak_flops"])
    return {
        "status": "ok",
        "runs": len(rows),
        "steps": int(total("steps")),
        "tokens": int(total("tokens")),
        "train_flops": total("train_flops"),
        "train_s": train_s,
        "eval_s": total("eval_s"),
        "compile_s": total("compile_s"),
        "wall_s": wall_s,
        "tokens_per_s": total("tokens") / train_s,
        "peak_rss_mb": max(float(r["peak_rss_mb"] or 0) for r in rows),
        "peak_gpu_mb": max(float(r["peak_gpu_mb"] or 0) for r in rows) or None,
        "peak_flops": peak,
        "mfu": total("train_flops") / train_s / peak,
        # A study of several runs has no one loss (each run's is in runs.csv).
        "final_val_loss": float(rows[0]["final_val_loss"]) if len(rows) == 1 else None,
        "best_val_loss": float(rows[0]["best_val_loss"]) if len(rows) == 1 else None,
        "device": rows[0]["device"],
        "hardware": rows[0]["hardware"],
        "results": str(Path(out_root) / name),
    }


def full_blocker(claim_kind: str, device_type: str, corpus: str | None) -> str:
    """Why a claim cannot be re-run whole here ('' when it can, time permitting)."""
    if claim_kind != device_type:
        return f"needs {claim_kind}, this machine's device is {device_type}"
    if corpus is None:
        return "its data is not available offline (random tokens time it, they cannot train it)"
    return ""
