"""REPORT.md of a study: every figure and table its data supports, and what is missing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plots import (
    claims,
    common,
    cost,
    curves,
    epochs,
    isoflop,
    lr_sweep,
    parametric,
    samples,
    scaling,
    tables,
)
from plots.common import Item, Section, Study
from plots.paths import check_report_dir


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested JSON as dotted keys -> short strings (for the hardware table); a list of objects
    (env.json's gpus) is numbered: gpus.0.name, gpus.0.memory_mb, ..."""
    if isinstance(data, list) and any(isinstance(v, dict) for v in data):
        data = {str(i): v for i, v in enumerate(data)}
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, float):
        text = f"{data:.4g}"
    elif isinstance(data, list):
        text = ", ".join(str(v) for v in data)
    else:
        text = "" if data is None else str(data)
    return {prefix: text if len(text) <= 120 else text[:117] + "..."}


def missing_lines(study: Study) -> list[str]:
    """What the study lacks: planned runs without a result, failed runs, absent files."""
    runs, lines = study.runs, list(study.damaged)
    if study.plan is not None:
        todo = study.plan[~study.plan["run_id"].isin(set(runs["run_id"]))]
        if len(todo):
            names = todo["label"] if "label" in todo else todo["run_id"]
            lines.append(
                f"{len(todo)} planned run(s) have no result yet: "
                + ", ".join(f"{n} ({r})" for n, r in zip(names, todo["run_id"]))
            )
    for row in runs[runs["status"] != "ok"].itertuples():
        error = getattr(row, "error", "")
        why = f": {error}" if isinstance(error, str) and error else ""
        lines.append(f"run {row.label} ({row.run_id}) ended with status {row.status}{why}")
    if study.curves is None:
        lines.append("no curves.csv: loss curves and the compute frontier are missing")
    else:
        ok = study.ok
        lost = ok[~ok["run_id"].isin(set(study.curves["run_id"]))]
        if len(lost):
            lines.append(
                "finished run(s) without rows in curves.csv: "
                + ", ".join(f"{r.label} ({r.run_id})" for r in lost.itertuples())
            )
    if study.env is None:
        lines.append("no env.json: hardware and library versions unknown")
    if study.corpus is None:
        lines.append("no corpus.json: no reference losses on the curves")
    elif not study.references():
        lines.append("corpus.json has no reference losses for this study's corpus")
    return lines


def summary_lines(study: Study) -> list[str]:
    """Counts of runs by status, hardware used, total time, corpus."""
    runs = study.runs
    status = runs["status"].value_counts()
    planned = len(study.plan) if study.plan is not None else len(runs)
    counts = ", ".join(f"{n} {s}" for s, n in status.items())
    lines = [f"runs: {planned} planned, {len(runs)} finished" + (f" ({counts})" if counts else "")]
    hw = runs[[c for c in ("device", "hardware") if c in runs]].dropna().drop_duplicates()
    if len(hw):
        lines.append(
            "hardware: "
            + "; ".join(" / ".join(str(v) for v in r) for r in hw.itertuples(index=False))
        )
    for col, what in (("train_s", "training time"), ("wall_s", "wall time")):
        if col in runs and runs[col].notna().any():
            total = float(runs[col].sum())
            hours = f" ({total / 3600:.2f} h)" if total >= 3600 else ""
            lines.append(f"total {what}: {total:,.1f} s{hours} over all runs")
    if study.corpus:
        for name, entry in study.corpus.items():
            if isinstance(entry, dict):
                refs = ", ".join(
                    f"{k} {v:.3f}" for k, v in entry.get("reference_losses", {}).items()
                )
                lines.append(
                    f"corpus {name}: {entry.get('n_chars', '?'):,} characters, "
                    f"vocabulary {entry.get('vocab_size', '?')}"
                    + (f"; reference losses (nats/char): {refs}" if refs else "")
                )
    return lines


