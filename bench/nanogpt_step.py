"""nanoGPT's training step and chargpt's, in one process, in alternating blocks: a steady ratio.

    python -m bench.nanogpt_step PATH/TO/nanoGPT [--rounds 12] [--steps 25] [--json OUT.json]
                                 [--recipe studies/recipes/nanogpt_cpu_baby.yaml] [--compiled]

`bench.compare_nanogpt` runs each program whole, in its own process, which is the comparison
a user makes; but a shared VM's speed moves by 20-30% within minutes, so its same-round
ratios scatter widely (0.91-1.36 over six rounds here). This runs the two training steps
in one process instead, `--steps` steps of one, then of the other (the order flips every
round), so both see the same machine at nearly the same time, and reports the median of the
per-round ratios.

What each side runs, on the same pre-drawn batches of the recipe (by default nanoGPT's CPU
baby GPT: batch 12, context 64; `--recipe` takes another recipe file), on the CPU, in float32
and eager, as nanoGPT's CPU recipe runs (a recipe's dtype and compile settings are set aside;
its thread count is kept):
- nanoGPT: its own `model.py` (the GPT class, loaded from the checkout; its attention uses
  PyTorch's sdpa) and `configure_optimizers` (torch.optim.AdamW as it builds it for a CPU);
  then forward, backward, `clip_grad_norm_` at 1.0, `optimizer.step()` and
  `zero_grad(set_to_none=True)`, as its train.py does for one micro-step without a scaler.
- chargpt: `chargpt.run_setup.setup` on the recipe, and its training step (`chargpt.step`).
- with `--compiled`, also "chargpt compiled": the same on a model of its own, torch.compile'd
  as `train.compile: true` builds it, compiled before the first round (off the clock, as in
  training; the seconds are printed).
Each side reads its loss once a block. Data loading, logging, evaluation and start-up are
left out: `bench.compare_nanogpt` measures those as part of each program. Both sides share
this process's thread count and the heap settings chargpt's setup applies process-wide
(`chargpt.heap`), so what chargpt gains from those is not in this ratio either.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from chargpt.cli import ArgumentParser, output_file
from chargpt.compile_step import warm_up_compile
from chargpt.config import ModelConfig, OptimConfig
from chargpt.corpus import CorpusError
from chargpt.files import write_json
from chargpt.measure import fingerprint
from chargpt.run_setup import setup
from chargpt.step import TrainStep
from chargpt.study.spec import StudyError, load_recipe

RECIPE = Path(__file__).resolve().parent.parent / "studies/recipes/nanogpt_cpu_baby.yaml"
N_BATCHES = 64  # distinct batches, cycled through by both sides


class NanoGPTError(Exception):
    """nanoGPT's model.py is missing or fails to load; the message says which."""


