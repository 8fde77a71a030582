"""Figure style shared by every plot: fonts, colours, log axes, legends, reference lines, saving."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from plots.common import Study
from plots.paths import writing

RC = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "lines.linewidth": 1.6,
    "axes.titleweight": "bold",
    "pdf.fonttype": 42,
}
FIGSIZE = (6.4, 4.0)


def new_figure(
    width: float = FIGSIZE[0], height: float = FIGSIZE[1], ncols: int = 1
) -> tuple[Figure, Any]:
    """A Figure with the project's style (no pyplot: no global figure state to leak)."""
    with sns.axes_style("whitegrid"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, ncols)
    return fig, axes


def styled(func: Callable[..., Figure]) -> Callable[..., Figure]:
    """Run a plotting function under the project's rc settings (fonts >= 9 pt)."""

    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with sns.axes_style("whitegrid"), matplotlib.rc_context(RC):
            return func(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = func.__name__, func.__doc__
    return wrapper


def spans_decades(values: Iterable[float], ratio: float = 20.0) -> bool:
    """True when positive values span enough range for a log axis to help."""
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    return v.size > 1 and v.max() / v.min() >= ratio


def log_ticks(ax: Axes, which: str = "x") -> None:
    """Readable log-axis ticks: decades only, or 1-2-5 steps when the data spans < 1.5 decades.

    Call after the limits are final; minor ticks stay unlabelled so labels never collide.
    """
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    decades = np.log10(hi / lo) if lo > 0 and hi > lo else 3.0
    subs = (
        (1.0,)
        if decades >= 2
        else (1.0, 2.0, 5.0)
        if decades >= 0.8
        else tuple(float(k) for k in range(1, 10))
    )
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    plain = 0.01 <= lo and hi <= 2e4  # one style per axis: 1000 next to 10^4 reads badly
    axis.set_major_formatter(FuncFormatter(lambda v, _: _pow10(v, plain)))
    axis.set_minor_formatter(NullFormatter())


def _pow10(value: float, plain: bool) -> str:
    if value <= 0:
        return ""
    if plain:
        return f"{value:g}"
    exp = int(np.floor(np.log10(value) + 1e-9))
    mant = value / 10**exp
    return rf"$10^{{{exp}}}$" if abs(mant - 1) < 1e-6 else rf"${mant:g}\times10^{{{exp}}}$"


def draw_references(ax: Axes, refs: dict[str, float], lo: float, hi: float) -> None:
    """Reference losses as dashed lines, named on a right-hand axis (never over the data)."""
    names = {"uniform": "uniform", "unigram_val": "unigram", "bigram_val": "bigram"}
    shown = [
        (refs[k], f"{name} {refs[k]:.2f}")
        for k, name in names.items()
        if k in refs and lo <= refs[k] <= hi
    ]
    if not shown:
        return
    for value, _ in shown:
        ax.axhline(value, color="0.35", ls="--", lw=1.0, zorder=1)
    right = ax.secondary_yaxis("right")
    right.set_yticks([v for v, _ in shown], labels=[t for _, t in shown])
    right.tick_params(axis="y", colors="0.3", labelsize=9, length=0)


def loss_top(study: Study, shown: pd.DataFrame, columns: Sequence[str] = ("val_loss",)) -> float:
    """Top of a loss axis: the highest loss of the finished runs, so that one diverged run
    leaves the axis at the top instead of flattening every other curve."""
    ok = shown[shown["run_id"].isin(set(study.ok["run_id"]))]
    use = ok if len(ok) else shown
    values = pd.concat([use[c] for c in columns if c in use]).dropna()
    return float(values.max()) if len(values) else 1.0


def padded(lo: float, hi: float, below: float = 0.06, above: float = 0.1) -> tuple[float, float]:
    """Limits for a log axis with a margin proportional to the data's (log) span."""
    ratio = max(hi / lo, 1.02)
    return lo / ratio**below, hi * ratio**above


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def block_markers(df: pd.DataFrame) -> dict[float, str]:
    """block_size -> marker shape (one shape per block size present)."""
    blocks = sorted(df["block_size"].dropna().unique()) if "block_size" in df else []
    return {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(blocks)}


def scatter_runs(
    fig: Figure,
    ax: Axes,
    study: Study,
    df: pd.DataFrame,
    x: str,
    y: str,
    legend: bool = True,
    shape_legend: bool = True,
) -> None:
    """One point per row: colour = label, shape = block size; legend under the axes."""
    palette, marker = study.palette(), block_markers(df)
    shape = {}
    for row in df.itertuples():
        shape[row.label] = marker.get(getattr(row, "block_size", None), "o")
        ax.scatter(
            getattr(row, x),
            getattr(row, y),
            s=55,
            zorder=3,
            edgecolor="black",
            lw=0.6,
            alpha=0.9,
            color=palette.get(row.label, "0.5"),
            marker=shape[row.label],
        )
    if not legend:
        return
    handles = [
        Line2D([], [], ls="", marker=shape[lab], color=palette[lab], mec="black", label=lab)
        for lab in study.labels()
        if lab in shape
    ]
    if len(marker) > 1 and shape_legend:
        handles += [
            Line2D([], [], ls="", marker=m, color="0.6", mec="black", label=f"block_size {int(b)}")
            for b, m in marker.items()
        ]
    if handles:
        legend_below(fig, handles)


def legend_below(fig: Figure, handles: list[Any], title: str | None = None) -> None:
    """A legend under the axes, so that it never hides data or reference labels."""
    ncols = min(len(handles), 3 if max(len(h.get_label()) for h in handles) > 12 else 4)
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=ncols,
        frameon=False,
        title=title,
        columnspacing=1.2,
        handlelength=2.2,
    )


def save(fig: Figure, outdir: Path, stem: str) -> Path:
    """Write stem.png and stem.pdf; returns the PNG path."""
    outdir.mkdir(parents=True, exist_ok=True)
    png, pdf = outdir / f"{stem}.png", outdir / f"{stem}.pdf"
    with writing(png):
        fig.savefig(png, dpi=RC["savefig.dpi"])
    fig.set_layout_engine("none")  # the PNG fixed the layout: the PDF need not redo it
    with writing(pdf):
        fig.savefig(pdf)
    return png
