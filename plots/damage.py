"""Torn and garbled rows of a results CSV: found, named by line, and left out.

runs.csv and curves.csv grow by one appended row per finished run, so a runner killed in the
middle of an append can leave a last row cut short; the runner drops such a row (store.read_rows)
and rebuilds both files on its next start. plots do the same, but say so: left in, a torn row
is a run with a blank status and device, and a garbled number silently becomes no number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# What pandas reads as a missing value (its default na_values) and a text-mode read keeps
# as text: an absent number, not a garbled one.
NA_TEXT = frozenset(
    s.lower() for s in ("", "nan", "-nan", "na", "n/a", "<na>", "#n/a", "null", "none")
)
SHOWN = 3  # problems named in the warning; the rest are counted
# csv refuses fields over 128 KiB by default, which a long sample text in samples.csv exceeds
# (pandas has no such limit): the largest a C long holds on every platform instead.
csv.field_size_limit(2**31 - 1)


@dataclass
class Scan:
    """A CSV's records checked against its header's width."""

    lines: list[int] = field(default_factory=list)  # file line each kept record starts on
    problems: list[str] = field(default_factory=list)
    text: str | None = None  # the header and kept records, when one was left out


def scan(path: Path) -> Scan:
    """Records with as many fields as the header are kept; others (a row cut short, or two
    run together) are problems. Raises csv.Error and UnicodeDecodeError as pandas would fail."""
    out = Scan()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return out
        kept: list[list[str]] = [header]
        start = reader.line_num + 1
        for record in reader:
            if not record:  # a blank line: pandas skips it too
                pass
            elif len(record) == len(header):
                kept.append(record)
                out.lines.append(start)
            else:
                out.problems.append(f"line {start} is torn ({len(record)} of {len(header)} fields)")
            start = reader.line_num + 1
    if out.problems:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(kept)
        out.text = buf.getvalue()
    return out


def garbled(df: pd.DataFrame, columns: list[str], lines: list[int]) -> tuple[pd.Series, list[str]]:
    """Rows whose value in a numeric column is text that is not a number (nor a missing-value
    marker), and a description of each: such a row is damaged, not a run without that number."""
    bad = pd.Series(False, index=df.index)
    problems = []
    for col in columns:
        values = df[col]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue  # pandas parsed every cell as a number: nothing garbled
        text = values.astype("string").str.strip().str.lower()
        wrong = pd.to_numeric(values, errors="coerce").isna() & values.notna()
        wrong &= ~text.isin(NA_TEXT).fillna(True)
        for i in wrong[wrong & ~bad].index:
            where = f"line {lines[i]}" if len(lines) == len(df) else f"row {i + 1}"
            problems.append(f"{where} is garbled ({col} {values[i]!r} is not a number)")
        bad |= wrong
    return bad, problems


def read(path: Path, text: bool, numeric: Iterable[str]) -> tuple[pd.DataFrame, list[str]]:
    """The CSV less its torn and garbled rows (numeric: the columns that hold numbers), and
    what was wrong with each row left out. text: every cell as written, as a string."""
    found = scan(path)
    source = io.StringIO(found.text) if found.text is not None else path
    kw: dict[str, Any] = {"dtype": str, "keep_default_na": False} if text else {}
    df = pd.read_csv(source, **kw)
    bad, problems = garbled(df, [c for c in numeric if c in df.columns], found.lines)
    return df[~bad].reset_index(drop=True), found.problems + problems


def describe(path: Path, problems: list[str], rebuild: str) -> str:
    """One line: the file, what is wrong with which lines, and how to get a whole file back."""
    named = ", ".join(problems[:SHOWN])
    if len(problems) > SHOWN:
        named += f" and {len(problems) - SHOWN} more"
    remedy = f"; {rebuild}" if rebuild else ""
    return f"{path}: {named}: left out (the file looks torn or garbled{remedy})"
