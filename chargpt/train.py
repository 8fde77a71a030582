"""The one training loop: train a set-up run to its budget, evaluate, measure, save.

`train(run)` reads as its stages: `setup` (chargpt.run_setup) builds everything before the
clock starts, `warm_up_compile` (chargpt.compile_step) keeps torch.compile's compilation off
the clock, `Trainer.fit` alternates timed chunks of `TrainStep` with evaluations (saving a
resumable state now and then, and going on from one a killed run left), and `finish` saves
and measures.
"""

from __future__ import annotations

import csv
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from chargpt import measure, schema
from chargpt.checkpoint import CheckpointError, load_state, save_checkpoint, save_state
from chargpt.compile_record import record_compile
from chargpt.compile_step import measure_step_gain, warm_up_compile
from chargpt.config import RunConfig, SampleConfig
from chargpt.data import CharTokenizer
from chargpt.files import atomic_open
from chargpt.model import GPT
from chargpt.run_setup import Setup, setup
from chargpt.schedule import learning_rate, step_reason
from chargpt.schema import STATE_FILE, RunResult

log = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]
CHUNK_STEPS = 10  # steps between clock reads / loss checks (each one is a device sync)
DIVERGENCE_FACTOR = 3.0  # a loss this many times the step-0 loss counts as diverged


class CSVSink:
    """Appends each metric dict as a row of a CSV file, flushed at once."""

    def __init__(self, path: Path, columns: list[str] = schema.CURVE_COLUMNS) -> None:
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


# ----- stage 3: train ---------------------------------------------------------------------


