"""Shared helpers of the microbenchmarks: FLOP counts, the device, peak memory, round counts."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import pytest
import torch

from chargpt.measure import hardware_name, resolve_device, synchronize

# How each peak-memory figure was measured; stored in extra_info["peak_mem_method"].
MEM_METHOD_CUDA = (
    "cuda: torch.cuda.max_memory_allocated() during one call minus memory_allocated() before it"
)
MEM_METHOD_CPU = (
    "cpu: torch.profiler(profile_memory=True) over one call; running sum of the allocator's "
    "[memory] events (allocations minus frees) in time order, its maximum = peak bytes "
    "allocated above what was allocated before the call"
)


def attention_flops(
    batch_size: int,
    block_size: int,
    n_embd: int,
    *,
    causal: bool = False,
    backward: bool = False,
    projections: bool = True,
) -> int:
    """Matmul FLOPs of one CausalSelfAttention call (a multiply-add counts as 2 FLOPs).

    With B = batch_size, T = block_size, C = n_embd (= n_head * head_size):
      projections  QKV: 2*B*T*C*3C, output c_proj: 2*B*T*C*C          -> 8*B*T*C^2
      core         Q @ K^T: 2*B*T*T*C,  att @ V: 2*B*T*T*C             -> 4*B*T^2*C
    The core does not depend on n_head: summed over heads, nh * head_size = C.

    Causal halving: with causal=True the core counts only the T(T+1)/2 query-key pairs on or
    below the diagonal (the useful work, factor (T+1)/(2T), about 1/2), as FlashAttention
    papers do. With causal=False it counts the dense T x T, which is what the manual path
    actually executes (it computes every score, then masks) and the convention of
    chargpt.model.count_params (12 * n_layer * n_embd * block_size per token, not halved).
    backward=True counts forward + backward = 3x forward (the backward of each matmul is two
    matmuls of the same size: gradients of both operands). Softmax, masking and scaling are
    elementwise (O(B * nh * T^2), memory-bound) and not counted.
    """
    B, T, C = batch_size, block_size, n_embd
    core = 4 * B * T * T * C
    if causal:
        core = 4 * B * (T * (T + 1) // 2) * C
    total = core + (8 * B * T * C * C if projections else 0)
    return 3 * total if backward else total


def cpu_memory_peak(fn: Callable[[], object]) -> int:
    """Peak CPU bytes allocated by fn above the level before it, from the profiler's events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    records = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in records:
        current += nbytes
        peak = max(peak, current)
    return peak


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int | None, str]:
    """(peak bytes of one call of fn, how it was measured); None where no measure exists."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, MEM_METHOD_CUDA
    if device.type == "cpu":
        return cpu_memory_peak(fn), MEM_METHOD_CPU
    return None, f"{device.type}: not measured"


def choose_rounds(
    fn: Callable[[], object], target_s: float, min_rounds: int = 5, max_rounds: int = 200
) -> int:
    """Run fn once to warm up (twice when cheap) and pick rounds so they take about target_s.

    Large sizes get few rounds (down to min_rounds), small ones many: pedantic mode with this
    count replaces pytest-benchmark's calibration, which would repeat huge calls.
    """
    t0 = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t0
    if elapsed < target_s / min_rounds:  # the first call carries one-off costs; time another
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
    return int(min(max_rounds, max(min_rounds, math.ceil(target_s / max(elapsed, 1e-9)))))


def env_info(device: torch.device) -> dict[str, object]:
    """What every benchmark records about where it ran."""
    return {
        "device": device.type,
        "hardware": hardware_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def run_pedantic(
    benchmark,  # the pytest-benchmark fixture
    call: Callable[[], object],
    setup: Callable[[], None] | None,
    *,
    quick: bool,
    target_s: float,
) -> float | None:
    """Time call in pedantic mode; return the median seconds per call (None when disabled).

    call must end with synchronize(device) so each timed round covers the device work. setup runs
    before every round, outside the timer. Quick mode and --benchmark-disable run it once.
    """
    if benchmark.enabled and not quick:
        rounds, warmup = choose_rounds(call, target_s), 1
    else:
        rounds, warmup = 1, 0
    benchmark.pedantic(call, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable
        return None
    return float(benchmark.stats.stats.median)


def bench_device(config: pytest.Config) -> torch.device:
    """The device --bench-device names; ValueError when it is not available.

    auto is cuda when available, else cpu (never mps: the size tables are for cpu and cuda).
    """
    name = config.getoption("--bench-device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_device(name)


def profile_name(config: pytest.Config) -> str:
    """Which size table a run uses: 'quick' under --quick, else the device type (cpu, cuda)."""
    if config.getoption("--quick"):
        return "quick"
    return bench_device(config).type
