"""Imported by the zygote alone (forked.PRELOAD): it dies with the runner, and its children
do not run the runner's script again.

The zygote's children (the runs) die with the zygote (each sets PR_SET_PDEATHSIG after the
fork), so a runner killed by SIGKILL takes its zygote and, with it, every run it had started:
no orphan trains on into a directory that a resumed runner is about to reuse. (Left alone,
the zygote would only notice at its next read that the runner has gone.)

multiprocessing has each forkserver child run the parent's main script again (as
`__mp_main__`), so that functions defined there can be unpickled, unless the process it is
forked from has that script as `__main__` already. A run's target and arguments all live in
chargpt, so the script is not needed: run again, it costs every run its imports (a script
importing pandas, matplotlib and scipy took 113 s for a 100-run study of one-step runs,
13 s without them) and, without an `if __name__ == "__main__":` guard, starts a study inside each
run. Here the zygote's `__main__` takes the name the children will be sent, so they skip it.
"""

import importlib.machinery
import json
import os
import sys

from chargpt.study.forked import MAIN_ENV
from chargpt.study.local import die_with_parent


def _adopt_runner_main() -> None:
    """Give this process's __main__ the path or module name the runner's children are sent."""
    main = json.loads(os.environ.pop(MAIN_ENV, "{}"))
    module = sys.modules["__main__"]
    if "init_main_from_path" in main:  # python script.py
        module.__file__ = main["init_main_from_path"]
    if "init_main_from_name" in main:  # python -m package.module
        module.__spec__ = importlib.machinery.ModuleSpec(main["init_main_from_name"], None)


die_with_parent()
_adopt_runner_main()
