"""Level 1: a claim's FLOPs by the trainer's formula, the throughput and MFU it implies."""

from __future__ import annotations

import dataclasses
from typing import Any

from chargpt.claims.registry import Claim
from chargpt.config import RunConfig
from chargpt.model import count_params
from chargpt.schedule import budget_steps

# Implied MFU against the datasheet dense peak. Above 100% the hardware cannot do it. Above
# 75% is implausible for end-to-end training: the best published figures are ~72% (Flash-
# Attention-2 on A100, GPT-style training) and ~60% (llm.c GPT-2 on A100), while large runs
# report 46-55% (PaLM, MegaScale). Below 1% the run is dominated by something other than the
# model's matmuls (data loading, evaluation, a small model on a big device): possible, noted.
MFU_IMPOSSIBLE = 1.0
MFU_IMPLAUSIBLE = 0.75
MFU_LOW = 0.01


def mfu_class(mfu: float | None) -> str:
    """impossible, implausible, plausible, low, or unknown (no datasheet peak)."""
    if mfu is None:
        return "unknown"
    if mfu > MFU_IMPOSSIBLE:
        return "impossible"
    if mfu > MFU_IMPLAUSIBLE:
        return "implausible"
    return "low" if mfu < MFU_LOW else "plausible"


def resolved(run: RunConfig, vocab_size: int) -> RunConfig:
    """The run with its vocabulary size filled in (from the corpus or data.random)."""
    return dataclasses.replace(run, model=dataclasses.replace(run.model, vocab_size=vocab_size))


def run_cost(run: RunConfig, accum: int, count_eval: bool) -> dict[str, float]:
    """FLOPs of one run: training (steps x tokens/step x flops_per_token) and, when counted,
    its evaluations (forward only: a third of the training FLOPs per token, on train and val
    splits, eval_iters batches each, every eval_interval steps and at step 0)."""
    counts = count_params(run.model)
    fpt = counts["flops_per_token"]
    tokens_per_step = run.train.batch_size * run.model.block_size * accum
    steps = budget_steps(run.budget, tokens_per_step, fpt * tokens_per_step)
    if steps is None:
        raise ValueError("a claim's recipe needs a step, token or FLOP budget, not only seconds")
    eval_flops = 0.0
    if count_eval:
        n_evals = steps // run.train.eval_interval + 1
        eval_tokens = 2 * run.train.eval_iters * run.train.batch_size * run.model.block_size
        eval_flops = n_evals * eval_tokens * fpt / 3
    return {
        "n_params": counts["n_params"],
        "flops_per_token": fpt,
        "tokens_per_step": tokens_per_step,
        "steps": steps,
        "tokens": steps * tokens_per_step,
        "train_flops": steps * tokens_per_step * fpt,
        "eval_flops": eval_flops,
    }


def arithmetic(claim: Claim, vocab_size: int) -> dict[str, Any]:
    """The claim's total FLOPs (summed over a study's runs) and what its time implies."""
    costs = [run_cost(resolved(r, vocab_size), claim.accum, claim.count_eval) for r in claim.runs]
    total: dict[str, Any] = {k: sum(c[k] for c in costs) for k in costs[0]}
    if len(costs) > 1:  # per-run sizes do not add up: show the largest run's
        for key in ("n_params", "flops_per_token", "tokens_per_step"):
            total[key] = max(c[key] for c in costs)
    total_flops = total["train_flops"] + total["eval_flops"]
    hw, time_s = claim.hardware, claim.claimed.time_s
    flops_per_s = total_flops / time_s
    mfu = None if hw.peak_flops is None else flops_per_s / (hw.count * hw.peak_flops)
    return {
        **total,
        "total_flops": total_flops,
        "implied_tokens_per_s": total["tokens"] / time_s,
        "implied_flops_per_s": flops_per_s,
        "implied_mfu": mfu,
        "mfu_class": mfu_class(mfu),
    }
