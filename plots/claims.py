"""REPORT.md of results/claims: the claims table, claimed vs predicted time, implied MFU."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from plots import common, style
from plots.common import Item, ResultsError, Section
from plots.paths import check_report_dir

REQUIRED = ("claim_id", "level", "status", "verdict", "claimed_time_s", "hardware_model")
LEVEL_ORDER = {"arithmetic": 0, "probe": 1, "full": 2}
VERDICT_COLOURS = {
    "reproduced": "#1b9e77",
    "consistent": "#66a61e",
    "contradicted": "#d95f02",
    "not checkable here": "#7570b3",
    "not checked": "#999999",  # this machine's device kind, no probe yet: arithmetic only
}
CLASS_COLOURS = {
    "plausible": "#1b9e77",
    "low": "#a6761d",
    "implausible": "#e6ab02",
    "impossible": "#d95f02",
}
KIND_MARKERS = {"measured": "o", "predicted": "s", "model": "^"}
TIME_FACTOR = 3.0  # the verdict rule's band (chargpt.claims.verdict.TIME_FACTOR)
MFU_IMPLAUSIBLE = 0.75  # chargpt.claims.arithmetic.MFU_IMPLAUSIBLE


def load(path: Path) -> pd.DataFrame:
    """claims.csv as a frame (ResultsError naming the file when it is absent or wrong)."""
    df = common.read_csv(path / "claims.csv", REQUIRED)
    for col in df.columns:
        if col.endswith(("_s", "_flops", "mfu", "_mb", "ratio")) or col in ("device_count",):
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def per_claim(df: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: its deepest ok check's figures, the arithmetic's, the verdict."""
    rows = []
    for _, group in df.groupby("claim_id", sort=False):
        arith = group[group["level"] == "arithmetic"]
        probe = group[(group["level"] == "probe") & (group["status"] == "ok")]
        full = group[(group["level"] == "full") & (group["status"] == "ok")]
        row: dict[str, Any] = group.iloc[0].to_dict()
        if len(arith):
            for col in ("total_flops", "implied_mfu", "mfu_class"):
                row[col] = arith.iloc[0].get(col)
        row["mfu_here"] = probe.iloc[0]["mfu"] if len(probe) else np.nan
        row["predicted_here_s"] = probe.iloc[0]["predicted_here_s"] if len(probe) else np.nan
        row["predicted_claimed_s"] = probe.iloc[0]["predicted_claimed_s"] if len(probe) else np.nan
        measured = np.nan
        if len(full):
            f = full.iloc[0]
            measured = f["wall_s"] if str(row.get("count_eval")) == "True" else f["train_s"]
        row["measured_here_s"] = measured
        skipped = group[group["status"] != "ok"]
        row["skipped"] = "; ".join(f"{r.level}: {r.reason}" for r in skipped.itertuples())
        rows.append(row)
    return pd.DataFrame(rows)


def _time(v: Any) -> str:
    if v is None or not np.isfinite(v):
        return ""
    for div, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if v >= div:
            return f"{v / div:.3g} {unit}"
    return f"{v:.3g} s"


def _pct(v: Any) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.1%}"


def table(claims: pd.DataFrame) -> pd.DataFrame:
    """The report's table, formatted."""
    return pd.DataFrame(
        {
            "#": range(1, len(claims) + 1),
            "claim": claims["claim_id"],
            "claimed hardware": [
                f"{int(n)}x {m}" for n, m in zip(claims["device_count"], claims["hardware_model"])
            ],
            "claimed time": claims["claimed_time_s"].map(_time),
            "FLOPs": claims["total_flops"].map(lambda v: common.fmt_num(float(v))),
            "implied MFU": [
                _pct(m) + ("" if c in ("plausible", "unknown") else f" ({c})")
                for m, c in zip(claims["implied_mfu"], claims["mfu_class"])
            ],
            "MFU here": claims["mfu_here"].map(_pct),
            "predicted here": claims["predicted_here_s"].map(_time),
            "measured here": claims["measured_here_s"].map(_time),
            "claimed hw at MFU here (model)": claims["predicted_claimed_s"].map(_time),
            "verdict": claims["verdict"],
            "why": claims["verdict_reason"],
        }
    )


@style.styled
def time_figure(claims: pd.DataFrame) -> Any:
    """Claimed time against the time the checks give for the claimed hardware, log-log."""
    shown = claims[np.isfinite(claims["compare_s"]) & (claims["compare_s"] > 0)]
    fig, ax = style.new_figure(6.4, 5.0)
    for row in shown.itertuples():
        ax.scatter(
            row.claimed_time_s,
            row.compare_s,
            color=VERDICT_COLOURS.get(row.verdict, "grey"),
            marker=KIND_MARKERS.get(row.compare_kind, "x"),
            s=60,
            edgecolor="black",
            linewidth=0.5,
            zorder=3,
        )
        ax.annotate(
            str(row.Index + 1),  # the claim's row in the table: ids would overlap
            (row.claimed_time_s, row.compare_s),
            fontsize=8,
            xytext=(4, 3),
            textcoords="offset points",
        )
    values = np.concatenate([shown["claimed_time_s"], shown["compare_s"]])
    lo, hi = values.min() / 5, values.max() * 5
    grid = np.array([lo, hi])
    ax.plot(grid, grid, color="black", linewidth=1, label="y = x (the claim)")
    ax.fill_between(
        grid,
        grid / TIME_FACTOR,
        grid * TIME_FACTOR,
        color="grey",
        alpha=0.15,
        label=f"within {TIME_FACTOR:g}x",
    )
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
    ax.set_xlabel("claimed time (s)")
    ax.set_ylabel("time for the claimed hardware from the checks (s)")
    ax.set_title("Claimed time vs measured / predicted time")
    handles = [
        Line2D([], [], color=c, marker="o", linestyle="", label=v)
        for v, c in VERDICT_COLOURS.items()
        if v in set(shown["verdict"])
    ]
    handles += [
        Line2D([], [], color="grey", marker=m, linestyle="", label=k)
        for k, m in KIND_MARKERS.items()
        if k in set(shown["compare_kind"])
    ]
    style.legend_below(fig, handles)
    return fig


