"""Study files: YAML -> validated Study -> expanded, labelled, hashed runs (pure functions)."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import re
import typing
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from chargpt.config import (
    BUDGET_KINDS,
    SECTIONS,
    Budget,
    ConfigError,
    RunConfig,
    coerce,
    did_you_mean,
)
from chargpt.yamlfile import load_yaml, yaml_error_line

__all__ = [
    "DOTTED_KEYS",
    "PlannedRun",
    "Study",
    "StudyError",
    "budget_str",
    "derive_label",
    "expand",
    "load_study",
    "parse_study",
    "plan_rows",
]

TOP_KEYS = ("name", "description", "base", "grid", "zip", "runs", "seeds", "skip_invalid")
_FIELDS = {s: [f.name for f in dataclasses.fields(c)] for s, c in SECTIONS.items()}  # type: ignore
_HINTS = {s: typing.get_type_hints(cls) for s, cls in SECTIONS.items()}
DOTTED_KEYS: tuple[str, ...] = tuple(f"{s}.{f}" for s in SECTIONS for f in _FIELDS[s])
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_UNITS = {"max_steps": "steps", "max_tokens": "tokens", "max_flops": "FLOPs", "max_seconds": "s"}
Layer = dict[str, dict[str, Any]]  # {section: {field: value}}, values already type-checked


class StudyError(ValueError):
    """A study file is wrong. The message is one line: `<file>: <key path>: <what is wrong>`."""


@dataclass(frozen=True)
class PlannedRun:
    """One expanded point of a study: its hash id, its human label and its resolved config."""

    run_id: str
    label: str
    config: RunConfig
    index: int


@dataclass(frozen=True)
class Study:
    """A parsed, validated and expanded study file."""

    name: str
    description: str
    path: Path | None
    raw: dict[str, Any] = field(repr=False)
    runs: tuple[PlannedRun, ...] = field(repr=False)
    skipped: tuple[tuple[str, str], ...] = ()  # (point description, reason), skip_invalid only


def _bad(path: str, message: str) -> NoReturn:
    raise ConfigError(f"{path}: {message}" if path else message)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _num(value: float) -> str:
    """Shortest exact text for a number: 2000, 0.001, 1e13, 2.5e6."""
    if float(value).is_integer() and abs(value) < 1e5:
        return str(int(value))
    for digits in range(1, 18):
        text = f"{value:.{digits}g}"
        if float(text) == value:
            break
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m.group(1).strip("+") + m.group(2), text)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, float)):
        return _num(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _suggest(word: str, extra: typing.Sequence[str] = ()) -> str:
    """A did-you-mean hint over extra names, then the dotted keys (a bare field finds its key)."""
    hint = did_you_mean(word, extra) if extra else ""
    owners = [k for k in DOTTED_KEYS if k.split(".", 1)[1] == word]
    if not hint and owners:
        hint = f" (did you mean {owners[0]!r}?)"
    hint = hint or did_you_mean(word, DOTTED_KEYS)
    if not hint:
        fields = [k.split(".", 1)[1] for k in DOTTED_KEYS]
        close = difflib.get_close_matches(word.rsplit(".", 1)[-1], fields, n=1, cutoff=0.6)
        hint = f" (did you mean {DOTTED_KEYS[fields.index(close[0])]!r}?)" if close else ""
    return hint


def _check_key(key: Any, path: str, extra: typing.Sequence[str] = ()) -> tuple[str, str]:
    if isinstance(key, str) and key in DOTTED_KEYS:
        section, name = key.split(".", 1)
        return section, name
    if key in SECTIONS and not extra:
        _bad(path, f"unknown key (use dotted keys such as '{key}.{_FIELDS[key][0]}')")
    _bad(path, f"unknown key{_suggest(str(key), extra)}")


def _value(section: str, name: str, value: Any, path: str) -> Any:
    return coerce(value, _HINTS[section][name], path)


def _put(layer: Layer, section: str, name: str, value: Any, path: str) -> None:
    target = layer.setdefault(section, {})
    if name in target:
        _bad(path, "set twice (as a section key and as a dotted key)")
    target[name] = value


def _layer(data: Any, path: str, allow_label: bool) -> tuple[Layer, str | None]:
    """Normalise base or a runs entry (nested sections and/or dotted keys) into a Layer."""
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        _bad(path, f"expected a mapping of overrides, got {_show(data)}")
    layer: Layer = {}
    label = None
    for key, value in data.items():
        kpath = f"{path}.{key}"
        if key == "label" and allow_label:
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                _bad(kpath, f"expected a non-empty one-line string, got {_show(value)}")
            label = value.strip()
        elif key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                _bad(kpath, f"expected a mapping, got {_show(value)}")
            layer.setdefault(key, {})
            for name, v in value.items():
                if name not in _FIELDS[key]:
                    _bad(f"{kpath}.{name}", f"unknown key{did_you_mean(str(name), _FIELDS[key])}")
                _put(layer, key, name, _value(key, name, v, f"{kpath}.{name}"), f"{kpath}.{name}")
        else:
            extra = [*SECTIONS, *(["label"] if allow_label else [])]
            section, name = _check_key(key, kpath, extra)
            _put(layer, section, name, _value(section, name, value, kpath), kpath)
    return layer, label


def _axes(data: Any, path: str, unique: bool) -> list[tuple[str, list[Any]]]:
    """Parse a grid or zip group: dotted keys -> non-empty lists of type-checked values."""
    if not isinstance(data, dict):
        _bad(path, f"expected a mapping of dotted keys to lists, got {_show(data)}")
    if not data:
        _bad(path, "must not be empty (leave it out instead)")
    axes = []
    for key, values in data.items():
        kpath = f"{path}.{key}"
        section, name = _check_key(key, kpath)
        if not isinstance(values, list):
            _bad(kpath, f"expected a list of values, got {_show(values)}")
        if not values:
            _bad(kpath, "must list at least one value")
        checked: list[Any] = []
        for i, v in enumerate(values):
            c = _value(section, name, v, f"{kpath}[{i}]")
            if unique and c in checked:
                _bad(f"{kpath}[{i}]", f"duplicate value {_fmt(c)}")
            checked.append(c)
        axes.append((key, checked))
    return axes


def _seeds(data: Any) -> list[int]:
    if not isinstance(data, list):
        _bad("seeds", f"expected a list of integers, got {_show(data)}")
    if not data:
        _bad("seeds", "must list at least one seed (or leave it out)")
    for i, s in enumerate(data):
        if type(s) is not int or s < 0:
            _bad(f"seeds[{i}]", f"expected a non-negative integer, got {_show(s)}")
        if s in data[:i]:
            _bad(f"seeds[{i}]", f"duplicate seed {s}")
    return list(data)


def _get(config: RunConfig, key: str) -> Any:
    section, name = key.split(".", 1)
    return getattr(getattr(config, section), name)


def _short(key: str) -> str:
    name = key.split(".", 1)[1]
    return name if sum(k.endswith(f".{name}") for k in DOTTED_KEYS) == 1 else key


def derive_label(config: RunConfig) -> str:
    """The architecture label of a config, e.g. `L4-H4-C128-T64`."""
    m = config.model
    return f"L{m.n_layer}-H{m.n_head}-C{m.n_embd}-T{m.block_size}"


def _labels(points: list[tuple[str | None, RunConfig]], swept: list[str]) -> list[str]:
    """Explicit or derived labels, made unique by the swept values that differ (seeds aside)."""
    keys = [k for k in swept if k != "train.seed" and not k.startswith("sample.")]
    labels = [explicit or derive_label(cfg) for explicit, cfg in points]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    out = list(labels)
    for label, idx in groups.items():
        differing = [k for k in keys if len({repr(_get(points[i][1], k)) for i in idx}) > 1]
        for i in idx if differing else ():
            cfg = points[i][1]
            out[i] = " ".join([label, *(f"{_short(k)}={_fmt(_get(cfg, k))}" for k in differing)])
    return out


Axes = list[tuple[str, list[Any]]]  # [(dotted key, values)]


@dataclass(frozen=True)
class _Sweep:
    base: Layer
    entries: list[tuple[Layer, str | None]]  # runs entries (layer, explicit label)
    has_runs: bool
    grid: Axes
    zips: list[Axes]
    seeds: list[int | None]
    skip_invalid: bool


def _sweep(data: dict[str, Any]) -> _Sweep:
    """Check the sweep keys of a study mapping, key by key, before any point is built."""
    skip_invalid = data.get("skip_invalid")
    skip_invalid = False if skip_invalid is None else skip_invalid
    if not isinstance(skip_invalid, bool):
        _bad("skip_invalid", f"expected true or false, got {_show(skip_invalid)}")
    entries: list[tuple[Layer, str | None]] = [({}, None)]
    runs = data.get("runs")
    if runs is not None:
        if not isinstance(runs, list):
            _bad("runs", f"expected a list of run overrides, got {_show(runs)}")
        if not runs:
            _bad("runs", "must list at least one run (or leave it out)")
        entries = [_layer(e, f"runs[{i}]", allow_label=True) for i, e in enumerate(runs)]
    grid = _axes(data["grid"], "grid", unique=True) if data.get("grid") is not None else []
    zips: list[Axes] = []
    if data.get("zip") is not None:
        if not isinstance(data["zip"], list):
            _bad("zip", f"expected a list of groups of dotted keys, got {_show(data['zip'])}")
        if not data["zip"]:
            _bad("zip", "must list at least one group (or leave it out)")
        for g, group in enumerate(data["zip"]):
            zips.append(axes := _axes(group, f"zip[{g}]", unique=False))
            (first, values), *rest = axes
            for key, other in rest:
                if len(other) != len(values):
                    _bad(
                        f"zip[{g}].{key}",
                        f"has {len(other)} values but {first} has "
                        f"{len(values)}; keys in a zip group vary together",
                    )
    seeds = _seeds(data["seeds"]) if data.get("seeds") is not None else [None]
    owner = {key: "grid" for key, _ in grid}
    for g, axes in enumerate(zips):
        for key, _ in axes:
            if key in owner:
                _bad(f"zip[{g}].{key}", f"also set in {owner[key]}; set each key in one place")
            owner[key] = f"zip[{g}]"
    if seeds != [None] and "train.seed" in owner:
        _bad(f"{owner['train.seed']}.train.seed", "also set by seeds; use one or the other")
    base, _ = _layer(data.get("base"), "base", allow_label=False)
    return _Sweep(base, entries, runs is not None, grid, zips, seeds, skip_invalid)


def _points(sweep: _Sweep) -> Iterator[tuple[str, bool, str | None, Layer]]:
    """Every point before seeds: (where, has swept values, explicit label, merged layer)."""
    rows = [list(zip(*(values for _, values in axes))) for axes in sweep.zips]
    keys = [key for key, _ in sweep.grid] + [key for axes in sweep.zips for key, _ in axes]
    combos = itertools.product(
        enumerate(sweep.entries), itertools.product(*(v for _, v in sweep.grid)), *rows
    )
    for (r, (layer, label)), *chosen in combos:
        values = dict(zip(keys, itertools.chain.from_iterable(chosen)))
        shown = ", ".join(f"{k}: {_fmt(v)}" for k, v in values.items())
        parts = [f"runs[{r}]"] * sweep.has_runs + ["grid point {" + shown + "}"] * bool(values)
        merged = copy.deepcopy(sweep.base)
        for section, fields in layer.items():
            merged.setdefault(section, {}).update(fields)
        for key, value in values.items():
            section, name = key.split(".", 1)
            merged.setdefault(section, {})[name] = value
        yield ", ".join(parts) or "base", bool(values), label, merged


def expand(
    data: dict[str, Any], source: str = "<study>"
) -> tuple[tuple[PlannedRun, ...], tuple[tuple[str, str], ...]]:
    """Expand the sweep keys of a study mapping (base, runs, grid, zip, seeds, skip_invalid).

    Returns the planned runs in expansion order (runs x grid x zip rows x seeds, the last
    varying fastest) and the skipped points (description, reason) when skip_invalid is set.
    Other top-level keys are ignored here; parse_study checks them.
    """
    if not isinstance(data, dict):
        raise StudyError(f"{source}: expected a mapping of study keys, got {type(data).__name__}")
    try:
        return _expand(_sweep(data))
    except ConfigError as exc:
        raise StudyError(f"{source}: {exc}".replace("\n", " ")) from None


def _expand(sweep: _Sweep) -> tuple[tuple[PlannedRun, ...], tuple[tuple[str, str], ...]]:
    points: list[tuple[str, str | None, RunConfig]] = []  # (where, explicit label, config)
    skipped: list[tuple[str, str]] = []
    for where, swept, label, merged in _points(sweep):
        try:
            points.append((where, label, RunConfig.from_dict(merged)))
        except ConfigError as exc:
            reason = " ".join(str(exc).split())
            if not sweep.skip_invalid:
                _bad("", f"{where}: {reason}" if swept else f"{where}.{reason}")
            skipped.append((where, reason))
    if not points:
        n, (where, reason) = len(skipped), skipped[0]
        _bad("", f"every point is invalid ({n} of {n} skipped); first: {where}: {reason}")

    swept_keys = [key for key, _ in sweep.grid] + [k for axes in sweep.zips for k, _ in axes]
    for layer, _ in sweep.entries:
        swept_keys += [f"{s}.{n}" for s, names in layer.items() for n in names]
    labels = _labels([(label, cfg) for _, label, cfg in points], list(dict.fromkeys(swept_keys)))
    planned: list[PlannedRun] = []
    seen: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    for (where, _, config), label in zip(points, labels):
        corpus = config.data.corpus
        if corpus not in fingerprints:
            fingerprints[corpus] = _fingerprint(corpus, where)
        for seed in sweep.seeds:
            at = where
            if seed is not None:
                train = dataclasses.replace(config.train, seed=seed)
                config, at = dataclasses.replace(config, train=train), f"{where}, seed {seed}"
            run_id = config.run_id(fingerprints[corpus])
            if run_id in seen:
                _bad(
                    at,
                    f"resolves to the same run as {seen[run_id]} (run_id {run_id}); "
                    "points must differ in model, optim, train, budget or data",
                )
            seen[run_id] = at
            planned.append(PlannedRun(run_id, label, config, index=len(planned)))
    return tuple(planned), tuple(skipped)


def _fingerprint(corpus: str, where: str) -> str:
    """The corpus's content fingerprint for run ids (reads a corpus file, once per version)."""
    from chargpt.data import CorpusError, corpus_fingerprint  # here: chargpt.data loads torch

    try:
        return corpus_fingerprint(corpus)
    except CorpusError as exc:
        _bad(where, f"data.corpus: {exc}")


