"""A PCIe NVMe controller driven from user space: reset, admin queue, Identify, I/O queue pairs.

The sequence follows NVMe Base 2.0 §3.5.1 "Memory-based Controller Initialization":

1. Open the function through VFIO (:class:`~nvmf.pci.vfio.VfioDevice`); reset it with
   ``VFIO_DEVICE_RESET`` when the device offers one (this is what makes a device left behind by
   a process killed with ``kill -9`` usable again), set COMMAND.Memory Space and Bus Master.
2. Disable: CC.EN = 0, then wait for CSTS.RDY = 0 (at most CAP.TO * 500 ms).
3. The CMB, when CAP.CMBS: CMBMSC.CRE to read CMBLOC/CMBSZ, map the BAR CMBLOC.BIR names, then
   CMBMSC.CBA = that BAR's bus address + the CMB's offset, with CMSE (:mod:`nvmf.pci.cmb`).
4. Admin queues in DRAM (AQA, ASQ, ACQ), CC = EN | IOSQES 6 | IOCQES 4 | MPS 0 (4 KiB pages)
   | CSS 0 (NVM), wait for CSTS.RDY = 1; CSTS.CFS = 1 is a fatal controller error.
5. Identify Controller (model, serial, MDTS), Set Features Number of Queues.

Admin commands are polled on the admin CQ (no interrupts are set up).  I/O queue pairs are made
with :meth:`NvmeController.create_io_queue_pair` and driven through
:class:`~nvmf.pci.queue.QueuePair` (``submit``/``reap``).  :meth:`NvmeController.close` deletes
the I/O queues, disables the controller, turns the CMB off, unmaps every DMA mapping and closes
the VFIO descriptors; the class is a context manager and cleans up on every error path of its
own construction.

Usage::

    with NvmeController("0000:00:04.0") as ctrl:
        ns = ctrl.namespace(1)
        qp = ctrl.create_io_queue_pair(32, sq_placement="cmb")
        staging = ctrl.map_cmb(1 << 20)          # or ctrl.map_dma(DramSource().map(1 << 20))
        cid = qp.submit(IoOpcode.WRITE, 1, slba=0, nlb=8, data=staging, offset=0, length=4096)
        while not (done := qp.reap()):
            pass
"""

from __future__ import annotations

import mmap
import time
from dataclasses import dataclass, field

from nvmf.memory.source import Region
from nvmf.pci import commands
from nvmf.pci.cmb import CmbInfo, CmbPlacementError, CmbSource
from nvmf.pci.dma import DmaSpace, MemfdMemory
from nvmf.pci.queue import Completion, QueueLayout, QueueMemory, QueuePair
from nvmf.pci.registers import (
    ACQ,
    AQA,
    ASQ,
    CAP,
    CC,
    CMBLOC,
    CMBMSC,
    CMBSTS,
    CMBSZ,
    CSTS,
    VS,
    read64,
    write64,
)
from nvmf.pci.vfio import VfioDevice
from nvmf.wire.identify import IdentifyController, IdentifyNamespace
from nvmf.wire.opcodes import AdminOpcode
from nvmf.wire.sqe import CQE_SIZE, SQE_SIZE

#: The memory page size this driver uses (CC.MPS = 0).
PAGE = 4096
#: How long an admin command may take before it is reported (TCG guests are slow).
ADMIN_TIMEOUT = 30.0


class ControllerError(RuntimeError):
    """The controller did not do what the spec says it must (timeout, fatal status)."""


class CommandError(ControllerError):
    """An admin command completed with a non-zero status."""

    def __init__(self, what: str, status: int) -> None:
        sct, sc = (status >> 8) & 0x7, status & 0xFF
        super().__init__(f"{what} failed: status {status:#06x} (SCT {sct:#x}, SC {sc:#04x})")
        self.status = status


