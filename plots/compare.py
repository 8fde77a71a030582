"""Two (or more) results directories on one figure: validation curves vs compute, and the final
loss per label vs parameters (seed means).

    python -m plots.compare results/a results/b [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from plots import common, style
from plots.curves import seed_curves
from plots.paths import check_dir

MARKERS = ("o", "s", "^", "D", "v")


@style.styled
def plot_compare(studies: list[common.Study]) -> Figure:
    """Left: seed-mean validation loss vs training FLOPs per label; right: seed-mean final
    validation loss vs parameters. One colour per study."""
    fig, (left, right) = style.new_figure(width=11.0, height=4.6, ncols=2)
    colors = sns.color_palette("colorblind", len(studies))
    handles = []
    for i, (study, color) in enumerate(zip(studies, colors)):
        marker = MARKERS[i % len(MARKERS)]
        if study.curves is not None and "flops" in study.curves:
            means = seed_curves(study.curves, study.runs, "flops")
            for _, df in means.groupby("label", sort=False):
                df = df[df["flops"] > 0].sort_values("step")
                left.plot(df["flops"], df["val_loss"], color=color, lw=1.0, alpha=0.7)
        ok = study.ok.dropna(subset=["final_val_loss", "n_params"])
        pts = common.seed_mean(ok.assign(loss=ok["final_val_loss"]), "loss")
        right.errorbar(
            pts["n_params"],
            pts["loss"],
            yerr=pts["loss_std"].fillna(0.0),
            fmt=marker,
            color=color,
            mec="black",
            mew=0.5,
            ms=6,
            capsize=2,
            ls="none",
        )
        seeds = int(pts["n_seeds"].max()) if len(pts) else 0
        handles.append(
            Line2D(
                [],
                [],
                color=color,
                marker=marker,
                mec="black",
                label=f"{study.name} ({len(ok)} runs, up to {seeds} seeds)",
            )
        )
    for ax, xlabel, ylabel in (
        (left, common.FLOPS, common.VAL_LOSS),
        (right, common.PARAMS, common.FINAL_VAL_LOSS),
    ):
        ax.set_xscale("log")
        style.log_ticks(ax, "x")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    left.set_title("Validation loss vs compute (seed means)")
    right.set_title("Final validation loss vs parameters (±1 std over seeds)")
    fig.suptitle("Studies compared: " + " vs ".join(s.name for s in studies))
    style.legend_below(fig, handles)
    return fig


def main(argv: list[str] | None = None) -> int:
    """`python -m plots.compare results/a results/b [...] [--out DIR]`."""
    parser = common.Parser(prog="python -m plots.compare", description=__doc__)
    parser.add_argument("studies", nargs="+", help="two or more results/<study> directories")
    parser.add_argument("--out", help="output folder (default: results/compare)")
    args = parser.parse_args(argv)
    if len(args.studies) < 2:
        parser.error("give at least two results directories")

    def body() -> int:
        studies = [common.load_study(p) for p in args.studies]
        names = [s.name for s in studies]
        if len(set(names)) < len(names):
            raise common.ResultsError(f"two studies share a name: {', '.join(names)}")
        for s in studies:
            if common.missing_columns(s.runs, ["final_val_loss", "n_params"]):
                raise common.ResultsError(f"{s.path / 'runs.csv'}: no final_val_loss/n_params")
        out = Path(args.out) if args.out else Path(args.studies[0]).parent / "compare"
        check_dir(out, "--out" if args.out else "the compare folder")
        with np.errstate(all="ignore"):
            path = style.save(plot_compare(studies), out, "compare_" + "_vs_".join(names))
        print(path)
        return 0

    return common.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
