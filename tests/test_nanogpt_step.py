"""bench.nanogpt_step without nanoGPT itself (chargpt does not ship it): the harness runs
against a checkout whose model.py puts chargpt's GPT behind nanoGPT's interface (GPT,
GPTConfig, configure_optimizers), and refuses folders that hold no usable model.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import nanogpt_step
from chargpt import measure

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "bench.nanogpt_step"]  # run from ROOT, as its usage says

# nanoGPT's interface over chargpt's model and torch's AdamW; it prints, as nanoGPT's
# configure_optimizers does, and the harness must keep that off its own output.
STAND_IN = """
from dataclasses import dataclass, asdict
import torch
from chargpt.config import ModelConfig
from chargpt.model import GPT as CharGPT

@dataclass
class GPTConfig:
    block_size: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    bias: bool

class GPT(CharGPT):
    def __init__(self, config):
        super().__init__(ModelConfig(**asdict(config)))

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        print(f"num decayed parameter tensors: {len(list(self.parameters()))}")
        return torch.optim.AdamW(
            self.parameters(), lr=learning_rate, betas=betas, weight_decay=weight_decay
        )
"""


def stand_in_checkout(folder: Path) -> Path:
    """A folder holding STAND_IN as its model.py, as a nanoGPT checkout would."""
    checkout = folder / "nanoGPT"
    checkout.mkdir()
    (checkout / "model.py").write_text(STAND_IN)
    return checkout


def tiny_recipe(folder: Path, corpus: Path, block_size: int = 16, batch_size: int = 4) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(
        "name: tiny\n"
        "base:\n"
        f"  model: {{n_layer: 1, n_head: 2, n_embd: 16, block_size: {block_size}}}\n"
        f"  train: {{batch_size: {batch_size}, device: cpu, threads: 1, save_checkpoint: false}}\n"
        "  budget: {max_steps: 10}\n"
        f"  data: {{corpus: {corpus}}}\n"
    )
    return path


def test_round_ratios_are_medians_of_same_round_ratios() -> None:
    times = {"nanoGPT": [10.0, 12.0, 30.0], "chargpt": [8.0, 12.0, 20.0]}
    out = nanogpt_step.round_ratios(times, "nanoGPT")
    assert out["nanoGPT"] == {
        "ms_per_step": 12.0,
        "speedup": 1.0,
        "speedup_min": 1.0,
        "speedup_max": 1.0,
    }
    # rounds: 10/8 = 1.25, 12/12 = 1, 30/20 = 1.5; the medians of the times would say 1.0
    assert out["chargpt"] == {
        "ms_per_step": 12.0,
        "speedup": 1.25,
        "speedup_min": 1.0,
        "speedup_max": 1.5,
    }


@pytest.mark.slow
def test_cli_times_both_steps_in_alternating_rounds(
    tmp_path: Path, text_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkout = stand_in_checkout(tmp_path)
    out = tmp_path / "out.json"
    recipe = tiny_recipe(tmp_path, text_file)
    args = [str(checkout), "--rounds", "3", "--steps", "2", "--json", str(out)]
    assert nanogpt_step.main([*args, "--recipe", str(recipe)]) == 0
    stdout, stderr = capsys.readouterr()
    assert "num decayed" not in stdout + stderr
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| nanoGPT", "| chargpt"]
    assert stderr.count("round ") == 3  # a progress line per round
    report = json.loads(out.read_text())
    assert report["rounds"] == 3 and report["steps_per_block"] == 2 and report["threads"] == 1
    assert {k: len(v) for k, v in report["ms_per_step"].items()} == {"nanoGPT": 3, "chargpt": 3}
    assert report["summary"]["nanoGPT"]["speedup"] == 1.0
    ours = report["summary"]["chargpt"]
    assert ours["speedup_min"] <= ours["speedup"] <= ours["speedup_max"]
    assert report["machine"]["cpu_flags"] == measure.cpu_flags()


@pytest.mark.slow
def test_cli_times_the_compiled_step_as_a_third_program(
    tmp_path: Path, text_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkout = stand_in_checkout(tmp_path)
    out = tmp_path / "out.json"
    # tests.test_train.tiny_run's shapes, which test_compile_policy compiles too: one graph
    # for inductor's cache, whichever test compiles it first
    recipe = tiny_recipe(tmp_path, text_file, block_size=8, batch_size=8)
    args = [str(checkout), "--rounds", "2", "--steps", "2", "--json", str(out), "--compiled"]
    assert nanogpt_step.main([*args, "--recipe", str(recipe)]) == 0
    stdout, stderr = capsys.readouterr()
    rows = [line.split(" | ")[0] for line in stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| nanoGPT", "| chargpt", "| chargpt compiled"]
    assert "chargpt compiled: compile_s" in stderr
    report = json.loads(out.read_text())
    assert report["compile_s"] > 0
    assert len(report["ms_per_step"]["chargpt compiled"]) == 2


@pytest.mark.slow
def test_the_entry_point_runs(tmp_path: Path) -> None:
    """python -m bench.nanogpt_step, as its usage says (the other tests call main())."""
    proc = subprocess.run(
        [*CLI, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {tmp_path} is not a nanoGPT checkout (no model.py)\n"


@pytest.mark.parametrize(
    ("model_py", "says"),
    [
        (None, "is not a nanoGPT checkout (no model.py)"),
        ("raise ImportError('no torch here')", "ImportError: no torch here"),
        ("class GPTConfig: pass\n", "defines no GPT"),
    ],
)
def test_cli_refuses_a_checkout_without_a_usable_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_py: str | None, says: str
) -> None:
    if model_py is not None:
        (tmp_path / "model.py").write_text(model_py)
    assert nanogpt_step.main([str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and says in err


@pytest.mark.parametrize("flag", ["--rounds", "--steps"])
def test_cli_refuses_zero_rounds_or_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        nanogpt_step.main([str(tmp_path), flag, "0"])
    assert exc.value.code == 2 and f"{flag} must be >= 1, got 0" in capsys.readouterr().err


def test_cli_says_when_nanogpts_model_cannot_be_built(
    tmp_path: Path, text_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model.py").write_text(
        "class GPTConfig:\n"
        "    def __init__(self, **kw): pass\n"
        "class GPT:\n"
        "    def __init__(self, config): raise AssertionError('n_embd % n_head != 0')\n"
    )
    recipe = tiny_recipe(tmp_path, text_file)
    assert nanogpt_step.main([str(tmp_path), "--recipe", str(recipe)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err == "error: nanoGPT's GPT or optimizer: AssertionError: n_embd % n_head != 0\n"
