"""The synthetic corpus: a seeded order-2 Markov chain over 8 letters, with its exact entropy."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# The synthetic corpus: a seeded order-2 Markov chain over 8 letters. Its transition rows are
# drawn from a sparse Dirichlet so the text is learnable yet not trivial; the entropy rate of
# the chain is computed exactly from its stationary distribution (see SyntheticSpec).
SYNTHETIC_ALPHABET = "abcdefgh"
SYNTHETIC_ORDER = 2
SYNTHETIC_LENGTH = 200_000
SYNTHETIC_SEED = 0
SYNTHETIC_CONCENTRATION = 0.3


@dataclass(frozen=True)
class SyntheticSpec:
    """An order-k Markov chain over an alphabet with an exactly known entropy rate."""

    alphabet: str
    order: int
    transitions: np.ndarray  # (len(alphabet) ** order, len(alphabet)), rows sum to 1

    @property
    def entropy_rate(self) -> float:
        """Entropy rate in nats per character: sum over contexts of pi(c) * H(P(. | c))."""
        pi = self.stationary()
        p = self.transitions
        row_entropy = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=1)
        return float(pi @ row_entropy)

    def window_floor(self, block_size: int) -> float:
        """The least expected loss over a window of block_size positions, in nats per character.

        Position t predicts from the t + 1 characters it sees, so the first order - 1 positions
        lack part of the context: a model's val loss at this block size cannot go below this,
        which is above the entropy rate (1.323 against 1.281 at block_size 16 here)."""
        a, k = len(self.alphabet), self.order
        joint = self.stationary()[:, None] * self.transitions  # P(context, next symbol)
        per_position = []
        for t in range(block_size):
            seen = min(t + 1, k)
            # a context's index has its newest symbol last: sum out the k - seen oldest
            j = joint.reshape(a ** (k - seen), a**seen, a).sum(axis=0)
            cond = j / np.maximum(j.sum(axis=1, keepdims=True), 1e-300)
            per_position.append(float(-(j * np.log(np.where(cond > 0, cond, 1.0))).sum()))
        return float(np.mean(per_position))

    def stationary(self) -> np.ndarray:
        """Stationary distribution over contexts: the left eigenvector of the context chain."""
        a = len(self.alphabet)
        n = a**self.order
        chain = np.zeros((n, n))
        for ctx in range(n):
            # Appending symbol s to context ctx drops its oldest symbol.
            chain[ctx, (ctx * a) % n + np.arange(a)] = self.transitions[ctx]
        # Solve pi (chain - I) = 0 with sum(pi) = 1 as one least-squares system.
        system = np.vstack([(chain - np.eye(n)).T, np.ones((1, n))])
        rhs = np.zeros(n + 1)
        rhs[-1] = 1.0
        pi, *_ = np.linalg.lstsq(system, rhs, rcond=None)
        return pi


def synthetic_spec(seed: int = SYNTHETIC_SEED) -> SyntheticSpec:
    """The synthetic chain's transition table, drawn from a seeded sparse Dirichlet."""
    rng = np.random.default_rng(seed)
    a = len(SYNTHETIC_ALPHABET)
    probs = rng.dirichlet(np.full(a, SYNTHETIC_CONCENTRATION), size=a**SYNTHETIC_ORDER)
    probs = np.maximum(probs, 1e-6)  # keep the chain irreducible
    return SyntheticSpec(SYNTHETIC_ALPHABET, SYNTHETIC_ORDER, probs / probs.sum(1, keepdims=True))


@lru_cache(maxsize=4)
def synthetic_text(length: int = SYNTHETIC_LENGTH, seed: int = SYNTHETIC_SEED) -> str:
    """A deterministic sample of the synthetic chain, length characters long."""
    spec = synthetic_spec(seed)
    a = len(spec.alphabet)
    n = a**spec.order
    cdf = np.cumsum(spec.transitions, axis=1)
    uniforms = np.random.default_rng(seed + 1).random(length)
    out = np.empty(length, dtype=np.int64)
    ctx = 0
    for i in range(length):
        sym = min(int(np.searchsorted(cdf[ctx], uniforms[i], side="right")), a - 1)
        out[i] = sym
        ctx = (ctx * a) % n + sym
    return "".join(np.array(list(spec.alphabet))[out])
