"""NVM I/O commands (NVM Command Set 1.0 §3): Read, Write, Flush, Write Zeroes, Dataset
Management (deallocate), Compare: the commands the offload data plane executes itself.

Everything here reads the queue's :class:`~nvmf.offload.context.IoContext` and nothing of the
control plane, so the same code runs in a worker process and, with ``--workers 0``, in the
control plane.  Any other opcode on an I/O queue is not in :data:`FAST_PATH`: the data plane
asks the control plane for its status.
"""

from __future__ import annotations

from nvmf.media.base import MediaError
from nvmf.media.queue import FLUSH, READ, WRITE
from nvmf.memory.staging import Staging
from nvmf.offload.context import IoContext, NamespaceIo
from nvmf.offload.plan import (
    INVALID_NS,
    INVALID_OPCODE,
    Parsed,
    Plan,
    h2c,
    media_io,
    no_data,
)
from nvmf.protocol.request import Direction, Request
from nvmf.wire.identify import NSID_ALL
from nvmf.wire.opcodes import DSM_ATTR_DEALLOCATE, RW_FUA, WZ_DEAC, IoOpcode
from nvmf.wire.sqe import DSM_RANGE, OFF_CDW10, OFF_CDW12
from nvmf.wire.status import SC, SUCCESS, Status, error

LBA_RANGE = error(SC.LBA_RANGE, OFF_CDW10)
TOO_LARGE = error(SC.INVALID_FIELD, OFF_CDW12)
#: Opcodes the data plane executes; any other goes to the control plane for its status.
FAST_PATH = frozenset(
    {
        IoOpcode.FLUSH,
        IoOpcode.READ,
        IoOpcode.WRITE,
        IoOpcode.WRITE_ZEROES,
        IoOpcode.DSM,
        IoOpcode.COMPARE,
    }
)
_READ = READ
_WRITE = WRITE
_FLUSH = FLUSH
C2H = Direction.C2H
H2C = Direction.H2C


def _media_error(exc: MediaError, write: bool) -> Status:
    return Status(SC.WRITE_FAULT if write else SC.READ_ERROR, dnr=False)


def parse(ioctx: IoContext, req: Request, pool: Staging) -> Parsed:
    """Validate an I/O command against ``ioctx`` and plan it (or return its error status).

    Read and Write, the commands that carry the load, are parsed right here, in the one call the
    pipeline makes (docs/data-plane.md, "calls per I/O")."""
    op = req.opcode
    if op == _FLUSH:
        return _flush(ioctx, req.nsid)
    ns = ioctx.namespaces.get(req.nsid)
    if ns is None:
        return INVALID_NS if op in FAST_PATH else INVALID_OPCODE
    if op in (_READ, _WRITE):
        slba = req.cdw10 | (req.cdw11 << 32)  # Starting LBA, CDW11:CDW10
        nlb = (req.cdw12 & 0xFFFF) + 1  # Number of Logical Blocks, CDW12 15:0, 0's based
        if slba + nlb > ns.nsze:
            return LBA_RANGE
        bs = ns.block_size
        length = nlb * bs
        if length > ioctx.max_transfer:
            return TOO_LARGE
        counters = ns.counters
        queue = ns.queue
        offset = slba * bs
        memory = queue.memory
        if memory is not None and (op == _READ or not memory.readonly):
            memory = memory[offset : offset + length]
        else:  # staged: no memory, or a Write to read-only memory (null)
            memory = None
            if (queue.pool or pool).placement == "cmb":
                counters.staged_cmb_bytes += length
            else:
                counters.staged_dram_bytes += length
        if op == _READ:
            counters.read_cmds += 1
            counters.read_blocks += nlb
            return Plan(C2H, length, None, queue=queue, op=_READ, offset=offset, memory=memory)
        counters.write_cmds += 1
        counters.write_blocks += nlb
        fua = bool(req.cdw12 & RW_FUA) or not ioctx.wce
        return Plan(
            H2C, length, None, queue=queue, op=_WRITE, offset=offset, fua=fua, memory=memory
        )
    if op == IoOpcode.WRITE_ZEROES:
        return _write_zeroes(req, ns)
    if op == IoOpcode.DSM:
        return _dsm(req, ns)
    if op == IoOpcode.COMPARE:
        return _compare(ioctx, req, ns, pool)
    return INVALID_OPCODE


