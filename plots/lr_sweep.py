"""Learning-rate sweeps: final validation loss vs lr per architecture, the chosen lr marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from plots import common, style
from plots.common import Item, Section, Study

ARCH = ("n_layer", "n_head", "n_embd", "block_size")
SWEEP = (*ARCH, "batch_size")  # runs that share these columns form one lr sweep
REQUIRED = ("lr", "final_val_loss", *ARCH)
LINESTYLES = ["-", "--", "-.", ":"]


def arch_name(runs: pd.DataFrame) -> str:
    """The legend name of one architecture's runs: the label they all share, else one made
    from the columns (`L4-H4-C128-T64`; the runner appends ` lr=...` to swept labels)."""
    labels = runs["label"].unique()
    if len(labels) == 1:
        return str(labels[0])
    first = runs.iloc[0]
    return "-".join(f"{key}{first[col]:.0f}" for key, col in zip("LHCT", ARCH))


def sweeps(study: Study) -> pd.DataFrame:
    """Runs of the groups (architecture columns, batch_size) that tried at least two lr.

    Their `label` column holds the architecture's name (see arch_name)."""
    runs = study.runs[study.runs["status"].isin(["ok", "diverged"]) & study.runs["lr"].notna()]
    runs = runs.assign(batch_size=runs["batch_size"] if "batch_size" in runs else np.nan)
    n_lr = runs.groupby(list(SWEEP), dropna=False)["lr"].transform("nunique")
    runs = runs[n_lr >= 2]
    names = {}
    for _, grp in runs.groupby(list(ARCH), dropna=False):
        names.update(dict.fromkeys(grp.index, arch_name(grp)))
    return runs.assign(label=pd.Series(names, dtype=object))


