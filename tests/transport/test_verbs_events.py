"""open_channel finds the one descriptor a channel constructor opened (pyverbs 44 hides it),
by what it links to, and makes it non-blocking.  The real channels are checked in the guest
(tests/guest/test_rdma_target_guest.py); here constructors that open files stand in."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvmf.transport.verbs_events import open_channel, take_cq_events


@pytest.fixture
def opened() -> Iterator[list[int]]:
    """Descriptors a test opened, closed afterwards."""
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


@pytest.fixture
def target(tmp_path: Path) -> str:
    path = tmp_path / "channel"
    path.write_text("")
    return str(path)


def test_the_new_descriptor_of_that_kind_is_found_and_made_non_blocking(
    target: str, opened: list[int]
) -> None:
    opened.append(os.open(target, os.O_RDONLY))  # open before: not the new channel

    def create() -> int:
        opened.append(os.open(target, os.O_RDONLY))
        return opened[-1]

    made, fd = open_channel(create, target)
    assert fd == made == opened[-1]
    assert not os.get_blocking(fd)


def test_a_descriptor_of_another_kind_is_not_taken_for_the_channel(
    target: str, opened: list[int]
) -> None:
    """Another thread may open descriptors meanwhile: only the channel's kind counts."""

    def create() -> int:
        opened.append(os.open(os.devnull, os.O_RDONLY))  # someone else's, opened meanwhile
        opened.append(os.open(target, os.O_RDONLY))
        return opened[-1]

    made, fd = open_channel(create, target)
    assert fd == made


@pytest.mark.parametrize("count", [0, 2])
def test_none_or_two_new_descriptors_is_an_error_not_a_guess(
    target: str, opened: list[int], count: int
) -> None:
    def create() -> None:
        opened.extend(os.open(target, os.O_RDONLY) for _ in range(count))

    with pytest.raises(RuntimeError, match="cannot tell the new"):
        open_channel(create, target)


class _ChannelError(Exception):
    """Stands in for pyverbs' PyverbsRDMAError: an ``error_code`` attribute."""

    def __init__(self, error_code: int) -> None:
        super().__init__(os.strerror(error_code))
        self.error_code = error_code


class _Channel:
    """A completion channel with ``pending`` events, then ``end`` (EAGAIN: nothing more)."""

    def __init__(self, pending: int, end: int) -> None:
        self.pending = pending
        self.end = end

    def get_cq_event(self, cq: object) -> None:
        if not self.pending:
            raise _ChannelError(self.end)
        self.pending -= 1


class _CQ:
    def __init__(self) -> None:
        self.acked = 0
        self.armed = 0

    def ack_events(self, n: int) -> None:
        self.acked += n

    def req_notify(self) -> None:
        self.armed += 1


def test_take_cq_events_acks_every_pending_event_and_rearms_once() -> None:
    cq = _CQ()
    take_cq_events(_Channel(3, errno.EAGAIN), cq)
    assert (cq.acked, cq.armed) == (3, 1)


def test_take_cq_events_without_events_does_not_rearm() -> None:
    cq = _CQ()
    take_cq_events(_Channel(0, errno.EAGAIN), cq)
    assert (cq.acked, cq.armed) == (0, 0)


def test_a_channel_error_is_raised_after_acking_what_was_taken() -> None:
    cq = _CQ()
    with pytest.raises(_ChannelError) as err:
        take_cq_events(_Channel(2, errno.EIO), cq)
    assert err.value.error_code == errno.EIO
    assert (cq.acked, cq.armed) == (2, 0)  # destroying the CQ waits for acknowledged events
