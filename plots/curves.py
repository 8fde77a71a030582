"""Loss curves vs step, tokens and training time (train_s): one line per label, seeds averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from plots import common, style
from plots.common import Item, Section, Study

WALL_WORDS = (
    "; wall-clock seconds of training steps (evaluation excluded), which also measure how "
    "loaded the machine was during each run"
)
X_AXES = {
    "step": common.STEP,
    "tokens": common.TOKENS,
    "flops": common.FLOPS,
    "train_s": common.TRAIN_S,
}


def seed_curves(curves: pd.DataFrame, runs: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per seed group (label) and step: x, val_loss and train_loss averaged over the group's
    runs, val_loss_std over them (NaN for one run) and n_seeds; failed runs are left out when
    the group has a finished one."""
    status = runs.set_index("run_id")["status"] if "status" in runs else pd.Series(dtype=str)
    ok = curves["run_id"].map(status).eq("ok")
    has_ok = ok.groupby(curves["label"]).transform("any")
    df = curves[ok | ~has_ok]
    cols = [c for c in (x, "val_loss", "train_loss") if c in df.columns and c != "step"]
    grouped = df.groupby(["label", "step"], sort=False)
    out = grouped[cols].mean()
    out["val_loss_std"] = grouped["val_loss"].std()
    out["n_seeds"] = grouped["run_id"].nunique()
    return out.reset_index()


def _seeds_label(label: str, n: int) -> str:
    return f"{label} ({n} seeds)" if n > 1 else label


@style.styled
def plot_curves(study: Study, x: str = "step") -> Figure:
    """Validation (solid) and training (dotted) loss vs x, one line per label: the mean over
    its seeds, shaded +-1 std where it has several."""
    curves = study.curves
    if curves is None or curves.empty:
        raise common.ResultsError(f"{study.path / 'curves.csv'}: no curve rows")
    if x not in curves.columns:
        raise common.ResultsError(f"{study.path / 'curves.csv'}: missing column(s) {x}")
    fig, ax = style.new_figure(height=4.6)
    palette = study.palette()
    log_x = x != "step" and style.spans_decades(curves[x])
    has_train = "train_loss" in curves.columns and curves["train_loss"].notna().any()
    means = seed_curves(curves, study.runs, x)
    for label, df in means.groupby("label", sort=False):
        df = df.sort_values("step")
        if log_x:
            df = df[df[x] > 0]
        color = palette.get(label, "0.5")
        ax.plot(df[x], df["val_loss"], ls="-", color=color, lw=1.5, zorder=3)
        if df["val_loss_std"].notna().any():
            std = df["val_loss_std"].fillna(0.0)
            lo, hi = df["val_loss"] - std, df["val_loss"] + std
            ax.fill_between(df[x], lo, hi, color=color, alpha=0.2, lw=0, zorder=2)
        if has_train:
            ax.plot(df[x], df["train_loss"], ls=":", color=color, lw=1.1, zorder=2)
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
    n_seeds = means.groupby("label")["n_seeds"].max()
    present = [lab for lab in study.labels() if lab in n_seeds.index]
    handles = [
        Line2D([], [], color=palette[lab], lw=1.8, label=_seeds_label(lab, n_seeds[lab]))
        for lab in present
    ]
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
    extra = "; labels with several seeds: their mean, shaded ±1 std over seeds" if several else ""
    refs = "; dashed: reference losses of the corpus" if study.references() else ""
    for x in ("step", "tokens", "train_s"):
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
                f"loss vs {X_AXES[x]}, one line per label{extra}{refs}"
                + (WALL_WORDS if x == "train_s" else "")
                + ".",
            )
        )
    return section


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.curves results/<study> [--out DIR]`."""
    return common.figure_main(argv, "python -m plots.curves", __doc__, build)


if __name__ == "__main__":
    raise SystemExit(main())
