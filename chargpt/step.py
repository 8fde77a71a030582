"""The training step, one for everyone: forward, backward, clip, AdamW, under autocast.

The trainer runs it, and bench/profile_step.py and bench/test_model_step.py time it, so a
benchmark measures exactly the step that training runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import record_function

from chargpt.config import OptimConfig
from chargpt.optim import AdamW

Autocast = Callable[[], contextlib.AbstractContextManager[Any]]


def autocast_for(device: torch.device, dtype: str) -> Autocast:
    """A fresh autocast context per use: bfloat16 matmuls for train.dtype bfloat16, else none."""
    if dtype == "bfloat16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_optimizer(model: torch.nn.Module, optim: OptimConfig) -> AdamW:
    """AdamW; matrices decay, biases, LayerNorm weights and nothing else (the usual split)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return AdamW([(decay, optim.weight_decay), (no_decay, 0.0)], betas=(optim.beta1, optim.beta2))


class TrainStep:
    """One optimisation step of a model on one batch; returns the loss (not synchronised).

    `model` may be the torch.compile'd module; the optimizer holds the real parameters. The
    record_function labels cost microseconds a step and let a profile show the phases.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: AdamW,
        grad_clip: float,
        autocast: Autocast = contextlib.nullcontext,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.grad_clip = grad_clip  # 0 disables clipping
        self.autocast = autocast
        self.params = optimizer.parameters()  # built once: clipping runs every step

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        with record_function("forward"), self.autocast():
            _, loss = self.model(x, y)
        with record_function("backward"):
            loss.backward()
        if self.grad_clip > 0:
            with record_function("clip_grad"):
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        with record_function("adamw_step"):
            self.optimizer.step(lr)
            self.optimizer.zero_grad()
        return loss


def random_batch(
    vocab_size: int, batch_size: int, block_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids as a (batch_size, block_size) input and target: what a step costs does
    not depend on the text, so the speed probes need no corpus."""
    x = torch.randint(vocab_size, (batch_size, block_size), device=device)
    y = torch.randint(vocab_size, (batch_size, block_size), device=device)
    return x, y


def time_steps(
    step: TrainStep,
    batch: tuple[torch.Tensor, torch.Tensor],
    lr: float,
    min_steps: int,
    min_seconds: float,
    max_steps: int | None = None,
) -> tuple[float, int]:
    """Mean seconds of a step and how many ran: steps back to back, each waited for (CUDA
    runs ahead of the clock), at least min_steps and until min_seconds have passed or
    max_steps have run."""
    from chargpt.measure import synchronize

    device = batch[0].device
    n, elapsed, t0 = 0, 0.0, time.perf_counter()
    while n < min_steps or (elapsed < min_seconds and (max_steps is None or n < max_steps)):
        step(*batch, lr)
        synchronize(device)
        n, elapsed = n + 1, time.perf_counter() - t0
    return elapsed / n, n
