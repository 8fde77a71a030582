"""When a run stops and how fast it learns: budgets as step counts, warmup + cosine lr."""

from __future__ import annotations

import math

from chargpt.config import Budget, OptimConfig


def budget_steps(budget: Budget, tokens_per_step: int, flops_per_step: float) -> int | None:
    """Whole steps that fit the step/token/FLOPs limits (None if only max_seconds is set)."""
    limits = [steps for steps, _ in _step_limits(budget, tokens_per_step, flops_per_step)]
    return max(1, min(limits)) if limits else None


def step_reason(budget: Budget, tokens_per_step: int, flops_per_step: float) -> str:
    """Which step-convertible limit binds first."""
    return min(_step_limits(budget, tokens_per_step, flops_per_step))[1]


def _step_limits(
    budget: Budget, tokens_per_step: int, flops_per_step: float
) -> list[tuple[int, str]]:
    """(steps, name) of each step, token and FLOPs limit that is set, in that order."""
    limits = []
    if budget.max_steps is not None:
        limits.append((budget.max_steps, "max_steps"))
    if budget.max_tokens is not None:
        limits.append((budget.max_tokens // tokens_per_step, "max_tokens"))
    if budget.max_flops is not None:
        limits.append((int(budget.max_flops // flops_per_step), "max_flops"))
    return limits


def learning_rate(optim: OptimConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine from lr to min_lr as progress goes 0 -> 1.

    progress is the fraction of the post-warmup budget used: (step - warmup) / (total - warmup)
    for step budgets, or training seconds / max_seconds for a time budget.
    """
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / (optim.warmup_steps + 1)
    if optim.schedule == "constant":
        return optim.lr
    p = min(max(progress, 0.0), 1.0)
    return optim.final_lr + 0.5 * (1.0 + math.cos(math.pi * p)) * (optim.lr - optim.final_lr)
