"""A study's sweep keys (base, runs, grid, zip, seeds, skip_invalid), checked key by key
before any point is built, then crossed into points with unique labels (chargpt.study.spec
turns the points into runs)."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import re
import typing
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from chargpt.config import SECTIONS, ConfigError, RunConfig, coerce, did_you_mean

_FIELDS = {s: [f.name for f in dataclasses.fields(c)] for s, c in SECTIONS.items()}  # type: ignore
_HINTS = {s: typing.get_type_hints(cls) for s, cls in SECTIONS.items()}
DOTTED_KEYS: tuple[str, ...] = tuple(f"{s}.{f}" for s in SECTIONS for f in _FIELDS[s])
Layer = dict[str, dict[str, Any]]  # {section: {field: value}}, values already type-checked


def fail(path: str, message: str) -> NoReturn:
    """Raise the one-line ConfigError for the key at `path` (spec adds the file's name)."""
    raise ConfigError(f"{path}: {message}" if path else message)


def show(value: Any) -> str:
    """A value as the error message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def short_number(value: float) -> str:
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
        return short_number(value)
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
        fail(path, f"unknown key (use dotted keys such as '{key}.{_FIELDS[key][0]}')")
    fail(path, f"unknown key{_suggest(str(key), extra)}")


def _value(section: str, name: str, value: Any, path: str) -> Any:
    return coerce(value, _HINTS[section][name], path)


def _put(layer: Layer, section: str, name: str, value: Any, path: str) -> None:
    target = layer.setdefault(section, {})
    if name in target:
        fail(path, "set twice (as a section key and as a dotted key)")
    target[name] = value


def _layer(data: Any, path: str, allow_label: bool) -> tuple[Layer, str | None]:
    """Normalise base or a runs entry (nested sections and/or dotted keys) into a Layer."""
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        fail(path, f"expected a mapping of overrides, got {show(data)}")
    layer: Layer = {}
    label = None
    for key, value in data.items():
        kpath = f"{path}.{key}"
        if key == "label" and allow_label:
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                fail(kpath, f"expected a non-empty one-line string, got {show(value)}")
            label = value.strip()
        elif key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                fail(kpath, f"expected a mapping, got {show(value)}")
            layer.setdefault(key, {})
            for name, v in value.items():
                if name not in _FIELDS[key]:
                    fail(f"{kpath}.{name}", f"unknown key{did_you_mean(str(name), _FIELDS[key])}")
                _put(layer, key, name, _value(key, name, v, f"{kpath}.{name}"), f"{kpath}.{name}")
        else:
            extra = [*SECTIONS, *(["label"] if allow_label else [])]
            section, name = _check_key(key, kpath, extra)
            _put(layer, section, name, _value(section, name, value, kpath), kpath)
    return layer, label


def _axes(data: Any, path: str, unique: bool) -> list[tuple[str, list[Any]]]:
    """Parse a grid or zip group: dotted keys -> non-empty lists of type-checked values."""
    if not isinstance(data, dict):
        fail(path, f"expected a mapping of dotted keys to lists, got {show(data)}")
    if not data:
        fail(path, "must not be empty (leave it out instead)")
    axes = []
    for key, values in data.items():
        kpath = f"{path}.{key}"
        section, name = _check_key(key, kpath)
        if not isinstance(values, list):
            fail(kpath, f"expected a list of values, got {show(values)}")
        if not values:
            fail(kpath, "must list at least one value")
        checked: list[Any] = []
        for i, v in enumerate(values):
            c = _value(section, name, v, f"{kpath}[{i}]")
            if unique and c in checked:
                fail(f"{kpath}[{i}]", f"duplicate value {_fmt(c)}")
            checked.append(c)
        axes.append((key, checked))
    return axes


def _seeds(data: Any) -> list[int]:
    if not isinstance(data, list):
        fail("seeds", f"expected a list of integers, got {show(data)}")
    if not data:
        fail("seeds", "must list at least one seed (or leave it out)")
    for i, s in enumerate(data):
        if type(s) is not int or s < 0:
            fail(f"seeds[{i}]", f"expected a non-negative integer, got {show(s)}")
        if s in data[:i]:
            fail(f"seeds[{i}]", f"duplicate seed {s}")
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


def unique_labels(points: list[tuple[str | None, RunConfig]], swept: list[str]) -> list[str]:
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
class Sweep:
    """The sweep keys of a study, each checked: what parse_sweep hands to sweep_points."""

    base: Layer
    entries: list[tuple[Layer, str | None]]  # runs entries (layer, explicit label)
    has_runs: bool
    grid: Axes
    zips: list[Axes]
    seeds: list[int | None]
    skip_invalid: bool


def parse_sweep(data: dict[str, Any]) -> Sweep:
    """Check the sweep keys of a study mapping, key by key, before any point is built."""
    skip_invalid = data.get("skip_invalid")
    skip_invalid = False if skip_invalid is None else skip_invalid
    if not isinstance(skip_invalid, bool):
        fail("skip_invalid", f"expected true or false, got {show(skip_invalid)}")
    entries: list[tuple[Layer, str | None]] = [({}, None)]
    runs = data.get("runs")
    if runs is not None:
        if not isinstance(runs, list):
            fail("runs", f"expected a list of run overrides, got {show(runs)}")
        if not runs:
            fail("runs", "must list at least one run (or leave it out)")
        entries = [_layer(e, f"runs[{i}]", allow_label=True) for i, e in enumerate(runs)]
    grid = _axes(data["grid"], "grid", unique=True) if data.get("grid") is not None else []
    zips: list[Axes] = []
    if data.get("zip") is not None:
        if not isinstance(data["zip"], list):
            fail("zip", f"expected a list of groups of dotted keys, got {show(data['zip'])}")
        if not data["zip"]:
            fail("zip", "must list at least one group (or leave it out)")
        for g, group in enumerate(data["zip"]):
            zips.append(axes := _axes(group, f"zip[{g}]", unique=False))
            (first, values), *rest = axes
            for key, other in rest:
                if len(other) != len(values):
                    fail(
                        f"zip[{g}].{key}",
                        f"has {len(other)} values but {first} has "
                        f"{len(values)}; keys in a zip group vary together",
                    )
    seeds = _seeds(data["seeds"]) if data.get("seeds") is not None else [None]
    owner = {key: "grid" for key, _ in grid}
    for g, axes in enumerate(zips):
        for key, _ in axes:
            if key in owner:
                fail(f"zip[{g}].{key}", f"also set in {owner[key]}; set each key in one place")
            owner[key] = f"zip[{g}]"
    # A runs entry is crossed with every grid and zip point, which would override its key
    # silently: like grid against zip, each key is set in one place (base gives defaults).
    for r, (layer, _) in enumerate(entries if runs is not None else []):
        for key in (f"{section}.{name}" for section, names in layer.items() for name in names):
            if key in owner or (key == "train.seed" and seeds != [None]):
                fail(
                    f"runs[{r}].{key}",
                    f"also set in {owner.get(key, 'seeds')}, whose values would override it "
                    "in every point; set each key in one place",
                )
    if seeds != [None] and "train.seed" in owner:
        fail(f"{owner['train.seed']}.train.seed", "also set by seeds; use one or the other")
    base, _ = _layer(data.get("base"), "base", allow_label=False)
    return Sweep(base, entries, runs is not None, grid, zips, seeds, skip_invalid)


def sweep_points(sweep: Sweep) -> Iterator[tuple[str, bool, str | None, Layer]]:
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
