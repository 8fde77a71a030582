"""Figures and a markdown table from the pytest-benchmark JSON of bench/ (attention, model step).

    python -m plots.bench results/bench/attention.json [--fit-min 256]

writes <json dir>/figures/<stem>_{time,memory,ratio,width}.png and <json dir>/tables/<stem>.md.
Reads only the JSON (never torch): each benchmark's extra_info says what was measured.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plots.paths import UnwritableOutput, check_dir, check_file

PROG = "python -m plots.bench"
IMPLS = ("manual", "sdpa")
PASSES = ("fwd", "fwd+bwd")
COLORS = {"manual": "#1f77b4", "sdpa": "#d62728"}
STYLES = {"fwd": dict(ls="-", marker="o"), "fwd+bwd": dict(ls="--", marker="s")}
MIB = 2**20


class BenchInputError(Exception):
    """The JSON cannot be read or holds no bench/ results."""


def load(path: Path, stat: str = "median") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (extra_info + name + time_s = stats[stat]) of every usable benchmark; the JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchInputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise BenchInputError(f"{path} is not pytest-benchmark JSON (no 'benchmarks' list)")
    rows = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        median = (bench.get("stats") or {}).get(stat) if isinstance(bench, dict) else None
        if not isinstance(info, dict) or "group" not in info:
            continue
        if not isinstance(median, (int, float)) or not median > 0:
            continue
        rows.append(
            {
                **info,
                "name": bench.get("name", ""),
                "time_s": float(median),
                "stat": stat,
                "rounds": (bench.get("stats") or {}).get("rounds"),
            }
        )
    if not rows:
        raise BenchInputError(f"{path} holds no bench/ results (no benchmark has extra_info.group)")
    return rows, data


def fit_exponent(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of y = a * x^k on log-log axes; returns (k, a). Needs 2+ points > 0."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (xs > 0) & (ys > 0) & np.isfinite(xs) & np.isfinite(ys)
    if keep.sum() < 2 or len(np.unique(xs[keep])) < 2:
        raise ValueError("fit_exponent needs at least two distinct positive points")
    k, log_a = np.polyfit(np.log(xs[keep]), np.log(ys[keep]), 1)
    return float(k), float(math.exp(log_a))


def default_fit_min(block_sizes: Sequence[int]) -> int:
    """The lower edge of the fit: the upper half of the block sizes (the large-T regime)."""
    sizes = sorted(set(block_sizes))
    return sizes[len(sizes) // 2] if len(sizes) > 2 else sizes[0]


def series(rows: list[dict], value: str) -> dict[tuple, dict[int, float]]:
    """{(setting, impl, pass): {T: value}} for the block_size rows; setting = (B, C, nh)."""
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r["group"] == "block_size" and r.get(value) is not None:
            key = ((r["batch_size"], r["n_embd"], r["n_head"]), r["attn_impl"], r["pass"])
            out[key][int(r["block_size"])] = float(r[value])
    return dict(sorted(out.items()))


def setting_text(setting: tuple) -> str:
    return f"B={setting[0]}, n_embd={setting[1]}, n_head={setting[2]}"


def machine_text(rows: list[dict]) -> str:
    r = rows[0]
    threads = r.get("threads")
    plural = "" if threads == 1 else "s"
    return (
        f"{r.get('device', '?')}: {r.get('hardware', '?')}, {threads} thread{plural}, "
        f"{r.get('dtype', 'float32')}, torch {r.get('torch', '?')}"
    )


def exponents(rows: list[dict], fit_min: int | None) -> dict[tuple, tuple[float, float, int]]:
    """{series key: (k on T >= fit_min, k on all T, fit_min)} of the time per call."""
    out = {}
    for key, pts in series(rows, "time_s").items():
        lo = fit_min if fit_min is not None else default_fit_min(list(pts))
        big = {t: v for t, v in pts.items() if t >= lo}
        k_big = fit_exponent(list(big), list(big.values()))[0] if len(big) >= 2 else math.nan
        k_all = fit_exponent(list(pts), list(pts.values()))[0] if len(pts) >= 2 else math.nan
        out[key] = (k_big, k_all, lo)
    return out


def _log2_axis(ax, block_sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(block_sizes))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("block size T (tokens per sequence)")
    ax.grid(True, which="major", alpha=0.3)


def _subtitle(data: dict[tuple, dict[int, float]], rows: list[dict]) -> str:
    """A figure's second title line: the (B, C, nh) setting when there is one, the machine."""
    settings = sorted({k[0] for k in data})
    sub = setting_text(settings[0]) + ", " if len(settings) == 1 else ""
    return sub + machine_text(rows)


