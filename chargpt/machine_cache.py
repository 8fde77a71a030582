"""chargpt's caches of this machine's measurements: a JSON object file each in the cache
directory, written under a file lock, an entry trusted for MAX_AGE_DAYS after it was taken."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

MAX_AGE_DAYS = 30.0  # an entry older than this is measured again (machines and loads change)


def cache_file(name: str) -> Path:
    """The cache file `name` in chargpt's cache directory (XDG_CACHE_HOME/chargpt)."""
    from chargpt.corpus import cache_dir

    return cache_dir() / name


def stamp() -> dict[str, Any]:
    """When an entry is taken, and the machine's load then (a busy machine skews figures)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"measured_at": time.time(), "load_avg_1m": load, "cpu_count": os.cpu_count()}


def taken_recently(entry: Any, max_age_days: float = MAX_AGE_DAYS) -> bool:
    """Whether an entry is a mapping stamped (measured_at) less than max_age_days ago."""
    if not isinstance(entry, dict):
        return False
    try:
        age_days = (time.time() - float(entry["measured_at"])) / 86400
    except (KeyError, TypeError, ValueError):
        return False
    return 0 <= age_days <= max_age_days


def forget(path: Path, lock_timeout_s: float) -> None:
    """Drop a whole cache file, under its lock, so every entry is measured again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=lock_timeout_s):
        path.unlink(missing_ok=True)
