"""Sends that the receiver they wake cannot preempt: ``SCHED_FIFO`` for the length of a send.

A ``sendmsg`` on a TCP socket delivers its data segment by segment (64 KiB at most on
loopback, or with TSO), and on loopback each segment is received at once, in softirq on the
sender's CPU, waking the receiver there.  When the receiver is the Linux host's ``io_work`` (a
``WQ_HIGHPRI`` work item, nice -20, bound to its queue's CPU), it preempts the sending worker
as soon as the kernel lets it, once per segment: in the 6.1 guest a worker's 1 MiB flush of
eight 128 KiB C2HData PDUs ran as about 17 context switches, the worker, the host's
``io_work`` and fio taking turns per segment.  The kernel target never pays this: its
``io_work`` and the host's are work items of the same pool on that CPU and run one after
the other.

A thread under ``SCHED_FIFO`` is not preempted by the wakeup of a ``SCHED_OTHER`` one.  So a
large send runs as the lowest real-time priority (:data:`PRIORITY`) and the thread returns to
``SCHED_OTHER`` right after it; the woken receiver then takes the whole burst in one turn.
Nothing else runs under it: the send is one non-blocking ``sendmsg`` or a few, bounded by the
socket's send buffer.  Where the kernel refuses (no ``CAP_SYS_NICE``, ``RLIMIT_RTPRIO`` 0), or
the thread already runs under another policy (``chrt``, ``SCHED_BATCH``), sends stay as they
are and this is said once in the log.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: The lowest real-time priority: above every ``SCHED_OTHER`` thread, below every other
#: real-time one (threaded interrupt handlers run at 50).
PRIORITY = 1

#: Whether :func:`enter` may raise the priority (None: not tried yet in this process).
_usable: bool | None = None


def enter() -> bool:
    """Run the calling thread under ``SCHED_FIFO`` at :data:`PRIORITY`; False (and nothing
    changed) where that is refused or the thread's policy is not ``SCHED_OTHER``.  A True
    must be followed by :func:`leave`."""
    global _usable
    if _usable is False:
        return False
    if _usable is None:
        policy = os.sched_getscheduler(0)
        if policy != os.SCHED_OTHER:
            return _unusable(f"the thread runs under scheduling policy {policy}, kept as it is")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
    except OSError as exc:
        return _unusable(
            f"SCHED_FIFO is refused ({exc.strerror}; it needs CAP_SYS_NICE or RLIMIT_RTPRIO, "
            "and real-time time in the process's cgroup where the kernel divides it)"
        )
    _usable = True
    return True


def leave() -> None:
    """Back to ``SCHED_OTHER`` (the thread's nice value is kept by the kernel)."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _unusable(why: str) -> bool:
    global _usable
    _usable = False
    log.info("large sends may be preempted by the receivers they wake: %s", why)
    return False
