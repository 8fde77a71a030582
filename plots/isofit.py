"""IsoFLOP numerics (Chinchilla approach 2): a parabola in log N per budget, N_opt(C) and
D_opt(C) power laws, 95% intervals from a bootstrap over runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from plots import common
from plots.powerlaw import bound_flags

MIN_SIZES = 3  # a parabola has three coefficients
MIN_BUDGETS = 2  # an exponent needs two budgets (three to say anything about its error)
MAX_FAILED = 0.1  # more failed resamples than this and the interval is flagged
COLUMNS = ("max_flops", "n_params", "flops_per_token", "tokens", "final_val_loss")


@dataclass
class IsoFlopFit:
    """Per-budget optima and the power laws N_opt = k_n C^a, D_opt = k_d C^b."""

    optima: pd.DataFrame  # one row per budget (see optima())
    a: float = np.nan
    k_n: float = np.nan
    b: float = np.nan
    k_d: float = np.nan
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    boots: np.ndarray | None = None  # (n_boot, 4): a, log k_n, b, log k_d per usable resample
    n_boot: int = 0
    n_failed: int = 0
    flags: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.a))


def parabola(log_n: np.ndarray, loss: np.ndarray) -> np.ndarray | None:
    """loss = c0 (log N)^2 + c1 log N + c2 (numpy order), or None without a minimum."""
    if len(np.unique(log_n)) < MIN_SIZES:
        return None
    coef = np.polyfit(log_n, loss, 2)
    return coef if coef[0] > 0 else None


def vertex(coef: np.ndarray) -> tuple[float, float]:
    """(log N, loss) at the parabola's minimum."""
    x = -coef[1] / (2 * coef[0])
    return float(x), float(np.polyval(coef, x))


def flops_per_token_at(n: float | np.ndarray, models: pd.DataFrame) -> np.ndarray:
    """The trainer's flops_per_token at N, read from runs.csv: linear in log-log between the
    study's own models (exact at each of them), the end segments extended beyond them."""
    table = models.groupby("n_params")["flops_per_token"].median().sort_index()
    lx, ly = np.log(table.index.to_numpy(float)), np.log(table.to_numpy(float))
    x = np.log(np.atleast_1d(np.asarray(n, dtype=float)))
    if len(lx) == 1:
        return np.exp(ly[0] + (x - lx[0]))  # one model: flops_per_token proportional to N
    out = np.interp(x, lx, ly)
    lo, hi = x < lx[0], x > lx[-1]
    out[lo] = ly[0] + (x[lo] - lx[0]) * (ly[1] - ly[0]) / (lx[1] - lx[0])
    out[hi] = ly[-1] + (x[hi] - lx[-1]) * (ly[-1] - ly[-2]) / (lx[-1] - lx[-2])
    return np.exp(out)


def _budget_optima(runs: pd.DataFrame) -> dict[float, tuple[float, float, np.ndarray] | None]:
    """budget -> (N_opt, loss at it, parabola) or None when its curve has no minimum."""
    out: dict[float, tuple[float, float, np.ndarray] | None] = {}
    for c, grp in runs.groupby("max_flops"):
        coef = parabola(np.log(grp["n_params"].to_numpy(float)), grp["final_val_loss"].to_numpy())
        if coef is None:
            out[float(c)] = None
        else:
            x, y = vertex(coef)
            out[float(c)] = (float(np.exp(x)), y, coef)
    return out