@style.styled
def mfu_figure(claims: pd.DataFrame) -> Any:
    """Implied MFU of each claim on its datasheet peak, and the MFU measured here."""
    shown = claims[np.isfinite(claims["implied_mfu"])].iloc[::-1]
    fig, ax = style.new_figure(6.4, 0.45 * len(shown) + 1.8)
    y = np.arange(len(shown))
    colours = [CLASS_COLOURS.get(c, "grey") for c in shown["mfu_class"]]
    ax.barh(y, 100 * shown["implied_mfu"], color=colours, edgecolor="black", linewidth=0.5)
    here = 100 * shown["mfu_here"]
    ax.scatter(here, y, marker="D", color="black", zorder=3, s=22)
    ax.axvline(100 * MFU_IMPLAUSIBLE, color="#e6ab02", linestyle="--", linewidth=1)
    ax.axvline(100, color="#d95f02", linestyle="-", linewidth=1.2)
    ax.set_yticks(y, shown["claim_id"], fontsize=8)
    ax.set_xlabel("MFU (% of peak FLOP/s)")
    ax.set_xlim(0, 110)
    ax.set_title("Implied MFU per claim (datasheet peak)")
    handles = [
        Line2D([], [], color=c, marker="s", linestyle="", label=f"implied: {k}")
        for k, c in CLASS_COLOURS.items()
        if k in set(shown["mfu_class"])
    ]
    handles += [
        Line2D([], [], color="black", marker="D", linestyle="", label="here (measured peak)"),
        Line2D([], [], color="#e6ab02", linestyle="--", label="75%: implausible"),
        Line2D([], [], color="#d95f02", label="100%: impossible"),
    ]
    style.legend_below(fig, handles)
    return fig


def build_report(path: Path) -> Path:
    """figures/, tables/ and REPORT.md of a results/claims directory."""
    claims = per_claim(load(path))
    figdir, tabdir = path / "figures", path / "tables"
    section = Section("Claims")
    common.add_table(
        section,
        tabdir,
        "claims",
        table(claims),
        "Every claim: its claimed time, FLOPs by chargpt's formula, the MFU it implies on "
        "its hardware, the MFU measured here, the predicted and measured times here, the "
        "claimed hardware's time at the MFU measured here (a model), and the verdict.",
    )
    figures = Section("Figures")
    if claims["compare_s"].notna().any():
        figures.items.append(
            Item(
                "figure",
                style.save(time_figure(claims), figdir, "claims_time"),
                "Claimed time against the time the checks give for the claimed hardware: a full "
                f"run or probe here rescaled by the ratio of peaks, or (triangles) the model for "
                f"another device kind. The band is the verdict rule's {TIME_FACTOR:g}x; numbers "
                "are the claims' rows in the table.",
            )
        )
    else:
        figures.notes.append("no claim has a measured or predicted time yet: run a probe")
    if claims["implied_mfu"].notna().any():
        figures.items.append(
            Item(
                "figure",
                style.save(mfu_figure(claims), figdir, "claims_mfu"),
                "Implied MFU of each claim with a datasheet peak (bars), and the MFU measured on "
                "this machine's measured peak (diamonds).",
            )
        )
    env = common.read_json(path / "env.json")
    lines = [
        "# Hardware timing claims: report\n",
        f"Made by `python -m plots.report {path}` from claims.csv and env.json.\n",
    ]
    if env:
        lines.append(
            f"- this machine: {env.get('cpu_model')}, {env.get('torch_threads')} threads, "
            f"torch {env.get('torch')}, GPUs: {len(env.get('gpus') or [])}; measured peaks "
            + ", ".join(
                f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in (env.get("peak_flops") or {}).items()
            )
            + f"; load average {env.get('load_avg_1m')} at the start\n"
        )
    skipped = claims[claims["skipped"] != ""]
    if len(skipped):
        lines.append("## Checks not done\n")
        lines += [f"- {r.claim_id}: {r.skipped}" for r in skipped.itertuples()] + [""]
    for sec in (section, figures):
        lines.append(f"## {sec.title}\n")
        for item in sec.items:
            rel = item.path.relative_to(path).as_posix()
            if item.kind == "figure":
                lines += [f"![{item.path.stem}]({rel})\n", f"*{item.caption}*\n"]
            else:
                lines += [f"*{item.caption}*\n", item.path.read_text()]
        lines += [f"> skipped: {n}\n" for n in sec.notes]
    report = path / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def is_claims_dir(path: Path) -> bool:
    """A results/claims folder (claims.csv, no runs.csv)."""
    return (path / "claims.csv").is_file() and not (path / "runs.csv").is_file()


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.claims results/claims`."""
    parser = common.Parser(prog="python -m plots.claims", description=__doc__)
    parser.add_argument("results", help="a results/claims directory")
    args = parser.parse_args(argv)

    def body() -> int:
        path = Path(args.results)
        if not path.is_dir():
            raise ResultsError(f"{path}: no such results directory")
        check_report_dir(path)
        print(build_report(path))
        return 0

    return common.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
