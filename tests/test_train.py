"""Training loop: budgets, schedule, determinism, convergence, divergence, checkpoints, metrics."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from chargpt import sample
from chargpt.checkpoint import CheckpointError, load_checkpoint
from chargpt.config import Budget, ConfigError, OptimConfig, RunConfig
from chargpt.corpus import SHAKESPEARE_SHA256, corpus_fingerprint
from chargpt.data import load_splits
from chargpt.schedule import budget_steps, learning_rate
from chargpt.synthetic import SYNTHETIC_SEED, synthetic_spec
from chargpt.train import CSVSink, train

REPO = Path(__file__).resolve().parent.parent


def tiny_run(corpus: str, **sections: Any) -> RunConfig:
    """A very small run; sections override the defaults section by section."""
    base: dict[str, Any] = {
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {
            "batch_size": 8,
            "eval_interval": 10,
            "eval_iters": 2,
            "device": "cpu",
            "threads": 1,
            "save_checkpoint": False,
        },
        "budget": {"max_steps": 20},
        "data": {"corpus": corpus},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values} if name != "budget" else values
    return RunConfig.from_dict(base)


@pytest.fixture
def corpus(text_file: Path) -> str:
    return str(text_file)


def read_curve(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----- budgets -----------------------------------------------------------------------------
def test_max_steps_budget(corpus: str) -> None:
    rows: list[dict[str, Any]] = []
    result = train(tiny_run(corpus, budget={"max_steps": 15}), sinks=[rows.append])
    assert (result.status, result.stop_reason, result.steps) == ("ok", "max_steps", 15)
    assert result.tokens == 15 * 8 * 8
    # evaluations at step 0, every eval_interval, and at the end
    assert [r["step"] for r in rows] == [0, 10, 15]


def test_max_tokens_budget_converts_to_whole_steps(corpus: str) -> None:
    result = train(tiny_run(corpus, budget={"max_tokens": 1000}))  # 64 tokens per step
    assert (result.stop_reason, result.steps) == ("max_tokens", 1000 // 64)
    assert result.tokens <= 1000


def test_max_flops_budget(corpus: str) -> None:
    run = tiny_run(corpus, budget={"max_flops": 5e7})
    result = train(run)
    per_step = result.flops_per_token * 64
    assert result.stop_reason == "max_flops"
    assert result.steps == int(5e7 // per_step)
    assert result.train_flops <= 5e7 < result.train_flops + per_step


def test_first_limit_reached_wins(corpus: str) -> None:
    result = train(tiny_run(corpus, budget={"max_steps": 7, "max_tokens": 10_000}))
    assert (result.stop_reason, result.steps) == ("max_steps", 7)


def test_max_seconds_budget_stops_on_the_training_clock(corpus: str) -> None:
    result = train(tiny_run(corpus, budget={"max_seconds": 0.5}))
    assert result.stop_reason == "max_seconds"
    assert result.train_s >= 0.5  # it stops once the training clock passes the budget
    assert result.steps > 0


def test_budget_steps_helper() -> None:
    assert budget_steps(Budget(max_steps=100), 64, 1e6) == 100
    assert budget_steps(Budget(max_tokens=6400), 64, 1e6) == 100
    assert budget_steps(Budget(max_flops=2.5e6), 64, 1e6) == 2
    assert budget_steps(Budget(max_flops=10.0), 64, 1e6) == 1  # at least one step
    assert budget_steps(Budget(max_seconds=5), 64, 1e6) is None


# ----- schedule ----------------------------------------------------------------------------
def test_learning_rate_schedule_key_points() -> None:
    opt = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=100)
    assert learning_rate(opt, 0, 0.0) == pytest.approx(1e-3 / 101)
    assert learning_rate(opt, 99, 0.0) == pytest.approx(1e-3 * 100 / 101)
    assert learning_rate(opt, 100, 0.0) == pytest.approx(1e-3)
    assert learning_rate(opt, 1000, 0.5) == pytest.approx(5.5e-4)
    assert learning_rate(opt, 2000, 1.0) == pytest.approx(1e-4)
    assert learning_rate(opt, 2500, 1.3) == pytest.approx(1e-4)  # clamped past the end
    default_floor = OptimConfig(lr=3e-3, warmup_steps=0)
    assert learning_rate(default_floor, 10, 1.0) == pytest.approx(3e-4)  # lr / 10
    constant = OptimConfig(lr=2e-3, warmup_steps=0, schedule="constant")
    assert learning_rate(constant, 500, 0.9) == pytest.approx(2e-3)


# ----- reproducibility, convergence, divergence --------------------------------------------
def test_same_config_and_seed_give_identical_losses(corpus: str) -> None:
    a: list[dict[str, Any]] = []
    b: list[dict[str, Any]] = []
    c: list[dict[str, Any]] = []
    train(tiny_run(corpus), sinks=[a.append])
    train(tiny_run(corpus), sinks=[b.append])
    train(tiny_run(corpus, train={"seed": 7}), sinks=[c.append])
    losses = lambda rows: [(r["train_loss"], r["val_loss"]) for r in rows]  # noqa: E731
    assert losses(a) == losses(b)
    assert losses(a) != losses(c)


@pytest.mark.slow
def test_small_model_approaches_the_synthetic_entropy_floor(one_thread: None) -> None:
    """The synthetic chain's entropy rate is the best possible loss; get within 0.15 nats."""
    floor = synthetic_spec(SYNTHETIC_SEED).entropy_rate
    run = tiny_run(
        "synthetic",
        model={"n_embd": 32},
        optim={"lr": 1e-2, "warmup_steps": 20},
        train={"batch_size": 256, "eval_interval": 300, "eval_iters": 8},
        budget={"max_steps": 300},
    )
    result = train(run)
    assert result.status == "ok"
    assert floor - 0.02 < result.final_val_loss < floor + 0.15, (result.final_val_loss, floor)


