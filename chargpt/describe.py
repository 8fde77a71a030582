"""Task (a): the facts of a corpus, one data-loader batch, block_size costs and reference losses.

python -m chargpt.describe CORPUS [--block-size 8] [--batch-size 4] [--json]
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from chargpt.cli import ArgumentParser, prog
from chargpt.config import DataConfig, ModelConfig
from chargpt.corpus import CorpusError
from chargpt.data import CharDataset, CharTokenizer, load_splits, reference_losses
from chargpt.model import count_params

COST_BLOCK_SIZES = (8, 32, 64, 128, 256, 512, 1024)
TOP_CHARS = 10
LOSS_LABELS = {
    "uniform": "uniform, ln V",
    "unigram_train_entropy": "unigram entropy (train)",
    "unigram_val": "unigram model on val",
    "bigram_val": "bigram model (train) on val",
}


def _batch_facts(
    train: torch.Tensor, tokenizer: CharTokenizer, block_size: int, batch_size: int, seed: int
) -> dict[str, Any]:
    """One shuffled DataLoader batch over CharDataset: shapes, dtype and its first row."""
    loader = DataLoader(
        CharDataset(train, block_size),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    x, y = next(iter(loader))  # (B, T) each
    return {
        "block_size": block_size,
        "batch_size": batch_size,
        "x_shape": list(x.shape),
        "y_shape": list(y.shape),
        "dtype": str(x.dtype).removeprefix("torch."),
        "x_ids": x[0].tolist(),
        "y_ids": y[0].tolist(),
        "x_text": tokenizer.decode(x[0]),
        "y_text": tokenizer.decode(y[0]),
        "y_is_x_shifted_by_one": bool(torch.equal(x[:, 1:], y[:, :-1])),
    }


def _cost_table(vocab_size: int, block_sizes: list[int]) -> list[dict[str, float]]:
    """Training FLOPs per token of the default model as block_size varies."""
    rows = []
    for t in block_sizes:
        cfg = ModelConfig(vocab_size=vocab_size, block_size=t)
        counts = count_params(cfg)
        attention = 12 * cfg.n_layer * cfg.n_embd * t  # QK^T and AV, forward + backward
        rows.append(
            {
                "block_size": t,
                "n_params": counts["n_params"],
                "attention_flops_per_token": attention,
                "other_flops_per_token": counts["flops_per_token"] - attention,
                "flops_per_token": counts["flops_per_token"],
                "attention_share": attention / counts["flops_per_token"],
                "flops_per_sequence": counts["flops_per_token"] * t,
            }
        )
    return rows


def describe(
    corpus: str, block_size: int = 8, batch_size: int = 4, val_fraction: float = 0.1, seed: int = 0
) -> dict[str, Any]:
    """Everything task (a) asks about a corpus, as a JSON-ready dict (CorpusError if unreadable)."""
    if block_size < 1 or batch_size < 1:
        raise ValueError(f"block_size and batch_size must be >= 1, got {block_size}, {batch_size}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    splits = load_splits(DataConfig(corpus=corpus, val_fraction=val_fraction))
    tokenizer, train, val = splits.tokenizer, splits.train, splits.val
    v = tokenizer.vocab_size
    counts = np.bincount(train.numpy(), minlength=v) + np.bincount(val.numpy(), minlength=v)
    order = sorted(range(v), key=lambda i: (-counts[i], tokenizer.chars[i]))
    losses = reference_losses(train.numpy(), val.numpy(), v)
    return {
        "corpus": corpus,
        "sha256": splits.sha256,
        "length": splits.n_chars,
        "vocab_size": v,
        "chars": "".join(tokenizer.chars),
        "val_fraction": val_fraction,
        "n_train": len(train),
        "n_val": len(val),
        "char_counts": {tokenizer.chars[i]: int(counts[i]) for i in order},
        "batch": _batch_facts(train, tokenizer, block_size, batch_size, seed),
        "block_size_costs": _cost_table(v, sorted({*COST_BLOCK_SIZES, block_size})),
        "reference_losses": {
            name: {"nats": nats, "bits": nats / math.log(2)} for name, nats in losses.items()
        },
    }


def _aligned(label: str, cells: list[str], width: int) -> str:
    return f"  {label:<6}" + "".join(c.rjust(width) for c in cells)


def format_description(d: dict[str, Any]) -> str:
    """A human-readable report of describe()'s dict."""
    n = d["length"]
    lines = [
        f"corpus          {d['corpus']}  (sha256 {d['sha256'][:16]}...)",
        f"length          {n:,} characters",
        f"vocab_size      {d['vocab_size']}",
        f"characters      {' '.join(repr(c) for c in d['chars'])}",
        f"split           train {d['n_train']:,} / val {d['n_val']:,} characters "
        f"(contiguous; the last {d['val_fraction']:.0%} is validation)",
        "",
        f"most frequent characters (of {n:,}):",
    ]
    counts = d["char_counts"]
    for ch, c in list(counts.items())[:TOP_CHARS]:
        lines.append(f"  {ch!r:<6} {c:>9,}  {c / n:6.2%}")
    lines.append("all character counts:")
    cells = [f"{ch!r}:{c}" for ch, c in counts.items()]
    for i in range(0, len(cells), 8):
        lines.append("  " + "  ".join(f"{cell:<13}" for cell in cells[i : i + 8]).rstrip())

    b = d["batch"]
    x_cells = [repr(ch) for ch in b["x_text"]]
    y_cells = [repr(ch) for ch in b["y_text"]]
    width = max(len(c) for c in x_cells + y_cells + [str(max(b["x_ids"] + b["y_ids"]))]) + 2
    lines += [
        "",
        f"one DataLoader batch (batch_size={b['batch_size']}, block_size={b['block_size']}, "
        "shuffled windows of the train split):",
        f"  x: shape {tuple(b['x_shape'])} {b['dtype']}   inputs, block_size consecutive ids",
        f"  y: shape {tuple(b['y_shape'])} {b['dtype']}   targets: x shifted left by one, "
        f"y[t] = next character after x[t] (holds: {b['y_is_x_shifted_by_one']})",
        "  row 0, aligned (the model reads x[:t+1] and must predict y[t]):",
        _aligned("t", [str(i) for i in range(len(x_cells))], width),
        _aligned("x", x_cells, width),
        _aligned("y", y_cells, width),
        _aligned("x ids", [str(i) for i in b["x_ids"]], width),
        _aligned("y ids", [str(i) for i in b["y_ids"]], width),
        "",
        "block_size is the context length T: the most characters the model sees when",
        "predicting the next one; it fixes the position-embedding table (T x n_embd) and the",
        "sequence length of every training example. Per sequence, attention scores cost",
        "~T^2 (every position against every earlier one) while the MLP and projections cost",
        "~T; per token that is 12*L*C*T (attention, grows with T) + 6N (constant).",
        "Training FLOPs per token of the default model (n_layer=4, n_head=4, n_embd=128):",
        f"  {'T':>5} {'params':>9} {'12LCT':>11} {'6N (rest)':>11} {'total':>11} "
        f"{'attn %':>7} {'per sequence':>14}",
    ]
    for r in d["block_size_costs"]:
        lines.append(
            f"  {r['block_size']:>5} {r['n_params']:>9,} {r['attention_flops_per_token']:>11,} "
            f"{r['other_flops_per_token']:>11,} {r['flops_per_token']:>11,} "
            f"{r['attention_share']:>7.1%} {r['flops_per_sequence']:>14.3e}"
        )
    lines += [
        "",
        "reference losses per character (a model should beat these on val):",
        f"  {'':<28} {'nats':>7} {'bits':>7}",
    ]
    for name, value in d["reference_losses"].items():
        label = LOSS_LABELS.get(name, name)
        lines.append(f"  {label:<28} {value['nats']:>7.4f} {value['bits']:>7.4f}")
    return "\n".join(lines)


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=prog("python -m chargpt.describe", "chargpt-describe"),
        description="Task (a): corpus facts, one batch, costs, baselines.",
    )
    p.add_argument(
        "corpus", help="shakespeare, synthetic, lexicon, or the path of a UTF-8 text file"
    )
    p.add_argument("--block-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 on success, 2 on bad input (one line on stderr)."""
    try:
        args = _parser().parse_args(argv)
        d = describe(
            args.corpus,
            block_size=args.block_size,
            batch_size=args.batch_size,
            val_fraction=args.val_fraction,
            seed=args.seed,
        )
    except SystemExit as exc:  # --help (0), or a usage error already printed (2)
        return int(exc.code or 0)
    except (CorpusError, ValueError) as exc:
        print(f"chargpt.describe: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
