"""Samples: a markdown table per prompt of every run's text at each temperature."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plots import common
from plots.common import Item, Section, Study

COLUMNS = ("temperature", "prompt", "text")


def load_samples(study: Study) -> tuple[pd.DataFrame, list[str]]:
    """All runs' samples.csv (with run_id, label, lr) and notes on runs without usable ones."""
    frames, notes = [], []
    for row in study.runs.itertuples():
        path = study.path / "runs" / row.run_id / "samples.csv"
        if not path.is_file():
            if row.status == "ok":
                notes.append(f"{row.label} ({row.run_id})")
            continue
        try:
            df = common.read_csv(path, COLUMNS, text=True)
        except common.ResultsError as exc:
            notes.append(f"{row.label} ({row.run_id}): {exc}")
            continue
        frames.append(df.assign(run_id=row.run_id, label=row.label, lr=getattr(row, "lr", None)))
    cols = ["run_id", "label", "lr", *COLUMNS]
    samples = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
    return samples, notes


def _shorten(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + " …"


def samples_markdown(study: Study, samples: pd.DataFrame, max_chars: int = 400) -> str:
    """Per prompt: label, temperature and text for every run (architectures by size)."""
    order = {lab: i for i, lab in enumerate(study.labels())}
    several = samples.groupby("label")["run_id"].nunique().max() > 1
    out = [
        f"# Samples — study {study.name}\n",
        "Every run's continuation of each prompt at each temperature (the prompt is part of "
        "the text; line breaks shown as breaks; longer texts cut at "
        f"{max_chars} characters).\n",
    ]
    for prompt, grp in samples.groupby("prompt", sort=False):
        shown = prompt.encode("unicode_escape").decode().replace("`", "'")
        out.append(f"## Prompt `{shown}`\n")
        grp = grp.assign(_o=grp["label"].map(order)).sort_values(
            ["_o", "lr", "run_id", "temperature"], ascending=[True, True, True, False]
        )
        cols = ["label", "lr", "run_id"] if several else ["label"]
        table = grp[[*cols, "temperature"]].copy()
        if "lr" in table:
            table["lr"] = table["lr"].map(lambda v: f"{v:g}")
        table["temperature"] = grp["temperature"].map(lambda v: f"{v:g}")
        table["text"] = grp["text"].map(lambda t: _shorten(t, max_chars))
        out.append(common.markdown_table(table))
    return "\n".join(out)


def compare_table(study: Study, samples: pd.DataFrame, max_chars: int = 160) -> pd.DataFrame:
    """At one temperature (0.8 when sampled), per prompt: the best run of each architecture."""
    temps = sorted(samples["temperature"].dropna().unique())
    temp = 0.8 if 0.8 in temps else temps[len(temps) // 2]
    runs = study.runs.set_index("run_id")
    loss = runs["best_val_loss"] if "best_val_loss" in runs else pd.Series(dtype=float)
    pick = (
        samples[samples["temperature"] == temp]
        .assign(loss=lambda d: d["run_id"].map(loss))
        .sort_values("loss", na_position="last")
    )
    pick = pick.drop_duplicates(["prompt", "label"])
    order = {lab: i for i, lab in enumerate(study.labels())}
    pick = pick.assign(_o=pick["label"].map(order)).sort_values(["prompt", "_o"], kind="stable")
    return pd.DataFrame(
        {
            "prompt": pick["prompt"].map(lambda p: p.encode("unicode_escape").decode()),
            "temperature": pick["temperature"].map(lambda v: f"{v:g}"),
            "label": pick["label"],
            "best_val_loss": pick["loss"].map(lambda v: f"{v:.4f}" if pd.notna(v) else ""),
            "text": pick["text"].map(lambda t: _shorten(t, max_chars)),
        }
    )


def build(study: Study, figdir: Path, tabdir: Path, max_chars: int = 400) -> Section:
    """tables/samples.md (and .csv) when at least one run wrote samples."""
    section = Section("Samples")
    samples, missing = load_samples(study)
    if missing:
        section.notes.append("no usable samples.csv for " + ", ".join(missing))
    if samples.empty:
        section.notes.append("no run wrote samples.csv: samples table skipped")
        return section
    tabdir.mkdir(parents=True, exist_ok=True)
    samples.to_csv(tabdir / "samples.csv", index=False)
    (tabdir / "samples.md").write_text(samples_markdown(study, samples, max_chars))
    compare = compare_table(study, samples)
    common.add_table(
        section,
        tabdir,
        "samples_compare",
        compare,
        "The same prompts for every "
        "architecture (its best run) at temperature "
        f"{compare['temperature'].iloc[0]}, smallest model first.",
    )
    temps = ", ".join(f"{t:g}" for t in sorted(samples["temperature"].unique(), reverse=True))
    section.items.append(
        Item(
            "table",
            tabdir / "samples.md",
            f"Samples of "
            f"{samples['run_id'].nunique()} runs at temperatures {temps}, "
            f"per prompt, architectures by size.",
        )
    )
    return section


def _max_chars(parser: common.Parser) -> None:
    parser.add_argument(
        "--max-chars",
        type=common.int_at_least(1, "one character"),
        default=400,
        help="cut longer texts",
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.samples results/<study> [--out DIR] [--max-chars N]`."""
    return common.figure_main(argv, "python -m plots.samples", __doc__, build, options=_max_chars)


if __name__ == "__main__":
    raise SystemExit(main())
