"""Study files: YAML -> validated Study -> expanded, labelled, hashed runs (pure functions)."""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chargpt.config import (
    BUDGET_KINDS,
    Budget,
    ConfigError,
    RunConfig,
    did_you_mean,
)
from chargpt.study.sweep import (
    Sweep,
    fail,
    parse_sweep,
    short_number,
    show,
    sweep_points,
    unique_labels,
)
from chargpt.yamlfile import load_yaml, yaml_error_line

__all__ = [
    "PlannedRun",
    "Study",
    "StudyError",
    "budget_str",
    "expand",
    "load_study",
    "parse_study",
    "plan_rows",
]

TOP_KEYS = ("name", "description", "base", "grid", "zip", "runs", "seeds", "skip_invalid")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_UNITS = {"max_steps": "steps", "max_tokens": "tokens", "max_flops": "FLOPs", "max_seconds": "s"}


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
        return _expand(parse_sweep(data))
    except ConfigError as exc:
        raise StudyError(f"{source}: {exc}".replace("\n", " ")) from None


def _expand(sweep: Sweep) -> tuple[tuple[PlannedRun, ...], tuple[tuple[str, str], ...]]:
    points: list[tuple[str, str | None, RunConfig]] = []  # (where, explicit label, config)
    skipped: list[tuple[str, str]] = []
    for where, swept, label, merged in sweep_points(sweep):
        try:
            points.append((where, label, RunConfig.from_dict(merged)))
        except ConfigError as exc:
            reason = " ".join(str(exc).split())
            if not sweep.skip_invalid:
                fail("", f"{where}: {reason}" if swept else f"{where}.{reason}")
            skipped.append((where, reason))
    if not points:
        n, (where, reason) = len(skipped), skipped[0]
        fail("", f"every point is invalid ({n} of {n} skipped); first: {where}: {reason}")

    swept_keys = [key for key, _ in sweep.grid] + [k for axes in sweep.zips for k, _ in axes]
    for layer, _ in sweep.entries:
        swept_keys += [f"{s}.{n}" for s, names in layer.items() for n in names]
    labels = unique_labels(
        [(label, cfg) for _, label, cfg in points], list(dict.fromkeys(swept_keys))
    )
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
                fail(
                    at,
                    f"resolves to the same run as {seen[run_id]} (run_id {run_id}); "
                    "points must differ in model, optim, train, budget or data",
                )
            seen[run_id] = at
            planned.append(PlannedRun(run_id, label, config, index=len(planned)))
    return tuple(planned), tuple(skipped)


def _fingerprint(corpus: str, where: str) -> str:
    """The corpus's content fingerprint for run ids (reads a corpus file, once per version)."""
    from chargpt.corpus import CorpusError, corpus_fingerprint  # here: it imports numpy

    try:
        return corpus_fingerprint(corpus)
    except CorpusError as exc:
        fail(where, f"data.corpus: {exc}")


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
            f"(not only dots), got {show(name)}"
        )
    if not isinstance(description, str):
        raise StudyError(f"{source}: description: expected a string, got {show(description)}")
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
    return " | ".join(f"{short_number(v)} {_UNITS[k]}" for k, v in parts if v is not None)
