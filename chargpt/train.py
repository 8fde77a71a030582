"""The one training loop: budgets, LR schedule, fixed-batch evaluation, checkpoints, results."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from chargpt import measure
from chargpt.checkpoint import save_checkpoint
from chargpt.config import CURVE_COLUMNS, Budget, OptimConfig, RunConfig, SampleConfig
from chargpt.data import BatchSampler, CharTokenizer, encode_corpus, load_corpus, split_ids
from chargpt.model import GPT, count_params
from chargpt.optim import AdamW

log = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]
EVAL_SEED = 1234  # the same evaluation batches for every run, whatever its training seed
CHUNK_STEPS = 10  # steps between clock reads / loss checks (each one is a device sync)
DIVERGENCE_FACTOR = 3.0  # a loss this many times the step-0 loss counts as diverged


@dataclass
class RunResult:
    """What one run did and measured; the runs.csv row of the run (with config columns)."""

    run_id: str
    status: str  # ok | diverged (the runner adds oom, error, timeout)
    stop_reason: str
    steps: int
    tokens: int
    train_flops: float
    train_s: float
    eval_s: float
    compile_s: float  # torch.compile's first-call compilation, kept out of train_s
    wall_s: float
    tokens_per_s: float
    peak_rss_mb: float
    peak_gpu_mb: float | None
    peak_flops: float
    mfu: float
    final_train_loss: float
    final_val_loss: float
    best_val_loss: float
    best_step: int
    n_params: int
    n_params_non_embedding: int
    flops_per_token: float
    vocab_size: int
    device: str
    hardware: str
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class CSVSink:
    """Appends each metric dict as a row of a CSV file, flushed at once."""

    def __init__(self, path: Path, columns: list[str] = CURVE_COLUMNS) -> None:
        self.columns = columns
        self._file = open(path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
        self._writer.writeheader()
        self._file.flush()

    def __call__(self, row: dict[str, Any]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def logging_sink(row: dict[str, Any]) -> None:
    """Logs one evaluation as a line."""
    log.info("step %d: train %.4f, val %.4f, lr %.2e, %.0f tokens/s", row["step"],
             row["train_loss"], row["val_loss"], row["lr"], row["tokens_per_s"])


def budget_steps(budget: Budget, tokens_per_step: int, flops_per_step: float) -> int | None:
    """Whole steps that fit the step/token/FLOPs limits (None if only max_seconds is set)."""
    limits = []
    if budget.max_steps is not None:
        limits.append(budget.max_steps)
    if budget.max_tokens is not None:
        limits.append(budget.max_tokens // tokens_per_step)
    if budget.max_flops is not None:
        limits.append(int(budget.max_flops // flops_per_step))
    return max(1, min(limits)) if limits else None


def step_reason(budget: Budget, tokens_per_step: int, flops_per_step: float) -> str:
    """Which step-convertible limit binds first."""
    options = {"max_steps": budget.max_steps}
    if budget.max_tokens is not None:
        options["max_tokens"] = budget.max_tokens // tokens_per_step
    if budget.max_flops is not None:
        options["max_flops"] = int(budget.max_flops // flops_per_step)
    return min((v, k) for k, v in options.items() if v is not None)[1]


def learning_rate(optim: OptimConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine from lr to min_lr as progress goes 0 -> 1.

    progress is the fraction of the post-warmup budget used: (step - warmup) / (total - warmup)
    for step budgets, or training seconds / max_seconds for a time budget.
    """
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / (optim.warmup_steps + 1)
    if optim.schedule == "constant":
        return optim.lr
    p = min(max(progress, 0.0), 1.0)
    return optim.final_lr + 0.5 * (1.0 + math.cos(math.pi * p)) * (optim.lr - optim.final_lr)


def make_optimizer(model: GPT, optim: OptimConfig) -> AdamW:
    """AdamW; matrices decay, biases, LayerNorm weights and nothing else (the usual split)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return AdamW([(decay, optim.weight_decay), (no_decay, 0.0)],
                 betas=(optim.beta1, optim.beta2))


def fixed_batches(ids: torch.Tensor, block_size: int, batch_size: int, n: int,
                  device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same n evaluation batches for every call with the same arguments."""
    sampler = BatchSampler(ids, block_size, batch_size, seed=EVAL_SEED, device=device)
    return [sampler() for _ in range(n)]


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
             autocast: Any) -> float:
    """Mean loss over fixed batches, in eval mode (no dropout)."""
    model.eval()
    losses = []
    for x, y in batches:
        with autocast():
            _, loss = model(x, y)
        losses.append(loss.float())
    model.train()
    return torch.stack(losses).mean().item()