def test_absurd_learning_rate_is_detected_as_divergence(corpus: str) -> None:
    run = tiny_run(
        corpus, optim={"lr": 1e3, "warmup_steps": 0, "grad_clip": 0.0}, budget={"max_steps": 200}
    )
    result = train(run)
    assert (result.status, result.stop_reason) == ("diverged", "diverged")
    assert result.steps < 200
    assert not (result.final_train_loss < 3 * math.log(result.vocab_size))


# ----- checkpoints and sampling ------------------------------------------------------------
def test_checkpoint_round_trip_with_weights_only(corpus: str, tmp_path: Path) -> None:
    run = tiny_run(corpus, train={"save_checkpoint": True, "save_best": True})
    result = train(run, out_dir=tmp_path)
    ckpt = tmp_path / "ckpt.pt"
    assert ckpt.is_file() and (tmp_path / "ckpt_best.pt").is_file()
    payload = torch.load(ckpt, weights_only=True)  # raises if anything but plain data is inside
    assert payload["step"] == result.steps and payload["config"] == run.to_dict()
    model, tokenizer, loaded_run, _ = load_checkpoint(ckpt)
    assert loaded_run == run and tokenizer.vocab_size == result.vocab_size
    assert not model.training
    x = torch.randint(result.vocab_size, (2, 8))
    again, *_ = load_checkpoint(ckpt)
    torch.testing.assert_close(model(x)[0], again(x)[0])
    # The weights are the trained ones, not a fresh initialisation.
    fresh = type(model)(model.config)
    assert not torch.equal(fresh.lm_head.weight, model.lm_head.weight)


