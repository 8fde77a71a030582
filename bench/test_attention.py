"""Benchmarks of CausalSelfAttention alone: time, FLOP/s and peak memory per call.

Two families, told apart by extra_info["group"]:
  block_size  fixed batch and width, T swept: time per call grows like T^2 once the
              (B, nh, T, T) scores dominate the T * C^2 projections (task a).
  width       fixed tokens per batch (B * T) and T, n_embd / n_head swept.
Each is run for attn_impl manual | sdpa and pass fwd (inference, under no_grad) |
fwd+bwd (forward with autograd, then backward of a random output gradient, input included).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.benchlib import attention_flops, env_info, peak_memory, profile_name, run_pedantic
from chargpt.measure import synchronize
from chargpt.model import CausalSelfAttention, ModelConfig

IMPLS = ("manual", "sdpa")
PASSES = ("fwd", "fwd+bwd")

# Per size profile: batch and width of the block-size sweep, and the width sweep.
SWEEP = {
    "quick": dict(batch_size=2, n_embd=32, n_head=2, block_sizes=(8, 16, 32)),
    "cpu": dict(
        batch_size=4, n_embd=128, n_head=4, block_sizes=(32, 64, 128, 256, 512, 1024, 2048)
    ),
    "cuda": dict(
        batch_size=8,
        n_embd=128,
        n_head=4,
        block_sizes=(32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
    ),
}
WIDTH = {
    "quick": dict(tokens=32, block_size=16, shapes=((16, 2), (32, 2))),
    "cpu": dict(
        tokens=2048, block_size=256, shapes=((64, 4), (128, 4), (256, 4), (256, 8), (512, 8))
    ),
    "cuda": dict(
        tokens=16384,
        block_size=1024,
        shapes=((128, 4), (256, 4), (384, 6), (512, 8), (768, 12), (1024, 16)),
    ),
}
TARGET_S = {"quick": 0.0, "cpu": 4.0, "cuda": 1.0}  # timed seconds per case, roughly


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    prof = profile_name(metafunc.config)
    if metafunc.function.__name__ == "test_attention_block_size":
        # manual and sdpa of one size run back to back, so load changes hit both alike
        cases = list(itertools.product(SWEEP[prof]["block_sizes"], PASSES, IMPLS))
        ids = [f"T={t}-{p}-{i}" for t, p, i in cases]
        metafunc.parametrize("block_size,pass_,attn_impl", cases, ids=ids)
    elif metafunc.function.__name__ == "test_attention_width":
        cases = list(itertools.product(WIDTH[prof]["shapes"], PASSES, IMPLS))
        ids = [f"C={c}-nh={h}-{p}-{i}" for (c, h), p, i in cases]
        metafunc.parametrize("shape,pass_,attn_impl", cases, ids=ids)


def run_attention_case(
    benchmark,
    device: torch.device,
    prof: str,
    *,
    group: str,
    batch_size: int,
    block_size: int,
    n_embd: int,
    n_head: int,
    attn_impl: str,
    pass_: str,
) -> None:
    torch.manual_seed(0)
    B, T, C = batch_size, block_size, n_embd
    cfg = ModelConfig(n_embd=C, n_head=n_head, block_size=T, attn_impl=attn_impl, dropout=0.0)
    module = CausalSelfAttention(cfg).to(device)
    backward = pass_ == "fwd+bwd"
    x = torch.randn(B, T, C, device=device, requires_grad=backward)  # (B, T, C)
    grad_out = torch.randn(B, T, C, device=device)  # (B, T, C)

    def call() -> None:
        if backward:
            module(x).backward(grad_out)
        else:
            with torch.no_grad():
                module(x)
        synchronize(device)

    def setup() -> None:  # fresh gradients each round, as after optimizer.zero_grad()
        x.grad = None
        module.zero_grad(set_to_none=True)

    flops = attention_flops(B, T, C, backward=backward)
    info = benchmark.extra_info
    info.update(
        group=group,
        block_size=T,
        batch_size=B,
        n_embd=C,
        n_head=n_head,
        head_size=C // n_head,
        attn_impl=attn_impl,
        tokens=B * T,
        dtype=str(x.dtype).removeprefix("torch."),
        flops=flops,
        flops_causal=attention_flops(B, T, C, causal=True, backward=backward),
        score_tensor_bytes=B * n_head * T * T * x.element_size(),
        **env_info(device),
    )
    info["pass"] = pass_
    where = f"T={T}" if group == "block_size" else f"C={C} nh={n_head}"
    benchmark.group = f"{group} {pass_} {where}"  # the terminal table puts manual by sdpa
    try:
        setup()
        call()  # first call outside the profiler: one-off allocations and kernel choices
        setup()
        info["peak_mem_bytes"], info["peak_mem_method"] = peak_memory(call, device)
        median = run_pedantic(
            benchmark, call, setup, quick=prof == "quick", target_s=TARGET_S[prof]
        )
    except torch.OutOfMemoryError:
        pytest.skip(f"out of memory at B={B} T={T} C={C} {attn_impl} {pass_}")
    if median is not None:
        info["ms_per_call"] = median * 1e3
        info["flops_per_s"] = flops / median
        info["flops_per_s_causal"] = info["flops_causal"] / median
        info["tokens_per_s"] = B * T / median


def test_attention_block_size(benchmark, device, pytestconfig, block_size, pass_, attn_impl):
    prof = profile_name(pytestconfig)
    s = SWEEP[prof]
    run_attention_case(
        benchmark,
        device,
        prof,
        group="block_size",
        batch_size=s["batch_size"],
        block_size=block_size,
        n_embd=s["n_embd"],
        n_head=s["n_head"],
        attn_impl=attn_impl,
        pass_=pass_,
    )


def test_attention_width(benchmark, device, pytestconfig, shape, pass_, attn_impl):
    prof = profile_name(pytestconfig)
    w = WIDTH[prof]
    n_embd, n_head = shape
    run_attention_case(
        benchmark,
        device,
        prof,
        group="width",
        batch_size=w["tokens"] // w["block_size"],
        block_size=w["block_size"],
        n_embd=n_embd,
        n_head=n_head,
        attn_impl=attn_impl,
        pass_=pass_,
    )
