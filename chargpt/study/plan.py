"""A study's plan before anything trains: the options, the input checks, the dry-run table and
the files that describe the study (study.yaml, plan.csv, env.json, corpus.json)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chargpt.config import DataConfig
from chargpt.files import write_atomic, write_json
from chargpt.study import spec
from chargpt.study.store import StudyStore, csv_text


class InputError(ValueError):
    """Bad input found before anything is written (exit code 2)."""


EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    out: Path = Path("results")
    dry_run: bool = False
    only: tuple[str, ...] = ()
    fresh: bool = False
    retry_failed: bool = False
    jobs: int | str = 1  # runs at once, or "auto" (chargpt.study.packing)
    timeout_s: float | None = None
    reprobe: bool = False  # measure the peak FLOP/s again; drop the packing figures
    executor: str = "local"  # local: worker processes here; ray: Ray tasks on a cluster
    ray_address: str | None = None  # None: start a local Ray; auto or HOST:PORT: join one


def corpus_facts(data: DataConfig) -> dict[str, Any]:
    """Size, vocabulary and reference losses of a corpus (for corpus.json and the plan)."""
    return _corpus_facts_and_chars(data)[0]


def _corpus_facts_and_chars(data: DataConfig) -> tuple[dict[str, Any], str]:
    """corpus_facts, and the corpus's characters (what a sample prompt may use)."""
    from chargpt.data import load_splits, reference_losses

    splits = load_splits(data)
    vocab_size = splits.tokenizer.vocab_size
    facts = {
        "n_chars": splits.n_chars,
        "vocab_size": vocab_size,
        "train_tokens": len(splits.train),
        "val_tokens": len(splits.val),
        "val_fraction": data.val_fraction,
        "reference_losses": reference_losses(splits.train.numpy(), splits.val.numpy(), vocab_size),
    }
    return facts, "".join(splits.tokenizer.chars)


def _check_run_fits_corpus(
    source: str, run: spec.PlannedRun, facts: dict[str, Any], chars: str
) -> None:
    """What a run asks of its corpus, checked before anything trains: a block_size that both
    splits can hold (each batch row is block_size + 1 characters), and sample prompts made of
    the corpus's characters. Either would otherwise fail the run after it trained (prompts)
    or after minutes of start-up (a block_size near the corpus's size)."""
    where = f"{source}: run {run.label} ({run.run_id})"
    corpus, block = run.config.data.corpus, run.config.model.block_size
    # the run's own split (val_fraction may differ between runs of one corpus), as split_ids cuts
    n_train = int(facts["n_chars"] * (1.0 - run.config.data.val_fraction))
    splits = [("train", n_train), ("validation", facts["n_chars"] - n_train)]
    shortest = min(splits, key=lambda split: split[1])
    if shortest[1] <= block:
        raise InputError(
            f"{where}: model.block_size: {block} does not fit corpus {corpus!r}: its "
            f"{shortest[0]} split holds {shortest[1]:,} characters, and a batch row needs "
            f"block_size + 1"
        )
    for i, prompt in enumerate(run.config.sample.prompts if run.config.sample else ()):
        unknown = sorted({c for c in prompt if c not in chars})
        if unknown:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:5])
            raise InputError(
                f"{where}: sample.prompts[{i}]: {prompt!r} uses {shown}, not among the "
                f"{len(chars)} characters of corpus {corpus!r}"
            )