def test_load_checkpoint_rejects_foreign_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"hello": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not a chargpt checkpoint"):
        load_checkpoint(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        load_checkpoint(junk)


@pytest.mark.slow
def test_sampling_cli_on_a_fresh_checkpoint(
    corpus: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(tiny_run(corpus, train={"save_checkpoint": True}), out_dir=tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "chargpt.sample",
        str(tmp_path / "ckpt.pt"),
        "--temperature",
        "0.8",
        "--temperature",
        "0.0001",
        "--prompt",
        "The",
        "--prompt",
        "king",
        "--max-new-tokens",
        "30",
        "--seed",
        "3",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("=== temperature") == 4
    assert "prompt 'king'" in out.stdout
    # seeded: main() in this process prints the same (two processes, one text)
    capsys.readouterr()
    assert sample.main(cmd[3:]) == 0
    assert capsys.readouterr().out == out.stdout
    assert sample.main([*cmd[3:4], "--prompt", "Zebra\u00e9"]) == 2
    bad = capsys.readouterr()
    assert "not in the vocabulary" in bad.err and len(bad.err.strip().splitlines()) == 1


def test_run_writes_samples_when_asked(corpus: str, tmp_path: Path) -> None:
    run = tiny_run(
        corpus, sample={"temperatures": [1.0, 0.5], "prompts": ["The", "a"], "max_new_tokens": 12}
    )
    train(run, out_dir=tmp_path)
    rows = read_curve(tmp_path / "samples.csv")
    assert [(r["temperature"], r["prompt"]) for r in rows] == [
        ("1.0", "The"),
        ("1.0", "a"),
        ("0.5", "The"),
        ("0.5", "a"),
    ]
    assert all(len(r["text"]) == 12 for r in rows)


# ----- measurements ------------------------------------------------------------------------
def test_measurement_fields_are_present_and_sane(corpus: str) -> None:
    result = train(tiny_run(corpus))
    assert 0 < result.mfu <= 1
    assert result.mfu == pytest.approx(
        result.tokens_per_s * result.flops_per_token / result.peak_flops, rel=1e-9
    )
    assert result.tokens_per_s > 0 and result.train_s > 0 and result.eval_s > 0
    assert result.wall_s >= result.train_s + result.eval_s
    assert result.tokens_per_s == pytest.approx(result.tokens / result.train_s)
    assert result.peak_rss_mb > 50 and result.peak_gpu_mb is None
    assert result.peak_flops > 1e8
    assert result.compile_s == 0.0
    assert result.device == "cpu" and result.hardware
    assert result.best_val_loss <= result.final_val_loss


@pytest.mark.slow
def test_compilation_is_timed_apart_from_training(corpus: str) -> None:
    plain = train(tiny_run(corpus))
    compiled = train(tiny_run(corpus, train={"compile": True}))
    assert compiled.status == "ok" and compiled.steps == plain.steps
    # Compilation has its own clock, apart from training's and evaluation's (no threshold on
    # either: how long compiling takes depends on the machine and its load).
    assert compiled.compile_s > 0 and plain.compile_s == 0.0
    assert compiled.wall_s >= compiled.compile_s + compiled.train_s + compiled.eval_s
    # the warm-up took no optimizer step: compiled training follows the same losses
    assert compiled.final_val_loss == pytest.approx(plain.final_val_loss, abs=1e-4)


@pytest.mark.slow
def test_mfu_on_a_model_whose_matmuls_dominate(corpus: str, empty_cache: Path) -> None:
    """A model 256 wide on batches of 32 x 64 tokens spends its time in matmuls: its MFU is
    tens of percent (27% measured on a loaded 2-core machine), not the ~1% of the tiny runs,
    so MFU <= 1 says something here. MFU is exactly the documented formula.

    The peak is probed afresh, seconds before training (empty_cache), not taken from the
    session's probe: this VM's speed can move by 40% within minutes, and a peak probed in a
    slow spell once put a run in a fast one at MFU 1.13."""
    run = tiny_run(
        corpus,
        model={"n_layer": 2, "n_head": 4, "n_embd": 256, "block_size": 64},
        train={"batch_size": 32, "eval_interval": 5, "eval_iters": 1},
        budget={"max_steps": 5},
    )
    result = train(run)
    achieved = result.tokens_per_s * result.flops_per_token
    assert result.mfu == pytest.approx(achieved / result.peak_flops, rel=1e-9)
    assert result.mfu == pytest.approx(result.train_flops / result.train_s / result.peak_flops)
    assert 0 < result.mfu <= 1


def test_lr_column_follows_warmup_then_cosine(corpus: str, tmp_path: Path) -> None:
    """curve.csv's lr at step s is the rate of the step just taken (s - 1): a linear warmup
    over warmup_steps, then a cosine down to min_lr at the last step."""
    opt = {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 5}
    run = tiny_run(corpus, optim=opt, train={"eval_interval": 1}, budget={"max_steps": 25})
    sink = CSVSink(tmp_path / "curve.csv")
    try:
        train(run, sinks=[sink])
    finally:
        sink.close()
    rows = read_curve(tmp_path / "curve.csv")
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(26))
    lrs = [float(r["lr"]) for r in rows]
    span = 25 - 5
    for step, lr in zip(steps, lrs):
        taken = max(step - 1, 0)
        expected = learning_rate(run.optim, taken, (taken - 5) / span)
        assert lr == pytest.approx(expected, rel=1e-6), step
    # its shape, independently of learning_rate: up during warmup, the peak, then down
    assert lrs[1:6] == sorted(lrs[1:6]) and lrs[6] == pytest.approx(3e-3)
    assert lrs[6:] == sorted(lrs[6:], reverse=True)
    assert lrs[3] == pytest.approx(3e-3 * 3 / 6)  # step 2 of the warmup: 3/6 of the peak
    cosine_mid = 3e-4 + 0.5 * (1 + math.cos(math.pi * 10 / span)) * (3e-3 - 3e-4)
    assert lrs[16] == pytest.approx(cosine_mid)  # the step taken at 15: halfway down
    assert lrs[-1] == pytest.approx(3e-4 + 0.5 * (1 + math.cos(math.pi * 19 / 20)) * 2.7e-3)


def test_best_checkpoint_holds_the_best_steps_weights(corpus: str, tmp_path: Path) -> None:
    """save_best: ckpt_best.pt is the model at the step of the lowest val loss. A constant
    rate makes the first best_step steps of a longer run the same as a run that stops there,
    so that run's final weights are the reference, tensor by tensor."""
    keys = {"optim": {"lr": 0.02, "warmup_steps": 0, "schedule": "constant"}}
    train_keys = {"eval_interval": 5, "save_checkpoint": True, "save_best": True}
    long_dir, short_dir = tmp_path / "long", tmp_path / "short"
    result = train(
        tiny_run(corpus, **keys, train=train_keys, budget={"max_steps": 60}), out_dir=long_dir
    )
    assert 0 < result.best_step < result.steps  # else best and last would be the same weights
    best = torch.load(long_dir / "ckpt_best.pt", weights_only=True)
    assert best["step"] == result.best_step
    short = train(
        tiny_run(corpus, **keys, train=train_keys, budget={"max_steps": result.best_step}),
        out_dir=short_dir,
    )
    assert short.final_val_loss == result.best_val_loss
    reference = torch.load(short_dir / "ckpt.pt", weights_only=True)["model"]
    last = torch.load(long_dir / "ckpt.pt", weights_only=True)["model"]
    assert best["model"].keys() == reference.keys()
    for name, tensor in best["model"].items():
        assert torch.equal(tensor, reference[name]), name
    assert any(not torch.equal(best["model"][n], last[n]) for n in last)


# ----- bad configs -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, message",
    [
        ({"modle": {}}, "modle: unknown section (did you mean 'model'?)"),
        ({"optim": {"lr": -1}}, "optim.lr: must be a positive number, got -1.0"),
        ({"optim": {"lr": 1e-3, "min_lr": 1e-2}}, "optim.min_lr: must be in [0, lr=0.001]"),
        ({"budget": {}}, "budget: set at least one of max_steps"),
        ({"budget": {"max_tokens": 0}}, "budget.max_tokens: must be positive"),
        ({"train": {"device": "gpu"}}, "train.device: must be one of"),
        ({"train": {"batch_size": "many"}}, "train.batch_size: expected an integer, got 'many'"),
        ({"optim": {"schedule": "linear"}}, "optim.schedule: must be one of"),
    ],
)
def test_bad_configs_are_rejected_with_their_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(data)
    assert message in str(info.value)


def test_bfloat16_autocast_on_cpu_trains_close_to_float32(corpus: str) -> None:
    fp32 = train(tiny_run(corpus, budget={"max_steps": 30}))
    bf16 = train(tiny_run(corpus, budget={"max_steps": 30}, train={"dtype": "bfloat16"}))
    assert bf16.status == "ok" and bf16.final_val_loss < uniform_loss(corpus)
    # bfloat16 keeps 8 mantissa bits: the same run drifts a little, not by whole nats
    assert abs(bf16.final_val_loss - fp32.final_val_loss) < 0.05
    assert bf16.final_val_loss != fp32.final_val_loss  # autocast really changed the arithmetic
    # MFU is against the bfloat16 matmul probe, not the float32 one
    assert bf16.peak_flops != fp32.peak_flops and 0 < bf16.mfu <= 1


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    from chargpt.measure import cpu_native_bf16

    assert cpu_native_bf16("model name\t: X\nflags\t\t: fpu sse avx512f avx512_bf16\n") is True
    assert cpu_native_bf16("flags\t\t: fpu sse amx_tile amx_bf16\n") is True
    assert cpu_native_bf16("flags\t\t: fpu sse avx2 avx512f\n") is False
    assert cpu_native_bf16("processor\t: 0\nFeatures\t: fp asimd bf16\n") is None  # not x86


def test_cpu_flags_keep_the_vector_and_matrix_extensions() -> None:
    from chargpt.measure import cpu_flags

    x86 = "model name\t: X\nflags\t\t: fpu sse sse2 avx2 fma avx512f avx512_bf16 amx_tile pni\n"
    assert cpu_flags(x86) == ["amx_tile", "avx2", "avx512_bf16", "avx512f", "fma"]
    assert cpu_flags("processor\t: 0\nFeatures\t: fp asimd sve bf16 crc32\n") == [
        "asimd",
        "bf16",
        "sve",
    ]
    assert cpu_flags("processor\t: 0\n") is None


def uniform_loss(corpus: str) -> float:
    """The loss of a uniform guess over the corpus's characters: training must beat it."""
    return math.log(len(set(Path(corpus).read_text())))


def test_flat_dict_keeps_shared_names_bare() -> None:
    flat = RunConfig().to_flat_dict()
    for key in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "lr", "seed"):
        assert key in flat
    assert len(flat) == sum(len(RunConfig().to_dict()[s]) for s in RunConfig().to_dict())


