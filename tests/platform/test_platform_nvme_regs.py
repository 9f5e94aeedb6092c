"""NVMe register decoding and the CMBMSC.CRE dance, against a model of QEMU's controller."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvmf.pci.registers import CAP, CMBLOC, CMBMSC, CMBSZ, size_unit
from nvmf.platform.nvme_regs import MmapWindow, read_cmb_registers

MIB = 1 << 20


def qemu_cmbsz(size_mb: int) -> int:
    """CMBSZ as QEMU's nvme_cmb_enable_regs builds it: SQS LISTS RDS WDS, SZU=2 (MiB), SZ=size."""
    return (size_mb << 12) | (2 << 8) | 0b11101


#: QEMU's CMBLOC: BIR=2, CDPMLS and CDPCILS set, OFST 0.
QEMU_CMBLOC = 0x62


class QemuLikeWindow:
    """BAR0 of a controller with CAP.CMBS: CMBLOC/CMBSZ read 0 unless CMBMSC.CRE is set."""

    def __init__(self, *, cre: bool = False, writable: bool = True, cmbs: bool = True) -> None:
        self.writable = writable
        self.cap = (1 << 57 if cmbs else 0) | (1 << 37) | 0x7FF  # CMBS, NVM command set, MQES
        self.cmbmsc = 1 if cre else 0
        self.writes: list[tuple[int, int]] = []
        self.legacy = not cmbs

    def read32(self, offset: int) -> int:
        enabled = self.legacy or self.cmbmsc & 1
        regs = {
            0x00: self.cap & 0xFFFFFFFF,
            0x04: self.cap >> 32,
            0x08: 0x00010400,
            0x38: QEMU_CMBLOC if enabled else 0,
            0x3C: qemu_cmbsz(16) if enabled else 0,
            0x50: self.cmbmsc & 0xFFFFFFFF,
            0x54: self.cmbmsc >> 32,
        }
        return regs.get(offset, 0)

    def write32(self, offset: int, value: int) -> None:
        assert self.writable
        self.writes.append((offset, value))
        if offset == 0x50:
            self.cmbmsc = (self.cmbmsc & ~0xFFFFFFFF) | value


def test_cmbsz_decodes_qemu_16_mib() -> None:
    fields = CMBSZ.decode(qemu_cmbsz(16))
    assert fields == {"SQS": 1, "CQS": 0, "LISTS": 1, "RDS": 1, "WDS": 1, "SZU": 2, "SZ": 16}
    assert fields["SZ"] * size_unit(fields["SZU"]) == 16 * MIB
    assert CMBLOC.decode(QEMU_CMBLOC)["BIR"] == 2


def test_size_units_follow_the_spec() -> None:
    assert [size_unit(n) for n in range(7)] == [
        4 << 10,
        64 << 10,
        1 << 20,
        16 << 20,
        256 << 20,
        4 << 30,
        64 << 30,
    ]


def test_register_layout_offsets() -> None:
    assert (CAP.offset, CMBLOC.offset, CMBSZ.offset, CMBMSC.offset) == (0x00, 0x38, 0x3C, 0x50)
    assert CAP.field("CMBS").lo == 57


def test_cre_is_set_for_the_read_and_restored() -> None:
    window = QemuLikeWindow(cre=False)
    regs = read_cmb_registers(window)
    assert regs.enabled_cre
    assert regs.cmb_size == 16 * MIB
    assert regs.cmb_bar == 2 and regs.cmb_offset == 0
    assert regs.cmb_uses == ["submission queues", "read data", "write data", "PRP/SGL lists"]
    assert window.writes == [(0x50, 1), (0x50, 0)]
    assert window.cmbmsc == 0  # left as found


def test_no_write_when_cre_already_set() -> None:
    window = QemuLikeWindow(cre=True)
    regs = read_cmb_registers(window)
    assert not regs.enabled_cre and window.writes == []
    assert regs.cmb_size == 16 * MIB


def test_read_only_window_reports_why_the_cmb_reads_zero() -> None:
    window = QemuLikeWindow(cre=False, writable=False)
    regs = read_cmb_registers(window)
    assert regs.cmb_size == 0 and not regs.enabled_cre
    assert "CMBMSC.CRE is 0" in regs.notes[0]


def test_allow_enable_false_never_writes() -> None:
    window = QemuLikeWindow(cre=False)
    regs = read_cmb_registers(window, allow_enable=False)
    assert window.writes == [] and regs.cmb_size == 0


def test_pre_1_4_controller_reports_cmb_from_reset() -> None:
    window = QemuLikeWindow(cmbs=False)
    regs = read_cmb_registers(window)
    assert not regs.cmbs and regs.cmb_size == 16 * MIB and window.writes == []


def test_all_ones_means_not_responding() -> None:
    class Dead:
        writable = False

        def read32(self, offset: int) -> int:
            return 0xFFFFFFFF

        def write32(self, offset: int, value: int) -> None:
            raise AssertionError

    regs = read_cmb_registers(Dead())
    assert not regs.responding and "all ones" in regs.notes[0]


def test_mmap_window_reads_a_recorded_file(tmp_path: Path) -> None:
    path = tmp_path / "resource0"
    data = bytearray(256)
    data[0x3C:0x40] = qemu_cmbsz(16).to_bytes(4, "little")
    data[0x50:0x54] = (1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    window = MmapWindow(str(path))
    try:
        assert not window.writable
        assert window.read32(0x3C) == qemu_cmbsz(16)
        assert window.read32(0x1000) == 0  # beyond the recording
        with pytest.raises(PermissionError):
            window.write32(0x50, 0)
    finally:
        window.close()
