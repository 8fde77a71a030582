"""The claims registry (studies/claims.yaml), parsed strictly into Claim records."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from chargpt.config import ConfigError, DataConfig, RunConfig, did_you_mean
from chargpt.yamlfile import load_yaml, yaml_error_line

KINDS = ("cpu", "cuda")
PRECISIONS = ("float32", "tf32", "bfloat16", "float16", "fp8")
LOSS_KINDS = ("best_val", "final_val")
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
CLAIM_KEYS = (
    "id",
    "source",
    "quote",
    "verified",
    "note",
    "hardware",
    "recipe",
    "study",
    "accum",
    "count_eval",
    "data",
    "claimed",
)
REQUIRED = ("id", "source", "quote", "verified", "hardware", "data", "claimed")


class ClaimsError(ValueError):
    """The claims file is wrong; the message names the file, the key path and the value."""


@dataclass(frozen=True)
class Hardware:
    """What the claim ran on: device kind, model, count, datasheet dense peak per device."""

    kind: str
    model: str
    count: int
    peak_flops: float | None  # None: no datasheet figure (most CPUs); times compare unadjusted
    precision: str


@dataclass(frozen=True)
class Claimed:
    """The claimed figures: a time, and optionally a loss with its kind and tolerance."""

    time_s: float
    loss: float | None = None
    loss_kind: str | None = None
    loss_tol: float | None = None


@dataclass(frozen=True)
class Claim:
    """One registry record; `runs` holds one RunConfig for a recipe, several for a study."""

    id: str
    source: dict[str, Any]
    quote: str
    verified: str
    note: str
    hardware: Hardware
    runs: tuple[RunConfig, ...]
    labels: tuple[str, ...]
    study: str | None  # the study file's path, for a study claim
    accum: int  # micro-batches per optimizer step, over all devices
    count_eval: bool  # the claimed time includes the recipe's evaluation passes
    corpus: str | None  # a corpus chargpt has; None when the data is random tokens
    random_vocab: int | None
    dataset: str  # what the claim trained on, by name
    claimed: Claimed
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)
    where: str = dataclasses.field(default="", compare=False)  # "FILE: claims[i] (id)", for errors

    def key(self) -> str:
        """A short hash of what is checked (hardware, recipe or study, data, claimed figures;
        not the prose): a claim whose figures are edited is checked again."""
        prose = ("source", "quote", "verified", "note")
        checked = {k: v for k, v in self.raw.items() if k not in prose}
        blob = json.dumps(checked, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _bad(path: str, message: str) -> NoReturn:
    raise ClaimsError(f"{path}: {message}")


def _mapping(value: Any, path: str, keys: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        _bad(path, f"expected a mapping, got {value!r}")
    for key in value:
        if key not in keys:
            _bad(f"{path}.{key}", f"unknown key{did_you_mean(str(key), keys)}")
    for key in required:
        if key not in value:
            _bad(path, f"missing key {key!r}")
    return value


def _number(value: Any, path: str, positive: bool = True) -> float:
    if isinstance(value, str):  # PyYAML reads 3e14 (no dot) as a string: a number on purpose
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _bad(path, f"expected a number, got {value!r}")
    if positive and value <= 0:
        _bad(path, f"must be positive, got {value!r}")
    return float(value)


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _bad(path, f"expected a non-empty string, got {value!r}")
    return value


def _hardware(value: Any, path: str) -> Hardware:
    keys = ("kind", "model", "count", "peak_flops", "precision")
    h = _mapping(value, path, keys, keys)
    if h["kind"] not in KINDS:
        _bad(f"{path}.kind", f"must be one of {KINDS}, got {h['kind']!r}")
    if h["precision"] not in PRECISIONS:
        _bad(f"{path}.precision", f"must be one of {PRECISIONS}, got {h['precision']!r}")
    count = h["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        _bad(f"{path}.count", f"must be a positive integer, got {count!r}")
    peak = None if h["peak_flops"] is None else _number(h["peak_flops"], f"{path}.peak_flops")
    return Hardware(h["kind"], _text(h["model"], f"{path}.model"), count, peak, h["precision"])


def _claimed(value: Any, path: str) -> Claimed:
    c = _mapping(value, path, ("time_s", "loss", "loss_kind", "loss_tol"), ("time_s",))
    time_s = _number(c["time_s"], f"{path}.time_s")
    if c.get("loss") is None:
        for key in ("loss_kind", "loss_tol"):
            if c.get(key) is not None:
                _bad(f"{path}.{key}", "given without a loss")
        return Claimed(time_s)
    if c.get("loss_kind") not in LOSS_KINDS:
        _bad(f"{path}.loss_kind", f"must be one of {LOSS_KINDS}, got {c.get('loss_kind')!r}")
    tol = _number(c.get("loss_tol"), f"{path}.loss_tol")
    return Claimed(time_s, _number(c["loss"], f"{path}.loss"), c["loss_kind"], tol)


def _data(value: Any, path: str) -> tuple[str | None, int | None, str]:
    d = _mapping(value, path, ("corpus", "random", "dataset"), ("dataset",))
    if ("corpus" in d) == ("random" in d):
        _bad(path, "give exactly one of corpus (a corpus chargpt has) or random (a vocab size)")
    dataset = _text(d["dataset"], f"{path}.dataset")
    if "corpus" in d:
        return _corpus(d["corpus"], f"{path}.corpus"), None, dataset
    vocab = d["random"]
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2:
        _bad(f"{path}.random", f"must be a vocabulary size (an integer >= 2), got {vocab!r}")
    return None, vocab, dataset


def _corpus(value: Any, path: str) -> str:
    """A corpus chargpt can read, found now rather than by `check` after it has begun writing."""
    from chargpt.corpus import CorpusError, corpus_fingerprint  # here: it imports numpy

    corpus = _text(value, path)
    try:
        # A name or a file, as a study's data.corpus is checked: the file is read (is it UTF-8
        # text?), tiny shakespeare is neither looked up nor downloaded.
        corpus_fingerprint(corpus)
    except CorpusError as exc:
        _bad(path, str(exc))
    return corpus


def _runs(c: dict, path: str, base: Path) -> tuple[tuple[RunConfig, ...], tuple[str, ...]]:
    """The recipe's one RunConfig, or the runs of the study file it names."""
    if ("recipe" in c) == ("study" in c):
        _bad(path, "give exactly one of recipe (a run config) or study (a study file)")
    if "recipe" in c:
        recipe = c["recipe"]
        if isinstance(recipe, dict) and "data" in recipe:
            _bad(f"{path}.recipe.data", "set the data in the claim's data key, not the recipe")
        try:
            return (RunConfig.from_dict(recipe, f"{path}.recipe"),), (c["id"],)
        except ConfigError as exc:  # checks after parsing name the section, not the claim
            msg = str(exc)
            raise ClaimsError(msg if msg.startswith(path) else f"{path}.recipe.{msg}") from None
    from chargpt.study.spec import StudyError, load_study

    file = base / _text(c["study"], f"{path}.study")
    try:
        study = load_study(file)
    except StudyError as exc:
        _bad(f"{path}.study", str(exc))
    return tuple(r.config for r in study.runs), tuple(r.label for r in study.runs)


