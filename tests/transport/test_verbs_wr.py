"""The RDMA target's work requests, made once per slot and reused (:mod:`nvmf.transport.
verbs_wr`): each command gets the right opcode, id, flags and local buffer, nothing of an
earlier command's stays behind, and reusing them allocates no C memory per I/O (pyverbs frees a
work request's only when told; one made per I/O leaked 32 bytes).  pyverbs builds work requests
without a device, so this runs anywhere pyverbs imports; posting them runs in the guest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pyverbs.enums as ve
from pyverbs.wr import SGE

from nvmf.transport.verbs_wr import SlotWrs, recv_wr

TAG = 7 << 32
SEND, READ, WRITE = 3, 2, 0
SLOTS = 4


@pytest.fixture
def wrs() -> Iterator[SlotWrs]:
    responses = [SGE(0x10000 + 16 * i, 16, 0x55) for i in range(SLOTS)]
    made = SlotWrs(responses, TAG, SEND, READ, WRITE)
    yield made
    made.close()
    for sge in responses:
        sge.close()


def test_a_read_s_data_is_written_before_its_response(wrs: SlotWrs) -> None:
    wr = wrs.write_then_response(2, 0xA000, 4096, 0x77, 0x1234, 0xFEED000, None)
    assert (wr.opcode, wr.wr_id, wr.send_flags) == (ve.IBV_WR_RDMA_WRITE, TAG | 2, 0)
    sge = wrs.data_sges[2]
    assert (sge.addr, sge.length, sge.lkey) == (0xA000, 4096, 0x77)
    # Chained to the slot's SEND (pyverbs cannot read a chain back: the guest's Reads show it).
    send = wrs.sends[2]
    assert (send.opcode, send.wr_id) == (ve.IBV_WR_SEND, TAG | SEND << 24 | 2)
    assert send.send_flags == ve.IBV_SEND_SIGNALED


def test_a_write_s_data_is_read_into_its_buffer_with_a_signalled_read(wrs: SlotWrs) -> None:
    wr = wrs.read(1, 0xB000, 8192, 0x78, 0x99, 0xC0DE)
    assert (wr.opcode, wr.wr_id) == (ve.IBV_WR_RDMA_READ, TAG | READ << 24 | 1)
    assert wr.send_flags == ve.IBV_SEND_SIGNALED
    sge = wrs.data_sges[1]
    assert (sge.addr, sge.length, sge.lkey) == (0xB000, 8192, 0x78)


def test_invalidate_applies_to_its_own_command_only(wrs: SlotWrs) -> None:
    send = wrs.response(3, 0xABCD)
    assert (send.opcode, send.imm_data) == (ve.IBV_WR_SEND_WITH_INV, 0xABCD)
    # The slot's next command did not ask for it: a plain SEND again.
    assert wrs.response(3, None).opcode == ve.IBV_WR_SEND
    wrs.response(3, 0x5555)
    wrs.write_then_response(3, 0xA000, 512, 1, 2, 3, None)
    assert wrs.sends[3].opcode == ve.IBV_WR_SEND
    assert wrs.response(0, None).wr_id == TAG | SEND << 24  # other slots untouched


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_reusing_them_allocates_nothing_per_io(wrs: SlotWrs) -> None:
    for i in range(1000):  # warm up: anything lazily made is made
        wrs.write_then_response(i % SLOTS, i, 4096, 1, 2, 3, None)
    before = _rss()
    n = 200_000
    for i in range(n):
        slot = i % SLOTS
        wrs.write_then_response(slot, i, 4096, 1, 2, 3, i if i & 1 else None)
        wrs.read(slot, i, 4096, 1, 2, 3)
    # One new SendWR and SGE per call leaked 2 x 32 bytes each: 25 MB here.
    assert _rss() - before < 1 << 20


def test_close_is_idempotent_and_a_receive_wr_owns_its_copy() -> None:
    responses = [SGE(0x1000, 16, 1)]
    made = SlotWrs(responses, TAG, SEND, READ, WRITE)
    made.close()
    made.close()  # nothing freed twice
    responses[0].close()
    wr = recv_wr(TAG | 1 << 24 | 5, 0x2000, 4160, 9)
    assert (wr.wr_id, wr.num_sge) == (TAG | 1 << 24 | 5, 1)
    wr.close()
