"""Run a claim's checks level by level (resuming finished ones) and give it its verdict."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from chargpt.claims import full as full_mod
from chargpt.claims import probe as probe_mod
from chargpt.claims.arithmetic import arithmetic, resolved, run_cost
from chargpt.claims.registry import Claim
from chargpt.claims.store import LEVELS, ClaimsStore
from chargpt.claims.verdict import fmt_s, verdict
from chargpt.config import DataConfig, RunConfig
from chargpt.measure import git_commit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """How far to check and where: the CLI's flags."""

    level: str = "full"
    device: str = "cpu"  # a resolved device type
    max_seconds: float = 600.0
    memory_mb: float | None = None
    fresh: bool = False
    threads: int | None = None  # torch threads of probes and full runs (None: the recipe's)

    def suffix(self) -> str:
        """What a probe or full run's key adds to the claim's: the device and threads."""
        return self.device if self.threads is None else f"{self.device}|threads={self.threads}"

    def with_threads(self, run: RunConfig) -> RunConfig:
        if self.threads is None:
            return run
        return dataclasses.replace(run, train=dataclasses.replace(run.train, threads=self.threads))


@functools.cache
def corpus_vocab(corpus: str) -> int:
    """The number of distinct characters of a corpus chargpt has."""
    from chargpt.data import load_splits

    return load_splits(DataConfig(corpus=corpus)).tokenizer.vocab_size


def claim_row(claim: Claim) -> dict[str, Any]:
    """The claim's own columns of claims.csv."""
    hw, c = claim.hardware, claim.claimed
    data = f"corpus {claim.corpus}" if claim.corpus else f"random (vocab {claim.random_vocab})"
    return {
        "claim_id": claim.id,
        "hardware_kind": hw.kind,
        "hardware_model": hw.model,
        "device_count": hw.count,
        "claimed_peak_flops": hw.peak_flops,
        "precision": hw.precision,
        "dataset": claim.dataset,
        "data": data,
        "count_eval": claim.count_eval,
        "claimed_time_s": c.time_s,
        "claimed_loss": c.loss,
        "loss_kind": c.loss_kind,
        "loss_tol": c.loss_tol,
    }


def _stamp(level: str, key: str) -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "level": level,
        "check_key": key,
        "cpu_count": os.cpu_count(),
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "load_avg_1m": load,
    }


def vocab_of(claim: Claim) -> int:
    if claim.random_vocab is not None:
        return claim.random_vocab
    assert claim.corpus is not None
    return corpus_vocab(claim.corpus)


# Probes of the same step (model, dtype, compile, batch) within one invocation are one probe:
# nanoGPT's GPT-2 claims, llm.c's and modded-nanogpt's first record share their shapes.
_PROBES: dict[str, dict[str, Any]] = {}


def _probe_key(run: RunConfig, opts: Options) -> str:
    t = run.train
    compiled = t.compile and opts.device == "cuda"  # the probe compiles on CUDA only
    step = (run.model.to_dict(), t.batch_size, t.dtype, compiled, t.threads, opts.device)
    step += (opts.memory_mb,)
    return json.dumps(step, sort_keys=True)


def run_probe(claim: Claim, opts: Options, costs: list[float]) -> dict[str, Any]:
    """Probe every run of the claim (one for a recipe), each in a fresh process."""
    vocab = vocab_of(claim)
    probes = []
    for run in claim.runs:
        run = opts.with_threads(resolved(run, vocab))
        key = _probe_key(run, opts)
        if key not in _PROBES:
            _PROBES[key] = probe_mod.isolated(
                probe_mod.probe_run, run, opts.device, opts.memory_mb, opts.max_seconds
            )
        p = _PROBES[key]
        if p["status"] != "ok":
            return p
        probes.append(p)
    first = dict(probes[0])
    if len(probes) > 1:  # a study: per-step figures differ per run; keep the sums and maxima
        first |= {k: None for k in ("micro_batch", "step_s", "tokens_per_s", "flops_per_s")}
        first["probe_steps"] = sum(p["probe_steps"] for p in probes)
        first["peak_rss_mb"] = max(p["peak_rss_mb"] for p in probes)
    hw = claim.hardware
    return first | probe_mod.predictions(probes, costs, hw.peak_flops, hw.count)


