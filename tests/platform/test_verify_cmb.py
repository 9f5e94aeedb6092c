"""``nvmf doctor --verify-cmb`` against a simulated SSD: a controller that executes the real
queue pair's Read/Write/Flush SQEs, following PRP1, PRP2 and PRP lists to memory by address
(DRAM regions where they were DMA-mapped, the CMB at CBA), with QEMU 7.2's CMB registers.

It can misbehave as a platform that cannot reach its CMB does: Read data meant for the CMB
dropped (the bytes go nowhere) or corrupted.  The check must say MISMATCH then, name the
CMBSZ bit when RDS is clear, refuse ranges beyond the namespace, never write unless allowed
(and restore what it wrote), and release everything on every path.

The real device (QEMU's controller bound to vfio-pci): tests/guest/test_doctor_guest.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from nvmf.cli.main import main
from nvmf.memory.source import Region
from nvmf.pci.cmb import CmbInfo, CmbSource
from nvmf.pci.controller import Namespace
from nvmf.pci.queue import QueueLayout, QueueMemory, QueuePair
from nvmf.pci.registers import doorbell_offset
from nvmf.pci.vfio import VfioError
from nvmf.platform import verify_report
from nvmf.platform.verify_cmb import POISON, VerifyError, verify_cmb
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import CQE, SQE
from tests.media.test_nvme_pci_report import CBA, QEMU_CMBLOC, QEMU_CMBSZ_16, QEMU_REGISTERS

BDF = "0000:00:04.0"
PAGE = 4096
LBA = 512
BLOCKS = 1 << 16  # 32 MiB


class ServedPair(QueuePair):
    """A queue pair whose controller runs each time the host looks for completions."""

    ssd: FakeSsd

    def reap(self, limit: int = 0) -> Any:
        self.ssd.process(self)
        return super().reap(limit)


class FakeSsd:
    """The parts of NvmeController the check uses, over plain memory (see the module doc)."""

    mqes = 64
    max_transfer = 64 << 10
    identify = SimpleNamespace(mn="QEMU NVMe Ctrl", sn="cmb0001", fr="7.2")

    def __init__(self, cmbsz: int = QEMU_CMBSZ_16, cmb_fault: str = "") -> None:
        self.bdf = BDF
        self.cmb_info: CmbInfo | None = CmbInfo(QEMU_CMBLOC, cmbsz)
        self.cmb_mem = bytearray(16 << 20)
        self.cmb: CmbSource | None = CmbSource(memoryview(self.cmb_mem), CBA, self.cmb_info)
        self.media = bytearray((i * 7 + 3) % 251 for i in range(BLOCKS * LBA // 64)) * 64
        self.cmb_fault = cmb_fault
        self.dram: dict[int, memoryview] = {}
        self.next_iova = 1 << 20
        self.pairs: dict[int, tuple[bytearray, bytearray, bytearray, Region | None]] = {}
        self.doorbells = bytearray(0x2000)
        self.head: dict[int, int] = {}
        self.cq_tail: dict[int, int] = {}
        self.phase: dict[int, int] = {}
        self.commands: list[tuple[int, int, int]] = []
        self.deleted: list[int] = []
        self.closed = False
        #: Write commands that succeed before every further one fails (Write Fault).
        self.writes_ok: int | None = None

    # -- what verify_cmb calls -----------------------------------------------------------------

    def namespace(self, nsid: int) -> Namespace:
        return Namespace(nsid, BLOCKS, LBA)

    def read_registers(self) -> dict[str, int]:
        return {**QEMU_REGISTERS, "CMBSZ": self.cmb_info.cmbsz if self.cmb_info else 0}

    def _iova(self, view: memoryview) -> int:
        iova = self.next_iova
        self.next_iova += -(-len(view) // PAGE) * PAGE + PAGE
        self.dram[iova] = view
        return iova

    def map_dma(self, region: Region) -> Region:
        region.iova = self._iova(region.view)
        return region

    def unmap_dma(self, region: Region) -> None:
        assert region.iova is not None
        del self.dram[region.iova]
        region.iova = None

    def map_cmb(self, size: int, uses: tuple[str, ...] = ("read", "write")) -> Region:
        assert self.cmb is not None and self.cmb_info is not None
        for use in uses:
            self.cmb_info.require(use)
        return self.cmb.map(size)

    def create_io_queue_pair(
        self, depth: int, sq_placement: str = "dram", *, lba_size: int = 0
    ) -> QueuePair:
        qid = len(self.pairs) + 1
        sq, cq, prp = bytearray(depth * 64), bytearray(depth * 16), bytearray(depth * PAGE)
        lists_cmb = None
        if self.cmb is not None and self.cmb_info is not None and self.cmb_info.allows("lists"):
            lists_cmb = self.cmb.map(depth * PAGE)
        layout = QueueLayout(
            qid=qid,
            depth=depth,
            dstrd=0,
            page_size=PAGE,
            lba_size=lba_size,
            sq=QueueMemory("dram", 0, len(sq), self._iova(memoryview(sq))),
            cq=QueueMemory("dram", 0, len(cq), self._iova(memoryview(cq))),
            prp_lists=QueueMemory("dram", 0, len(prp), self._iova(memoryview(prp))),
            prp_lists_cmb=QueueMemory("cmb", 0, depth * PAGE, lists_cmb.iova or 0)
            if lists_cmb is not None
            else None,
            cmb_read=bool(self.cmb_info and self.cmb_info.allows("read")),
            cmb_write=bool(self.cmb_info and self.cmb_info.allows("write")),
        )
        pair = ServedPair(
            layout,
            sq=memoryview(sq),
            cq=memoryview(cq),
            prp_lists=memoryview(prp),
            doorbells=memoryview(self.doorbells),
            prp_lists_cmb=lists_cmb.view if lists_cmb is not None else None,
        )
        pair.ssd = self
        self.pairs[qid] = (sq, cq, prp, lists_cmb)
        self.head[qid], self.cq_tail[qid], self.phase[qid] = 0, 0, 1
        return pair

    def delete_io_queue_pair(self, pair: QueuePair) -> None:
        _, _, _, lists_cmb = self.pairs.pop(pair.qid)
        self.deleted.append(pair.qid)
        layout = pair.layout
        for place in (layout.sq, layout.cq, layout.prp_lists):
            del self.dram[place.iova]
        pair.release()
        if lists_cmb is not None and self.cmb is not None:
            self.cmb.release(lists_cmb)

    def close(self) -> None:
        self.closed = True

    # -- the controller's side -----------------------------------------------------------------

    def _memory(self, address: int, length: int) -> memoryview:
        if CBA <= address < CBA + len(self.cmb_mem):
            return memoryview(self.cmb_mem)[address - CBA : address - CBA + length]
        for iova, view in self.dram.items():
            if iova <= address and address + length <= iova + len(view):
                return view[address - iova : address - iova + length]
        raise AssertionError(f"DMA to {address:#x}, which is mapped nowhere")

    def _pages(self, prp1: int, prp2: int, length: int) -> list[tuple[int, int]]:
        first = min(length, PAGE - prp1 % PAGE)
        out = [(prp1, first)]
        rest = length - first
        if rest <= 0:
            return out
        if rest <= PAGE:
            return [*out, (prp2, rest)]
        count = -(-rest // PAGE)
        entries = struct.unpack(f"<{count}Q", self._memory(prp2, count * 8))
        for entry in entries:
            out.append((entry, min(PAGE, rest)))
            rest -= PAGE
        return out

    def process(self, pair: QueuePair) -> None:
        qid = pair.qid
        sq, cq, _, _ = self.pairs[qid]
        depth = pair.depth
        tail = struct.unpack_from("<I", self.doorbells, doorbell_offset(qid, False, 0))[0]
        while self.head[qid] != tail:
            fields = SQE.unpack_from(sq, self.head[qid] * 64)
            opcode, cid, dptr, cdws = fields[0], fields[2], fields[7], fields[8:]
            prp1, prp2 = struct.unpack("<QQ", dptr)
            slba = cdws[0] | (cdws[1] << 32)
            nlb = (cdws[2] & 0xFFFF) + 1
            self.commands.append((opcode, slba, nlb))
            status = 0
            writes = sum(1 for op, *_ in self.commands if op == IoOpcode.WRITE)
            if opcode == IoOpcode.WRITE and self.writes_ok is not None:
                status = 0x280 if writes > self.writes_ok else 0  # SCT 2h, SC 80h: Write Fault
            if opcode in (IoOpcode.READ, IoOpcode.WRITE) and not status:
                at = slba * LBA
                for address, n in self._pages(prp1, prp2, nlb * LBA):
                    memory = self._memory(address, n)
                    if opcode == IoOpcode.WRITE:
                        self.media[at : at + n] = memory
                    elif address >= CBA and self.cmb_fault == "drop":
                        pass  # the data went somewhere else: the CMB keeps what it had
                    elif address >= CBA and self.cmb_fault == "corrupt":
                        memory[:] = bytes(b ^ 0x01 for b in self.media[at : at + n])
                    else:
                        memory[:] = self.media[at : at + n]
                    at += n
            self.head[qid] = (self.head[qid] + 1) % depth
            CQE.pack_into(
                cq,
                self.cq_tail[qid] * 16,
                0,
                0,
                self.head[qid],
                qid,
                cid,
                (status << 1) | self.phase[qid],
            )
            self.cq_tail[qid] += 1
            if self.cq_tail[qid] == depth:
                self.cq_tail[qid], self.phase[qid] = 0, self.phase[qid] ^ 1


def _released_all(ssd: FakeSsd, released: list[str]) -> None:
    assert ssd.closed and ssd.deleted == [1] and not ssd.pairs
    assert ssd.dram == {}  # every DMA mapping removed
    assert ssd.cmb is not None and ssd.cmb.space.in_use == 0
    assert any("queue pair 1 deleted" in r for r in released)
    assert any("controller disabled" in r for r in released)


def test_a_cmb_that_works_matches_and_nothing_is_written() -> None:
    ssd = FakeSsd()
    before = bytes(ssd.media)
    result = verify_cmb(BDF, slba=2048, length=1 << 20, opener=lambda _: ssd)
    assert result.match and result.mismatched_bytes == 0 and result.first_mismatch is None
    assert bytes(ssd.media) == before and not result.written
    assert {op for op, *_ in ssd.commands} == {IoOpcode.READ}
    # Each read: 1 MiB in 64 KiB commands (MDTS here), from LBA 2048.
    assert len(ssd.commands) == 32 and ssd.commands[0][1:] == (2048, 128)
    assert (result.slba, result.blocks, result.bytes) == (2048, 2048, 1 << 20)
    what = [t.what for t in result.transfers]
    assert what == ["read into DRAM", "read into the CMB", "CPU read of the CMB through BAR2"]
    for t in result.transfers:
        assert t.bytes == 1 << 20 and t.seconds > 0 and t.mb_per_s > 0
    assert result.cmb_prp_lists == "cmb"  # QEMU sets CMBSZ.LISTS
    assert result.cmb["CMBSZ"]["RDS"] == 1 and result.cmb["address"] == CBA
    assert not result.all_zero and result.sha256_dram == result.sha256_cmb
    expected = hashlib.sha256(before[2048 * LBA : 2048 * LBA + (1 << 20)]).hexdigest()
    assert result.sha256_cmb == expected  # the very blocks asked for
    _released_all(ssd, result.released)


@pytest.mark.parametrize("fault", ["drop", "corrupt"])
def test_data_that_does_not_land_in_the_cmb_is_a_mismatch(fault: str) -> None:
    ssd = FakeSsd(cmb_fault=fault)
    data = bytes(ssd.media[: 256 << 10])
    result = verify_cmb(BDF, length=256 << 10, opener=lambda _: ssd)
    assert not result.match and result.first_mismatch == 0
    if fault == "drop":  # every byte still the poison, save those of data that equal it
        assert result.mismatched_bytes == result.poison_left == len(data) - data.count(POISON)
    else:
        assert result.mismatched_bytes == len(data)
        assert result.poison_left == data.count(POISON ^ 1)
    text = verify_report.render_text(result)
    assert "MISMATCH" in text and "staging_placement cmb" in text
    assert "first at offset 0x0" in text
    _released_all(ssd, result.released)


def test_zeroes_are_still_checked_against_the_poison() -> None:
    ssd = FakeSsd(cmb_fault="drop")
    ssd.media[:] = bytes(len(ssd.media))
    result = verify_cmb(BDF, length=64 << 10, opener=lambda _: ssd)
    assert not result.match and result.poison_left == 64 << 10
    good = FakeSsd()
    good.media[:] = bytes(len(good.media))
    result = verify_cmb(BDF, length=64 << 10, opener=lambda _: good)
    assert result.match and result.all_zero
    assert any("read as zeroes" in n for n in result.notes)


def test_write_mode_writes_a_pattern_and_puts_the_blocks_back() -> None:
    ssd = FakeSsd()
    before = bytes(ssd.media)
    result = verify_cmb(BDF, slba=8, length=128 << 10, write=True, opener=lambda _: ssd)
    assert result.match and result.written and result.dram_matches_pattern
    assert bytes(ssd.media) == before  # restored
    assert IoOpcode.WRITE in {op for op, *_ in ssd.commands}
    assert IoOpcode.FLUSH in {op for op, *_ in ssd.commands}
    assert result.transfers[0].what == "write from DRAM"
    assert any("written back" in n for n in result.notes)
    _released_all(ssd, result.released)


def test_no_rds_is_refused_naming_the_bit_and_released() -> None:
    ssd = FakeSsd(cmbsz=QEMU_CMBSZ_16 & ~(1 << 3))
    with pytest.raises(VerifyError, match=r"cannot be a read destination: CMBSZ\.RDS") as exc:
        verify_cmb(BDF, opener=lambda _: ssd)
    assert ssd.closed and "controller disabled" in exc.value.released[-1]
    assert ssd.commands == []


def test_no_cmb_is_refused() -> None:
    ssd = FakeSsd()
    ssd.cmb_info = ssd.cmb = None
    with pytest.raises(VerifyError, match=r"no CMB to verify: CAP.CMBS is clear or CMBSZ.SZ"):
        verify_cmb(BDF, opener=lambda _: ssd)
    assert ssd.closed


def test_a_range_past_the_namespace_is_refused() -> None:
    ssd = FakeSsd()
    with pytest.raises(VerifyError, match=r"runs past namespace 1's 65536 blocks \(NSZE\)"):
        verify_cmb(BDF, slba=BLOCKS - 1, length=4096, opener=lambda _: ssd)
    assert ssd.closed and ssd.commands == []


def test_a_failed_command_names_its_status_and_still_releases() -> None:
    ssd = FakeSsd()
    real = ssd.process

    def failing(pair: QueuePair) -> None:
        real(pair)
        _, cq, _, _ = ssd.pairs[pair.qid]
        for at in range(0, len(cq), 16):  # every posted CQE: Unrecovered Read Error
            dw0, dw1, sqhd, sqid, cid, status = CQE.unpack_from(cq, at)
            CQE.pack_into(cq, at, dw0, dw1, sqhd, sqid, cid, (status & 1) | (0x281 << 1))

    ssd.process = failing  # type: ignore[method-assign]
    with pytest.raises(VerifyError, match=r"read into DRAM: .*status 0x0281 \(SCT 0x2, SC 0x81\)"):
        verify_cmb(BDF, length=4096, opener=lambda _: ssd)
    _released_all(ssd, ["I/O queue pair 1 deleted", "controller disabled"])


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            VfioError(errno.ENODEV, "PCI device 0000:00:04.0 is bound to nvme, not vfio-pci: ..."),
            "needs 0000:00:04.0 bound to vfio-pci and not in use: PCI device",
        ),
        (
            VfioError(errno.EBUSY, "/dev/vfio/3 is busy: another process owns PCI device X"),
            "stop it first",
        ),
    ],
)
def test_a_device_not_bound_or_busy_is_refused_clearly(error: OSError, words: str) -> None:
    def opener(_: str) -> Any:
        raise error

    with pytest.raises(VerifyError, match=words):
        verify_cmb(BDF, opener=opener)


def test_the_poison_is_not_a_likely_data_byte() -> None:
    assert POISON not in (0x00, 0xFF)


def test_cli_refuses_a_device_our_target_owns(tmp_path: Any, capsys: Any) -> None:
    from nvmf.cli.serve import Watch
    from tests.platform.test_platform_target import TREE_BDF, _service, _Target

    target = _Target(str(tmp_path / "c.sock"), Watch(_service(), None).handlers())
    try:
        code = main(["doctor", "--verify-cmb", TREE_BDF, "--control-socket", target.path, "--json"])
    finally:
        target.close()
    assert code == 2
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["ok"] is False and "this project's target (pid" in data["error"]
    assert "stop it to verify" in out.err


def test_cli_refuses_what_is_not_a_pci_address(tmp_path: Any, capsys: Any) -> None:
    code = main(["doctor", "--verify-cmb", "nvme0", "--control-socket", str(tmp_path / "x")])
    assert code == 2
    assert "is not a PCI address" in capsys.readouterr().err


def test_a_controller_error_midway_is_reported_not_raised_raw() -> None:
    ssd = FakeSsd()

    def broken(nsid: int) -> Namespace:
        raise RuntimeError("Identify Namespace 1 failed: status 0x000b")

    ssd.namespace = broken  # type: ignore[method-assign]
    with pytest.raises(VerifyError, match=r"Identify Namespace 1 failed") as exc:
        verify_cmb(BDF, opener=lambda _: ssd)
    assert ssd.closed and "controller disabled" in exc.value.released[-1]


def test_a_restore_that_fails_says_the_blocks_keep_the_pattern() -> None:
    ssd = FakeSsd()
    ssd.writes_ok = 2  # the pattern (128 KiB in two commands) goes; writing back fails
    with pytest.raises(VerifyError, match=r"restoring the blocks: .*keep the test pattern") as exc:
        verify_cmb(BDF, length=128 << 10, write=True, opener=lambda _: ssd)
    assert ssd.closed and "controller disabled" in exc.value.released[-1]