def power_law(c: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """Least squares in log-log: x = k c^e; returns (e, log k)."""
    e, log_k = np.polyfit(np.log(c), np.log(x), 1)
    return float(e), float(log_k)


def optima(runs: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Per budget C: runs, sizes, N_opt, the loss there, D_opt = C / flops_per_token(N_opt),
    tokens per parameter, and whether N_opt lies strictly inside the sizes tried."""
    rows = []
    found = _budget_optima(runs)
    for c, grp in runs.groupby("max_flops"):
        sizes = np.sort(grp["n_params"].unique())
        mean = grp.groupby("n_params")["final_val_loss"].mean()
        row = {
            "C": float(c),
            "runs": len(grp),
            "sizes": len(sizes),
            "n_min": sizes[0],
            "n_max": sizes[-1],
            "n_best_run": float(mean.idxmin()),
        }
        opt = found[float(c)]
        if opt is not None:
            n_opt, loss, _ = opt
            d_opt = float(c) / float(flops_per_token_at(n_opt, models)[0])
            row.update(n_opt=n_opt, loss_opt=loss, d_opt=d_opt, tokens_per_param=d_opt / n_opt)
            row["inside"] = (
                bool(sizes[0] < n_opt < sizes[-1]) and sizes[0] < row["n_best_run"] < sizes[-1]
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _flags(fit: IsoFlopFit) -> list[str]:
    """Why a budget's optimum or an exponent is not a result."""
    flags = []
    for r in fit.optima.itertuples():
        where = f"budget {r.C:.3g} FLOPs"
        if not np.isfinite(getattr(r, "n_opt", np.nan)):
            flags.append(f"{where}: the loss has no minimum over N (the parabola opens down)")
        elif not r.inside:
            flags.append(
                f"{where}: N_opt = {common.fmt_count(r.n_opt)} or the best run "
                f"({common.fmt_count(r.n_best_run)}) is not strictly inside the sizes tried "
                f"[{common.fmt_count(r.n_min)}, {common.fmt_count(r.n_max)}]: an extrapolation"
            )
    if fit.n_boot + fit.n_failed and fit.n_failed > MAX_FAILED * (fit.n_boot + fit.n_failed):
        flags.append(
            f"{fit.n_failed} of {fit.n_boot + fit.n_failed} resamples had a budget without a "
            "minimum and were dropped: the intervals describe only the others"
        )
    return flags + bound_flags({"a": fit.a, "b": fit.b}, fit.ci, {})


@common.one_blas_thread
def fit_isoflop(runs: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> IsoFlopFit:
    """Approach 2 on finished runs with COLUMNS; the bootstrap redraws each budget's runs
    (seeds included) with replacement, and refits everything downstream of them."""
    runs = runs.dropna(subset=list(COLUMNS))
    runs = runs[(runs["n_params"] > 0) & (runs["final_val_loss"] > 0)]
    fit = IsoFlopFit(optima=optima(runs, runs) if len(runs) else pd.DataFrame())
    good = fit.optima.dropna(subset=["n_opt"]) if "n_opt" in fit.optima else fit.optima.iloc[:0]
    if len(good) < MIN_BUDGETS:
        fit.note = f"{len(good)} budget(s) with a minimum, need {MIN_BUDGETS}: no exponent"
        fit.flags = _flags(fit)
        return fit
    c = good["C"].to_numpy(float)
    fit.a, log_kn = power_law(c, good["n_opt"].to_numpy(float))
    fit.b, log_kd = power_law(c, good["d_opt"].to_numpy(float))
    fit.k_n, fit.k_d = float(np.exp(log_kn)), float(np.exp(log_kd))
    rng = np.random.default_rng(seed)
    groups = [g for _, g in runs[runs["max_flops"].isin(c)].groupby("max_flops")]
    boots, per_budget = [], []
    for _ in range(n_boot):
        drawn = pd.concat([g.iloc[rng.integers(0, len(g), len(g))] for g in groups])
        found = _budget_optima(drawn)
        if any(v is None for v in found.values()):
            fit.n_failed += 1
            continue
        n_opt = np.array([found[float(x)][0] for x in c])
        d_opt = c / flops_per_token_at(n_opt, runs)
        boots.append([*power_law(c, n_opt), *power_law(c, d_opt)])
        per_budget.append(np.concatenate([n_opt, d_opt]))
    if len(boots) >= 20:
        fit.boots, fit.n_boot = np.array(boots), len(boots)
        pct = np.percentile(fit.boots, [2.5, 97.5], axis=0)
        fit.ci = {"a": (pct[0, 0], pct[1, 0]), "b": (pct[0, 2], pct[1, 2])}
        pb = np.percentile(np.array(per_budget), [2.5, 97.5], axis=0)
        k = len(c)
        ci = {"n_lo": pb[0, :k], "n_hi": pb[1, :k], "d_lo": pb[0, k:], "d_hi": pb[1, k:]}
        for name, values in ci.items():
            fit.optima.loc[fit.optima["C"].isin(c), name] = values
    elif n_boot > 0:
        fit.note = f"bootstrap skipped: only {len(boots)} usable resamples of {n_boot}"
    fit.flags = _flags(fit)
    return fit
