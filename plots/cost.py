"""Cost: throughput, training time, peak memory and MFU vs parameters and vs block size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from plots import common, style
from plots.common import Item, Section, Study

METRICS = {  # stem: (column, axis label, what the caption calls it)
    "throughput": ("tokens_per_s", common.THROUGHPUT, "training throughput"),
    "train_time": ("train_s", common.TRAIN_S, "training time (evaluation excluded)"),
    "memory": ("peak_rss_mb", common.RSS, "peak resident memory of the run's process"),
    "gpu_memory": ("peak_gpu_mb", common.GPU_MEM, "peak GPU memory allocated"),
    "mfu": ("mfu", common.MFU, "model FLOPs utilisation (MFU) against the measured peak"),
}
X_AXES = {"params": ("n_params", common.PARAMS), "block_size": ("block_size", common.BLOCK)}


def _points(study: Study, x: str, y: str) -> pd.DataFrame:
    df = study.runs.copy()
    if x not in df or y not in df:
        return df.iloc[:0]
    if y == "mfu":
        df["mfu"] = df["mfu"] * 100  # the axis is in percent
    return df[np.isfinite(df[x]) & np.isfinite(df[y]) & (df[x] > 0) & (df[y] > 0)]


@style.styled
def plot_cost(study: Study, metric: str = "throughput", x: str = "params") -> Figure:
    """One metric of runs.csv vs parameters or block size; colour = label, shape = block size."""
    column, ylabel, _ = METRICS[metric]
    xcol, xlabel = X_AXES[x]
    df = _points(study, xcol, column)
    if df.empty:
        raise common.ResultsError(
            f"{study.path / 'runs.csv'}: no run with both {xcol} and {column}"
        )
    fig, ax = style.new_figure(height=4.6)
    if x == "block_size":  # the same shape at different contexts: join its points
        shape_cols = [c for c in ("n_layer", "n_head", "n_embd") if c in df]
        for _, grp in df.groupby(shape_cols) if shape_cols else []:
            grp = grp.groupby(xcol, as_index=False)[column].median()
            if len(grp) > 1:
                ax.plot(grp[xcol], grp[column], color="0.6", lw=1.0, zorder=2)
    style.scatter_runs(fig, ax, study, df, xcol, column, shape_legend=x != "block_size")
    if style.spans_decades(df[xcol], 8 if x == "block_size" else 20):
        ax.set_xscale("log", base=2 if x == "block_size" else 10)
        if x == "block_size":
            ax.xaxis.set_major_locator(FixedLocator(sorted(df[xcol].unique())))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
    if style.spans_decades(df[column]):
        ax.set_yscale("log")
        ax.autoscale_view()
        style.log_ticks(ax, "y")
    if ax.get_xscale() == "log" and x != "block_size":
        ax.autoscale_view()
        style.log_ticks(ax, "x")
    elif metric == "mfu" and ax.get_yscale() == "linear":  # a log axis has no 0 to start at
        ax.set_ylim(0, max(df[column].max() * 1.15, 1))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(
        f"{common.sentence(ylabel.split(' (')[0])} vs {xlabel.split(' (')[0]} — study {study.name}"
    )
    return fig


def build(study: Study, figdir: Path, tabdir: Path) -> Section:
    """Cost figures for every metric and x axis the runs support."""
    section = Section("Cost")
    for x, (xcol, xlabel) in X_AXES.items():
        if x == "block_size" and study.runs.get("block_size", pd.Series()).nunique() < 2:
            section.notes.append("a single block_size: cost vs block size skipped")
            continue
        for metric, (column, _, what) in METRICS.items():
            if _points(study, xcol, column).empty:
                if x == "params":
                    section.notes.append(f"no run with {column}: {metric} figures skipped")
                continue
            path = style.save(plot_cost(study, metric, x), figdir, f"cost_{metric}_vs_{x}")
            how = (
                "colour: architecture, shape: block size"
                if x == "params"
                else "colour: architecture; grey lines join runs of the same depth and width"
            )
            section.items.append(
                Item("figure", path, f"{common.sentence(what)} per run vs {xlabel}; {how}.")
            )
    return section


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.cost results/<study> [--out DIR]`."""
    return common.figure_main(argv, "python -m plots.cost", __doc__, build)


if __name__ == "__main__":
    raise SystemExit(main())
