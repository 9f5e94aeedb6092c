"""A worker keeps nothing of a controller once its last queue there is gone.

Before, the worker recorded every controller's I/O context (``Worker.contexts``) when a queue
arrived or the context changed, and never read or dropped it: one entry per controller that
ever had a queue in the worker (up to 65519 per subsystem, as controller IDs come back).  An ad
hoc churn script (2026-12-03) connected a controller with two I/O queues to ``--workers 2``,
wrote, and disconnected (cleanly, with an R2T outstanding, or mid-PDU), over and over: from the
1500th controller to the 7500th each worker's RSS grew by 4.3-5.1 MiB.  Without the record it
grew by 2.0 MiB, and by 72 KiB from the 6000th to the 18000th.
"""

from __future__ import annotations

import sys
from typing import Any

from nvmf.offload.context import IoContextSpec
from nvmf.offload.worker import Worker
from tests.offload.inproc import placed_queue, with_worker

SUBNQN = "nqn.2024-01.io.nvmf:state"


def _spec(cntlid: int) -> IoContextSpec:
    return IoContextSpec(cntlid, SUBNQN, 1 << 17, False, ())


def test_a_closed_queue_leaves_no_reference_to_its_controller() -> None:
    def check(wk: Worker, sent: list[tuple[Any, ...]]) -> None:
        spec = _spec(3)
        before = sys.getrefcount(spec)
        session = placed_queue(wk, (SUBNQN, 3), spec)
        assert wk.sessions[(SUBNQN, 3), 1] is session
        wk.queue_closed(session)
        assert not wk.sessions and sent[-1][:3] == ("closed", (SUBNQN, 3), 1)
        del session
        assert sys.getrefcount(spec) == before

    with_worker(check)


def test_a_context_for_a_controller_without_queues_here_is_not_kept() -> None:
    """The control plane sends a changed context to every worker (a namespace added, say);
    a worker that serves none of that controller's queues has nothing to update."""

    def check(wk: Worker, sent: list[tuple[Any, ...]]) -> None:
        spec = _spec(4)
        before = sys.getrefcount(spec)
        wk._on_message(("context", (SUBNQN, 4), spec), [])
        assert sys.getrefcount(spec) == before

    with_worker(check)


def test_a_changed_context_reaches_the_controller_s_queues() -> None:
    def check(wk: Worker, sent: list[tuple[Any, ...]]) -> None:
        session = placed_queue(wk, (SUBNQN, 5), _spec(5))
        assert session.ioctx is not None and session.ioctx.max_transfer == 1 << 17
        wk._on_message(("context", (SUBNQN, 5), IoContextSpec(5, SUBNQN, 1 << 20, True, ())), [])
        assert session.ioctx.max_transfer == 1 << 20 and session.ioctx.wce

    with_worker(check)
