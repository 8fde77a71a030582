"""bench.compare_nanogpt without nanoGPT itself: its data files, log parsing, checkpoints."""

from __future__ import annotations

import dataclasses
import pickle
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from compare_rows import row  # tests/ is on sys.path (pytest's default import mode)

from bench import compare_nanogpt as compare
from chargpt.config import DataConfig, ModelConfig
from chargpt.data import Splits, load_splits
from chargpt.model import GPT

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "bench.compare_nanogpt"]  # run from ROOT, as its usage says


def splits_of(text: str, path: Path) -> Splits:
    """The splits of text (saved at path) as compare_nanogpt loads tiny shakespeare's."""
    path.write_text(text, encoding="utf-8")
    return load_splits(dataclasses.replace(compare.NANOGPT_DATA, corpus=str(path)))


def test_dataset_files_follow_the_prepare_format(tmp_path: Path) -> None:
    text = "to be, or not to be: that is the question.\n" * 5
    splits = splits_of(text, tmp_path / "corpus.txt")
    files = compare.nanogpt_data(splits)
    chars = sorted(set(text))
    train = np.frombuffer(files["train.bin"], dtype=np.uint16)
    val = np.frombuffer(files["val.bin"], dtype=np.uint16)
    n_train = int(len(text) * 0.9)
    assert len(train) == n_train and len(val) == len(text) - n_train
    assert "".join(chars[i] for i in train) == text[:n_train]
    assert "".join(chars[i] for i in val) == text[n_train:]
    meta = pickle.loads(files["meta.pkl"])
    assert meta["vocab_size"] == len(chars) and meta["itos"][0] == chars[0]
    assert meta["stoi"] == {c: i for i, c in enumerate(chars)}
    other_split = load_splits(DataConfig(corpus=str(tmp_path / "corpus.txt"), val_fraction=0.2))
    with pytest.raises(ValueError, match="first 90%"):
        compare.nanogpt_data(other_split)

    compare.install_data(tmp_path, splits)
    folder = tmp_path / "data" / "shakespeare_char"
    assert (folder / "val.bin").read_bytes() == files["val.bin"]
    compare.install_data(tmp_path, splits)  # the same files again: accepted as they are
    changed = splits_of(text.replace("t", "x"), tmp_path / "changed.txt")
    with pytest.raises(compare.CompareError, match="train.bin exists but differs"):
        compare.install_data(tmp_path, changed)

    # a foreign val.bin and no train.bin: refused before anything is written
    other = tmp_path / "other"
    (other / "data" / "shakespeare_char").mkdir(parents=True)
    (other / "data" / "shakespeare_char" / "val.bin").write_bytes(b"\0\1")
    with pytest.raises(compare.CompareError, match="val.bin exists but differs"):
        compare.install_data(other, splits)
    assert [p.name for p in (other / "data" / "shakespeare_char").iterdir()] == ["val.bin"]


LOG = "\n".join(
    [
        "step 0: train loss 4.1676, val loss 4.1649",
        "iter 0: loss 4.1901, time 900.00ms, mfu -100.00%",  # includes the first evaluation
        *[f"iter {i}: loss 3.0000, time {30 + i % 3}.00ms, mfu 0.01%" for i in range(1, 250)],
        "step 250: train loss 2.4293, val loss 2.4447",
        "iter 250: loss 2.5000, time 700.00ms, mfu 0.01%",  # includes an evaluation
        "iter 251: loss 2.4000, time 31.00ms, mfu 0.01%",
    ]
)


def test_tokens_per_s_charges_evaluating_iterations_the_median() -> None:
    ms = compare.nanogpt_iter_ms(LOG)
    assert len(ms) == 252 and ms[0] == 900.0 and ms[250] == 700.0
    plain = [30 + i % 3 for i in range(1, 250)] + [31]
    expected_s = (sum(plain) + 2 * statistics.median(plain)) / 1e3
    assert compare.nanogpt_tokens_per_s(ms, 250, 768) == pytest.approx(252 * 768 / expected_s)
    assert compare.nanogpt_val_loss(LOG) == 2.4447
    # a diverged last evaluation is reported as such, not replaced by an earlier one
    diverged = LOG + "\nstep 500: train loss nan, val loss nan"
    assert np.isnan(compare.nanogpt_val_loss(diverged))
    with pytest.raises(compare.CompareError, match="no evaluation line"):
        compare.nanogpt_val_loss("iter 1: loss 3.0, time 3.0ms, mfu 0.01%")