class Trainer:
    """Runs timed chunks of steps and the evaluations between them, and keeps the score."""

    def __init__(
        self,
        s: Setup,
        sinks: list[Sink],
        out_dir: Path | None,
        progress: Callable[[dict[str, Any]], None] | None,
        wall_start: float,
    ) -> None:
        self.s = s
        self.sinks = sinks
        self.out_dir = out_dir
        self.progress = progress
        self.wall_start = wall_start
        self.clock = measure.Stopwatch(s.device)
        self.step = 0
        self.lr = learning_rate(s.run.optim, 0, 0.0)
        self.eval_s = 0.0
        self.best_val, self.best_step = math.inf, 0
        self.curve: list[dict[str, Any]] = []  # every evaluation row so far
        self.first_loss = math.nan  # the step-0 train loss: divergence is judged against it
        self.status, self.stop_reason = schema.OK, ""
        self.resumes = 0  # how often this run went on from a saved state
        self.wall_before = 0.0  # wall seconds of the segments before this process's
        self.saved_step, self.saved_at = 0, time.monotonic()
        # The cosine runs from the end of warmup to the end of a step-bounded budget.
        self.cosine_span = max(1, (s.total_steps or 0) - s.run.optim.warmup_steps)

    def evaluate(self) -> None:
        """One curve row: fixed-batch losses, sent to the sinks; the best model is kept."""
        s, t0 = self.s, time.perf_counter()
        row = {
            "step": self.step,
            "tokens": self.step * s.tokens_per_step,
            "flops": self.step * s.flops_per_step,
            "train_s": self.clock.total,
            "lr": self.lr,
            **s.evaluator(s.step_model),
            "tokens_per_s": self.tokens_per_s(),
        }
        if row["val_loss"] < self.best_val:
            self.best_val, self.best_step = row["val_loss"], self.step
            if self.out_dir is not None and s.run.train.save_best:
                save_checkpoint(
                    self.out_dir / "ckpt_best.pt",
                    s.model,
                    s.run,
                    s.splits.tokenizer,
                    self.step,
                    self.best_val,
                )
        self.eval_s += time.perf_counter() - t0
        for sink in self.sinks:
            sink(row)
        self.curve.append(row)

    @property
    def last(self) -> dict[str, Any]:
        """The latest evaluation row."""
        return self.curve[-1]

    def tokens_per_s(self) -> float:
        return self.step * self.s.tokens_per_step / self.clock.total if self.clock.total else 0.0

    def fit(self) -> None:
        """Evaluate, then train chunk by chunk until the budget is spent or the loss blows up."""
        if not self.curve:  # a resumed run has its step-0 evaluation already
            self.evaluate()
            self.first_loss = self.last["train_loss"]
        self.s.model.train()
        while self.status == schema.OK and not self.stop_reason:
            loss = self.run_chunk()
            self.check_stop(loss)
            if self.progress is not None:
                self.progress(
                    {
                        "step": self.step,
                        "total_steps": self.s.total_steps,
                        "loss": loss,
                        "train_s": self.clock.total,
                        "tokens_per_s": self.tokens_per_s(),
                    }
                )
            if self.stop_reason or self.step % self.s.run.train.eval_interval == 0:
                self.evaluate()
            if not self.stop_reason and self.state_due():
                self.save_state()

    # ----- resumable state ----------------------------------------------------------------
    def state_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / STATE_FILE

    def state_due(self) -> bool:
        """Whether checkpoint_interval steps or checkpoint_interval_s seconds have passed."""
        train = self.s.run.train
        if self.out_dir is None:
            return False
        by_steps = (
            train.checkpoint_interval is not None
            and self.step - self.saved_step >= train.checkpoint_interval
        )
        by_time = (
            train.checkpoint_interval_s is not None
            and time.monotonic() - self.saved_at >= train.checkpoint_interval_s
        )
        return by_steps or by_time

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to go on exactly from here: weights, optimizer, RNGs, the score."""
        s = self.s
        cuda = s.device.type == "cuda"
        return {
            "run_id": s.run_id,
            "model": {k: v.detach().cpu() for k, v in s.model.state_dict().items()},
            "optimizer": s.train_step.optimizer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(s.device) if cuda else None,
                "sampler": s.sampler.generator.get_state(),
            },
            "trainer": {
                "step": self.step,
                "lr": self.lr,
                "eval_s": self.eval_s,
                "best_val": self.best_val,
                "best_step": self.best_step,
                "train_s": self.clock.total,
                "first_loss": self.first_loss,
                "resumes": self.resumes,
                "wall_s": self.wall_before + time.perf_counter() - self.wall_start,
            },
            "curve": self.curve,
        }

    def save_state(self) -> None:
        path = self.state_path()
        assert path is not None
        save_state(path, self.state_dict())
        self.saved_step, self.saved_at = self.step, time.monotonic()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from a state_dict(): the rows so far are sent to the sinks again."""
        s, t = self.s, state["trainer"]
        s.model.load_state_dict(state["model"])
        s.train_step.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], s.device)
        s.sampler.generator.set_state(state["rng"]["sampler"])
        self.step, self.lr, self.eval_s = t["step"], t["lr"], t["eval_s"]
        self.best_val, self.best_step = t["best_val"], t["best_step"]
        self.clock.total, self.first_loss = t["train_s"], t["first_loss"]
        self.resumes, self.wall_before = t["resumes"] + 1, t["wall_s"]
        self.saved_step = self.step
        self.curve = list(state["curve"])
        for row in self.curve:
            for sink in self.sinks:
                sink(row)

    def resume(self) -> bool:
        """Go on from the run directory's state.pt if there is one; a bad one is set aside."""
        path = self.state_path()
        if path is None or not path.is_file():
            return False
        try:
            self.load_state_dict(load_state(path, self.s.run_id))
        except (CheckpointError, KeyError, ValueError, RuntimeError) as exc:
            log.warning(
                "run %s: cannot go on from %s (%s); training from the start",
                self.s.run_id,
                path,
                exc,
            )
            return False
        log.info("run %s: going on from step %d (%s)", self.s.run_id, self.step, path)
        return True

    def run_chunk(self) -> float:
        """Up to CHUNK_STEPS steps, stopping at the next evaluation or the budget's end; the
        clock is read (and the device synchronised) only around the chunk."""
        s, optim = self.s, self.s.run.optim
        chunk = (
            CHUNK_STEPS if s.total_steps is None else min(CHUNK_STEPS, s.total_steps - self.step)
        )
        interval = s.run.train.eval_interval
        chunk = min(chunk, (self.step // interval + 1) * interval - self.step)
        self.clock.start()
        for _ in range(chunk):
            if s.total_steps is not None:
                progress = (self.step - optim.warmup_steps) / self.cosine_span
            else:  # time-only budget: the schedule follows the clock (read every chunk)
                progress = self.clock.total / s.run.budget.max_seconds
            self.lr = learning_rate(optim, self.step, progress)
            loss = s.train_step(*s.sampler(), self.lr)
            self.step += 1
        self.clock.stop()
        return loss.item()

    def check_stop(self, loss: float) -> None:
        """Diverged, or which budget limit ended the run (nothing if training goes on)."""
        s = self.s
        if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * self.first_loss:
            self.status = self.stop_reason = schema.DIVERGED
            log.warning(
                "run %s diverged at step %d: loss %s (step-0 loss %.3f)",
                s.run_id,
                self.step,
                loss,
                self.first_loss,
            )
        elif s.total_steps is not None and self.step >= s.total_steps:
            self.stop_reason = step_reason(s.run.budget, s.tokens_per_step, s.flops_per_step)
        elif s.run.budget.max_seconds is not None and self.clock.total >= s.run.budget.max_seconds:
            self.stop_reason = "max_seconds"


# ----- stage 4: save and measure ----------------------------------------------------------


def write_samples(path: Path, model: GPT, tokenizer: CharTokenizer, cfg: SampleConfig) -> None:
    """samples.csv: one row per (temperature, prompt), written atomically."""
    from chargpt.sample import sample_grid

    with atomic_open(path) as f:
        writer = csv.DictWriter(f, fieldnames=["temperature", "prompt", "text"])
        writer.writeheader()
        writer.writerows(sample_grid(model, tokenizer, cfg))


def finish(s: Setup, t: Trainer, out_dir: Path | None, compile_s: float) -> RunResult:
    """Save the checkpoint and samples, then take the run's measurements."""
    run, tokenizer = s.run, s.splits.tokenizer
    if out_dir is not None and run.train.save_checkpoint:
        save_checkpoint(out_dir / "ckpt.pt", s.model, run, tokenizer, t.step, t.last["val_loss"])
    if out_dir is not None and run.sample is not None and t.status == schema.OK:
        write_samples(out_dir / "samples.csv", s.model, tokenizer, run.sample)
    peak_rss = measure.peak_rss_mb()  # before the FLOP/s probe, which allocates its own
    peak = measure.measure_peak_flops(
        s.device, torch.bfloat16 if s.dtype == "bfloat16" else torch.float32
    )
    train_s, train_flops = t.clock.total, t.step * s.flops_per_step
    return RunResult(
        run_id=s.run_id,
        status=t.status,
        stop_reason=t.stop_reason,
        n_params=s.counts["n_params"],
        n_params_non_embedding=s.counts["n_params_non_embedding"],
        flops_per_token=s.counts["flops_per_token"],
        steps=t.step,
        tokens=t.step * s.tokens_per_step,
        train_flops=train_flops,
        train_s=train_s,
        eval_s=t.eval_s,
        compiled=s.compiled,
        compile_reason=s.compile_reason,
        compile_s=compile_s,
        wall_s=t.wall_before + time.perf_counter() - t.wall_start,
        resumes=t.resumes,
        tokens_per_s=t.tokens_per_s(),
        peak_rss_mb=peak_rss,
        peak_gpu_mb=measure.peak_gpu_mb(s.device),
        peak_flops=peak,
        mfu=train_flops / train_s / peak if train_s else 0.0,
        final_train_loss=t.last["train_loss"],
        final_val_loss=t.last["val_loss"],
        best_val_loss=t.best_val,
        best_step=t.best_step,
        vocab_size=tokenizer.vocab_size,
        corpus_sha256=s.splits.sha256,
        device=s.device.type,
        dtype=s.dtype,
        hardware=measure.hardware_name(s.device),
        hostname=socket.gethostname(),
    )


def train(
    run: RunConfig,
    sinks: Iterable[Sink] = (),
    out_dir: Path | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    compile_shared_by: int = 1,
) -> RunResult:
    """Train one run to its budget; emit a metric dict per evaluation; return what it measured.
    compile_shared_by: see chargpt.compiling.choose_compile (a study's runner sets it)."""
    wall_start = time.perf_counter()
    threads_before = torch.get_num_threads()  # restored: the caller's setting is its own
    try:
        if run.train.threads is not None:
            torch.set_num_threads(run.train.threads)
        s = setup(run, compile_shared_by)
        compile_s = 0.0
        if s.compiled:
            compile_s = warm_up_compile(s)
            gain = measure_step_gain(s)
            log.info("compiled in %.1f s; forward and backward %.2fx eager", compile_s, gain)
            # the next run of this graph compiles warm, and auto knows what it gains
            record_compile(s.graph_key, compile_s, warm=s.compiled_before, step_gain=gain)
        trainer = Trainer(s, list(sinks), out_dir, progress, wall_start)
        trainer.resume()
        trainer.fit()
        return finish(s, trainer, out_dir, compile_s)
    finally:
        torch.set_num_threads(threads_before)
