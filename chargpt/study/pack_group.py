"""bench.packing --groups: a planned group of different runs measured together, to check the
per-shape figures (pack_probe.measure_speed) that --jobs auto predicts such groups from."""

from __future__ import annotations

from chargpt.config import RunConfig
from chargpt.study.pack_probe import Copies, PackSpeed, ProbeError, alternate_rounds, too_big


def measure_group(
    runs: list[tuple[RunConfig, int]], rounds: int = 5, seconds: float = 0.5
) -> list[PackSpeed]:
    """Each (run, vocab_size) alone on len(runs) threads, in turn, against all of them stepping
    at once on one thread each, in alternating rounds: each run's figure in the group, in
    order (beside_s: its step beside the others, not beside copies of itself). A run whose
    steps are longer than the others' is timed beside them all the same (pack_probe._child)."""
    cores = len(runs)
    if cores < 2:
        raise ValueError(f"a group needs at least 2 runs, got {cores}")
    for run, vocab_size in runs:  # the largest's copies bound the group's memory from above
        if (why := too_big(run, vocab_size, cores)) is not None:
            raise ProbeError(why)
    everyone = list(range(cores))
    copies = Copies(runs)
    try:
        alone, relative = alternate_rounds(
            rounds,
            alone=lambda _: [copies.step([j], cores, seconds)[0] for j in everyone],
            beside=lambda: copies.step(everyone, 1, seconds),
        )
    finally:
        copies.close()
    return [PackSpeed.from_rounds(a, r, cores) for a, r in zip(alone, relative, strict=True)]
