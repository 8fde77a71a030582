"""Whole-split evaluation: the windows, the loss they give, and the CLI."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from chargpt import evaluate, sample
from chargpt.checkpoint import load_checkpoint
from chargpt.config import ModelConfig, RunConfig
from chargpt.evaluate import corpus_split, split_loss, windows
from chargpt.model import GPT
from chargpt.train import train


def test_windows_cover_the_split_once_with_shifted_targets() -> None:
    ids = torch.arange(23)
    x, y = windows(ids, 5)  # (23 - 1) // 5 = 4 whole windows
    assert x.shape == y.shape == (4, 5)
    assert torch.equal(x.flatten(), torch.arange(20))
    assert torch.equal(y, x + 1)  # each target is the next character
    with pytest.raises(ValueError, match="too short for one window"):
        windows(torch.arange(5), 5)


def test_split_loss_is_the_mean_over_every_position() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    ids = torch.randint(11, (8 * 13 + 5,), dtype=torch.uint8)
    # batch 5 over 13 windows: the last batch is smaller and must weigh by its size
    loss, n = split_loss(model, ids, batch_size=5)
    x, y = windows(ids, 8)
    with torch.no_grad():
        logits, _ = model(x.long())
    expected = F.cross_entropy(logits.reshape(-1, 11), y.long().reshape(-1)).item()
    assert n == 13 * 8
    assert loss == pytest.approx(expected, rel=1e-5)
    assert model.training  # left as it was found


@pytest.mark.slow
def test_cli_scores_a_fresh_checkpoint(text_file: Path, tmp_path: Path) -> None:
    run = RunConfig.from_dict(
        {
            "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
            "train": {"batch_size": 8, "eval_interval": 10, "eval_iters": 2, "threads": 1},
            "budget": {"max_steps": 20},
            "data": {"corpus": str(text_file)},
        }
    )
    train(run, out_dir=tmp_path)
    ckpt = tmp_path / "ckpt.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "chargpt.evaluate", str(ckpt)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    model, tokenizer, _, _ = load_checkpoint(ckpt)
    expected, n = split_loss(model, corpus_split(str(text_file), tokenizer, 0.1, "val"))
    assert proc.stdout.startswith(f"val loss {expected:.4f} nats/char over {n:,} characters")
    assert expected < math.log(tokenizer.vocab_size)  # it learnt something

    # a corpus with characters the model never saw: one line, exit 2
    other = tmp_path / "other.txt"
    other.write_text("\u00e9" * 200, encoding="utf-8")
    bad = subprocess.run(
        [sys.executable, "-m", "chargpt.evaluate", str(ckpt), "--corpus", str(other)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "not in the vocabulary" in bad.stderr


@pytest.mark.slow
def test_cli_rejects_a_missing_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chargpt.evaluate", str(tmp_path / "no.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'no.pt'}: no such checkpoint file"


def damage(kind: str, good: Path, out: Path) -> Path:
    """A checkpoint as a broken copy, a partial download or a foreign file leaves it."""
    data = good.read_bytes()
    if kind == "truncated":
        out.write_bytes(data[: len(data) // 2])
    elif kind == "nan_bytes":  # tensor bytes overwritten (0xff: NaN); torch.load loads them
        mid = len(data) // 2
        out.write_bytes(data[:mid] + b"\xff" * 64 + data[mid + 64 :])
    elif kind == "foreign":
        torch.save({"hello": torch.zeros(1)}, out)
    elif kind == "wrong_weights":  # a chargpt checkpoint whose weights miss a tensor
        payload = torch.load(good, weights_only=True)
        payload["model"].pop(next(iter(payload["model"])))
        torch.save(payload, out)
    return out


@pytest.mark.parametrize("kind", ["truncated", "nan_bytes", "foreign", "wrong_weights"])
def test_a_damaged_checkpoint_is_one_line_and_exit_2(
    kind: str, text_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both CLIs' main() in this process (the entry points themselves run in the tests
    above): stderr is one line, and no warning is raised either (a torch warning would be a
    second line on a terminal)."""
    run = RunConfig.from_dict(
        {
            "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
            "train": {"batch_size": 8, "eval_interval": 5, "eval_iters": 1, "threads": 1},
            "budget": {"max_steps": 5},
            "data": {"corpus": str(text_file)},
        }
    )
    train(run, out_dir=tmp_path)
    bad = damage(kind, tmp_path / "ckpt.pt", tmp_path / "damaged.pt")
    for module, main in (("evaluate", evaluate.main), ("sample", sample.main)):
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main([str(bad)])
        out, err = capsys.readouterr()
        assert code == 2, (module, err)
        assert out == "" and [str(w.message) for w in caught] == [], module
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (module, err)
        assert str(bad) in lines[0], (module, lines[0])
