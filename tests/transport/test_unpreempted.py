"""Large sends under SCHED_FIFO (:mod:`nvmf.transport.unpreempted`), at the send queue.

What the thread's scheduling policy is while the kernel takes a flush is read from inside the
flush itself: a PDU's ``done`` callback runs there, right after the ``sendmsg`` that took its
last byte.  Raising the policy needs CAP_SYS_NICE, which CI has (it runs as root); the refused
case runs in a child process whose capability bounding set lacks it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from nvmf.transport import unpreempted
from nvmf.transport.sendqueue import UNPREEMPTED_BYTES, SendQueue

needs_sys_nice = pytest.mark.skipif(
    os.geteuid() != 0 and resource.getrlimit(resource.RLIMIT_RTPRIO)[1] == 0,
    reason="raising the scheduling policy needs CAP_SYS_NICE or RLIMIT_RTPRIO (CI has root)",
)


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test decides anew whether SCHED_FIFO is usable, and leaves SCHED_OTHER behind."""
    monkeypatch.setattr(unpreempted, "_usable", None)
    yield
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _policies_while_sent(sizes: list[int], unpreempted_from: int | None) -> tuple[list[int], int]:
    """Queue one PDU of each size on a socket pair and flush once: the thread's policy as
    each PDU's last byte left, the policy after the flush.  The peer gets every byte."""
    loop = asyncio.new_event_loop()
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    a.setblocking(False)
    try:
        seen: list[int] = []
        q = SendQueue(a, loop, pytest.fail, unpreempted_from=unpreempted_from)

        def done() -> None:
            seen.append(os.sched_getscheduler(0))

        for size in sizes:
            q.send([b"h" * 8, memoryview(bytes(size))], done)
        q.flush()
        assert q.pending == 0 and len(seen) == len(sizes)
        total = sum(8 + s for s in sizes)
        got = 0
        while got < total:
            got += len(b.recv(total - got))
        return seen, os.sched_getscheduler(0)
    finally:
        a.close()
        b.close()
        loop.close()


@needs_sys_nice
def test_a_flush_of_a_segment_or_more_is_sent_as_sched_fifo_then_sched_other_again() -> None:
    os.setpriority(os.PRIO_PROCESS, 0, 3)  # this thread's nice value, which must survive
    try:
        seen, after = _policies_while_sent([128 << 10, 4096], UNPREEMPTED_BYTES)
        assert seen == [os.SCHED_FIFO, os.SCHED_FIFO]
        assert after == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, 0) == 3
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, 0)


@needs_sys_nice
def test_a_smaller_flush_stays_sched_other() -> None:
    # Eight 4 KiB completions' worth: below one segment, the receiver is woken once, at the end.
    seen, after = _policies_while_sent([4096] * 8, UNPREEMPTED_BYTES)
    assert seen == [os.SCHED_OTHER] * 8 and after == os.SCHED_OTHER


@needs_sys_nice
def test_a_send_queue_without_a_threshold_never_raises_its_policy() -> None:
    """The host's queues, and a target with ``nvmf.unpreempted_sends`` false."""
    seen, after = _policies_while_sent([1 << 20], None)
    assert seen == [os.SCHED_OTHER] and after == os.SCHED_OTHER


def test_a_thread_under_another_policy_keeps_it() -> None:
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    seen, after = _policies_while_sent([128 << 10], UNPREEMPTED_BYTES)
    assert seen == [os.SCHED_BATCH] and after == os.SCHED_BATCH


#: Run in a child without CAP_SYS_NICE: two large flushes; prints the policies and the log.
_REFUSED = """
import json, logging, os, sys
sys.path[:0] = sys.argv[1:]
from tests.transport.test_unpreempted import _policies_while_sent
from nvmf.transport.sendqueue import UNPREEMPTED_BYTES
records = []
handler = logging.Handler()
handler.emit = lambda r: records.append(r.getMessage())
logging.getLogger("nvmf.transport.unpreempted").addHandler(handler)
logging.getLogger("nvmf.transport.unpreempted").setLevel(logging.INFO)
first = _policies_while_sent([256 << 10], UNPREEMPTED_BYTES)
second = _policies_while_sent([256 << 10], UNPREEMPTED_BYTES)
print(json.dumps({"first": first, "second": second, "log": records}))
"""


def test_where_sched_fifo_is_refused_sends_go_on_and_the_log_says_so_once() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = [sys.executable, "-c", _REFUSED, root, os.path.join(root, "src")]
    if os.geteuid() == 0:  # root: take CAP_SYS_NICE out of what the child may ever have
        cmd = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", *cmd]
    elif resource.getrlimit(resource.RLIMIT_RTPRIO)[0] > 0:
        pytest.fail("this test needs RLIMIT_RTPRIO 0 for a process without root")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["first"] == [[os.SCHED_OTHER], os.SCHED_OTHER]
    assert result["second"] == [[os.SCHED_OTHER], os.SCHED_OTHER]
    assert len(result["log"]) == 1, result["log"]
    assert "SCHED_FIFO is refused" in result["log"][0] and "CAP_SYS_NICE" in result["log"][0]
