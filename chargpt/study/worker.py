"""One run in a fresh process: `python -m chargpt.study.worker RUN_DIR --label L [--threads N]`.

Reads RUN_DIR/config.json, trains, writes curve.csv (and checkpoint, samples), and writes
result.json last. Progress goes to stdout as one JSON object per line for the runner.
--compile-shared-by: how many of the study's runs share this run's graph (chargpt.compiling).
On a cluster node (the Ray executor) the corpus comes as a file of its content
(--corpus-file, --corpus-fingerprint) and the node's environment goes to RUN_DIR/env.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from chargpt import schema
from chargpt.study.store import StudyStore

RUNNER_GONE = 3  # exit code of a run whose runner went away: it leaves no result


def _progress(info: dict[str, Any]) -> None:
    """One progress line to the runner; exit (no result) once the runner is gone.

    SystemExit passes through train()'s and main()'s error handling, so a killed runner
    leaves the run without result.json (its state.pt stays): a re-run resumes it rather
    than finding it recorded as an error.
    """
    if os.getppid() == 1:  # the runner is gone (killed): stop rather than train for nobody
        raise SystemExit(RUNNER_GONE)
    try:
        print(json.dumps(info), flush=True)
    except BrokenPipeError:
        # The reading end closed: the runner died, and the SIGKILL meant to follow (parent
        # death) has not arrived yet. Quiet stdout so the exit's own flush does not fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(RUNNER_GONE) from None


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m chargpt.study.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--label", default="")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--corpus-file", type=Path, default=None, help="data.corpus's text")
    parser.add_argument("--corpus-fingerprint", default=None, help="its fingerprint (driver's)")
    parser.add_argument("--node-env", action="store_true", help="write this node's env.json")
    parser.add_argument(
        "--compile-shared-by",
        type=int,
        default=1,
        help="runs of the study that train this graph here (chargpt.compiling.choose_compile)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    import torch

    from chargpt.config import RunConfig
    from chargpt.train import CSVSink, train

    run_dir: Path = args.run_dir
    store = StudyStore(run_dir.parent.parent)
    run = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    run_id = run_dir.name  # the runner's run_id for this config and corpus
    record = schema.base_record(run_id, args.label, run)
    if args.threads and run.train.threads is None:
        torch.set_num_threads(args.threads)
    if args.corpus_file is not None:  # the driver's corpus, by content: no path is read here
        from chargpt.corpus import provide_corpus

        text = args.corpus_file.read_bytes().decode("utf-8")
        provide_corpus(run.data.corpus, text, args.corpus_fingerprint or "")
    if args.node_env:
        _write_node_env(run_dir, run.train.device)
    sink = CSVSink(run_dir / "curve.csv")
    try:
        result = train(
            run,
            sinks=[sink],
            out_dir=run_dir,
            progress=_progress,
            compile_shared_by=max(1, args.compile_shared_by),
        )
        if result.run_id != run_id:  # same config: the corpus file changed since planning
            raise ValueError(
                f"data.corpus: {run.data.corpus!r} changed after the study was "
                f"planned (this run's id is now {result.run_id}); run the study "
                "again to plan it anew"
            )
        record.update(result.to_dict())
    except KeyboardInterrupt:
        return 130  # interrupted: no record, so a resumed study runs it again
    except (MemoryError, torch.cuda.OutOfMemoryError) as exc:
        traceback.print_exc()
        record.update(status=schema.OOM, stop_reason=schema.OOM, error=_one_line(exc))
    except Exception as exc:  # any failure of the run is recorded as that run's status
        traceback.print_exc()
        record.update(status=schema.ERROR, stop_reason=type(exc).__name__, error=_one_line(exc))
    finally:
        sink.close()
    record["threads"] = run.train.threads or torch.get_num_threads()  # what it trained with
    if record.get("wall_s") is None:  # a run that raised still took this long
        record["wall_s"] = time.perf_counter() - started
    store.write_result(run_id, record)
    state = run_dir / schema.STATE_FILE
    if state.is_file():  # finished: nothing to go on from (a folder there is not ours to remove)
        state.unlink()
    return 0


def _write_node_env(run_dir: Path, device_name: str) -> None:
    """env.json of the node that runs this run (its fingerprint, host name)."""
    from chargpt import measure
    from chargpt.files import write_json

    try:
        env = measure.fingerprint(measure.resolve_device(device_name))
    except ValueError:  # no such device here: train() reports that as the run's error
        env = measure.fingerprint()
    env["hostname"] = socket.gethostname()
    write_json(run_dir / "env.json", env)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
