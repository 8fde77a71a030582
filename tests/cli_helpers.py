"""run_here(): the study CLI's main() in the test process, its output captured as the CLI's."""

from __future__ import annotations

import io
import logging
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest

import run_study


def run_here(*args: Any, **env: str) -> subprocess.CompletedProcess[str]:
    """What `python run_study.py ARGS` does, in this process: run_study.main(ARGS) with one
    torch thread a run (and env) set; stdout and stderr captured, the runner's log lines in
    stderr as its own process prints them (less the time stamp). Torch is imported already,
    which saves a fresh interpreter's ~2 s a call."""
    out, err = io.StringIO(), io.StringIO()
    # main()'s basicConfig does nothing here (pytest's handlers are on the root logger)
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root, level = logging.getLogger(), logging.getLogger().level
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), redirect_stderr(err):
        for key, value in {"OMP_NUM_THREADS": "1", **env}.items():
            mp.setenv(key, value)  # what the runner's zygote, hence its runs, start with
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            code = run_study.main([str(a) for a in args])
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
    return subprocess.CompletedProcess(
        ["run_study.py", *args], code, out.getvalue(), err.getvalue()
    )
