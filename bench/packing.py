"""Does packing a study's runs onto cores pay on this machine? Measure it for --jobs auto.

    python -m bench.packing studies/scaling.yaml [--only A-L2-C96-T64 ...] [--rounds 5]
        [--seconds 0.5] [--groups] [--json FILE]

For each shape (model, batch, dtype) of the study's runs: the training step of one process on
every core, against as many processes as cores stepping at once on one thread each, in
alternating rounds (chargpt.study.pack_probe). Prints each shape's seconds a step both ways
and the throughput gain of side by side (per round and the median), keeps the figures in
chargpt's cache for `--jobs auto` on this machine (pooled with the shape's latest earlier
rounds: chargpt.study.pack_record.POOL_ROUNDS), and prints the placement auto now chooses
for the study, group by group, with the predicted times. The figures are each shape beside
copies of itself; `--groups` then checks them on the plan's groups of different shapes: each
group's runs alone in turn against all of them at once, in alternating rounds, with the
gain the figures predicted beside the one measured (not kept: auto goes by the figures). Run
it on an idle machine: another load moves both sides, and not always alike.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chargpt.cli import ArgumentParser, output_file
from chargpt.files import write_json

if TYPE_CHECKING:
    from chargpt.study.packing import Placement, RunLoad
    from chargpt.study.spec import PlannedRun


def _positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a finite number of `kind` above zero (else a one-line usage error)."""

    def parse(text: str) -> Any:
        value = kind(text)  # ValueError: argparse says "invalid int value: 'x'"
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m bench.packing", description=__doc__)
    p.add_argument("study", type=Path, help="the study file whose runs to measure")
    p.add_argument("--only", nargs="+", default=[], metavar="RUN_ID|LABEL", help="these runs")
    p.add_argument("--rounds", type=_positive(int), default=5, help="rounds each way (5)")
    p.add_argument(
        "--seconds", type=_positive(float), default=0.5, help="steps a side a round (0.5 s)"
    )
    p.add_argument(
        "--groups",
        action="store_true",
        help="then measure the plan's groups of different shapes together (a check)",
    )
    p.add_argument("--json", type=output_file, help="also write the figures and the machine here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from chargpt import measure
    from chargpt.corpus import CorpusError
    from chargpt.study.pack_probe import ProbeError
    from chargpt.study.pack_record import measure_and_record, speed_key
    from chargpt.study.packing import usable_cores
    from chargpt.study.placement import auto_plan
    from chargpt.study.plan import InputError, Options, check_inputs
    from chargpt.study.spec import StudyError, load_study

    cores = usable_cores()
    try:
        study = load_study(args.study)
        runs, corpora = check_inputs(study, Options(only=tuple(args.only)))  # writes nothing
        for r in runs:
            device = measure.resolve_device(r.config.train.device)
            if device.type != "cpu":
                raise InputError(
                    f"{args.study}: {r.label} trains on {device.type}: packing is for CPUs"
                )
        if cores < 2:
            raise InputError(f"this process may use {cores} core: packing needs at least 2")
        if args.json is not None and not args.json.parent.is_dir():
            raise InputError(f"--json {args.json}: no folder {args.json.parent}")
    except (StudyError, InputError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    vocab = {name: facts["vocab_size"] for name, facts in corpora.items()}
    print(f"{measure.cpu_model()}, {cores} cores; flags: {' '.join(measure.cpu_flags() or [])}")
    print(
        f"each shape: 1 process on {cores} threads against {cores} on 1 thread each, "
        f"{args.rounds} rounds of ~{args.seconds:g} s each way"
    )
    shapes: dict[str, dict[str, Any]] = {}
    try:
        for r in runs:
            v = vocab[r.config.data.corpus]
            key = speed_key(r.config, v, cores)
            if key in shapes:
                shapes[key]["labels"].append(r.label)
                continue
            speed, kept = measure_and_record(r.config, v, cores, r.label, args.rounds, args.seconds)
            gains = [cores * rel for rel in speed.relative]
            shapes[key] = {
                "labels": [r.label],
                "key": key,
                "alone_s": speed.alone_s,
                "beside_s": speed.beside_s,
                "gains": gains,
                "gain": speed.gain,
                "kept_gain": kept.gain,
                "kept_rounds": len(kept.relative),
            }
            pooled = ""
            if len(kept.relative) > len(speed.relative):
                n = len(kept.relative)
                pooled = f"; kept for auto, pooled with earlier rounds ({n}): {kept.gain:.2f}x"
            print(
                f"{r.label}: {speed.alone_s * 1e3:,.1f} ms a step alone, "
                f"{speed.beside_s * 1e3:,.1f} ms side by side; {cores} side by side do "
                f"{speed.gain:.2f}x the work (rounds {min(gains):.2f}-{max(gains):.2f}, "
                f"median {statistics.median(gains):.2f}){pooled}",
                flush=True,
            )
    except (ProbeError, OSError, EOFError) as exc:  # EOFError: the zygote could not fork
        print(f"error: measuring failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the shapes measured so far are kept", file=sys.stderr)
        return 130
    loads, groups = auto_plan(runs, vocab, cores)
    print("--jobs auto now places them (a study's runs still to do, in groups of the cores):")
    plan = []
    for group in groups:
        labels = [runs[i].label for i in group.runs]
        plan.append(
            {
                "labels": labels,
                "jobs": group.slot.jobs,
                "threads": group.slot.threads,
                "reason": group.reason,
            }
        )
        print(f"  {' + '.join(labels)}: {group.reason}")
    checked: list[dict[str, Any]] = []  # the groups measured, kept if a later one fails
    code = 0
    if args.groups:
        try:
            _check_groups(runs, vocab, groups, loads, cores, args, checked)
        except (ProbeError, OSError, EOFError) as exc:  # EOFError: the zygote could not fork
            print(f"error: measuring a group failed: {exc}", file=sys.stderr)
            code = 1
        except KeyboardInterrupt:
            print("interrupted: the shapes' figures are kept", file=sys.stderr)
            code = 130
    if args.json:
        write_json(
            args.json,
            {
                "study": str(args.study),
                "cores": cores,
                "rounds": args.rounds,
                "seconds": args.seconds,
                "machine": measure.fingerprint(device),
                "shapes": list(shapes.values()),
                "plan": plan,
                "groups": checked,
            },
        )
    return code


def _check_groups(
    runs: list[PlannedRun],
    vocab: dict[str, int],
    groups: list[Placement],
    loads: list[RunLoad],
    cores: int,
    args: argparse.Namespace,
    checked: list[dict[str, Any]],
) -> None:
    """Measure each planned group of `cores` runs of more than one shape, all with figures,
    together; print the figures' prediction beside the measurement, and add both to
    `checked` group by group. (The measured gain applies the prediction's model to the steps
    measured in the group: the group's finish is not timed.)"""
    from chargpt.study.pack_record import figures_for, measure_group_alone, speed_key
    from chargpt.study.packing import predicted_gain

    todo = []
    for group in groups:
        members = [runs[i] for i in group.runs]
        pairs = [(r.config, vocab[r.config.data.corpus]) for r in members]
        found = [figures_for(run, v, cores) for run, v in pairs]
        figures = [f for f in found if f is not None]
        if len(members) < cores or len(figures) < len(found):
            continue  # the size rule places it: there is no prediction to check
        if len({speed_key(run, v, cores) for run, v in pairs}) > 1:
            todo.append((group, members, pairs, figures))
    if not todo:
        print("--groups: no group of different shapes with figures for all of them")
        return
    print(f"--groups: {len(todo)} of different shapes, measured together:")
    for group, members, pairs, figures in todo:
        measured = measure_group_alone(pairs, args.rounds, args.seconds)
        group_loads = [loads[i] for i in group.runs]
        said, said_what = predicted_gain(
            group_loads, [f.alone_s for f in figures], [f.beside_s for f in figures]
        )
        got, got_what = predicted_gain(
            group_loads, [m.alone_s for m in measured], [m.beside_s for m in measured]
        )
        labels = [r.label for r in members]
        steps = ", ".join(
            f"{label} {m.beside_s * 1e3:,.1f} ms a step in the group "
            f"(beside its copies {f.beside_s * 1e3:,.1f})"
            for label, m, f in zip(labels, measured, figures, strict=True)
        )
        print(f"  {' + '.join(labels)}: {steps}; measured {got_what}, the figures said {said:.3f}x")
        checked.append(
            {
                "labels": labels,
                "alone_s": [m.alone_s for m in measured],
                "beside_s": [m.beside_s for m in measured],
                "relative": [list(m.relative) for m in measured],
                "figures_beside_s": [f.beside_s for f in figures],
                "predicted_gain": said,
                "measured_gain": got,
            }
        )


if __name__ == "__main__":
    raise SystemExit(main())
