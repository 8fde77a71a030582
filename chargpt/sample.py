"""Samples from a trained model: helpers for temperatures x prompts, and the sampling CLI.

    python -m chargpt.sample CKPT --temperature 0.8 --temperature 1.0 \
        --prompt "ROMEO:" --prompt "\n" --max-new-tokens 300 --seed 0
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from chargpt.cli import ArgumentParser, prog
from chargpt.config import SampleConfig
from chargpt.data import CharTokenizer
from chargpt.model import GPT


def generate(
    model: GPT,
    tokenizer: CharTokenizer,
    prompt: str,
    temperature: float,
    max_new_tokens: int,
    seed: int = 0,
    top_k: int | None = None,
) -> str:
    """The prompt's continuation (without the prompt), reproducible for a given seed."""
    if not prompt:
        raise ValueError("prompt must hold at least one character")
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = model.sample(
        idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator
    )
    return tokenizer.decode(out[0, idx.shape[1] :])


def sample_grid(model: GPT, tokenizer: CharTokenizer, cfg: SampleConfig) -> list[dict[str, Any]]:
    """One row per (temperature, prompt): the rows of samples.csv."""
    rows = []
    for temperature in cfg.temperatures:
        for prompt in cfg.prompts:
            text = generate(
                model,
                tokenizer,
                prompt,
                temperature,
                cfg.max_new_tokens,
                seed=cfg.seed,
                top_k=cfg.top_k,
            )
            rows.append({"temperature": temperature, "prompt": prompt, "text": text})
    return rows


def _unescape(prompt: str) -> str:
    # Shells make a newline awkward to type: accept \n and \t written out.
    return prompt.replace("\\n", "\n").replace("\\t", "\t")


def main(argv: list[str] | None = None) -> int:
    from chargpt.checkpoint import CheckpointError, device_option, load_checkpoint

    parser = ArgumentParser(
        prog=prog("python -m chargpt.sample", "chargpt-sample"),
        description="Print samples from a chargpt checkpoint.",
    )
    parser.add_argument("checkpoint", help="path to a ckpt.pt written by training")
    parser.add_argument(
        "--temperature",
        type=float,
        action="append",
        help="sampling temperature > 0 (repeat for several; default 0.8)",
    )
    parser.add_argument(
        "--prompt",
        action="append",
        help=r"text to continue (repeat for several; \n for a newline; "
        "default a newline)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        type=device_option,
        default="cpu",
        help="auto, cpu, cuda[:N] or mps (default cpu)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = SampleConfig(
            temperatures=tuple(args.temperature or [0.8]),
            prompts=tuple(_unescape(p) for p in args.prompt or ["\n"]),
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            top_k=args.top_k,
        )
        model, tokenizer, run, _ = load_checkpoint(args.checkpoint, device=args.device)
        rows = sample_grid(model, tokenizer, cfg)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for row in rows:
        print(f"=== temperature {row['temperature']:g}, prompt {row['prompt']!r} ===")
        print(row["prompt"] + row["text"])
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
