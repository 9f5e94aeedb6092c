"""PRP construction (NVMe Base 2.0 §4.1.1) and SQE encoding (Figure 88) for the PCIe driver."""

from __future__ import annotations

import struct

import pytest

from nvmf.pci import commands
from nvmf.pci.prp import build_prps, page_count

PAGE = 4096
LIST = 0x9000_0000


def test_one_page_uses_prp1_only() -> None:
    prps = build_prps(0x10_0000, 4096, PAGE, LIST)
    assert (prps.prp1, prps.prp2, prps.entries) == (0x10_0000, 0, ())


def test_two_pages_put_the_second_page_in_prp2() -> None:
    prps = build_prps(0x10_0000, 8192, PAGE, LIST)
    assert (prps.prp1, prps.prp2, prps.entries) == (0x10_0000, 0x10_1000, ())


def test_more_pages_use_a_list() -> None:
    prps = build_prps(0x10_0000, 128 * 1024, PAGE, LIST)
    assert prps.prp1 == 0x10_0000
    assert prps.prp2 == LIST
    assert prps.entries == tuple(0x10_0000 + i * PAGE for i in range(1, 32))


def test_unaligned_first_page() -> None:
    # 512 bytes into a page: 8 KiB touch three pages, so PRP2 is a list of two.
    prps = build_prps(0x10_0200, 8192, PAGE, LIST)
    assert prps.prp1 == 0x10_0200
    assert prps.prp2 == LIST
    assert prps.entries == (0x10_1000, 0x10_2000)
    # ... and 3.5 KiB at the same offset stay in one page.
    assert build_prps(0x10_0200, 3584, PAGE, LIST).prp2 == 0
    # ... and 4 KiB there end in the second page: PRP2 is that page, no list.
    assert build_prps(0x10_0200, 4096, PAGE, LIST) == build_prps(0x10_0200, 4096, PAGE, 0)
    assert build_prps(0x10_0200, 4096, PAGE, LIST).prp2 == 0x10_1000


def test_page_count() -> None:
    assert page_count(0, 4096, PAGE) == 1
    assert page_count(4095, 2, PAGE) == 2
    assert page_count(0x200, 8192, PAGE) == 3


def test_refusals() -> None:
    with pytest.raises(ValueError, match="dword"):
        build_prps(0x10_0002, 512, PAGE, LIST)
    with pytest.raises(ValueError, match="list"):
        build_prps(0, (PAGE // 8 + 2) * PAGE, PAGE, LIST)
    with pytest.raises(ValueError, match="page aligned"):
        build_prps(0, 3 * PAGE, PAGE, LIST + 8)
    with pytest.raises(ValueError):
        build_prps(0, 0, PAGE, LIST)


def test_largest_single_list() -> None:
    prps = build_prps(0, (PAGE // 8 + 1) * PAGE, PAGE, LIST)
    assert len(prps.entries) == PAGE // 8


def test_write_sqe_layout() -> None:
    buf = bytearray(128)
    commands.encode_sqe(
        buf,
        64,
        opcode=0x01,
        cid=0x1234,
        nsid=1,
        prp1=0x1122_3344_5566_7000,
        prp2=0x0000_0000_ABCD_E000,
        cdws=commands.read_write(0x1_0000_0002, 8, fua=True),
    )
    sqe = bytes(buf[64:])
    assert buf[:64] == bytes(64)
    assert sqe[0] == 0x01  # opcode
    assert sqe[1] == 0  # FUSE 0, PSDT 00b (PRP)
    assert struct.unpack_from("<H", sqe, 2)[0] == 0x1234  # CID
    assert struct.unpack_from("<I", sqe, 4)[0] == 1  # NSID
    assert sqe[8:24] == bytes(16)  # CDW2, CDW3, MPTR
    assert struct.unpack_from("<Q", sqe, 24)[0] == 0x1122_3344_5566_7000  # PRP1
    assert struct.unpack_from("<Q", sqe, 32)[0] == 0xABCD_E000  # PRP2
    cdw10, cdw11, cdw12, cdw13 = struct.unpack_from("<4I", sqe, 40)
    assert (cdw10, cdw11) == (2, 1)  # SLBA split low/high
    assert cdw12 == (1 << 30) | 7  # FUA, NLB 0's based
    assert cdw13 == 0


def test_queue_creation_and_feature_dwords() -> None:
    assert commands.create_io_cq(3, 64)[:2] == ((63 << 16) | 3, 1)
    assert commands.create_io_cq(3, 64, iv=2, ien=True)[1] == (2 << 16) | 0b11
    assert commands.create_io_sq(3, 64, cqid=3)[:2] == ((63 << 16) | 3, (3 << 16) | 1)
    assert commands.set_number_of_queues(4, 2)[:2] == (0x07, (1 << 16) | 3)
    assert commands.identify(commands.CNS_CONTROLLER)[0] == 1
    assert commands.delete_io_queue(5)[0] == 5
    with pytest.raises(ValueError):
        commands.read_write(0, 0)
    with pytest.raises(ValueError):
        commands.set_number_of_queues(0, 1)
