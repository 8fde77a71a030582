"""The peak-FLOP/s probe's cache (locked, dated, forgettable) and the cgroup-free helpers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from chargpt import measure

CPU = torch.device("cpu")


def cache_file(cache_home: Path) -> Path:
    return cache_home / "chargpt" / "peak_flops.json"


def test_each_test_has_its_own_cache(empty_cache: Path) -> None:
    assert measure._probe_cache() == cache_file(empty_cache)
    assert not str(measure._probe_cache()).startswith(str(Path.home() / ".cache"))


def test_a_test_cache_starts_with_the_session_probe(_test_cache: Path) -> None:
    """Tests other than the probe's own find the peak at their thread count already there."""
    (key,) = json.loads(cache_file(_test_cache).read_text())
    assert key == measure._probe_key(CPU, torch.float32)


def test_cpus_sharing_a_name_do_not_share_a_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zen 4 and Zen 5 VMs both call themselves "AMD EPYC"; their flags tell them apart."""
    monkeypatch.setattr(measure, "cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(measure, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16"])
    zen4 = measure._probe_key(CPU, torch.float32)
    monkeypatch.setattr(
        measure, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16", "avx_vnni"]
    )
    assert measure._probe_key(CPU, torch.float32) != zen4


def test_probe_is_cached_with_when_and_how_loaded(empty_cache: Path) -> None:
    first = measure.measure_peak_flops(CPU, seconds=0.05)
    (entry,) = json.loads(cache_file(empty_cache).read_text()).values()
    assert entry["flops"] == first > 1e8
    assert time.time() - 60 < entry["measured_at"] <= time.time()
    assert "load_avg_1m" in entry and entry["cpu_count"] >= 1
    assert measure.measure_peak_flops(CPU, seconds=0.05) == first  # from the cache


def test_compile_auto_neither_probes_the_peak_nor_moves_the_rng(
    empty_cache: Path, text_file: Path
) -> None:
    """compile: auto times an eager step on the seeded model (not the peak, which only MFU
    needs, after training): the weights and the RNG that then draws dropout must be those of
    an eager run."""
    from chargpt.run_setup import setup
    from tests.test_train import tiny_run

    drop = {"dropout": 0.1}  # so that a forward draws from the RNG
    auto = setup(tiny_run(str(text_file), model=drop, train={"compile": "auto"}))
    assert not cache_file(empty_cache).exists()  # no peak probed to decide
    auto_rng = torch.get_rng_state()
    eager = setup(tiny_run(str(text_file), model=drop, train={"compile": False}))
    assert torch.equal(auto_rng, torch.get_rng_state())
    weights = auto.model.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in eager.model.state_dict().items())


@pytest.mark.slow
def test_old_entries_and_forget_measure_again(empty_cache: Path) -> None:
    measure.measure_peak_flops(CPU, seconds=0.05)
    path = cache_file(empty_cache)
    entries = json.loads(path.read_text())
    (key,) = entries
    old = time.time() - (measure.PROBE_MAX_AGE_DAYS + 1) * 86400
    entries[key].update(flops=1.0, measured_at=old)
    path.write_text(json.dumps(entries))
    again = measure.measure_peak_flops(CPU, seconds=0.05)
    assert again > 1e8 and again != 1.0  # too old: measured again
    entries = json.loads(path.read_text())
    entries[key]["flops"] = 7.0  # a young entry is trusted ...
    path.write_text(json.dumps(entries))
    assert measure.measure_peak_flops(CPU, seconds=0.05) == 7.0
    measure.forget_peak_flops()  # ... until it is forgotten (run_study.py --reprobe)
    assert not path.exists()
    assert measure.measure_peak_flops(CPU, seconds=0.05) != 7.0
    assert json.loads(path.read_text())[key]["flops"] > 1e8


@pytest.mark.slow
def test_concurrent_probes_keep_every_entry(empty_cache: Path) -> None:
    """Three processes, three thread counts (three cache keys), one cache file: none is lost."""
    code = (
        "import sys, torch; from chargpt import measure; "
        "torch.set_num_threads(int(sys.argv[1])); "
        "measure.measure_peak_flops(torch.device('cpu'), seconds=0.05)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in (1, 2, 3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    entries = json.loads(cache_file(empty_cache).read_text())
    assert sorted(k.split("threads=")[1].split("|")[0] for k in entries) == ["1", "2", "3"]


def test_an_unwritable_cache_still_measures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert measure.measure_peak_flops(CPU, seconds=0.05) > 1e8
