"""A run's device and dtype: resolve `auto`, refuse what cannot run, never emulated bfloat16."""

from __future__ import annotations

import logging

import torch

from chargpt import measure
from chargpt.config import RunConfig

log = logging.getLogger(__name__)

# bfloat16 autocast must beat float32 matmuls by this factor on the probe before `auto`
# takes it: it costs casts around every matmul, so a tie in the probe is a loss in training.
BF16_MIN_SPEEDUP = 1.2


def choose_dtype(native_bf16: bool | None, bf16_flops: float, fp32_flops: float) -> str:
    """`auto`'s rule: bfloat16 only on hardware that has it natively and where the measured
    matmul peak shows it clearly faster; float32 everywhere else (emulated bf16 is ~60x
    slower on an AVX2-only CPU)."""
    if native_bf16 is not True:
        return "float32"
    return "bfloat16" if bf16_flops >= BF16_MIN_SPEEDUP * fp32_flops else "float32"


def resolve_dtype(device: torch.device, requested: str) -> str:
    """The dtype a run trains in: the one asked for, or for `auto` what choose_dtype picks."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        native = measure.cpu_native_bf16()
    else:  # mps and others: bfloat16 autocast is not supported here
        return "float32"
    if native is not True:
        chosen = "float32"
    else:
        bf16 = measure.measure_peak_flops(device, torch.bfloat16)
        fp32 = measure.measure_peak_flops(device, torch.float32)
        chosen = choose_dtype(native, bf16, fp32)
        log.info(
            "train.dtype auto: %s (matmul peak bfloat16 %.0f vs float32 %.0f GFLOP/s)",
            chosen,
            bf16 / 1e9,
            fp32 / 1e9,
        )
    return chosen


def run_device_and_dtype(run: RunConfig) -> tuple[torch.device, str]:
    """The run's device and resolved dtype, refusing or warning about a dtype it cannot (or
    should not) use."""
    device = measure.resolve_device(run.train.device)
    dtype = resolve_dtype(device, run.train.dtype)
    if dtype == "bfloat16" and device.type not in ("cuda", "cpu"):
        raise ValueError(
            f"train.dtype: bfloat16 autocast is supported on CUDA and CPU only, "
            f"the run is on {device.type}"
        )
    if dtype == "bfloat16" and device.type == "cpu":
        native = measure.cpu_native_bf16()
        if native is False:
            log.warning(
                "train.dtype bfloat16: this CPU has no native bfloat16 matmul "
                "(avx512_bf16/amx_bf16), so autocast emulates it and is likely "
                "slower than float32 (train.dtype: auto never picks it here)"
            )
        elif native is None:
            log.info(
                "train.dtype bfloat16: could not tell whether this CPU has native "
                "bfloat16 matmul; compare tokens/s against float32"
            )
    return device, dtype
