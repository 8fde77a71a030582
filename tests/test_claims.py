"""chargpt.claims: registry validation, arithmetic, the probe, the verdict rule, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from chargpt.claims import cli
from chargpt.claims.arithmetic import arithmetic, mfu_class, resolved
from chargpt.claims.check import claim_row
from chargpt.claims.probe import probe_run
from chargpt.claims.registry import ClaimsError, load_claims
from chargpt.claims.verdict import (
    CONSISTENT,
    CONTRADICTED,
    NOT_CHECKABLE,
    REPRODUCED,
    verdict,
)
from plots import report

REGISTRY = Path(__file__).resolve().parent.parent / "studies" / "claims.yaml"

TINY_RECIPE = {
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
    "optim": {"lr": 1.0e-3, "warmup_steps": 0},
    "train": {"batch_size": 4, "eval_interval": 5, "eval_iters": 2, "device": "cpu"},
    "budget": {"max_steps": 10},
}


def tiny_claim(**over: Any) -> dict[str, Any]:
    claim = {
        "id": "tiny",
        "source": {"repo": "example/tiny", "commit": "0" * 40, "file": "README.md"},
        "quote": "it trains in a second",
        "verified": "a test claim",
        "hardware": {
            "kind": "cpu",
            "model": "any CPU",
            "count": 1,
            "peak_flops": None,
            "precision": "float32",
        },
        "recipe": TINY_RECIPE,
        "count_eval": True,
        "data": {"corpus": "synthetic", "dataset": "the synthetic chain"},
        "claimed": {"time_s": 30.0, "loss": 2.0, "loss_kind": "best_val", "loss_tol": 5.0},
    }
    claim.update(over)
    return claim


def write_claims(tmp_path: Path, *claims: dict[str, Any]) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": list(claims)}, sort_keys=False))
    return path


def by_id(claim_id: str):
    return next(c for c in load_claims(REGISTRY) if c.id == claim_id)


# ----- arithmetic ----------------------------------------------------------------------------


def test_arithmetic_of_nanogpt_cpu_baby_gpt_by_hand() -> None:
    # 4 layers, 128 wide, context 64, vocab 65 (tiny shakespeare), no bias, tied head.
    C, L, T, V = 128, 4, 64, 65
    per_layer = 2 * C + (C * 3 * C + C * C) + (C * 4 * C + 4 * C * C)  # 2 LN, attention, MLP
    n = L * per_layer + C + V * C  # + final LN + the tied embedding doing the head's matmul
    fpt = 6 * n + 12 * L * C * T
    assert fpt == 5_168_640
    train = 2000 * 12 * 64 * fpt
    evals = (2000 // 250 + 1) * 2 * 20 * 12 * 64 * fpt / 3  # forward only, train + val
    got = arithmetic(by_id("nanogpt-cpu-baby-gpt"), vocab_size=V)
    assert got["flops_per_token"] == fpt
    assert got["train_flops"] == train
    assert got["eval_flops"] == pytest.approx(evals)
    assert got["total_flops"] == pytest.approx(train + evals)
    assert got["implied_tokens_per_s"] == pytest.approx(1_536_000 / 180)
    assert got["implied_mfu"] is None  # a MacBook has no datasheet peak
    assert got["mfu_class"] == "unknown"


def test_arithmetic_of_llmc_gpt2_124m_by_hand_gives_its_60_percent_mfu() -> None:
    # GPT-2 124M with biases, padded vocab 50304, 18,865 steps of 524,288 tokens.
    C, L, T, V = 768, 12, 1024, 50304
    ln = 2 * C
    attn = C * 3 * C + 3 * C + C * C + C
    mlp = C * 4 * C + 4 * C + 4 * C * C + C
    n = L * (2 * ln + attn + mlp) + ln + V * C
    assert n == 123_689_472
    fpt = 6 * n + 12 * L * C * T
    total = 18_865 * 524_288 * fpt
    got = arithmetic(by_id("llmc-gpt2-124m-8xa100"), vocab_size=V)
    assert got["total_flops"] == total
    mfu = total / 5659.5 / (8 * 312e12)
    assert got["implied_mfu"] == pytest.approx(mfu)
    assert 0.59 < mfu < 0.61  # the "~60% MFU" llm.c reports
    assert got["mfu_class"] == "plausible"


def test_an_impossible_claim_is_flagged_and_contradicted(tmp_path: Path) -> None:
    fast = tiny_claim(
        hardware={
            "kind": "cuda",
            "model": "a GPU",
            "count": 1,
            "peak_flops": 1.0e9,
            "precision": "bfloat16",
        },
        claimed={"time_s": 1.0e-3},
    )
    (claim,) = load_claims(write_claims(tmp_path, fast))
    a = arithmetic(claim, vocab_size=8)
    assert a["implied_mfu"] > 1
    assert a["mfu_class"] == "impossible"
    v = verdict(claim_row(claim), a, None, None, "cpu")
    assert v["verdict"] == CONTRADICTED
    assert "impossible" in v["verdict_reason"]
    assert mfu_class(0.8) == "implausible" and mfu_class(0.4) == "plausible"


# ----- the probe -----------------------------------------------------------------------------


def test_probe_times_a_tiny_recipe(tmp_path: Path) -> None:
    (claim,) = load_claims(write_claims(tmp_path, tiny_claim()))
    run = resolved(claim.runs[0], 8)
    p = probe_run(run, "cpu", None, 600.0)
    assert p["status"] == "ok"
    assert p["micro_batch"] == 4
    assert p["probe_steps"] >= 1 and p["step_s"] > 0
    assert p["flops_per_s"] == pytest.approx(
        p["tokens_per_s"] * arithmetic(claim, 8)["flops_per_token"]
    )
    assert 0 < p["mfu"]
    assert p["peak_rss_mb"] > 0


def test_probe_halves_the_micro_batch_for_memory_and_skips_what_cannot_fit(
    tmp_path: Path,
) -> None:
    (claim,) = load_claims(write_claims(tmp_path, tiny_claim()))
    run = resolved(claim.runs[0], 8)
    from chargpt.claims.probe import estimate_mb

    budget = (estimate_mb(run, 1) + estimate_mb(run, 2)) / 2
    p = probe_run(run, "cpu", budget, 600.0)
    assert p["status"] == "ok" and p["micro_batch"] == 1
    skipped = probe_run(run, "cpu", estimate_mb(run, 1) / 2, 600.0)
    assert skipped["status"] == "skipped" and "budget" in skipped["reason"]


# ----- the verdict rule ----------------------------------------------------------------------


def _claim(**over: Any) -> dict[str, Any]:
    base = {
        "claim_id": "c",
        "hardware_kind": "cpu",
        "hardware_model": "X",
        "device_count": 1,
        "claimed_peak_flops": None,
        "claimed_time_s": 100.0,
        "claimed_loss": 1.5,
        "loss_kind": "best_val",
        "loss_tol": 0.05,
        "count_eval": True,
        "data": "corpus shakespeare",
    }
    return base | over


ARITH = {"implied_mfu": None}


def _full(wall_s: float, best: float, peak: float = 1e11) -> dict[str, Any]:
    return {
        "status": "ok",
        "wall_s": wall_s,
        "train_s": wall_s,
        "best_val_loss": best,
        "final_val_loss": best,
        "peak_flops": peak,
    }


def test_verdict_rule_on_constructed_results() -> None:
    assert verdict(_claim(), ARITH, None, _full(150, 1.52), "cpu")["verdict"] == REPRODUCED
    slow = verdict(_claim(), ARITH, None, _full(400, 1.52), "cpu")
    assert slow["verdict"] == CONTRADICTED and "400 s" in slow["verdict_reason"]
    bad_loss = verdict(_claim(), ARITH, None, _full(100, 1.70), "cpu")
    assert bad_loss["verdict"] == CONTRADICTED and "1.7000 vs 1.5000" in bad_loss["verdict_reason"]
    offline = _claim(data="random (vocab 50257)")
    assert verdict(offline, ARITH, None, _full(100, 9.0), "cpu")["verdict"] == CONSISTENT
    # A study of several runs has no one loss: its time is checked, its loss cannot be.
    study = _full(100, 1.52) | {"best_val_loss": None, "final_val_loss": None}
    v = verdict(_claim(), ARITH, None, study, "cpu")
    assert v["verdict"] == CONSISTENT and "several runs" in v["verdict_reason"]
    probe = {"status": "ok", "predicted_here_s": 250.0, "peak_flops": 1e11, "mfu": 0.3}
    assert verdict(_claim(), ARITH, probe, None, "cpu")["verdict"] == CONSISTENT
    # The check's own threads load the machine up to its cores: only more is "slow".
    for load, slow in ((2.0, False), (3.5, True)):
        loaded = probe | {"load_avg_1m": load, "cpu_count": 2}
        assert ("slow]" in verdict(_claim(), ARITH, loaded, None, "cpu")["verdict_reason"]) == slow
    probe_slow = probe | {"predicted_here_s": 1000.0}
    assert verdict(_claim(), ARITH, probe_slow, None, "cpu")["verdict"] == CONTRADICTED
    # A GPU claim on this CPU: not checkable, the model's prediction rescaled by the peaks.
    gpu = _claim(hardware_kind="cuda", claimed_peak_flops=1e13, device_count=2)
    probe_gpu = probe | {"predicted_claimed_s": 1.25}
    v = verdict(gpu, ARITH, probe_gpu, None, "cpu")
    assert v["verdict"] == NOT_CHECKABLE and v["compare_s"] == 1.25
    # On a GPU it is checked: 250 s here at 1e11 is 250 * 1e11 / 2e13 = 1.25 s there.
    assert verdict(gpu, ARITH, probe, None, "cuda")["verdict"] == CONTRADICTED
    assert (
        verdict(gpu | {"claimed_time_s": 2.0}, ARITH, probe, None, "cuda")["verdict"] == CONSISTENT
    )


def test_a_claim_not_probed_here_is_not_checked_rather_than_not_checkable() -> None:
    # "not checkable here" is for claims that need another device kind (the README's rule 3)
    gpu = _claim(hardware_kind="cuda", claimed_peak_flops=1e13)
    assert verdict(gpu, ARITH, None, None, "cpu")["verdict"] == NOT_CHECKABLE
    v = verdict(_claim(), ARITH, None, None, "cpu")  # --level arithmetic on its own kind
    assert v["verdict"] == "not checked", v
    assert v["verdict_reason"] == "arithmetic only: no probe here yet"
    skipped = {"status": "skipped", "reason": "one sequence needs ~9 MiB, over the 5 MiB budget"}
    v = verdict(_claim(), ARITH, skipped, None, "cpu")
    assert v["verdict"] == "not checked", v
    assert v["verdict_reason"] == f"probe skipped: {skipped['reason']}"
    assert v["compare_s"] is None  # nothing to plot against the claim


# ----- registry validation and the CLI -------------------------------------------------------


def test_the_shipped_registry_loads() -> None:
    claims = load_claims(REGISTRY)
    assert len({c.id for c in claims}) == len(claims) >= 11
    assert all(c.source and c.quote and c.verified for c in claims)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"hardware": {"kind": "tpu"}}, "hardware"),
        ({"claimed": {"time_s": -1}}, "claims[0] (tiny).claimed.time_s"),
        (
            {"recipe": {**TINY_RECIPE, "model": {"n_layer": 0}}},
            "claims[0] (tiny).recipe.model.n_layer",
        ),
        ({"data": {"corpus": "shakespeare", "random": 5, "dataset": "x"}}, "claims[0] (tiny).data"),
        ({"colour": "red"}, "claims[0] (tiny).colour: unknown key"),
        ({"claimed": {"time_s": 1, "loss": 2.0}}, "claims[0] (tiny).claimed.loss_kind"),
        # a corpus chargpt cannot read is found when the file is read, not after env.json
        ({"data": {"corpus": "nope", "dataset": "x"}}, "claims[0] (tiny).data.corpus: corpus"),
    ],
)
def test_a_bad_claims_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: dict[str, Any], expected: str
) -> None:
    path = write_claims(tmp_path, tiny_claim(**edit))
    out = tmp_path / "out"
    code = cli.main(["check", "--claims", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["list", "check --dry-run"])
def test_an_unknown_corpus_is_refused_by_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    nope = tiny_claim(id="other", data={"corpus": "nope", "dataset": "x"})
    path = write_claims(tmp_path, tiny_claim(), nope)
    code = cli.main([*command.split(), "--claims", str(path), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"python -m chargpt.claims: error: {path}: claims[1] (other).data.corpus: corpus 'nope' "
        "is neither a known name (shakespeare, synthetic, lexicon) nor an existing file"
    ]


def test_a_study_file_given_as_claims_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = REGISTRY.parent / "smoke.yaml"
    with pytest.raises(ClaimsError) as info:
        load_claims(study)
    message = str(info.value)
    assert message.startswith(f"{study}: name: unknown key"), message
    assert "study file" in message
    assert cli.main(["check", "--claims", str(study), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"python -m chargpt.claims: error: {message}"
    ]
    assert not (tmp_path / "out").exists()


def test_duplicate_ids_and_yaml_errors_are_named(tmp_path: Path) -> None:
    with pytest.raises(ClaimsError, match=r"claims\[1\] \(tiny\)\.id: 'tiny' is given twice"):
        load_claims(write_claims(tmp_path, tiny_claim(), tiny_claim()))
    bad = tmp_path / "bad.yaml"
    bad.write_text("claims:\n  - id: a\n    id: b\n")
    with pytest.raises(ClaimsError, match="duplicate key"):
        load_claims(bad)


@pytest.mark.slow
def test_check_runs_all_levels_then_resumes_and_fresh_redoes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_claims(tmp_path, tiny_claim())
    out = tmp_path / "out"
    args = ["check", "--claims", str(path), "--out", str(out), "--device", "cpu", "--json"]
    assert cli.main(args) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["verdict"] in (REPRODUCED, CONTRADICTED)  # a full run happened either way
    records = {lvl: out / "checks" / "tiny" / f"{lvl}.json" for lvl in ("probe", "full")}
    full = json.loads(records["full"].read_text())
    assert full["status"] == "ok" and full["steps"] == 10
    assert (out / "runs" / "tiny" / "curve.csv").is_file()
    rows = (out / "claims.csv").read_text().splitlines()
    assert len(rows) == 4  # header + arithmetic, probe, full
    assert (out / "env.json").is_file()
    stamps = {lvl: json.loads(p.read_text())["checked_at"] for lvl, p in records.items()}
    mtimes = {lvl: p.stat().st_mtime_ns for lvl, p in records.items()}
    assert cli.main(args) == 0  # resumed: nothing redone
    capsys.readouterr()
    assert {lvl: p.stat().st_mtime_ns for lvl, p in records.items()} == mtimes
    assert cli.main([*args, "--fresh", "--level", "probe"]) == 0
    capsys.readouterr()
    assert records["probe"].stat().st_mtime_ns != mtimes["probe"]
    assert records["full"].stat().st_mtime_ns == mtimes["full"]
    assert json.loads(records["full"].read_text())["checked_at"] == stamps["full"]
    # The report command of studies draws the claims report from the same folder.
    assert report.main([str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    assert "| tiny |" in text and "claims_time.png" in text
    for stem in ("claims_time", "claims_mfu"):
        assert (out / "figures" / f"{stem}.png").is_file() == (stem == "claims_time")


def test_dry_run_writes_nothing_and_unknown_only_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_claims(tmp_path, tiny_claim())
    out = tmp_path / "out"
    assert cli.main(["check", "--claims", str(path), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("tiny: arithmetic; probe: to run on ")
    assert not out.exists()
    assert cli.main(["check", "--claims", str(path), "--only", "nope"]) == 2
    assert "no claim 'nope'" in capsys.readouterr().err
    assert cli.main(["check", "--claims", str(path), "--threads", "0"]) == 2
    assert "--threads must be a positive integer" in capsys.readouterr().err
    assert cli.main(["check", "--claims", str(path), "--max-seconds", "-1"]) == 2
    assert not out.exists()


def gpu_claim(**over: Any) -> dict[str, Any]:
    hardware = {
        "kind": "cuda",
        "model": "a GPU",
        "count": 8,
        "peak_flops": 3.0e14,
        "precision": "bfloat16",
    }
    return tiny_claim(id="gpu", hardware=hardware, **over)


def test_dry_run_says_what_check_would_do_on_this_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    offline = tiny_claim(id="offline", data={"random": 8, "dataset": "tokens"})
    path = write_claims(tmp_path, tiny_claim(), gpu_claim(), offline)
    out = tmp_path / "out"
    args = ["check", "--claims", str(path), "--out", str(out), "--device", "cpu", "--dry-run"]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.splitlines() == [
        "tiny: arithmetic; probe: to run on cpu; full: to run if the probe predicts at most 600 s",
        "gpu: arithmetic; probe: to run on cpu; "
        "full: skipped (needs cuda, this machine's device is cpu)",
        "offline: arithmetic; probe: to run on cpu; full: skipped (its data is not available "
        "offline (random tokens time it, they cannot train it))",
    ]
    assert cli.main([*args, "--level", "arithmetic", "--only", "tiny"]) == 0
    assert capsys.readouterr().out == "tiny: arithmetic\n"
    assert not out.exists()


@pytest.mark.slow
def test_dry_run_after_a_probe_reads_the_probes_prediction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_claims(tmp_path, tiny_claim())
    out = tmp_path / "out"
    base = ["check", "--claims", str(path), "--out", str(out), "--device", "cpu"]
    assert cli.main([*base, "--level", "probe", "--json"]) == 0
    capsys.readouterr()
    probe = json.loads((out / "checks" / "tiny" / "probe.json").read_text())
    predicted = probe["predicted_here_s"]
    dry = [*base, "--dry-run"]
    assert cli.main(dry) == 0
    line = capsys.readouterr().out
    assert line.startswith("tiny: arithmetic; probe: done; full: to run (the probe predicts ")
    assert cli.main([*dry, "--max-seconds", str(predicted / 2)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("tiny: arithmetic; probe: done; full: skipped (predicted ")
    assert line.endswith(" s here, over --max-seconds)\n")
    # another thread count is another check: its probe is not done yet, whatever is on disk
    for extra in (["--threads", "1"], ["--fresh"]):
        assert cli.main([*dry, *extra]) == 0
        assert "probe: to run on cpu; full: to run if" in capsys.readouterr().out


@pytest.mark.slow
def test_a_study_claim_is_re_run_whole_through_the_runner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "two.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "two",
                "base": {
                    **{k: v for k, v in TINY_RECIPE.items() if k != "budget"},
                    "budget": {"max_steps": 4},
                    "data": {"corpus": "synthetic"},
                    "sample": {"prompts": ["a"], "max_new_tokens": 2},
                },
                "runs": [{"label": "one"}, {"label": "two", "model.n_embd": 32}],
            }
        )
    )
    claim = tiny_claim(id="study-wall", study=study.name, claimed={"time_s": 20.0})
    del claim["recipe"]
    path = write_claims(tmp_path, claim)
    out = tmp_path / "out"
    args = ["check", "--claims", str(path), "--out", str(out), "--device", "cpu", "--json"]
    assert cli.main(args) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    full = json.loads((out / "checks" / "study-wall" / "full.json").read_text())
    assert full["status"] == "ok" and full["runs"] == 2 and full["steps"] == 8
    assert full["best_val_loss"] is None  # two runs: no one loss
    # The wall is the whole command's: it holds both runs' training and evaluation and more.
    assert full["wall_s"] > full["train_s"] + full["eval_s"]
    runs = (out / "runs" / "study-wall" / "two" / "runs.csv").read_text().splitlines()
    assert len(runs) == 3 and all(",ok," in r for r in runs[1:])
    assert entry["measured_here_s"] == full["wall_s"]  # count_eval: the whole wall is compared
    assert entry["verdict_reason"].startswith("full run:")  # no loss claimed: time decides
    assert entry["verdict"] in (REPRODUCED, CONTRADICTED)
