"""Writes small, realistic results directories in the documented layout (results/README.md).

Used by tests/test_plots.py; no training happens: curves follow a known scaling law plus noise.
env.json has the keys the runner writes: chargpt.measure.fingerprint() plus measured peaks.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

VOCAB = 65
UNIFORM = math.log(VOCAB)
# best validation loss of an architecture = E + A * n_params ** -alpha (before curve noise)
LAW = {"E": 1.35, "A": 50.0, "alpha": 0.4}
REFS = {"uniform": UNIFORM, "unigram_train_entropy": 3.29, "unigram_val": 3.31, "bigram_val": 2.48}

# label, n_layer, n_head, n_embd, block_size, lr
ARCHS = [
    ("L1-H2-C32-T32", 1, 2, 32, 32, 3e-3),
    ("L2-H2-C64-T64", 2, 2, 64, 64, 2e-3),
    ("L3-H4-C96-T64", 3, 4, 96, 64, 2e-3),
    ("L4-H4-C128-T128", 4, 4, 128, 128, 1e-3),
    ("L6-H6-C192-T128", 6, 6, 192, 128, 1e-3),
    ("L8-H8-C256-T256", 8, 8, 256, 256, 6e-4),
]
FAILED = ("L12-H12-C384-T256", 12, 12, 384, 256, 3e-4)
MISSING = ("L16-H16-C512-T256", 16, 16, 512, 256, 3e-4)
LRS = [3e-4, 1e-3, 3e-3, 1e-2]
BATCH, STEPS, EVAL_INTERVAL = 32, 2000, 200
PEAK_FLOPS = 6.0e10
# env.json of a CPU study: measure.fingerprint(device) + the runner's peak_flops_float32 (it adds
# peak_flops_bfloat16 only on CUDA or when a run trains in bfloat16)
ENV = {
    "cpu_model": "AMD EPYC 7B13",
    "cpu_logical_cores": 4,
    "cpu_physical_cores": 2,
    "cpu_native_bf16": False,
    "cpu_flags": ["avx", "avx2", "f16c", "fma"],
    "torch_threads": 4,
    "os": "Linux-6.1.0-13-amd64-x86_64-with-glibc2.36",
    "python": "3.11.2",
    "torch": "2.3.1",
    "numpy": "1.26.4",
    "cuda": None,
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "gpus": [],
    "device": "cpu",
    "peak_flops_float32": PEAK_FLOPS,
}


def counts(n_layer: int, n_embd: int, block_size: int) -> dict[str, float]:
    """Parameter and FLOP counts of a tied-weight, bias-free GPT."""
    c = n_embd
    non_emb = n_layer * (12 * c * c + 2 * c) + c
    n_params = non_emb + VOCAB * c + block_size * c
    fpt = 6 * (n_params - block_size * c) + 12 * n_layer * c * block_size
    return {"n_params": n_params, "n_params_non_embedding": non_emb, "flops_per_token": fpt}


def _config(n_layer: int, n_head: int, n_embd: int, block_size: int, lr: float) -> dict:
    return {
        "model": {
            "n_layer": n_layer,
            "n_head": n_head,
            "n_embd": n_embd,
            "block_size": block_size,
            "vocab_size": VOCAB,
            "dropout": 0.0,
            "bias": False,
            "tie_weights": True,
            "attn_impl": "manual",
        },
        "optim": {
            "lr": lr,
            "min_lr": lr / 10,
            "warmup_steps": 100,
            "schedule": "cosine",
            "weight_decay": 0.1,
            "beta1": 0.9,
            "beta2": 0.99,
            "grad_clip": 1.0,
        },
        "train": {
            "batch_size": BATCH,
            "eval_interval": EVAL_INTERVAL,
            "eval_iters": 20,
            "seed": 1337,
            "device": "cpu",
            "dtype": "float32",
            "compile": False,
            "threads": 4,
            "save_checkpoint": False,
            "save_best": False,
        },
        "budget": {"max_steps": STEPS, "max_tokens": None, "max_flops": None, "max_seconds": None},
        "data": {"corpus": "shakespeare", "val_fraction": 0.1},
        "sample": {
            "temperatures": [1.0, 0.8, 0.1],
            "prompts": ["\n", "ROMEO:"],
            "max_new_tokens": 80,
            "seed": 0,
            "top_k": None,
        },
    }


def _curve(
    rng: np.random.Generator, floor: float, cfg: dict, c: dict, size_rank: float, diverge: bool
) -> pd.DataFrame:
    steps = np.arange(0, STEPS + 1, EVAL_INTERVAL)
    lr0 = cfg["optim"]["lr"]
    shape = (1 + steps / 60.0) ** -1.2
    val = floor + (UNIFORM - floor) * shape + rng.normal(0, 0.008, len(steps))
    val[0] = UNIFORM + rng.normal(0, 0.005)
    gap = (0.01 + 0.08 * size_rank) * steps / STEPS
    train = val - gap + rng.normal(0, 0.008, len(steps))
    tokens = steps * BATCH * cfg["model"]["block_size"]
    step_s = 0.004 + BATCH * cfg["model"]["block_size"] * c["flops_per_token"] / 1.5e10
    progress = np.clip((steps - 100) / (STEPS - 100), 0, 1)
    lr = np.where(
        steps < 100, lr0 * steps / 100, lr0 / 10 + 0.45 * lr0 * (1 + np.cos(np.pi * progress))
    )
    df = pd.DataFrame(
        {
            "step": steps,
            "tokens": tokens,
            "flops": tokens * c["flops_per_token"],
            "train_s": steps * step_s,
            "lr": lr,
            "train_loss": train,
            "val_loss": val,
            "tokens_per_s": np.where(
                steps > 0, BATCH * cfg["model"]["block_size"] / step_s, np.nan
            ),
        }
    )
    if diverge:  # loss blows up after step 600, the run stops at the next eval
        df = df.iloc[:5].copy()
        df.loc[df.index[-1], ["train_loss", "val_loss"]] = [np.inf, 13.7]
    return df


def _samples(rng: np.random.Generator, quality: float) -> pd.DataFrame:
    good = "ROMEO:\nWhat light through yonder window breaks? | It is the east,"
    rows = []
    for t in (1.0, 0.8, 0.1):
        for prompt in ("\n", "ROMEO:"):
            chars = list(good)
            for i in rng.choice(len(chars), int(len(chars) * (1 - quality) * t), replace=True):
                chars[i] = "xqz<&>"[int(rng.integers(6))]
            rows.append({"temperature": t, "prompt": prompt, "text": prompt + "".join(chars)})
    return pd.DataFrame(rows)


def _row(run_id: str, label: str, cfg: dict, c: dict) -> dict:
    m, o, t, b = cfg["model"], cfg["optim"], cfg["train"], cfg["budget"]
    row = {"run_id": run_id, "label": label}
    row.update(
        {
            k: m[k]
            for k in (
                "n_layer",
                "n_head",
                "n_embd",
                "block_size",
                "vocab_size",
                "dropout",
                "bias",
                "tie_weights",
                "attn_impl",
            )
        }
    )
    row.update(
        {
            k: t[k]
            for k in (
                "batch_size",
                "eval_interval",
                "eval_iters",
                "seed",
                "dtype",
                "compile",
                "threads",
            )
        }
    )
    row.update(
        {
            k: o[k]
            for k in (
                "lr",
                "min_lr",
                "warmup_steps",
                "schedule",
                "weight_decay",
                "beta1",
                "beta2",
                "grad_clip",
            )
        }
    )
    row.update(b)
    row.update(cfg["data"])
    row.update(c)
    return row


def write_results(
    root: Path,
    name: str = "scaling",
    *,
    kind: str = "scaling",
    failed: bool = True,
    missing_curve: bool = True,
    missing_run: bool = True,
    samples: bool = True,
    seed: int = 0,
) -> Path:
    """Write results/<name> under root; kind 'scaling' (6 archs) or 'lr_sweep' (3 archs x 4 lr).

    failed: add one run with status error; missing_curve: leave one ok run out of curves.csv;
    missing_run: plan one run that has no result yet. Returns the study directory.
    """
    rng = np.random.default_rng(seed)
    study = Path(root) / name
    (study / "runs").mkdir(parents=True, exist_ok=True)
    grid = (
        [(a, a[5]) for a in ARCHS]
        if kind == "scaling"
        else [(a, lr) for a in ARCHS[:3] for lr in LRS]
    )
    jobs = [(a, lr, "ok") for a, lr in grid]
    if failed:
        jobs.append((FAILED, FAILED[5], "error"))
    plan, rows, curves = [], [], []
    for (label, n_layer, n_head, n_embd, block, _), lr, status in jobs:
        cfg = _config(n_layer, n_head, n_embd, block, lr)
        c = counts(n_layer, n_embd, block)
        run_id = hashlib.sha256(f"{name}/{label}/{lr}".encode()).hexdigest()[:10]
        plan.append({"run_id": run_id, "label": label, **_row(run_id, label, cfg, c)})
        rundir = study / "runs" / run_id
        rundir.mkdir(exist_ok=True)
        (rundir / "config.json").write_text(json.dumps(cfg, indent=1))
        row = _row(run_id, label, cfg, c)
        names = [a[0] for a in ARCHS]
        rank = (names.index(label) if label in names else len(ARCHS) - 1) / (len(ARCHS) - 1)
        floor = LAW["E"] + LAW["A"] * c["n_params"] ** -LAW["alpha"]
        if kind == "lr_sweep":
            opt_lr = 3e-3 * (c["n_params"] / 3e4) ** -0.3
            floor += 0.15 * math.log10(lr / opt_lr) ** 2
        diverge = kind == "lr_sweep" and lr >= 1e-2 and label == ARCHS[2][0]
        if status == "ok":
            curve = _curve(rng, floor, cfg, c, rank, diverge)
            curve.to_csv(rundir / "curve.csv", index=False)
            done = curve.iloc[-1]
            valid = curve.dropna(subset=["val_loss"])
            best = valid.loc[valid["val_loss"].idxmin()]
            status = "diverged" if diverge else "ok"
            steps = int(done["step"])
            train_s = float(done["train_s"])
            row.update(
                {
                    "status": status,
                    "stop_reason": "diverged" if diverge else "max_steps",
                    "steps": steps,
                    "tokens": int(done["tokens"]),
                    "train_flops": done["flops"],
                    "train_s": train_s,
                    "eval_s": 0.08 * train_s,
                    "wall_s": 1.12 * train_s + 2.5,
                    "tokens_per_s": done["tokens"] / train_s,
                    "peak_rss_mb": 310
                    + c["n_params"] * 16 / 2**20
                    + BATCH * block * n_embd * n_layer * 40 / 2**20,
                    "peak_gpu_mb": np.nan,
                    "peak_flops": PEAK_FLOPS,
                    "mfu": done["flops"] / train_s / PEAK_FLOPS,
                    "final_train_loss": done["train_loss"],
                    "final_val_loss": done["val_loss"],
                    "best_val_loss": best["val_loss"],
                    "best_step": int(best["step"]),
                    "device": "cpu",
                    "hardware": "AMD EPYC 7B13 (4 threads)",
                    "error": "",
                }
            )
            curves.append(curve.assign(run_id=run_id, label=label))
            if samples:
                _samples(rng, 1 - rank * 0.8).to_csv(rundir / "samples.csv", index=False)
        else:
            row.update(
                {
                    "status": "error",
                    "stop_reason": "RuntimeError",
                    "steps": 0,
                    "tokens": 0,
                    "train_flops": 0.0,
                    "device": "cpu",
                    "hardware": "AMD EPYC 7B13 (4 threads)",
                    "error": "RuntimeError: DataLoader worker (pid 4242) is killed by "
                    "signal: Killed.",
                }
            )
        (rundir / "result.json").write_text(json.dumps(row, default=float))
        rows.append(row)
    if missing_run:
        label, n_layer, n_head, n_embd, block, lr = MISSING
        cfg = _config(n_layer, n_head, n_embd, block, lr)
        plan.append(_row("ffffffffff", label, cfg, counts(n_layer, n_embd, block)))
    if missing_curve and len(curves) > 2:
        curves.pop(1)
    cols = [
        "run_id",
        "label",
        "step",
        "tokens",
        "flops",
        "train_s",
        "lr",
        "train_loss",
        "val_loss",
        "tokens_per_s",
    ]
    pd.concat(curves)[cols].to_csv(study / "curves.csv", index=False)
    pd.DataFrame(rows).to_csv(study / "runs.csv", index=False)
    pd.DataFrame(plan).to_csv(study / "plan.csv", index=False)
    (study / "corpus.json").write_text(
        json.dumps(
            {
                "shakespeare": {
                    "n_chars": 1115394,
                    "vocab_size": VOCAB,
                    "train_tokens": 1003854,
                    "val_tokens": 111540,
                    "reference_losses": REFS,
                }
            },
            indent=1,
        )
    )
    (study / "env.json").write_text(json.dumps(ENV, indent=2) + "\n")
    (study / "study.yaml").write_text(f"name: {name}\nbase:\n  budget: {{max_steps: {STEPS}}}\n")
    return study
