"""compile: auto: the decision rule on constructed inputs, the config, and what a run records."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from chargpt import compiling
from chargpt.compiling import choose_compile, predicted_eager_s
from chargpt.config import ConfigError, TrainConfig
from chargpt.train import train
from tests.test_train import tiny_run


def test_a_short_run_stays_eager_and_a_long_one_compiles() -> None:
    cost, gain = compiling.COMPILE_S["cpu"], compiling.STEP_GAIN["cpu"]
    break_even = cost / (1 - 1 / gain)  # eager seconds at which compiling saves its own cost
    short, why_short = choose_compile("auto", "cpu", 0.5 * break_even)
    long, why_long = choose_compile("auto", "cpu", 2 * break_even)
    assert (short, long) == (False, True)
    assert why_short.startswith("auto: eager") and why_long.startswith("auto: compiled")


def test_true_and_false_are_kept_and_unknown_devices_stay_eager() -> None:
    assert choose_compile(True, "cpu", 0.0) == (True, "train.compile is true")
    assert choose_compile(False, "cuda", math.inf) == (False, "train.compile is false")
    assert choose_compile("auto", "mps", math.inf)[0] is False


def test_the_predicted_eager_time_is_the_shorter_of_steps_and_seconds() -> None:
    mfu = compiling.EAGER_MFU["cpu"]
    # 1000 steps of 1 GFLOP at 10 GFLOP/s and the assumed MFU
    by_steps = 1000 * 1e9 / (mfu * 1e10)
    assert predicted_eager_s("cpu", 1000, None, 1e9, 1e10) == pytest.approx(by_steps)
    assert predicted_eager_s("cpu", 1000, 5.0, 1e9, 1e10) == 5.0
    assert predicted_eager_s("cpu", None, None, 1e9, 1e10) == math.inf
    # a time-only budget: auto decides on the seconds
    assert choose_compile("auto", "cpu", predicted_eager_s("cpu", None, 1e6, 1e9, 1e10))[0]


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_compile_takes_true_false_or_auto(value: bool | str) -> None:
    assert TrainConfig.from_dict({"compile": value}).compile == value


@pytest.mark.parametrize("value", ["yes", 1, 0.5, None])
def test_any_other_compile_value_is_an_error_naming_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"train\.compile"):
        TrainConfig.from_dict({"compile": value})


def test_a_run_with_compile_auto_records_its_choice(text_file: Path) -> None:
    result = train(tiny_run(str(text_file), train={"compile": "auto"}))  # 20 tiny steps
    assert result.status == "ok"
    assert result.compiled is False and result.compile_s == 0.0
    assert result.compile_reason.startswith("auto: eager")
    plain = train(tiny_run(str(text_file), train={"compile": False}))
    assert plain.compiled is False and plain.compile_reason == "train.compile is false"


@pytest.mark.slow
def test_auto_compiles_when_compiling_costs_nothing(
    text_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(compiling.COMPILE_S, "cpu", 0.0)  # any saving now pays
    result = train(tiny_run(str(text_file), train={"compile": "auto"}))
    assert result.status == "ok" and result.compiled is True and result.compile_s > 0
    assert result.compile_reason.startswith("auto: compiled")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["/no/such/recipe.yaml"], "no such file"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_compile_gain_bad_input_is_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import compile_gain

    assert compile_gain.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
