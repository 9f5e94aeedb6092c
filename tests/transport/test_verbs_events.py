"""open_channel finds the one descriptor a channel constructor opened (pyverbs 44 hides it),
by what it links to, and makes it non-blocking.  The real channels are checked in the guest
(tests/guest/test_rdma_target_guest.py); here constructors that open files stand in."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvmf.transport.verbs_events import open_channel


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
