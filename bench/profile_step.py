"""Profile the training step of a recipe with torch.profiler: where does a step's time go?

    python -m bench.profile_step [studies/recipes/nanogpt_cpu_baby.yaml] [--steps 50]

Prints the top operators by self CPU time over `--steps` steps (after warm-up) of the step
chargpt.train runs, chargpt.step.TrainStep (forward, backward, clip_grad, adamw_step: its
record_function labels), after drawing each batch from the same sampler (sample_batch). It
runs on the CPU, under the recipe's train.dtype autocast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from chargpt.cli import ArgumentParser
from chargpt.corpus import CorpusError
from chargpt.run_setup import setup
from chargpt.study.spec import StudyError, load_recipe

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "studies/recipes/nanogpt_cpu_baby.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m bench.profile_step", description=__doc__.splitlines()[0]
    )
    parser.add_argument("recipe", nargs="?", default=str(DEFAULT_RECIPE))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--attn-impl", choices=["manual", "sdpa"], default=None)
    args = parser.parse_args(argv)
    if args.steps < 1:
        print(f"error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    overrides = {"train.device": "cpu"}  # a CPU profile
    if args.attn_impl:
        overrides["model.attn_impl"] = args.attn_impl
    try:
        run = load_recipe(args.recipe, overrides)
        if run.train.threads:
            torch.set_num_threads(run.train.threads)
        s = setup(run)  # model, step and sampler exactly as training builds them
    except (StudyError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def step() -> None:
        with record_function("sample_batch"):
            x, y = s.sampler()
        s.train_step(x, y, run.optim.lr)

    for _ in range(20):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    plain = (time.perf_counter() - t0) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(
        f"{run.model.attn_impl} attention, threads={torch.get_num_threads()}: "
        f"{plain * 1e3:.2f} ms/step unprofiled, "
        f"{run.train.batch_size * run.model.block_size / plain:,.0f} tokens/s"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
