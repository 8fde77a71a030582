"""The fixed verdict rule: reproduced, consistent, contradicted, not checkable here, or not
checked (yet)."""

from __future__ import annotations

from typing import Any

from chargpt.claims.arithmetic import MFU_IMPOSSIBLE

TIME_FACTOR = 3.0  # a time within 3x of the (hardware-adjusted) claim agrees with it

REPRODUCED, CONSISTENT = "reproduced", "consistent"
CONTRADICTED, NOT_CHECKABLE = "contradicted", "not checkable here"
NOT_CHECKED = "not checked"  # checkable on this machine's device kind, but no probe says yet


def fmt_s(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:.3g} s"


def to_claimed_hw(here_s: float, peak_here: float, claimed_peak: float | None, count: int) -> float:
    """A time here rescaled to the claimed hardware by the ratio of peaks (same MFU); the time
    itself when the claimed hardware has no datasheet peak."""
    return here_s if claimed_peak is None else here_s * peak_here / (count * claimed_peak)


def _load_note(record: dict[str, Any] | None) -> str:
    """A warning when the check ran beside other work: its times read slow. The load average
    counts the check's own threads too (up to one per core), so only more than cores + 1
    runnable threads means something else was running."""
    if not record or record.get("load_avg_1m") in (None, "") or not record.get("cpu_count"):
        return ""
    load, cores = float(record["load_avg_1m"]), int(record["cpu_count"])
    return f" [load average {load:.1f} on {cores} cores: slow]" if load > cores + 1 else ""


def verdict(
    claim: dict[str, Any],
    arith: dict[str, Any],
    probe: dict[str, Any] | None,
    full: dict[str, Any] | None,
    device_type: str,
) -> dict[str, Any]:
    """Apply the rule, in this order, to a claim's check records.

    1. Its implied MFU on the claimed hardware exceeds 100%: contradicted.
    2. A full run here: its time, rescaled to the claimed hardware by the ratio of peaks,
       within TIME_FACTOR of the claim and the loss within tolerance: reproduced; the time
       agrees but the loss cannot be checked: consistent; otherwise contradicted.
    3. The claim needs another device kind than this machine's: not checkable here (the
       probe's prediction for the claimed hardware is shown).
    4. A probe here (same kind): its predicted time, rescaled the same way, within
       TIME_FACTOR: consistent; otherwise contradicted.
    5. Same kind but no probe (--level arithmetic, or the probe was skipped or failed): not
       checked, with why. "Not checkable here" is kept for rule 3: this machine could check
       such a claim, it just has not.
    """
    out = _verdict(claim, arith, probe, full, device_type)
    used = full if full is not None and full.get("status") == "ok" else probe
    if out["compare_kind"]:
        out["verdict_reason"] += _load_note(used)
    return out


def _verdict(
    claim: dict[str, Any],
    arith: dict[str, Any],
    probe: dict[str, Any] | None,
    full: dict[str, Any] | None,
    device_type: str,
) -> dict[str, Any]:
    claimed_s = float(claim["claimed_time_s"])
    mfu = arith.get("implied_mfu")
    out: dict[str, Any] = {"compare_s": None, "compare_kind": "", "time_ratio": None}
    if mfu is not None and mfu > MFU_IMPOSSIBLE:
        return out | {
            "verdict": CONTRADICTED,
            "verdict_reason": f"implies {mfu:.0%} MFU on {claim['hardware_model']}: impossible",
        }
    peak_c, count = claim["claimed_peak_flops"], int(claim["device_count"])
    if full is not None and full.get("status") == "ok":
        here_s = float(full["wall_s"] if claim["count_eval"] else full["train_s"])
        compare = to_claimed_hw(here_s, float(full["peak_flops"]), peak_c, count)
        ratio = compare / claimed_s
        out |= {"compare_s": compare, "compare_kind": "measured", "time_ratio": ratio}
        time_ok = 1 / TIME_FACTOR <= ratio <= TIME_FACTOR
        adj = "" if peak_c is None else " (rescaled to the claimed hardware)"
        times = f"{fmt_s(compare)}{adj} vs claimed {fmt_s(claimed_s)}"
        loss_c = claim.get("claimed_loss")
        key = "best_val_loss" if claim["loss_kind"] == "best_val" else "final_val_loss"
        if loss_c is None:
            why = "no loss claimed"
        elif claim["data"].startswith("random"):
            why = "loss not checkable (data offline)"
        elif full.get(key) is None:
            why = "loss not checkable (a study of several runs has no one loss)"
        else:
            why = ""
        if why:
            if time_ok:
                return out | {
                    "verdict": REPRODUCED if loss_c is None else CONSISTENT,
                    "verdict_reason": f"full run: {times}; {why}",
                }
            return out | {"verdict": CONTRADICTED, "verdict_reason": f"full run: {times}"}
        loss = float(full[key])
        loss_ok = abs(loss - float(loss_c)) <= float(claim["loss_tol"])
        losses = f"{claim['loss_kind']} loss {loss:.4f} vs {float(loss_c):.4f}"
        text = f"full run: {times}; {losses} (tolerance {claim['loss_tol']})"
        return out | {
            "verdict": REPRODUCED if time_ok and loss_ok else CONTRADICTED,
            "verdict_reason": text,
        }
    have_probe = probe is not None and probe.get("status") == "ok"
    if claim["hardware_kind"] != device_type:
        if have_probe and probe is not None and probe.get("predicted_claimed_s") is not None:
            pred = float(probe["predicted_claimed_s"])
            out |= {"compare_s": pred, "compare_kind": "model", "time_ratio": pred / claimed_s}
            why = (
                f"needs {claim['hardware_kind']}; at the MFU measured here "
                f"({float(probe['mfu']):.0%}) the claimed hardware would take {fmt_s(pred)} "
                f"(a model) vs claimed {fmt_s(claimed_s)}"
            )
        else:
            reason = probe.get("reason", "not probed") if probe is not None else "not probed"
            why = f"needs {claim['hardware_kind']}; no prediction: {reason}"
        return out | {"verdict": NOT_CHECKABLE, "verdict_reason": why}
    if probe is None:
        return out | {
            "verdict": NOT_CHECKED,
            "verdict_reason": "arithmetic only: no probe here yet",
        }
    if not have_probe:
        why = f"probe {probe.get('status')}: {probe.get('reason', 'no reason given')}"
        return out | {"verdict": NOT_CHECKED, "verdict_reason": why}
    compare = to_claimed_hw(
        float(probe["predicted_here_s"]), float(probe["peak_flops"]), peak_c, count
    )
    ratio = compare / claimed_s
    out |= {"compare_s": compare, "compare_kind": "predicted", "time_ratio": ratio}
    text = f"probe predicts {fmt_s(compare)} vs claimed {fmt_s(claimed_s)}"
    ok = 1 / TIME_FACTOR <= ratio <= TIME_FACTOR
    return out | {
        "verdict": CONSISTENT if ok else CONTRADICTED,
        "verdict_reason": text + ("" if ok else f" ({ratio:.2f}x, outside {TIME_FACTOR:g}x)"),
    }
