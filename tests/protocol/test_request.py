"""The data-path request state machine (docs/architecture.md): every allowed path ends in
COMPLETED, every other move raises InvalidTransition and leaves the state alone."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvmf.memory.staging import StagingPool
from nvmf.protocol.request import (
    TRANSITIONS,
    Direction,
    InvalidTransition,
    ReqState,
    Request,
)
from nvmf.wire.sqe import SGL_INCAPSULE, SGL_TCP_TRANSPORT, SglDescriptor, Sqe
from nvmf.wire.status import WireError

S = ReqState

#: The table written out from the module docstring and SPDK's spdk_nvmf_tcp_req_state: the
#: normal path, plus an early completion (straight to TRANSFERRING_C2H) from any state that has
#: not started executing.
EXPECTED: set[tuple[ReqState, ReqState]] = {
    (S.NEW, S.NEED_BUFFER),
    (S.NEW, S.READY),
    (S.NEW, S.TRANSFERRING_C2H),
    (S.NEED_BUFFER, S.TRANSFERRING_H2C),
    (S.NEED_BUFFER, S.READY),
    (S.NEED_BUFFER, S.TRANSFERRING_C2H),
    (S.TRANSFERRING_H2C, S.READY),
    (S.TRANSFERRING_H2C, S.TRANSFERRING_C2H),
    (S.READY, S.EXECUTING),
    (S.READY, S.TRANSFERRING_C2H),
    (S.EXECUTING, S.EXECUTED),
    (S.EXECUTED, S.TRANSFERRING_C2H),
    (S.TRANSFERRING_C2H, S.COMPLETED),
}
ALL_PAIRS = list(itertools.product(ReqState, ReqState))


def request(state: ReqState = S.NEW) -> Request:
    return Request(sqe=Sqe(opcode=0x02, cid=0x42), qid=1, state=state)


def test_table_is_the_documented_one() -> None:
    assert set(TRANSITIONS) == set(ReqState)
    actual = {(a, b) for a, nexts in TRANSITIONS.items() for b in nexts}
    assert actual == EXPECTED


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=lambda s: s.name)
def test_every_transition(old: ReqState, new: ReqState) -> None:
    req = request(old)
    if (old, new) in EXPECTED:
        req.advance(new)
        assert req.state is new
    else:
        with pytest.raises(InvalidTransition) as info:
            req.advance(new)
        assert req.state is old
        assert "cid 66" in str(info.value)
        assert old.label in str(info.value) and new.label in str(info.value)


def all_paths(state: ReqState, seen: tuple[ReqState, ...] = ()) -> list[tuple[ReqState, ...]]:
    path = (*seen, state)
    assert state not in seen, f"cycle: {path}"
    if not TRANSITIONS[state]:
        return [path]
    return [p for nxt in TRANSITIONS[state] for p in all_paths(nxt, path)]


def test_every_path_from_new_ends_completed() -> None:
    paths = all_paths(S.NEW)
    assert all(p[-1] is S.COMPLETED for p in paths)
    # Every state is on some path, and the full data path is one of them.
    assert {s for p in paths for s in p} == set(ReqState)
    assert tuple(ReqState) in paths
    for path in paths:
        req = request()
        for state in path[1:]:
            req.advance(state)
        assert req.state is S.COMPLETED


def test_completed_is_terminal() -> None:
    for state in ReqState:
        with pytest.raises(InvalidTransition):
            request(S.COMPLETED).advance(state)


@given(st.lists(st.sampled_from(list(ReqState)), max_size=20))
def test_random_moves_follow_the_table(moves: list[ReqState]) -> None:
    req = request()
    for new in moves:
        old = req.state
        try:
            req.advance(new)
        except InvalidTransition:
            assert (old, new) not in EXPECTED and req.state is old
        else:
            assert (old, new) in EXPECTED and req.state is new


def test_request_defaults_and_cid() -> None:
    req = request()
    assert req.cid == 0x42 and req.state is S.NEW and req.direction is Direction.NONE
    assert req.data is None and req.staging is None and req.status.ok
    assert req.ttag == -1


def test_load_decodes_the_hot_fields_and_resets_the_last_command() -> None:
    """A reused request (the transport's per-queue requests) starts each command afresh: the
    fields the data path reads come from the new SQE, and nothing of the last command stays."""
    first = Sqe(opcode=0x02, cid=7, nsid=1, cdw10=0x1000, cdw11=0x2, cdw12=0x4000_0007)
    first.sgl = SglDescriptor.tcp_transport(4096)
    req = Request(first, qid=3)
    assert (req.opcode, req.cid, req.nsid) == (0x02, 7, 1)
    assert (req.cdw10, req.cdw11, req.cdw12) == (0x1000, 0x2, 0x4000_0007)
    assert (req.dptr_address, req.dptr_length, req.dptr_type) == (0, 4096, SGL_TCP_TRANSPORT)
    assert req.sqe == first
    req.advance(S.NEED_BUFFER)
    req.sgl_length, req.incapsule, req.c2h_length, req.ttag = 4096, True, 4096, 5
    second = Sqe(opcode=0x01, cid=8, nsid=2, dptr=SglDescriptor.incapsule(512).encode())
    req.load(second.encode())
    assert (req.opcode, req.cid, req.nsid, req.cdw10, req.cdw12) == (0x01, 8, 2, 0, 0)
    assert (req.dptr_address, req.dptr_length, req.dptr_type) == (0, 512, SGL_INCAPSULE)
    assert req.state is S.NEW and req.sgl_length == 0 and not req.incapsule
    assert req.c2h_length == 0 and req.ttag == -1 and req.sqe == second and req.qid == 3


def test_load_refuses_a_short_sqe() -> None:
    with pytest.raises(WireError, match="need 64 bytes, got 63"):
        request().load(bytes(63))


def held(req: Request) -> tuple[object, object]:
    return req.staging, req.data


def test_release_returns_the_buffer_once() -> None:
    pool = StagingPool(budget=1 << 20)
    req = request()
    buf = pool.get(4096)
    assert buf is not None
    req.staging, req.data = buf, buf.view
    assert pool.in_use == 4096
    req.release()
    assert pool.in_use == 0 and held(req) == (None, None)
    req.release()  # idempotent
    assert pool.in_use == 0
