"""Corpora, tokenizer, datasets, batches, reference losses and the describe report/CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from counting import counted_entropy  # tests/ is on sys.path (pytest's default import mode)

from chargpt import corpus, data, synthetic
from chargpt.corpus import CorpusError, load_corpus
from chargpt.data import (
    BatchSampler,
    CharDataset,
    CharTokenizer,
    encode_corpus,
    reference_losses,
    split_ids,
)
from chargpt.describe import describe, format_description, main
from chargpt.synthetic import synthetic_spec, synthetic_text

# ----- tokenizer and encoding -------------------------------------------------------------


def test_tokenizer_round_trip_and_sorted_vocab(small_text: str) -> None:
    tok = CharTokenizer.from_text(small_text)
    assert tok.chars == sorted(set(small_text))
    assert tok.vocab_size == len(set(small_text))
    ids = tok.encode(small_text)
    assert min(ids) == 0 and max(ids) == tok.vocab_size - 1
    assert tok.decode(ids) == small_text
    assert tok.decode(torch.tensor(ids)) == small_text


def test_tokenizer_unknown_character_names_it_and_its_position() -> None:
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(
        ValueError,
        match=r"character '€' \(U\+20AC\) at position 2 is not in "
        r"the vocabulary of 3 characters",
    ):
        tok.encode("ab€c")


def test_encode_corpus_equals_tokenizer_encode(small_text: str) -> None:
    text = small_text + "café 😀 naïve\n"  # beyond Latin-1 and beyond the BMP
    tok = CharTokenizer.from_text(text)
    ids = encode_corpus(text, tok)
    assert ids.dtype == data.id_dtype(tok.vocab_size) == torch.uint8  # compact storage
    assert ids.tolist() == tok.encode(text)


def test_encode_corpus_large_vocabulary_uses_int32() -> None:
    text = "".join(chr(0x400 + i) for i in range(300)) * 2  # 300 Cyrillic-and-beyond chars
    tok = CharTokenizer.from_text(text)
    ids = encode_corpus(text, tok)
    assert ids.dtype == torch.int32
    assert ids.tolist() == tok.encode(text) and int(ids.max()) == 299


def test_encode_corpus_unknown_character_raises() -> None:
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="'z'.*position 3"):
        encode_corpus("abcz", tok)
    with pytest.raises(ValueError, match="position 1"):
        encode_corpus("a\x00", tok)  # below every vocabulary code point


# ----- splits, dataset, batches -----------------------------------------------------------


@pytest.mark.parametrize("n, frac, n_train", [(1000, 0.1, 900), (1001, 0.1, 900), (50, 0.2, 40)])
def test_split_is_contiguous(n: int, frac: float, n_train: int) -> None:
    ids = torch.arange(n)
    train, val = split_ids(ids, frac)
    assert (len(train), len(val)) == (n_train, n - n_train)
    assert torch.equal(torch.cat([train, val]), ids)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8])
def test_char_dataset_shapes_dtype_and_shift(dtype: torch.dtype) -> None:
    ids = torch.arange(100, 150).to(dtype)
    ds = CharDataset(ids, block_size=8)
    assert len(ds) == 50 - 8
    for i in (0, 17, len(ds) - 1):
        x, y = ds[i]
        assert x.shape == y.shape == (8,)
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x, ids[i : i + 8].long())
        assert torch.equal(y, ids[i + 1 : i + 9].long())
    with pytest.raises(ValueError, match="too short"):
        CharDataset(torch.arange(8), block_size=8)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_batch_sampler_shapes_shift_and_windows(dtype: torch.dtype) -> None:
    ids = torch.arange(1000, 1500).to(dtype)  # value - 1000 is the position: checkable windows
    x, y = BatchSampler(ids, block_size=16, batch_size=5, seed=0)()
    assert x.shape == y.shape == (5, 16)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y[:, -1], x[:, -1] + 1)
    steps = x[:, 1:] - x[:, :-1]
    assert bool((steps == 1).all()), "every row must be a contiguous window of the corpus"
    assert int(y.max()) <= 1499


def test_batch_sampler_is_deterministic_per_seed() -> None:
    ids = torch.randint(0, 30, (2000,), generator=torch.Generator().manual_seed(0))
    a, b, c = (BatchSampler(ids, 8, 4, seed=s) for s in (7, 7, 8))
    batches_a = [a() for _ in range(3)]
    batches_b = [b() for _ in range(3)]
    batches_c = [c() for _ in range(3)]
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(batches_a, batches_c))
    assert not torch.equal(batches_a[0][0], batches_a[1][0]), "successive batches must differ"


# ----- synthetic corpus -------------------------------------------------------------------


def test_synthetic_entropy_rate_matches_empirical_estimate() -> None:
    spec = synthetic_spec()
    np.testing.assert_allclose(spec.transitions.sum(axis=1), 1.0)
    pi = spec.stationary()
    assert pi.min() >= -1e-12 and abs(pi.sum() - 1) < 1e-9
    text = synthetic_text()
    assert set(text) <= set(spec.alphabet) and len(text) == synthetic.SYNTHETIC_LENGTH
    a = len(spec.alphabet)
    empirical = counted_entropy(text, 2)  # the chain's order
    # Plug-in bias is ~ 64 * 7 / (2 * 200k) = 0.001 nats, sampling noise a few thousandths;
    # measured: 1.2825 empirical vs 1.2812 stated.
    assert abs(empirical - spec.entropy_rate) < 0.01, (empirical, spec.entropy_rate)
    assert spec.entropy_rate < math.log(a) - 0.5, "the chain should be far from uniform"


def test_window_floor_counts_the_positions_that_see_less_than_the_order() -> None:
    """A window's first position sees one letter: its floor there is the text's bigram
    conditional entropy (counted here from the text itself); every later position of an
    order-2 chain reaches the entropy rate, so the floor at block_size T is their mean."""
    spec = synthetic_spec()
    bigram = counted_entropy(synthetic_text(), 1)
    assert abs(spec.window_floor(1) - bigram) < 0.01, (spec.window_floor(1), bigram)  # 1.949
    for t in (2, 16, 64):
        expected = (spec.window_floor(1) + (t - 1) * spec.entropy_rate) / t
        assert spec.window_floor(t) == pytest.approx(expected, rel=1e-9)
    assert spec.window_floor(16) == pytest.approx(1.3229, abs=1e-4)


def test_synthetic_text_is_deterministic() -> None:
    fresh = synthetic_text.__wrapped__  # bypass the cache: really generate twice
    assert fresh(2000, 0) == fresh(2000, 0)
    assert fresh(2000, 0) != fresh(2000, 1)
    assert load_corpus("synthetic") == synthetic_text()
    np.testing.assert_array_equal(synthetic_spec(3).transitions, synthetic_spec(3).transitions)


# ----- corpus resolution ------------------------------------------------------------------


@pytest.fixture
def no_shakespeare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment where tiny shakespeare is nowhere and downloads are off."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(corpus.DATA_DIR_ENV, str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(corpus.NO_DOWNLOAD_ENV, "1")
    return empty


def test_shakespeare_not_found_with_downloads_off(no_shakespeare: Path) -> None:
    with pytest.raises(CorpusError, match="not found.*CHARGPT_NO_DOWNLOAD=1") as info:
        load_corpus("shakespeare")
    assert str(no_shakespeare) in str(info.value)


def test_shakespeare_sha_mismatch(no_shakespeare: Path) -> None:
    fake = no_shakespeare / corpus.SHAKESPEARE_FILE
    fake.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    with pytest.raises(CorpusError, match=f"has sha256 .*expected {corpus.SHAKESPEARE_SHA256}"):
        corpus.shakespeare_path()


def test_real_shakespeare_via_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_dir = os.environ.get(corpus.DATA_DIR_ENV)
    if not data_dir or not (Path(data_dir) / corpus.SHAKESPEARE_FILE).is_file():
        pytest.skip(f"set {corpus.DATA_DIR_ENV} to the directory holding {corpus.SHAKESPEARE_FILE}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # only the data dir can satisfy it
    monkeypatch.setenv(corpus.NO_DOWNLOAD_ENV, "1")
    assert corpus.shakespeare_path() == Path(data_dir) / corpus.SHAKESPEARE_FILE
    text = load_corpus("shakespeare")
    assert len(text) == 1_115_394
    assert len(set(text)) == 65
    assert text.startswith("First Citizen:")


def test_path_corpus_utf8(tmp_path: Path) -> None:
    path = tmp_path / "u.txt"
    path.write_text("naïve café\n", encoding="utf-8")
    assert load_corpus(str(path)) == "naïve café\n"


def test_path_corpus_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1.txt is not UTF-8 text .*at byte 3"):
        load_corpus(str(path))


def test_path_corpus_missing_or_too_short(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="'nope.txt' is neither a known name"):
        load_corpus("nope.txt")
    with pytest.raises(CorpusError, match="neither a known name"):
        load_corpus(str(tmp_path))  # a directory is not a corpus file
    (tmp_path / "one.txt").write_text("x")
    with pytest.raises(CorpusError, match="fewer than 2 characters"):
        load_corpus(str(tmp_path / "one.txt"))


# ----- reference losses -------------------------------------------------------------------


def test_reference_losses_by_hand() -> None:
    train = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    val = np.array([0, 1, 0])
    out = reference_losses(train, val, vocab_size=3)
    assert out["uniform"] == pytest.approx(math.log(3))
    assert out["unigram_train_entropy"] == pytest.approx(math.log(2))
    # add-one smoothed unigram: p(0) = p(1) = 5/11
    assert out["unigram_val"] == pytest.approx(-math.log(5 / 11))
    # add-one bigrams: 0->1 seen 4 times, so row 0 = (0+1, 4+1, 0+1) / 7; 1->0 seen 3 times,
    # so row 1 = (3+1, 0+1, 0+1) / 6; val holds the pairs 0->1 and 1->0
    assert out["bigram_val"] == pytest.approx(-(math.log(5 / 7) + math.log(4 / 6)) / 2)


def test_reference_losses_of_a_split_too_short_to_score_are_nan_without_warnings() -> None:
    train = np.array([0, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's empty-mean warnings would fail here
        one = reference_losses(train, np.array([1]), vocab_size=2)
        none = reference_losses(train, np.array([], dtype=np.int64), vocab_size=2)
    assert math.isnan(one["bigram_val"]) and one["unigram_val"] > 0
    assert math.isnan(none["bigram_val"]) and math.isnan(none["unigram_val"])


# ----- describe (task a) ------------------------------------------------------------------


def test_describe_numbers(text_file: Path, small_text: str) -> None:
    d = describe(str(text_file), block_size=8, batch_size=4, val_fraction=0.1, seed=0)
    n = len(small_text)
    assert d["length"] == n
    assert d["vocab_size"] == len(set(small_text))
    assert d["chars"] == "".join(sorted(set(small_text)))
    assert (d["n_train"], d["n_val"]) == (int(n * 0.9), n - int(n * 0.9))
    assert sum(d["char_counts"].values()) == n
    assert d["char_counts"][" "] == small_text.count(" ")
    counts = list(d["char_counts"].values())
    assert counts == sorted(counts, reverse=True)

    b = d["batch"]
    assert b["x_shape"] == b["y_shape"] == [4, 8] and b["dtype"] == "int64"
    assert b["y_is_x_shifted_by_one"] is True
    assert b["x_text"][1:] == b["y_text"][:-1]
    assert b["x_text"] + b["y_text"][-1] in small_text[: d["n_train"]]

    ref = d["reference_losses"]
    for v in ref.values():
        assert v["bits"] == pytest.approx(v["nats"] / math.log(2))
    assert ref["uniform"]["nats"] == pytest.approx(math.log(d["vocab_size"]))
    assert ref["uniform"]["nats"] >= ref["unigram_train_entropy"]["nats"]
    assert ref["unigram_train_entropy"]["nats"] >= ref["bigram_val"]["nats"]
    assert ref["unigram_val"]["nats"] > ref["bigram_val"]["nats"] + 0.5  # structure matters

    rows = d["block_size_costs"]
    assert [r["block_size"] for r in rows] == sorted(r["block_size"] for r in rows)
    for r in rows:
        assert r["attention_flops_per_token"] == 12 * 4 * 128 * r["block_size"]
        assert r["attention_flops_per_token"] + r["other_flops_per_token"] == r["flops_per_token"]
    assert len({r["other_flops_per_token"] for r in rows}) == 1  # the 6N part ignores T
    json.dumps(d)  # JSON-ready


def test_describe_is_seeded(text_file: Path) -> None:
    a = describe(str(text_file), seed=1)["batch"]
    assert a == describe(str(text_file), seed=1)["batch"]
    assert a["x_ids"] != describe(str(text_file), seed=2)["batch"]["x_ids"]


def test_format_description_shows_key_lines(text_file: Path) -> None:
    out = format_description(describe(str(text_file), block_size=6, batch_size=3))
    assert "x: shape (3, 6) int64" in out and "y: shape (3, 6) int64" in out
    assert "'\\n'" in out  # characters are shown escaped
    assert "bigram model (train) on val" in out and "bits" in out


def test_cli_prints_report_and_json(
    text_file: Path, small_text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(text_file), "--block-size", "5", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert f"length          {len(small_text):,} characters" in out
    assert f"vocab_size      {len(set(small_text))}" in out
    assert "x: shape (2, 5) int64" in out
    assert main([str(text_file), "--json", "--seed", "3"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["length"] == len(small_text) and parsed["batch"]["x_shape"] == [4, 8]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no-such-corpus"], "neither a known name"),
        (["synthetic", "--block-size", "0"], "block_size"),
        (["synthetic", "--val-fraction", "1.5"], "val_fraction"),
        ([], "required"),
        (["synthetic", "--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err


@pytest.mark.slow
def test_python_m_chargpt_describe_entry_point(tmp_path: Path) -> None:
    env = {
        **os.environ,
        corpus.DATA_DIR_ENV: str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path),
        corpus.NO_DOWNLOAD_ENV: "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "chargpt.describe", "shakespeare"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tiny shakespeare not found" in lines[0], proc.stderr