def runs_section(study: Study, tabdir: Path) -> Section:
    """The comparison table of every run (and of the planned ones still missing)."""
    section = Section("Runs")
    table = tables.comparison_table([study], strict=False)
    absent = [c for c in tables.DEFAULT_COLUMNS if c not in table.columns]
    if absent:
        section.notes.append(f"runs.csv has no {', '.join(absent)}: left out of the table")
    path = tables.write_all(table, tabdir, "runs")
    section.items.append(
        Item(
            "table",
            path,
            "Every run: architecture, parameters, "
            "hyperparameters, budget, losses (nats/char), time, throughput, "
            "memory and hardware (also as runs.csv and runs.tex).",
        )
    )
    return section


def env_section(study: Study, tabdir: Path) -> Section:
    """env.json as a key/value table."""
    section = Section("Hardware and software")
    if study.env is None:
        section.notes.append("no env.json")
        return section
    table = pd.DataFrame(list(flatten(study.env).items()), columns=["key", "value"])
    common.add_table(
        section,
        tabdir,
        "env",
        table,
        "Hardware fingerprint, library versions and measured peak FLOP/s of the study (env.json).",
    )
    return section


def render(study: Study, sections: list[Section]) -> str:
    """REPORT.md text: summary, what is missing, then each section's figures and tables."""
    out = [
        f"# Study `{study.name}`: report\n",
        f"Made by `python -m plots.report {study.path}` from runs.csv, curves.csv, plan.csv, "
        "env.json, corpus.json and the runs' samples.csv. Losses are in nats per character.\n",
    ]
    out += [f"- {line}" for line in summary_lines(study)] + [""]
    missing = missing_lines(study)
    out.append("## What is missing\n")
    out += (
        [f"- {line}" for line in missing]
        if missing
        else ["Nothing: every planned run finished with status ok."]
    )
    out.append("")
    n_fig = n_tab = 0
    base = study.path
    for section in sections:
        if not section.items and not section.notes and not section.flags:
            continue
        out.append(f"## {section.title}\n")
        for item in section.items:
            rel = Path(os.path.relpath(item.path, base)).as_posix()
            if item.kind == "figure":
                n_fig += 1
                pdf = Path(rel).with_suffix(".pdf").as_posix()
                out.append(f"![{item.path.stem}]({rel})\n")
                out.append(f"*Figure {n_fig}. {item.caption}* ([PDF]({pdf}))\n")
            else:
                n_tab += 1
                out.append(f"*Table {n_tab}. {item.caption}* ([{rel}]({rel}))\n")
                if item.path.stat().st_size < 20_000 and item.path.name != "samples.md":
                    out.append(item.path.read_text())
        for flag in section.flags:
            out.append(f"> **flagged:** {flag}\n")
        for note in section.notes:
            out.append(f"> skipped: {note}\n")
    return "\n".join(out)


def build_report(study: Study, n_boot: int = 200) -> Path:
    """Write figures/, tables/ and REPORT.md into the study directory."""
    figdir, tabdir = study.path / "figures", study.path / "tables"
    sections = [
        runs_section(study, tabdir),
        curves.build(study, figdir, tabdir),
        scaling.build(study, figdir, tabdir, n_boot=n_boot),
        isoflop.build(study, figdir, tabdir, n_boot=n_boot),
        parametric.build(study, figdir, tabdir, n_boot=n_boot),
        epochs.build(study, figdir, tabdir),
        lr_sweep.build(study, figdir, tabdir),
        cost.build(study, figdir, tabdir),
        samples.build(study, figdir, tabdir),
        env_section(study, tabdir),
    ]
    report = study.path / "REPORT.md"
    report.write_text(render(study, sections))
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.report results/<study> [--n-boot N]`."""
    parser = common.Parser(prog="python -m plots.report", description=__doc__)
    parser.add_argument("study", help="a results/<study> directory")
    common.add_n_boot(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        if claims.is_claims_dir(Path(args.study)):  # results/claims: the claims report
            check_report_dir(Path(args.study))
            print(claims.build_report(Path(args.study)))
            return 0
        study = common.load_study(args.study)
        check_report_dir(study.path)  # before the figures: they take the time
        with np.errstate(all="ignore"):  # NaNs of failed runs are reported, not warned about
            print(build_report(study, n_boot=args.n_boot))
        return 0

    return common.run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
