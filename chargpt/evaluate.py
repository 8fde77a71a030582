"""A model's loss on held-out text: fixed batches during training, whole splits after it.

    python -m chargpt.evaluate CKPT [--split val] [--corpus PATH] [--batch-size 64]

Training evaluates on `eval_iters` fixed random batches, which is cheap but noisy: with the
recipe's 20 batches of 12 x 64 characters the estimate moves by about 0.01 to 0.02 nats
from one set of batches to another. This scores every window of block_size characters of
the split once, so two models can be compared without that noise.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch

from chargpt.cli import ArgumentParser, prog
from chargpt.config import DataConfig
from chargpt.data import BatchSampler, CharTokenizer, load_splits
from chargpt.model import GPT
from chargpt.step import Autocast

EVAL_SEED = 1234  # the same evaluation batches for every run, whatever its training seed


def fixed_batches(
    ids: torch.Tensor, block_size: int, batch_size: int, n: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same n evaluation batches for every call with the same arguments."""
    sampler = BatchSampler(ids, block_size, batch_size, seed=EVAL_SEED, device=device)
    return [sampler() for _ in range(n)]


@torch.no_grad()
def batches_loss(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    autocast: Autocast = contextlib.nullcontext,
) -> float:
    """Mean loss over the given batches, in eval mode (no dropout); leaves the model training."""
    model.eval()
    losses = []
    for x, y in batches:
        with autocast():
            _, loss = model(x, y)
        losses.append(loss.float())
    model.train()
    return torch.stack(losses).mean().item()


class FixedBatchEval:
    """Training's evaluation: mean loss on the same `n` batches of each split every time.

    Fixed batches make every run of a study see the same sample (no sampling noise between
    runs) at the price of a shared offset from the whole-split loss (see split_loss).
    """

    def __init__(
        self,
        train_ids: torch.Tensor,
        val_ids: torch.Tensor,
        block_size: int,
        batch_size: int,
        n: int,
        device: torch.device,
        autocast: Autocast = contextlib.nullcontext,
    ) -> None:
        self.train = fixed_batches(train_ids, block_size, batch_size, n, device)
        self.val = fixed_batches(val_ids, block_size, batch_size, n, device)
        self.autocast = autocast

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        """{"train_loss": ..., "val_loss": ...} of the model as it is now."""
        return {
            "train_loss": batches_loss(model, self.train, self.autocast),
            "val_loss": batches_loss(model, self.val, self.autocast),
        }


def windows(ids: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows (N, T) of inputs and their next-character targets.

    Every character of the split after the first is a target exactly once, except the tail
    that does not fill a whole window; as in training, each position sees the context from
    its window's start (0 to T-1 characters).
    """
    n = (len(ids) - 1) // block_size
    if n < 1:
        raise ValueError(
            f"a split of {len(ids)} characters is too short for one window of "
            f"block_size {block_size}"
        )
    x = ids[: n * block_size].reshape(n, block_size)
    y = ids[1 : n * block_size + 1].reshape(n, block_size)
    return x, y


@torch.no_grad()
def split_loss(
    model: GPT, ids: torch.Tensor, batch_size: int = 64, autocast: Any = contextlib.nullcontext
) -> tuple[float, int]:
    """Mean cross-entropy in nats over every window of the split, and the characters scored."""
    x, y = windows(ids, model.config.block_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].long().to(device)
            yb = y[i : i + batch_size].long().to(device)
            with autocast():
                _, loss = model(xb, yb)
            total += loss.double().cpu() * yb.numel()  # the batch mean, weighted by its size
    finally:
        model.train(was_training)
    return (total / y.numel()).item(), y.numel()


def corpus_split(
    corpus: str, tokenizer: CharTokenizer, val_fraction: float, split: str
) -> torch.Tensor:
    """Token ids of the train or val split of a corpus, encoded with a model's vocabulary."""
    splits = load_splits(DataConfig(corpus=corpus, val_fraction=val_fraction), tokenizer)
    return splits.val if split == "val" else splits.train


def main(argv: list[str] | None = None) -> int:
    from chargpt.checkpoint import CheckpointError, device_option, load_checkpoint

    parser = ArgumentParser(
        prog=prog("python -m chargpt.evaluate", "chargpt-evaluate"),
        description="Print a checkpoint's loss over every character of a split.",
    )
    parser.add_argument("checkpoint", help="path to a ckpt.pt written by training")
    parser.add_argument("--split", choices=["val", "train"], default="val")
    parser.add_argument("--corpus", help="corpus name or file (default: the one it trained on)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--device",
        type=device_option,
        default="cpu",
        help="auto, cpu, cuda[:N] or mps (default cpu)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        model, tokenizer, run, _ = load_checkpoint(args.checkpoint, device=args.device)
        corpus = args.corpus or run.data.corpus
        ids = corpus_split(corpus, tokenizer, run.data.val_fraction, args.split)
        loss, n = split_loss(model, ids, args.batch_size)
    except (CheckpointError, ValueError) as exc:  # CorpusError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.split} loss {loss:.4f} nats/char over {n:,} characters of {corpus!r} "
        f"({n // model.config.block_size:,} windows of {model.config.block_size})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
