"""Admin commands of an I/O controller (Base 2.0 §5): Identify, Get Log Page, Set/Get Features,
Asynchronous Event Request, Keep Alive, Abort."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from nvmf.control.command import (
    INVALID_CDW10,
    INVALID_NS,
    INVALID_OPCODE,
    Context,
    Execute,
    Parsed,
    c2h,
    no_data,
    send_bytes,
)
from nvmf.control.controller import AER_LIMIT, ERROR_LOG_SLOTS
from nvmf.control.status import namespace_counters
from nvmf.protocol.request import Request
from nvmf.wire.identify import (
    CTRATT_HID_128_BIT,
    CTRATT_TBKAS,
    IDENTIFY_DATA_SIZE,
    NSID_ALL,
    Cns,
    Csi,
    IdentifyController,
    encode_active_ns_list,
)
from nvmf.wire.logpage import (
    ChangedNamespaceList,
    CommandEffects,
    CommandEffectsLog,
    FirmwareSlotLog,
    LogPageId,
    SmartLog,
    encode_error_log,
)
from nvmf.wire.opcodes import AdminOpcode, FeatureId, IoOpcode
from nvmf.wire.sqe import OFF_CDW10, OFF_CDW11, OFF_CDW12, OFF_NSID
from nvmf.wire.status import SC, SUCCESS, Status, error

if TYPE_CHECKING:
    from nvmf.control.controller import Controller

#: MDTS as a power of two of the 4 KiB minimum page: 2^8 * 4 KiB = 1 MiB per command, unless
#: the staging pool is smaller (:func:`mdts_for`).
MDTS = 8
MAX_TRANSFER = (1 << MDTS) * 4096


def mdts_for(max_transfer: int) -> int:
    """Identify Controller MDTS for a limit of ``max_transfer`` bytes (a power of two, at least
    two 4 KiB pages: MDTS 0 would mean no limit at all)."""
    mdts = max_transfer.bit_length() - 1 - 12
    if mdts < 1 or max_transfer != 1 << (mdts + 12):
        raise ValueError(f"no MDTS expresses a {max_transfer}-byte limit")
    return mdts


#: Keep Alive Support granularity (KAS), in 100 ms units.
KAS = 10
#: Asynchronous event: Notice, Namespace Attribute Changed, log page Changed Namespace List.
AEN_NS_CHANGED = 0x02 | (0x00 << 8) | (LogPageId.CHANGED_NS << 16)
#: OAES bit 8: Namespace Attribute Notices (and AEC bit 8, which enables them).
OAES_NS_ATTR = 1 << 8
#: Get Log Page CDW10 bit 15, Retain Asynchronous Event.
RAE = 1 << 15
FIRMWARE_REVISION = "0.1.0"

#: ONCS: Compare (0), Dataset Management (2), Write Zeroes (3).
ONCS = (1 << 0) | (1 << 2) | (1 << 3)


def identify_controller(ctx: Context, ctrl: Controller) -> bytes:
    """Identify Controller (CNS 01h) of an I/O controller."""
    sub = ctrl.subsystem
    port = ctx.session.model_port
    sgls = sgls_for(port.trtype, port.inline_data_size)
    ident = IdentifyController(
        vid=0,
        ssvid=0,
        sn=sub.serial,
        mn=sub.config.model or "nvmf",
        fr=FIRMWARE_REVISION,
        rab=6,
        # May have multiple controllers (dynamic model); bit 3 clear: no ANA reporting, so
        # ANATT/ANACAP/ANAGRPMAX/NANAGRPID stay 0 and LID 0Ch is an Invalid Log Page.
        cmic=1 << 1,
        mdts=mdts_for(ctx.service.max_transfer),
        cntlid=ctrl.cntlid,
        ver=sub.vs,
        oaes=OAES_NS_ATTR,
        ctratt=CTRATT_HID_128_BIT | CTRATT_TBKAS,
        cntrltype=1,  # I/O controller
        acl=3,
        aerl=AER_LIMIT - 1,
        frmw=(1 << 1) | 1,  # one slot, slot 1 read only
        # SMART per namespace; commands supported and effects log; extended data
        lpa=(1 << 0) | (1 << 1) | (1 << 2),
        elpe=ERROR_LOG_SLOTS - 1,
        kas=KAS,
        sqes=(6 << 4) | 6,
        cqes=(4 << 4) | 4,
        maxcmd=ctrl.queue_depth,
        nn=sub.nn,
        oncs=ONCS,
        vwc=1 if sub.volatile_write_cache else 0,
        sgls=sgls,
        subnqn=sub.nqn,
        ioccsz=(64 + port.inline_data_size) // 16,
        iorcsz=1,
        icdoff=0,
        fcatt=0,
        msdbd=1,
    )
    return ident.encode()


def sgls_for(trtype: str, inline_data_size: int) -> int:
    """Identify Controller SGLS for a port: SGLs supported with no alignment rule (bits 1:0 =
    01b); keyed SGL data blocks on NVMe/RDMA (bit 2: the Linux host refuses an RDMA controller
    without it, and Linux's nvmet sets it for a keyed-SGL transport); SGL offsets for in-capsule
    data (bit 20) when the port takes in-capsule data."""
    sgls = 1 << 0
    if trtype == "rdma":
        sgls |= 1 << 2
    if inline_data_size:
        sgls |= 1 << 20
    return sgls


def command_effects() -> bytes:
    csupp = CommandEffects.CSUPP
    acs = [0] * 256
    for aop in (
        AdminOpcode.GET_LOG_PAGE,
        AdminOpcode.IDENTIFY,
        AdminOpcode.ABORT,
        AdminOpcode.SET_FEATURES,
        AdminOpcode.GET_FEATURES,
        AdminOpcode.ASYNC_EVENT,
        AdminOpcode.KEEP_ALIVE,
    ):
        acs[aop] = int(csupp)
    iocs = [0] * 256
    for op in (IoOpcode.FLUSH, IoOpcode.READ, IoOpcode.COMPARE):
        iocs[op] = int(csupp)
    for op in (IoOpcode.WRITE, IoOpcode.WRITE_ZEROES, IoOpcode.DSM):
        iocs[op] = int(csupp | CommandEffects.LBCC)
    return CommandEffectsLog(acs=acs, iocs=iocs).encode()


def parse(ctx: Context) -> Parsed:
    ctrl = ctx.session.ctrl
    assert ctrl is not None
    sqe = ctx.req.sqe
    op = sqe.opcode
    if op == AdminOpcode.IDENTIFY:
        return _identify(ctx, ctrl)
    if op == AdminOpcode.GET_LOG_PAGE:
        return get_log_page(ctx, ctrl, _log_page)
    if op == AdminOpcode.SET_FEATURES:
        return set_features(ctx, ctrl)
    if op == AdminOpcode.GET_FEATURES:
        return get_features(ctx, ctrl)
    if op == AdminOpcode.ASYNC_EVENT:
        return async_event(ctrl)
    if op == AdminOpcode.KEEP_ALIVE:
        return no_data()
    if op == AdminOpcode.ABORT:
        return _abort()
    return INVALID_OPCODE


def _identify(ctx: Context, ctrl: Controller) -> Parsed:
    sqe = ctx.req.sqe
    cns = sqe.cdw10 & 0xFF
    sub = ctrl.subsystem
    size = IDENTIFY_DATA_SIZE
    if cns == Cns.CTRL:
        return c2h(size, send_bytes(identify_controller(ctx, ctrl)))
    if cns == Cns.NS:
        if sqe.nsid == 0 or sqe.nsid == NSID_ALL:
            return INVALID_NS
        ns = sub.namespaces.get(sqe.nsid)
        # An inactive NSID returns a zero-filled structure (Base 2.0 §5.17.2.1).
        return c2h(size, send_bytes(ns.identify() if ns else b""))
    if cns == Cns.NS_ACTIVE_LIST:
        if sqe.nsid >= 0xFFFFFFFE:
            return INVALID_NS
        return c2h(size, send_bytes(encode_active_ns_list(sub.namespaces, after=sqe.nsid)))
    if cns == Cns.NS_DESC_LIST:
        ns = sub.namespaces.get(sqe.nsid)
        if ns is None:
            return INVALID_NS
        return c2h(size, send_bytes(ns.descriptors()))
    if cns in (Cns.CS_NS, Cns.CS_CTRL):
        csi = sqe.cdw11 >> 24
        if csi != Csi.NVM:
            return error(SC.INVALID_FIELD, OFF_CDW11)
        if cns == Cns.CS_NS and sqe.nsid not in sub.namespaces:
            return INVALID_NS
        # NVM command set specific structures: no optional limits to report (all zero).
        return c2h(size, send_bytes(b""))
    return INVALID_CDW10


LogBuilder = Callable[[Context, "Controller", int, int], "bytes | Status"]


def get_log_page(ctx: Context, ctrl: Controller, build: LogBuilder) -> Parsed:
    """Validate NUMD/LPO and plan the transfer of the requested slice of a log page.

    ``build(ctx, ctrl, lid, lsp)`` returns the whole page or a status.
    """
    sqe = ctx.req.sqe
    lid = sqe.cdw10 & 0xFF
    lsp = (sqe.cdw10 >> 8) & 0x7F
    numd = ((sqe.cdw11 & 0xFFFF) << 16 | (sqe.cdw10 >> 16)) + 1
    lpo = sqe.cdw12 | (sqe.cdw13 << 32)
    length = numd * 4
    if length > ctx.service.max_transfer:  # MDTS bounds every transfer (Base 2.0 Figure 275)
        return error(SC.INVALID_FIELD, OFF_CDW10)
    if lpo & 3:
        return error(SC.INVALID_FIELD, OFF_CDW12)
    page = build(ctx, ctrl, lid, lsp)
    if isinstance(page, Status):
        return page
    if lpo > len(page):
        return error(SC.INVALID_FIELD, OFF_CDW12)
    return c2h(length, send_bytes(page[lpo : lpo + length]))


def _smart_log(ctx: Context, ctrl: Controller, nsid: int) -> bytes:
    """SMART / Health Information: the I/O the subsystem's namespaces served (one namespace's
    for its NSID; LPA bit 0), summed over the control plane and every worker, as Linux's
    nvmet reports each namespace's block device; and the controller's error log entries."""
    namespaces = ctrl.subsystem.namespaces
    counted = namespace_counters(ctx.service, ctrl.subsystem.nqn)
    sectors_read = sectors_written = reads = writes = 0
    for n, c in counted.items():
        ns = namespaces.get(n)
        if ns is None or nsid not in (0, NSID_ALL, n):
            continue
        # Reads are Read and Compare commands, writes are Write commands only: Write Zeroes
        # and Dataset Management move no user data (NVM Command Set 1.0, SMART).
        sectors_read += (c["read_blocks"] + c["compare_blocks"]) * ns.block_size // 512
        sectors_written += c["write_blocks"] * ns.block_size // 512
        reads += c["read_cmds"] + c["compare_cmds"]
        writes += c["write_cmds"]
    return SmartLog(
        temperature=273 + 30,
        avail_spare=100,
        spare_thresh=10,
        # thousands of 512-byte units, rounded up (Base 2.0 Figure 207)
        data_units_read=-(-sectors_read // 1000),
        data_units_written=-(-sectors_written // 1000),
        host_reads=reads,
        host_writes=writes,
        num_err_log_entries=ctrl.error_count,
    ).encode()


def _log_page(ctx: Context, ctrl: Controller, lid: int, lsp: int) -> bytes | Status:
    sqe = ctx.req.sqe
    if lid == LogPageId.ERROR:
        return encode_error_log(list(ctrl.errors))
    if lid == LogPageId.SMART:
        if sqe.nsid not in (0, NSID_ALL) and sqe.nsid not in ctrl.subsystem.namespaces:
            return error(SC.INVALID_NS, OFF_NSID)
        return _smart_log(ctx, ctrl, sqe.nsid)
    if lid == LogPageId.FW_SLOT:
        frs = [FIRMWARE_REVISION] + [""] * 6
        return FirmwareSlotLog(afi=1, frs=frs).encode()
    if lid == LogPageId.CHANGED_NS:
        changed = sorted(ctrl.changed_nsids)
        ctrl.changed_nsids.clear()
        ctrl.notice_read(lid, bool(sqe.cdw10 & RAE))
        return ChangedNamespaceList.from_changed(changed).encode()
    if lid == LogPageId.CMD_EFFECTS:
        return command_effects()
    return error(SC.INVALID_LOG_PAGE, OFF_CDW10)


def set_features(ctx: Context, ctrl: Controller) -> Parsed:
    sqe = ctx.req.sqe
    fid = sqe.cdw10 & 0xFF
    if sqe.cdw10 & (1 << 31):
        return error(SC.FEATURE_NOT_SAVEABLE, OFF_CDW10)
    value = sqe.cdw11
    if fid == FeatureId.NUM_QUEUES:
        if value & 0xFFFF == 0xFFFF or value >> 16 == 0xFFFF:
            return error(SC.INVALID_FIELD, OFF_CDW11)
        if any(qid for qid in ctrl.queues):
            return error(SC.CMD_SEQ_ERROR, OFF_CDW10)
        granted = ctrl.subsystem.max_io_queues
        ctrl.io_queues = granted
        result = (granted - 1) | ((granted - 1) << 16)
        return no_data(_result(result))
    if fid == FeatureId.KATO:
        ctrl.keep_alive.kato_ms = value
        return no_data()
    if fid == FeatureId.ASYNC_EVENT:
        ctrl.aec = value
        return no_data()
    if fid == FeatureId.VOLATILE_WC and ctrl.subsystem.volatile_write_cache:
        ctrl.wce = bool(value & 1)
        ctx.service.context_changed(ctrl)
        return no_data()
    if fid == FeatureId.HOST_ID:  # given in Connect: not set afterwards over a fabric
        return error(SC.CMD_SEQ_ERROR, OFF_CDW10)
    return error(SC.INVALID_FIELD, OFF_CDW10)


#: Get Features Select (SEL) values; 100b-111b are reserved.
SEL_CURRENT, SEL_DEFAULT, SEL_SAVED, SEL_SUPPORTED = 0, 1, 2, 3
#: Supported capabilities (SEL 011b) bit 2: the feature is changeable.
CAP_CHANGEABLE = 1 << 2
#: Features that Set Features changes (Volatile Write Cache too, where there is one).
CHANGEABLE_FEATURES = (FeatureId.NUM_QUEUES, FeatureId.KATO, FeatureId.ASYNC_EVENT)


def get_features(ctx: Context, ctrl: Controller) -> Parsed:
    sqe = ctx.req.sqe
    fid = sqe.cdw10 & 0xFF
    sel = (sqe.cdw10 >> 8) & 0x7
    vwc = ctrl.subsystem.volatile_write_cache
    if sel > SEL_SUPPORTED:  # 100b-111b are reserved
        return error(SC.INVALID_FIELD, OFF_CDW10)
    if sel == SEL_SUPPORTED:  # none is saveable or namespace specific
        if fid in CHANGEABLE_FEATURES or (fid == FeatureId.VOLATILE_WC and vwc):
            return no_data(_result(CAP_CHANGEABLE))
        if fid == FeatureId.HOST_ID:  # set by Connect only
            return no_data(_result(0))
        return error(SC.INVALID_FIELD, OFF_CDW10)
    default = sel != SEL_CURRENT  # Saved: no feature is saveable, so its default (as QEMU's)
    if fid == FeatureId.NUM_QUEUES:
        n = ctrl.subsystem.max_io_queues if default else ctrl.io_queues
        return no_data(_result((n - 1) | ((n - 1) << 16)))
    if fid == FeatureId.KATO:
        return no_data(_result(0 if default else ctrl.keep_alive.kato_ms))
    if fid == FeatureId.ASYNC_EVENT:
        return no_data(_result(0 if default else ctrl.aec))
    if fid == FeatureId.VOLATILE_WC and vwc:
        return no_data(_result(1 if default or ctrl.wce else 0))
    if fid == FeatureId.HOST_ID:  # the Host Identifier the host gave in Connect
        if not sqe.cdw11 & 1:  # EXHID clear asks for the 64-bit form: CTRATT says 128-bit only
            return error(SC.INVALID_FIELD, OFF_CDW11)
        return c2h(len(ctrl.hostid), send_bytes(ctrl.hostid))
    return error(SC.INVALID_FIELD, OFF_CDW10)


def namespaces_changed(ctrl: Controller, nsids: set[int]) -> bool:
    """Tell ``ctrl`` that these namespaces were added, removed or changed (Base 2.0 §5.2,
    Asynchronous Event Information - Notice 00h, Namespace Attribute Changed).

    The NSIDs join the Changed Namespace List (log page 04h).  The event itself is posted only
    when the host enabled Namespace Attribute Notices (Set Features Asynchronous Event
    Configuration bit 8) and no such event is outstanding: once posted, the controller sends no
    other until the host reads log page 04h with RAE clear (as Linux's nvmet does with
    ``aen_masked``).  The Linux host answers the event by reading that page and rescanning
    (``nvme_handle_aen_notice`` -> ``nvme_scan_work``: Identify active namespace list, then
    each namespace's Identify; a grown or shrunk namespace gets its new capacity, a missing one
    is removed).  True when an event was posted.
    """
    if ctrl.subsystem.discovery or not nsids:
        return False
    ctrl.changed_nsids |= nsids
    if not ctrl.aec & OAES_NS_ATTR:
        return False
    return ctrl.post_notice(AEN_NS_CHANGED)


def async_event(ctrl: Controller) -> Parsed:
    """Asynchronous Event Request: held until an event, up to AERL + 1 at once."""
    if sum(1 for fut in ctrl.aers if not fut.done()) >= AER_LIMIT:
        return error(SC.ASYNC_LIMIT, 0)
    fut = ctrl.take_aer()

    async def execute(req: Request) -> Status:
        try:
            dw0 = await fut
        except asyncio.CancelledError:
            return Status(SC.ABORT_REQ)
        return Status(result=dw0)

    return no_data(execute)


def _abort() -> Parsed:
    # DW0 bit 0 set: the command was not aborted (it is either done or will finish promptly).
    return no_data(_result(1))


def _result(value: int) -> Execute:
    async def execute(req: Request) -> Status:
        return Status(result=value)

    return execute


__all__ = ["MAX_TRANSFER", "SUCCESS", "parse"]
