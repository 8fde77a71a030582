"""Shared helpers: loading and validating results dirs, colours per label, axis labels, CLI."""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from threadpoolctl import threadpool_limits

from plots import damage
from plots.paths import UnwritableOutput, check_dir

# Plots never need a display. Importing pyplot (seaborn does) does not choose a backend yet, so
# this still takes effect; every plots module imports common, so it runs before any figure.
matplotlib.use("Agg")

# Axis labels: one wording, with units, everywhere.
VAL_LOSS = "validation loss (nats/char)"
TRAIN_LOSS = "training loss (nats/char)"
LOSS = "loss (nats/char)"
BEST_VAL_LOSS = "best validation loss (nats/char)"
FINAL_VAL_LOSS = "final validation loss (nats/char)"
STEP = "training step (iterations)"
F = TypeVar("F", bound=Callable[..., Any])


def one_blas_thread(fn: F) -> F:
    """Run a fit with one BLAS thread: the fits solve tiny problems thousands of times, and
    on a busy machine BLAS worker threads only wait on each other (30x slower, measured).
    Scoped to the call, so nothing else in the process (or its children) is affected."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


TOKENS = "training tokens (characters)"
FLOPS = "training compute (FLOPs)"
PARAMS = "parameters"
PARAMS_NE = "non-embedding parameters"
THROUGHPUT = "throughput (tokens/s)"
TRAIN_S = "training time (s)"
RSS = "peak RSS (MiB)"
GPU_MEM = "peak GPU memory (MiB)"
BLOCK = "block size (characters of context)"
LR = "peak learning rate"
MFU = "MFU (% of measured peak FLOP/s)"

RUNS_REQUIRED = ("run_id", "label", "status")
CURVES_REQUIRED = ("run_id", "step", "val_loss")
NUMERIC = (
    "n_layer",
    "n_head",
    "n_embd",
    "block_size",
    "vocab_size",
    "batch_size",
    "lr",
    "min_lr",
    "max_steps",
    "max_tokens",
    "max_flops",
    "max_seconds",
    "n_params",
    "n_params_non_embedding",
    "flops_per_token",
    "steps",
    "tokens",
    "train_flops",
    "train_s",
    "eval_s",
    "compile_s",
    "wall_s",
    "tokens_per_s",
    "peak_rss_mb",
    "peak_gpu_mb",
    "peak_flops",
    "mfu",
    "final_train_loss",
    "final_val_loss",
    "best_val_loss",
    "best_step",
    "seed",
    "step",
    "flops",
    "train_loss",
    "val_loss",
)


class ResultsError(Exception):
    """Bad input: the message is one line that names the file and what is wrong."""


@dataclass
class Item:
    """One artefact of a report section: a figure (PNG path) or a table (markdown path)."""

    kind: str
    path: Path
    caption: str


@dataclass
class Section:
    """What one figure family produced, and what it had to skip (and why)."""

    title: str
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # fits whose estimates are not results


@dataclass
class Study:
    """A loaded results/<study> directory; optional files are None when absent."""

    path: Path
    runs: pd.DataFrame
    curves: pd.DataFrame | None
    plan: pd.DataFrame | None
    env: dict[str, Any] | None
    corpus: dict[str, Any] | None
    damaged: list[str] = field(default_factory=list)  # CSV rows left out, one line per file

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def ok(self) -> pd.DataFrame:
        """Runs that finished normally."""
        return self.runs[self.runs["status"] == "ok"]

    def labels(self) -> list[str]:
        """Labels ordered by size (n_params, then name): the order of legends and colours."""
        runs = self.runs
        size = runs.groupby("label")["n_params"].min() if "n_params" in runs else None
        labels = sorted(runs["label"].unique())
        if size is None:
            return labels
        return sorted(labels, key=lambda s: (np.nan_to_num(size.get(s, np.nan), nan=np.inf), s))

    def palette(self) -> dict[str, Any]:
        """label -> colour, fixed per study so a label looks the same in every figure."""
        labels = self.labels()
        colors = sns.color_palette("colorblind" if len(labels) <= 10 else "husl", len(labels))
        return dict(zip(labels, colors))

    def references(self) -> dict[str, float]:
        """The corpus's reference losses (nats/char) when the study used a single known corpus."""
        if not self.corpus:
            return {}
        names = set(self.runs["corpus"].dropna()) if "corpus" in self.runs else set()
        if len(names) == 1 and next(iter(names)) in self.corpus:
            entry = self.corpus[next(iter(names))]
        elif len(self.corpus) == 1:
            entry = next(iter(self.corpus.values()))
        else:
            return {}
        refs = entry.get("reference_losses", {}) if isinstance(entry, dict) else {}
        return {k: float(v) for k, v in refs.items() if isinstance(v, (int, float))}