def test_a_nanogpt_checkpoint_loads_as_a_chargpt_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11, bias=False)
    model = GPT(cfg).eval()
    # nanoGPT's layout: the same parameter names, a compiled model's prefix, the causal mask
    # stored as attn.bias in its non-flash path, and its own bookkeeping beside the weights.
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    for i in range(cfg.n_layer):
        state[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 8, 8))
    torch.save(
        {
            "model": state,
            "iter_num": 5,
            "best_val_loss": torch.tensor(2.0),
            "model_args": {
                "n_layer": 2,
                "n_head": 2,
                "n_embd": 16,
                "block_size": 8,
                "bias": False,
                "vocab_size": 11,
                "dropout": 0.0,
            },
            "config": {"batch_size": 12, "device": "cpu"},
        },
        tmp_path / "ckpt.pt",
    )
    loaded = compare.load_nanogpt_checkpoint(tmp_path / "ckpt.pt")
    idx = torch.randint(11, (3, 8))
    assert torch.equal(loaded(idx)[0], model(idx)[0])


@pytest.mark.slow
def test_cli_refuses_a_folder_that_is_not_a_checkout(tmp_path: Path) -> None:
    """Through the real entry point (python -m), once; the other refusals call main()."""
    proc = subprocess.run(
        [*CLI, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "is not a nanoGPT checkout" in proc.stderr


def test_each_child_gets_its_own_wall_time_and_peak_rss(tmp_path: Path) -> None:
    big = [sys.executable, "-c", "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    small = [sys.executable, "-c", "print('hello')"]
    wall_big, rss_big, code_big = compare.run_measured(big, tmp_path, tmp_path / "big.log")
    wall_small, rss_small, code = compare.run_measured(small, tmp_path, tmp_path / "small.log")
    assert code_big == 0 and code == 0 and wall_big > 0 and wall_small > 0
    assert rss_big > 200 > rss_small  # the second child is not charged the first one's peak
    assert (tmp_path / "small.log").read_text() == "hello\n"
    fail = [sys.executable, "-c", "raise SystemExit(3)"]
    assert compare.run_measured(fail, tmp_path, tmp_path / "fail.log")[2] == 3


@pytest.mark.parametrize("steps", ["300", "100", "0"])
def test_cli_refuses_steps_nanogpt_would_not_checkpoint_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], steps: str
) -> None:
    (tmp_path / "train.py").write_text("")
    (tmp_path / "configurator.py").write_text("")
    with pytest.raises(SystemExit) as exc:
        compare.main([str(tmp_path), "--steps", steps])
    assert exc.value.code == 2
    assert "--steps must be a positive multiple of 250" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing written


def test_the_table_says_which_runs_compiled_and_gives_same_round_ratios() -> None:
    rows = [
        row(1, "nanoGPT", 10_000),
        row(1, "chargpt manual", 15_000, compile_s=2.94),
        row(2, "nanoGPT", 20_000),
        row(2, "chargpt manual", 26_000, compile_s=3.0),
    ]
    text = compare.table(rows, flops_per_token=1e6)
    lines = text.splitlines()
    assert lines[2].startswith("| 1 | nanoGPT | eager | 10,000 | 10.0 |")
    assert lines[3].startswith("| 1 | chargpt manual | 2.9 | 15,000 | 15.0 |")
    # medians 15,000 and 20,500 against nanoGPT's 15,000; same-round ratios 1.5 and 1.3
    assert lines[-2] == "- nanoGPT: median 15,000 tokens/s"
    # two rounds: [min, max] would hold the median with probability 1 - 2/4, too little
    assert lines[-1] == (
        "- chargpt manual: median 20,500 tokens/s (1.37x nanoGPT's median; "
        "same-round ratios 1.50, 1.30; median same-round ratio 1.40 over 2 rounds, "
        "too few for an interval)"
    )