def test_run_id_follows_corpus_content_not_path(tmp_path: Path, small_text: str) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(small_text)
    b.write_text(small_text)
    run = tiny_run(str(a))
    same = run.run_id(corpus_fingerprint(str(a)))
    assert corpus_fingerprint(str(a)) == corpus_fingerprint(str(b))  # the content, not the path
    assert corpus_fingerprint(str(a)) == load_splits(run.data).sha256
    assert run.run_id(corpus_fingerprint(str(a))) == same  # stable
    other = tiny_run(str(a), model={"n_layer": 2})
    assert other.run_id(corpus_fingerprint(str(a))) != same
    a.write_text(small_text + "One more line.\n")  # an edited corpus is a new run
    assert run.run_id(corpus_fingerprint(str(a))) != same
    assert corpus_fingerprint(str(a)) == load_splits(run.data).sha256
    assert corpus_fingerprint("shakespeare") == SHAKESPEARE_SHA256


# ----- optimizer and process footprint -----------------------------------------------------
def test_lean_adamw_matches_torch_adamw_step_by_step() -> None:
    from chargpt.model import GPT, ModelConfig
    from chargpt.step import make_optimizer

    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11, bias=True)
    ours, ref = GPT(cfg), GPT(cfg)
    ref.load_state_dict(ours.state_dict())
    optim = OptimConfig(lr=1e-2, weight_decay=0.1, beta1=0.8, beta2=0.95)
    opt = make_optimizer(ours, optim)
    params = list(ref.parameters())
    torch_opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=1e-2,
        betas=(0.8, 0.95),
    )
    for step in range(5):
        x = torch.randint(11, (4, 8))
        for model in (ours, ref):
            model(x, x.roll(1, dims=1))[1].backward()
        lr = 1e-2 * (step + 1) / 5
        opt.step(lr)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        torch_opt.step()
        opt.zero_grad()
        torch_opt.zero_grad()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(ours.lm_head.weight, GPT(cfg).lm_head.weight)


