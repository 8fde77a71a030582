"""Imported by the zygote alone (forked.PRELOAD): it makes the zygote die with the runner.

The zygote's children (the runs) die with the zygote (each sets PR_SET_PDEATHSIG after the
fork), so a runner killed by SIGKILL takes its zygote and, with it, every run it had started:
no orphan trains on into a directory that a resumed runner is about to reuse. (Left alone,
the zygote would only notice at its next read that the runner has gone.)
"""

from chargpt.study.local import die_with_parent

die_with_parent()
