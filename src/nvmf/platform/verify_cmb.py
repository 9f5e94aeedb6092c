"""``nvmf doctor --verify-cmb BDF``: have the SSD itself move data into its CMB, and check it.

Placing data in a Controller Memory Buffer works only if the controller takes the CMB
addresses in PRPs as its own (CMBMSC.CBA set right, CMBSZ.RDS for Read data) and really puts
the bytes there; when it does not, nothing fails: the data lands elsewhere, or nowhere, and
is silently wrong.  This check reads the same blocks twice with one I/O queue pair of the
userspace driver (:mod:`nvmf.pci`): once with PRPs into DRAM, once with PRPs into the CMB, and
compares the bytes, reading the CMB back through its BAR mapping.  Both destinations are first
filled with a poison byte (:data:`POISON`), so a range the SSD never wrote shows as a
mismatch even when the blocks hold zeroes.  It reports match or mismatch (how many bytes,
the first offset, how many still hold the poison) and the bandwidth of each transfer (bytes,
seconds, MB/s), and that of the CPU reading the CMB through the BAR.

What it proves: the SSD delivers Read data into its own CMB correctly, through the driver and
the IOMMU setup this project uses.  It does not prove that a NIC can reach the CMB: that is
PCI peer-to-peer DMA, which the doctor's P2P section judges from the topology.

Nothing is written to the SSD unless ``write`` (``--verify-cmb-write``) allows it; then the
blocks are read and kept first, a random pattern is written from DRAM and flushed, both reads
are compared with the pattern, and the kept contents are written back (also when a step
fails; a process killed in between leaves the pattern).

The device must be bound to vfio-pci and not in use.  Refusals raise :class:`VerifyError`
naming the reason: not bound (with the commands to bind it), busy, no CMB, CMBSZ.RDS clear,
a range beyond the namespace.  Whatever happens, the queue pair is deleted, the DMA mappings
removed, the controller disabled and VFIO closed before this returns or raises
(:attr:`CmbVerification.released`, :attr:`VerifyError.released`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nvmf.memory.source import Region
from nvmf.pci.cmb import CmbInfo, CmbPlacementError, CmbSource
from nvmf.pci.controller import Namespace, NvmeController
from nvmf.pci.dma import MemfdMemory
from nvmf.pci.queue import QueuePair
from nvmf.pci.registers import CMBLOC, CMBSZ
from nvmf.platform.pci import BDF_RE
from nvmf.wire.opcodes import IoOpcode

#: What is compared when nothing else is asked: 1 MiB (QEMU emulates every CMB access: keep
#: it small; a real SSD's figures want more, ``--verify-cmb-bytes``).
VERIFY_BYTES = 1 << 20
#: The byte both destinations are filled with before each read.
POISON = 0xA5
#: Entries of the verification's queue pair (fewer when CAP.MQES is smaller).
QUEUE_DEPTH = 32
#: The most one command moves here (less when MDTS says so): enough commands in flight to
#: keep an SSD busy, few enough for QEMU.
MAX_COMMAND_BYTES = 128 << 10
#: How long one command may take before the check gives up (TCG guests are slow).
COMMAND_TIMEOUT_S = 30.0
#: The SSD namespace read (the one ``nvme_pci`` namespaces serve).
NSID = 1


class VerifyError(Exception):
    """The check could not run, or failed midway; the message says why, ``released`` what was
    given back."""

    def __init__(self, message: str, released: list[str] | None = None) -> None:
        super().__init__(message)
        self.released = released or []


class VerifyController(Protocol):
    """What the check uses of :class:`~nvmf.pci.controller.NvmeController`."""

    bdf: str
    cmb: CmbSource | None
    cmb_info: CmbInfo | None
    mqes: int
    max_transfer: int
    identify: Any

    def namespace(self, nsid: int) -> Namespace: ...
    def read_registers(self) -> dict[str, int]: ...
    def create_io_queue_pair(
        self, depth: int, sq_placement: str = "dram", *, lba_size: int = 0
    ) -> QueuePair: ...
    def delete_io_queue_pair(self, pair: QueuePair) -> None: ...
    def map_dma(self, region: Region) -> Region: ...
    def unmap_dma(self, region: Region) -> None: ...
    def map_cmb(self, size: int, uses: tuple[str, ...] = ...) -> Region: ...
    def close(self) -> None: ...


@dataclass
class Transfer:
    """One timed transfer: what, where (``dram`` or ``cmb``, and the address the SSD was
    given: a DRAM IOVA or a CMB address), how many bytes, in how long."""

    what: str
    placement: str
    address: int
    bytes: int
    seconds: float
    commands: int
    mb_per_s: float = 0.0

    def __post_init__(self) -> None:
        self.mb_per_s = self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass
class CmbVerification:
    """The check's result (``--json`` prints it as is)."""

    bdf: str
    model: str
    serial: str
    nsid: int
    lba_size: int
    slba: int
    blocks: int
    bytes: int
    #: CMBLOC/CMBSZ raw and decoded, the CMB's size, BAR, offset in it, and CBA.
    cmb: dict[str, Any]
    #: The verification's I/O queue pair: qid, depth, the SQ's address (in DRAM).
    queue: dict[str, int]
    #: Where the PRP lists of the CMB read were (``cmb`` when CMBSZ.LISTS, else ``dram``).
    cmb_prp_lists: str
    #: True when a pattern was written (and the blocks' contents restored afterwards).
    written: bool
    transfers: list[Transfer]
    match: bool
    #: Bytes of the CMB copy that differ from the DRAM copy (or the pattern), the first such
    #: offset, and how many of them still hold :data:`POISON`: never written by the SSD.
    mismatched_bytes: int
    first_mismatch: int | None
    poison_left: int
    #: In write mode: whether the DRAM copy matched the pattern (the SSD itself kept it).
    dram_matches_pattern: bool | None
    all_zero: bool
    sha256_dram: str
    sha256_cmb: str
    released: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _open(bdf: str, opener: Callable[[str], VerifyController]) -> VerifyController:
    """Take the controller, turning the usual setup problems into a :class:`VerifyError`."""
    if not BDF_RE.match(bdf):
        raise VerifyError(f"{bdf!r} is not a PCI address like 0000:00:04.0 (DDDD:BB:DD.F)")
    try:
        return opener(bdf)
    except OSError as exc:  # VfioError: not bound to vfio-pci, no IOMMU group, group busy
        why = exc.strerror or str(exc)
        if exc.errno == errno.EBUSY:
            why += (
                "; if that is this project's target (nvmf serve with an nvme_pci namespace on "
                f"{bdf}), stop it first: nvmf doctor without --verify-cmb shows what it uses"
            )
        raise VerifyError(
            f"--verify-cmb needs {bdf} bound to vfio-pci and not in use: {why}"
        ) from None
    except Exception as exc:  # ControllerError: the controller did not come up
        raise VerifyError(f"{bdf}: the controller could not be taken: {exc}") from None