def write_samples(path: Path, model: GPT, tokenizer: CharTokenizer, cfg: SampleConfig) -> None:
    """samples.csv: one row per (temperature, prompt), written atomically."""
    from chargpt.sample import sample_grid

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["temperature", "prompt", "text"])
        writer.writeheader()
        writer.writerows(sample_grid(model, tokenizer, cfg))
    tmp.replace(path)


def train(run: RunConfig, sinks: Iterable[Sink] = (), out_dir: Path | None = None,
          progress: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train one run to its budget; emit a metric dict per evaluation; return what it measured."""
    wall_start = time.perf_counter()
    sinks = list(sinks)
    if run.train.threads is not None:
        torch.set_num_threads(run.train.threads)
    device = measure.resolve_device(run.train.device)
    if run.train.dtype == "bfloat16" and device.type not in ("cuda", "cpu"):
        raise ValueError(f"train.dtype: bfloat16 autocast is supported on CUDA and CPU only, "
                         f"the run is on {device.type}")
    if run.train.dtype == "bfloat16" and device.type == "cpu":
        native = measure.cpu_native_bf16()
        if native is False:
            log.warning("train.dtype bfloat16: this CPU has no native bfloat16 matmul "
                        "(avx512_bf16/amx_bf16), so autocast emulates it and is likely "
                        "slower than float32")
        elif native is None:
            log.info("train.dtype bfloat16: could not tell whether this CPU has native "
                     "bfloat16 matmul; compare tokens/s against float32")
    torch.manual_seed(run.train.seed)

    text = load_corpus(run.data.corpus)
    tokenizer = CharTokenizer.from_text(text)
    train_ids, val_ids = split_ids(encode_corpus(text, tokenizer), run.data.val_fraction)
    mcfg = run.model
    if mcfg.vocab_size is not None and mcfg.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"model.vocab_size is {mcfg.vocab_size} but corpus "
                         f"{run.data.corpus!r} has {tokenizer.vocab_size} characters")
    mcfg = dataclasses.replace(mcfg, vocab_size=tokenizer.vocab_size)
    counts = count_params(mcfg)
    model = GPT(mcfg).to(device)
    step_model: torch.nn.Module = torch.compile(model) if run.train.compile else model
    opt = make_optimizer(model, run.optim)

    B, T = run.train.batch_size, mcfg.block_size
    tokens_per_step = B * T
    flops_per_step = counts["flops_per_token"] * tokens_per_step
    total_steps = budget_steps(run.budget, tokens_per_step, flops_per_step)
    max_seconds = run.budget.max_seconds
    sampler = BatchSampler(train_ids, T, B, seed=run.train.seed, device=device)
    eval_train = fixed_batches(train_ids, T, B, run.train.eval_iters, device)
    eval_val = fixed_batches(val_ids, T, B, run.train.eval_iters, device)
    if run.train.dtype == "bfloat16":
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext

    clock = measure.Stopwatch(device)
    eval_s = 0.0
    step, lr = 0, learning_rate(run.optim, 0, 0.0)
    best_val, best_step, status, reason = math.inf, 0, "ok", ""
    params = opt.parameters()  # built once: clipping runs every step
    cosine_span = max(1, (total_steps or 0) - run.optim.warmup_steps)

    def do_eval() -> dict[str, Any]:
        nonlocal eval_s, best_val, best_step
        t0 = time.perf_counter()
        row = {"step": step, "tokens": step * tokens_per_step, "flops": step * flops_per_step,
               "train_s": clock.total, "lr": lr,
               "train_loss": evaluate(step_model, eval_train, autocast),
               "val_loss": evaluate(step_model, eval_val, autocast),
               "tokens_per_s": step * tokens_per_step / clock.total if clock.total else 0.0}
        if row["val_loss"] < best_val:
            best_val, best_step = row["val_loss"], step
            if out_dir is not None and run.train.save_best:
                save_checkpoint(out_dir / "ckpt_best.pt", model, run, tokenizer, step, best_val)
        eval_s += time.perf_counter() - t0
        for sink in sinks:
            sink(row)
        return row

    compile_s = 0.0
    if run.train.compile:
        # torch.compile compiles a graph at its first call. Do that outside the clock, on an
        # evaluation batch and without an optimizer step (weights unchanged), so train_s,
        # tokens/s, MFU and a max_seconds budget measure training, not compilation.
        # The evaluation graph (eval mode, no grad) is compiled here too. fork_rng keeps the
        # warm-up from moving the RNG that dropout draws from.
        t0 = time.perf_counter()
        x, y = eval_train[0]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            with autocast():
                _, loss = step_model(x, y)
            loss.backward()
            opt.zero_grad()
            evaluate(step_model, eval_train[:1], autocast)
        measure.synchronize(device)
        compile_s = time.perf_counter() - t0

    last = do_eval()
    first_loss = last["train_loss"]
    model.train()
    while status == "ok" and not reason:
        clock.start()
        chunk = CHUNK_STEPS if total_steps is None else min(CHUNK_STEPS, total_steps - step)
        next_eval = (step // run.train.eval_interval + 1) * run.train.eval_interval
        chunk = min(chunk, next_eval - step)
        for _ in range(chunk):
            if total_steps is not None:  # the cosine runs from the end of warmup to the end
                progress_frac = (step - run.optim.warmup_steps) / cosine_span
            else:  # time-only budget: the schedule follows the clock (read every chunk)
                progress_frac = clock.total / max_seconds
            lr = learning_rate(run.optim, step, progress_frac)
            x, y = sampler()
            with autocast():
                _, loss = step_model(x, y)
            loss.backward()
            if run.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, run.optim.grad_clip, foreach=True)
            opt.step(lr)
            opt.zero_grad()
            step += 1
        train_s = clock.stop()
        loss_value = loss.item()
        if not math.isfinite(loss_value) or loss_value > DIVERGENCE_FACTOR * first_loss:
            status, reason = "diverged", "diverged"
            log.warning("run %s diverged at step %d: loss %s (step-0 loss %.3f)",
                        run.run_id(), step, loss_value, first_loss)
        elif total_steps is not None and step >= total_steps:
            reason = step_reason(run.budget, tokens_per_step, flops_per_step)
        elif max_seconds is not None and train_s >= max_seconds:
            reason = "max_seconds"
        if progress is not None:
            progress({"step": step, "total_steps": total_steps, "loss": loss_value,
                      "train_s": train_s, "tokens_per_s": step * tokens_per_step / train_s})
        if reason or step % run.train.eval_interval == 0:
            last = do_eval()

    if out_dir is not None and run.train.save_checkpoint:
        save_checkpoint(out_dir / "ckpt.pt", model, run, tokenizer, step, last["val_loss"])
    if out_dir is not None and run.sample is not None and status == "ok":
        write_samples(out_dir / "samples.csv", model, tokenizer, run.sample)
    peak_rss = measure.peak_rss_mb()  # before the FLOP/s probe, which allocates its own
    peak = measure.measure_peak_flops(device, torch.bfloat16 if run.train.dtype == "bfloat16"
                                      else torch.float32)
    train_s = clock.total
    tokens = step * tokens_per_step
    return RunResult(
        run_id=run.run_id(), status=status, stop_reason=reason, steps=step, tokens=tokens,
        train_flops=step * flops_per_step, train_s=train_s, eval_s=eval_s, compile_s=compile_s,
        wall_s=time.perf_counter() - wall_start,
        tokens_per_s=tokens / train_s if train_s else 0.0,
        peak_rss_mb=peak_rss, peak_gpu_mb=measure.peak_gpu_mb(device),
        peak_flops=peak, mfu=(step * flops_per_step / train_s / peak) if train_s else 0.0,
        final_train_loss=last["train_loss"], final_val_loss=last["val_loss"],
        best_val_loss=best_val, best_step=best_step, n_params=counts["n_params"],
        n_params_non_embedding=counts["n_params_non_embedding"],
        flops_per_token=counts["flops_per_token"], vocab_size=tokenizer.vocab_size,
        device=device.type, hardware=measure.hardware_name(device),
    )
