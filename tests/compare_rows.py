"""row(): one program's round as bench.compare_nanogpt records it, for the comparison tests."""

from __future__ import annotations

from typing import Any


def row(
    rnd: int, program: str, tokens_per_s: float, val: float = 1.90, compile_s: float | None = None
) -> dict[str, Any]:
    """A compare_nanogpt row: the figures pooling and the table read, the rest fixed."""
    return {
        "round": rnd,
        "program": program,
        "tokens_per_s": tokens_per_s,
        "wall_s": 90.0,
        "peak_rss_mb": 300.0,
        "printed_val_loss": val,
        "full_val_loss": val,
        "compile_s": compile_s,
    }