def _require_read_cmb(ctrl: VerifyController) -> CmbInfo:
    """The CMB's registers, or a refusal naming the register bit that forbids the check."""
    info = ctrl.cmb_info
    if info is None or ctrl.cmb is None:
        regs = ctrl.read_registers()
        raise VerifyError(
            f"{ctrl.bdf} has no CMB to verify: CAP.CMBS is clear or CMBSZ.SZ is 0 "
            f"(CMBSZ {regs.get('CMBSZ', 0):#010x})"
        )
    if not info.allows("read"):
        raise VerifyError(
            f"the CMB of {ctrl.bdf} cannot be a read destination: CMBSZ.RDS (Read Data "
            f"Support) is 0 (CMBSZ {info.cmbsz:#010x}), so the SSD may not put Read data "
            "there; nothing to verify (staging_placement cmb is refused on it too)"
        )
    return info


def _cmb_facts(ctrl: VerifyController, info: CmbInfo) -> dict[str, Any]:
    regs = ctrl.read_registers()
    assert ctrl.cmb is not None
    return {
        "size": info.size,
        "bar": info.bar,
        "offset": info.offset,
        "address": ctrl.cmb.address,
        "registers": {k: f"{v:#x}" for k, v in regs.items()},
        "CMBSZ": CMBSZ.decode(info.cmbsz),
        "CMBLOC": CMBLOC.decode(info.cmbloc),
    }


