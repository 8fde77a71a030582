"""Comparison tables of runs (one or several studies) as markdown, LaTeX or CSV.

Default columns (runs.csv names; `study` first when several studies are given):
label, n_layer, n_head, n_embd, block_size, n_params, batch_size, lr, budget, steps, tokens,
best_val_loss, final_val_loss, train_s, tokens_per_s, peak_rss_mb, mfu, device, hardware,
status. Derived columns: `study` (directory name) and `budget` (the limits that were set).
Any other runs.csv column can be asked for with --columns. Runs planned in plan.csv without a
result yet appear with status `missing`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from plots import common
from plots.common import Study
from plots.paths import check_file, writing

DEFAULT_COLUMNS = (
    "label",
    "n_layer",
    "n_head",
    "n_embd",
    "block_size",
    "n_params",
    "batch_size",
    "lr",
    "budget",
    "steps",
    "tokens",
    "best_val_loss",
    "final_val_loss",
    "train_s",
    "tokens_per_s",
    "peak_rss_mb",
    "mfu",
    "device",
    "hardware",
    "status",
)
DERIVED = ("study", "budget")
DEFAULT_SORT = ("study", "n_params", "lr")
COUNTS = (
    "n_params",
    "n_params_non_embedding",
    "tokens",
    "train_flops",
    "flops_per_token",
    "max_tokens",
)
INTS = (
    "n_layer",
    "n_head",
    "n_embd",
    "block_size",
    "vocab_size",
    "batch_size",
    "steps",
    "seed",
    "max_steps",
    "best_step",
    "eval_interval",
    "eval_iters",
    "warmup_steps",
)


def _budget(row: pd.Series) -> str:
    parts = []
    for key, fmt in (
        ("max_steps", lambda v: f"{v:.0f} steps"),
        ("max_tokens", lambda v: f"{common.fmt_count(v)} tokens"),
        ("max_flops", lambda v: f"{v:.3g} FLOPs"),
        ("max_seconds", lambda v: f"{v:g} s"),
    ):
        value = row.get(key)
        if value is not None and pd.notna(value) and value != "":
            parts.append(fmt(float(value)))
    return ", ".join(parts)


def with_missing(study: Study) -> pd.DataFrame:
    """runs.csv plus the planned runs that have no result yet (status 'missing')."""
    runs = study.runs
    if study.plan is None:
        return runs
    todo = study.plan[~study.plan["run_id"].isin(set(runs["run_id"]))].copy()
    if todo.empty:
        return runs
    todo["status"] = "missing"
    if "label" not in todo:
        todo["label"] = todo["run_id"]
    return pd.concat(
        [runs, todo[[c for c in todo.columns if c in runs.columns or c == "status"]]],
        ignore_index=True,
    )


def comparison_table(
    studies: Sequence[Study],
    columns: Sequence[str] | None = None,
    sort: Sequence[str] | None = None,
    strict: bool = True,
) -> pd.DataFrame:
    """Raw values, one row per run; strict: a column absent everywhere is a ResultsError."""
    frames = []
    for study in studies:
        df = with_missing(study).copy()
        df.insert(0, "study", study.name)
        df["budget"] = df.apply(_budget, axis=1)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    wanted = (
        list(columns)
        if columns
        else ([] if len(studies) == 1 else ["study"]) + list(DEFAULT_COLUMNS)
    )
    absent = [c for c in wanted if c not in table.columns]
    if absent and strict:
        where = " and ".join(str(s.path / "runs.csv") for s in studies)
        raise common.ResultsError(
            f"{where}: missing column(s) {', '.join(absent)}"
            + (" (choose others with --columns)" if not columns else "")
        )
    keys = []
    for key in sort if sort else DEFAULT_SORT:
        name = key.lstrip("-")
        if name not in table.columns:
            if sort:
                raise common.ResultsError(f"--sort: no column {name!r} in runs.csv")
            continue
        keys.append((name, not key.startswith("-")))
    if keys:
        table = table.sort_values(
            [k for k, _ in keys], ascending=[a for _, a in keys], kind="stable", na_position="last"
        )
    table = table[[c for c in wanted if c in table.columns]].reset_index(drop=True)
    for col in (*INTS, "tokens", "n_params", "n_params_non_embedding", "flops_per_token"):
        if col in table and pd.api.types.is_numeric_dtype(table[col]):
            whole = table[col].dropna()
            if (whole == whole.round()).all():
                table[col] = table[col].astype("Int64")
    return table


def _cell(column: str, value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    v = float(value)  # type: ignore[arg-type]
    if column in COUNTS:
        return common.fmt_count(v)
    if column in INTS:
        return f"{v:.0f}"
    if column in ("lr", "min_lr", "weight_decay"):
        return f"{v:g}"
    if column.endswith("_loss"):
        return f"{v:.4f}"
    if column == "mfu":
        return f"{100 * v:.1f}%"
    if column.endswith("_s") and column != "tokens_per_s":
        return f"{v:,.1f}"
    if column in ("tokens_per_s", "peak_rss_mb", "peak_gpu_mb"):
        return f"{v:,.0f}"
    return f"{v:.4g}"


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable cells (counts as 1.2M, losses to 4 decimals, MFU in %)."""
    return pd.DataFrame({c: [_cell(c, v) for v in table[c]] for c in table.columns})


def latex_table(table: pd.DataFrame) -> str:
    """A booktabs tabular of formatted cells (needs \\usepackage{booktabs})."""

    def esc(text: object) -> str:
        out = str(text).replace("\\", r"\textbackslash{}")
        for ch in "&%$#_{}":
            out = out.replace(ch, "\\" + ch)
        return out.replace("~", r"\textasciitilde{}").replace("^", r"\^{}").replace("\n", " ")

    cells = formatted(table)
    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in table.columns)
    lines = [
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(esc(c) for c in cells.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in cells.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render(table: pd.DataFrame, fmt: str) -> str:
    """The table as md, latex or csv text (csv keeps raw values)."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "latex":
        return latex_table(table)
    return common.markdown_table(formatted(table))


def write_all(table: pd.DataFrame, tabdir: Path, stem: str) -> Path:
    """stem.md, stem.csv and stem.tex; returns the markdown path."""
    tabdir.mkdir(parents=True, exist_ok=True)
    for fmt, ext in (("md", "md"), ("csv", "csv"), ("latex", "tex")):
        (tabdir / f"{stem}.{ext}").write_text(render(table, fmt))
    return tabdir / f"{stem}.md"


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.tables results/a [results/b ...] [--format md|latex|csv] ...`."""
    parser = common.Parser(prog="python -m plots.tables", description=__doc__.split("\n")[0])
    parser.add_argument("studies", nargs="+", help="one or more results/<study> directories")
    parser.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    parser.add_argument("--columns", nargs="+", help="columns, comma- or space-separated")
    parser.add_argument(
        "--sort",
        nargs="+",
        help="sort keys, comma-separated; a leading - "
        "sorts descending (write --sort=-best_val_loss)",
    )
    parser.add_argument("--out", help="write to this file instead of stdout")
    args = parser.parse_args(argv)

    def body() -> int:
        studies = [common.load_study(path) for path in args.studies]
        if args.out:
            check_file(Path(args.out), "--out")
        table = comparison_table(studies, _names(args.columns), _names(args.sort))
        text = render(table, args.format)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with writing(Path(args.out)):
                Path(args.out).write_text(text)
        else:
            sys.stdout.write(text)
        return 0

    return common.run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
