"""train.dtype auto: bfloat16 only where it is native and measured faster, never emulated."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from chargpt import measure
from chargpt.config import RunConfig
from chargpt.precision import BF16_MIN_SPEEDUP, choose_dtype, resolve_dtype
from chargpt.train import train

CPU = torch.device("cpu")


def test_the_rule() -> None:
    assert choose_dtype(False, 1e12, 1e9) == "float32"  # emulated: never, however it probes
    assert choose_dtype(None, 1e12, 1e9) == "float32"  # unknown: the safe choice
    assert choose_dtype(True, BF16_MIN_SPEEDUP * 1e11, 1e11) == "bfloat16"
    assert choose_dtype(True, 1.1e11, 1e11) == "float32"  # a tie in the probe is no win


def test_explicit_dtypes_are_kept() -> None:
    assert resolve_dtype(CPU, "float32") == "float32"
    assert resolve_dtype(CPU, "bfloat16") == "bfloat16"


def _seed_probe_cache(bf16: float, fp32: float) -> None:
    """Cached peaks as if measured now, so `auto` decides on known figures."""
    entries = {
        measure._probe_key(CPU, dtype): {
            "flops": flops,
            "measured_at": time.time(),
            "load_avg_1m": 0.0,
            "cpu_count": 2,
        }
        for dtype, flops in ((torch.bfloat16, bf16), (torch.float32, fp32))
    }
    path: Path = measure._probe_cache()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))


@pytest.mark.parametrize("bf16, expected_if_native", [(5e11, "bfloat16"), (1e11, "float32")])
def test_auto_follows_the_probe_on_native_cpus_only(bf16: float, expected_if_native: str) -> None:
    _seed_probe_cache(bf16=bf16, fp32=1e11)
    native = measure.cpu_native_bf16()
    assert resolve_dtype(CPU, "auto") == (expected_if_native if native else "float32")


def test_a_run_records_the_dtype_auto_chose(text_file: Path) -> None:
    _seed_probe_cache(bf16=5e11, fp32=1e11)
    run = RunConfig.from_dict(
        {
            "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
            "train": {
                "batch_size": 4,
                "eval_interval": 5,
                "eval_iters": 1,
                "device": "cpu",
                "dtype": "auto",
                "threads": 1,
                "save_checkpoint": False,
            },
            "budget": {"max_steps": 5},
            "data": {"corpus": str(text_file)},
        }
    )
    result = train(run)
    assert result.dtype == ("bfloat16" if measure.cpu_native_bf16() else "float32")
    assert run.train.dtype == "auto"  # the config (and run_id) keep what was asked