def _save(fig, path: Path, plt) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(key: tuple, many: bool) -> str:
    setting, impl, pss = key
    return f"{impl}, {pss}" + (f" ({setting_text(setting)})" if many else "")


def plot_lines(rows, value: str, scale: float, ylabel: str, title: str, fits, path, plt) -> None:
    """Log-log lines of one value vs T per impl and pass, fitted exponent in the legend."""
    data = series(rows, value)
    many = len({k[0] for k in data}) > 1
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for key, pts in data.items():
        ts = sorted(pts)
        label = _label(key, many)
        if key in fits and math.isfinite(fits[key][0]):
            label += f": $\\propto T^{{{fits[key][0]:.2f}}}$ (T ≥ {fits[key][2]})"
        ax.plot(
            ts,
            [pts[t] * scale for t in ts],
            color=COLORS.get(key[1], "gray"),
            label=label,
            ms=5,
            lw=1.6,
            **STYLES.get(key[2], {}),
        )
    if value == "time_s" and data:  # faint slope guides through the largest manual point
        key = max(data, key=lambda k: (k[1] == "manual", max(data[k])))
        t_max = max(data[key])
        ts = sorted({t for pts in data.values() for t in pts})
        for k, ls in ((2, (0, (1, 2))), (1, (0, (4, 3)))):
            ax.plot(
                ts,
                [data[key][t_max] * scale * (t / t_max) ** k for t in ts],
                color="gray",
                lw=0.8,
                ls=ls,
                alpha=0.7,
                label=f"guide $\\propto T^{k}$",
            )
    if value == "peak_mem_bytes":
        score = {
            int(r["block_size"]): r["score_tensor_bytes"] * scale
            for r in rows
            if r["group"] == "block_size" and "score_tensor_bytes" in r
        }
        ts = sorted(score)
        ax.plot(
            ts,
            [score[t] for t in ts],
            color="black",
            ls=":",
            lw=1.2,
            label="one (B, n_head, T, T) score tensor",
        )
    ax.set_yscale("log")
    _log2_axis(ax, [t for pts in data.values() for t in pts])
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{_subtitle(data, rows)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path, plt)


def plot_ratio(rows, path, plt) -> None:
    """manual / sdpa time per call vs T, one line per pass: > 1 means sdpa is faster."""
    data = series(rows, "time_s")
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ts_all = []
    for (setting, impl, pss), pts in data.items():
        other = data.get((setting, "sdpa", pss))
        if impl != "manual" or other is None:
            continue
        ts = sorted(set(pts) & set(other))
        ts_all += ts
        ax.plot(
            ts,
            [pts[t] / other[t] for t in ts],
            color="black",
            label=pss,
            ms=5,
            **STYLES.get(pss, {}),
        )
    ax.axhline(1.0, color="gray", lw=1, ls=":")
    _log2_axis(ax, ts_all or [1])
    ax.set_ylabel("manual time / sdpa time (×, >1: sdpa faster)")
    ax.set_title(
        f"Speed-up of the fused kernel (sdpa) over the manual attention\n{_subtitle(data, rows)}",
        fontsize=10,
    )
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=9, title="pass")
    _save(fig, path, plt)


def plot_width(rows, path, plt) -> bool:
    """Bars of ms per call per n_embd/n_head at fixed tokens per batch; False if no such rows."""
    width = [r for r in rows if r["group"] == "width"]
    if not width:
        return False
    shapes = sorted({(r["n_embd"], r["n_head"]) for r in width})
    combos = [(i, p) for p in PASSES for i in IMPLS]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    step = 0.8 / len(combos)
    for j, (impl, pss) in enumerate(combos):
        val = {
            (r["n_embd"], r["n_head"]): r["time_s"] * 1e3
            for r in width
            if r["attn_impl"] == impl and r["pass"] == pss
        }
        xs = [i + (j - (len(combos) - 1) / 2) * step for i in range(len(shapes))]
        ax.bar(
            xs,
            [val.get(s, 0) for s in shapes],
            width=step,
            color=COLORS[impl],
            alpha=1.0 if pss == "fwd" else 0.5,
            label=f"{impl}, {pss}",
        )
    ax.set_xticks(range(len(shapes)), [f"C={c}\nnh={h}" for c, h in shapes])
    ax.set_yscale("log")
    ax.set_xlabel("attention width n_embd (C) and heads n_head (nh)")
    ax.set_ylabel(f"time per call (ms, {rows[0]['stat']})")
    r = width[0]
    ax.set_title(
        f"Attention time vs width at T={r['block_size']}, {r['tokens']} tokens per batch"
        f"\n{machine_text(rows)}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path, plt)
    return True


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}"