class _Session:
    """The memory and queue the check takes, given back in :meth:`release` in reverse order."""

    def __init__(self, ctrl: VerifyController) -> None:
        self.ctrl = ctrl
        self.memory = MemfdMemory(f"nvmf-verify-{ctrl.bdf}")
        self.dram: list[Region] = []
        self.cmb: list[Region] = []
        self.pair: QueuePair | None = None
        self.released: list[str] = []

    def dram_region(self, size: int) -> Region:
        region = self.memory.map(size)
        try:
            self.ctrl.map_dma(region)
        except BaseException:
            self.memory.release(region)
            raise
        self.dram.append(region)
        return region

    def cmb_region(self, size: int) -> Region:
        try:
            region = self.ctrl.map_cmb(size, uses=("read",))
        except (MemoryError, CmbPlacementError) as exc:
            raise VerifyError(f"{self.ctrl.bdf}: {exc} (ask less: --verify-cmb-bytes)") from None
        self.cmb.append(region)
        return region

    def release(self) -> list[str]:
        """Delete the queue pair, unmap and free the memory, release the controller; what was
        done, in words.  Raises :class:`VerifyError` if the release itself failed."""
        errors: list[str] = []
        ctrl = self.ctrl
        if self.pair is not None:
            qid = self.pair.qid
            try:
                ctrl.delete_io_queue_pair(self.pair)
                self.released.append(f"I/O queue pair {qid} deleted (SQ, then CQ)")
            except Exception as exc:
                errors.append(f"deleting I/O queue pair {qid}: {exc}")
            self.pair = None
        unmapped = 0
        for region in self.dram:
            try:  # the IOMMU mapping first: the device can no longer reach the memory
                ctrl.unmap_dma(region)
                unmapped += 1
            except Exception as exc:
                errors.append(f"unmapping DRAM at {region.iova or 0:#x}: {exc}")
            else:
                self.memory.release(region)
        if unmapped:
            self.released.append(f"DRAM buffers unmapped from the IOMMU ({unmapped})")
        for region in self.cmb:
            if ctrl.cmb is not None:
                ctrl.cmb.release(region)
        self.dram, self.cmb = [], []
        try:
            ctrl.close()
            self.released.append("controller disabled (CC.EN 0), CMBMSC cleared, VFIO closed")
        except Exception as exc:
            errors.append(f"releasing the controller: {exc}")
        if errors:
            raise VerifyError("; ".join(errors), self.released)
        return self.released