def check_inputs(study: spec.Study, opts: Options) -> tuple[list[spec.PlannedRun], dict[str, Any]]:
    """Everything that can be wrong before a run starts; raises InputError (nothing written)."""
    from chargpt.corpus import CorpusError
    from chargpt.measure import resolve_device

    source = str(study.path or study.name)
    if isinstance(opts.jobs, str) and opts.jobs != "auto":
        raise InputError(f"--jobs must be a number >= 1 or auto, got {opts.jobs}")
    if isinstance(opts.jobs, int) and opts.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {opts.jobs}")
    if opts.timeout_s is not None and not (0 < opts.timeout_s < math.inf):
        raise InputError(f"--timeout must be > 0 seconds and finite, got {opts.timeout_s:g}")
    _check_out_folder(opts.out / study.name)
    if opts.executor not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {opts.executor}")
    if opts.ray_address is not None and opts.executor != "ray":
        raise InputError("--ray-address needs --executor ray")
    runs = list(study.runs)
    if opts.only:
        wanted = set(opts.only)
        runs = [r for r in runs if r.run_id in wanted or r.label in wanted]
        known = {r.run_id for r in study.runs} | {r.label for r in study.runs}
        missing = sorted(wanted - known)
        if missing:
            labels = ", ".join(sorted({r.label for r in study.runs}))
            raise InputError(
                f"{source}: --only {missing[0]}: no run with that run_id or label "
                f"(labels: {labels})"
            )
    corpora: dict[str, Any] = {}
    chars: dict[str, str] = {}
    for run in runs:
        key = run.config.data.corpus
        if key not in corpora:
            try:
                corpora[key], chars[key] = _corpus_facts_and_chars(run.config.data)
            except CorpusError as exc:
                raise InputError(f"{source}: data.corpus: {exc}") from None
        vocab = run.config.model.vocab_size
        if vocab is not None and vocab != corpora[key]["vocab_size"]:
            raise InputError(
                f"{source}: model.vocab_size: {vocab} does not match corpus "
                f"{key!r} ({corpora[key]['vocab_size']} characters)"
            )
        _check_run_fits_corpus(source, run, corpora[key], chars[key])
    # A plan made for a GPU still prints on a laptop: only a real run needs the device.
    for device in [] if opts.dry_run else sorted({r.config.train.device for r in runs}):
        try:
            resolve_device(device)
        except ValueError as exc:
            raise InputError(f"{source}: {exc}") from None
    return runs, corpora


def _check_out_folder(root: Path) -> None:
    """The study's results folder, or the nearest part of its path that exists, must be a
    folder: a file there is a mistyped --out, not a disk to free."""
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                raise InputError(f"--out: {path} is a file, not a folder for results/<study>")
            return


def plan_table(
    study: spec.Study, runs: list[spec.PlannedRun], vocab: dict[str, int], store: StudyStore | None
) -> str:
    """The expanded plan as an aligned text table (for --dry-run)."""
    from chargpt.model import count_params

    header = [
        "run_id",
        "label",
        "n_layer",
        "n_head",
        "n_embd",
        "block_size",
        "batch_size",
        "lr",
        "seed",
        "params",
        "FLOPs/token",
        "budget",
        "status",
    ]
    rows = [header]
    for r in runs:
        m, t = r.config.model, r.config.train
        counts = count_params(
            m.__class__(**{**m.to_dict(), "vocab_size": vocab[r.config.data.corpus]})
        )
        status = (store.status(r.run_id) if store else None) or "todo"
        rows.append(
            [
                r.run_id,
                r.label,
                m.n_layer,
                m.n_head,
                m.n_embd,
                m.block_size,
                t.batch_size,
                f"{r.config.optim.lr:g}",
                t.seed,
                f"{counts['n_params']:,}",
                f"{counts['flops_per_token']:.3g}",
                spec.budget_str(r.config.budget),
                status,
            ]
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows
    )


def describe_study(study: spec.Study, store: StudyStore, corpora: dict[str, Any]) -> None:
    """study.yaml, plan.csv, env.json and corpus.json, each written atomically."""
    import torch

    from chargpt import measure

    if study.path is not None:
        write_atomic(store.root / "study.yaml", study.path.read_text(encoding="utf-8"))
    plan = spec.plan_rows(
        study, next(iter(corpora.values()))["vocab_size"] if len(corpora) == 1 else None
    )
    write_atomic(store.root / "plan.csv", csv_text(plan, ["run_id", "label"]))
    device = measure.resolve_device(study.runs[0].config.train.device)
    env = measure.fingerprint(device)
    env["peak_flops_float32"] = measure.measure_peak_flops(device, torch.float32)
    if device.type == "cuda" or any(r.config.train.dtype != "float32" for r in study.runs):
        env["peak_flops_bfloat16"] = measure.measure_peak_flops(device, torch.bfloat16)
    write_json(store.root / "env.json", env)
    write_json(store.root / "corpus.json", corpora)
