"""Tests of bench/ and plots/bench.py: FLOP counts, the exponent fit, the plots, quick mode."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import benchlib
from plots import bench as plots_bench

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "bench_attention_quick.json"


# ----- FLOP counter ----------------------------------------------------------------------------
def test_attention_flops_against_a_hand_count():
    # B=2, T=4, C=8 (two heads of 4). Q @ K^T: per head 4x4 scores of a 4-long dot product,
    # 2 FLOPs per multiply-add: 2 * 2 heads * 16 * 4 * 2 batch = 512; att @ V the same: 512.
    # Projections: QKV 2 * (2*4 rows) * 8 * 24 = 3072, c_proj 2 * 8 * 8 * 8 = 1024.
    B, T, C = 2, 4, 8
    assert benchlib.attention_flops(B, T, C, projections=False) == 1024
    assert benchlib.attention_flops(B, T, C) == 1024 + 4096
    # Causal: 1 + 2 + 3 + 4 = 10 of the 16 query-key pairs are needed: 1024 * 10 / 16 = 640.
    assert benchlib.attention_flops(B, T, C, causal=True, projections=False) == 640
    assert benchlib.attention_flops(B, T, C, causal=True) == 640 + 4096
    # Backward = 2x forward (gradients of both operands of every matmul): 3x in all.
    assert benchlib.attention_flops(B, T, C, backward=True) == 3 * 5120


@pytest.mark.parametrize("backward", [False, True])
def test_attention_flops_match_torch_flop_counter_on_the_manual_path(backward):
    from torch.utils.flop_counter import FlopCounterMode

    from chargpt.model import CausalSelfAttention, ModelConfig

    B, T, C, nh = 3, 16, 32, 4
    module = CausalSelfAttention(ModelConfig(n_embd=C, n_head=nh, block_size=T))
    x = torch.randn(B, T, C, requires_grad=backward)
    with FlopCounterMode(display=False) as counter:
        y = module(x)
        if backward:
            y.sum().backward()
    assert counter.get_total_flops() == benchlib.attention_flops(B, T, C, backward=backward)


def test_causal_halving_tends_to_one_half():
    dense = benchlib.attention_flops(1, 1024, 64, projections=False)
    causal = benchlib.attention_flops(1, 1024, 64, causal=True, projections=False)
    assert causal / dense == pytest.approx(1025 / 2048)


# ----- exponent fit ---------------------------------------------------------------------------
def test_fit_exponent_recovers_a_known_power_law():
    T = 2.0 ** np.arange(5, 12)
    k, a = plots_bench.fit_exponent(T, 3e-8 * T**2)
    assert k == pytest.approx(2.0, abs=1e-9) and a == pytest.approx(3e-8, rel=1e-9)
    noise = np.random.default_rng(0).lognormal(0.0, 0.05, size=T.size)
    assert plots_bench.fit_exponent(T, 5e-6 * T**1.5 * noise)[0] == pytest.approx(1.5, abs=0.1)


def test_fit_on_large_t_sees_the_square_behind_a_linear_term():
    # time = linear projections + quadratic scores: the large-T fit must find about 2
    T = [32, 64, 128, 256, 512, 1024, 2048]
    rows = [
        dict(
            group="block_size",
            batch_size=1,
            n_embd=64,
            n_head=4,
            attn_impl="manual",
            block_size=t,
            time_s=1e-5 * t + 1e-7 * t * t,
            **{"pass": "fwd"},
        )
        for t in T
    ]
    ((k_big, k_all, lo),) = plots_bench.exponents(rows, None).values()
    assert lo == 256 and 1.75 < k_big < 2.0 and k_all < k_big


def test_fit_exponent_rejects_too_few_points():
    with pytest.raises(ValueError):
        plots_bench.fit_exponent([8], [1.0])


# ----- plots/bench.py -------------------------------------------------------------------------
def _synthetic_json(path: Path) -> Path:
    benches = []
    for t in [32, 64, 128, 256, 512]:
        for pss, factor in [("fwd", 1.0), ("fwd+bwd", 3.0)]:
            for impl, speed in [("manual", 1.0), ("sdpa", 0.25)]:
                info = dict(
                    group="block_size",
                    block_size=t,
                    batch_size=2,
                    n_embd=32,
                    n_head=2,
                    attn_impl=impl,
                    tokens=2 * t,
                    flops=4 * 2 * t * t * 32,
                    score_tensor_bytes=2 * 2 * t * t * 4,
                    peak_mem_bytes=3 * t * t * 16,
                    device="cpu",
                    hardware="Test CPU",
                    threads=1,
                    dtype="float32",
                )
                info["pass"] = pss
                benches.append(
                    dict(
                        name=f"x[T={t}-{pss}-{impl}]",
                        extra_info=info,
                        stats=dict(median=1e-8 * t**2 * factor * speed, rounds=3),
                    )
                )
    for c, pss, impl in [(32, "fwd", "manual"), (32, "fwd", "sdpa")]:
        info = dict(
            group="width",
            block_size=64,
            batch_size=4,
            n_embd=c,
            n_head=2,
            attn_impl=impl,
            tokens=256,
            flops=1e6,
            device="cpu",
            hardware="Test CPU",
        )
        info["pass"] = pss
        benches.append(dict(name="w", extra_info=info, stats=dict(median=1e-3, rounds=3)))
    path.write_text(json.dumps(dict(benchmarks=benches, datetime="now")))
    return path


def test_plot_script_writes_figures_and_table(tmp_path, capsys):
    src = _synthetic_json(tmp_path / "attention.json")
    assert plots_bench.main([str(src)]) == 0
    for name in ["time", "memory", "ratio", "width"]:
        png = tmp_path / "figures" / f"attention_{name}.png"
        assert png.stat().st_size > 5000, name
    md = (tmp_path / "tables" / "attention.md").read_text()
    assert "| 512 | 2.62 | 0.655 | 4× |" in md  # 1e-8 * 512^2 s = 2.62 ms; manual/sdpa = 4
    assert "| manual | fwd | 2.00 | T ≥ 128 |" in md


def test_plot_script_on_a_real_quick_run_fixture(tmp_path):
    src = tmp_path / "quick.json"
    src.write_bytes(FIXTURE.read_bytes())
    assert plots_bench.main([str(src)]) == 0
    assert (tmp_path / "figures" / "quick_time.png").exists()
    assert "Peak memory" in (tmp_path / "tables" / "quick.md").read_text()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON"),
        ('{"x": 1}', "no 'benchmarks'"),
        ('{"benchmarks": [{"name": "a", "stats": {"median": 1}}]}', "no bench/ results"),
    ],
)
def test_plot_script_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    src = tmp_path / "bad.json"
    if content is not None:
        src.write_text(content)
    assert plots_bench.main([str(src)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow
def test_plot_script_does_not_import_torch(tmp_path):
    src = _synthetic_json(tmp_path / "a.json")
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{str(ROOT / 'plots' / 'bench.py')!r}, {str(src)!r}]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "torch imported: False"


# ----- the benchmark files themselves ----------------------------------------------------------
@pytest.mark.slow
def test_benchmarks_collect_and_run_in_quick_mode(tmp_path: Path) -> None:
    """Every benchmark under --quick (tiny sizes, one round), with its JSON: each result has
    the shape pytest-benchmark writes and the extra_info plots/bench.py reads, and the derived
    figures follow from the timing and the counts (no speed is asserted)."""
    from chargpt.model import ModelConfig, count_params

    out_json = tmp_path / "quick.json"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench",
        "--quick",
        f"--benchmark-json={out_json}",
        "--bench-threads",
        "1",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    # Under pytest-xdist this test runs in a worker whose PYTEST_XDIST_* variables would make
    # pytest-benchmark in the inner run think it is parallel too, and disable itself.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary and "skipped" not in summary
    passed = int(summary.split()[0])
    assert passed >= 20

    data = json.loads(out_json.read_text())
    assert data["machine_info"]["chargpt"]["quick"] is True
    assert data["machine_info"]["chargpt"]["threads"] == 1
    results = data["benchmarks"]
    assert len(results) == passed  # one result per benchmark that ran
    groups: dict[str, list[dict]] = {}
    for r in results:
        info, stats = r["extra_info"], r["stats"]
        groups.setdefault(info["group"], []).append(r)
        assert stats["rounds"] == 1  # quick: one round each
        median = stats["median"]
        assert median > 0 and info["ms_per_call"] == pytest.approx(median * 1e3, rel=1e-12)
        assert info["tokens"] == info["batch_size"] * info["block_size"]
        assert info["peak_mem_bytes"] >= 0 and info["peak_mem_method"]
        assert info["device"] == "cpu"
        if info["group"] == "model_step":
            cfg = ModelConfig(
                n_layer=info["n_layer"],
                n_head=info["n_head"],
                n_embd=info["n_embd"],
                block_size=info["block_size"],
                vocab_size=65,
            )
            counts = count_params(cfg)
            assert info["n_params"] == counts["n_params"]
            assert info["flops_per_token"] == counts["flops_per_token"]
            assert info["tokens_per_s"] == pytest.approx(info["tokens"] / median, rel=1e-12)
            per_s = info["tokens"] * info["flops_per_token"] / median
            assert info["flops_per_s"] == pytest.approx(per_s, rel=1e-12)
        else:
            B, T, C = info["batch_size"], info["block_size"], info["n_embd"]
            backward = info["pass"] == "fwd+bwd"
            assert info["flops"] == benchlib.attention_flops(B, T, C, backward=backward)
            causal = benchlib.attention_flops(B, T, C, causal=True, backward=backward)
            assert info["flops_causal"] == causal
            assert info["head_size"] * info["n_head"] == C
            assert info["flops_per_s"] == pytest.approx(info["flops"] / median, rel=1e-12)
    assert set(groups) == {"model_step", "block_size", "width"}
    steps = {(r["extra_info"]["attn_impl"], r["extra_info"]["dtype"]) for r in groups["model_step"]}
    assert steps == {(i, d) for i in ("manual", "sdpa") for d in ("float32", "bfloat16")}
    for family in ("block_size", "width"):
        cases = {(r["extra_info"]["attn_impl"], r["extra_info"]["pass"]) for r in groups[family]}
        assert cases == {(i, p) for i in ("manual", "sdpa") for p in ("fwd", "fwd+bwd")}


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_device_cuda_without_cuda_is_one_usage_error():
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench",
        "--quick",
        "--benchmark-disable",
        "--bench-device",
        "cuda",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-3000:]
    expected = "ERROR: --bench-device cuda: torch has no cuda device available on this machine"
    assert out.stderr.strip() == expected


@pytest.mark.parametrize(
    "argv, message",
    [
        (["/no/such/recipe.yaml"], "no such file"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_profile_step_bad_input_is_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import profile_step

    assert profile_step.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_store_overhead_runs_both_ways_on_the_same_data(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import store_overhead

    assert store_overhead.main(["--runs", "4", "--every", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[0] == "2" and "runs.csv identical: True" in out


TINY_RECIPE = """
name: tiny_recipe
base:
  model: {n_layer: 1, n_head: 2, n_embd: 16, block_size: 8, dropout: 0.0}
  optim: {lr: 3.0e-3, warmup_steps: 1}
  train: {batch_size: 4, eval_interval: 2, eval_iters: 1, device: cpu, threads: 1,
          dtype: float32, compile: false, save_checkpoint: false}
  budget: {max_steps: 2}
  data: {corpus: CORPUS}
