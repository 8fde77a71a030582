"""Honest measurements: devices, synchronised clocks, peak memory, a measured FLOP/s peak, MFU."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from chargpt import machine_cache
from chargpt.files import read_json_object, write_json

log = logging.getLogger(__name__)

PROBE_VERSION = 3  # bump when the probe or its cache entry changes: cached figures are redone
PROBE_MAX_AGE_DAYS = machine_cache.MAX_AGE_DAYS  # a cached peak older than this is measured again
PROBE_LOCK_TIMEOUT_S = 300.0  # another process probing holds the cache lock this long at most


def resolve_device(name: str) -> torch.device:
    """The torch device for a config value: auto picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: cuda was asked for but torch.cuda.is_available() is False")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("train.device: mps was asked for but is not available")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a clock read after this covers the work before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def maxrss_mb(ru_maxrss: int) -> float:
    """A getrusage ru_maxrss in MiB (Linux reports KiB, macOS bytes)."""
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (since reset_peak_rss), in MiB.

    Linux: VmHWM of /proc/self/status, the figure reset_peak_rss resets (ru_maxrss is the
    same figure but cannot be reset). Elsewhere: getrusage's ru_maxrss.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux: "5" to /proc/self/clear_refs).

    A child forked from a warm parent starts with the parent's high-water mark; after this
    its peak_rss_mb is what it has resident now (the parent's pages it maps) plus whatever
    it grows to, as for a fresh process. False where the kernel does not allow it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_gpu_mb(device: torch.device) -> float | None:
    """torch.cuda.max_memory_allocated in MiB on CUDA, None elsewhere."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def oom_kill_count(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's cgroup so far.

    cgroup v2: `oom_kill` in memory.events; v1: `oom_kill` in memory.oom_control. None where
    neither can be read (not Linux, no memory controller): then no kill can be blamed on
    memory. A rise across a run is the evidence that the run was OOM-killed.
    """
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # v2, the unified hierarchy
            candidates += [
                cgroup_root / rel / "memory.events",
                cgroup_root / "memory.events",
                cgroup_root / "unified" / rel / "memory.events",
            ]
        elif "memory" in controllers.split(","):  # v1
            candidates += [
                cgroup_root / "memory" / rel / "memory.oom_control",
                cgroup_root / "memory" / "memory.oom_control",
            ]
    for candidate in candidates:
        try:
            for entry in candidate.read_text().splitlines():
                key, _, value = entry.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def cpu_model() -> str:
    """The CPU's marketing name, as the OS reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _flag_line(cpuinfo: str | None) -> tuple[str, list[str]] | None:
    """The first flag line of /proc/cpuinfo (or the given text of one): ("flags", x86 flags)
    or ("Features", ARM ones); None where there is none, or no such file (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            key, value = line.split(":", 1)
            return key.strip(), value.split()
    return None


def cpu_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU has bfloat16 matmul instructions (AVX512_BF16 or AMX); None if unknown.

    Without them PyTorch emulates bfloat16 on the CPU, which is slower than float32. Reads
    the x86 flags of /proc/cpuinfo (or the given text of one); other systems give None.
    """
    found = _flag_line(cpuinfo)
    if found is None or found[0] != "flags":
        return None
    return bool(set(found[1]) & {"avx512_bf16", "amx_bf16"})


# The /proc/cpuinfo flags that decide a CPU's matmul speed: x86 vector and matrix extensions,
# and ARM's ("Features": asimd, sve, bf16, i8mm).
SPEED_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "asimd", "sve", "bf16", "i8mm")


def cpu_flags(cpuinfo: str | None = None) -> list[str] | None:
    """The CPU's vector and matrix instruction flags (sorted), from /proc/cpuinfo (or the
    given text of one); None where there is no such file (macOS, Windows)."""
    found = _flag_line(cpuinfo)
    if found is None:
        return None
    return sorted({f for f in found[1] if f.startswith(SPEED_FLAG_PREFIXES)})


def git_commit() -> str | None:
    """The project's git commit (with -dirty when the tree has changes), if it is a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty.strip() else "")


def hardware_name(device: torch.device) -> str:
    """One short string naming the processor a run used."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def fingerprint(device: torch.device | None = None) -> dict[str, Any]:
    """Hardware and software description of this machine for env.json and results."""
    import numpy

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": _physical_cores(),
        "cpu_native_bf16": cpu_native_bf16(),
        "cpu_flags": cpu_flags(),
        "torch_threads": torch.get_num_threads(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "git_commit": git_commit(),
        "gpus": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": props.name, "memory_mb": props.total_memory / 2**20})
    if device is not None:
        info["device"] = device.type
    return info


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:  # psutil is a dependency; tolerate its absence in odd environments
        return None


def _probe_key(device: torch.device, dtype: torch.dtype) -> str:
    """The cache entry of a peak: the probe's version, processor, dtype, threads and torch.
    On a CPU its flags as well: VMs of two generations can share a name ("AMD EPYC" on Zen 4
    and Zen 5) and a home directory, and must not share a peak."""
    hw = hardware_name(device)
    if device.type == "cpu":
        flags = " ".join(cpu_flags() or [])
        hw += "|flags=" + hashlib.sha256(flags.encode()).hexdigest()[:12]
    return (
        f"v{PROBE_VERSION}|{hw}|{device.type}|{dtype}|threads={torch.get_num_threads()}|"
        f"torch={torch.__version__}"
    )


def _probe_cache() -> Path:
    return machine_cache.cache_file("peak_flops.json")


def measure_peak_flops(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seconds: float = 0.5,
    use_cache: bool = True,
) -> float:
    """Best matmul FLOP/s of this device, dtype and thread count, measured (cached per machine).

    The cache (`peak_flops.json` in the cache directory) is read, and filled, under a file lock,
    so concurrent runs neither race on it nor probe at the same time (which would lower both
    figures). Each entry records when it was measured and the load average then. An entry is
    measured again when older than PROBE_MAX_AGE_DAYS, or after forget_peak_flops()
    (`run_study.py --reprobe`, best on an idle machine).
    """
    if not use_cache:
        return probe_peak_flops(device, dtype, seconds)
    key, cache = _probe_key(device, dtype), _probe_cache()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{cache}.lock", timeout=PROBE_LOCK_TIMEOUT_S):
            entries = read_json_object(cache)
            entry = entries.get(key)
            if _fresh(entry):
                return float(entry["flops"])
            taken = machine_cache.stamp()
            load = taken["load_avg_1m"]
            if load is not None and load > 0.5 * (os.cpu_count() or 1):
                log.warning(
                    "measuring the peak FLOP/s while the machine is busy (load average "
                    "%.2f): MFU will read high; --reprobe on an idle machine",
                    load,
                )
            best = probe_peak_flops(device, dtype, seconds)
            entries[key] = {"flops": best, **taken}
            write_json(cache, entries)
            return best
    except (OSError, Timeout) as exc:  # a read-only home or a stuck lock must not fail a run
        log.warning("FLOP/s probe not cached (%s: %s); measuring without the cache", cache, exc)
        return probe_peak_flops(device, dtype, seconds)


def forget_peak_flops() -> None:
    """Drop every cached peak, so each is measured again at its next use."""
    machine_cache.forget(_probe_cache(), PROBE_LOCK_TIMEOUT_S)


def _fresh(entry: Any) -> bool:
    """A usable cache entry: well-formed and younger than the maximum age."""
    if not machine_cache.taken_recently(entry, PROBE_MAX_AGE_DAYS):
        return False
    try:
        return float(entry["flops"]) > 0
    except (KeyError, TypeError, ValueError):
        return False


def probe_peak_flops(
    device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 0.5
) -> float:
    """Time square matmuls of a few sizes for about `seconds` in all; the best rate wins.

    This is the peak MFU is reported against: measured on the machine, never a datasheet
    constant.
    """
    sizes = (512, 1024, 2048) if device.type == "cpu" else (2048, 4096, 8192)
    # Its own generator: a run probes after seeding (compile: auto asks for the peak before
    # the model is built), and drawing from the global RNG would change the run's weights
    # on a machine that has not cached the peak yet.
    gen = torch.Generator(device=device).manual_seed(0)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
        a @ b  # warm-up: allocations, kernel selection
        synchronize(device)
        reps, elapsed = 0, 0.0
        start = time.perf_counter()
        while elapsed < seconds / len(sizes) or reps < 2:
            t0 = time.perf_counter()
            a @ b
            synchronize(device)
            dt = time.perf_counter() - t0
            best = max(best, 2 * n**3 / dt)
            reps += 1
            elapsed = time.perf_counter() - start
    return best


class Stopwatch:
    """Accumulates seconds over intervals, synchronising the device before each clock read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total = 0.0
        self._start: float | None = None

    def start(self) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def stop(self) -> float:
        """End the interval; returns the running total in seconds."""
        if self._start is None:
            raise RuntimeError("Stopwatch.stop() without start()")
        synchronize(self.device)
        self.total += time.perf_counter() - self._start
        self._start = None
        return self.total
