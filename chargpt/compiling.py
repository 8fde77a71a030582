"""`train.compile: auto`: torch.compile a run only when its predicted saving beats the compile."""

from __future__ import annotations

import math

# The rule: compile when  eager_s * (1 - 1/STEP_GAIN) > COMPILE_S, where eager_s is the
# predicted eager training time: steps * flops_per_step / (EAGER_MFU * measured peak), or
# budget.max_seconds when that is shorter. Figures (bench/compile_gain.py on the nanoGPT
# CPU baby-GPT recipe, torch 2.13, 2-core AMD EPYC with AVX-512, shared with other jobs):
# - CPU compile: 200 s cold (empty inductor cache, load average ~7), FILL_WARM s with the
#   on-disk cache warm. COMPILE_S takes the cold figure scaled to an idle machine, since a
#   study's first run, and every run of a new shape, pays the cold price.
# - CPU gain per step: 1.13x compiled/eager (issue 15, an idle AVX-512 machine); alternating
#   rounds on the loaded 2-core machine gave FILL_GAIN. EAGER_MFU 0.4: the baby GPT's eager
#   float32 step reaches ~40% of the matmul probe's peak with one thread.
# So on this CPU compiling pays after ~COMPILE_S / (0.115 * step_s): for the baby GPT
# (~60 ms/step) some 10,000 steps; its 2000-step recipe stays eager.
# - CUDA: not measured here. Small models are launch-bound there, so compiled steps are
#   commonly 1.5x or more faster and compiling (~1 min) pays within a few hundred steps;
#   EAGER_MFU 0.1 keeps the prediction of a small model's step time on the low side, so
#   auto errs towards eager. MPS (and anything else): always eager.
COMPILE_S = {"cpu": 90.0, "cuda": 60.0}
STEP_GAIN = {"cpu": 1.13, "cuda": 1.5}
EAGER_MFU = {"cpu": 0.4, "cuda": 0.1}


def predicted_eager_s(
    device_type: str,
    total_steps: int | None,
    max_seconds: float | None,
    flops_per_step: float,
    peak_flops: float,
) -> float:
    """Predicted seconds of eager training: the step budget at EAGER_MFU, or max_seconds if
    that ends the run first (inf when neither bounds it)."""
    mfu = EAGER_MFU.get(device_type, EAGER_MFU["cpu"])
    by_steps = (
        math.inf if total_steps is None else total_steps * flops_per_step / (mfu * peak_flops)
    )
    return min(by_steps, math.inf if max_seconds is None else max_seconds)


def choose_compile(setting: bool | str, device_type: str, eager_s: float) -> tuple[bool, str]:
    """Whether to torch.compile, and why (the run records both): true and false are kept,
    auto compiles where COMPILE_S is known and the predicted saving exceeds it."""
    if setting is True or setting is False:
        return setting, f"train.compile is {str(setting).lower()}"
    if device_type not in COMPILE_S:
        return False, f"auto: eager on {device_type} (torch.compile is not used there)"
    saving = eager_s * (1 - 1 / STEP_GAIN[device_type])
    cost = COMPILE_S[device_type]
    chosen = saving > cost
    return chosen, (
        f"auto: {'compiled' if chosen else 'eager'}; ~{eager_s:,.0f} s of eager training, "
        f"compiling would save ~{saving:,.0f} s {'>' if chosen else '<='} ~{cost:,.0f} s "
        f"to compile on {device_type}"
    )
