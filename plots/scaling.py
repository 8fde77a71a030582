"""Scaling: best loss vs parameters and compute, power-law fits L = E + A*X^-alpha, frontier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from plots import common, style
from plots.common import Item, Section, Study
from plots.powerlaw import PowerLawFit, fit_power_law  # also used as scaling.fit_power_law

X_VARS = {  # stem: (column, axis label, symbol)
    "params": ("n_params", common.PARAMS, "N"),
    "params_non_embedding": ("n_params_non_embedding", common.PARAMS_NE, "N"),
    "flops": ("train_flops", common.FLOPS, "C"),
}


def best_points(study: Study) -> pd.DataFrame:
    """Per label, the seed mean of the best validation loss (loss), its spread over seeds
    (loss_std) and the number of seeds (n_seeds); the other columns are the first seed's."""
    ok = study.ok.copy()
    loss = "best_val_loss" if "best_val_loss" in ok else "final_val_loss"
    ok["loss"] = ok[loss].fillna(ok.get("final_val_loss"))
    ok = ok.dropna(subset=["loss"])
    return common.seed_mean(ok, "loss")


def compute_frontier(curves: pd.DataFrame) -> pd.DataFrame:
    """Evaluations that set a new lowest validation loss at their compute (Pareto frontier)."""
    df = curves[(curves["flops"] > 0) & curves["val_loss"].notna()].sort_values(
        ["flops", "val_loss"]
    )
    record = df["val_loss"].cummin()
    new = df["val_loss"] < record.shift(fill_value=np.inf)
    return df[new.to_numpy()][["run_id", "label", "flops", "val_loss"]].reset_index(drop=True)


def _log_y(fig: Figure, ax: object, lo: float, hi: float) -> None:
    """Log y axis with plain tick labels (loss spans far less than a decade)."""
    ax.set_yscale("log")
    ticks = [t for t in MaxNLocator(nbins=6).tick_values(lo, hi) if lo <= t <= hi]
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_yticks(ticks)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylim(lo, hi)


def _draw_fit(ax: object, fit: PowerLawFit, symbol: str) -> None:
    if fit.ok:
        grid = fit.grid if fit.grid is not None else np.geomspace(*ax.get_xlim(), 80)
        ax.plot(grid, fit.predict(grid), color="0.1", lw=1.3, ls="--", zorder=2)
        if fit.band is not None:
            ax.fill_between(grid, *fit.band, color="0.5", alpha=0.25, lw=0, zorder=1)
    text = fit.describe(symbol) if fit.ok else fit.note
    if fit.ok and fit.flags:
        text += "\nflagged, not a result:\n" + "\n".join(f.split(":")[0] for f in fit.flags)
    ax.text(
        0.98,
        0.97,
        text,
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=9,
        bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9},
    )


@style.styled
def plot_scaling(
    study: Study, stem: str = "params", fit: PowerLawFit | None = None, n_boot: int = 200
) -> Figure:
    """Best validation loss per label vs X (log-log): colour = label, marker = block size."""
    column, xlabel, symbol = X_VARS[stem]
    pts = best_points(study)
    pts = pts[pts[column] > 0] if column in pts else pts.iloc[:0]
    if pts.empty:
        raise common.ResultsError(f"{study.path / 'runs.csv'}: no finished run with {column} > 0")
    if fit is None:
        fit = fit_power_law(pts[column], pts["loss"], n_boot=n_boot)
    fig, ax = style.new_figure(height=4.6)
    style.scatter_runs(fig, ax, study, pts, column, "loss")
    spread = pts[pts["loss_std"].notna()]
    ax.errorbar(spread[column], spread["loss"], yerr=spread["loss_std"], fmt="none", ecolor="0.2")
    ax.set_xscale("log")
    lo, hi = float(pts["loss"].min()), float(pts["loss"].max())
    _log_y(fig, ax, *style.padded(lo, hi, 0.1, 0.25))
    if len(pts):
        span = np.log10(pts[column].max() / pts[column].min())
        ax.set_xlim(
            pts[column].min() / 10 ** (0.08 * span + 0.05),
            pts[column].max() * 10 ** (0.08 * span + 0.05),
        )
    style.log_ticks(ax, "x")
    _draw_fit(ax, fit, symbol)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(common.BEST_VAL_LOSS)
    ax.set_title(f"Best validation loss vs {xlabel.split(' (')[0]} — study {study.name}")
    fig.fit = fit  # the tests and the fits table read it back
    return fig


