"""Corpora (tiny shakespeare, files, a synthetic Markov chain), tokenizer, datasets, batches."""

from __future__ import annotations

import hashlib
import math
import os
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from chargpt.config import DataConfig
from chargpt.files import write_atomic
from chargpt.lexicon import LEXICON_PARAMS, lexicon_text

SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
DATA_DIR_ENV = "CHARGPT_DATA_DIR"
NO_DOWNLOAD_ENV = "CHARGPT_NO_DOWNLOAD"  # set to 1 to never touch the network

# The synthetic corpus: a seeded order-2 Markov chain over 8 letters. Its transition rows are
# drawn from a sparse Dirichlet so the text is learnable yet not trivial; the entropy rate of
# the chain is computed exactly from its stationary distribution (see SyntheticSpec).
SYNTHETIC_ALPHABET = "abcdefgh"
SYNTHETIC_ORDER = 2
SYNTHETIC_LENGTH = 200_000
SYNTHETIC_SEED = 0
SYNTHETIC_CONCENTRATION = 0.3


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


class CharTokenizer:
    """Maps each distinct character of a corpus to an integer id, in sorted order."""

    def __init__(self, chars: str | list[str]) -> None:
        self.chars: list[str] = sorted(set(chars))
        if not self.chars:
            raise ValueError("a tokenizer needs at least one character")
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as exc:
            ch = exc.args[0]
            raise ValueError(
                f"character {ch!r} (U+{ord(ch):04X}) at position {text.index(ch)} "
                f"is not in the vocabulary of {self.vocab_size} characters"
            ) from None

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)


def id_dtype(vocab_size: int) -> torch.dtype:
    """The smallest integer dtype that holds every token id (uint8 for most corpora)."""
    return torch.uint8 if vocab_size <= 256 else torch.int32


def encode_corpus(text: str, tokenizer: CharTokenizer) -> torch.Tensor:
    """The whole corpus as a 1-D tensor of token ids, vectorised, in a compact dtype.

    Ids are stored as uint8 (int32 for vocabularies over 256): tiny shakespeare then takes
    1 MiB instead of 9, which matters for the training process's peak memory. Batches are
    converted to int64 as they are gathered.
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    np_dtype = np.uint8 if id_dtype(tokenizer.vocab_size) == torch.uint8 else np.int32
    lookup = np.zeros(max(ord(c) for c in tokenizer.chars) + 1, dtype=np_dtype)
    known = np.zeros(len(lookup), dtype=bool)
    lookup[[ord(c) for c in tokenizer.chars]] = np.arange(tokenizer.vocab_size)
    known[[ord(c) for c in tokenizer.chars]] = True
    if codes.max() >= len(lookup) or not known[codes].all():
        tokenizer.encode(text)  # raises with the offending character and position
    return torch.from_numpy(lookup[codes])


def split_ids(ids: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous split: the first (1 - val_fraction) is train, the rest validation."""
    n_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:n_train], ids[n_train:]


@dataclass(frozen=True)
class Splits:
    """A corpus read, tokenized and split: what training, evaluation and the runner consume."""

    tokenizer: CharTokenizer
    train: torch.Tensor  # (n_train,) token ids, uint8 for vocabularies up to 256
    val: torch.Tensor  # (n_val,)
    sha256: str  # of the corpus text as UTF-8: the corpus's identity, whatever its path

    @property
    def n_chars(self) -> int:
        return len(self.train) + len(self.val)


def load_splits(data: DataConfig, tokenizer: CharTokenizer | None = None) -> Splits:
    """Read data.corpus, encode it (with its own vocabulary, or a model's) and split it."""
    text = load_corpus(data.corpus)
    tokenizer = tokenizer or CharTokenizer.from_text(text)
    train, val = split_ids(encode_corpus(text, tokenizer), data.val_fraction)
    return Splits(tokenizer, train, val, hashlib.sha256(text.encode("utf-8")).hexdigest())


class CharDataset(torch.utils.data.Dataset):
    """Item i is (x, y): block_size tokens from position i, and the same shifted by one."""

    def __init__(self, ids: torch.Tensor, block_size: int) -> None:
        if len(ids) <= block_size:
            raise ValueError(
                f"a split of {len(ids)} tokens is too short for block_size {block_size}"
            )
        self.ids = ids
        self.block_size = block_size

    def __len__(self) -> int:
        return len(self.ids) - self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.ids[i : i + self.block_size + 1].long()
        return chunk[:-1], chunk[1:]


class BatchSampler:
    """Random training batches in one vectorised gather per batch, from a seeded generator."""

    def __init__(
        self,
        ids: torch.Tensor,
        block_size: int,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        if len(ids) <= block_size:
            raise ValueError(
                f"a split of {len(ids)} tokens is too short for block_size {block_size}"
            )
        self.ids = ids
        self.batch_size = batch_size
        self.n_starts = len(ids) - block_size
        self.offsets = torch.arange(block_size + 1)  # (T+1,)
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(self.n_starts, (self.batch_size, 1), generator=self.generator)
        chunk = self.ids[starts + self.offsets].long()  # (B, T+1), one gather
        x, y = chunk[:, :-1], chunk[:, 1:]
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(
                self.device, non_blocking=True
            )
        if self.device.type != "cpu":
            return x.to(self.device), y.to(self.device)
        return x, y


def entropy_nats(counts: np.ndarray) -> float:
    """Entropy in nats of the distribution proportional to counts."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def reference_losses(train: np.ndarray, val: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Baseline losses in nats per character that a model should beat.

    uniform: ln V. unigram: entropy of the train split's character frequencies, and its
    cross-entropy on val. bigram: a train-split bigram model (add-one smoothing) scored on val,
    i.e. its conditional entropy measured on held-out text.
    """
    v = vocab_size
    train = np.asarray(train, dtype=np.int64)  # ids may arrive as uint8: v * id would overflow
    val = np.asarray(val, dtype=np.int64)
    uni = np.bincount(train, minlength=v).astype(np.float64)
    uni_p = (uni + 1) / (uni.sum() + v)
    pairs = np.bincount(train[:-1] * v + train[1:], minlength=v * v).reshape(v, v) + 1.0
    cond = pairs / pairs.sum(axis=1, keepdims=True)
    return {
        "uniform": math.log(v),
        "unigram_train_entropy": entropy_nats(uni),
        "unigram_val": float(-np.log(uni_p[val]).mean()),
        "bigram_val": float(-np.log(cond[val[:-1], val[1:]]).mean()),
    }