"""


def test_recipe_trains_reports_and_records_the_dtype_it_chose(
    text_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import recipe

    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE.replace("CORPUS", json.dumps(str(text_file))))
    out_json = tmp_path / "r.json"
    assert recipe.main([str(path), "--steps", "3", "--dtype", "auto", "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    figures = json.loads(out_json.read_text())
    assert figures["steps"] == 3 and figures["dtype"] in ("float32", "bfloat16")
    (dtype_line,) = [line for line in lines if line.startswith("dtype ")]
    assert dtype_line.split()[1] == figures["dtype"] and "(train.dtype auto:" in dtype_line
    assert any(line.startswith("tokens/s") for line in lines)
    assert math.isfinite(figures["full_val_loss"]) and figures["full_val_chars"] > 0


def test_recipe_json_that_cannot_be_written_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json naming a folder: a usage error at once, not a traceback after the run."""
    from bench import recipe

    with pytest.raises(SystemExit) as info:
        recipe.main(["--steps", "3", "--json", str(tmp_path)])
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"argument --json: {tmp_path} is a folder, not a file"), line


@pytest.mark.parametrize(
    "argv, message",
    [(["/no/such/recipe.yaml"], "no such file"), (["--steps", "0"], "max_steps")],
)
def test_recipe_bad_input_is_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import recipe

    assert recipe.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
