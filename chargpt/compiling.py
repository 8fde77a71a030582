"""`train.compile: auto`: torch.compile a run only when its predicted saving beats the compile."""

from __future__ import annotations

import math
import statistics
from typing import Any

# The rule: compile when  eager_s * (1 - 1/gain) > compile_s, where gain is the median of the
# gains measured on this graph by its last RECENT compiled runs here (step_gain), else
# STEP_GAIN (also while a gain below it rests on fewer than TRUSTED_AFTER runs); eager_s is the
# predicted eager training time: steps times the eager step time measured on the run's own
# model and batch before training (chargpt.compile_step.time_forward_backward: forward and
# backward, which are nearly all of a step), or budget.max_seconds when that is shorter; and
# compile_s is COMPILE_S (cold) for a graph this machine has never compiled, else the median
# of its last RECENT warm compiles' seconds (predicted_compile_s). A study's runs of one graph
# and budget share the cold one (choose_compile's shared_by).
#
# Why measured, not predicted from the matmul peak: an earlier rule took steps * FLOPs /
# (40% of the probe's peak). On a CPU with AMX (Intel Xeon, 2 cores, 2026-12-01) the bfloat16
# probe reads 2,012 GFLOP/s against 316 in float32, but the baby GPT's small matmuls train at
# 8% of it: the rule predicted ~10 s of eager training for a run that took 50 s, and stayed
# eager where a warm compile (3 s) saves ~13 s (compiled bfloat16 ran 1.36x eager there).
#
# CPU figures, `python -m bench.compile_gain` on the nanoGPT baby-GPT recipe, torch 2.13, a
# 2-core AMD EPYC (AVX-512), idle (load average below 1), 2026-11-30, each cold (an empty
# TORCHINDUCTOR_CACHE_DIR) unless said:
# - compile_s 33.0 s at 2 threads, 33.7 s at 1 thread; 2.9 s warm (the same cache directory).
#   COMPILE_S is the cold figure, rounded up: a study's first run, and any new model shape,
#   pays it. (An earlier session measured 200 s cold at a load average of ~7: compiling is
#   CPU work and slows with everything else on the machine; 47.5 s cold on the Intel Xeon.)
# - gain per step compiled/eager, median of alternating rounds of the same TrainStep: 1.21x
#   and 1.105x at 2 threads (cold and warm runs), 1.08x at 1 thread; 1.13x in one process in
#   an earlier session. STEP_GAIN takes 1.1: a cold compile then pays after ~385 s (6.4
#   minutes) of eager training, a warm one after ~55 s; so the 2000-step recipe (~100 s at
#   2 threads) runs eager where its graph was never compiled, compiled where it was. Whole
#   runs of it gain more than these steps in one process: see README, Speed.
# CUDA: not measured here (no GPU in this session): assumptions. Small models are launch-bound
# there, so compiled steps are commonly 1.5x or more faster and a ~1 min compile pays within
# a few hundred steps.
# MPS and anything else: always eager.
COMPILE_S = {"cpu": 35.0, "cuda": 60.0}
# A graph this machine compiled before recompiles from inductor's cache (chargpt.compile_record
# says which did): 2.5-3.1 s on the CPU above (bench.compile_gain run twice on one cache
# directory, and `python -m bench.recipe --compile true` again). COMPILE_WARM_S is charged
# until such a warm compile has been measured; after that, the measured one is. The CUDA
# figure is an assumption, as COMPILE_S's is (no GPU measured it).
COMPILE_WARM_S = {"cpu": 5.0, "cuda": 10.0}
# STEP_GAIN is assumed only for a graph never compiled here. Every compiled run times an eager
# and a compiled forward and backward of its graph (chargpt.compile_step.measure_step_gain)
# and the record keeps that gain, which later decisions on the graph use: the gain depends on
# the dtype and the processor more than one constant can say (float32 1.1-1.2x on the CPUs
# above; bfloat16 on an Intel Xeon's AMX 1.36x for whole recipe runs, 2026-12-01).
STEP_GAIN = {"cpu": 1.1, "cuda": 1.5}
# A graph's record keeps its last RECENT measured gains and warm compile times, and auto reads
# their medians: one run's figure is noisy (twelve measurements of the recipe's gain on one
# compiled model spread over 1.08-1.21x in float32 and 1.04-1.17x in bfloat16 on a 2-core AMD
# EPYC Zen 5, 2026-12-02, around a bfloat16 break-even of ~1.11x).
RECENT = 5
# A median gain below STEP_GAIN is believed only once this many runs have measured gains: an
# eager run measures nothing, so one low first figure (a compiled run in a slow spell of a
# shared machine) would otherwise keep a graph eager for good. The price, where the graph
# really is slower compiled: up to TRUSTED_AFTER - 1 more compiled runs (warm compiles, ~3-5
# s, and their training at the lower speed) after each cold compile, which starts the record
# afresh.
TRUSTED_AFTER = 3