def _scaled(data: dict[tuple, dict[int, float]], key: tuple, T: int, scale: float) -> float | None:
    """data[key][T] * scale, or None when that case was not measured."""
    v = data.get(key, {}).get(T)
    return None if v is None else v * scale


def table(rows: list[dict], data: dict, fits: dict, source: str) -> str:
    """Markdown: time, ratio, exponents and memory vs T; width sweep; model step."""
    out = [
        f"# Benchmarks: {source}",
        "",
        f"{machine_text(rows)}; run {data.get('datetime', '?')}. Times: ms per call, the "
        f"{rows[0]['stat']} of each case's rounds.",
        "",
    ]
    times = series(rows, "time_s")
    for setting in sorted({k[0] for k in times}):
        out += _block_size_section(rows, times, fits, setting)
    out += _width_section([r for r in rows if r["group"] == "width"])
    out += _model_step_section([r for r in rows if r["group"] == "model_step"])
    return "\n".join(out)


def _block_size_section(rows: list[dict], times: dict, fits: dict, setting: tuple) -> list[str]:
    """Time, manual/sdpa ratio, fitted exponents and peak memory against T, for one setting."""
    mem = series(rows, "peak_mem_bytes")
    score = {
        ((r["batch_size"], r["n_embd"], r["n_head"]), int(r["block_size"])): r.get(
            "score_tensor_bytes"
        )
        for r in rows
        if r["group"] == "block_size"
    }
    ts = sorted({T for k, pts in times.items() if k[0] == setting for T in pts})
    out = [
        f"## Time per call vs block size ({setting_text(setting)})",
        "",
        "| T | fwd manual | fwd sdpa | fwd manual/sdpa | fwd+bwd manual | fwd+bwd sdpa "
        "| fwd+bwd manual/sdpa |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for T in ts:
        cells = []
        for pss in PASSES:
            m = _scaled(times, (setting, "manual", pss), T, 1e3)
            s = _scaled(times, (setting, "sdpa", pss), T, 1e3)
            cells += [_fmt(m), _fmt(s), _fmt(m / s if m and s else None) + "×"]
        out.append(f"| {T} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Fitted exponent k of time ∝ T^k (least squares on log-log):",
        "",
        "| impl | pass | k (large T) | fit range | k (all T) |",
        "|---|---|---:|---|---:|",
    ]
    for (st, impl, pss), (k_big, k_all, lo) in fits.items():
        if st == setting:
            out.append(f"| {impl} | {pss} | {k_big:.2f} | T ≥ {lo} | {k_all:.2f} |")
    out += [
        "",
        "Peak memory per call (MiB):",
        "",
        "| T | (B, nh, T, T) score tensor | fwd manual | fwd sdpa | fwd+bwd manual "
        "| fwd+bwd sdpa |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for T in ts:
        sc = score.get((setting, T))
        cells = [_fmt(None if sc is None else sc / MIB)]
        for pss in PASSES:
            for impl in IMPLS:
                cells.append(_fmt(_scaled(mem, (setting, impl, pss), T, 1 / MIB)))
        out.append(f"| {T} | " + " | ".join(cells) + " |")
    methods = sorted({r.get("peak_mem_method", "") for r in rows if r["group"] == "block_size"})
    return out + [""] + [f"Memory measured with {m_}." for m_ in methods if m_] + [""]


def _width_section(width: list[dict]) -> list[str]:
    """The n_embd/n_head sweep at a fixed number of tokens per batch."""
    if not width:
        return []
    r0 = width[0]
    out = [
        f"## Width at fixed tokens per batch (T={r0['block_size']}, B×T={r0['tokens']})",
        "",
        "| n_embd | n_head | pass | manual (ms) | sdpa (ms) | manual/sdpa "
        "| manual GFLOP/s | sdpa GFLOP/s |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    by = {(r["n_embd"], r["n_head"], r["pass"], r["attn_impl"]): r for r in width}
    for c, h in sorted({(r["n_embd"], r["n_head"]) for r in width}):
        for pss in PASSES:
            m, s = by.get((c, h, pss, "manual")), by.get((c, h, pss, "sdpa"))
            if m is None or s is None:
                continue
            ratio = m["time_s"] / s["time_s"]
            out.append(
                f"| {c} | {h} | {pss} | {_fmt(m['time_s'] * 1e3)} | "
                f"{_fmt(s['time_s'] * 1e3)} | {_fmt(ratio)}× | "
                f"{_fmt(m['flops'] / m['time_s'] / 1e9)} | "
                f"{_fmt(s['flops'] / s['time_s'] / 1e9)} |"
            )
    return out + ["", "GFLOP/s count the dense attention matmuls (causal mask not halved).", ""]


def _model_step_section(steps: list[dict]) -> list[str]:
    """One training step of the GPT per shape, attention path and dtype."""
    if not steps:
        return []
    out = [
        "## Training step of the GPT (forward, backward, clip, AdamW)",
        "",
        "| n_layer | n_head | n_embd | T | B | impl | dtype | ms per step | tokens/s "
        "| GFLOP/s | peak MiB |",
        "|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    # results written before the dtype axis existed were all float32
    for r in sorted(
        steps,
        key=lambda r: (r["n_embd"], r["block_size"], r["attn_impl"], r.get("dtype", "float32")),
    ):
        tok_s = r["tokens"] / r["time_s"]
        peak = r.get("peak_mem_bytes")
        out.append(
            f"| {r['n_layer']} | {r['n_head']} | {r['n_embd']} | {r['block_size']} | "
            f"{r['batch_size']} | {r['attn_impl']} | {r.get('dtype', 'float32')} | "
            f"{_fmt(r['time_s'] * 1e3)} | "
            f"{tok_s:.0f} | {_fmt(tok_s * r['flops_per_token'] / 1e9)} | "
            f"{_fmt(None if peak is None else peak / MIB)} |"
        )
    return out + [""]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit 2 (no usage block)
        print(f"{PROG}: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON written by bench/")
    parser.add_argument(
        "--fit-min",
        type=int,
        default=None,
        help="fit the exponent on T >= this (default: the upper half of T)",
    )
    parser.add_argument(
        "--stat",
        default="median",
        choices=("median", "min", "mean"),
        help="which statistic of each case's rounds to plot (default: median)",
    )
    args = parser.parse_args(argv)
    base = args.json.parent
    try:
        rows, data = load(args.json, args.stat)
        check_dir(base / "figures", "the figures folder")
        check_dir(base / "tables", "the tables folder")
        check_file(base / "tables" / f"{args.json.stem}.md", "the table")
    except (BenchInputError, UnwritableOutput) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = args.json.stem
    figures, tables = base / "figures", base / "tables"
    figures.mkdir(parents=True, exist_ok=True)
    tables.mkdir(parents=True, exist_ok=True)
    fits = exponents(rows, args.fit_min)
    written = []
    if any(r["group"] == "block_size" for r in rows):
        plot_lines(
            rows,
            "time_s",
            1e3,
            f"time per call (ms, {args.stat})",
            "CausalSelfAttention: time per call vs block size",
            fits,
            figures / f"{stem}_time.png",
            plt,
        )
        mem_rows = [r for r in rows if r.get("peak_mem_bytes")]
        if mem_rows:
            mem_fits = exponents(
                [{**r, "time_s": r["peak_mem_bytes"]} for r in mem_rows], args.fit_min
            )
            plot_lines(
                mem_rows,
                "peak_mem_bytes",
                1 / MIB,
                "peak memory of one call (MiB)",
                "CausalSelfAttention: peak memory vs block size",
                mem_fits,
                figures / f"{stem}_memory.png",
                plt,
            )
            written.append(figures / f"{stem}_memory.png")
        plot_ratio(rows, figures / f"{stem}_ratio.png", plt)
        written += [figures / f"{stem}_time.png", figures / f"{stem}_ratio.png"]
    if plot_width(rows, figures / f"{stem}_width.png", plt):
        written.append(figures / f"{stem}_width.png")
    md = tables / f"{stem}.md"
    md.write_text(table(rows, data, fits, args.json.name), encoding="utf-8")
    for path in sorted(written) + [md]:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