# Columns that make two runs the same experiment apart from the seed (labels already do, unless
# a study gives two different runs one label).
SEED_GROUP = (
    "label",
    "n_layer",
    "n_head",
    "n_embd",
    "block_size",
    "batch_size",
    "lr",
    "max_steps",
    "max_tokens",
    "max_flops",
    "max_seconds",
    "corpus",
)


def seed_mean(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """One row per seed group: value = the mean over its seeds, value_std = their standard
    deviation (NaN for one seed), n_seeds; the other columns are those of its first row."""
    if df.empty:
        return df.assign(**{f"{value}_std": pd.Series(dtype=float), "n_seeds": 0})
    keys = [c for c in SEED_GROUP if c in df.columns]
    grouped = df.groupby(keys, dropna=False, sort=False)[value]
    out = df.assign(
        **{
            f"{value}_std": grouped.transform("std"),
            "n_seeds": grouped.transform("count"),
            value: grouped.transform("mean"),
        }
    )
    return out.drop_duplicates(keys).reset_index(drop=True)


def seeds_words(df: pd.DataFrame) -> str:
    """How a caption says what a point is: 'mean of n seeds (bars: +-1 std)' or 'one seed'."""
    n = df["n_seeds"] if "n_seeds" in df else pd.Series([1])
    if n.max() <= 1:
        return "one seed per point"
    return f"mean over {int(n.min())}-{int(n.max())} seeds per point (bars: ±1 std over seeds)"


def warn(message: str) -> None:
    """One warning line on stderr: the output is made, but from less than was on disk."""
    print(f"warning: {message}", file=sys.stderr)


def read_csv(
    path: Path,
    required: Iterable[str] = (),
    text: bool = False,
    rebuild: str = "",
    damaged: list[str] | None = None,
) -> pd.DataFrame:
    """A CSV with the given columns, or ResultsError naming the file and what is missing.

    text: keep every cell as written (a sample that reads 'NA' stays 'NA'). Torn or garbled
    rows are left out with one warning line for the file (rebuild: how to get a whole file
    back), which is also appended to damaged.
    """
    if not path.is_file():
        raise ResultsError(f"{path}: no such file")
    numeric = (*NUMERIC, "temperature")
    try:
        df, problems = damage.read(path, text, numeric)
    except pd.errors.EmptyDataError:
        raise ResultsError(f"{path}: empty file, expected a header row") from None
    except (csv.Error, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot parse CSV ({' '.join(str(exc).split())})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}")
    if problems:
        message = damage.describe(path, problems, rebuild)
        warn(message)
        if damaged is not None:
            damaged.append(message)
    for col in [c for c in numeric if c in df.columns]:
        # inf (a diverged loss) would break axis limits: treat as unknown
        df[col] = pd.to_numeric(df[col], errors="coerce").replace([np.inf, -np.inf], np.nan)
    return df


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, None when the file is absent, ResultsError when it is not valid JSON."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    return data


def load_study(path: str | Path, runs_required: Sequence[str] = RUNS_REQUIRED) -> Study:
    """Read a results/<study> directory: runs.csv is required, everything else optional."""
    path = Path(path)
    if not path.is_dir():
        raise ResultsError(f"{path}: no such results directory")
    damaged: list[str] = []
    rerun = "`python run_study.py STUDY.yaml` {}"
    runs = read_csv(
        path / "runs.csv",
        list(dict.fromkeys([*RUNS_REQUIRED, *runs_required])),
        rebuild=rerun.format("rebuilds it from runs/*/result.json"),
        damaged=damaged,
    )
    runs["status"] = runs["status"].fillna("unknown").astype(str)
    runs["label"] = runs["label"].astype(str)
    runs["run_id"] = runs["run_id"].astype(str)
    curves = None
    if (path / "curves.csv").is_file():
        rebuild = rerun.format("rebuilds it from runs/*/curve.csv")
        curves = read_csv(path / "curves.csv", CURVES_REQUIRED, rebuild=rebuild, damaged=damaged)
        curves["run_id"] = curves["run_id"].astype(str)
        labels = runs.set_index("run_id")["label"]
        if "label" not in curves:
            curves["label"] = curves["run_id"].map(labels)
        curves["label"] = curves["label"].fillna(curves["run_id"].map(labels)).astype(str)
    plan = None
    if (path / "plan.csv").is_file():
        rebuild = rerun.format("writes it anew")
        plan = read_csv(path / "plan.csv", ["run_id"], rebuild=rebuild, damaged=damaged)
        plan["run_id"] = plan["run_id"].astype(str)
    env, corpus = read_json(path / "env.json"), read_json(path / "corpus.json")
    return Study(path, runs, curves, plan, env, corpus, damaged)


def add_table(
    section: Section,
    tabdir: Path,
    stem: str,
    table: pd.DataFrame,
    caption: str,
    raw: pd.DataFrame | None = None,
) -> Path:
    """Write tabdir/<stem>.md (and <stem>.csv of raw, when given); list it in the section."""
    tabdir.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        raw.to_csv(tabdir / f"{stem}.csv", index=False)
    path = tabdir / f"{stem}.md"
    path.write_text(markdown_table(table))
    section.items.append(Item("table", path, caption))
    return path


def missing_columns(df: pd.DataFrame | None, columns: Iterable[str]) -> list[str]:
    """Columns absent from df, or that hold no value at all."""
    if df is None:
        return list(columns)
    return [c for c in columns if c not in df.columns or df[c].notna().sum() == 0]


def sentence(text: str) -> str:
    """First letter upper case, the rest untouched (keeps 'RSS', 'FLOPs')."""
    return text[:1].upper() + text[1:]


def fmt_count(n: float) -> str:
    """1234567 -> '1.23M'."""
    if n is None or not np.isfinite(n):
        return ""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def fmt_num(v: float, digits: int = 3) -> str:
    """Compact number for figures and tables: 3 significant digits, tiny values as 0."""
    if v is None or not np.isfinite(v):
        return ""
    return "0" if abs(v) < 1e-9 else f"{v:.{digits}g}"


def md_escape(value: Any) -> str:
    """A cell that cannot break a markdown table (pipes, newlines, HTML)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table of df's (already formatted) cells."""
    lines = [
        "| " + " | ".join(md_escape(c) for c in df.columns) + " |",
        "| " + " | ".join("---" for _ in df.columns) + " |",
    ]
    lines += [
        "| " + " | ".join(md_escape(v) for v in row) + " |" for row in df.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def study_parser(description: str, prog: str) -> Parser:
    """The common CLI: a study directory and an optional output folder."""
    parser = Parser(prog=prog, description=description)
    parser.add_argument("study", help="a results/<study> directory")
    parser.add_argument("--out", help="output folder (default: <study>/figures)")
    return parser


def run_cli(body: Callable[[], int]) -> int:
    """Run a script body; bad input becomes one line on stderr and exit code 2.

    An OSError past the up-front checks (a disk that fills up while figures are written) is
    no bad input but no bug of plots either: one line naming the file, exit code 1."""
    try:
        return body()
    except (ResultsError, UnwritableOutput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def int_at_least(minimum: int, meaning: str) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum (meaning: what the smallest value does), so a
    value the code would quietly clamp or misread is a usage error instead."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{value} is below {minimum}; give {minimum} ({meaning}) or more"
            )
        return value

    return parse


def add_n_boot(parser: Parser) -> None:
    """--n-boot N: how many bootstrap resamples each power-law fit draws."""
    parser.add_argument(
        "--n-boot",
        type=int_at_least(0, "no bootstrap: no intervals or bands"),
        default=200,
        help="bootstrap resamples per power-law fit (default 200; 0: no intervals or bands)",
    )


def figure_main(
    argv: list[str] | None,
    prog: str,
    description: str,
    build: Callable[..., Section],
    runs_required: Sequence[str] = RUNS_REQUIRED,
    options: Callable[[Parser], None] | None = None,
) -> int:
    """main() of a figure-family script: load, build, print what was written and skipped.

    options adds the family's own flags; each one's value goes to build(study, figdir, tabdir)
    as the keyword argument of the same name (--n-boot -> n_boot)."""
    parser = study_parser(description, prog)
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    extra = {k: v for k, v in vars(args).items() if k not in ("study", "out")}

    def body() -> int:
        study = load_study(args.study, runs_required)
        figdir = Path(args.out) if args.out else study.path / "figures"
        tabdir = Path(args.out) if args.out else study.path / "tables"
        what = "--out" if args.out else "the {} folder"
        check_dir(figdir, what.format("figures"))
        check_dir(tabdir, what.format("tables"))
        section = build(study, figdir, tabdir, **extra)
        for item in section.items:
            print(item.path)
        for note in section.notes:
            print(f"note: {note}", file=sys.stderr)
        return 0

    return run_cli(body)