def predicted_eager_s(
    total_steps: int | None, max_seconds: float | None, eager_step_s: float
) -> float:
    """Predicted seconds of eager training: the step budget at the measured eager step time,
    or max_seconds if that ends the run first (inf when neither bounds it)."""
    by_steps = math.inf if total_steps is None else total_steps * eager_step_s
    return min(by_steps, math.inf if max_seconds is None else max_seconds)


def predicted_compile_s(device_type: str, past: dict[str, Any] | None) -> tuple[float, str]:
    """Seconds compiling is expected to cost, and which kind: cold for a graph never compiled
    here (`past` None, chargpt.compile_record.past_compile), else warm: the median of its last
    measured warm compiles, or COMPILE_WARM_S until one has been measured."""
    if past is None:
        return COMPILE_S[device_type], "cold"
    warm = recent_figures(past, "warm_s")
    warm_s = statistics.median(warm) if warm else -1.0
    if warm_s >= 0:
        return warm_s, "warm, measured"
    return COMPILE_WARM_S[device_type], "warm"


def step_gain(device_type: str, past: dict[str, Any] | None) -> tuple[float, str]:
    """Eager over compiled seconds of a step expected for this graph, and whence: the median
    gain its last compiled runs here measured (chargpt.compile_record), else STEP_GAIN; and
    STEP_GAIN still where fewer than TRUSTED_AFTER runs have measured a median below it."""
    assumed = STEP_GAIN[device_type]
    gains = [] if past is None else recent_figures(past, "step_gain")
    gain, n = (statistics.median(gains), len(gains)) if gains else (0.0, 0)
    if gain <= 0:
        return assumed, "assumed"
    if gain < assumed and n < TRUSTED_AFTER:
        runs = "1 run" if n == 1 else f"{n} runs"
        return assumed, f"assumed: {runs} of {TRUSTED_AFTER} measured {gain:.2f}x"
    return gain, "measured" if n < 2 else f"measured, median of {n} runs"


def recent_figures(entry: dict[str, Any], name: str) -> list[float]:
    """The last RECENT figures of `name` a compile record holds under "recent", garbled ones
    left out; for a record older than those lists, its one figure under `name`."""
    recent = entry.get("recent")
    kept = recent.get(name) if isinstance(recent, dict) else None
    if not isinstance(kept, list):
        kept = [entry.get(name)]
    return [x for x in map(figure, kept) if x is not None][-RECENT:]


def figure(value: Any) -> float | None:
    """value as a float if it is a finite number (not a bool), else None: what a record read
    back from a file may hold is checked here before anything believes it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def choose_compile(
    setting: bool | str,
    device_type: str,
    eager_s: float,
    past: dict[str, Any] | None = None,
    shared_by: int = 1,
    basis: str = "",
) -> tuple[bool, str]:
    """Whether to torch.compile, and why (the run records both): true and false are kept,
    auto compiles where the predicted saving exceeds the predicted compile time (cold unless
    `past` says this graph was compiled here before).

    shared_by: how many runs of a study (this one first) train this graph on this machine to
    the same budget. A cold compile then also makes the other runs' compiles warm, so each of
    them takes off what it would save beyond a warm compile (chargpt.study.placement's
    compile_shares counts them).
    basis: how eager_s was found, for the reason (e.g. the measured step time)."""
    if setting is True or setting is False:
        return setting, f"train.compile is {str(setting).lower()}"
    if device_type not in COMPILE_S:
        return False, f"auto: eager on {device_type} (torch.compile is not used there)"
    gain, gain_basis = step_gain(device_type, past)
    saving = eager_s * (1 - 1 / gain)
    cost, kind = predicted_compile_s(device_type, past)
    if past is None and shared_by > 1:
        later = (shared_by - 1) * max(0.0, saving - COMPILE_WARM_S[device_type])
        cost = max(0.0, cost - later)
        kind += f", less ~{later:,.0f} s the {shared_by - 1} later runs of this graph save"
    chosen = saving > cost
    # auto never compiles such a run cold, so it would never learn that a warm compile pays
    hint = ""
    if not chosen and past is None and saving > COMPILE_WARM_S[device_type]:
        hint = "; one run with train.compile: true would cache it and make such runs compiled"
    return chosen, (
        f"auto: {'compiled' if chosen else 'eager'}; ~{eager_s:,.0f} s of eager training{basis}, "
        f"compiling would save ~{saving:,.0f} s (at {gain:.2f}x a step, {gain_basis}) "
        f"{'>' if chosen else '<='} ~{cost:,.0f} s "
        f"to compile on {device_type} ({kind}){hint}"
    )
