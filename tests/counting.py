"""Conditional entropies counted from a text: the plug-in estimates the corpora's exact figures
are checked against (tests/test_data.py, tests/test_lexicon.py)."""

from __future__ import annotations

import numpy as np


def counted_entropy(text: str, t: int) -> float:
    """H(x_{t+1} | the t characters before it), counted from text (plug-in estimate), in nats.

    A plug-in estimate is biased down, more so as contexts multiply."""
    ids = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64)
    a, n = 256, len(ids) - t
    context = np.zeros(n, dtype=np.int64)
    for i in range(t):  # the t characters before each position, as one base-256 number
        context = context * a + ids[i : i + n]
    pairs, joint = np.unique(context * a + ids[t : t + n], return_counts=True)
    contexts, context_counts = np.unique(context, return_counts=True)
    given = context_counts[np.searchsorted(contexts, pairs // a)]
    return float(-(joint / n * np.log(joint / given)).sum())
