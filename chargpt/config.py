"""Frozen, validated run configuration: model, optimiser, training, budget, data, sampling."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the key path and the value."""


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{path}: {message}")


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """A ' (did you mean X?)' hint when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce(value: Any, annotation: Any, path: str) -> Any:
    """Check (and gently convert) one YAML/JSON value against a field's type annotation."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if bool in inner and isinstance(value, bool):  # bool | str: true, false or a word
            return value
        return coerce(value, inner[-1] if isinstance(value, str) else inner[0], path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(path, f"expected a list, got {value!r}")
        (item_type, _) = typing.get_args(annotation)
        return tuple(coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            _fail(path, f"expected true or false, got {value!r}")
        return value
    if annotation is int:
        # 1e6 written in YAML arrives as a string or a float; accept it when it is whole.
        if isinstance(value, bool):
            _fail(path, f"expected an integer, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                _fail(path, f"expected an integer, got {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                _fail(path, f"expected an integer, got {value!r}")
            value = int(value)
        if not isinstance(value, int):
            _fail(path, f"expected an integer, got {value!r}")
        return value
    if annotation is float:
        # PyYAML reads 1e-3 (no dot) as a string: accept it as a float on purpose.
        if isinstance(value, bool):
            _fail(path, f"expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                _fail(path, f"expected a number, got {value!r}")
        if not isinstance(value, (int, float)):
            _fail(path, f"expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            _fail(path, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} at {path}")


class _Section:
    """Shared strict mapping from plain dicts for the config dataclasses."""

    SECTION: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None) -> Any:
        """Build from a plain dict; unknown keys, wrong types and bad values raise ConfigError."""
        path = cls.SECTION if path is None else path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            _fail(path, f"expected a mapping, got {data!r}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        kwargs = {}
        for key, value in data.items():
            if key not in names:
                _fail(f"{path}.{key}", f"unknown key{did_you_mean(str(key), names)}")
            kwargs[key] = coerce(value, hints[key], f"{path}.{key}")
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            _fail(path, str(exc))

    def _check(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            _fail(f"{self.SECTION}.{name}", f"{message}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of this section (tuples become lists, JSON-ready)."""
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


ATTN_IMPLS = ("manual", "sdpa")


@dataclass(frozen=True, kw_only=True)
class ModelConfig(_Section):
    """GPT shape. vocab_size None means: take it from the corpus at train time."""

    SECTION: ClassVar[str] = "model"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    vocab_size: int | None = None
    dropout: float = 0.0
    bias: bool = False
    tie_weights: bool = True
    attn_impl: str = "manual"

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            self._check(getattr(self, name) > 0, name, "must be a positive integer")
        if self.vocab_size is not None:
            self._check(self.vocab_size > 0, "vocab_size", "must be a positive integer")
        self._check(
            self.n_embd % self.n_head == 0, "n_embd", f"must be divisible by n_head={self.n_head}"
        )
        self._check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        self._check(self.attn_impl in ATTN_IMPLS, "attn_impl", f"must be one of {ATTN_IMPLS}")


SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True, kw_only=True)
class OptimConfig(_Section):
    """AdamW with linear warmup, then cosine decay to min_lr (or a constant lr)."""

    SECTION: ClassVar[str] = "optim"
    lr: float = 1e-3
    min_lr: float | None = None  # None: lr / 10, so an lr sweep needs no min_lr per point
    warmup_steps: int = 100
    schedule: str = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping

    @property
    def final_lr(self) -> float:
        """Where the cosine schedule ends: min_lr, or lr / 10 when min_lr is unset."""
        return self.lr / 10 if self.min_lr is None else self.min_lr

    def __post_init__(self) -> None:
        self._check(math.isfinite(self.lr) and self.lr > 0, "lr", "must be a positive number")
        if self.min_lr is not None:
            self._check(0 <= self.min_lr <= self.lr, "min_lr", f"must be in [0, lr={self.lr}]")
        self._check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        self._check(self.schedule in SCHEDULES, "schedule", f"must be one of {SCHEDULES}")
        self._check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        self._check(0 <= self.beta1 < 1, "beta1", "must be in [0, 1)")
        self._check(0 <= self.beta2 < 1, "beta2", "must be in [0, 1)")
        self._check(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables clipping)")


DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "bfloat16", "auto")  # auto: bfloat16 only where natively faster
COMPILES = (True, False, "auto")  # auto: torch.compile only where it pays (chargpt.compiling)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_Section):
    """Batching, evaluation, seed, device and checkpoint settings of one run."""

    SECTION: ClassVar[str] = "train"
    batch_size: int = 12
    eval_interval: int = 250
    eval_iters: int = 20
    seed: int = 1337
    device: str = "auto"
    dtype: str = "float32"
    compile: bool | str = False  # true, false or auto (compile when the run is long enough)
    threads: int | None = None  # None: leave torch's default (one per physical core)
    save_checkpoint: bool = True
    save_best: bool = False
    # A resumable state (state.pt) every this many steps and/or seconds of training: a killed
    # run goes on from there. Neither changes what a run computes, so neither is in run_id.
    checkpoint_interval: int | None = None
    checkpoint_interval_s: float | None = 600.0  # on for runs longer than ten minutes

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_interval", "eval_iters"):
            self._check(getattr(self, name) > 0, name, "must be a positive integer")
        if self.checkpoint_interval is not None:
            self._check(
                self.checkpoint_interval > 0,
                "checkpoint_interval",
                "must be a positive number of steps (or null)",
            )
        if self.checkpoint_interval_s is not None:
            self._check(
                self.checkpoint_interval_s > 0,
                "checkpoint_interval_s",
                "must be a positive number of seconds (or null)",
            )
        self._check(self.seed >= 0, "seed", "must be >= 0")
        self._check(self.device in DEVICES, "device", f"must be one of {DEVICES}")
        self._check(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}")
        self._check(self.compile in COMPILES, "compile", "must be true, false or auto")
        if self.threads is not None:
            self._check(self.threads > 0, "threads", "must be a positive integer")


BUDGET_KINDS = ("max_steps", "max_tokens", "max_flops", "max_seconds")


@dataclass(frozen=True, kw_only=True)
class Budget(_Section):
    """When training stops: the first of these limits that is reached (at least one is set)."""

    SECTION: ClassVar[str] = "budget"
    max_steps: int | None = None
    max_tokens: int | None = None
    max_flops: float | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if all(getattr(self, k) is None for k in BUDGET_KINDS):
            raise ConfigError(f"budget: set at least one of {', '.join(BUDGET_KINDS)}")
        for name in BUDGET_KINDS:
            value = getattr(self, name)
            if value is not None:
                self._check(value > 0 and math.isfinite(value), name, "must be positive")


@dataclass(frozen=True, kw_only=True)
class DataConfig(_Section):
    """Which corpus (shakespeare, synthetic, lexicon, or a file path) and its split."""

    SECTION: ClassVar[str] = "data"
    corpus: str = "shakespeare"
    val_fraction: float = 0.1  # the last 10% of the text is validation (contiguous split)

    def __post_init__(self) -> None:
        self._check(bool(self.corpus), "corpus", "must be a corpus name or a file path")
        self._check(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")


@dataclass(frozen=True, kw_only=True)
class SampleConfig(_Section):
    """Samples written after a run: every temperature times every prompt."""

    SECTION: ClassVar[str] = "sample"
    temperatures: tuple[float, ...] = (0.8,)
    prompts: tuple[str, ...] = ("\n",)
    max_new_tokens: int = 200
    seed: int = 0
    top_k: int | None = None

    def __post_init__(self) -> None:
        self._check(len(self.temperatures) > 0, "temperatures", "must list at least one value")
        for t in self.temperatures:
            self._check(t > 0 and math.isfinite(t), "temperatures", "every value must be > 0")
        self._check(len(self.prompts) > 0, "prompts", "must list at least one prompt")
        for prompt in self.prompts:  # sampling continues a prompt: it needs a character
            self._check(prompt != "", "prompts", "every prompt must hold at least one character")
        self._check(self.max_new_tokens > 0, "max_new_tokens", "must be a positive integer")
        if self.top_k is not None:
            self._check(self.top_k > 0, "top_k", "must be a positive integer")


# How often a run saves its resumable state: not what it computes, so not part of its identity.
NOT_IN_RUN_ID = ("checkpoint_interval", "checkpoint_interval_s")

SECTIONS: dict[str, type[_Section]] = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "budget": Budget,
    "data": DataConfig,
    "sample": SampleConfig,
}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one training run needs. `sample` is optional and not part of run_id."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    budget: Budget = field(default_factory=lambda: Budget(max_steps=2000))
    data: DataConfig = field(default_factory=DataConfig)
    sample: SampleConfig | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> RunConfig:
        """Strict mapping: unknown sections or keys are errors naming their path."""
        prefix = f"{path}." if path else ""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            _fail(path or "config", f"expected a mapping, got {data!r}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in SECTIONS:
                _fail(f"{prefix}{key}", f"unknown section{did_you_mean(str(key), SECTIONS)}")
            if key == "sample" and value is None:
                continue
            kwargs[key] = SECTIONS[key].from_dict(value, f"{prefix}{key}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict, the inverse of from_dict."""
        out = {name: getattr(self, name).to_dict() for name in SECTIONS if name != "sample"}
        if self.sample is not None:
            out["sample"] = self.sample.to_dict()
        return out

    def to_flat_dict(self) -> dict[str, Any]:
        """One level of keys for CSV columns: every key bare, without its section.

        Key names are unique across sections, so n_layer, batch_size, lr or max_flops mean the
        same in YAML (`model.n_layer`), CSV columns and plot axes. Sampling is left out.
        """
        flat: dict[str, Any] = {}
        flat.update(self.model.to_dict())
        flat.update(self.train.to_dict())
        flat.update(self.optim.to_dict())
        flat.update(self.budget.to_dict())
        flat.update(self.data.to_dict())
        return flat

    def run_id(self, corpus_fingerprint: str) -> str:
        """Short, stable hash of the resolved config (sampling settings excluded) and of the
        corpus's content (data.corpus_fingerprint), so an edited corpus file is a new run."""
        core: dict[str, Any] = {k: v for k, v in self.to_dict().items() if k != "sample"}
        for name in NOT_IN_RUN_ID:
            core["train"].pop(name)
        core["corpus_fingerprint"] = corpus_fingerprint
        blob = json.dumps(core, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:10]