def parse_claim(c: Any, path: str, base: Path) -> Claim:
    """One claim mapping -> Claim (ClaimsError naming path on anything wrong)."""
    c = _mapping(c, path, CLAIM_KEYS, REQUIRED)
    cid = c["id"]
    if not isinstance(cid, str) or not ID_PATTERN.match(cid):
        _bad(f"{path}.id", f"must be lower-case letters, digits, '.', '_' or '-', got {cid!r}")
    source = c["source"]
    if not isinstance(source, dict) or not source:
        _bad(f"{path}.source", f"expected a mapping (repo, file, commit, ...), got {source!r}")
    corpus, vocab, dataset = _data(c["data"], f"{path}.data")
    runs, labels = _runs(c, path, base)
    if corpus is not None:
        runs = tuple(dataclasses.replace(r, data=DataConfig(corpus=corpus)) for r in runs)
    else:
        for r in runs:
            if r.model.vocab_size not in (None, vocab):
                _bad(f"{path}.recipe.model.vocab_size", f"{r.model.vocab_size} != data.random")
        runs = tuple(
            dataclasses.replace(r, model=dataclasses.replace(r.model, vocab_size=vocab))
            for r in runs
        )
    accum = c.get("accum", 1)
    if isinstance(accum, bool) or not isinstance(accum, int) or accum < 1:
        _bad(f"{path}.accum", f"must be a positive integer, got {accum!r}")
    count_eval = c.get("count_eval", False)
    if not isinstance(count_eval, bool):
        _bad(f"{path}.count_eval", f"expected true or false, got {count_eval!r}")
    claimed = _claimed(c["claimed"], f"{path}.claimed")
    return Claim(
        id=cid,
        source=source,
        quote=_text(c["quote"], f"{path}.quote"),
        verified=_text(c["verified"], f"{path}.verified"),
        note=c.get("note") or "",
        hardware=_hardware(c["hardware"], f"{path}.hardware"),
        runs=runs,
        labels=labels,
        study=str(base / c["study"]) if "study" in c else None,
        accum=accum,
        count_eval=count_eval,
        corpus=corpus,
        random_vocab=vocab,
        dataset=dataset,
        claimed=claimed,
        raw=c,
        where=path,
    )


def load_claims(path: str | Path) -> tuple[Claim, ...]:
    """Read and validate a claims file; every problem is one ClaimsError line."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        _bad(str(file), "no such file")
    except (OSError, UnicodeDecodeError) as exc:
        _bad(str(file), f"cannot read ({exc})")
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        _bad(str(file), yaml_error_line(exc))
    if not isinstance(data, dict):
        _bad(str(file), f"expected a mapping with one key, claims, got {data!r}")
    for key in data:
        if key != "claims":
            from chargpt.study.spec import TOP_KEYS

            # a study file is the likeliest wrong file here: both are YAML files in studies/
            study = "is this a study file? " if key in TOP_KEYS else ""
            _bad(f"{file}: {key}", f"unknown key ({study}a claims file holds one key, claims)")
    if "claims" not in data:
        _bad(str(file), "missing key 'claims'")
    items = data["claims"]
    if not isinstance(items, list) or not items:
        _bad(f"{file}: claims", "expected a non-empty list of claims")
    labels = [f"{file}: {_label(i, c)}" for i, c in enumerate(items)]
    claims = [parse_claim(c, label, file.parent) for c, label in zip(items, labels)]
    seen: set[str] = set()
    for label, claim in zip(labels, claims):
        if claim.id in seen:
            _bad(f"{label}.id", f"{claim.id!r} is given twice")
        seen.add(claim.id)
    return tuple(claims)


def _label(i: int, c: Any) -> str:
    """claims[i], with the claim's id when it has one: errors name the claim as users do."""
    cid = c.get("id") if isinstance(c, dict) else None
    return f"claims[{i}] ({cid})" if isinstance(cid, str) else f"claims[{i}]"
