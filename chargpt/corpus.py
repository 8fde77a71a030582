"""Where a run's text comes from (tiny shakespeare, found or downloaded and sha256-checked; a
file; a generated corpus) and what it is, for run ids: its content fingerprint."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from chargpt.files import write_atomic
from chargpt.lexicon import LEXICON_PARAMS, lexicon_text
from chargpt.synthetic import (
    SYNTHETIC_ALPHABET,
    SYNTHETIC_CONCENTRATION,
    SYNTHETIC_LENGTH,
    SYNTHETIC_ORDER,
    SYNTHETIC_SEED,
    synthetic_text,
)

SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
DATA_DIR_ENV = "CHARGPT_DATA_DIR"
NO_DOWNLOAD_ENV = "CHARGPT_NO_DOWNLOAD"  # set to 1 to never touch the network


class CorpusError(ValueError):
    """A corpus cannot be found or read; the message says what to do."""


def cache_dir() -> Path:
    """The per-user cache directory where downloaded corpora live."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "chargpt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download_shakespeare(dest: Path) -> None:
    """Fetch tiny shakespeare into dest, keeping it only if its sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(SHAKESPEARE_URL, timeout=20) as response:
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise CorpusError(
            f"downloaded tiny shakespeare has sha256 {digest}, expected "
            f"{SHAKESPEARE_SHA256}; not saved"
        )
    write_atomic(dest, payload)


def shakespeare_path() -> Path:
    """Locate tiny shakespeare: $CHARGPT_DATA_DIR, then the cache, then a verified download."""
    candidates = []
    if os.environ.get(DATA_DIR_ENV):
        candidates.append(Path(os.environ[DATA_DIR_ENV]) / SHAKESPEARE_FILE)
    cached = cache_dir() / SHAKESPEARE_FILE
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            digest = _sha256(path)
            if digest != SHAKESPEARE_SHA256:
                raise CorpusError(
                    f"{path} has sha256 {digest}, expected {SHAKESPEARE_SHA256} "
                    "for tiny shakespeare; pass its path as the corpus to use it "
                    "anyway"
                )
            return path
    where = " or ".join(str(p.parent) for p in candidates)
    if os.environ.get(NO_DOWNLOAD_ENV) == "1":
        raise CorpusError(
            f"tiny shakespeare not found: put {SHAKESPEARE_FILE} in {where} "
            f"(or set {DATA_DIR_ENV}); downloads are off ({NO_DOWNLOAD_ENV}=1)"
        )
    try:
        _download_shakespeare(cached)
    except (OSError, CorpusError) as exc:
        raise CorpusError(
            f"tiny shakespeare not found and could not be downloaded ({exc}): "
            f"put {SHAKESPEARE_FILE} in {where} (or set {DATA_DIR_ENV})"
        ) from None
    return cached


# Corpora handed over by content (a run on a cluster node that has no copy of the driver's
# files): data.corpus -> (its text, its fingerprint as the driver computed it).
_PROVIDED: dict[str, tuple[str, str]] = {}


def provide_corpus(corpus: str, text: str, fingerprint: str) -> None:
    """Make data.corpus `corpus` read as `text` (with corpus_fingerprint `fingerprint`) in this
    process, whatever its name or path: the driver's copy, handed over by content."""
    _PROVIDED[corpus] = (text, fingerprint)


def load_corpus(corpus: str) -> str:
    """Text of a corpus given by name (shakespeare, synthetic, lexicon) or a UTF-8 file's path."""
    if corpus in _PROVIDED:
        return _PROVIDED[corpus][0]
    if corpus == "shakespeare":
        return shakespeare_path().read_text(encoding="utf-8")
    if corpus == "synthetic":
        return synthetic_text()
    if corpus == "lexicon":
        return lexicon_text()
    path = Path(corpus).expanduser()
    if not path.is_file():
        raise CorpusError(
            f"corpus {corpus!r} is neither a known name (shakespeare, synthetic, lexicon) "
            "nor an existing file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"corpus file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    if len(text) < 2:
        raise CorpusError(f"corpus file {path} holds fewer than 2 characters")
    return text


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


def _generated_fingerprint(name: str, params: tuple[object, ...]) -> str:
    """A generated corpus's fingerprint: its generator's parameters stand for its text."""
    return hashlib.sha256(repr((name, *params)).encode()).hexdigest()


def corpus_fingerprint(corpus: str) -> str:
    """What a corpus *is*, for run ids: a sha256 of its content, not of its name or path.

    A file's is the sha256 of its text (as read, UTF-8), computed once per size and mtime.
    tiny shakespeare's is its known sha256 (any other content is refused when it is loaded).
    The generated corpora (synthetic, lexicon) are named by their generators' parameters.
    """
    if corpus in _PROVIDED:
        return _PROVIDED[corpus][1]
    if corpus == "shakespeare":
        return SHAKESPEARE_SHA256
    if corpus == "synthetic":
        params = (
            SYNTHETIC_ALPHABET,
            SYNTHETIC_ORDER,
            SYNTHETIC_LENGTH,
            SYNTHETIC_SEED,
            SYNTHETIC_CONCENTRATION,
        )
        return _generated_fingerprint("synthetic", params)
    if corpus == "lexicon":
        return _generated_fingerprint("lexicon", LEXICON_PARAMS)
    path = Path(corpus).expanduser()
    try:
        st = path.resolve().stat()
    except OSError:
        st = None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns) if st else None
    if key is None or key not in _FINGERPRINTS:
        digest = hashlib.sha256(load_corpus(corpus).encode("utf-8")).hexdigest()
        if key is None:
            return digest
        _FINGERPRINTS[key] = digest
    return _FINGERPRINTS[key]
