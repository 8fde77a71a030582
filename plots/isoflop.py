"""IsoFLOP figures and tables: loss vs N per compute budget, and N_opt(C), D_opt(C) with their
power laws, bootstrap intervals and the published exponents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from plots import common, style
from plots.common import Item, Section, Study
from plots.isofit import COLUMNS, MIN_SIZES, IsoFlopFit, fit_isoflop, vertex

# Published exponents, drawn for comparison: N_opt ~ C^a, D_opt ~ C^(1-a).
PUBLISHED = {"Chinchilla (Hoffmann et al. 2022)": 0.5, "Kaplan et al. 2020": 0.73}
BUDGET = "compute budget C (FLOPs)"
N_OPT = "compute-optimal parameters N_opt"
D_OPT = "compute-optimal tokens D_opt (characters)"


def isoflop_runs(study: Study) -> pd.DataFrame:
    """Finished runs with a FLOP budget and what the fit needs, seeds kept apart."""
    ok = study.ok
    if common.missing_columns(ok, COLUMNS):
        return ok.iloc[:0]
    return ok.dropna(subset=list(COLUMNS))


def budgets_usable(runs: pd.DataFrame) -> int:
    """How many budgets have runs at MIN_SIZES distinct sizes or more."""
    if runs.empty:
        return 0
    return int((runs.groupby("max_flops")["n_params"].nunique() >= MIN_SIZES).sum())


def _budget_colors(budgets: list[float]) -> dict[float, tuple]:
    colors = sns.color_palette("viridis", max(len(budgets), 2))
    return {c: colors[i] for i, c in enumerate(sorted(budgets))}


@style.styled
def plot_isoflop(study: Study, fit: IsoFlopFit) -> Figure:
    """Final val loss vs N per budget (seed means +-1 std, single seeds faint), the parabola
    in log N fitted per budget, and its minimum with the bootstrap interval of N_opt."""
    runs = isoflop_runs(study)
    fig, ax = style.new_figure(height=4.8)
    colors = _budget_colors(list(runs["max_flops"].unique()))
    handles = []
    for c, grp in runs.groupby("max_flops"):
        color = colors[c]
        ax.scatter(grp["n_params"], grp["final_val_loss"], s=14, color=color, alpha=0.45, lw=0)
        pts = common.seed_mean(grp.assign(loss=grp["final_val_loss"]), "loss")
        ax.errorbar(
            pts["n_params"],
            pts["loss"],
            yerr=pts["loss_std"].fillna(0.0),
            fmt="o",
            color=color,
            mec="black",
            mew=0.6,
            ms=6,
            capsize=2,
            zorder=3,
        )
        row = fit.optima[fit.optima["C"] == c]
        seeds = int(pts["n_seeds"].max())
        handles.append(
            Line2D([], [], color=color, marker="o", mec="black", label=f"C = {c:.3g}")
            if seeds == 1
            else Line2D(
                [], [], color=color, marker="o", mec="black", label=f"C = {c:.3g}, {seeds} seeds"
            )
        )
        coef = np.polyfit(np.log(grp["n_params"]), grp["final_val_loss"], 2)
        grid = np.geomspace(grp["n_params"].min() / 1.3, grp["n_params"].max() * 1.3, 100)
        ax.plot(grid, np.polyval(coef, np.log(grid)), color=color, lw=1.2, zorder=2)
        if len(row) and np.isfinite(row["n_opt"].iloc[0]):
            x, y = vertex(coef)
            ax.scatter(np.exp(x), y, marker="*", s=160, color=color, ec="black", zorder=4)
            if {"n_lo", "n_hi"} <= set(row) and np.isfinite(row["n_lo"].iloc[0]):
                # drawn within the plotted sizes; the table gives the whole interval
                lo = max(row["n_lo"].iloc[0], grid[0])
                hi = min(row["n_hi"].iloc[0], grid[-1])
                ax.hlines(y, lo, hi, color=color, lw=3, alpha=0.6, zorder=3)
    ax.set_xscale("log")
    style.log_ticks(ax, "x")
    ax.set_xlabel(common.PARAMS)
    ax.set_ylabel(common.FINAL_VAL_LOSS)
    ax.set_title(f"IsoFLOP curves: loss vs parameters per budget — study {study.name}")
    handles.append(
        Line2D([], [], ls="", marker="*", ms=12, color="0.5", mec="black", label="N_opt (95% CI)")
    )
    style.legend_below(fig, handles)
    return fig


def _line(ax: object, c: np.ndarray, k: float, e: float, **kw: object) -> None:
    ax.plot(c, k * c**e, **kw)


@style.styled
def plot_optimal(study: Study, fit: IsoFlopFit) -> Figure:
    """N_opt(C) and D_opt(C) with their power laws, bootstrap bands and published slopes."""
    opt = fit.optima.dropna(subset=["n_opt"])
    fig, axes = style.new_figure(width=11.0, height=4.4, ncols=2)
    c = opt["C"].to_numpy(float)
    grid = np.geomspace(c.min() / 1.5, c.max() * 1.5, 60)
    mid = float(np.exp(np.log(c).mean()))
    for ax, col, exp_i, k, e, ylabel, sym in (
        (axes[0], "n", 0, fit.k_n, fit.a, N_OPT, "a"),
        (axes[1], "d", 2, fit.k_d, fit.b, D_OPT, "b"),
    ):
        y = opt[f"{col}_opt"].to_numpy(float)
        lo, hi = opt.get(f"{col}_lo"), opt.get(f"{col}_hi")
        if lo is not None and hi is not None and np.isfinite(lo).all():
            yerr = np.vstack([y - lo.to_numpy(float), hi.to_numpy(float) - y])
            ax.errorbar(c, y, yerr=np.maximum(yerr, 0), fmt="none", ecolor="0.3", capsize=3)
        ax.scatter(c, y, s=50, color="C0", ec="black", zorder=3)
        if np.isfinite(e):
            _line(ax, grid, k, e, color="black", lw=1.4, label=f"fit: {sym} = {e:.2f}")
            if fit.boots is not None:
                b = fit.boots
                curves = np.exp(b[:, exp_i + 1][:, None]) * grid[None, :] ** b[:, exp_i][:, None]
                band = np.percentile(curves, [2.5, 97.5], axis=0)
                ax.fill_between(grid, *band, color="0.5", alpha=0.25, lw=0)
            anchor = k * mid**e
            for (name, pub), ls in zip(PUBLISHED.items(), ("--", ":")):
                slope = pub if col == "n" else 1 - pub
                _line(
                    ax,
                    grid,
                    anchor / mid**slope,
                    slope,
                    color="C3",
                    ls=ls,
                    lw=1.1,
                    label=f"{name.split(' (')[0]}: {sym} = {slope:.2f}",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(BUDGET)
        ax.set_ylabel(ylabel)
        lo_ci, hi_ci = fit.ci.get(sym, (np.nan, np.nan))
        ci = f" [{lo_ci:.2f}, {hi_ci:.2f}]" if np.isfinite(lo_ci) else ""
        ax.set_title(f"{col.upper()}_opt ∝ C^{sym}: {sym} = {e:.2f}{ci} (95% CI)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Compute-optimal allocation — study {study.name}")
    return fig


def optima_table(fit: IsoFlopFit) -> pd.DataFrame:
    """Per budget: runs, sizes, N_opt and D_opt with intervals, tokens per parameter."""
    t = fit.optima

    def ci(col: str, lo: str, hi: str, fmt: object) -> list[str]:
        out = []
        for r in t.itertuples():
            v = getattr(r, col, np.nan)
            a, b = getattr(r, lo, np.nan), getattr(r, hi, np.nan)
            out.append(fmt(v) + (f" [{fmt(a)}, {fmt(b)}]" if np.isfinite(a) else ""))
        return out

    return pd.DataFrame(
        {
            "C (FLOPs)": [f"{c:.3g}" for c in t["C"]],
            "runs": t["runs"],
            "sizes": t["sizes"],
            "N tried": [
                f"{common.fmt_count(a)}-{common.fmt_count(b)}"
                for a, b in zip(t["n_min"], t["n_max"])
            ],
            "N_opt [95% CI]": ci("n_opt", "n_lo", "n_hi", common.fmt_count),
            "D_opt [95% CI]": ci("d_opt", "d_lo", "d_hi", common.fmt_count),
            "tokens per parameter": [common.fmt_num(v) for v in t.get("tokens_per_param", [])]
            or [""] * len(t),
            "loss at N_opt": [common.fmt_num(v, 4) for v in t.get("loss_opt", [])] or [""] * len(t),
            "inside": t.get("inside", pd.Series([False] * len(t))),
        }
    )


def exponents_table(fit: IsoFlopFit) -> pd.DataFrame:
    """a and b with intervals, resamples, the published values."""
    rows = []
    for sym, value, k in (("a (N_opt ∝ C^a)", fit.a, fit.k_n), ("b (D_opt ∝ C^b)", fit.b, fit.k_d)):
        lo, hi = fit.ci.get(sym[0], (np.nan, np.nan))
        rows.append(
            {
                "exponent": sym,
                "value": common.fmt_num(value, 3),
                "95% CI": f"[{common.fmt_num(lo)}, {common.fmt_num(hi)}]"
                if np.isfinite(lo)
                else "",
                "coefficient": common.fmt_num(k, 3),
                "resamples": f"{fit.n_boot} used, {fit.n_failed} dropped",
                "Chinchilla": 0.5,
                "Kaplan": 0.73 if sym[0] == "a" else 0.27,
            }
        )
    return pd.DataFrame(rows)


def build(study: Study, figdir: Path, tabdir: Path, n_boot: int = 200) -> Section:
    """The IsoFLOP section, for studies with at least two FLOP budgets of three sizes each."""
    section = Section("Compute-optimal scaling (IsoFLOP)")
    runs = isoflop_runs(study)
    if budgets_usable(runs) < 2:
        section.notes.append(
            f"needs finished runs with {', '.join(COLUMNS)} at >= 2 FLOP budgets of >= "
            f"{MIN_SIZES} sizes each: IsoFLOP analysis skipped"
        )
        return section
    fit = fit_isoflop(runs, n_boot=n_boot)
    fig = plot_isoflop(study, fit)
    path = style.save(fig, figdir, "isoflop_curves")
    section.items.append(
        Item(
            "figure",
            path,
            "Final validation loss vs parameters at each compute budget (large dots: mean over "
            "seeds, bars ±1 std over seeds; small dots: single runs); lines: a parabola in "
            "log N per budget; stars: its minimum N_opt, bar: 95% bootstrap interval of N_opt "
            "(runs of each budget redrawn with replacement; cut at the drawn range, whole in "
            "the table).",
        )
    )
    common.add_table(
        section,
        tabdir,
        "isoflop_optima",
        optima_table(fit),
        "Per budget: the sizes tried, N_opt and D_opt = C / flops_per_token(N_opt) "
        "[95% bootstrap interval], tokens per parameter, and whether N_opt and the best run lie "
        "strictly inside the sizes tried.",
        raw=fit.optima,
    )
    if fit.ok:
        fig = plot_optimal(study, fit)
        path = style.save(fig, figdir, "isoflop_optimal")
        section.items.append(
            Item(
                "figure",
                path,
                "N_opt and D_opt vs compute (log-log) with the least-squares power law (black), "
                f"its 95% bootstrap band (grey, {fit.n_boot} resamples over runs) and the "
                "published exponents through the fit's middle (red: Chinchilla dashed, Kaplan "
                "dotted).",
            )
        )
        common.add_table(
            section,
            tabdir,
            "isoflop_exponents",
            exponents_table(fit),
            "Exponents of N_opt ∝ C^a and D_opt ∝ C^b with 95% bootstrap intervals, next to the "
            "published ones.",
        )
    if fit.note:
        section.notes.append(fit.note)
    section.flags += fit.flags
    return section


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.isoflop results/<study> [--out DIR] [--n-boot N]`."""
    return common.figure_main(
        argv, "python -m plots.isoflop", __doc__, build, options=common.add_n_boot
    )


if __name__ == "__main__":
    raise SystemExit(main())
