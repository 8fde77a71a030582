"""Shared fixtures: an isolated cache per test (with the session's probed peak), a small
structured text, the smoke study; single-threaded torch and the order files are handed out in."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# One torch thread per process, set before torch loads OpenMP. The suite runs one pytest
# process per core (-n auto), and the runs a test starts inherit this; OpenMP threads of tiny
# models that share a busy core wait on each other at every op (a run re-done in-process took
# 37 s beside another worker, 3 s alone). Tests about thread counts set their own.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from cli_helpers import run_here  # noqa: E402

from chargpt import measure  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# The longest modules, first: `-n auto --dist loadfile` hands whole files to the workers in
# collection order, and one started last keeps a worker busy while the other waits (measured
# on 2 cores: test_ray.py ~80 s, test_plots.py ~50 s; every other file under 35 s).
LONGEST_FIRST = ("test_ray.py", "test_plots.py", "test_isoflop.py")


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist orders files by their number of tests unless told otherwise: keep ours
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


@pytest.fixture(scope="session")
def _session_peaks(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """peak_flops.json with this machine's float32 peak at the thread count the tests run at,
    probed once a session in a cache of its own: every training run needs its device's peak
    (for MFU), and probing afresh in each test's empty cache cost about 1 s a test. (Only this
    count: the other test process probes at the same moment, on the other core; a run at
    another count probes into its own test's cache.)"""
    home = tmp_path_factory.mktemp("session_peaks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home))
        measure.measure_peak_flops(torch.device("cpu"))
        return measure._probe_cache().read_bytes()


@pytest.fixture(scope="session", autouse=True)
def _session_cache(
    tmp_path_factory: pytest.TempPathFactory, _session_peaks: bytes
) -> Iterator[None]:
    """Module fixtures (set up before any per-test fixture) never touch the user's cache; theirs
    starts with the session's probe."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("session_cache")))
        _seed_probe(_session_peaks)
        yield


@pytest.fixture(autouse=True)
def _test_cache(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """Each test gets its own cache directory (peak FLOP/s probe, downloads): a peak measured
    while the suite loads the machine must never become the one later real studies use. It
    starts with the session's probe (see _session_peaks), or empty for a test that asks for
    the `empty_cache` fixture (the probe's own tests)."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    if "empty_cache" not in request.fixturenames:
        _seed_probe(request.getfixturevalue("_session_peaks"))
    return cache


def _seed_probe(peaks: bytes) -> None:
    """Write the session's peak_flops.json where chargpt now reads its cache (XDG_CACHE_HOME)."""
    probe = measure._probe_cache()
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(peaks)


@pytest.fixture
def empty_cache(_test_cache: Path) -> Path:
    """This test's cache directory, with nothing in it (no probed peak)."""
    return _test_cache


WORDS = (
    "the",
    "king",
    "and",
    "queen",
    "of",
    "rome",
    "shall",
    "speak",
    "to",
    "thee",
    "now",
    "my",
    "lord",
    "good",
    "night",
    "sweet",
    "prince",
)


def make_text(n_lines: int = 200, seed: int = 0) -> str:
    """Seeded lines of words with capitals and punctuation (structured, so bigrams help)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        lines.append(" ".join(words).capitalize() + rng.choice(".,!?"))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def small_text() -> str:
    """About 6,000 characters of generated English-like text, the same on every run."""
    return make_text()


@pytest.fixture
def text_file(tmp_path: Path, small_text: str) -> Path:
    """small_text written as a UTF-8 file in a fresh temporary directory."""
    path = tmp_path / "small.txt"
    path.write_text(small_text, encoding="utf-8")
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread: tiny models on a shared 2-core machine slow down with more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_study(
    tmp_path_factory: pytest.TempPathFactory, _session_cache: None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """studies/smoke.yaml run once through the CLI's main() (run_here: one torch thread a run):
    (its exit code and output, its results directory). Shared by the runner's, the plots' and
    the Ray tests; tests that change it copy it."""
    out = tmp_path_factory.mktemp("smoke") / "results"
    return run_here(REPO / "studies" / "smoke.yaml", "--out", out), out / "smoke"
