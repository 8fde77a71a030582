"""Profile the training step of a recipe with torch.profiler: where does a step's time go?

    python -m bench.profile_step [studies/recipes/nanogpt_cpu_baby.yaml] [--steps 50]

Prints the top operators by self CPU time over `--steps` steps (after warm-up) of the step
chargpt.train runs, chargpt.step.TrainStep (forward, backward, clip_grad, adamw_step: its
record_function labels), after drawing each batch from the same sampler (sample_batch). It
runs on the CPU, under the recipe's train.dtype autocast.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch
import yaml
from torch.profiler import ProfilerActivity, profile, record_function

from chargpt.cli import ArgumentParser
from chargpt.config import RunConfig
from chargpt.data import BatchSampler, load_splits
from chargpt.model import GPT
from chargpt.step import TrainStep, autocast_for, make_optimizer

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "studies/recipes/nanogpt_cpu_baby.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.profile_step",
                            description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(DEFAULT_RECIPE))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--attn-impl", choices=["manual", "sdpa"], default=None)
    args = parser.parse_args(argv)
    base = yaml.safe_load(Path(args.recipe).read_text())["base"]
    if args.attn_impl:
        base["model"]["attn_impl"] = args.attn_impl
    run = RunConfig.from_dict(base)
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    splits = load_splits(run.data)
    model = GPT(dataclasses.replace(run.model, vocab_size=splits.tokenizer.vocab_size))
    train_step = TrainStep(model, make_optimizer(model, run.optim), run.optim.grad_clip,
                           autocast_for(torch.device("cpu"), run.train.dtype))
    sampler = BatchSampler(splits.train, run.model.block_size, run.train.batch_size, seed=0)

    def step() -> None:
        with record_function("sample_batch"):
            x, y = sampler()
        train_step(x, y, run.optim.lr)

    for _ in range(20):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    plain = (time.perf_counter() - t0) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(f"{run.model.attn_impl} attention, threads={torch.get_num_threads()}: "
          f"{plain * 1e3:.2f} ms/step unprofiled, "
          f"{run.train.batch_size * run.model.block_size / plain:,.0f} tokens/s")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
