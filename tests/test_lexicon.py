"""The lexicon corpus: its text, and the exact entropy rate and loss floor the fit is checked on."""

from __future__ import annotations

import math

import numpy as np
import pytest
from counting import counted_entropy  # tests/ is on sys.path (pytest's default import mode)

from chargpt import lexicon
from chargpt.corpus import corpus_fingerprint, load_corpus
from chargpt.lexicon import LexiconSpec, lexicon_spec, lexicon_text


def test_position_entropies_match_what_the_text_shows() -> None:
    """The exact conditional entropies at a window's first positions agree with those counted
    from the 2M-character text (the counted ones sit a little lower: a plug-in estimate is
    biased down, more so as contexts multiply)."""
    spec, text = lexicon_spec(), lexicon_text()
    exact = spec.position_entropies(3)
    for t in (1, 2, 3):
        counted = counted_entropy(text, t)
        assert -0.001 < exact[t - 1] - counted < 0.01, (t, exact[t - 1], counted)
    assert exact[0] == pytest.approx(1.7068, abs=1e-4)


def test_position_entropies_fall_to_the_entropy_rate() -> None:
    """Seeing more never raises the entropy; once a window must hold a space (after the longest
    word and its space) only the current word matters, and every later position scores the
    entropy rate exactly. The window floor is their mean."""
    spec = lexicon_spec()
    h = spec.position_entropies(16)
    assert all(b <= a + 1e-12 for a, b in zip(h, h[1:]))
    longest = lexicon.LEXICON_LENGTHS[1]
    for later in h[longest + 1 :]:
        assert later == pytest.approx(spec.entropy_rate, rel=1e-9)
    assert spec.entropy_rate == pytest.approx(0.6050, abs=1e-4)
    assert spec.window_floor(16) == pytest.approx(np.mean(h), rel=1e-12)
    assert spec.window_floor(16) == pytest.approx(0.7112, abs=1e-4)


def test_a_two_word_lexicon_by_hand() -> None:
    """Words 'ab' and 'c', each with probability 1/2: the text is a fair coin's sequence spelled
    out, 2.5 characters a word, so ln 2 / 2.5 nats a character. After one letter: 'a' always
    precedes 'b', 'b' and 'c' always precede a space, and after a space the coin is tossed:
    H = P(space) * ln 2 = (2 / 5) * ln 2."""
    spec = LexiconSpec(("ab", "c"), np.array([0.5, 0.5]))
    assert spec.entropy_rate == pytest.approx(math.log(2) / 2.5, rel=1e-12)
    h = spec.position_entropies(8)
    assert h[0] == pytest.approx(0.4 * math.log(2), rel=1e-12)
    assert h[-1] == pytest.approx(spec.entropy_rate, rel=1e-12)


def test_the_lexicon_corpus_is_deterministic_and_named() -> None:
    fresh = lexicon_text.__wrapped__  # bypass the cache: really generate twice
    assert fresh(5000, 0) == fresh(5000, 0)
    assert fresh(5000, 0) != fresh(5000, 1)
    text = load_corpus("lexicon")
    assert text == lexicon_text() and len(text) == lexicon.LEXICON_CHARS
    assert set(text) == set(lexicon.LEXICON_ALPHABET + " ")
    spec = lexicon_spec()
    assert len(set(spec.words)) == lexicon.LEXICON_WORDS
    assert spec.probs.sum() == pytest.approx(1.0) and np.all(np.diff(spec.probs) < 0)
    assert corpus_fingerprint("lexicon") != corpus_fingerprint("synthetic")
