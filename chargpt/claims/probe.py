"""Level 2: time a claim's training step on this machine after warm-up, and predict from it."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from chargpt import measure
from chargpt.config import RunConfig
from chargpt.model import GPT, count_params

WARMUP_STEPS = 1  # plus one more when compiled: the first call compiles
MIN_TIMED_STEPS = 1  # a GPT-2 step on a few CPU cores takes minutes: one is what fits
MIN_TIMED_S = 2.0  # short steps are timed until this many seconds have passed...
MAX_TIMED_STEPS = 20  # ...or this many steps
ASSUMED_MFU = 0.3  # for planning only: the micro-batch's step time and a probe's length
TARGET_STEP_S = 10.0  # the micro-batch is halved while its step would take longer (b >= 1)


def estimate_mb(run: RunConfig, micro_batch: int) -> float:
    """A rough upper estimate of a training step's memory, MiB: float32 weights, gradients
    and two AdamW moments (16 bytes a parameter); about 16 saved activations of width n_embd
    per token and layer; the manual attention's (B, n_head, T, T) scores, probabilities and
    their gradient; logits, their softmax and gradient. Only used to pick a micro-batch."""
    m = run.model
    assert m.vocab_size is not None
    b, T, L, C = micro_batch, m.block_size, m.n_layer, m.n_embd
    params = 16 * count_params(m)["n_params"]
    acts = 4 * b * T * L * C * 16
    attn = 4 * 3 * b * L * m.n_head * T * T if m.attn_impl == "manual" else 0
    logits = 4 * 3 * b * T * m.vocab_size
    return (params + acts + attn + logits) / 2**20


def memory_budget_mb(device: torch.device) -> float:
    """What a probe may use: 40% of the available RAM (the machine is shared), or 90% of the
    free GPU memory."""
    if device.type == "cuda":
        return 0.9 * torch.cuda.mem_get_info(device)[0] / 2**20
    import psutil

    return 0.4 * psutil.virtual_memory().available / 2**20


def micro_batch(run: RunConfig, budget_mb: float, peak_flops: float) -> int | None:
    """The micro-batch: the batch, halved while its memory estimate exceeds the budget, or
    (down to one sequence) while its step would take over TARGET_STEP_S at ASSUMED_MFU;
    None when even one sequence does not fit in memory."""
    m = run.model
    assert m.vocab_size is not None
    fpt = count_params(m)["flops_per_token"]
    b = run.train.batch_size
    while b >= 1:
        slow = fpt * b * m.block_size / (ASSUMED_MFU * peak_flops) > TARGET_STEP_S
        if estimate_mb(run, b) <= budget_mb and (b == 1 or not slow):
            return b
        b //= 2
    return None


def probe_run(
    run: RunConfig, device_name: str, budget_mb: float | None, max_seconds: float
) -> dict[str, Any]:
    """Time a few TrainSteps of run (vocab_size set) on random tokens; in a fresh process.

    On a CPU, torch.compile is off (its C++ compilation takes minutes on a few cores, and
    nanoGPT tells CPU users to turn it off too); on CUDA TF32 matmuls are on, as in the
    published recipes. A smaller micro-batch than the recipe's is used when memory requires;
    its FLOPs are its own (flops_per_token x micro-batch x block_size), so MFU and the
    predictions stay honest. Each micro-step includes an optimizer step, which a real
    accumulation would run once per step: predictions err on the slow side. train.threads,
    when the recipe sets it, is the probe's thread count.
    """
    threads_before = torch.get_num_threads()  # restored: the caller's setting is its own
    try:
        if run.train.threads is not None:
            torch.set_num_threads(run.train.threads)
        return _probe(run, device_name, budget_mb, max_seconds)
    finally:
        torch.set_num_threads(threads_before)


def _probe(
    run: RunConfig, device_name: str, budget_mb: float | None, max_seconds: float
) -> dict[str, Any]:
    from chargpt.precision import resolve_dtype
    from chargpt.run_setup import build_train_step
    from chargpt.step import random_batch, time_steps

    device = measure.resolve_device(device_name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype_name = resolve_dtype(device, run.train.dtype)  # `auto` as training resolves it
    dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
    # Measured now, not cached: the peak and the steps then share the machine's current load.
    peak = measure.measure_peak_flops(device, dtype, use_cache=False)
    compiled = run.train.compile in (True, "auto") and device.type == "cuda"
    budget = memory_budget_mb(device) if budget_mb is None else budget_mb
    b = micro_batch(run, budget, peak)
    m = run.model
    assert m.vocab_size is not None
    fpt = count_params(m)["flops_per_token"]
    row: dict[str, Any] = {"device": device.type, "hardware": measure.hardware_name(device)}
    row["threads"] = torch.get_num_threads()
    row |= {"peak_flops": peak, "memory_budget_mb": budget, "compile": compiled}
    if b is None:
        need = estimate_mb(run, 1)
        return row | {
            "status": "skipped",
            "reason": f"one sequence needs ~{need:,.0f} MiB, over the {budget:,.0f} MiB budget",
        }
    n_warm = WARMUP_STEPS + (1 if compiled else 0)
    guess_s = fpt * b * m.block_size / (ASSUMED_MFU * peak) * (n_warm + MIN_TIMED_STEPS)
    if guess_s > max_seconds:
        return row | {
            "status": "skipped",
            "reason": f"the probe would take ~{guess_s:,.0f} s, over --max-seconds {max_seconds}",
        }
    probe_cfg = dataclasses.replace(
        run, train=dataclasses.replace(run.train, batch_size=b, compile=compiled)
    )
    torch.manual_seed(run.train.seed)
    model = GPT(m).to(device)
    model.train()
    _, step = build_train_step(model, probe_cfg, device, dtype_name, compiled)
    batch = random_batch(m.vocab_size, b, m.block_size, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(n_warm):
        step(*batch, run.optim.lr)
    measure.synchronize(device)
    step_s, n = time_steps(step, batch, run.optim.lr, MIN_TIMED_STEPS, MIN_TIMED_S, MAX_TIMED_STEPS)
    flops_per_s = fpt * b * m.block_size / step_s
    return row | {
        "status": "ok",
        "micro_batch": b,
        "probe_steps": n,
        "step_s": step_s,
        "tokens_per_s": b * m.block_size / step_s,
        "flops_per_s": flops_per_s,
        "mfu": flops_per_s / peak,
        "peak_rss_mb": measure.peak_rss_mb(),
        "peak_gpu_mb": measure.peak_gpu_mb(device),
    }


def isolated(fn: Any, *args: Any) -> Any:
    """fn(*args) in a fresh spawned process, so peak memory is that call's own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def predictions(
    probes: list[dict[str, Any]], costs: list[float], claimed_peak: float | None, count: int
) -> dict[str, Any]:
    """(a) the whole claim's time here: each run's FLOPs at the rate its probe measured;
    (b) a model, not a measurement: the claimed hardware's time at the MFU measured here."""
    here_s = sum(flops / p["flops_per_s"] for p, flops in zip(probes, costs))
    mfu_here = sum(costs) / here_s / probes[0]["peak_flops"]
    out: dict[str, Any] = {"predicted_here_s": here_s, "mfu": mfu_here}
    out["predicted_claimed_s"] = (
        None if claimed_peak is None else sum(costs) / (mfu_here * count * claimed_peak)
    )
    return out
