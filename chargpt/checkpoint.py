"""Checkpoints (weights + run config + vocabulary) and resumable training states (state.pt).

Both load with torch.load(..., weights_only=True): plain containers, numbers and tensors.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from chargpt.config import ConfigError, RunConfig
from chargpt.data import CharTokenizer
from chargpt.files import atomic_open
from chargpt.model import GPT

FORMAT = "chargpt-checkpoint-v1"
STATE_FORMAT = "chargpt-state-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a chargpt checkpoint."""


def device_option(name: str) -> torch.device:
    """argparse type of the checkpoint CLIs' --device: a device this machine has (auto, cpu,
    cuda, cuda:N, mps), checked before any file is read, so that torch.load never blames the
    checkpoint for a device that is missing."""
    if name == "auto":  # cuda, then mps, then cpu: the study configs' train.device: auto
        from chargpt.measure import resolve_device

        return resolve_device("auto")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's text lists two dozen device types chargpt never runs on
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{name!r} is not auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{name!r} is not available here (torch.cuda.is_available() is False)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(
                f"{name!r} is not available here ({count} CUDA devices)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(
            f"{name!r} is not available here (torch.backends.mps.is_available() is False)"
        )
    return device


def vocab_problem(vocab: Any, vocab_size: int) -> str:
    """What is wrong with a stored vocabulary for a model of vocab_size ('' if nothing).

    CharTokenizer sorts and de-duplicates what it is given, so a vocabulary saved in another
    order, or with a repeat, would load and silently map ids to other characters; one of
    another length would decode ids past its end (or miss the model's last ones)."""
    if not isinstance(vocab, list):
        return f"vocabulary is a {type(vocab).__name__}, not a list of characters"
    for ch in vocab:
        if not isinstance(ch, str) or len(ch) != 1:
            return f"vocabulary entry {ch!r} is not one character"
    if len(set(vocab)) != len(vocab):
        twice = next(ch for i, ch in enumerate(vocab) if ch in vocab[:i])
        return f"vocabulary holds {twice!r} twice"
    if vocab != sorted(vocab):
        return "vocabulary not sorted (its ids would decode to other characters)"
    if len(vocab) != vocab_size:
        return f"vocabulary of {len(vocab)} characters for a model of vocab_size {vocab_size}"
    return ""


def save_checkpoint(
    path: Path,
    model: GPT,
    run: RunConfig,
    tokenizer: CharTokenizer,
    step: int,
    val_loss: float | None,
) -> None:
    """Write atomically, so a crash never leaves half a checkpoint."""
    # Only plain containers, numbers, strings and tensors: loadable with weights_only=True.
    payload = {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": run.to_dict(),
        "model_config": model.config.to_dict(),
        "vocab": list(tokenizer.chars),
        "step": step,
        "val_loss": val_loss,
    }
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[GPT, CharTokenizer, RunConfig, dict[str, Any]]:
    """Model (in eval mode), tokenizer, run config and the raw payload of a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # onto the CPU first: the file's readability must not depend on the device asked for
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        # the type names the failure when torch's text alone does not (a junk file: "174812789")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint ({why})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a chargpt checkpoint (no format {FORMAT!r})")
    try:
        run = RunConfig.from_dict(payload["config"])
        model_config = type(run.model).from_dict(payload["model_config"])
        problem = vocab_problem(payload["vocab"], model_config.vocab_size)
        if problem:
            raise ValueError(problem)
        tokenizer = CharTokenizer(payload["vocab"])
        model = GPT(model_config)
        model.load_state_dict(payload["model"])
    except (KeyError, ConfigError, RuntimeError, ValueError) as exc:
        # one line: torch's state-dict errors span several
        raise CheckpointError(
            f"{path}: damaged checkpoint ({' '.join(str(exc).split())})"
        ) from None
    # torch.load does not notice overwritten tensor bytes (tests/test_evaluate.py shows it),
    # but bytes turned to NaN or inf are caught here rather than scored or sampled from.
    bad = [name for name, t in model.state_dict().items() if not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: damaged checkpoint (non-finite values in {bad[0]})")
    model.to(device).eval()
    return model, tokenizer, run, payload


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a training state (Trainer.state_dict()) atomically: a kill never leaves half."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": STATE_FORMAT, **state}, f)


def load_state(path: Path, run_id: str) -> dict[str, Any]:
    """A state written by save_state for this run; CheckpointError if unreadable or foreign."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable training state ({first})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a chargpt training state (no {STATE_FORMAT!r})")
    if state.get("run_id") != run_id:
        raise CheckpointError(f"{path}: belongs to run {state.get('run_id')}, not {run_id}")
    return state
