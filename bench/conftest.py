"""pytest options and fixtures of the benchmarks: --quick, --bench-device, --bench-threads."""

from __future__ import annotations

import pytest
import torch

from bench.benchlib import bench_device, env_info


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chargpt bench")
    group.addoption(
        "--quick",
        action="store_true",
        default=False,
        help="tiny sizes and one round each, so CI can run every benchmark as a test",
    )
    group.addoption(
        "--bench-device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="device to benchmark on (auto: cuda when available, else cpu)",
    )
    group.addoption(
        "--bench-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the run (default: torch's own choice)",
    )


def pytest_configure(config: pytest.Config) -> None:
    threads = config.getoption("--bench-threads", default=None)
    if threads:
        torch.set_num_threads(threads)
    name = config.getoption("--bench-device", default=None)
    if name is None:  # this conftest was found during collection: its options were not added
        return
    try:
        bench_device(config)  # checked once, as one line, rather than failing every benchmark
    except ValueError:  # measure.resolve_device's message names the config key train.device
        raise pytest.UsageError(
            f"--bench-device {name}: torch has no {name} device available on this machine"
        ) from None


def is_quick(config: pytest.Config) -> bool:
    """True under --quick (tiny sizes, one round: a smoke test of the benchmark code)."""
    return bool(config.getoption("--quick"))


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    return bench_device(pytestconfig)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Add torch, thread count and the benchmarked device to the JSON's machine_info."""
    machine_info["chargpt"] = {**env_info(bench_device(config)), "quick": is_quick(config)}
