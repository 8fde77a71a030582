"""Imported by the zygote alone (forked.PRELOAD): it dies with the runner, and the runs it
forks do not run the runner's script again.

The zygote's children (the runs) die with the zygote (each sets PR_SET_PDEATHSIG after the
fork), so a runner killed by SIGKILL takes its zygote and, with it, every run it had started:
no orphan trains on into a directory that a resumed runner is about to reuse. (Left alone,
the zygote would only notice at its next read that the runner has gone.)

multiprocessing has each forkserver child run the parent's main script again (as
`__mp_main__`), so that functions defined there can be unpickled. A run's target and
arguments all live in chargpt, so its process does not need the script: run again, it costs
every run its imports (a script importing pandas, matplotlib and scipy took 113 s for a
100-run study of one-step runs, 13 s without them) and, without an `if __name__ ==
"__main__":` guard, starts a study inside each run. So the zygote prepares chargpt's own
processes (local.PROCESS_PREFIX) without the script, and any other process the caller forks
from it (the forkserver is one per process) as multiprocessing always does.
"""

from multiprocessing import spawn
from typing import Any

from chargpt.study.local import PROCESS_PREFIX, die_with_parent

_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_prepare = spawn.prepare


def _prepare_without_script(data: dict[str, Any]) -> None:
    """spawn.prepare, run in each new child before its target is unpickled: for chargpt's
    processes, everything but re-running the parent's main script."""
    if str(data.get("name", "")).startswith(PROCESS_PREFIX):
        data = {key: value for key, value in data.items() if key not in _MAIN_KEYS}
    _prepare(data)


die_with_parent()
# The children are forks of this process: they call spawn.prepare through the module, so they
# find this one (CPython's spawn._main, 3.10 to 3.13 alike).
spawn.prepare = _prepare_without_script