def _transfer(
    pair: QueuePair,
    opcode: int,
    slba: int,
    lba_size: int,
    region: Region,
    length: int,
    chunk: int,
    what: str,
) -> Transfer:
    """Move ``length`` bytes between ``region`` and the blocks at ``slba``, ``chunk`` bytes per
    command, as many commands in flight as the queue holds; timed from the first submission to
    the last completion."""
    pending: dict[int, int] = {}
    offsets = list(range(0, length, chunk))
    slots = pair.depth - 1
    start = time.perf_counter()
    deadline = start + COMMAND_TIMEOUT_S
    while offsets or pending:
        while offsets and len(pending) < slots:
            at = offsets.pop(0)
            n = min(chunk, length - at)
            cid = pair.submit(opcode, NSID, slba + at // lba_size, n // lba_size, region, at, n)
            pending[cid] = at
        done = pair.reap()
        for c in done:
            at = pending.pop(c.cid)
            if c.status:
                sct, sc = (c.status >> 8) & 0x7, c.status & 0xFF
                raise VerifyError(
                    f"{what}: the command at LBA {slba + at // lba_size} failed with status "
                    f"{c.status:#06x} (SCT {sct:#x}, SC {sc:#04x})"
                )
        if done:
            deadline = time.perf_counter() + COMMAND_TIMEOUT_S
        elif time.perf_counter() > deadline:
            raise VerifyError(f"{what}: no completion within {COMMAND_TIMEOUT_S:.0f} s")
    seconds = time.perf_counter() - start
    assert region.iova is not None
    return Transfer(what, region.placement, region.iova, length, seconds, -(-length // chunk))


def _flush(pair: QueuePair) -> None:
    cid = pair.submit(IoOpcode.FLUSH, NSID)
    deadline = time.perf_counter() + COMMAND_TIMEOUT_S
    while True:
        for c in pair.reap():
            if c.cid == cid:
                if c.status:
                    raise VerifyError(f"Flush failed with status {c.status:#06x}")
                return
        if time.perf_counter() > deadline:
            raise VerifyError(f"Flush: no completion within {COMMAND_TIMEOUT_S:.0f} s")


def _restore(pair: QueuePair, slba: int, lba: int, saved: Region, length: int, chunk: int) -> None:
    """Write back what the blocks held before the pattern; a failure says the pattern stays."""
    try:
        _transfer(pair, IoOpcode.WRITE, slba, lba, saved, length, chunk, "restoring the blocks")
        _flush(pair)
    except VerifyError as exc:
        raise VerifyError(
            f"{exc}: LBA {slba} + {length // lba} blocks keep the test pattern, not their data"
        ) from None


def _compare(expected: bytes, got: bytes) -> tuple[int, int | None, int]:
    """(bytes that differ, first differing offset, differing bytes still holding the poison)."""
    if expected == got:
        return 0, None, 0
    differ = poison = 0
    first: int | None = None
    step = 4096
    for at in range(0, len(expected), step):
        a, b = expected[at : at + step], got[at : at + step]
        if a == b:
            continue
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                differ += 1
                poison += y == POISON
                if first is None:
                    first = at + i
    return differ, first, poison


def verify_cmb(
    bdf: str,
    *,
    slba: int = 0,
    length: int = VERIFY_BYTES,
    write: bool = False,
    opener: Callable[[str], VerifyController] = NvmeController,
) -> CmbVerification:
    """Read ``length`` bytes at LBA ``slba`` of namespace 1 into DRAM and into the CMB, and
    compare (see the module doc).  ``write``: write a random pattern there first (restoring
    the blocks afterwards).  Raises :class:`VerifyError` when the check cannot run."""
    if length <= 0 or slba < 0:
        raise VerifyError(f"nothing to verify: {length} bytes at LBA {slba}")
    ctrl = _open(bdf, opener)
    session = _Session(ctrl)
    try:
        result = _run(ctrl, session, slba, length, write)
    except VerifyError as exc:
        released = _release_after_error(session)
        raise VerifyError(str(exc), released) from None
    except Exception as exc:  # ControllerError, a VFIO call: the device failed the check
        released = _release_after_error(session)
        raise VerifyError(f"{bdf}: {exc}", released) from exc
    except BaseException:
        _release_after_error(session)
        raise
    result.released = session.release()
    return result


def _release_after_error(session: _Session) -> list[str]:
    try:
        return session.release()
    except VerifyError as exc:
        return [*exc.released, f"release not clean: {exc}"]


def _run(
    ctrl: VerifyController, session: _Session, slba: int, length: int, write: bool
) -> CmbVerification:
    info = _require_read_cmb(ctrl)
    ns = ctrl.namespace(NSID)
    lba = ns.lba_size
    blocks = -(-length // lba)
    length = blocks * lba
    if slba + blocks > ns.blocks:
        raise VerifyError(
            f"LBA {slba} + {blocks} blocks runs past namespace {NSID}'s {ns.blocks} blocks (NSZE)"
        )
    chunk = min(ctrl.max_transfer or MAX_COMMAND_BYTES, MAX_COMMAND_BYTES)
    chunk -= chunk % lba
    pair = session.pair = ctrl.create_io_queue_pair(
        min(QUEUE_DEPTH, ctrl.mqes), "dram", lba_size=lba
    )
    dram = session.dram_region(length)
    cmb = session.cmb_region(length)
    transfers: list[Transfer] = []
    notes: list[str] = []
    pattern: bytes | None = None
    saved: Region | None = None
    try:
        if write:
            saved = session.dram_region(length)
            _transfer(pair, IoOpcode.READ, slba, lba, saved, length, chunk, "keeping the blocks")
            source = session.dram_region(length)
            pattern = os.urandom(length)
            source.view[:length] = pattern
            transfers.append(
                _transfer(pair, IoOpcode.WRITE, slba, lba, source, length, chunk, "write from DRAM")
            )
            _flush(pair)
        poison = bytes([POISON]) * length
        dram.view[:length] = poison
        cmb.view[:length] = poison
        transfers.append(
            _transfer(pair, IoOpcode.READ, slba, lba, dram, length, chunk, "read into DRAM")
        )
        transfers.append(
            _transfer(pair, IoOpcode.READ, slba, lba, cmb, length, chunk, "read into the CMB")
        )
        from_dram = bytes(dram.view[:length])
        start = time.perf_counter()
        from_cmb = bytes(cmb.view[:length])
        transfers.append(
            Transfer(
                f"CPU read of the CMB through BAR{info.bar}",
                "cmb",
                cmb.iova or 0,
                length,
                time.perf_counter() - start,
                0,
            )
        )
    finally:
        if saved is not None and pattern is not None:
            _restore(pair, slba, lba, saved, length, chunk)
            notes.append(f"the blocks' previous {length} bytes were written back")
    expected = pattern if pattern is not None else from_dram
    differ, first, poison_left = _compare(expected, from_cmb)
    dram_ok = None if pattern is None else from_dram == pattern
    if from_dram.count(0) == length:
        notes.append(
            "the blocks read as zeroes: the poison fill still proves the SSD wrote every byte, "
            "but a pattern checks more (--verify-cmb-lba to blocks holding data, or "
            "--verify-cmb-write)"
        )
    return CmbVerification(
        bdf=ctrl.bdf,
        model=str(getattr(ctrl.identify, "mn", "")).strip(),
        serial=str(getattr(ctrl.identify, "sn", "")).strip(),
        nsid=NSID,
        lba_size=lba,
        slba=slba,
        blocks=blocks,
        bytes=length,
        cmb=_cmb_facts(ctrl, info),
        queue={"qid": pair.qid, "depth": pair.depth, "sq_address": pair.layout.sq.iova},
        cmb_prp_lists="cmb" if pair.layout.prp_lists_cmb is not None else "dram",
        written=pattern is not None,
        transfers=transfers,
        match=differ == 0 and dram_ok is not False,
        mismatched_bytes=differ,
        first_mismatch=first,
        poison_left=poison_left,
        dram_matches_pattern=dram_ok,
        all_zero=from_dram.count(0) == length,
        sha256_dram=hashlib.sha256(from_dram).hexdigest(),
        sha256_cmb=hashlib.sha256(from_cmb).hexdigest(),
        notes=notes,
    )


__all__ = [
    "POISON",
    "VERIFY_BYTES",
    "CmbVerification",
    "Transfer",
    "VerifyController",
    "VerifyError",
    "verify_cmb",
]
