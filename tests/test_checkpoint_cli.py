"""The checkpoint CLIs (sample, evaluate): --device and inconsistent checkpoints are one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from chargpt import evaluate, sample
from chargpt.checkpoint import CheckpointError, load_checkpoint
from chargpt.config import RunConfig
from chargpt.train import train

MAINS: dict[str, Callable[[list[str]], int]] = {"sample": sample.main, "evaluate": evaluate.main}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, small_text: str) -> Path:
    """One tiny trained checkpoint for the module (its corpus beside it)."""
    root = tmp_path_factory.mktemp("ckpt")
    corpus = root / "small.txt"
    corpus.write_text(small_text, encoding="utf-8")
    run = RunConfig.from_dict(
        {
            "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
            "train": {"batch_size": 8, "eval_interval": 5, "eval_iters": 1, "threads": 1},
            "budget": {"max_steps": 5},
            "data": {"corpus": str(corpus)},
        }
    )
    train(run, out_dir=root)
    return root / "ckpt.pt"


def call(command: str, args: list[str]) -> int:
    """The CLI's exit code, whether main() returns it or argparse exits with it (bad flags)."""
    try:
        return MAINS[command](args)
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        return exc.code


def one_error_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# cuda:99 is a device no machine here has, with or without a GPU
@pytest.mark.parametrize("device", ["foo", "cuda:99", "meta"])
@pytest.mark.parametrize("command", sorted(MAINS))
def test_a_bad_device_names_the_flag_not_the_checkpoint(
    ckpt: Path, command: str, device: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_error_line(capsys, call(command, [str(ckpt), "--device", device]))
    assert "--device" in line and repr(device) in line, line
    assert str(ckpt) not in line and "checkpoint" not in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", sorted(MAINS))
def test_cuda_without_a_gpu_says_so(
    ckpt: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_error_line(capsys, call(command, [str(ckpt), "--device", "cuda"]))
    assert "--device" in line and "torch.cuda.is_available() is False" in line, line
    assert str(ckpt) not in line, line


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_a_device_this_machine_has_samples(
    ckpt: Path, device: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sample.main([str(ckpt), "--device", device, "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("=== temperature 0.8")


def edit_vocab(good: Path, out: Path, vocab: Callable[[list[str]], list[str]]) -> Path:
    payload = torch.load(good, weights_only=True)
    payload["vocab"] = vocab(payload["vocab"])
    torch.save(payload, out)
    return out


VOCAB_EDITS: dict[str, tuple[Callable[[list[str]], list[str]], str]] = {
    "shorter": (lambda v: v[:2], "vocabulary of 2 characters"),
    "longer": (lambda v: [*v, "\u00e9", "\u00fc"], "characters"),
    # same length, another order: the tokenizer would sort it and map ids to other characters
    "unsorted": (lambda v: v[::-1], "not sorted"),
    "repeated": (lambda v: [v[0], *v[1:-1], v[0]], "twice"),
    "not a character": (lambda v: ["ab", *v[1:]], "'ab'"),
}


@pytest.mark.parametrize("edit", sorted(VOCAB_EDITS))
def test_a_vocabulary_that_does_not_fit_the_model_is_refused(
    ckpt: Path, tmp_path: Path, edit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    change, expected = VOCAB_EDITS[edit]
    bad = edit_vocab(ckpt, tmp_path / "bad.pt", change)
    with pytest.raises(CheckpointError, match="vocab") as info:
        load_checkpoint(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: ") and expected in message, message
    for command in MAINS:
        line = one_error_line(capsys, call(command, [str(bad)]))
        assert line == f"error: {message}", (command, line)


@pytest.mark.slow
def test_the_installed_script_names_itself_in_usage_lines(ckpt: Path) -> None:
    bin_dir = Path(sys.executable).parent
    for script, module in (("chargpt-sample", "sample"), ("chargpt-evaluate", "evaluate")):
        usage = subprocess.run(
            [str(bin_dir / script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert usage.stdout.startswith(f"usage: {script} "), usage
        installed = subprocess.run(
            [str(bin_dir / script), str(ckpt), "--device", "foo"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert installed.returncode == 2
        assert installed.stderr.startswith(f"{script}: error: argument --device"), installed
        as_module = subprocess.run(
            [sys.executable, "-m", f"chargpt.{module}", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert as_module.stdout.startswith(f"usage: python -m chargpt.{module} "), as_module
