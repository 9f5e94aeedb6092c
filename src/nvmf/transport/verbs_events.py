"""Waiting for RDMA events without blocking the event loop, with rdma-core's pyverbs.

The RDMA transport learns of connection requests from an RDMA CM event channel and of finished
work requests from a completion channel.  pyverbs 44 (Debian 12, what the setup installs) has
two gaps that decide how a worker waits for them, both seen in the guest on Soft-RoCE:

- its blocking waits (``CMEvent(channel)``, ``CompChannel.get_cq_event``) keep the GIL, so a
  helper thread blocked in one stops the whole process;
- neither channel exposes its file descriptor.

Each channel *is* one descriptor (``/dev/infiniband/rdma_cm`` for the CM channel, an
``anon_inode:[infinibandevent]`` for a completion channel), so :func:`open_channel` notes the
descriptors that appear while pyverbs creates the channel, checks that exactly one of them is
what the channel must be, and makes it non-blocking.  The event loop then watches it
(``add_reader``); a read with nothing pending raises ``EAGAIN`` instead of blocking.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: What a channel's descriptor links to in /proc/self/fd, by channel kind.
CM_CHANNEL = "/dev/infiniband/rdma_cm"
COMPLETION_CHANNEL = "anon_inode:[infinibandevent]"


def _descriptors() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            continue
    return out


def open_channel(create: Callable[[], T], kind: str) -> tuple[T, int]:
    """``create()`` (a pyverbs channel constructor) and the channel's descriptor, non-blocking.

    ``kind`` is what the descriptor must link to (:data:`CM_CHANNEL`,
    :data:`COMPLETION_CHANNEL`); another thread opening descriptors meanwhile cannot be
    mistaken for the channel, and two new descriptors of that kind are an error rather than a
    guess."""
    before = _descriptors()
    channel = create()
    found = [fd for fd, link in _descriptors().items() if link == kind and before.get(fd) != kind]
    if len(found) != 1:
        raise RuntimeError(
            f"cannot tell the new {kind} descriptor of {type(channel).__name__}: found {found}"
        )
    fd = found[0]
    os.set_blocking(fd, False)
    return channel, fd


def take_cq_events(channel: Any, cq: Any) -> None:
    """Acknowledge every completion event pending on ``channel`` for ``cq`` and re-arm the CQ,
    so the next completion raises a new event; the caller then polls ``cq`` until it is empty
    (a completion that arrived before the re-arm is polled now, one after it raises an event).

    The channel is non-blocking (:func:`open_channel`): its ``EAGAIN`` means "no more events".
    Any other error is raised, after acknowledging what was taken (``ibv_destroy_cq`` waits
    for every event to be acknowledged)."""
    events = 0
    try:
        while True:
            try:
                channel.get_cq_event(cq)
            except Exception as exc:
                if getattr(exc, "error_code", None) == errno.EAGAIN:
                    break
                raise
            events += 1
    finally:
        if events:
            cq.ack_events(events)
    if events:
        cq.req_notify()