@pytest.mark.slow
def test_training_process_stays_lean(text_file: Path) -> None:
    """No pandas, plotting or torch._dynamo in a training process: they cost peak memory."""
    code = (
        "import sys\n"
        "from chargpt.config import RunConfig\n"
        "from chargpt.train import train\n"
        f"run = RunConfig.from_dict({{'model': {{'n_layer': 1, 'n_head': 2, 'n_embd': 16, "
        f"'block_size': 8}}, 'train': {{'batch_size': 4, 'eval_iters': 1, 'device': 'cpu', "
        f"'save_checkpoint': False}}, 'budget': {{'max_steps': 3}}, "
        f"'data': {{'corpus': {str(text_file)!r}}}}})\n"
        "train(run)\n"
        "heavy = [m for m in ('pandas', 'matplotlib', 'seaborn', 'torch._dynamo') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_train_restores_the_callers_thread_count(corpus: str) -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        torch.set_num_threads(wanted + 1)
        train(tiny_run(corpus, train={"threads": wanted}, budget={"max_steps": 2}))
        assert torch.get_num_threads() == wanted + 1
        with pytest.raises(ValueError):  # a run that fails restores it too
            train(tiny_run("/no/such/corpus.txt", train={"threads": wanted}))
        assert torch.get_num_threads() == wanted + 1
    finally:
        torch.set_num_threads(before)


# ----- resumable state ---------------------------------------------------------------------
def test_a_run_stopped_mid_way_goes_on_from_its_state_with_the_same_losses(
    corpus: str, tmp_path: Path
) -> None:
    """Dropout on, so the RNG state matters; stop at step 50 (state saved at 40), go on."""
    run = tiny_run(
        corpus,
        model={"dropout": 0.1},
        train={"eval_interval": 25, "checkpoint_interval": 20},
        budget={"max_steps": 100},
    )
    whole: list[dict[str, Any]] = []
    ref = train(run, sinks=[whole.append], out_dir=tmp_path / "whole")

    class Stop(Exception):
        pass

    def stop_at_50(info: dict[str, Any]) -> None:
        if info["step"] >= 50:
            raise Stop

    with pytest.raises(Stop):
        train(run, out_dir=tmp_path / "cut", progress=stop_at_50)
    assert (tmp_path / "cut" / "state.pt").is_file()
    resumed_rows: list[dict[str, Any]] = []
    res = train(run, sinks=[resumed_rows.append], out_dir=tmp_path / "cut")
    assert res.resumes == 1 and ref.resumes == 0
    assert [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in resumed_rows] == [
        (r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in whole
    ]
    assert (res.final_val_loss, res.best_val_loss, res.steps) == (
        ref.final_val_loss,
        ref.best_val_loss,
        ref.steps,
    )
    assert res.train_s > 0 and res.wall_s > res.train_s


def test_a_foreign_or_damaged_state_is_set_aside(
    corpus: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tiny_run(corpus, budget={"max_steps": 10})
    (tmp_path / "state.pt").write_bytes(b"not a state")
    result = train(run, out_dir=tmp_path)
    assert result.resumes == 0 and result.steps == 10
    assert "cannot go on from" in caplog.text and "training from the start" in caplog.text


# What a fresh process sees over steps 10-59 of the nanoGPT CPU recipe's model (its batches
# are random ids: only the allocations matter): the median, over ten 5-step windows, of minor
# page faults a step, with the heap settings train() applies (argv[1] == "keep") or glibc's
# defaults. Why a median: the heap's layout differs from process to process (address and hash
# randomisation), and in some layouts the kept heap still grows by an activation (96 pages)
# now and then up to about step 40; a mean over steps 5-14 once read 67 faults a step.
FAULTS_PER_STEP = """
import resource, statistics, sys
import torch
from chargpt.config import ModelConfig, OptimConfig
from chargpt.heap import keep_freed_memory
from chargpt.model import GPT
from chargpt.step import TrainStep, make_optimizer
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
model = GPT(ModelConfig(n_layer=2, n_head=4, n_embd=128, block_size=64, vocab_size=65))
step = TrainStep(model, make_optimizer(model, OptimConfig()), grad_clip=1.0)
x, y = torch.randint(0, 65, (2, 12, 64))
counts = []
for i in range(60):
    if i >= 10 and i % 5 == 0:  # past the first steps' allocations (optimizer state)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    step(x, y, 1e-3)
counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
print(statistics.median(b - a for a, b in zip(counts, counts[1:])) / 5)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_freed_memory_spares_each_step_its_page_faults(tmp_path: Path) -> None:
    """Counted page faults, not time: with the heap kept, a step re-uses the last step's
    pages. Measured in 10 process pairs: 0 faults a step, every time, against 269-1,677
    with glibc's defaults (whose mmap threshold adapts at different times)."""
    faults = {}
    for mode in ("keep", "default"):
        out = subprocess.run(
            [sys.executable, "-c", FAULTS_PER_STEP, mode],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert out.returncode == 0, out.stderr
        faults[mode] = float(out.stdout)
    assert faults["keep"] < 5 and faults["default"] > 50, faults
