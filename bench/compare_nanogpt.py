"""Run nanoGPT's CPU baby-GPT recipe and chargpt's, in alternating rounds on this machine.

    python -m bench.compare_nanogpt PATH/TO/nanoGPT [--rounds 3] [--steps 2000]
                                    [--variant manual --variant bf16 ...] [--json OUT.json]

nanoGPT is not part of chargpt: point this at your own checkout of it. Published speed
figures come from other machines, so the only fair comparison is the same recipe on the same
machine, interleaved in time (timings on shared machines drift over minutes). Each round runs
nanoGPT's train.py as its README runs this recipe on a CPU (plus --out_dir in a temporary
folder and --always_save_checkpoint=True, so its final model rather than its best one is
scored), and python -m bench.recipe once per chosen chargpt variant, each in a fresh process;
even rounds run them in the reverse order. It reports training tokens/s (evaluation
excluded for both), process wall time, the process's own peak RSS, the val loss each program
prints, and both final models' loss over every character of the val split, scored by the same
code (chargpt.evaluate), so the loss comparison carries no sampling noise.

The checkout needs data/shakespeare_char/{train,val}.bin and meta.pkl: they are written from
chargpt's copy of the corpus unless present; present .bin files must match it exactly. On an
error the run logs are kept and their folder is named.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.ratios import REFERENCE, median_speed, pairs, summary_line
from chargpt.cli import ArgumentParser, output_file
from chargpt.config import DataConfig, ModelConfig
from chargpt.corpus import CorpusError
from chargpt.data import Splits, load_splits
from chargpt.evaluate import split_loss
from chargpt.files import write_atomic, write_json
from chargpt.measure import fingerprint, maxrss_mb
from chargpt.model import GPT, count_params

REPO = Path(__file__).resolve().parent.parent  # where python -m bench.recipe runs
# nanoGPT's README command for this recipe on a CPU (config/train_shakespeare_char.py plus
# these overrides). log_interval=1 is part of it: nanoGPT then syncs and prints every step.
NANOGPT_ARGS = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--lr_decay_iters={steps}",
    "--max_iters={steps}",
    "--dropout=0.0",
]
EVAL_INTERVAL = 250  # from config/train_shakespeare_char.py
# nanoGPT's data/shakespeare_char/prepare.py: the same corpus, its first 90% for training
NANOGPT_DATA = DataConfig(corpus="shakespeare", val_fraction=0.1)
TOKENS_PER_ITER = 12 * 64
VARIANTS = {  # name -> python -m bench.recipe flags
    # the recipe as chargpt runs it by default: float32, manual attention, compile auto (which
    # compiles where this machine has compiled the recipe's graph before: chargpt.compile_record)
    "manual": [],
    "eager": ["--compile", "false"],  # the same, never compiled
    "sdpa": ["--attn-impl", "sdpa"],
    "bf16": ["--dtype", "bfloat16"],
    "sdpa-bf16": ["--attn-impl", "sdpa", "--dtype", "bfloat16"],
    # torch.compile'd float32 against nanoGPT's eager (its CPU recipe has --compile=False);
    # compilation is off the tokens/s clock on both sides, and in chargpt's compile_s.
    "compiled": ["--compile", "true"],
}


class CompareError(Exception):
    """A bad checkout, data folder or failed run; the message says which and why."""


# ----- nanoGPT's side: data, log, checkpoint ----------------------------------------------
def nanogpt_data(splits: Splits) -> dict[str, bytes]:
    """The files nanoGPT's shakespeare_char dataset folder holds, built from a corpus's splits.

    Its prepare script's format: sorted characters as the vocabulary (as CharTokenizer's),
    the first 90% for training (splits loaded with NANOGPT_DATA's val_fraction), ids as
    uint16, and a pickled dict with vocab_size, itos and stoi.
    """
    if len(splits.train) != int(splits.n_chars * 0.9):
        raise ValueError(
            f"nanoGPT trains on the first 90% of the corpus, these splits hold "
            f"{len(splits.train)} of {splits.n_chars} characters"
        )
    tokenizer = splits.tokenizer
    meta = {
        "vocab_size": tokenizer.vocab_size,
        "itos": dict(enumerate(tokenizer.chars)),
        "stoi": {c: i for i, c in enumerate(tokenizer.chars)},
    }
    return {
        "train.bin": splits.train.numpy().astype(np.uint16).tobytes(),
        "val.bin": splits.val.numpy().astype(np.uint16).tobytes(),
        "meta.pkl": pickle.dumps(meta),
    }


def install_data(checkout: Path, splits: Splits) -> None:
    """Write the dataset files into the checkout, or check that the ones there match.

    Everything is checked before anything is written, and each file is written whole (temp
    file, then rename). An existing meta.pkl is kept unread (unpickling can run code):
    matching .bin files already pin the text, hence the sorted vocabulary it describes.
    """
    folder = checkout / "data" / "shakespeare_char"
    files = nanogpt_data(splits)
    for name in ("train.bin", "val.bin"):
        path = folder / name
        if path.exists() and path.read_bytes() != files[name]:
            raise CompareError(
                f"{path} exists but differs from chargpt's corpus; move it away and run again"
            )
    for name, content in files.items():
        if not (folder / name).exists():
            write_atomic(folder / name, content)


def nanogpt_iter_ms(log: str) -> dict[int, float]:
    """Per-iteration milliseconds from nanoGPT's 'iter N: loss L, time Tms, ...' lines."""
    return {
        int(m[1]): float(m[2])
        for m in re.finditer(r"^iter (\d+): loss [-\d.naninf]+, time ([\d.]+)ms", log, re.M)
    }


def nanogpt_tokens_per_s(
    iter_ms: dict[int, float],
    eval_interval: int = EVAL_INTERVAL,
    tokens_per_iter: int = TOKENS_PER_ITER,
) -> float:
    """Training tokens/s with evaluation excluded, from nanoGPT's per-iteration times.

    nanoGPT's time for an iteration that evaluates includes the evaluation (it runs first in
    the iteration); those iterations are charged the median of the others instead.
    """
    plain = [ms for it, ms in iter_ms.items() if it % eval_interval != 0]
    if not plain:
        raise CompareError("nanoGPT's log holds no timed training iterations")
    median = statistics.median(plain)
    total_ms = sum(plain) + median * (len(iter_ms) - len(plain))
    return len(iter_ms) * tokens_per_iter / (total_ms / 1e3)


def nanogpt_val_loss(log: str) -> float:
    """The last 'step N: train loss A, val loss B' nanoGPT printed."""
    found = re.findall(r"^step \d+: train loss \S+, val loss (\S+)$", log, re.M)
    if not found:
        raise CompareError("nanoGPT's log holds no evaluation line")
    return float(found[-1])


def load_nanogpt_checkpoint(path: Path) -> GPT:
    """A nanoGPT ckpt.pt as a chargpt GPT (the two share parameter names and shapes).

    Loaded with weights_only=True. nanoGPT's non-flash attention stores its causal mask as a
    buffer named attn.bias; chargpt builds its own, so those entries are dropped.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        args = payload["model_args"]
        config = ModelConfig(
            n_layer=args["n_layer"],
            n_head=args["n_head"],
            n_embd=args["n_embd"],
            block_size=args["block_size"],
            bias=args["bias"],
            vocab_size=args["vocab_size"],
            dropout=0.0,
        )
        state = {
            k.removeprefix("_orig_mod."): v
            for k, v in payload["model"].items()
            if not k.endswith(".attn.bias")
        }
        model = GPT(config)
        model.load_state_dict(state)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:
        raise CompareError(f"{path}: not a loadable nanoGPT checkpoint ({exc!r})") from None
    return model.eval()


# ----- running both -------------------------------------------------------------------------
# A tiny parent for each measured program. Linux charges a child's ru_maxrss with the memory
# of the process it was forked from (the fork copy, or with vfork the parent itself, counts
# until exec), and this script holds torch and a corpus. Forked from this small interpreter
# instead, the program's figure is its own. argv: rusage file, then the command.
_MEASURE = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"ru_maxrss": usage.ru_maxrss}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], cwd: Path, log_path: Path) -> tuple[float, float, int]:
    """Run cmd to completion; (wall seconds, its own peak RSS in MiB, exit code)."""
    usage_path = log_path.with_suffix(".rusage.json")
    with open(log_path, "w") as log:
        start = time.perf_counter()
        code = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(usage_path), *cmd],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
        wall = time.perf_counter() - start
    try:
        rss = maxrss_mb(json.loads(usage_path.read_text())["ru_maxrss"])
    except (OSError, ValueError, KeyError):
        rss = float("nan")  # the wrapper itself failed; the exit code says so
    return wall, rss, code


def run_nanogpt(
    checkout: Path, steps: int, work: Path, tag: str, val_ids: torch.Tensor
) -> dict[str, Any]:
    out_dir = work / f"nanogpt-{tag}"
    args = [a.format(steps=steps) for a in NANOGPT_ARGS] + [
        f"--out_dir={out_dir}",
        "--always_save_checkpoint=True",
    ]
    log_path = work / f"nanogpt-{tag}.log"
    wall, rss, code = run_measured([sys.executable, "train.py", *args], checkout, log_path)
    log = log_path.read_text()
    if code != 0:
        tail = log.strip().splitlines()[-1] if log.strip() else "no output"
        raise CompareError(f"nanoGPT exited with {code} ({tail}); full log: {log_path}")
    model = load_nanogpt_checkpoint(out_dir / "ckpt.pt")
    return {
        "program": REFERENCE,
        "tokens_per_s": nanogpt_tokens_per_s(nanogpt_iter_ms(log)),
        "wall_s": wall,
        "peak_rss_mb": rss,
        "printed_val_loss": nanogpt_val_loss(log),
        "full_val_loss": split_loss(model, val_ids)[0],
        "compile_s": None,  # its CPU recipe runs eager
    }


def run_chargpt(variant: str, steps: int, work: Path, tag: str) -> dict[str, Any]:
    out = work / f"chargpt-{variant}-{tag}.json"
    log_path = work / f"chargpt-{variant}-{tag}.log"
    cmd = [
        sys.executable,
        "-m",
        "bench.recipe",
        "--steps",
        str(steps),
        "--json",
        str(out),
        *VARIANTS[variant],
    ]
    wall, rss, code = run_measured(cmd, REPO, log_path)
    if code != 0 or not out.exists():
        log = log_path.read_text().strip()
        tail = log.splitlines()[-1] if log else "no output"
        raise CompareError(
            f"python -m bench.recipe ({variant}) exited with {code} ({tail}); full log: {log_path}"
        )
    r = json.loads(out.read_text())
    return {
        "program": f"chargpt {variant}",
        "tokens_per_s": r["tokens_per_s"],
        "wall_s": wall,
        "peak_rss_mb": rss,
        "printed_val_loss": r["final_val_loss"],
        "full_val_loss": r["full_val_loss"],
        "compile_s": r["compile_s"] if r["compiled"] else None,
    }


def _compile_cell(compile_s: float | None) -> str:
    """eager, or the seconds compiling took before the clock started."""
    return "eager" if compile_s is None else f"{compile_s:.1f}"


def table(rows: list[dict[str, Any]], flops_per_token: float) -> str:
    """Markdown: one line per program and round, then each program's median tokens/s."""
    out = [
        "| round | program | compile s | tokens/s | GFLOP/s | wall s | peak RSS MiB | printed val "
        "| full val |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['round']} | {r['program']} | {_compile_cell(r.get('compile_s'))} | "
            f"{r['tokens_per_s']:,.0f} | "
            f"{r['tokens_per_s'] * flops_per_token / 1e9:.1f} | {r['wall_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['printed_val_loss']:.4f} | "
            f"{r['full_val_loss']:.4f} |"
        )
    programs = list(dict.fromkeys(r["program"] for r in rows))
    ref = median_speed(rows, REFERENCE)
    out += ["", f"- {REFERENCE}: median {ref:,.0f} tokens/s"]
    for p in programs:
        if p == REFERENCE:
            continue
        speed = median_speed(rows, p)
        same = pairs(rows, p)
        out.append(
            f"- {p}: median {speed:,.0f} tokens/s ({speed / ref:.2f}x {REFERENCE}'s median; "
            f"same-round ratios {', '.join(f'{x.ratio:.2f}' for x in same)}; "
            f"{summary_line(same)})"
        )
    return "\n".join(out)


def header(argv: list[str], steps: int) -> dict[str, Any]:
    """What --json writes beside the rows: when, how, how long and where, taken at the start
    (so the git commit is the code that ran, not whatever the tree holds when it ends)."""
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["python", "-m", "bench.compare_nanogpt", *argv],
        "steps": steps,  # bench.compare_pool pools only files of one recipe length
        "machine": fingerprint(),  # and only files of one machine
    }


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m bench.compare_nanogpt", description=__doc__.splitlines()[0]
    )
    parser.add_argument("nanogpt", type=Path, help="path to a nanoGPT checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--variant",
        action="append",
        choices=sorted(VARIANTS),
        help="chargpt variant(s) to run each round (default: manual)",
    )
    parser.add_argument(
        "--json",
        type=output_file,
        help="also write every run's figures, the start time and this machine's fingerprint "
        "here (python -m bench.compare_pool pools such files)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    # nanoGPT evaluates and checkpoints only every eval_interval steps: other step counts
    # would compare its model from an earlier step with chargpt's final one.
    if args.steps < EVAL_INTERVAL or args.steps % EVAL_INTERVAL:
        parser.error(
            f"--steps must be a positive multiple of {EVAL_INTERVAL} (nanoGPT's "
            f"eval_interval), got {args.steps}"
        )
    checkout = args.nanogpt.expanduser().resolve()
    if not (checkout / "train.py").is_file() or not (checkout / "configurator.py").is_file():
        parser.error(f"{checkout} is not a nanoGPT checkout (no train.py and configurator.py)")
    work = Path(tempfile.mkdtemp(prefix="chargpt-vs-nanogpt-"))
    head = header(sys.argv[1:] if argv is None else argv, args.steps)
    try:
        splits = load_splits(NANOGPT_DATA)
        install_data(checkout, splits)
        recipe = ModelConfig(
            n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=splits.tokenizer.vocab_size
        )
        flops = count_params(recipe)["flops_per_token"]
        rows: list[dict[str, Any]] = []
        for rnd in range(1, args.rounds + 1):
            tag = str(rnd)
            runs = [partial(run_nanogpt, checkout, args.steps, work, tag, splits.val)]
            runs += [
                partial(run_chargpt, v, args.steps, work, tag) for v in args.variant or ["manual"]
            ]
            if rnd % 2 == 0:  # alternate the order, so neither always runs first
                runs.reverse()
            for run in runs:
                row = {"round": rnd, **run()}
                rows.append(row)
                print(
                    f"round {rnd}/{args.rounds}: {row['program']}: "
                    f"{row['tokens_per_s']:,.0f} tokens/s, wall {row['wall_s']:.0f} s, "
                    f"full val {row['full_val_loss']:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
        order = [REFERENCE] + [f"chargpt {v}" for v in args.variant or ["manual"]]
        rows.sort(key=lambda r: (r["round"], order.index(r["program"])))
        if args.json:
            write_json(args.json, {**head, "rows": rows})
    except (CompareError, CorpusError, OSError, ValueError, KeyError) as exc:
        print(f"error: {exc} (logs kept in {work})", file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)
    print(table(rows, flops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
