"""compile: auto: the decision rule on constructed inputs, the config, and what a run records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from chargpt import compile_record, compile_step, compiling
from chargpt.compile_record import graph_key, past_compile, record_compile
from chargpt.compile_step import measure_step_gain, time_forward_backward, warm_up_compile
from chargpt.compiling import choose_compile, predicted_eager_s
from chargpt.config import ConfigError, TrainConfig
from chargpt.run_setup import setup
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
    assert predicted_eager_s(1000, None, 0.02) == pytest.approx(20.0)  # 1000 steps of 20 ms
    assert predicted_eager_s(1000, 5.0, 0.02) == 5.0
    assert predicted_eager_s(None, None, 0.02) == math.inf
    # a time-only budget: auto decides on the seconds
    assert choose_compile("auto", "cpu", predicted_eager_s(None, 1e6, math.nan))[0]


def test_the_eager_step_is_timed_without_a_trace(text_file: Path) -> None:
    s = setup(tiny_run(str(text_file), model={"dropout": 0.1}, train={"compile": False}))
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = time_forward_backward(s.model, s.evaluator.train[0], s.train_step.autocast)
    assert 0 < seconds < 60
    assert all(torch.equal(v, before[k]) for k, v in s.model.state_dict().items())
    assert all(p.grad is None for p in s.model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_auto_times_the_model_once_when_one_step_settles_it(
    text_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []

    def timed(*args: object) -> float:
        calls.append(time_forward_backward(*args))  # type: ignore[arg-type]
        return calls[-1]

    monkeypatch.setattr(compile_step, "time_forward_backward", timed)
    s = setup(tiny_run(str(text_file), train={"compile": "auto"}))  # 20 tiny steps
    assert len(calls) == 1 and s.compiled is False
    assert f"({calls[0] * 1e3:,.1f} ms/step measured, first step, an upper bound)" in (
        s.compile_reason
    )
    # where the first step says compiling may pay, two steady steps confirm it
    calls.clear()
    monkeypatch.setitem(compiling.COMPILE_S, "cpu", 0.0)
    s = setup(tiny_run(str(text_file), train={"compile": "auto"}))
    assert len(calls) == 3 and s.compiled is True
    assert f"({min(calls[1:]) * 1e3:,.1f} ms/step measured, steady steps)" in s.compile_reason


def test_a_time_only_budget_or_a_fixed_setting_times_nothing(
    text_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> float:
        raise AssertionError("time_forward_backward called")

    monkeypatch.setattr(compile_step, "time_forward_backward", refuse)
    assert setup(tiny_run(str(text_file), train={"compile": False})).compiled is False
    timed = tiny_run(str(text_file), train={"compile": "auto"}, budget={"max_seconds": 1.0})
    s = setup(timed)
    assert s.compiled is False and "~1 s of eager training," in s.compile_reason


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
    assert "would cache" not in result.compile_reason  # not even a warm compile would pay
    plain = train(tiny_run(str(text_file), train={"compile": False}))
    assert plain.compiled is False and plain.compile_reason == "train.compile is false"


def test_a_graph_compiled_here_before_is_charged_a_warm_compile() -> None:
    gain = compiling.STEP_GAIN["cpu"]
    # eager seconds whose saving beats a warm compile's default cost but not a cold one's
    eager_s = 2 * compiling.COMPILE_WARM_S["cpu"] / (1 - 1 / gain)
    assert eager_s * (1 - 1 / gain) < compiling.COMPILE_S["cpu"]
    cold = choose_compile("auto", "cpu", eager_s, past=None)
    warm = choose_compile("auto", "cpu", eager_s, past={"cold_s": 30.0, "warm_s": None})
    measured = choose_compile("auto", "cpu", eager_s, past={"cold_s": 30.0, "warm_s": 1.0})
    assert cold[0] is False and "(cold); one run with train.compile: true would cache" in cold[1]
    assert warm[0] is True and warm[1].endswith("(warm)")
    assert measured[0] is True and measured[1].endswith("~1 s to compile on cpu (warm, measured)")
    # a measured warm compile slower than the saving is believed: eager
    slow = choose_compile("auto", "cpu", eager_s, past={"cold_s": 30.0, "warm_s": 1e4})
    assert slow[0] is False


def test_a_gain_measured_on_this_graph_replaces_the_assumed_one() -> None:
    assumed = compiling.STEP_GAIN["cpu"]
    warm = {"cold_s": 30.0, "warm_s": 4.0}
    # eager seconds where the assumed gain saves 3 s, short of the 4 s warm compile
    eager_s = 3.0 / (1 - 1 / assumed)
    no, why_no = choose_compile("auto", "cpu", eager_s, warm)
    assert no is False and f"(at {assumed:.2f}x a step, assumed)" in why_no
    yes, why_yes = choose_compile("auto", "cpu", eager_s, {**warm, "step_gain": 1.5})
    assert yes is True and "(at 1.50x a step, measured)" in why_yes
    # a graph that three runs found slower compiled never compiles again, however long the run
    slower = {**warm, "step_gain": 0.9, "recent": {"step_gain": [0.9, 0.8, 0.95]}}
    assert choose_compile("auto", "cpu", 1e9, slower)[0] is False
    # but one or two low figures are not believed yet: an eager run would never measure again
    for gains, median in (([0.9], 0.9), ([0.9, 1.0], 0.95)):
        past = {**warm, "step_gain": median, "recent": {"step_gain": gains}}
        yes, why = choose_compile("auto", "cpu", 1e9, past)
        runs = "1 run" if len(gains) == 1 else "2 runs"
        assert yes is True
        assert f"(at {assumed:.2f}x a step, assumed: {runs} of 3 measured {median:.2f}x)" in why
    # the count and the median come from the list's sound figures, the last five of them
    for garbled in (["a", "b", 0.9], [0.9, True, math.nan, None, 0.8]):
        past = {**warm, "step_gain": 0.1, "recent": {"step_gain": garbled}}
        assert choose_compile("auto", "cpu", 1e9, past)[0] is True  # 1 or 2 sound figures
    long = {**warm, "recent": {"step_gain": [0.5] * 4 + [1.3] * 5}}
    assert compiling.step_gain("cpu", long) == (1.3, "measured, median of 5 runs")
    # a garbled list falls back to the record's one figure, as for a record from before lists
    assert compiling.step_gain("cpu", {**warm, "step_gain": 1.4, "recent": "x"}) == (
        1.4,
        "measured",
    )
    # a record from before the lists holds one figure: one run
    gain, basis = compiling.step_gain("cpu", {**warm, "step_gain": 1.03})
    assert (gain, basis) == (assumed, "assumed: 1 run of 3 measured 1.03x")
    # a first figure above the assumption is believed at once
    assert compiling.step_gain("cpu", {**warm, "step_gain": 1.3}) == (1.3, "measured")
    # a garbled gain is no measurement
    for bad in (math.nan, math.inf, 0.0, -2.0, True, "1.5", None):
        gain, basis = compiling.step_gain("cpu", {**warm, "step_gain": bad})
        assert (gain, basis) == (assumed, "assumed")


def test_the_graph_key_follows_what_torch_compile_builds() -> None:
    cpu = torch.device("cpu")
    model = {"n_layer": 4, "n_embd": 128}
    key = graph_key(cpu, "some cpu", model, 12, "float32")
    assert key == graph_key(cpu, "some cpu", dict(model), 12, "float32")
    others = [
        graph_key(cpu, "another cpu", model, 12, "float32"),
        graph_key(cpu, "some cpu", {**model, "n_embd": 96}, 12, "float32"),
        graph_key(cpu, "some cpu", model, 16, "float32"),
        graph_key(cpu, "some cpu", model, 12, "bfloat16"),
        graph_key(torch.device("meta"), "some cpu", model, 12, "float32"),
    ]
    assert len({key, *others}) == 6


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The compile record's path (its folder made), with inductor's cache in tmp_path
    holding files, so that graphs recorded there count as compiled before."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    (tmp_path / "fxgraph").mkdir()  # what a compile leaves there
    path = compile_record._record_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_the_record_keeps_the_cold_compile_and_the_median_warm_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inductor = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(inductor))
    assert past_compile("k") is None
    record_compile("k", 30.0, warm=False)
    assert past_compile("k") is None  # but inductor's folder is gone or empty: nothing cached
    inductor.mkdir()  # (importing inductor creates it, empty)
    assert past_compile("k") is None
    (inductor / "fxgraph").mkdir()  # what a compile leaves there
    past = past_compile("k")
    assert past is not None and past["inductor_dir"] == str(inductor)
    assert (past["compiles"], past["cold_s"], past["warm_s"]) == (1, 30.0, None)
    record_compile("k", 3.0, warm=True, step_gain=1.25)
    record_compile("k", 2.5, warm=True)  # no gain measured: the earlier one stands
    past = past_compile("k")
    assert past is not None and (past["compiles"], past["cold_s"], past["warm_s"]) == (3, 30, 2.75)
    assert past["step_gain"] == 1.25
    record_compile("k", 2.0, warm=True, step_gain=1.1)
    past = past_compile("k")
    assert (past["warm_s"], past["step_gain"]) == (2.5, pytest.approx(1.175))
    assert past_compile("other") is None
    # a compile that found nothing cached (the folder was emptied meanwhile) starts afresh:
    # its seconds are a cold compile's, not a warm figure that would keep auto eager
    record_compile("k", 33.0, warm=False)
    past = past_compile("k")
    assert past is not None and (past["compiles"], past["cold_s"], past["warm_s"]) == (1, 33, None)
    assert "step_gain" not in past  # nor is the old graph's gain believed
    # another inductor cache does not hold these kernels: the graph counts as never compiled
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # holds files
    assert past_compile("k") is None
    record_compile("k", 20.0, warm=True)  # a stale warm flag: the folder differs, so cold
    past = past_compile("k")
    assert past is not None and (past["cold_s"], past["warm_s"]) == (20.0, None)


@pytest.mark.usefixtures("record_file")
def test_one_outlying_run_does_not_move_the_figures_auto_decides_on() -> None:
    record_compile("k", 35.0, warm=False, step_gain=1.3)
    for gain in (1.28, 1.32):
        record_compile("k", 3.0, warm=True, step_gain=gain)
    record_compile("k", 9.0, warm=True, step_gain=1.03)  # a run in a slow spell
    past = past_compile("k")
    assert (past["warm_s"], past["step_gain"]) == (3.0, pytest.approx(1.29))
    eager_s = 40.0  # the bfloat16 recipe's eager training on that machine, about
    compiled, why = choose_compile("auto", "cpu", eager_s, past)
    assert compiled is True
    assert "(at 1.29x a step, measured, median of 4 runs)" in why
    # had the last figure replaced the others, as before the medians, auto would go eager
    trusting_the_last = {**past, "recent": {"step_gain": [1.03] * 3}}
    assert choose_compile("auto", "cpu", eager_s, trusting_the_last)[0] is False
    for gain in (1.0, 1.01, 1.02, 1.03, 1.04):  # the gain really fell: the median follows
        record_compile("k", 3.0, warm=True, step_gain=gain)
    past = past_compile("k")
    assert past["recent"]["step_gain"] == [1.0, 1.01, 1.02, 1.03, 1.04]
    assert past["step_gain"] == pytest.approx(1.02)


def test_a_record_from_before_the_medians_is_carried_on(record_file: Path, tmp_path: Path) -> None:
    old = {
        "inductor_dir": str(tmp_path),
        "compiles": 3,
        "cold_s": 33.0,
        "warm_s": 4.0,
        "step_gain": 1.2,
    }
    record_file.write_text(json.dumps({"k": old, "bad": {**old, "warm_s": True, "step_gain": "x"}}))
    record_compile("k", 2.0, warm=True, step_gain=1.4)
    past = past_compile("k")
    assert past["recent"] == {"warm_s": [4.0, 2.0], "step_gain": [1.2, 1.4]}
    assert (past["warm_s"], past["step_gain"]) == (3.0, pytest.approx(1.3))
    record_compile("bad", 2.0, warm=True, step_gain=1.4)  # garbled figures are dropped
    past = past_compile("bad")
    assert (past["warm_s"], past["step_gain"]) == (2.0, 1.4)
    # so are garbled lists and their garbled items, and a garbled measurement
    junk = {**old, "recent": {"warm_s": "junk", "step_gain": ["x", 1.1, True, None, 1.3]}}
    record_file.write_text(json.dumps({"k": junk, "j": {**old, "recent": [1, 2]}}))
    record_compile("k", 2.0, warm=True, step_gain=math.nan)
    past = past_compile("k")
    assert past["recent"] == {"warm_s": [4.0, 2.0], "step_gain": [1.1, 1.3]}
    assert (past["warm_s"], past["step_gain"]) == (3.0, pytest.approx(1.2))
    record_compile("j", 2.0, warm=True, step_gain=1.0)
    assert past_compile("j")["recent"] == {"warm_s": [4.0, 2.0], "step_gain": [1.2, 1.0]}


def test_a_garbled_record_counts_as_no_record_and_is_rewritten(
    record_file: Path, tmp_path: Path
) -> None:
    record_file.write_text("{not json")
    assert past_compile("k") is None
    record_compile("k", 7.0, warm=False)
    assert past_compile("k")["cold_s"] == 7.0
    record_file.write_text(json.dumps({"k": {"inductor_dir": str(tmp_path), "compiles": "many"}}))
    record_compile("k", 2.0, warm=True)  # a bad count is restarted, not a crash
    assert past_compile("k")["compiles"] == 2


@pytest.mark.slow
def test_auto_compiles_when_compiling_costs_nothing_and_then_compiles_warm(
    text_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tiny_run(str(text_file), train={"compile": "auto"})
    with monkeypatch.context() as m:
        m.setitem(compiling.COMPILE_S, "cpu", 0.0)  # any saving now pays
        first = train(run)
    assert first.status == "ok" and first.compiled is True and first.compile_s > 0
    assert first.compile_reason.startswith("auto: compiled")
    assert first.compile_reason.endswith("(cold)")  # no hint when it compiles
    # the run recorded its graph and the gain it measured on it
    (key,) = json.loads(compile_record._record_file().read_text())
    gain = past_compile(key)["step_gain"]
    assert math.isfinite(gain) and gain > 0
    # the next run is charged a warm compile, not COMPILE_S, and believes that gain (which on
    # a graph this tiny may be below 1: a warm compile that costs less than any loss pays;
    # and an assumption below any gain, so that even a low first figure is believed)
    monkeypatch.setitem(compiling.COMPILE_WARM_S, "cpu", -1e9)
    monkeypatch.setitem(compiling.STEP_GAIN, "cpu", 1e-6)
    second = train(run)
    assert second.compiled is True and second.compile_reason.endswith("(warm)")
    assert f"(at {gain:.2f}x a step, measured)" in second.compile_reason
    (same_key,) = json.loads(compile_record._record_file().read_text())  # one graph, both runs
    past = past_compile(same_key)
    assert past is not None and past["compiles"] == 2
    assert (past["cold_s"], past["warm_s"]) == (first.compile_s, second.compile_s)


@pytest.mark.slow
def test_the_gain_is_measured_on_the_compiled_graph_without_a_trace(text_file: Path) -> None:
    s = setup(tiny_run(str(text_file), model={"dropout": 0.1}, train={"compile": True}))
    assert s.compiled is True and s.step_model is not s.model
    warm_up_compile(s)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    rng = torch.get_rng_state()
    gain = measure_step_gain(s)
    assert math.isfinite(gain) and gain > 0
    assert all(torch.equal(v, before[k]) for k, v in s.model.state_dict().items())
    assert all(p.grad is None for p in s.model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


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


def test_a_cold_compile_shared_by_a_study_s_runs_pays_where_one_run_alone_would_not() -> None:
    gain, warm = compiling.STEP_GAIN["cpu"], compiling.COMPILE_WARM_S["cpu"]
    saving = 3 * warm  # each run saves this: more than a warm compile, far less than a cold one
    eager_s = saving / (1 - 1 / gain)
    assert saving < compiling.COMPILE_S["cpu"]
    alone = choose_compile("auto", "cpu", eager_s)
    # each later run saves `saving - warm` beyond its own warm compile
    enough = math.ceil((compiling.COMPILE_S["cpu"] - saving) / (saving - warm)) + 1
    shared = choose_compile("auto", "cpu", eager_s, shared_by=enough + 1)
    too_few = choose_compile("auto", "cpu", eager_s, shared_by=2)
    assert alone[0] is False and too_few[0] is False
    assert shared[0] is True
    assert f"the {enough} later runs of this graph save" in shared[1]
    # a graph already compiled here is charged its warm compile, shared or not
    past = {"cold_s": 30.0, "warm_s": 1.0}
    assert choose_compile("auto", "cpu", eager_s, past, shared_by=5) == choose_compile(
        "auto", "cpu", eager_s, past
    )
    # runs that save less than a warm compile take nothing off the first run's cold one
    tiny = choose_compile("auto", "cpu", warm / 2 / (1 - 1 / gain), shared_by=100)
    assert tiny[0] is False and "less ~0 s the 99 later runs" in tiny[1]