def chosen(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per sweep: the finished run with the lowest final validation loss."""
    ok = sweep[(sweep["status"] == "ok") & sweep["final_val_loss"].notna()]
    if ok.empty:
        return ok
    return ok.loc[ok.groupby(list(SWEEP), dropna=False)["final_val_loss"].idxmin()]


def arch_order(sweep: pd.DataFrame) -> list[str]:
    """Architectures by size (n_params, then name): the order of legend and colours."""
    if "n_params" not in sweep:
        return sorted(sweep["label"].unique())
    size = sweep.groupby("label")["n_params"].min()
    return sorted(size.index, key=lambda lab: (np.nan_to_num(size[lab], nan=np.inf), lab))


@style.styled
def plot_lr_sweep(study: Study) -> Figure:
    """Final validation loss vs lr (log x), one line per architecture; star = chosen lr."""
    sweep = sweeps(study)
    if sweep.empty:
        raise common.ResultsError(f"{study.path / 'runs.csv'}: no architecture tried two lr")
    fig, ax = style.new_figure(height=4.6)
    order = arch_order(sweep)
    palette = dict(
        zip(order, sns.color_palette("colorblind" if len(order) <= 10 else "husl", len(order)))
    )
    best = chosen(sweep)
    batches = sorted(sweep["batch_size"].dropna().unique())
    dashes = {b: LINESTYLES[i % len(LINESTYLES)] for i, b in enumerate(batches)}
    ok = (sweep["status"] == "ok") & sweep["final_val_loss"].notna()
    finite = sweep.loc[ok, "final_val_loss"]
    lo, hi = float(finite.min()), float(finite.max())
    top = hi + 0.12 * (hi - lo) + 0.02
    for _, grp in sweep.groupby(list(SWEEP), dropna=False):
        grp = grp.sort_values("lr")
        color = palette.get(grp["label"].iloc[0], "0.5")
        good = grp[ok.loc[grp.index]]
        ax.plot(
            good["lr"],
            good["final_val_loss"],
            marker="o",
            ms=5,
            color=color,
            ls=dashes.get(grp["batch_size"].iloc[0], "-"),
            zorder=3,
        )
        bad = grp[~ok.loc[grp.index]]
        ax.scatter(
            bad["lr"],
            [top] * len(bad),
            marker="x",
            s=60,
            color=color,
            lw=2,
            zorder=4,
            clip_on=False,
        )
    ax.scatter(
        best["lr"],
        best["final_val_loss"],
        marker="*",
        s=260,
        zorder=5,
        color=[palette.get(lab, "0.5") for lab in best["label"]],
        edgecolor="black",
        lw=0.8,
    )
    ax.set_xscale("log")
    tried = sorted(sweep["lr"].unique())
    if len(tried) <= 8:  # label the lrs that were tried, not just the decades
        ax.xaxis.set_major_locator(FixedLocator(tried))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(lo - 0.06 * (hi - lo) - 0.01, top + 0.04 * (hi - lo) + 0.01)
    ax.set_xlabel(common.LR)
    ax.set_ylabel(common.FINAL_VAL_LOSS)
    ax.set_title(f"Learning-rate sweep — study {study.name}")
    handles = [Line2D([], [], color=palette[lab], marker="o", ms=5, label=lab) for lab in order]
    if len(batches) > 1:
        handles += [
            Line2D([], [], color="0.3", ls=dashes[b], label=f"batch_size {int(b)}") for b in batches
        ]
    handles.append(
        Line2D([], [], ls="", marker="*", ms=13, color="0.7", mec="black", label="chosen lr")
    )
    if (~ok).any():
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="x",
                ms=8,
                mew=2,
                color="0.3",
                label="diverged (off the scale)",
            )
        )
    style.legend_below(fig, handles)
    return fig


def chosen_table(study: Study) -> pd.DataFrame:
    """Per architecture: the lrs tried, the chosen one, its loss, and the runs that diverged."""
    sweep = sweeps(study)
    best = chosen(sweep).set_index(list(SWEEP))
    rows = []
    for key, grp in sweep.groupby(list(SWEEP), dropna=False):
        pick = best.loc[key] if key in best.index else None
        rows.append(
            {
                "label": grp["label"].iloc[0],
                "batch_size": key[-1],
                "lr tried": ", ".join(f"{v:g}" for v in sorted(grp["lr"].unique())),
                "chosen lr": f"{pick['lr']:g}" if pick is not None else "",
                "final_val_loss": f"{pick['final_val_loss']:.4f}" if pick is not None else "",
                "diverged at lr": ", ".join(
                    f"{v:g}" for v in sorted(grp.loc[grp["status"] != "ok", "lr"])
                ),
            }
        )
    rank = {lab: i for i, lab in enumerate(arch_order(sweep))}
    return pd.DataFrame(rows).sort_values("label", key=lambda s: s.map(rank), kind="stable")


def build(study: Study, figdir: Path, tabdir: Path) -> Section:
    """The sweep figure and table, when some architecture was trained at two or more lr."""
    section = Section("Learning-rate sweep")
    missing = common.missing_columns(study.runs, REQUIRED)
    if missing:
        section.notes.append(f"runs.csv has no {', '.join(missing)}: lr sweep skipped")
        return section
    if sweeps(study).empty:
        section.notes.append("no architecture was trained at two or more lr: no lr sweep")
        return section
    path = style.save(plot_lr_sweep(study), figdir, "lr_sweep")
    section.items.append(
        Item(
            "figure",
            path,
            "Final validation loss vs peak learning rate per "
            "architecture (log x); star: chosen lr, x: diverged runs.",
        )
    )
    table = chosen_table(study)
    common.add_table(
        section,
        tabdir,
        "lr_sweep",
        table,
        "Learning rates tried per architecture and the one with the lowest final validation loss.",
        raw=table,
    )
    return section


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.lr_sweep results/<study> [--out DIR]`."""
    return common.figure_main(argv, "python -m plots.lr_sweep", __doc__, build, REQUIRED)


if __name__ == "__main__":
    raise SystemExit(main())
