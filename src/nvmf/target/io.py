"""NVM I/O commands (NVM Command Set 1.0 §3): Read, Write, Flush, Write Zeroes, Dataset
Management (deallocate), Compare.  Only these take the offload fast path."""

from __future__ import annotations

import struct

from nvmf.media.base import MediaError
from nvmf.protocol.request import Request
from nvmf.target.admin import MAX_TRANSFER, NSID_ALL
from nvmf.target.command import INVALID_NS, INVALID_OPCODE, Context, Parsed, c2h, h2c, no_data
from nvmf.target.namespace import NamespaceRuntime
from nvmf.wire.opcodes import DSM_ATTR_DEALLOCATE, WZ_DEAC, IoOpcode
from nvmf.wire.sqe import OFF_CDW10, OFF_CDW12
from nvmf.wire.status import SC, SUCCESS, Status, error

#: One Dataset Management range (Figure 391): context attributes, length in LBAs, starting LBA.
DSM_RANGE = struct.Struct("<IIQ")
assert DSM_RANGE.size == 16

LBA_RANGE = error(SC.LBA_RANGE, OFF_CDW10)
TOO_LARGE = error(SC.INVALID_FIELD, OFF_CDW12)


def _media_error(exc: MediaError, write: bool) -> Status:
    return Status(SC.WRITE_FAULT if write else SC.READ_ERROR, dnr=False)


def parse(ctx: Context) -> Parsed:
    ctrl = ctx.session.ctrl
    assert ctrl is not None
    sqe = ctx.req.sqe
    op = sqe.opcode
    if op == IoOpcode.FLUSH:
        return _flush(ctx)
    ns = ctrl.subsystem.namespaces.get(sqe.nsid)
    if ns is None:
        return INVALID_NS if op in _KNOWN else INVALID_OPCODE
    if op == IoOpcode.READ:
        return _read(ctx, ns)
    if op == IoOpcode.WRITE:
        return _write(ctx, ns, fua=sqe.fua or not ctrl.wce)
    if op == IoOpcode.WRITE_ZEROES:
        return _write_zeroes(ctx, ns)
    if op == IoOpcode.DSM:
        return _dsm(ctx, ns)
    if op == IoOpcode.COMPARE:
        return _compare(ctx, ns)
    return INVALID_OPCODE


_KNOWN = frozenset(
    {IoOpcode.READ, IoOpcode.WRITE, IoOpcode.WRITE_ZEROES, IoOpcode.DSM, IoOpcode.COMPARE}
)


def _range(ctx: Context, ns: NamespaceRuntime) -> tuple[int, int] | Status:
    """Byte offset and length of SLBA/NLB, range checked."""
    sqe = ctx.req.sqe
    slba, nlb = sqe.slba, sqe.nlb + 1
    if slba + nlb > ns.nsze:
        return LBA_RANGE
    bs = ns.block_size
    return slba * bs, nlb * bs


def _transfer(ctx: Context, ns: NamespaceRuntime) -> tuple[int, int] | Status:
    """:func:`_range` for commands that move the blocks' data: also bounded by MDTS."""
    rng = _range(ctx, ns)
    if not isinstance(rng, Status) and rng[1] > MAX_TRANSFER:
        return TOO_LARGE
    return rng


def _read(ctx: Context, ns: NamespaceRuntime) -> Parsed:
    rng = _transfer(ctx, ns)
    if isinstance(rng, Status):
        return rng
    offset, length = rng
    media = ns.media

    async def execute(req: Request) -> Status:
        assert req.data is not None
        try:
            await media.read(offset, req.data)
        except MediaError as exc:
            return _media_error(exc, write=False)
        return SUCCESS

    return c2h(length, execute)


def _write(ctx: Context, ns: NamespaceRuntime, *, fua: bool) -> Parsed:
    rng = _transfer(ctx, ns)
    if isinstance(rng, Status):
        return rng
    offset, length = rng
    media = ns.media

    async def execute(req: Request) -> Status:
        assert req.data is not None
        try:
            await media.write(offset, req.data, fua)
        except MediaError as exc:
            return _media_error(exc, write=True)
        return SUCCESS

    return h2c(length, execute)


def _flush(ctx: Context) -> Parsed:
    ctrl = ctx.session.ctrl
    assert ctrl is not None
    nsid = ctx.req.sqe.nsid
    namespaces = ctrl.subsystem.namespaces
    if nsid == NSID_ALL:
        targets = list(namespaces.values())
    elif nsid in namespaces:
        targets = [namespaces[nsid]]
    else:
        return INVALID_NS

    async def execute(req: Request) -> Status:
        try:
            for ns in targets:
                await ns.media.flush()
        except MediaError as exc:
            return _media_error(exc, write=True)
        return SUCCESS

    return no_data(execute)


def _write_zeroes(ctx: Context, ns: NamespaceRuntime) -> Parsed:
    rng = _range(ctx, ns)
    if isinstance(rng, Status):
        return rng
    offset, length = rng
    deallocate = bool(ctx.req.sqe.cdw12 & WZ_DEAC)
    media = ns.media

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


def _dsm(ctx: Context, ns: NamespaceRuntime) -> Parsed:
    sqe = ctx.req.sqe
    nr = (sqe.cdw10 & 0xFF) + 1
    deallocate = bool(sqe.cdw11 & DSM_ATTR_DEALLOCATE)
    media = ns.media
    bs = ns.block_size

    async def execute(req: Request) -> Status:
        assert req.data is not None
        ranges = [DSM_RANGE.unpack_from(req.data, i * 16) for i in range(nr)]
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


def _compare(ctx: Context, ns: NamespaceRuntime) -> Parsed:
    rng = _transfer(ctx, ns)
    if isinstance(rng, Status):
        return rng
    offset, length = rng
    media = ns.media
    pool = ctx.session.pool

    async def execute(req: Request) -> Status:
        assert req.data is not None
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
