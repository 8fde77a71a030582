"""The lexicon corpus: Zipf-distributed words, drawn i.i.d., whose loss floor is known exactly."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# A lexicon of LEXICON_WORDS distinct words of 2 to 6 letters over 8 letters, the k-th most
# frequent drawn with probability proportional to k^-LEXICON_ZIPF, written one after another
# with a space after each. A model learns frequent words first and rare ones only with more
# data and more parameters, so its loss falls smoothly in both, as a power law: the corpus the
# parametric fit L(N, D) = E + A/N^alpha + B/D^beta is checked on (issue 13). The order-2 chain
# (the `synthetic` corpus) is learned in one jump instead: a plateau, then a drop.
# An exponent of 1 or less gives a logarithmic tail (the words not yet learned hold
# sum_{k > K} k^-1 ~ log(W / K) of the mass), not a power law; 1.4 keeps the tail a power law
# while leaving words to learn at every size chargpt trains here.
LEXICON_ALPHABET = "abcdefgh"
LEXICON_WORDS = 10_000
LEXICON_ZIPF = 1.4
LEXICON_LENGTHS = (2, 6)  # shortest and longest word
LEXICON_CHARS = 2_000_000  # long enough that 1.6M training tokens stay under one epoch
LEXICON_SEED = 0
# What the text is a function of: chargpt.corpus fingerprints the corpus by these, as run ids need.
LEXICON_PARAMS = (
    LEXICON_ALPHABET,
    LEXICON_WORDS,
    LEXICON_ZIPF,
    LEXICON_LENGTHS,
    LEXICON_CHARS,
    LEXICON_SEED,
)


@dataclass(frozen=True)
class LexiconSpec:
    """Words (each followed by a space in the text) and their probabilities, largest first."""

    words: tuple[str, ...]
    probs: np.ndarray

    @property
    def mean_block(self) -> float:
        """Expected characters per word in the text: its letters and the space after it."""
        return float(self.probs @ np.array([len(w) + 1 for w in self.words]))

    @property
    def entropy_rate(self) -> float:
        """Nats per character: H(word) / E[len + 1]. Spaces end words and appear nowhere else,
        so the text determines the word sequence and carries exactly its entropy."""
        p = self.probs
        return float(-(p * np.log(p)).sum() / self.mean_block)

    def position_entropies(self, block_size: int) -> list[float]:
        """H(x_{t+1} | x_1..x_t) for t = 1..block_size, a window starting anywhere in the text.

        Before the window holds a space, the letters seen are part of a word at an unknown
        offset: the next letter is scored against every word and offset that shows them. After
        a space, only the letters since the last space matter (words are drawn independently).
        """
        p, a = self.probs, self.mean_block
        prefix, prefix_next = self._prefix_tables()
        longest = max(len(w) for w in self.words)
        # after_space[m]: expected -log P(next | the m characters since a space), the stream
        # after a space being a fresh word, its space, a fresh word, ...
        by_length = defaultdict(float)
        for w, pk in zip(self.words, p):
            by_length[len(w)] += float(pk)
        direct = [0.0] * (longest + 1)  # from words still being spelled at m
        for w, pk in zip(self.words, p):
            for m in range(len(w) + 1):
                nxt = w[m] if m < len(w) else " "
                direct[m] -= pk * math.log(prefix_next[(w[:m], nxt)] / prefix[w[:m]])
        after_space: list[float] = []
        for m in range(block_size):
            spelled = direct[m] if m <= longest else 0.0
            done = sum(q * after_space[m - n - 1] for n, q in by_length.items() if n < m)
            after_space.append(spelled + done)

        out = []
        for t in range(1, block_size + 1):
            joint: dict[tuple[str, str], float] = defaultdict(float)
            seen: dict[str, float] = defaultdict(float)
            if t <= longest:  # windows whose t characters all lie inside one word
                for w, pk in zip(self.words, p):
                    for j in range(len(w) - t + 1):
                        s = w[j : j + t]
                        nxt = w[j + t] if j + t < len(w) else " "
                        joint[(s, nxt)] += pk / a
                        seen[s] += pk / a
            inside = -sum(v * math.log(v / seen[s]) for (s, _), v in joint.items())
            # windows that start at offset j of a word of n letters (j = n: on its space) and
            # have passed its space: t - (n - j) - 1 characters of the fresh stream seen
            passed = sum(
                q / a * after_space[t - (n - j) - 1]
                for n, q in by_length.items()
                for j in range(n + 1)
                if j + t > n
            )
            out.append(inside + passed)
        return out

    def window_floor(self, block_size: int) -> float:
        """The least expected loss over a window of block_size positions, nats per character:
        the mean of position_entropies. Above the entropy rate, since a window's first
        positions see only part of a word."""
        return float(np.mean(self.position_entropies(block_size)))

    def _prefix_tables(self) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
        """P(a word starts with u) and P(it starts with u, then c), c a letter or the space."""
        prefix: dict[str, float] = defaultdict(float)
        prefix_next: dict[tuple[str, str], float] = defaultdict(float)
        for w, pk in zip(self.words, self.probs):
            for m in range(len(w) + 1):
                prefix[w[:m]] += float(pk)
                prefix_next[(w[:m], w[m] if m < len(w) else " ")] += float(pk)
        return prefix, prefix_next


@lru_cache(maxsize=2)
def lexicon_spec(seed: int = LEXICON_SEED) -> LexiconSpec:
    """The lexicon: distinct random words, ranked in a seeded random order, Zipf probabilities."""
    rng = np.random.default_rng(seed)
    letters = list(LEXICON_ALPHABET)
    lo, hi = LEXICON_LENGTHS
    words: set[str] = set()
    while len(words) < LEXICON_WORDS:
        words.add("".join(rng.choice(letters, int(rng.integers(lo, hi + 1)))))
    ranked = tuple(str(w) for w in rng.permutation(sorted(words)))  # sorted: sets are unordered
    probs = np.arange(1, LEXICON_WORDS + 1, dtype=float) ** -LEXICON_ZIPF
    return LexiconSpec(ranked, probs / probs.sum())


@lru_cache(maxsize=2)
def lexicon_text(length: int = LEXICON_CHARS, seed: int = LEXICON_SEED) -> str:
    """A deterministic sample of the lexicon corpus, length characters long."""
    spec = lexicon_spec(seed)
    n_words = int(length / spec.mean_block * 1.05) + 16  # enough words, with a margin
    drawn = np.random.default_rng(seed + 1).choice(len(spec.words), size=n_words, p=spec.probs)
    text = "".join(spec.words[i] + " " for i in drawn)
    if len(text) < length:  # the 5% margin is ~250 standard deviations: never expected
        raise RuntimeError("lexicon sample came out short; raise its margin")
    return text[:length]
