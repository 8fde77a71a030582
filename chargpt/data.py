"""Tokenizer, encoded train/val splits, datasets and batches of a corpus (chargpt.corpus reads
it), and the reference losses a model should beat."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from chargpt.config import DataConfig
from chargpt.corpus import load_corpus


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
    # a split too short to score (under one character, or one pair) has no such loss: nan,
    # said without numpy's empty-mean warnings, which would print before the CLI's own error
    return {
        "uniform": math.log(v),
        "unigram_train_entropy": entropy_nats(uni),
        "unigram_val": float(-np.log(uni_p[val]).mean()) if len(val) else math.nan,
        "bigram_val": float(-np.log(cond[val[:-1], val[1:]]).mean()) if len(val) > 1 else math.nan,
    }
