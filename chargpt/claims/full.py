"""Level 3: train a claim's whole recipe through the normal training engine, in its own process."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from chargpt.config import RunConfig


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


def full_blocker(claim_kind: str, device_type: str, corpus: str | None, n_runs: int) -> str:
    """Why a claim cannot be re-run whole here ('' when it can, time permitting)."""
    if claim_kind != device_type:
        return f"needs {claim_kind}, this machine's device is {device_type}"
    if corpus is None:
        return "its data is not available offline (random tokens time it, they cannot train it)"
    if n_runs > 1:
        return "a study claim: re-run it with python run_study.py <its study file>"
    return ""
