"""Measure what torch.compile costs and gains for a recipe: the figures behind compile: auto.

    python -m bench.compile_gain [studies/recipes/nanogpt_cpu_baby.yaml] [--threads 1]
                                 [--rounds 7] [--steps 30]

Prints the first-call compile time (as compile_step.warm_up_compile measures it: cold unless
TORCHINDUCTOR_CACHE_DIR holds this recipe's kernels from an earlier run, so run it twice with
the same directory to see the warm figure), then the per-step ratio eager/compiled over
alternating rounds of the same TrainStep on one model (median), and the steps a run needs
before compiling pays for itself.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from chargpt.cli import ArgumentParser
from chargpt.compile_step import warm_up_compile
from chargpt.corpus import CorpusError
from chargpt.run_setup import setup
from chargpt.step import TrainStep
from chargpt.study.spec import StudyError, load_recipe

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "studies/recipes/nanogpt_cpu_baby.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m bench.compile_gain", description=__doc__.splitlines()[0]
    )
    parser.add_argument("recipe", nargs="?", default=str(DEFAULT_RECIPE))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    for name in ("rounds", "steps", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"error: --{name} must be >= 1, got {value}", file=sys.stderr)
            return 2
    try:
        run = load_recipe(args.recipe, {"train.compile": True, "train.device": "cpu"})
    except (StudyError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    s = setup(run)
    compile_s = warm_up_compile(s)
    compiled = s.train_step
    eager = TrainStep(s.model, compiled.optimizer, compiled.grad_clip, compiled.autocast)
    lr = run.optim.lr

    def timed(step: TrainStep) -> float:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(*s.sampler(), lr)
        return (time.perf_counter() - t0) / args.steps

    timed(compiled), timed(eager)  # warm both paths
    eager_s, compiled_s = [], []
    for _ in range(args.rounds):
        eager_s.append(timed(eager))
        compiled_s.append(timed(compiled))
    ratios = [e / c for e, c in zip(eager_s, compiled_s)]
    gain, step_s = statistics.median(ratios), statistics.median(eager_s)
    saving = step_s * (1 - 1 / gain)
    pays = f"{compile_s / saving:,.0f} steps" if saving > 0 else "never (no gain)"
    print(
        f"threads={torch.get_num_threads()} compile_s={compile_s:.1f} "
        f"eager={step_s * 1e3:.2f} ms/step compiled={statistics.median(compiled_s) * 1e3:.2f} "
        f"ms/step gain={gain:.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f}); "
        f"compiling pays after {pays}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