def check_claim(claim: Claim, store: ClaimsStore, opts: Options) -> list[dict[str, Any]]:
    """The claim's records (arithmetic, then probe and full as the level asks), verdict added."""
    base = claim_row(claim)
    depth = LEVELS.index(opts.level)
    vocab = vocab_of(claim)
    key = claim.key()
    arith = {"status": "ok", **arithmetic(claim, vocab), **_stamp("arithmetic", key)}
    store.save(claim.id, "arithmetic", arith)
    records: dict[str, dict[str, Any] | None] = {"arithmetic": arith, "probe": None, "full": None}
    costs = [
        (lambda c: c["train_flops"] + c["eval_flops"])(
            run_cost(resolved(r, vocab), claim.accum, claim.count_eval)
        )
        for r in claim.runs
    ]
    if depth >= 1:
        pkey = f"{key}|{opts.suffix()}"
        probe = None if opts.fresh else store.done(claim.id, "probe", pkey)
        if probe is None:
            log.info("claim %s: probing on %s", claim.id, opts.device)
            try:
                probe = run_probe(claim, opts, costs)
            except Exception as exc:  # a failed probe is that check's status; others go on
                probe = {"status": "error", "reason": " ".join(str(exc).split())[:300]}
            probe |= _stamp("probe", pkey)
            store.save(claim.id, "probe", probe)
        records["probe"] = probe
    if depth >= 2:
        records["full"] = _full(claim, store, opts, records["probe"], key)
    probe_rec, full_rec = records["probe"], records["full"]
    v = verdict(base, arith, probe_rec, full_rec, opts.device)
    return [base | rec | v for rec in records.values() if rec is not None]


def full_skip(claim: Claim, opts: Options, probe: dict[str, Any] | None) -> str:
    """Why the full run is not started, given the claim's probe record ('' when it is)."""
    why = full_mod.full_blocker(claim.hardware.kind, opts.device, claim.corpus)
    if not why and (probe is None or probe.get("status") != "ok"):
        why = "no probe to predict its time"
    if not why and probe is not None and probe["predicted_here_s"] > opts.max_seconds:
        why = f"predicted {fmt_s(probe['predicted_here_s'])} here, over --max-seconds"
    return why


def plan(claim: Claim, store: ClaimsStore, opts: Options) -> list[str]:
    """What check_claim would do for the claim at each level, doing none of it (--dry-run):
    the same records it would find done and the same reasons it would skip for."""
    key, depth = claim.key(), LEVELS.index(opts.level)
    steps = ["arithmetic"]
    probe = None
    if depth >= 1:
        probe = None if opts.fresh else store.done(claim.id, "probe", f"{key}|{opts.suffix()}")
        steps.append("probe: done" if probe else f"probe: to run on {opts.device}")
    if depth >= 2:
        done = None if opts.fresh else store.done(claim.id, "full", f"{key}|{opts.suffix()}")
        static = full_mod.full_blocker(claim.hardware.kind, opts.device, claim.corpus)
        if done is not None:
            steps.append("full: done")
        elif static or probe is not None:
            why = full_skip(claim, opts, probe)
            if why:
                steps.append(f"full: skipped ({why})")
            else:
                assert probe is not None  # full_skip asks for one
                steps.append(
                    f"full: to run (the probe predicts {fmt_s(probe['predicted_here_s'])})"
                )
        else:  # the probe still to run decides
            steps.append(f"full: to run if the probe predicts at most {opts.max_seconds:g} s")
    return steps


def _full(
    claim: Claim, store: ClaimsStore, opts: Options, probe: dict[str, Any] | None, key: str
) -> dict[str, Any]:
    fkey = f"{key}|{opts.suffix()}"
    done = None if opts.fresh else store.done(claim.id, "full", fkey)
    if done is not None:
        return done
    why = full_skip(claim, opts, probe)
    if why:
        record = {"status": "skipped", "reason": why}
    else:
        log.info("claim %s: full run on %s", claim.id, opts.device)
        out = store.root / "runs" / claim.id
        try:
            if claim.study is not None:  # word for word, as its claim was made (no --threads)
                record = full_mod.full_study(claim.study, str(out))
            else:
                run = opts.with_threads(resolved(claim.runs[0], vocab_of(claim)))
                record = probe_mod.isolated(full_mod.full_run, run, opts.device, str(out))
        except Exception as exc:
            record = {"status": "error", "reason": " ".join(str(exc).split())[:300]}
    record |= _stamp("full", fkey)
    store.save(claim.id, "full", record)
    return record


def collect(claims: tuple[Claim, ...], store: ClaimsStore, opts: Options) -> list[dict[str, Any]]:
    """claims.csv's rows from the records on disk (claims never checked are left out)."""
    rows = []
    for claim in claims:
        recs = {lvl: store.load(claim.id, lvl) for lvl in LEVELS}
        # A record of an earlier version of the claim is not this one's. The latest check of
        # each level is shown, whichever device and threads it ran with (columns say which).
        recs = {
            lvl: r
            for lvl, r in recs.items()
            if r is not None and str(r.get("check_key", "")).startswith(claim.key())
        }
        arith = recs.get("arithmetic")
        if arith is None:
            continue
        base = claim_row(claim)
        v = verdict(base, arith, recs.get("probe"), recs.get("full"), opts.device)
        rows += [base | rec | v for rec in recs.values()]
    return rows
