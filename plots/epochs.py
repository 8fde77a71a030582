"""Epochs over the training split per run (tokens / train_tokens of corpus.json), past 4 flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plots import common
from plots.common import Section, Study

MAX_EPOCHS = 4.0  # beyond ~4 epochs repeated data is worth less than new data (Muennighoff 2023)


def epochs(study: Study) -> pd.DataFrame:
    """Finished runs with tokens, their corpus's train_tokens and epochs = tokens / train_tokens."""
    runs = study.ok
    if common.missing_columns(runs, ["tokens", "corpus"]) or not study.corpus:
        return runs.iloc[:0]
    train = {
        name: float(entry["train_tokens"])
        for name, entry in study.corpus.items()
        if isinstance(entry, dict) and isinstance(entry.get("train_tokens"), (int, float))
    }
    out = runs.assign(train_tokens=runs["corpus"].map(train))
    out = out[out["train_tokens"] > 0]
    return out.assign(epochs=out["tokens"] / out["train_tokens"])


def build(study: Study, figdir: Path, tabdir: Path) -> Section:
    """The epochs table of every finished run, and a flag when any passes MAX_EPOCHS."""
    section = Section("Epochs over the training split")
    table = epochs(study)
    if table.empty:
        section.notes.append("runs.csv has no tokens/corpus or corpus.json no train_tokens")
        return section
    cols = [
        c
        for c in ("label", "seed", "n_params", "max_flops", "tokens", "train_tokens")
        if c in table
    ]
    raw = table[[*cols, "epochs"]].assign(past_limit=table["epochs"] > MAX_EPOCHS)
    shown = raw.assign(
        n_params=raw["n_params"].map(common.fmt_count) if "n_params" in raw else None,
        tokens=raw["tokens"].map(common.fmt_count),
        max_flops=raw["max_flops"].map(lambda v: f"{v:.3g}") if "max_flops" in raw else None,
        train_tokens=raw["train_tokens"].map(common.fmt_count),
        epochs=raw["epochs"].map(lambda v: f"{v:.2f}"),
        past_limit=np.where(raw["past_limit"], f"> {MAX_EPOCHS:g}", ""),
    ).drop(columns=[c for c in ("n_params", "max_flops") if c not in raw])
    common.add_table(
        section,
        tabdir,
        "epochs",
        shown,
        f"Epochs over the training split per run (tokens / train_tokens); runs past "
        f"{MAX_EPOCHS:g} epochs are marked.",
        raw=raw,
    )
    past = raw[raw["past_limit"]]
    if len(past):
        section.flags.append(
            f"{len(past)} of {len(raw)} runs see the training split more than {MAX_EPOCHS:g} "
            f"times (up to {raw['epochs'].max():.1f} epochs): repeated data changes the scaling "
            "(Muennighoff et al. 2023), so their losses are not those of fresh-data training"
        )
    return section