class _Bar0:
    """BAR0 as 32-bit registers (:class:`~nvmf.pci.registers.RegisterWindow`)."""

    writable = True

    def __init__(self, words: memoryview) -> None:
        self.words = words

    def read32(self, offset: int) -> int:
        return int(self.words[offset // 4])

    def write32(self, offset: int, value: int) -> None:
        self.words[offset // 4] = value & 0xFFFFFFFF


@dataclass(frozen=True)
class Namespace:
    """What the I/O path needs of a namespace (from Identify Namespace)."""

    nsid: int
    #: NSZE: size in logical blocks.
    blocks: int
    lba_size: int

    @property
    def size(self) -> int:
        return self.blocks * self.lba_size


@dataclass
class _IoQueue:
    pair: QueuePair
    dram: Region
    cmb: Region | None


@dataclass
class _Dram:
    """A DRAM piece plan: name -> (offset, size), page aligned, in one memfd."""

    pieces: dict[str, tuple[int, int]] = field(default_factory=dict)
    end: int = 0

    def add(self, name: str, size: int) -> None:
        size = -(-size // PAGE) * PAGE
        self.pieces[name] = (self.end, size)
        self.end += size


class NvmeController:
    """One NVMe controller owned by this process through VFIO (see the module doc)."""

    def __init__(
        self,
        bdf: str,
        *,
        admin_depth: int = 32,
        use_cmb: bool = True,
        reset: bool = True,
    ) -> None:
        self.bdf = bdf
        self.memory = MemfdMemory(f"nvmf-pci-{bdf}")
        self.cmb: CmbSource | None = None
        self.cmb_info: CmbInfo | None = None
        self._io: dict[int, _IoQueue] = {}
        self._admin: QueuePair | None = None
        self._admin_mem: Region | None = None
        self._identify_buf: Region | None = None
        self._cmb_map: mmap.mmap | None = None
        self._bar0_map: mmap.mmap | None = None
        self.device = VfioDevice(bdf)
        try:
            self._start(admin_depth, use_cmb, reset)
        except BaseException:
            self.close()
            raise

    # -- bring-up ------------------------------------------------------------------------------

    def _start(self, admin_depth: int, use_cmb: bool, reset: bool) -> None:
        device = self.device
        if reset and device.can_reset:
            device.reset()
        device.enable_memory_and_bus_master()
        reserved = device.reserved_iova_ranges()
        for bar in range(6):
            info = device.region(bar)
            if info.size:
                try:
                    address = device.bar_address(bar)
                except OSError:
                    continue
                reserved.append((address, address + info.size))
        self.dma = DmaSpace(device, reserved)
        bar0 = device.map_bar(0)
        self._bar0_map = bar0
        self._bar0_view = memoryview(bar0).cast("I")
        self.regs = _Bar0(self._bar0_view)
        self.cap = read64(self.regs, CAP.offset)
        if self.cap == 0xFFFFFFFFFFFFFFFF:
            raise ControllerError(f"{self.bdf}: BAR0 reads all ones (device gone or not decoding)")
        self.version = self.regs.read32(VS.offset)
        self.mqes = CAP.field("MQES").get(self.cap) + 1
        self.dstrd = CAP.field("DSTRD").get(self.cap)
        self.timeout = max(CAP.field("TO").get(self.cap), 1) * 0.5
        mpsmin = CAP.field("MPSMIN").get(self.cap)
        if mpsmin > 0:
            raise ControllerError(f"{self.bdf}: CAP.MPSMIN {mpsmin}: 4 KiB pages not supported")
        if not CAP.field("CSS").get(self.cap) & 1:
            raise ControllerError(f"{self.bdf}: CAP.CSS lacks the NVM command set")
        self.disable()
        if use_cmb and CAP.field("CMBS").get(self.cap):
            self._enable_cmb()
        self._enable(min(admin_depth, self.mqes))
        self.identify = self.identify_controller()
        mdts = self.identify.mdts
        self.max_transfer = (PAGE << mdts) if mdts else 0
        self.max_io_queues = 0

    def _wait_csts(self, rdy: int, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            csts = self.regs.read32(CSTS.offset)
            if csts == 0xFFFFFFFF:
                raise ControllerError(f"{self.bdf}: CSTS reads all ones while {what}")
            if rdy and CSTS.field("CFS").get(csts):
                raise ControllerError(
                    f"{self.bdf}: controller fatal status (CSTS.CFS) while {what}"
                )
            if CSTS.field("RDY").get(csts) == rdy:
                return
            if time.monotonic() > deadline:
                raise ControllerError(
                    f"{self.bdf}: CSTS.RDY did not become {rdy} within CAP.TO "
                    f"({self.timeout:.1f} s) while {what}"
                )
            time.sleep(0.001)

    def read_registers(self) -> dict[str, int]:
        """CAP, VS and the CMB registers (CMBLOC, CMBSZ, CMBMSC, CMBSTS) as they read now, by
        spec name: what ``nvmf doctor`` shows of a device this process owns (reads only)."""
        regs = self.regs
        return {
            "CAP": read64(regs, CAP.offset),
            "VS": regs.read32(VS.offset),
            "CMBLOC": regs.read32(CMBLOC.offset),
            "CMBSZ": regs.read32(CMBSZ.offset),
            "CMBMSC": read64(regs, CMBMSC.offset),
            "CMBSTS": regs.read32(CMBSTS.offset),
        }

    def disable(self) -> None:
        """CC.EN = 0 and wait for CSTS.RDY = 0: the controller drops every queue."""
        cc = self.regs.read32(CC.offset)
        self.regs.write32(CC.offset, cc & ~1)
        self._wait_csts(0, "disabling")

    def _enable(self, depth: int) -> None:
        plan = _Dram()
        plan.add("sq", depth * SQE_SIZE)
        plan.add("cq", depth * CQE_SIZE)
        plan.add("prp", PAGE)
        plan.add("identify", PAGE)
        mem = self.memory.map(plan.end)
        self._admin_mem = mem
        base = self.dma.map(mem)
        off = {name: piece[0] for name, piece in plan.pieces.items()}
        layout = QueueLayout(
            qid=0,
            depth=depth,
            dstrd=self.dstrd,
            page_size=PAGE,
            lba_size=0,
            sq=QueueMemory("dram", off["sq"], plan.pieces["sq"][1], base + off["sq"]),
            cq=QueueMemory("dram", off["cq"], plan.pieces["cq"][1], base + off["cq"]),
            prp_lists=QueueMemory("dram", off["prp"], PAGE, base + off["prp"]),
        )
        view = mem.view
        self._admin = QueuePair(
            layout,
            sq=view[off["sq"] : off["sq"] + plan.pieces["sq"][1]],
            cq=view[off["cq"] : off["cq"] + plan.pieces["cq"][1]],
            prp_lists=view[off["prp"] : off["prp"] + PAGE],
            doorbells=self._bar0_view,
        )
        self._identify_view = view[off["identify"] : off["identify"] + PAGE]
        self._identify_iova = base + off["identify"]
        self.regs.write32(AQA.offset, ((depth - 1) << 16) | (depth - 1))
        write64(self.regs, ASQ.offset, layout.sq.iova)
        write64(self.regs, ACQ.offset, layout.cq.iova)
        cc = (1 << CC.field("EN").lo) | (6 << CC.field("IOSQES").lo) | (4 << CC.field("IOCQES").lo)
        self.regs.write32(CC.offset, cc)
        self._wait_csts(1, "enabling")

    def _enable_cmb(self) -> None:
        regs = self.regs
        regs.write32(CMBMSC.offset + 4, 0)
        regs.write32(CMBMSC.offset, 1 << CMBMSC.field("CRE").lo)
        info = CmbInfo(regs.read32(CMBLOC.offset), regs.read32(CMBSZ.offset))
        if not info.size:
            return
        bar_info = self.device.region(info.bar)
        if info.offset + info.size > bar_info.size:
            raise ControllerError(
                f"{self.bdf}: CMB of {info.size} bytes at {info.offset:#x} overruns BAR{info.bar} "
                f"({bar_info.size} bytes)"
            )
        cba = self.device.bar_address(info.bar) + info.offset
        if cba & 0xFFF:
            raise ControllerError(f"{self.bdf}: CMB address {cba:#x} is not 4 KiB aligned")
        # The high dword first: QEMU latches CBA when the low dword (with CMSE) is written.
        regs.write32(CMBMSC.offset + 4, cba >> 32)
        regs.write32(
            CMBMSC.offset,
            (cba & 0xFFFFF000) | (1 << CMBMSC.field("CMSE").lo) | (1 << CMBMSC.field("CRE").lo),
        )
        if CMBSTS.field("CBAI").get(regs.read32(CMBSTS.offset)):
            raise ControllerError(f"{self.bdf}: the controller rejected CMB address {cba:#x}")
        mapping = self.device.map_bar(info.bar)
        self._cmb_map = mapping
        view = memoryview(mapping)[info.offset : info.offset + info.size]
        self.cmb_info = info
        self.cmb = CmbSource(view, cba, info)

    # -- admin commands ------------------------------------------------------------------------

    def admin(
        self,
        what: str,
        opcode: int,
        *,
        nsid: int = 0,
        prp1: int = 0,
        cdws: commands.Cdws = (0, 0, 0, 0, 0, 0),
    ) -> Completion:
        """Run one admin command and poll for its completion; raise on a non-zero status."""
        assert self._admin is not None
        cid = self._admin.submit_command(opcode, nsid=nsid, prp1=prp1, cdws=cdws)
        deadline = time.monotonic() + ADMIN_TIMEOUT
        while True:
            for done in self._admin.reap():
                if done.cid == cid:
                    if done.status:
                        raise CommandError(what, done.status)
                    return done
            csts = self.regs.read32(CSTS.offset)
            if CSTS.field("CFS").get(csts):
                raise ControllerError(f"{self.bdf}: controller fatal status during {what}")
            if time.monotonic() > deadline:
                raise ControllerError(f"{self.bdf}: {what} did not complete in {ADMIN_TIMEOUT} s")
            time.sleep(0.0002)

    def identify_controller(self) -> IdentifyController:
        """Identify Controller (CNS 01h)."""
        self.admin(
            "Identify Controller",
            AdminOpcode.IDENTIFY,
            prp1=self._identify_iova,
            cdws=commands.identify(commands.CNS_CONTROLLER),
        )
        return IdentifyController.decode(bytes(self._identify_view))

    def identify_namespace(self, nsid: int) -> IdentifyNamespace:
        """Identify Namespace (CNS 00h) of ``nsid``."""
        self.admin(
            f"Identify Namespace {nsid}",
            AdminOpcode.IDENTIFY,
            nsid=nsid,
            prp1=self._identify_iova,
            cdws=commands.identify(commands.CNS_NAMESPACE),
        )
        return IdentifyNamespace.decode(bytes(self._identify_view))

    def namespace(self, nsid: int) -> Namespace:
        """Size and block size of ``nsid`` (FLBAS picks the LBA format in use)."""
        ns = self.identify_namespace(nsid)
        index = (ns.flbas & 0xF) | (((ns.flbas >> 5) & 0x3) << 4)
        lbads = ns.lbaf[index].lbads
        if not ns.nsze or not lbads:
            raise ControllerError(f"{self.bdf}: namespace {nsid} is not active")
        return Namespace(nsid, ns.nsze, 1 << lbads)

    def set_number_of_queues(self, count: int) -> int:
        """Ask for ``count`` I/O SQs and CQs; how many the controller granted (the smaller)."""
        done = self.admin(
            "Set Features Number of Queues",
            AdminOpcode.SET_FEATURES,
            cdws=commands.set_number_of_queues(count, count),
        )
        self.max_io_queues = min((done.result & 0xFFFF) + 1, (done.result >> 16) + 1)
        return self.max_io_queues

    # -- memory --------------------------------------------------------------------------------

    def map_dma(self, region: Region) -> Region:
        """DMA-map a DRAM region (e.g. ``DramSource().map(n)``) for the SSD; sets its iova."""
        self.dma.map(region)
        return region

    def unmap_dma(self, region: Region) -> None:
        self.dma.unmap(region)

    def map_cmb(self, size: int, uses: tuple[str, ...] = ("read", "write")) -> Region:
        """A region of the CMB for data (staging buffers); each of ``uses`` must be allowed."""
        if self.cmb is None or self.cmb_info is None:
            raise CmbPlacementError(f"{self.bdf} has no CMB enabled (CAP.CMBS, CMBSZ.SZ)")
        for use in uses:
            self.cmb_info.require(use)
        return self.cmb.map(size)

    # -- I/O queues ----------------------------------------------------------------------------

    def create_io_queue_pair(
        self,
        depth: int,
        sq_placement: str = "dram",
        *,
        cq_placement: str = "dram",
        lba_size: int = 0,
        cmb_lists: bool | None = None,
    ) -> QueuePair:
        """Create an I/O CQ and SQ of ``depth`` entries on the controller and return the pair.

        ``sq_placement``/``cq_placement``: ``dram`` or ``cmb`` (CMBSZ.SQS / CMBSZ.CQS).
        ``cmb_lists``: keep a PRP list page per command in the CMB for data in the CMB (default:
        when the CMB is enabled and CMBSZ.LISTS allows it).
        """
        for placement in (sq_placement, cq_placement):
            if placement not in ("dram", "cmb"):
                raise ValueError(f"placement {placement!r}: dram or cmb")
        if not 2 <= depth <= self.mqes:
            raise ValueError(f"depth {depth}: 2 .. CAP.MQES+1 ({self.mqes})")
        info = self.cmb_info
        wants_cmb = sq_placement == "cmb" or cq_placement == "cmb"
        if wants_cmb and (info is None or self.cmb is None):
            raise CmbPlacementError(f"{self.bdf} has no CMB enabled (CAP.CMBS, CMBSZ.SZ)")
        if sq_placement == "cmb":
            assert info is not None
            info.require("sq")
        if cq_placement == "cmb":
            assert info is not None
            info.require("cq")
        if cmb_lists is None:
            cmb_lists = info is not None and info.allows("lists")
        elif cmb_lists:
            if info is None:
                raise CmbPlacementError(f"{self.bdf} has no CMB enabled (CAP.CMBS, CMBSZ.SZ)")
            info.require("lists")
        if not self.max_io_queues:
            self.set_number_of_queues(max(1, min(64, self.mqes)))
        qid = next((q for q in range(1, self.max_io_queues + 1) if q not in self._io), 0)
        if not qid:
            raise ControllerError(f"{self.bdf}: all {self.max_io_queues} I/O queues in use")

        dram_plan, cmb_plan = _Dram(), _Dram()
        for name, size, placement in (
            ("sq", depth * SQE_SIZE, sq_placement),
            ("cq", depth * CQE_SIZE, cq_placement),
        ):
            (cmb_plan if placement == "cmb" else dram_plan).add(name, size)
        dram_plan.add("prp", depth * PAGE)
        if cmb_lists:
            cmb_plan.add("prp_cmb", depth * PAGE)
        dram = self.memory.map(dram_plan.end)
        cmb_region: Region | None = None
        views: dict[str, memoryview] = {}
        try:
            self.dma.map(dram)
            if cmb_plan.end:
                assert self.cmb is not None
                cmb_region = self.cmb.map(cmb_plan.end)
            places: dict[str, QueueMemory] = {}
            for plan, region, placement in (
                (dram_plan, dram, "dram"),
                (cmb_plan, cmb_region, "cmb"),
            ):
                for name, (offset, size) in plan.pieces.items():
                    assert region is not None and region.iova is not None
                    base = self.cmb.offset_of(region) if self.cmb and placement == "cmb" else 0
                    places[name] = QueueMemory(placement, base + offset, size, region.iova + offset)
                    views[name] = region.view[offset : offset + size]
            layout = QueueLayout(
                qid=qid,
                depth=depth,
                dstrd=self.dstrd,
                page_size=PAGE,
                lba_size=lba_size,
                sq=places["sq"],
                cq=places["cq"],
                prp_lists=places["prp"],
                prp_lists_cmb=places.get("prp_cmb"),
                cmb_bar=info.bar if info is not None and self.cmb is not None else None,
                cmb_bar_offset=info.offset if info is not None else 0,
                cmb_read=info is not None and info.allows("read"),
                cmb_write=info is not None and info.allows("write"),
            )
            pair = QueuePair(
                layout,
                sq=views["sq"],
                cq=views["cq"],
                prp_lists=views["prp"],
                doorbells=self._bar0_view,
                prp_lists_cmb=views.get("prp_cmb"),
            )
            self.admin(
                f"Create I/O CQ {qid}",
                AdminOpcode.CREATE_CQ,
                prp1=layout.cq.iova,
                cdws=commands.create_io_cq(qid, depth),
            )
            try:
                self.admin(
                    f"Create I/O SQ {qid}",
                    AdminOpcode.CREATE_SQ,
                    prp1=layout.sq.iova,
                    cdws=commands.create_io_sq(qid, depth, qid),
                )
            except BaseException:
                self.admin(
                    f"Delete I/O CQ {qid}",
                    AdminOpcode.DELETE_CQ,
                    cdws=commands.delete_io_queue(qid),
                )
                raise
        except BaseException:
            for view in views.values():
                view.release()
            self._free_queue_memory(dram, cmb_region)
            raise
        self._io[qid] = _IoQueue(pair, dram, cmb_region)
        return pair

    def queue_memfd(self, pair: QueuePair) -> int:
        """The memfd of ``pair``'s DRAM (CQ, DRAM SQ, PRP lists), for :meth:`QueuePair.attach`."""
        return MemfdMemory.memfd(self._io[pair.qid].dram)

    def delete_io_queue_pair(self, pair: QueuePair) -> None:
        """Delete the SQ then the CQ on the controller and free their memory."""
        entry = self._io.pop(pair.qid, None)
        if entry is None:
            return
        try:
            self.admin(
                f"Delete I/O SQ {pair.qid}",
                AdminOpcode.DELETE_SQ,
                cdws=commands.delete_io_queue(pair.qid),
            )
            self.admin(
                f"Delete I/O CQ {pair.qid}",
                AdminOpcode.DELETE_CQ,
                cdws=commands.delete_io_queue(pair.qid),
            )
        finally:
            pair.release()
            self._free_queue_memory(entry.dram, entry.cmb)

    def _free_queue_memory(self, dram: Region, cmb: Region | None) -> None:
        self.dma.unmap(dram)
        self.memory.release(dram)
        if cmb is not None and self.cmb is not None:
            self.cmb.release(cmb)

    # -- release -------------------------------------------------------------------------------

    def close(self) -> None:
        """Delete I/O queues, disable the controller and the CMB, unmap DMA, close VFIO.

        Safe to call twice and after a failed construction; a controller that no longer answers
        does not keep the rest from being released."""
        errors: list[BaseException] = []
        for entry in list(self._io.values()):
            try:
                self.delete_io_queue_pair(entry.pair)
            except Exception as exc:  # keep releasing; report the first failure at the end
                errors.append(exc)
                self._io.pop(entry.pair.qid, None)
        if self._bar0_map is not None:
            try:
                self.disable()
            except Exception as exc:
                errors.append(exc)
            self.regs.write32(CMBMSC.offset, 0)
            self.regs.write32(CMBMSC.offset + 4, 0)
        if self._admin is not None:
            self._admin.release()
            self._admin = None
        if self._admin_mem is not None:
            self._identify_view.release()
            self.dma.unmap(self._admin_mem)
            self.memory.release(self._admin_mem)
            self._admin_mem = None
        if getattr(self, "dma", None) is not None:
            self.dma.close()
        if self.cmb is not None:
            self.cmb.view.release()
            self.cmb = None
        for name in ("_cmb_map", "_bar0_map"):
            mapping = getattr(self, name)
            if mapping is not None:
                if name == "_bar0_map":
                    self._bar0_view.release()
                try:
                    mapping.close()
                except BufferError:
                    pass  # a queue pair's view still exports it; unmapped when collected
                setattr(self, name, None)
        if hasattr(self, "device"):
            self.device.close()
        if errors:
            raise ControllerError(f"{self.bdf}: release was not clean: {errors[0]}") from errors[0]

    def __enter__(self) -> NvmeController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
