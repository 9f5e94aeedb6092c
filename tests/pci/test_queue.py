"""The polled queue pair against a fake controller working on plain memory.

The fake plays the controller's side of NVMe Base 2.0 §3.3.1/§4.6: it consumes SQEs up to the
SQ tail doorbell and posts CQEs with the Phase Tag it owes on each pass of the CQ.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from nvmf.memory.source import Region
from nvmf.pci.queue import QueueFullError, QueueLayout, QueueMemory, QueuePair
from nvmf.pci.registers import doorbell_offset
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import CQE, SQE

PAGE = 4096


class FakeController:
    def __init__(self, depth: int, dstrd: int = 0) -> None:
        self.depth = depth
        self.sq = bytearray(depth * 64)
        self.cq = bytearray(depth * 16)
        self.prp = bytearray(depth * PAGE)
        self.prp_cmb = bytearray(depth * PAGE)
        self.bar0 = bytearray(0x2000)
        self.dstrd = dstrd
        self.head = 0  # SQ head (controller side)
        self.cq_tail = 0
        self.phase = 1
        self.seen: list[tuple[int, ...]] = []

    def doorbell(self, qid: int, completion: bool) -> int:
        return struct.unpack_from("<I", self.bar0, doorbell_offset(qid, completion, self.dstrd))[0]

    def process(self, qid: int = 1, status: int = 0, count: int | None = None) -> None:
        tail = self.doorbell(qid, False)
        done = 0
        while self.head != tail and (count is None or done < count):
            fields = SQE.unpack_from(self.sq, self.head * 64)
            self.seen.append(fields)
            self.head = (self.head + 1) % self.depth
            cid = fields[2]
            CQE.pack_into(
                self.cq, self.cq_tail * 16, 7, 0, self.head, qid, cid, (status << 1) | self.phase
            )
            self.cq_tail += 1
            if self.cq_tail == self.depth:
                self.cq_tail = 0
                self.phase ^= 1
            done += 1


def make_pair(
    depth: int = 4, dstrd: int = 0, cmb_lists: bool = False
) -> tuple[QueuePair, FakeController]:
    fake = FakeController(depth, dstrd)
    layout = QueueLayout(
        qid=1,
        depth=depth,
        dstrd=dstrd,
        page_size=PAGE,
        lba_size=512,
        sq=QueueMemory("dram", 0, depth * 64, 0x10_0000),
        cq=QueueMemory("dram", PAGE, depth * 16, 0x10_1000),
        prp_lists=QueueMemory("dram", 2 * PAGE, depth * PAGE, 0x20_0000),
        prp_lists_cmb=QueueMemory("cmb", 0, depth * PAGE, 0xC000_0000) if cmb_lists else None,
        cmb_read=True,
        cmb_write=True,
    )
    pair = QueuePair(
        layout,
        sq=memoryview(fake.sq),
        cq=memoryview(fake.cq),
        prp_lists=memoryview(fake.prp),
        doorbells=memoryview(fake.bar0),
        prp_lists_cmb=memoryview(fake.prp_cmb) if cmb_lists else None,
    )
    return pair, fake


def data_region(placement: str = "dram", iova: int = 0x40_0000) -> Region:
    return Region(memoryview(bytearray(256 * 1024)), placement, iova=iova)


def test_submit_rings_the_tail_doorbell_and_reap_the_head() -> None:
    pair, fake = make_pair(depth=4, dstrd=1)
    cid = pair.submit(IoOpcode.WRITE, 1, 10, 8, data_region(), 0, 4096)
    assert fake.doorbell(1, False) == 1  # at 1000h + 2*1*(4<<1)
    assert pair.reap() == []  # nothing posted: phase still 0 in memory
    assert fake.doorbell(1, True) == 0
    fake.process()
    (done,) = pair.reap()
    assert done.cid == cid and done.status == 0 and done.result == 7
    assert fake.doorbell(1, True) == 1
    opcode, _, _, nsid, *_ = fake.seen[0]
    assert (opcode, nsid) == (IoOpcode.WRITE, 1)


def test_phase_flips_on_every_wrap() -> None:
    pair, fake = make_pair(depth=4)
    region = data_region()
    reaped = []
    for _ in range(11):  # almost three passes of a 4-entry CQ
        pair.submit(IoOpcode.READ, 1, 0, 1, region, 0, 512)
        fake.process()
        reaped += pair.reap()
    assert len(reaped) == 11
    assert pair.cq_head == 11 % 4
    assert pair.phase == 1 ^ ((11 // 4) & 1)
    # A stale entry from the previous pass (old phase) is not taken for a new one.
    assert pair.reap() == []


def test_error_status_is_reported_without_phase_bit() -> None:
    pair, fake = make_pair()
    pair.submit(IoOpcode.READ, 1, 0, 1, data_region(), 0, 512)
    fake.process(status=0x0281)  # SCT 2 (media), SC 81h (unrecovered read error)
    (done,) = pair.reap()
    assert done.status == 0x0281


def test_full_queue_refuses_until_the_controller_reports_progress() -> None:
    pair, fake = make_pair(depth=4)
    region = data_region()
    for _ in range(3):
        pair.submit(IoOpcode.WRITE, 1, 0, 1, region, 0, 512)
    with pytest.raises(QueueFullError):
        pair.submit(IoOpcode.WRITE, 1, 0, 1, region, 0, 512)
    fake.process(count=1)
    assert len(pair.reap()) == 1
    pair.submit(IoOpcode.WRITE, 1, 0, 1, region, 0, 512)
    fake.process()
    assert len(pair.reap()) == 3
    assert pair.outstanding == 0


def test_prp_list_is_written_in_the_commands_slot() -> None:
    pair, fake = make_pair()
    region = data_region()
    cid = pair.submit(IoOpcode.WRITE, 1, 0, 256, region, 4096, 128 * 1024)
    fake.process()
    fields = fake.seen[0]
    dptr = fields[7]
    prp1, prp2 = struct.unpack("<QQ", dptr)
    assert prp1 == 0x40_0000 + 4096
    assert prp2 == 0x20_0000 + cid * PAGE
    entries = struct.unpack_from("<31Q", fake.prp, cid * PAGE)
    assert entries == tuple(0x40_0000 + 4096 + i * PAGE for i in range(1, 32))


def test_prp_list_goes_to_the_cmb_with_cmb_data() -> None:
    pair, fake = make_pair(cmb_lists=True)
    region = data_region("cmb", iova=0xC010_0000)
    cid = pair.submit(IoOpcode.READ, 1, 0, 24, region, 0, 12 * 1024)
    fake.process()
    _, prp2 = struct.unpack("<QQ", fake.seen[0][7])
    assert prp2 == 0xC000_0000 + cid * PAGE
    assert struct.unpack_from("<2Q", fake.prp_cmb, cid * PAGE) == (0xC010_1000, 0xC010_2000)
    assert fake.prp == bytearray(len(fake.prp))


def test_flush_and_length_checks() -> None:
    pair, fake = make_pair()
    pair.submit(IoOpcode.FLUSH, 1)
    fake.process()
    assert fake.seen[0][0] == IoOpcode.FLUSH and fake.seen[0][7] == bytes(16)
    with pytest.raises(ValueError, match="blocks"):
        pair.submit(IoOpcode.WRITE, 1, 0, 2, data_region(), 0, 512)
    with pytest.raises(ValueError, match="IOVA"):
        pair.submit(IoOpcode.WRITE, 1, 0, 1, Region(memoryview(bytearray(4096)), "dram"), 0, 512)


def test_cmb_data_needs_rds_and_wds() -> None:
    pair, fake = make_pair()
    layout = pair.layout

    strict = QueuePair(
        replace(layout, cmb_read=False, cmb_write=True),
        sq=memoryview(fake.sq),
        cq=memoryview(fake.cq),
        prp_lists=memoryview(fake.prp),
        doorbells=memoryview(fake.bar0),
    )
    region = data_region("cmb")
    with pytest.raises(ValueError, match=r"CMBSZ\.RDS"):
        strict.submit(IoOpcode.READ, 1, 0, 1, region, 0, 512)
    strict.submit(IoOpcode.WRITE, 1, 0, 1, region, 0, 512)


def test_release_leaves_the_shared_doorbell_view_usable() -> None:
    fake = FakeController(4)
    bar0 = memoryview(fake.bar0).cast("I")
    pair, _ = make_pair()
    other = QueuePair(
        pair.layout,
        sq=memoryview(fake.sq),
        cq=memoryview(fake.cq),
        prp_lists=memoryview(fake.prp),
        doorbells=bar0,
    )
    other.release()
    bar0[0] = 5  # the controller's registers stay reachable after a pair is gone
    assert fake.bar0[0] == 5
