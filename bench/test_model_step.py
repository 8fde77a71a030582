"""Benchmark of the GPT's training step, chargpt.step.TrainStep: forward, backward, clip, AdamW.

Each shape runs with manual and sdpa attention, in float32 and under bfloat16 autocast (as
train.dtype: bfloat16 does; on a CPU without native bfloat16 it is emulated and slow).

tokens/s = batch_size * block_size / median seconds per step; FLOP/s uses the model's own
flops_per_token (6N + 12 * n_layer * n_embd * block_size, attention not halved).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.benchlib import env_info, peak_memory, profile_name, run_pedantic
from chargpt.config import OptimConfig
from chargpt.measure import synchronize
from chargpt.model import GPT, ModelConfig, count_params
from chargpt.step import TrainStep, autocast_for, make_optimizer

VOCAB_SIZE = 65  # tiny shakespeare's character set
IMPLS = ("manual", "sdpa")
DTYPES = ("float32", "bfloat16")

# (n_layer, n_head, n_embd) x block sizes at a fixed batch size, per size profile
SIZES = {
    "quick": dict(batch_size=2, shapes=((1, 2, 16),), block_sizes=(8, 16)),
    "cpu": dict(batch_size=8, shapes=((2, 2, 64), (4, 4, 128), (6, 6, 192)), block_sizes=(64, 256)),
    "cuda": dict(
        batch_size=32, shapes=((4, 4, 128), (6, 6, 384), (12, 12, 768)), block_sizes=(256, 1024)
    ),
}
TARGET_S = {"quick": 0.0, "cpu": 2.0, "cuda": 0.5}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__name__ != "test_model_step":
        return
    s = SIZES[profile_name(metafunc.config)]
    cases = list(itertools.product(s["shapes"], s["block_sizes"], IMPLS, DTYPES))
    ids = [
        f"L{n_layer}-H{n_head}-C{n_embd}-T{t}-{i}-{d}"
        for (n_layer, n_head, n_embd), t, i, d in cases
    ]
    metafunc.parametrize("shape,block_size,attn_impl,dtype", cases, ids=ids)


def test_model_step(benchmark, device, pytestconfig, shape, block_size, attn_impl, dtype):
    prof = profile_name(pytestconfig)
    B, T = SIZES[prof]["batch_size"], block_size
    n_layer, n_head, n_embd = shape
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        block_size=T,
        vocab_size=VOCAB_SIZE,
        attn_impl=attn_impl,
        dropout=0.0,
    )
    model = GPT(cfg).to(device)
    model.train()
    # The step chargpt.train runs: the project's optimizer (decay groups over the fused AdamW
    # kernel), gradient clipping and train.dtype's autocast.
    optim = OptimConfig(lr=1e-4, beta2=0.99, weight_decay=0.1, grad_clip=1.0)
    step = TrainStep(
        model, make_optimizer(model, optim), optim.grad_clip, autocast_for(device, dtype)
    )
    idx = torch.randint(0, VOCAB_SIZE, (B, T + 1), device=device)
    x, y = idx[:, :-1], idx[:, 1:]  # (B, T) each, targets shifted by one

    def call() -> None:
        step(x, y, optim.lr)
        synchronize(device)

    counts = count_params(cfg)
    info = benchmark.extra_info
    info.update(
        group="model_step",
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        block_size=T,
        batch_size=B,
        attn_impl=attn_impl,
        dtype=dtype,
        tokens=B * T,
        n_params=int(counts["n_params"]),
        flops_per_token=counts["flops_per_token"],
        **env_info(device),
    )
    benchmark.group = f"model_step L{n_layer}-H{n_head}-C{n_embd}-T{T}"
    try:
        call()  # first step creates the AdamW state; later steps reuse it
        info["peak_mem_bytes"], info["peak_mem_method"] = peak_memory(call, device)
        median = run_pedantic(benchmark, call, None, quick=prof == "quick", target_s=TARGET_S[prof])
    except torch.OutOfMemoryError:
        pytest.skip(f"out of memory at L{n_layer} C{n_embd} B={B} T={T} {attn_impl} {dtype}")
    if median is not None:
        info["ms_per_call"] = median * 1e3
        info["tokens_per_s"] = B * T / median
        info["flops_per_s"] = B * T * counts["flops_per_token"] / median
