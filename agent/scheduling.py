"""No real-time threads in the agent, whatever an encoder library does.

SVT-AV1 (PyAV's bundled libsvtav1, the slate's AV1 encoder) checks whether it may raise
thread priorities by making the thread that opens an encoder SCHED_FIFO at priority 99,
and never sets it back; where that is allowed (as root, or with CAP_SYS_NICE) the
thread, its encoding threads and every thread or process it starts later run before
anything else on their core, kernel threads included: one such process spinning stalls
the machine (seen in our CI). The agent relays on ordinary time-sharing, so whatever
opens an encoder does it inside `ordinary_scheduling()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)

REAL_TIME = (os.SCHED_FIFO, os.SCHED_RR)


def demote_real_time_threads() -> int:
    """Put every real-time thread of this process back on SCHED_OTHER; how many."""
    demoted = 0
    try:
        tids = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: nothing to look at
        return 0
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that just ended
            if os.sched_getscheduler(tid) in REAL_TIME:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                demoted += 1
    return demoted


@contextlib.contextmanager
def ordinary_scheduling() -> Iterator[None]:
    """Run the block; then no thread of the process is left real-time."""
    try:
        yield
    finally:
        demoted = demote_real_time_threads()
        if demoted:
            log.debug("%d thread(s) an encoder made real-time put back on SCHED_OTHER", demoted)
