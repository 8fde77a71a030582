"""`python -m chargpt.claims list|check|report`: check published hardware timing claims."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from chargpt.cli import ArgumentParser

DEFAULT_CLAIMS = "studies/claims.yaml"
DEFAULT_OUT = "results/claims"


def _fmt_s(v: Any) -> str:
    if v is None or v == "":
        return "-"
    v = float(v)
    if v >= 86400:
        return f"{v / 86400:.1f} d"
    if v >= 3600:
        return f"{v / 3600:.2f} h"
    if v >= 60:
        return f"{v / 60:.1f} min"
    return f"{v:.3g} s"


def _pct(v: Any) -> str:
    return "-" if v is None or v == "" else f"{float(v):.1%}"


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per claim: the figures of its deepest check and its verdict."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(row["claim_id"], {"claim_id": row["claim_id"]})
        for key in ("hardware_model", "device_count", "claimed_time_s", "verdict"):
            entry[key] = row.get(key)
        entry["verdict_reason"] = row.get("verdict_reason")
        if row["level"] == "arithmetic":
            entry["total_flops"] = row.get("total_flops")
            entry["implied_mfu"] = row.get("implied_mfu")
            entry["mfu_class"] = row.get("mfu_class")
        elif row["level"] == "probe" and row.get("status") == "ok":
            entry["mfu_here"] = row.get("mfu")
            entry["predicted_here_s"] = row.get("predicted_here_s")
            entry["predicted_claimed_s"] = row.get("predicted_claimed_s")
        elif row["level"] == "full" and row.get("status") == "ok":
            entry["measured_here_s"] = (
                row.get("wall_s") if row.get("count_eval") else row.get("train_s")
            )
    return list(out.values())


def table(entries: list[dict[str, Any]]) -> str:
    """The markdown table the CLI prints and the README quotes."""
    head = (
        "| claim | claimed hardware | claimed | FLOPs | implied MFU | MFU here | here "
        "(predicted / measured) | claimed hw at MFU here (model) | verdict |"
    )
    lines = [head, "|" + " --- |" * 9]
    for e in entries:
        here = _fmt_s(e.get("predicted_here_s"))
        if e.get("measured_here_s") is not None:
            here += f" / {_fmt_s(e['measured_here_s'])}"
        mfu = _pct(e.get("implied_mfu"))
        if e.get("mfu_class") not in (None, "plausible", "unknown"):
            mfu += f" ({e['mfu_class']})"
        flops = e.get("total_flops")
        lines.append(
            f"| {e['claim_id']} | {e['device_count']}x {e['hardware_model']} | "
            f"{_fmt_s(e['claimed_time_s'])} | {'-' if flops is None else f'{float(flops):.3g}'}"
            f" | {mfu} | {_pct(e.get('mfu_here'))} | {here} | "
            f"{_fmt_s(e.get('predicted_claimed_s'))} | **{e['verdict']}**: "
            f"{e['verdict_reason']} |"
        )
    return "\n".join(lines)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m chargpt.claims", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "check", "report"):
        p = sub.add_parser(name)
        p.add_argument("--claims", default=DEFAULT_CLAIMS, help="the registry file")
        p.add_argument("--out", default=DEFAULT_OUT, help="the results folder")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("--only", nargs="+", metavar="ID", help="these claims only")
        if name == "check":
            p.add_argument("--level", choices=["arithmetic", "probe", "full"], default="full")
            p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
            p.add_argument("--max-seconds", type=float, default=600.0)
            p.add_argument("--memory-mb", type=float, help="a probe's memory budget, MiB")
            p.add_argument("--threads", type=int, help="torch threads of probes and full runs")
            p.add_argument("--dry-run", action="store_true", help="say what would run")
            p.add_argument("--fresh", action="store_true", help="redo finished checks")
    return parser


def _select(claims: tuple, only: list[str] | None) -> tuple:
    from chargpt.claims.registry import ClaimsError

    if not only:
        return claims
    ids = [c.id for c in claims]
    for cid in only:
        if cid not in ids:
            raise ClaimsError(f"--only: no claim {cid!r} in the registry")
    return tuple(c for c in claims if c.id in only)


def _usage(message: str) -> int:
    print(f"python -m chargpt.claims: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from chargpt.claims.registry import ClaimsError, load_claims

    try:
        every = load_claims(args.claims)
        claims = _select(every, args.only)
    except ClaimsError as exc:
        return _usage(str(exc))
    if args.command == "list":
        return _list(claims, args.json)
    if args.command == "report":
        out = Path(args.out)
        if not (out / "claims.csv").is_file():
            return _usage(f"{out}: no claims.csv; run python -m chargpt.claims check first")
        return subprocess.call([sys.executable, "-m", "plots.report", str(out)])
    if not args.max_seconds > 0:
        return _usage(f"--max-seconds must be positive, got {args.max_seconds}")
    if args.threads is not None and args.threads < 1:
        return _usage(f"--threads must be a positive integer, got {args.threads}")
    if args.memory_mb is not None and not args.memory_mb > 0:
        return _usage(f"--memory-mb must be positive, got {args.memory_mb}")
    from chargpt import measure

    try:
        device = measure.resolve_device(args.device).type
    except ValueError as exc:
        return _usage(f"--device: {exc}")
    return _check(claims, every, args, device)


def _list(claims: tuple, as_json: bool) -> int:
    rows = [
        {
            "id": c.id,
            "hardware": f"{c.hardware.count}x {c.hardware.model}",
            "claimed_time_s": c.claimed.time_s,
            "loss": c.claimed.loss,
            "data": c.dataset,
            "source": c.source,
            "quote": c.quote,
        }
        for c in claims
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        loss = "" if r["loss"] is None else f", loss {r['loss']}"
        print(f"{r['id']:<34} {r['hardware']:<32} {_fmt_s(r['claimed_time_s'])}{loss}")
    return 0


def _check(claims: tuple, every: tuple, args: Any, device: str) -> int:
    """Check the selected claims; claims.csv holds every claim of the registry checked so far."""
    from chargpt.claims.check import Options, check_claim, collect, plan, vocab_of
    from chargpt.claims.store import ClaimsStore
    from chargpt.corpus import CorpusError

    store = ClaimsStore(Path(args.out))
    opts = Options(args.level, device, args.max_seconds, args.memory_mb, args.fresh, args.threads)
    if args.dry_run:
        for c in claims:
            print(f"{c.id}: " + "; ".join(plan(c, store, opts)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for c in claims:  # every corpus read (tiny shakespeare found) before anything is written
        try:
            vocab_of(c)
        except CorpusError as exc:
            return _usage(f"{c.where}.data.corpus: {exc}")
    _write_env(store, device)
    failed = False
    for claim in claims:
        rows = check_claim(claim, store, opts)
        failed |= any(r.get("status") == "error" for r in rows)
        store.write_csv(collect(every, store, opts))
    entries = summary(collect(claims, store, opts))
    print(json.dumps(entries, indent=2, default=str) if args.json else table(entries))
    return 1 if failed else 0


def _write_env(store: Any, device: str) -> None:
    import os

    import torch

    from chargpt import measure

    dev = torch.device(device)
    env = measure.fingerprint(dev)
    env["peak_flops"] = {
        str(dt).removeprefix("torch."): measure.measure_peak_flops(dev, dt)
        for dt in (torch.float32, torch.bfloat16)
    }
    env["load_avg_1m"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    store.write_env(env)
