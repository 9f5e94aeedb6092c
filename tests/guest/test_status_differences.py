"""The check the status parity tests make (:func:`unexplained`): what it lets through and what
it does not, so that a parity test can fail."""

from __future__ import annotations

from tests.guest.status_differences import (
    DIFFERENCES,
    RDMA_DIFFERENCES,
    Difference,
    unexplained,
)

LISTED = {"keep alive": Difference("SC 0x01a", "SC 0x000", "why")}


def test_equal_answers_and_listed_differences_pass() -> None:
    kernel = {"read": "SC 0x000", "keep alive": "SC 0x01a"}
    ours = {"read": "SC 0x000", "keep alive": "SC 0x000"}
    assert unexplained(kernel, ours, LISTED) == {}


def test_an_unlisted_difference_fails() -> None:
    kernel = {"read": "SC 0x000", "keep alive": "SC 0x01a"}
    ours = {"read": "SC 0x002 DNR", "keep alive": "SC 0x000"}
    assert unexplained(kernel, ours, LISTED) == {"read": ("SC 0x000", "SC 0x002 DNR")}


def test_a_listed_difference_that_went_away_fails() -> None:
    kernel = ours = {"keep alive": "SC 0x01a"}
    assert unexplained(kernel, ours, LISTED) == {"keep alive": ("SC 0x01a", "SC 0x01a")}


def test_a_listed_difference_with_other_answers_fails() -> None:
    kernel = {"keep alive": "SC 0x01a"}
    ours = {"keep alive": "closed"}
    assert unexplained(kernel, ours, LISTED) == {"keep alive": ("SC 0x01a", "closed")}


def test_a_case_one_side_lacks_fails() -> None:
    assert unexplained({"read": "SC 0x000"}, {}, {}) == {"read": ("SC 0x000", None)}


def test_every_listed_difference_is_a_difference_with_a_reason() -> None:
    for listed in (DIFFERENCES, RDMA_DIFFERENCES):
        for name, d in listed.items():
            assert d.kernel != d.ours, name
            assert len(d.why) > 40, name
