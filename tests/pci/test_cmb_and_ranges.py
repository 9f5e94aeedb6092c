"""CMBSZ/CMBLOC decisions, the CMB allocator, the IOVA allocator and DMA bookkeeping."""

from __future__ import annotations

import pytest

from nvmf.memory.source import DramSource
from nvmf.pci.cmb import CmbInfo, CmbPlacementError, CmbSource
from nvmf.pci.dma import DmaSpace
from nvmf.pci.ranges import RangeAllocator

MIB = 1 << 20
#: QEMU 7.2's CMB with cmb_size_mb=16: SZ=16, SZU=2 (1 MiB), WDS RDS LISTS SQS, no CQS.
QEMU_CMBSZ = (16 << 12) | (2 << 8) | 0b11101
#: QEMU's CMBLOC: BIR 2, CDPMLS and CDPCILS, OFST 0.
QEMU_CMBLOC = 0x62


def test_qemu_cmb_decoded() -> None:
    info = CmbInfo(QEMU_CMBLOC, QEMU_CMBSZ)
    assert info.size == 16 * MIB
    assert info.bar == 2
    assert info.offset == 0
    assert [u for u in ("sq", "cq", "lists", "read", "write") if info.allows(u)] == [
        "sq",
        "lists",
        "read",
        "write",
    ]


def test_placements_the_controller_refuses_name_the_bit() -> None:
    info = CmbInfo(QEMU_CMBLOC, QEMU_CMBSZ)
    info.require("sq")
    with pytest.raises(CmbPlacementError, match=r"CQs in the CMB need CMBSZ\.CQS"):
        info.require("cq")
    no_sq = CmbInfo(QEMU_CMBLOC, QEMU_CMBSZ & ~1)
    with pytest.raises(CmbPlacementError, match=r"SQs in the CMB need CMBSZ\.SQS"):
        no_sq.require("sq")
    with pytest.raises(CmbPlacementError, match=r"CMBSZ\.SZ is 0"):
        CmbInfo(0, 0).require("write")


def test_cmb_offset_in_szu_units() -> None:
    info = CmbInfo((3 << 12) | 4, (8 << 12) | (1 << 8) | 1)  # BIR 4, OFST 3 x 64 KiB
    assert info.bar == 4
    assert info.offset == 3 * 64 * 1024
    assert info.size == 8 * 64 * 1024


def test_cmb_source_regions_carry_their_cmb_address() -> None:
    info = CmbInfo(QEMU_CMBLOC, QEMU_CMBSZ)
    backing = bytearray(1 * MIB)
    source = CmbSource(memoryview(backing), 0xFE00_0000, info)
    a = source.map(100)
    b = source.map(8192)
    assert a.placement == "cmb" and a.size == 4096 and a.iova == 0xFE00_0000
    assert b.iova == 0xFE00_1000 and source.offset_of(b) == 4096
    b.view[:4] = b"abcd"
    assert backing[4096:4100] == b"abcd"
    source.release(a)
    c = source.map(4096)
    assert c.iova == 0xFE00_0000  # reused
    with pytest.raises(MemoryError, match="CMB"):
        source.map(2 * MIB)


def test_range_allocator_reserve_align_free() -> None:
    ranges = RangeAllocator(0, 1 << 20, align=4096)
    ranges.reserve(0x1000, 0x3000)
    first = ranges.alloc(10)
    assert first == 0
    second = ranges.alloc(4096)
    assert second == 0x3000  # skips the reserved pages
    ranges.free(first)
    ranges.free(second)
    assert ranges.alloc(0x2000) == 0x3000  # [0, 0x1000) is too small for two pages
    assert ranges.in_use == 0x2000
    with pytest.raises(ValueError):
        RangeAllocator(0, 10, align=3)


class FakeMapper:
    def __init__(self) -> None:
        self.maps: dict[int, tuple[int, int]] = {}

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        self.maps[iova] = (vaddr, size)

    def unmap_dma(self, iova: int, size: int) -> None:
        assert self.maps.pop(iova)[1] == size


def test_dma_space_avoids_reserved_ranges_and_unmaps() -> None:
    mapper = FakeMapper()
    from nvmf.pci.dma import IOVA_START

    space = DmaSpace(mapper, [(IOVA_START, IOVA_START + MIB)])
    region = DramSource().map(8192)
    iova = space.map(region)
    assert region.iova == iova >= IOVA_START + MIB
    assert mapper.maps[iova][1] == 8192
    with pytest.raises(ValueError):
        space.map(region)
    space.close()
    assert mapper.maps == {} and region.iova is None
    region.close()