def load_nanogpt_model(checkout: Path) -> ModuleType:
    """nanoGPT's model.py from a checkout, as a module of its own (sys.path is left alone)."""
    path = checkout / "model.py"
    if not path.is_file():
        raise NanoGPTError(f"{checkout} is not a nanoGPT checkout (no model.py)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    if spec is None or spec.loader is None:
        raise NanoGPTError(f"{path}: cannot be loaded as a module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any error it raises is theirs to read
        raise NanoGPTError(f"{path}: {type(exc).__name__}: {exc}") from exc
    for name in ("GPT", "GPTConfig"):
        if not hasattr(module, name):
            raise NanoGPTError(f"{path} defines no {name}")
    return module


def build_nanogpt(
    module: ModuleType, m: ModelConfig, o: OptimConfig, seed: int
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """nanoGPT's GPT of chargpt's model config (with the corpus's vocab_size), and its
    optimizer as its configure_optimizers builds it for a CPU; errors are NanoGPTError."""
    torch.manual_seed(seed)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # configure_optimizers prints groups
            nano = module.GPT(
                module.GPTConfig(
                    block_size=m.block_size,
                    vocab_size=m.vocab_size,
                    n_layer=m.n_layer,
                    n_head=m.n_head,
                    n_embd=m.n_embd,
                    dropout=m.dropout,
                    bias=m.bias,
                )
            )
            optimizer = nano.configure_optimizers(o.weight_decay, o.lr, (o.beta1, o.beta2), "cpu")
    except Exception as exc:  # the user's code: any error it raises is theirs to read
        raise NanoGPTError(f"nanoGPT's GPT or optimizer: {type(exc).__name__}: {exc}") from exc
    return nano, optimizer


def round_ratios(times: dict[str, list[float]], reference: str) -> dict[str, dict[str, float]]:
    """Per program: median ms a step, and the median, min and max over rounds of
    reference's time / its time (> 1: faster than the reference)."""
    out = {}
    for name, ms in times.items():
        ratios = [r / m for r, m in zip(times[reference], ms, strict=True)]
        out[name] = {
            "ms_per_step": statistics.median(ms),
            "speedup": statistics.median(ratios),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
        }
    return out


def alternate(
    steps: dict[str, Callable[[int], None]], rounds: int, block: int
) -> dict[str, list[float]]:
    """ms a step of each block: every round runs each program's block once, in an order
    that flips from round to round; each block follows 3 untimed steps of its program."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(rounds):
        for name in names if rnd % 2 == 0 else reversed(names):
            steps[name](3)
            t0 = time.perf_counter()
            steps[name](block)
            times[name].append((time.perf_counter() - t0) / block * 1e3)
        print(
            f"round {rnd + 1}/{rounds}: "
            + ", ".join(f"{n} {times[n][-1]:.2f} ms/step" for n in names),
            file=sys.stderr,
            flush=True,
        )
    return times


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m bench.nanogpt_step", description=__doc__.splitlines()[0]
    )
    parser.add_argument("nanogpt", type=Path, help="path to a nanoGPT checkout")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=25, help="steps in each timed block")
    parser.add_argument("--json", type=output_file, help="also write the figures here")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the recipe both train")
    parser.add_argument(
        "--compiled", action="store_true", help="also time chargpt's torch.compile'd step"
    )
    args = parser.parse_args(argv)
    for flag, value in (("--rounds", args.rounds), ("--steps", args.steps)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    try:
        module = load_nanogpt_model(args.nanogpt.expanduser().resolve())
        overrides = {"train.device": "cpu", "train.dtype": "float32", "train.compile": False}
        run = load_recipe(str(args.recipe), overrides)
        if run.train.threads:
            torch.set_num_threads(run.train.threads)
        s = setup(run)  # chargpt's model, step and sampler, exactly as training builds them
        nano, nano_opt = build_nanogpt(module, s.model.config, run.optim, run.train.seed)
    except (NanoGPTError, StudyError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m, o = s.model.config, run.optim
    # contiguous, as nanoGPT's get_batch stacks them (its loss views targets flat)
    batches = [tuple(t.contiguous() for t in s.sampler()) for _ in range(N_BATCHES)]

    def nanogpt_steps(n: int) -> None:
        for i in range(n):
            _, loss = nano(*batches[i % N_BATCHES])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(nano.parameters(), o.grad_clip)
            nano_opt.step()
            nano_opt.zero_grad(set_to_none=True)
        loss.item()

    def chargpt_steps(step: TrainStep, n: int) -> None:
        for i in range(n):
            loss = step(*batches[i % N_BATCHES], o.lr)
        loss.item()

    steps = {"nanoGPT": nanogpt_steps, "chargpt": partial(chargpt_steps, s.train_step)}
    compile_s = None
    if args.compiled:
        sc = setup(load_recipe(str(args.recipe), {**overrides, "train.compile": True}))
        compile_s = warm_up_compile(sc)
        print(f"chargpt compiled: compile_s {compile_s:.1f}", file=sys.stderr, flush=True)
        steps["chargpt compiled"] = partial(chargpt_steps, sc.train_step)
    for run_steps in steps.values():  # warm-up: first allocations, optimizer state
        run_steps(10)
    times = alternate(steps, args.rounds, args.steps)
    summary = round_ratios(times, "nanoGPT")
    tokens = run.train.batch_size * m.block_size
    print(
        f"{args.rounds} rounds of {args.steps} steps each, threads={torch.get_num_threads()}, "
        f"batch {run.train.batch_size} x {m.block_size}:"
    )
    print("| program | ms/step (median) | tokens/s | speed vs nanoGPT: median (range) |")
    print("|---|---:|---:|---:|")
    for name, row in summary.items():
        print(
            f"| {name} | {row['ms_per_step']:.2f} | {tokens / row['ms_per_step'] * 1e3:,.0f} | "
            f"{row['speedup']:.3f} ({row['speedup_min']:.3f}-{row['speedup_max']:.3f}) |"
        )
    if args.json:
        report: dict[str, Any] = {
            "rounds": args.rounds,
            "steps_per_block": args.steps,
            "threads": torch.get_num_threads(),
            "recipe": str(args.recipe),
            "compile_s": compile_s,
            "ms_per_step": times,
            "summary": summary,
            "machine": fingerprint(torch.device("cpu")),
        }
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
