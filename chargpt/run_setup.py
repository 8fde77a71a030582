"""A run's set-up: data, model, compile decision, step, sampler and evaluation batches, seeded.

`setup(run)` builds a `Setup`, everything chargpt.train.train trains with, before any clock
starts (the step benchmarks in bench/ call it too); `build_train_step` is the step alone, for
the claims probe and the packing probe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from chargpt import measure
from chargpt.compile_record import graph_key, past_compile
from chargpt.compile_step import decide_compile
from chargpt.config import RunConfig
from chargpt.corpus import corpus_fingerprint
from chargpt.data import BatchSampler, Splits, load_splits
from chargpt.evaluate import FixedBatchEval
from chargpt.heap import keep_freed_memory
from chargpt.model import GPT, count_params
from chargpt.precision import run_device_and_dtype
from chargpt.schedule import budget_steps
from chargpt.step import TrainStep, autocast_for, make_optimizer


@dataclass
class Setup:
    """Everything a run trains with, built from its config before any clock starts."""

    run: RunConfig
    run_id: str
    dtype: str  # what it trains in: train.dtype, with `auto` resolved
    device: torch.device
    splits: Splits
    model: GPT
    step_model: torch.nn.Module  # the model, or its torch.compile'd wrapper
    compiled: bool  # train.compile, with `auto` resolved
    compile_reason: str  # why (chargpt.compiling.choose_compile)
    train_step: TrainStep
    sampler: BatchSampler
    evaluator: FixedBatchEval
    counts: dict[str, Any]  # count_params of the model
    tokens_per_step: int
    flops_per_step: float
    total_steps: int | None  # None: only max_seconds bounds the run
    graph_key: str  # what torch.compile would build (chargpt.compile_record)
    compiled_before: bool  # whether this machine has compiled that graph before (if asked)


def build_train_step(
    model: GPT, run: RunConfig, device: torch.device, dtype: str, compiled: bool
) -> tuple[torch.nn.Module, TrainStep]:
    """The model as it steps (torch.compile'd when compiled) and its TrainStep (AdamW,
    clipping, autocast for the resolved dtype): setup uses it, and so does the claims probe."""
    step_model = torch.compile(model) if compiled else model
    autocast = autocast_for(device, dtype)
    step = TrainStep(step_model, make_optimizer(model, run.optim), run.optim.grad_clip, autocast)
    return step_model, step


def setup(run: RunConfig, compile_shared_by: int = 1) -> Setup:
    """Data, model, optimizer, step, sampler and evaluation batches of a run, seeded; and the
    process's malloc set to keep freed memory, so that whatever steps this (training, or a
    benchmark of its step) pays no page faults for activations it has just freed.
    compile_shared_by: see chargpt.compiling.choose_compile (a study's runner sets it)."""
    keep_freed_memory()
    device, dtype = run_device_and_dtype(run)
    torch.manual_seed(run.train.seed)
    splits = load_splits(run.data)
    vocab_size = splits.tokenizer.vocab_size
    if run.model.vocab_size is not None and run.model.vocab_size != vocab_size:
        raise ValueError(
            f"model.vocab_size is {run.model.vocab_size} but corpus "
            f"{run.data.corpus!r} has {vocab_size} characters"
        )
    mcfg = dataclasses.replace(run.model, vocab_size=vocab_size)
    counts = count_params(mcfg)
    B, T = run.train.batch_size, mcfg.block_size
    flops_per_step = counts["flops_per_token"] * B * T
    total_steps = budget_steps(run.budget, B * T, flops_per_step)
    key = graph_key(device, measure.hardware_name(device), dataclasses.asdict(mcfg), B, dtype)
    past = None if run.train.compile is False else past_compile(key)  # an eager run never asks
    model = GPT(mcfg).to(device)
    autocast = autocast_for(device, dtype)
    evaluator = FixedBatchEval(
        splits.train, splits.val, T, B, run.train.eval_iters, device, autocast
    )
    compiled, compile_reason = decide_compile(
        run, model, evaluator.train[0], autocast, total_steps, past, compile_shared_by
    )
    step_model, train_step = build_train_step(model, run, device, dtype, compiled)
    return Setup(
        run=run,
        run_id=run.run_id(corpus_fingerprint(run.data.corpus)),
        dtype=dtype,
        device=device,
        splits=splits,
        model=model,
        step_model=step_model,
        compiled=compiled,
        compile_reason=compile_reason,
        train_step=train_step,
        sampler=BatchSampler(splits.train, T, B, seed=run.train.seed, device=device),
        evaluator=evaluator,
        counts=counts,
        tokens_per_step=B * T,
        flops_per_step=flops_per_step,
        total_steps=total_steps,
        graph_key=key,
        compiled_before=past is not None,
    )
