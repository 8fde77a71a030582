"""What this machine has compiled before: the record `train.compile: auto` reads cost and gain from.

torch.compile keeps its kernels in inductor's cache, so a graph compiled once recompiles in
seconds (2.5-3.1 s for the nanoGPT CPU recipe, against 33-38 s cold). Without a record, auto
would charge every run the cold figure and never compile a run that only a warm compile pays
for. The record (`compiles.json` in chargpt's cache directory) lists, per graph (torch version,
hardware, model shape, batch size, dtype), how long its compiles took, how much faster its
compiled step ran, and which inductor cache holds the kernels; a graph counts as compiled
before only while that cache folder holds files. It keeps each graph's last few warm compile
times and gains (chargpt.compiling.RECENT, under "recent"), whose medians auto decides on,
and the medians themselves under warm_s and step_gain for whoever reads the file.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from chargpt.compiling import RECENT, figure, recent_figures
from chargpt.files import read_json_object, write_json

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 60.0


def graph_key(
    device: torch.device, hardware: str, model: dict[str, Any], batch_size: int, dtype: str
) -> str:
    """Short hash of what decides the graphs torch.compile builds for a run (and so whether
    inductor's cache holds them): torch, the device and processor, model shape, batch, dtype."""
    blob = json.dumps(
        {
            "torch": torch.__version__,
            "device": device.type,
            "hardware": hardware,
            "model": model,
            "batch_size": batch_size,
            "dtype": dtype,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def inductor_cache_dir() -> Path:
    """The folder inductor keeps compiled kernels in: TORCHINDUCTOR_CACHE_DIR, else its default,
    torchinductor_<user> in the temp folder. Worked out here rather than asked of torch:
    importing torch._inductor loads dynamo (memory an eager run should not pay) and creates the
    folder. Should torch move its default, graphs would only count as never compiled (cold)."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not folder:
        try:
            user = getpass.getuser()
        except (KeyError, OSError, ImportError):  # no user name (e.g. no pwd module)
            user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
        folder = os.path.join(
            tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user)
        )
    return Path(os.path.abspath(folder))


def _record_file() -> Path:
    from chargpt.corpus import cache_dir

    return cache_dir() / "compiles.json"


def past_compile(key: str) -> dict[str, Any] | None:
    """This graph's record if it was compiled here before and its kernels' cache folder is
    still there (cold_s: the first compile's seconds; warm_s: the median of the latest later
    ones, or None); None when it counts as never compiled."""
    entry = read_json_object(_record_file()).get(key)
    if not isinstance(entry, dict):
        return None
    inductor = inductor_cache_dir()
    if entry.get("inductor_dir") != str(inductor) or not _holds_files(inductor):
        return None
    return entry


def _holds_files(folder: Path) -> bool:
    """Whether the folder exists and is not empty (importing inductor creates it empty)."""
    try:
        return any(folder.iterdir())
    except OSError:
        return False


def record_compile(key: str, seconds: float, warm: bool, step_gain: float | None = None) -> None:
    """Note that this graph was compiled here, and in how long: `warm` when past_compile found
    it compiled before (then warm_s is updated), else this was a cold compile and starts the
    record afresh. step_gain: eager over compiled seconds of its forward and backward, as this
    run measured it (None: nothing measured). warm_s and step_gain become the medians of the
    last RECENT such figures (kept under "recent"). A cache folder that cannot be written costs
    the record, never the run."""
    path = _record_file()
    inductor = str(inductor_cache_dir())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S):
            entries = read_json_object(path)
            old = entries.get(key) if warm else None
            if isinstance(old, dict) and old.get("inductor_dir") == inductor:
                n = old.get("compiles")
                entry = {**old, "compiles": (n if isinstance(n, int) else 1) + 1}
                _add_recent(entry, "warm_s", seconds)
            else:
                entry = {"inductor_dir": inductor, "compiles": 1, "cold_s": seconds, "warm_s": None}
            if step_gain is not None:
                _add_recent(entry, "step_gain", step_gain)
            entries[key] = {**entry, "last_at": time.time()}
            write_json(path, entries)
    except (OSError, Timeout) as exc:
        log.warning("compile time not recorded (%s: %s)", path, exc)


def _add_recent(entry: dict[str, Any], name: str, value: float) -> None:
    """Append value to the entry's recent figures of `name` (chargpt.compiling.recent_figures:
    garbled ones dropped), keep the last RECENT and set `name` to their median."""
    figures = recent_figures(entry, name)
    if figure(value) is not None:
        figures.append(float(value))
    figures = figures[-RECENT:]
    recent = entry.get("recent")
    entry["recent"] = {**(recent if isinstance(recent, dict) else {}), name: figures}
    entry[name] = statistics.median(figures) if figures else None