def _range(req: Request, ns: NamespaceIo) -> tuple[int, int] | Status:
    """Byte offset and length of SLBA/NLB, range checked."""
    slba, nlb = req.cdw10 | (req.cdw11 << 32), (req.cdw12 & 0xFFFF) + 1
    if slba + nlb > ns.nsze:
        return LBA_RANGE
    bs = ns.block_size
    return slba * bs, nlb * bs


def _transfer(ioctx: IoContext, req: Request, ns: NamespaceIo) -> tuple[int, int] | Status:
    """:func:`_range` for commands that move the blocks' data: also bounded by MDTS."""
    rng = _range(req, ns)
    if not isinstance(rng, Status) and rng[1] > ioctx.max_transfer:
        return TOO_LARGE
    return rng


def _flush(ioctx: IoContext, nsid: int) -> Parsed:
    namespaces = ioctx.namespaces
    if nsid == NSID_ALL:
        targets = list(namespaces.values())
    elif nsid in namespaces:
        targets = [namespaces[nsid]]
    else:
        return INVALID_NS
    for ns in targets:
        ns.counters.flush_cmds += 1
    if len(targets) == 1:
        return media_io(Direction.NONE, 0, targets[0].queue, FLUSH, 0)

    async def execute(req: Request) -> Status:
        try:
            for ns in targets:
                await ns.media.flush()
        except MediaError as exc:
            return _media_error(exc, write=True)
        return SUCCESS

    return no_data(execute)


def _write_zeroes(req: Request, ns: NamespaceIo) -> Parsed:
    rng = _range(req, ns)
    if isinstance(rng, Status):
        return rng
    offset, length = rng
    deallocate = bool(req.cdw12 & WZ_DEAC)
    media = ns.media
    ns.counters.other_cmds += 1

    async def execute(req: Request) -> Status:
        try:
            if deallocate:
                await media.deallocate(offset, length)
            else:
                await media.write_zeroes(offset, length)
        except MediaError as exc:
            return _media_error(exc, write=True)
        return SUCCESS

    return no_data(execute)


def _dsm(req: Request, ns: NamespaceIo) -> Parsed:
    nr = (req.cdw10 & 0xFF) + 1
    deallocate = bool(req.cdw11 & DSM_ATTR_DEALLOCATE)
    media = ns.media
    bs = ns.block_size
    ns.counters.other_cmds += 1

    async def execute(req: Request) -> Status:
        assert req.data is not None
        ranges = [DSM_RANGE.unpack_from(req.data, i * DSM_RANGE.size) for i in range(nr)]
        for _cattr, nlb, slba in ranges:
            if slba + nlb > ns.nsze:
                return Status(SC.LBA_RANGE, dnr=True)
        if not deallocate:
            return SUCCESS  # attribute hints only
        try:
            for _cattr, nlb, slba in ranges:
                if nlb:
                    await media.deallocate(slba * bs, nlb * bs)
        except MediaError as exc:
            return _media_error(exc, write=True)
        return SUCCESS

    return h2c(nr * DSM_RANGE.size, execute)


def _compare(ioctx: IoContext, req: Request, ns: NamespaceIo, pool: Staging) -> Parsed:
    rng = _transfer(ioctx, req, ns)
    if isinstance(rng, Status):
        return rng
    offset, length = rng
    media = ns.media
    ns.counters.compare_cmds += 1
    ns.counters.compare_blocks += length // ns.block_size

    async def execute(req: Request) -> Status:
        assert req.data is not None
        # From the process's pool, not the queue's share: the command already holds one
        # buffer of its share, which may have no room for a second.
        other = await pool.acquire(length)
        try:
            await media.read(offset, other.view)
            same = other.view == req.data
        except MediaError as exc:
            return _media_error(exc, write=False)
        finally:
            other.release()
        return SUCCESS if same else Status(SC.COMPARE_FAILED, dnr=True)

    return h2c(length, execute)
