"""Train a recipe (default: nanoGPT's CPU baby GPT) and print its speed, memory and loss.

    python -m bench.recipe [studies/recipes/nanogpt_cpu_baby.yaml] [--attn-impl sdpa]
                           [--threads N] [--steps N] [--dtype bfloat16] [--compile auto]
                           [--json OUT.json]

Runs in this process (fresh, so peak RSS is the training process's own; nothing heavier than
torch and numpy is imported). Prints tokens/s, train_s, wall, final val loss (on the fixed eval
batches and on the whole val split), MFU with the probe's measured peak, and peak RSS.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

# The process's wall time runs from here: only the standard library is imported above, and
# everything heavier (yaml, chargpt, hence numpy and torch) is imported inside main, so the
# reported wall includes their import time, as a user who runs the recipe waits for it.
T_START = time.perf_counter()

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "studies/recipes/nanogpt_cpu_baby.yaml"


def _parser() -> Any:
    from chargpt.cli import ArgumentParser, output_file

    parser = ArgumentParser(prog="python -m bench.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(DEFAULT_RECIPE))
    parser.add_argument("--attn-impl", choices=["manual", "sdpa"])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument(
        "--compile",
        choices=["true", "false", "auto"],
        help="override train.compile (auto: compile when the run is long enough to pay)",
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--json", type=output_file, help="also write the measurements to this file")
    return parser


def _train_and_score(run: Any) -> tuple[Any, float, float, int]:
    """Train the recipe; (result, wall seconds since process start, whole-val loss, chars)."""
    import tempfile

    from chargpt.checkpoint import load_checkpoint
    from chargpt.evaluate import corpus_split, split_loss
    from chargpt.train import train

    with tempfile.TemporaryDirectory(prefix="chargpt-recipe-") as tmp:
        run = dataclasses.replace(run, train=dataclasses.replace(run.train, save_checkpoint=True))
        r = train(run, out_dir=Path(tmp))
        wall = time.perf_counter() - T_START  # before the extra full-split evaluation
        # The fixed eval batches are a sample; also score every character of the val split,
        # in training-sized batches, so this process's peak memory stays that of training.
        model, tokenizer, _, _ = load_checkpoint(Path(tmp) / "ckpt.pt")
        ids = corpus_split(run.data.corpus, tokenizer, run.data.val_fraction, "val")
        full_val, n_chars = split_loss(model, ids, batch_size=run.train.batch_size)
    return r, wall, full_val, n_chars


def _report(
    recipe: str, run: Any, r: Any, threads: int, wall: float, full_val: float, n_chars: int
) -> str:
    import torch

    compile_s = f"compile_s {r.compile_s:.2f} s; " if r.compile_s else ""
    return "\n".join(
        [
            f"recipe      {recipe} ({run.model.attn_impl} attention, {threads} threads, "
            f"compile={run.train.compile})",
            f"dtype       {r.dtype} (train.dtype {run.train.dtype}"
            + (
                ": bfloat16 only where native and faster on the matmul probe)"
                if run.train.dtype == "auto"
                else ")"
            ),
            f"compiled    {r.compiled} ({r.compile_reason})",
            f"hardware    {r.hardware}, torch {torch.__version__}",
            f"steps       {r.steps} ({r.stop_reason}), {r.tokens:,} tokens",
            f"train_s     {r.train_s:.2f} s ({r.train_s / r.steps * 1e3:.2f} ms/step); "
            f"eval_s {r.eval_s:.2f} s; {compile_s}wall {wall:.2f} s (process start to end of "
            "training)",
            f"tokens/s    {r.tokens_per_s:,.0f}",
            f"val loss    {r.final_val_loss:.4f} on {run.train.eval_iters} fixed batches "
            f"(best {r.best_val_loss:.4f} at step {r.best_step}); train loss "
            f"{r.final_train_loss:.4f}",
            f"full val    {full_val:.4f} over all {n_chars:,} characters of the val split "
            "(python -m chargpt.evaluate)",
            f"MFU         {r.mfu:.1%} of a measured {r.peak_flops / 1e9:.0f} GFLOP/s "
            f"({r.dtype} matmul probe), {r.flops_per_token / 1e6:.3f} MFLOPs/token",
            f"peak RSS    {r.peak_rss_mb:.0f} MiB",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    from chargpt.corpus import CorpusError
    from chargpt.study.spec import StudyError, load_recipe

    args = _parser().parse_args(argv)
    overrides = {
        "model.attn_impl": args.attn_impl,
        "train.threads": args.threads,
        "train.dtype": args.dtype,
        "train.compile": {"true": True, "false": False, "auto": "auto", None: None}[args.compile],
        "budget": None if args.steps is None else {"max_steps": args.steps},
    }
    try:
        run = load_recipe(args.recipe, {k: v for k, v in overrides.items() if v is not None})
        r, wall, full_val, n_chars = _train_and_score(run)
    except (StudyError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import torch

    threads = run.train.threads or torch.get_num_threads()  # what the run trained with
    print(_report(args.recipe, run, r, threads, wall, full_val, n_chars))
    if args.json:
        from chargpt.files import write_json

        write_json(
            args.json,
            {
                **r.to_dict(),
                "recipe": args.recipe,
                "attn_impl": run.model.attn_impl,
                "dtype": r.dtype,
                "threads": threads,
                "process_wall_s": wall,
                "full_val_loss": full_val,
                "full_val_chars": n_chars,
            },
        )
    return 0 if r.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
