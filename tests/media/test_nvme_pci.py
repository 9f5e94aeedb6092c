"""The ``nvme_pci`` medium's parts that need no device: its queue against the fake controller of
tests/pci (PRPs at the staging buffer's IOVA, MDTS splitting, a full SQ's backlog, error
statuses), placement reasons and refusals, and the factory's lazy registration.

The device itself (QEMU's controller bound to vfio-pci): tests/guest/test_nvme_pci_target_guest.py.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import struct
from dataclasses import dataclass, field

import pytest

from nvmf.media.base import MediaError, MediaHandle, ServingCheck, WorkerShare
from nvmf.media.factory import media_kinds, open_media
from nvmf.media.nvme_pci import NvmePciMedia, placement_reason, serving_problem
from nvmf.media.nvme_pci_queue import NvmePciQueue, fabric_status, region_offset
from nvmf.media.nvme_pci_worker import WorkerQueue, handle_info, staging_source
from nvmf.media.queue import FLUSH, READ, WRITE
from nvmf.memory.source import Region
from nvmf.memory.staging import StagingPool
from nvmf.pci.cmb import CmbInfo, CmbPlacementError
from nvmf.pci.registers import CMBSZ
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.status import SC, SUCCESS, Status
from tests.pci.test_queue import PAGE, FakeController, make_pair

STAGING_IOVA = 0x80_0000


class _Source:
    """DRAM staging whose region carries an IOVA, as ``map_dma`` leaves it."""

    placement = "dram"

    def map(self, size: int) -> Region:
        return Region(memoryview(bytearray(size)), "dram", iova=STAGING_IOVA)


def make_queue(depth: int = 8, max_transfer: int = 1 << 20) -> tuple[NvmePciQueue, FakeController]:
    pair, fake = make_pair(depth)
    pool = StagingPool(4 << 20, _Source())
    queue = NvmePciQueue(pair, pool, nsid=1, lba_size=512, size=1 << 30, max_transfer=max_transfer)
    return queue, fake


async def settle(queue: NvmePciQueue, fake: FakeController, status: int = 0) -> None:
    """Let the fake controller answer until nothing is outstanding."""
    for _ in range(1000):
        fake.process(status=status)
        await asyncio.sleep(0)
        if not queue.outstanding:
            return
    raise AssertionError("commands still outstanding")


def test_iova_of_a_staging_buffer_is_region_iova_plus_its_offset() -> None:
    queue, fake = make_queue()
    buf = queue.pool.get(8192)
    assert queue.pool is not None and buf is not None
    assert region_offset(queue.pool.region, queue._base, buf.view) == buf.offset

    async def run() -> list[tuple[object, Status]]:
        got: list[tuple[object, Status]] = []
        assert (
            queue.submit(WRITE, 4096, buf.view, False, lambda t, s: got.append((t, s)), "w") is None
        )
        await settle(queue, fake)
        return got

    assert asyncio.run(run()) == [("w", SUCCESS)]
    # The SQE with DPTR as PRP1 and PRP2 (nvmf.wire.sqe.SQE keeps it as 16 bytes).
    sqe = struct.unpack_from("<BBHIQQQQIIIIII", fake.sq, 0)
    opcode, nsid, prp1, prp2, cdw10, cdw12 = sqe[0], sqe[3], sqe[6], sqe[7], sqe[8], sqe[10]
    assert opcode == IoOpcode.WRITE and nsid == 1
    assert prp1 == STAGING_IOVA + buf.offset
    assert prp2 == STAGING_IOVA + buf.offset + PAGE  # two pages: PRP2 is the second page
    assert cdw10 == 4096 // 512 and cdw12 & 0xFFFF == 8192 // 512 - 1


def test_a_buffer_outside_the_staging_region_is_refused() -> None:
    queue, _ = make_queue()
    stray = memoryview(bytearray(4096))
    with pytest.raises(ValueError, match="not in the dram staging region"):
        queue.submit(READ, 0, stray, False, lambda t, s: None, None)


def test_transfers_beyond_mdts_are_split_and_complete_once() -> None:
    queue, fake = make_queue(max_transfer=64 << 10)
    buf = queue.pool.get(256 << 10)
    assert queue.pool is not None and buf is not None
    got: list[Status] = []

    async def run() -> None:
        queue.submit(READ, 1 << 20, buf.view, False, lambda t, s: got.append(s), None)
        await settle(queue, fake)

    asyncio.run(run())
    assert got == [SUCCESS]
    lbas = [f[8] for f in fake.seen]
    assert lbas == [(1 << 20) // 512 + i * 128 for i in range(4)]
    assert [f[10] & 0xFFFF for f in fake.seen] == [127] * 4


def test_a_full_sq_keeps_commands_in_order_in_a_backlog() -> None:
    queue, fake = make_queue(depth=4)  # three slots
    got: list[int] = []
    bufs = [queue.pool.get(4096) for _ in range(6)]

    async def run() -> None:
        for i, b in enumerate(bufs):
            assert b is not None
            queue.submit(WRITE, i * 4096, b.view, False, lambda t, s: got.append(t), i)
        assert queue.pair.outstanding == 3 and queue.outstanding == 6
        await settle(queue, fake)

    asyncio.run(run())
    assert got == list(range(6))
    assert [f[8] for f in fake.seen] == [i * 8 for i in range(6)]


def test_flush_and_fua() -> None:
    queue, fake = make_queue()
    buf = queue.pool.get(512)
    assert buf is not None
    got: list[Status] = []

    async def run() -> None:
        queue.submit(WRITE, 0, buf.view, True, lambda t, s: got.append(s), None)
        queue.submit(FLUSH, 0, None, False, lambda t, s: got.append(s), None)
        await settle(queue, fake)

    asyncio.run(run())
    assert got == [SUCCESS, SUCCESS]
    assert fake.seen[0][10] & (1 << 30)  # CDW12 FUA
    assert fake.seen[1][0] == IoOpcode.FLUSH


def test_device_errors_become_fabric_statuses() -> None:
    queue, fake = make_queue()
    buf = queue.pool.get(4096)
    assert buf is not None
    got: list[Status] = []

    async def run() -> None:
        queue.submit(READ, 0, buf.view, False, lambda t, s: got.append(s), None)
        await settle(queue, fake, status=0x281)  # Unrecovered Read Error, SCT 2

    asyncio.run(run())
    assert got == [Status(SC.READ_ERROR)]


@pytest.mark.parametrize(
    ("field", "op", "expected"),
    [
        (0, READ, SUCCESS),
        (0x281, READ, Status(SC.READ_ERROR)),
        (0x280 | 1 << 14, WRITE, Status(SC.WRITE_FAULT, dnr=True)),
        (0x286, WRITE, Status(SC.WRITE_FAULT)),  # any media error on a write: Write Fault
        (0x286, READ, Status(SC.READ_ERROR)),
        (0x280, FLUSH, Status(SC.WRITE_FAULT)),
        (0x080 | 1 << 14, WRITE, Status(SC.LBA_RANGE, dnr=True)),  # passes through
        (0x006 | 1 << 13 | 1 << 11, READ, Status(SC.INTERNAL)),  # the SSD's M and CRD dropped
    ],
)
def test_status_mapping(field: int, op: int, expected: Status) -> None:
    assert fabric_status(field, op) == expected


@dataclass
class _Ctrl:
    bdf: str
    cmb_info: CmbInfo | None
    cmb: object | None


def _cmbsz(**bits: int) -> int:
    """CMBSZ of a 16 MiB CMB (SZ 16 in 1 MiB units) with the named bits set."""
    value = 16 << CMBSZ.field("SZ").lo | 2 << CMBSZ.field("SZU").lo
    for name, bit in bits.items():
        value |= bit << CMBSZ.field(name).lo
    return value


def test_placement_reasons_name_the_cmbsz_bits() -> None:
    qemu = _Ctrl("0000:00:04.0", CmbInfo(0, _cmbsz(SQS=1, LISTS=1, RDS=1, WDS=1)), object())
    assert placement_reason(qemu, "dram", ("sq",)) == "configured dram"  # type: ignore[arg-type]
    assert "CMBSZ.SQS set" in placement_reason(qemu, "cmb", ("sq",))  # type: ignore[arg-type]
    reason = placement_reason(qemu, "cmb", ("read", "write"))  # type: ignore[arg-type]
    assert "CMBSZ.RDS set and CMBSZ.WDS set" in reason
    no_wds = _Ctrl("0000:00:04.0", CmbInfo(0, _cmbsz(SQS=1, RDS=1)), object())
    with pytest.raises(CmbPlacementError, match=r"CMBSZ.WDS"):
        placement_reason(no_wds, "cmb", ("read", "write"))  # type: ignore[arg-type]
    no_sqs = _Ctrl("0000:00:04.0", CmbInfo(0, _cmbsz(RDS=1, WDS=1)), object())
    with pytest.raises(CmbPlacementError, match=r"CMBSZ.SQS"):
        placement_reason(no_sqs, "cmb", ("sq",))  # type: ignore[arg-type]
    none = _Ctrl("0000:00:04.0", None, None)
    with pytest.raises(CmbPlacementError, match=r"CAP.CMBS"):
        placement_reason(none, "cmb", ("sq",))  # type: ignore[arg-type]


def test_serving_refusals_say_why() -> None:
    assert serving_problem("0000:00:04.0", "cmb", 0, {"tcp"}) is None
    assert serving_problem("0000:00:04.0", "cmb", 2, {"tcp"}) is None
    assert serving_problem("0000:00:04.0", "dram", 2, {"tcp", "rdma"}) is None
    rdma = serving_problem("0000:00:04.0", "cmb", 0, {"tcp", "rdma"})
    assert rdma is not None and "P2PDMA" in rdma and "Soft-RoCE" in rdma
    assert issubclass(NvmePciMedia, ServingCheck)
    assert issubclass(NvmePciMedia, WorkerShare)


def test_a_worker_handle_carries_its_queue_pair_and_crosses_processes() -> None:
    pair, _ = make_pair(8)
    info = WorkerQueue(
        "0000:00:04.0", 1, pair.layout, "cmb", 4 << 20, 0xFE10_0000, 1 << 20, 1 << 19
    )
    handle = MediaHandle("nvme_pci", 1 << 30, 512, False, "0000:00:04.0", extra=info)
    again = pickle.loads(pickle.dumps(handle))
    assert handle_info(again) == info
    with pytest.raises(ValueError, match="must carry its worker's queue pair"):
        handle_info(MediaHandle("nvme_pci", 1 << 30, 512, False))


def test_a_worker_pool_is_cut_from_the_region_the_control_plane_mapped() -> None:
    region = Region(memoryview(bytearray(2 << 20)), "cmb", iova=0xFE20_0000)
    pool = StagingPool(2 << 20, staging_source(region))
    assert pool.region is region and pool.placement == "cmb" and pool.max_buffer == 1 << 20
    with pytest.raises(MemoryError):
        StagingPool(4 << 20, staging_source(region))


@dataclass
class _Settings:
    kind: str | None = "nvme_pci"
    size: int | None = None
    block_size: int = 512
    direct: bool = False
    sq_placement: str = "dram"
    staging_placement: str = "dram"


@dataclass
class _Ns:
    path: str
    nsid: int = 1
    media: _Settings = field(default_factory=_Settings)


def test_the_factory_knows_nvme_pci_without_the_core_importing_it() -> None:
    assert "nvme_pci" in media_kinds()
    with pytest.raises(ValueError, match=r"namespace 1 .*not a PCI address"):
        open_media(_Ns("/dev/nvme0n1"))
    with pytest.raises(ValueError, match=r"needs device.path"):
        open_media(_Ns(""))
    # A well-formed address with no device behind it: the system's answer, errno kept.
    with pytest.raises(MediaError, match=re.escape("namespace 1 (0000:7f:1f.7)")):
        open_media(_Ns("0000:7f:1f.7"))
