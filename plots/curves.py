"""Loss curves: training and validation loss vs step and vs tokens, one line per run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from plots import common, style
from plots.common import Item, Section, Study

X_AXES = {"step": common.STEP, "tokens": common.TOKENS, "flops": common.FLOPS}


def best_runs(study: Study) -> set[str]:
    """Per label, the run with the lowest best validation loss (finished runs first)."""
    curves = study.curves
    if curves is None or curves.empty:
        return set()
    lowest = curves.groupby("run_id")["val_loss"].min()
    runs = study.runs.set_index("run_id")
    chosen: set[str] = set()
    for _, group in curves.groupby("label"):
        ids = list(group["run_id"].unique())
        ok = [r for r in ids if r in runs.index and runs.at[r, "status"] == "ok"]
        pool = ok or ids
        chosen.add(min(pool, key=lambda r: np.nan_to_num(lowest.get(r, np.inf), nan=np.inf)))
    return chosen


@style.styled
def plot_curves(study: Study, x: str = "step") -> Figure:
    """Validation (solid) and training (dotted) loss vs x; the best run per label is bold."""
    curves = study.curves
    if curves is None or curves.empty:
        raise common.ResultsError(f"{study.path / 'curves.csv'}: no curve rows")
    if x not in curves.columns:
        raise common.ResultsError(f"{study.path / 'curves.csv'}: missing column(s) {x}")
    fig, ax = style.new_figure(height=4.6)
    palette = study.palette()
    bold = best_runs(study)
    log_x = x != "step" and style.spans_decades(curves[x])
    has_train = "train_loss" in curves.columns and curves["train_loss"].notna().any()
    for run_id, df in curves.groupby("run_id", sort=False):
        df = df.sort_values("step")
        if log_x:
            df = df[df[x] > 0]
        color = palette.get(df["label"].iloc[0], "0.5")
        main = run_id in bold
        line = {"color": color, "lw": 1.8 if main else 0.8, "alpha": 1.0 if main else 0.35}
        ax.plot(df[x], df["val_loss"], ls="-", zorder=3 if main else 2, **line)
        if has_train and main:
            ax.plot(df[x], df["train_loss"], ls=":", zorder=2, **{**line, "lw": 1.3})
    shown = curves[curves[x] > 0] if log_x else curves
    losses = pd.concat([shown["val_loss"], shown.get("train_loss", pd.Series(dtype=float))])
    lo = float(np.nanmin(losses))
    hi = style.loss_top(study, shown, ("val_loss", "train_loss"))
    pad = 0.04 * (hi - lo)
    ax.set_ylim(lo - pad, hi + 2 * pad)
    style.draw_references(ax, study.references(), lo - pad, hi + 2 * pad)
    if log_x:
        ax.set_xscale("log")
        ax.autoscale_view()
        style.log_ticks(ax, "x")
    ax.set_xlabel(X_AXES.get(x, x))
    ax.set_ylabel(common.LOSS)
    ax.set_title(f"Loss vs {X_AXES.get(x, x).split(' (')[0]} — study {study.name}")
    present = [lab for lab in study.labels() if lab in set(curves["label"])]
    handles = [Line2D([], [], color=palette[lab], lw=1.8, label=lab) for lab in present]
    handles.append(Line2D([], [], color="0.2", lw=1.6, label="validation"))
    if has_train:
        handles.append(Line2D([], [], color="0.2", lw=1.3, ls=":", label="training"))
    style.legend_below(fig, handles)
    return fig


def build(study: Study, figdir: Path, tabdir: Path) -> Section:
    """Write the curve figures the study supports."""
    section = Section("Loss curves")
    curves = study.curves
    if curves is None or curves.empty:
        section.notes.append("no curves.csv (or no rows): loss curves skipped")
        return section
    no_curve = study.runs[~study.runs["run_id"].isin(set(curves["run_id"]))]
    if len(no_curve):
        section.notes.append(
            "no curve rows for "
            + ", ".join(f"{r.label} ({r.run_id}, {r.status})" for r in no_curve.itertuples())
        )
    several = curves.groupby("label")["run_id"].nunique().max() > 1
    extra = "; bold: best run per label, faint: other runs" if several else ""
    refs = "; dashed: reference losses of the corpus" if study.references() else ""
    for x in ("step", "tokens"):
        if x not in curves.columns:
            section.notes.append(f"curves.csv has no {x} column: loss vs {x} skipped")
            continue
        fig = plot_curves(study, x)
        path = style.save(fig, figdir, f"curves_{x}")
        section.items.append(
            Item(
                "figure",
                path,
                f"Training (dotted) and validation (solid) "
                f"loss vs {X_AXES[x]}, one line per run{extra}{refs}.",
            )
        )
    return section


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.curves results/<study> [--out DIR]`."""
    return common.figure_main(argv, "python -m plots.curves", __doc__, build)


if __name__ == "__main__":
    raise SystemExit(main())
