"""Whether a run compiles (`train.compile: auto` measured), and its compile kept off the clock.

`decide_compile` times the eager step on the run's own model and batch and applies
chargpt.compiling's rule (setup calls it); `warm_up_compile` compiles before training starts
and `measure_step_gain` times what compiling gained, for chargpt.compile_record.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import torch

from chargpt import measure
from chargpt.compiling import COMPILE_S, choose_compile, predicted_eager_s
from chargpt.config import RunConfig
from chargpt.evaluate import batches_loss
from chargpt.model import GPT
from chargpt.step import Autocast

if TYPE_CHECKING:  # chargpt.run_setup imports this module: Setup is only an annotation here
    from chargpt.run_setup import Setup

log = logging.getLogger(__name__)


def decide_compile(
    run: RunConfig,
    model: GPT,
    batch: tuple[torch.Tensor, torch.Tensor],
    autocast: Autocast,
    total_steps: int | None,
    past: dict[str, Any] | None = None,
    shared_by: int = 1,
) -> tuple[bool, str]:
    """train.compile resolved: `auto` times the eager step on the run's own model and batch
    (time_forward_backward), predicts the eager training time from it and the budget, and the
    compile time from `past` (this graph's compile_record, None if never compiled here;
    shared_by runs of a study share a cold one), and compiles only where that pays."""
    device = next(model.parameters()).device
    setting, max_s = run.train.compile, run.budget.max_seconds

    def choose(step_s: float, basis: str = "") -> tuple[bool, str]:
        eager_s = predicted_eager_s(total_steps, max_s, step_s)
        return choose_compile(setting, device.type, eager_s, past, shared_by, basis)

    if setting != "auto" or total_steps is None or device.type not in COMPILE_S:
        compiled, reason = choose(math.nan)  # nothing to time: the setting or max_s decides
    else:
        # The first step pays one-time costs (allocations, kernel set-up), so it over-states
        # the step: if even it says compiling does not pay, that is settled in one step.
        step_s = time_forward_backward(model, batch, autocast)
        compiled, _ = choose(step_s)
        how = "first step, an upper bound"
        if compiled:  # confirm on steady steps before paying for a compile
            step_s = min(time_forward_backward(model, batch, autocast) for _ in range(2))
            how = "steady steps"
        compiled, reason = choose(step_s, f" ({step_s * 1e3:,.1f} ms/step measured, {how})")
    if setting == "auto":
        log.info("train.compile %s", reason)
    return compiled, reason


def time_forward_backward(
    model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], autocast: Autocast
) -> float:
    """Seconds of one forward and backward of `model` (eager, or compiled for
    measure_step_gain) on `batch` (the optimizer's share of a step is small), leaving no
    trace: the weights are not updated, the gradients are dropped and the RNG that dropout
    draws from is restored."""
    x, y = batch
    device = x.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        measure.synchronize(device)
        t0 = time.perf_counter()
        with autocast():
            _, loss = model(x, y)
        loss.backward()
        measure.synchronize(device)
        seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return seconds


# ----- stage 2: compile, off the clock ----------------------------------------------------


def warm_up_compile(s: Setup) -> float:
    """Seconds torch.compile takes to compile the training and evaluation graphs.

    It compiles at the first call. Doing that here, on an evaluation batch and without an
    optimizer step (weights unchanged), keeps compilation out of train_s, tokens/s, MFU and a
    max_seconds budget. fork_rng keeps it from moving the RNG that dropout draws from.
    """
    t0 = time.perf_counter()
    x, y = s.evaluator.train[0]
    with torch.random.fork_rng(devices=[s.device] if s.device.type == "cuda" else []):
        with s.train_step.autocast():
            _, loss = s.step_model(x, y)
        loss.backward()
        s.train_step.optimizer.zero_grad()
        batches_loss(s.step_model, s.evaluator.train[:1], s.train_step.autocast)
    measure.synchronize(s.device)
    return time.perf_counter() - t0


def measure_step_gain(s: Setup, rounds: int = 2) -> float:
    """Eager over compiled seconds of the run's forward and backward, after warm_up_compile:
    the fastest of `rounds` passes of each, alternating (a slow spell of a shared machine
    then hits both), on the batch the compile was warmed on, so nothing recompiles. It costs
    2 * rounds passes, off the clock; the record keeps it for `compile: auto`'s next choice
    on this graph (chargpt.compiling.step_gain)."""
    batch, autocast = s.evaluator.train[0], s.train_step.autocast
    eager, compiled = math.inf, math.inf
    for _ in range(rounds):
        eager = min(eager, time_forward_backward(s.model, batch, autocast))
        compiled = min(compiled, time_forward_backward(s.step_model, batch, autocast))
    return eager / compiled