def parse_study(data: Any, source: str = "<study>") -> Study:
    """Validate a parsed study mapping and expand it (no file access but a corpus file's
    content, which is part of each run's identity)."""
    if data is None:
        raise StudyError(f"{source}: file is empty (expected a mapping with at least 'name')")
    if not isinstance(data, dict):
        raise StudyError(f"{source}: expected a mapping of study keys, got {type(data).__name__}")
    for key in data:
        if key not in TOP_KEYS:
            raise StudyError(f"{source}: {key}: unknown key{did_you_mean(str(key), TOP_KEYS)}")
    name, description = data.get("name"), data.get("description") or ""
    if name is None:
        raise StudyError(f"{source}: name: missing (required: it names results/<name>/)")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or set(name) == {"."}:
        raise StudyError(
            f"{source}: name: must be letters, digits, '_', '.' or '-' "
            f"(not only dots), got {_show(name)}"
        )
    if not isinstance(description, str):
        raise StudyError(f"{source}: description: expected a string, got {_show(description)}")
    runs, skipped = expand(data, source)
    return Study(name, description.strip(), None, copy.deepcopy(data), runs, skipped)


def load_study(path: str | Path) -> Study:
    """Read, parse (strict yaml.safe_load), validate and expand a study file (StudyError)."""
    source, file = str(path), Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise StudyError(f"{source}: is a directory, not a study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"{source}: cannot read: {exc}".replace("\n", " ")) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise StudyError(f"{source}: {yaml_error_line(exc)}") from None
    return dataclasses.replace(parse_study(data, source), path=file)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The one run of a recipe file (a study file that plans a single run), with overrides:
    dotted keys (`train.threads`) or whole sections (`budget`). Errors are StudyError."""
    study = load_study(path)
    if len(study.runs) != 1:
        raise StudyError(f"{path}: a recipe plans one run, this file plans {len(study.runs)}")
    data = study.runs[0].config.to_dict()
    for key, value in (overrides or {}).items():
        if "." in key:
            section, name = key.split(".", 1)
            data[section][name] = value
        else:
            data[key] = value
    try:
        return RunConfig.from_dict(data)
    except ConfigError as exc:
        raise StudyError(f"{path}: {exc}") from None


def plan_rows(study: Study, vocab_size: int | None = None) -> list[dict[str, Any]]:
    """One flat dict per planned run: run_id, label, config columns, parameter and FLOP counts.

    vocab_size (the corpus's) fills in models that leave it unset; without any vocabulary size
    n_params, n_params_non_embedding and flops_per_token are None (empty CSV cells).
    """
    rows = []
    for run in study.runs:
        row: dict[str, Any] = {"run_id": run.run_id, "label": run.label}
        row.update(run.config.to_flat_dict())
        model = run.config.model
        if model.vocab_size is None and vocab_size is not None:
            model = dataclasses.replace(model, vocab_size=vocab_size)
            row["vocab_size"] = vocab_size
        counts: dict[str, float] = {}
        if model.vocab_size is not None:
            from chargpt.model import count_params  # torch is imported only when counts are asked

            counts = count_params(model)
        for key in ("n_params", "n_params_non_embedding", "flops_per_token"):
            row[key] = counts.get(key)
        rows.append(row)
    return rows


def budget_str(budget: Budget) -> str:
    """Compact human budget, e.g. `2000 steps | 1e13 FLOPs | 60 s`."""
    parts = [(k, getattr(budget, k)) for k in BUDGET_KINDS]
    return " | ".join(f"{_num(v)} {_UNITS[k]}" for k, v in parts if v is not None)
