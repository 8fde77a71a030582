"""Progress reporting for the study runner: tqdm bars on a terminal, log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from chargpt.schema import FINISHED

log = logging.getLogger("chargpt.study")


class LogReporter:
    """Plain lines: one when a run starts, every ~10 s of progress, and when it ends. A run
    keeps the number it started with ([3/10]) in its last line, so runs side by side (--jobs)
    that end in another order are still told apart; that line also counts the runs done."""

    def __init__(self, every_s: float = 10.0, verbose: bool = True) -> None:
        self.every_s = every_s
        self.verbose = verbose
        self._last: dict[str, float] = {}
        self._number: dict[str, int] = {}  # each active run's place in the order of starts
        self.total = 0
        self.done = 0
        self.started = 0

    def start(self, total: int, already_done: int) -> None:
        self.total, self.done, self.started = total, already_done, already_done
        self._number.clear()
        log.info(
            "%d runs in the plan, %d already done, %d to run",
            total,
            already_done,
            total - already_done,
        )

    def run_started(self, run_id: str, label: str) -> None:
        self._last[run_id] = time.monotonic()
        self.started += 1
        self._number[run_id] = self.started
        if self.verbose:
            log.info("[%d/%d] start %s (%s)", self.started, self.total, label, run_id)

    def progress(self, run_id: str, label: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.verbose and now - self._last.get(run_id, 0.0) >= self.every_s:
            self._last[run_id] = now
            total = info.get("total_steps") or "?"
            log.info(
                "  %s: step %s/%s, loss %.4f, %.0f tokens/s",
                label,
                info["step"],
                total,
                info["loss"],
                info["tokens_per_s"],
            )

    def run_finished(self, run_id: str, label: str, record: dict[str, Any]) -> None:
        self.done += 1
        self._last.pop(run_id, None)
        log.info(
            "[%d/%d] %s %s (%s): %s; %d of %d done",
            self._number.pop(run_id, self.done),
            self.total,
            record.get("status"),
            label,
            run_id,
            _summary(record),
            self.done,
            self.total,
        )

    def close(self) -> None:
        pass


class TqdmReporter(LogReporter):
    """A study bar (runs done / total, ETA) and one bar per active run (steps, loss, tok/s)."""

    def __init__(self) -> None:
        super().__init__(verbose=False)
        from tqdm import tqdm

        self._tqdm = tqdm
        self._study: Any = None
        self._bars: dict[str, Any] = {}

    def start(self, total: int, already_done: int) -> None:
        super().start(total, already_done)
        self._study = self._tqdm(
            total=total,
            initial=already_done,
            desc="study",
            unit="run",
            position=0,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def run_started(self, run_id: str, label: str) -> None:
        self._bars[run_id] = self._tqdm(
            total=None,
            desc=label[:28],
            unit="step",
            leave=False,
            position=len(self._bars) + 1,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def progress(self, run_id: str, label: str, info: dict[str, Any]) -> None:
        bar = self._bars.get(run_id)
        if bar is None:
            return
        if info.get("total_steps") and bar.total != info["total_steps"]:
            bar.total = info["total_steps"]
        bar.update(info["step"] - bar.n)
        bar.set_postfix(
            loss=f"{info['loss']:.3f}", tok_s=f"{info['tokens_per_s']:.0f}", refresh=False
        )

    def run_finished(self, run_id: str, label: str, record: dict[str, Any]) -> None:
        bar = self._bars.pop(run_id, None)
        if bar is not None:
            bar.close()
        self.done += 1
        self._study.write(f"{record.get('status'):>8} {label} ({run_id}): {_summary(record)}")
        self._study.update(1)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        if self._study is not None:
            self._study.close()


def _summary(record: dict[str, Any]) -> str:
    if record.get("status") in FINISHED:
        return (
            f"best val {float(record['best_val_loss']):.4f}, "
            f"{float(record['train_s']):.1f} s, {float(record['tokens_per_s']):.0f} tokens/s"
        )
    return str(record.get("error", ""))