@style.styled
def plot_frontier(study: Study, fit: PowerLawFit | None = None, n_boot: int = 200) -> Figure:
    """All validation curves vs compute, the frontier over them, and a power law fitted to it."""
    curves = study.curves[(study.curves["flops"] > 0) & study.curves["val_loss"].notna()]
    front = compute_frontier(curves)
    if fit is None:
        runs = curves["run_id"].unique()

        def resample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            pick = rng.choice(runs, len(runs), replace=True)
            f = compute_frontier(curves[curves["run_id"].isin(pick)])
            return f["flops"].to_numpy(), f["val_loss"].to_numpy()

        fit = fit_power_law(front["flops"], front["val_loss"], n_boot=n_boot, resample=resample)
    fig, ax = style.new_figure(height=4.6)
    palette = study.palette()
    for _, df in curves.groupby("run_id"):
        ax.plot(
            df["flops"],
            df["val_loss"],
            color=palette.get(df["label"].iloc[0], "0.5"),
            lw=1.0,
            alpha=0.75,
            zorder=2,
        )
    ax.step(
        front["flops"], front["val_loss"], where="post", color="black", lw=1.6, alpha=0.85, zorder=4
    )
    ax.set_xscale("log")
    _log_y(fig, ax, *style.padded(curves["val_loss"].min(), style.loss_top(study, curves)))
    style.log_ticks(ax, "x")
    _draw_fit(ax, fit, "C")
    ax.set_xlabel(common.FLOPS)
    ax.set_ylabel(common.VAL_LOSS)
    ax.set_title(f"Compute frontier — study {study.name}")
    handles = [
        Line2D([], [], color=palette[lab], label=lab)
        for lab in study.labels()
        if lab in set(curves["label"])
    ]
    handles.append(Line2D([], [], color="black", lw=2, label="frontier"))
    if fit.ok:
        handles.append(Line2D([], [], color="0.1", ls="--", lw=1.3, label="fit to frontier"))
    style.legend_below(fig, handles)
    fig.fit = fit
    return fig


def fits_table(fits: dict[str, PowerLawFit]) -> pd.DataFrame:
    """One row per fit: parameters, 95% bootstrap intervals, number of points, note."""
    rows = []
    for name, f in fits.items():
        row = {"fit": name, "points": f.n_points, "E": f.E, "A": f.A, "alpha": f.alpha}
        for k in ("E", "A", "alpha"):
            row[f"{k}_lo"], row[f"{k}_hi"] = f.ci.get(k, (np.nan, np.nan))
        row.update({"bootstrap": f.n_boot, "note": f.note, "flags": "; ".join(f.flags)})
        rows.append(row)
    return pd.DataFrame(rows)


def _fit_words(fit: PowerLawFit, what: str = "") -> str:
    """How a caption describes a fit: the dashed line and band, or why there is none."""
    if not fit.ok:
        return fit.note
    words = f"dashed: power law fitted{what}"
    if fit.band is not None:
        words += f", grey: 95% bootstrap band ({fit.n_boot} resamples)"
    words += f"; {fit.note}" if fit.note else ""
    return words + (f"; FLAGGED: {'; '.join(fit.flags)}" if fit.flags else "")


def build(study: Study, figdir: Path, tabdir: Path, n_boot: int = 200) -> Section:
    """Scaling figures and the fits table, for whatever columns the study has."""
    section = Section("Scaling")
    fits: dict[str, PowerLawFit] = {}
    pts = best_points(study) if "status" in study.runs else pd.DataFrame()
    for stem, (column, xlabel, _) in X_VARS.items():
        if common.missing_columns(pts, [column, "loss"]) or not (pts[column] > 0).any():
            section.notes.append(
                f"no finished run with {column} and a loss: loss vs {column} skipped"
            )
            continue
        fig = plot_scaling(study, stem, n_boot=n_boot)
        fits[f"loss vs {column}"] = fig.fit
        path = style.save(fig, figdir, f"scaling_{stem}")
        section.items.append(
            Item(
                "figure",
                path,
                f"Best validation loss per architecture vs "
                f"{xlabel} (log-log), {common.seeds_words(pts)}; {_fit_words(fig.fit)}.",
            )
        )
        if not fig.fit.ok:
            section.notes.append(f"loss vs {column}: {fig.fit.note}")
        section.flags += [f"loss vs {column}: {f}" for f in fig.fit.flags]
    if common.missing_columns(study.curves, ["flops", "val_loss"]):
        section.notes.append("curves.csv has no flops column: compute frontier skipped")
    elif not (study.curves["flops"] > 0).any():
        section.notes.append("no evaluation with flops > 0: compute frontier skipped")
    else:
        fig = plot_frontier(study, n_boot=n_boot)
        fits["frontier: loss vs flops"] = fig.fit
        section.flags += [f"frontier fit: {f}" for f in fig.fit.flags]
        path = style.save(fig, figdir, "compute_frontier")
        section.items.append(
            Item(
                "figure",
                path,
                "Validation loss vs training compute for "
                "every run; black: lowest loss reached at each compute "
                f"(frontier); {_fit_words(fig.fit, ' to the frontier')}.",
            )
        )
    if fits:
        table = fits_table(fits)
        shown = table.copy()
        for k in ("E", "A", "alpha"):
            shown[k] = [
                f"{common.fmt_num(v, 4)} [{common.fmt_num(lo)}, {common.fmt_num(hi)}]"
                if np.isfinite(lo)
                else common.fmt_num(v, 4)
                for v, lo, hi in zip(table[k], table[f"{k}_lo"], table[f"{k}_hi"])
            ]
        shown = shown[["fit", "points", "E", "A", "alpha", "bootstrap", "note", "flags"]]
        common.add_table(
            section,
            tabdir,
            "scaling_fits",
            shown,
            "Power-law fits L = E + A*X^-alpha: value [95% bootstrap interval over runs]; "
            "flags: estimates on a bound of the fit or on the edge of (or outside) their own "
            "interval, which are not results.",
            raw=table,
        )
    return section


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.scaling results/<study> [--out DIR] [--n-boot N]`."""
    return common.figure_main(
        argv, "python -m plots.scaling", __doc__, build, options=common.add_n_boot
    )


if __name__ == "__main__":
    raise SystemExit(main())
